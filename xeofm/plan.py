"""The planner: block and batch sizes from the model and the device, and a dry run.

:func:`plan` reports what :func:`xeofm.embed` would do (chips, blocks, batch
size, bytes and FLOPs) without reading data or running the model. FLOPs and
activation sizes come from tracing the model once on fake tensors
(``torch._subclasses.FakeTensorMode``): no memory is allocated for activations
and no arithmetic is done.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from .spec import ModelSpec

__all__ = ["Plan", "plan", "model_costs", "choose_batch_size", "choose_block_size"]

#: Chips per forward pass on CPU. Larger batches do not raise the per-chip rate
#: on CPUs (they lower it once activations fall out of cache), so keep it small.
CPU_BATCH = 4
#: Upper bound of the working set of one block on CPU (bytes).
CPU_BLOCK_BUDGET = 1536 * 2**20
#: Fraction of free GPU memory given to one block's data / to activations.
GPU_BLOCK_FRACTION = 0.25
GPU_ACT_FRACTION = 0.4


@dataclass(frozen=True)
class ModelCosts:
    """Per-chip cost of a model, from one fake-tensor trace."""

    flops_per_chip: float | None
    activation_bytes_per_chip: int | None
    param_bytes: int | None


def _dummy_inputs(spec: ModelSpec) -> tuple[Any, dict[str, Any]]:
    """One chip shaped as the engine feeds it: ``(1, C, H, W)`` or ``(1, C, T, H, W)``, plus aux inputs."""
    import torch

    c, n, t = len(spec.bands), spec.chip_size, spec.time_frames
    x = torch.empty(1, c, t, n, n) if t > 1 else torch.empty(1, c, n, n)
    aux: dict[str, Any] = {}
    for name in spec.aux:
        if name == "wavelengths":
            aux[name] = torch.tensor([b.wavelength for b in spec.bands], dtype=torch.float32)
        elif name == "gsd":
            aux[name] = float(spec.gsd or 10.0)
        elif name == "time":
            aux[name] = torch.tensor([[[2020.0, 180.0]] * t], dtype=torch.float32)
        elif name == "latlon":
            aux[name] = torch.tensor([[45.0, 10.0]], dtype=torch.float32)
    return x, aux


@lru_cache(maxsize=64)
def _costs_cached(spec: ModelSpec) -> ModelCosts:
    import torch

    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # pragma: no cover
        return ModelCosts(None, None, None)
    from . import runtime

    try:
        if spec._local_key is not None:
            module = runtime.build_module(spec)
        else:
            with torch.device("meta"):
                module = runtime.build_module(spec.replace(weights=None))
    except Exception:
        return ModelCosts(None, None, None)
    param_bytes = sum(p.numel() * p.element_size() for p in module.parameters())
    peak = [0]

    def hook(_m, _i, out):
        if isinstance(out, torch.Tensor):
            peak[0] = max(peak[0], out.numel() * 4)

    handles = [m.register_forward_hook(hook) for m in module.modules() if not list(m.children())]
    flops = None
    try:
        with FakeTensorMode(allow_non_fake_inputs=True) as mode:
            x, aux = _dummy_inputs(spec)
            if spec._local_key is None:
                module = module.to_empty(device="cpu") if any(p.is_meta for p in module.parameters()) else module
            with FlopCounterMode(display=False) as fc, torch.no_grad():
                module(x, **aux)
            flops = float(fc.get_total_flops())
        del mode
    except Exception:
        flops = None
    finally:
        for h in handles:
            h.remove()
    # a no-grad forward holds roughly the largest layer output, its input and a workspace
    act = 3 * peak[0] if peak[0] else None
    return ModelCosts(flops, act, param_bytes)


def model_costs(spec: ModelSpec) -> ModelCosts:
    """FLOPs, activation bytes per chip and parameter bytes (``None`` where unknown)."""
    return _costs_cached(spec)


def _free_gpu_bytes(device: str) -> int:
    import torch

    free, _total = torch.cuda.mem_get_info(torch.device(device))
    return int(free)


def choose_batch_size(spec: ModelSpec, device: str) -> int:
    """Chips per forward pass for this model on this device."""
    if not device.startswith("cuda"):
        return CPU_BATCH
    costs = model_costs(spec)
    per_chip = costs.activation_bytes_per_chip or (len(spec.bands) * spec.chip_size**2 * 4 * 64)
    free = _free_gpu_bytes(device) - (costs.param_bytes or 0)
    bs = int(max(1, GPU_ACT_FRACTION * free // per_chip))
    return int(min(256, 2 ** int(math.log2(bs))))


def _block_bytes(side: int, spec: ModelSpec, output: str, n_bands: int, m: int, depth: int) -> int:
    ext = side + 2 * depth
    inp = m * ext * ext * (n_bands * (4 + 4) + 2)  # raw (<= 4 B), float canvas, validity masks
    cell = spec.chip_size if output == "chip" else spec.stride
    acc = m * spec.embedding_dim * (ext // cell + 1) ** 2 * 4 * 2
    out = m * spec.embedding_dim * side * side * 4 * 3 if output == "pixel" else 0
    return inp + acc + out


def choose_block_size(
    spec: ModelSpec, output: str, device: str, n_bands: int, m_extra: int, batch_size: int, depth: int
) -> int:
    """Largest block side (pixels) whose working set fits the device budget."""
    if device.startswith("cuda"):
        budget = int(GPU_BLOCK_FRACTION * _free_gpu_bytes(device))
    else:
        try:
            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):  # pragma: no cover
            total = 8 * 2**30
        budget = min(CPU_BLOCK_BUDGET, total // (4 * max(1, os.cpu_count() or 1)))
    align = spec.chip_size if output == "chip" else spec.stride
    side = align
    for cand in (8192, 6144, 4096, 3072, 2048, 1536, 1024, 768, 512, 384, 256):
        c = max(align, cand // align * align)
        if _block_bytes(c, spec, output, n_bands, m_extra, depth) <= budget:
            side = c
            break
    return max(side, spec.chip_size)


#: Sustained TFLOP/s of one GPU assumed by the plan's summary (an assumption, not a measurement:
#: the order of bf16 ResNet-50 inference on an A100-class GPU).
ASSUMED_GPU_TFLOPS = 20.0


@dataclass(frozen=True)
class Plan:
    """What :func:`xeofm.embed` will do, computed without running anything."""

    model: str
    output: str
    device: str
    cube_shape: dict[str, int]
    chip_size: int
    stride: int
    overlap: int
    halo: tuple[int, int]
    chips_per_step: int
    chips_total: int
    chips_per_block: int
    blocks: int
    block_shape: tuple[int, ...]
    batch_size: int
    batches_total: int
    output_shape: dict[str, int]
    input_bytes: int
    output_bytes: int
    block_bytes: int
    flops_per_chip: float | None
    flops_per_block: float | None
    flops_total: float | None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        return asdict(self)

    def estimate(self, **kwargs: Any):
        """Device-hours and cost of this plan at a given throughput; see :func:`xeofm.cost.estimate`.

        >>> plan.estimate(chips_per_second=2000, price_per_device_hour=3.0)  # doctest: +SKIP
        """
        from .cost import estimate

        return estimate(self, **kwargs)

    def __repr__(self) -> str:
        def gb(b: float) -> str:
            return f"{b / 2**30:.3f} GiB" if b >= 2**27 else f"{b / 2**20:.1f} MiB"

        rows = [
            ("model", self.model),
            ("output", f"{self.output} -> {self.output_shape}"),
            ("device", self.device),
            ("cube", str(self.cube_shape)),
            ("chip / stride / overlap", f"{self.chip_size} / {self.stride} / {self.overlap} px"),
            ("halo (y, x)", f"{self.halo} px"),
            ("chips", f"{self.chips_total} ({self.chips_per_step} per time step)"),
            ("blocks", f"{self.blocks} of {self.block_shape}, up to {self.chips_per_block} chips each"),
            ("batch size", f"{self.batch_size} ({self.batches_total} batches)"),
            ("input / output", f"{gb(self.input_bytes)} / {gb(self.output_bytes)}"),
            ("working set per block", gb(self.block_bytes)),
            (
                "FLOPs",
                "unknown"
                if self.flops_total is None
                else f"{_si(self.flops_per_chip)}FLOP per chip, {_si(self.flops_per_block)}FLOP per block, "
                f"{_si(self.flops_total)}FLOP in all",
            ),
        ]
        if self.flops_total:
            hours = self.flops_total / (ASSUMED_GPU_TFLOPS * 1e12) / 3600
            rows.append(
                (
                    "est. GPU-hours",
                    f"{hours:.3g} at an assumed {ASSUMED_GPU_TFLOPS:g} TFLOP/s sustained "
                    "(plan.estimate(chips_per_second=...) with a measured rate)",
                )
            )
        w = max(len(k) for k, _ in rows)
        return "Plan\n" + "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)


def _si(v: float) -> str:
    for unit, f in (("P", 1e15), ("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if v >= f:
            return f"{v / f:.2f} {unit}"
    return f"{v:.0f} "


def _extra_block_sizes(extra_chunks) -> list[int]:
    import itertools

    import numpy as np

    if not extra_chunks:
        return [1]
    return [int(np.prod(c)) for c in itertools.product(*extra_chunks)]


def plan(obj: Any, model: Any, **kwargs: Any) -> Plan:
    """Dry run of :func:`xeofm.embed`: the same arguments, nothing computed.

    Returns
    -------
    Plan
        Chips, blocks, batch size, bytes and FLOPs.
    """
    import numpy as np

    from .engine import prepare

    p = prepare(obj, model, **kwargs)
    ctx = p.ctx
    yg, xg = ctx.ygrid, ctx.xgrid
    steps = int(np.prod([p.data.shape[i] for i in range(len(p.extra_dims))])) if p.extra_dims else 1
    per_step = yg.n_chips * xg.n_chips
    chunks = p.data.chunks
    blocks = int(np.prod([len(c) for c in chunks]))
    # chips actually run, halos included: each block runs every chip touching its cells
    from .engine import _axis_window

    def runs(grid, out_chunks, depth):
        counts, o0 = [], 0
        for c in out_chunks:
            lo, hi, _ = _axis_window(grid, ctx.mode, o0, o0 + c, depth)
            counts.append(len(grid.origins(lo * grid.unit, hi * grid.unit)))
            o0 += c
        return counts

    ry = runs(yg, p.out_chunks[-2], ctx.depth_y)
    rx = runs(xg, p.out_chunks[-1], ctx.depth_x)
    extra_blocks = _extra_block_sizes(p.out_chunks[: len(p.extra_dims)])
    chips_total = sum(m * a * b for m in extra_blocks for a in ry for b in rx)
    batches_total = sum(-(-(m * a * b) // ctx.batch_size) for m in extra_blocks for a in ry for b in rx)
    chips_per_block = max(m * a * b for m in extra_blocks for a in ry for b in rx)
    costs = model_costs(p.spec)
    out_elems = int(np.prod([sum(c) for c in p.out_chunks]))
    in_bytes = int(np.prod(p.data.shape)) * np.dtype(p.data.dtype).itemsize
    m = max(max(c) for c in chunks[: len(p.extra_dims)]) if p.extra_dims else 1
    depth = max(ctx.depth_y, ctx.depth_x)
    dims = [*map(str, p.extra_dims), "band", str(p.y_dim), str(p.x_dim)]
    odims = [*map(str, p.extra_dims), "embedding", str(p.y_dim), str(p.x_dim)]
    return Plan(
        model=p.spec.name,
        output=ctx.mode,
        device=ctx.device,
        cube_shape=dict(zip(dims, map(int, p.data.shape))),
        chip_size=p.spec.chip_size,
        stride=p.spec.stride,
        overlap=p.overlap,
        halo=(ctx.depth_y, ctx.depth_x),
        chips_per_step=per_step,
        chips_total=chips_total,
        chips_per_block=chips_per_block,
        blocks=blocks,
        block_shape=tuple(int(max(c)) for c in chunks),
        batch_size=ctx.batch_size,
        batches_total=batches_total,
        output_shape=dict(zip(odims, (int(sum(c)) for c in p.out_chunks))),
        input_bytes=in_bytes,
        output_bytes=out_elems * 4,
        block_bytes=_block_bytes(max(max(chunks[-2]), max(chunks[-1])), p.spec, ctx.mode, len(p.band_names), m, depth),
        flops_per_chip=costs.flops_per_chip,
        flops_per_block=None if costs.flops_per_chip is None else costs.flops_per_chip * chips_per_block,
        flops_total=None if costs.flops_per_chip is None else costs.flops_per_chip * chips_total,
    )
