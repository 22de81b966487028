"""Per-process runtime: devices, the model cache and array hand-off to torch.

The only process-wide state in xeofm lives here: a cache of built models keyed
by ``(spec hash, device)``, and the modules users handed to :func:`xeofm.wrap`
(which cannot be rebuilt from an import path). Dask graphs carry specs, never
modules: each process builds a model the first time a task needs it.
"""

from __future__ import annotations

import importlib
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import DeviceError, SpecError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .spec import ModelSpec

__all__ = ["resolve_device", "get_model", "load_state_dict", "clear_cache", "is_cupy"]

_LOCK = threading.RLock()
_MODELS: dict[tuple[str, str], Any] = {}
_LOCAL_MODULES: dict[str, Any] = {}
_RUN_LOCKS: dict[tuple[str, str], threading.Lock] = {}


def resolve_device(device: str | None = "auto") -> str:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N"`` into a concrete torch device string.

    Raises
    ------
    DeviceError
        If a CUDA device is asked for and none is available.
    """
    import torch

    if device is None or device == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    dev = str(device)
    if dev == "cpu":
        return "cpu"
    if dev.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device={dev!r} was requested but torch sees no CUDA GPU "
                f"(torch {torch.__version__}, CUDA build: {torch.version.cuda}). "
                "Use device='auto' or 'cpu', or install a CUDA build of torch."
            )
        idx = int(dev.split(":", 1)[1]) if ":" in dev else 0
        n = torch.cuda.device_count()
        if idx >= n:
            raise DeviceError(f"device={dev!r} but only {n} CUDA device(s) are visible")
        return f"cuda:{idx}"
    if dev == "mps":
        return "mps"
    raise DeviceError(f"unknown device {device!r}: use 'auto', 'cpu', 'cuda' or 'cuda:N'")


def register_local_module(key: str, module: Any) -> None:
    """Keep a user module in this process so specs made by :func:`xeofm.wrap` can find it."""
    with _LOCK:
        _LOCAL_MODULES[key] = module


def _import_builder(path: str):
    mod, _, fn = path.partition(":")
    if not fn:
        raise SpecError(f"builder {path!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot import model builder {path!r}: {exc}") from exc


def load_state_dict(path: str | Path) -> dict[str, Any]:
    """Read a state dict from a safetensors or torch file without unpickling objects.

    Torch files are read with ``weights_only=True``; a checkpoint that nests
    the weights under ``"state_dict"`` or ``"model"`` is unwrapped.
    """
    import torch

    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(f"weight file {str(p)!r} does not exist")
    with open(p, "rb") as f:
        head = f.read(9)
    # safetensors: 8-byte little-endian header length, then a JSON header
    is_safetensors = p.suffix == ".safetensors" or (len(head) == 9 and head[8:9] == b"{")
    try:
        if is_safetensors:
            from safetensors.torch import load_file

            sd: Any = load_file(str(p), device="cpu")
        else:
            try:  # memory-mapped: a large checkpoint is not held in memory twice while loading
                sd = torch.load(str(p), map_location="cpu", weights_only=True, mmap=True)
            except Exception:  # e.g. files in torch's legacy (pre-zip) format cannot be mapped
                sd = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt or foreign file
        raise WeightsError(f"cannot read weight file {str(p)!r}: {type(exc).__name__}: {exc}") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"weight file {str(p)!r} holds a {type(sd).__name__}, not a state dict")
    return sd


def load_weights(module: Any, path: str | Path, *, strict: bool = True, spec: "ModelSpec | None" = None) -> Any:
    """Load a weight file into ``module``, naming mismatched keys on failure.

    With a ``spec``, the file's SHA-256 is checked against ``spec.weights_sha256``
    and the checkpoint goes through the spec's ``remap`` hook (the authors' key
    layout -> the module's) before the keys are compared.
    """
    import torch

    from .models import weights as _weights

    name = spec.name if spec is not None else None
    if spec is not None:
        _weights.verify_sha256(path, spec.weights_sha256, model=name)
    sd = load_state_dict(path)
    remap = _weights.remap_for(spec) if spec is not None else None
    if remap is not None:
        try:
            sd = remap(sd)
        except WeightsError:
            raise
        except Exception as exc:
            raise WeightsError(
                f"weight file {str(path)!r} could not be converted for model {name!r} "
                f"({type(exc).__name__}: {exc}); is it the right file"
                + (f" (expected {spec.weights_file})" if spec is not None and spec.weights_file else "")
                + "?"
            ) from exc
    sd = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)}
    own = module.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad_shape = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if strict and (missing or unexpected or bad_shape):
        def few(keys):
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {few(unexpected)}")
        if bad_shape:
            parts.append(
                "shape mismatch: "
                + few([f"{k} file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}" for k in bad_shape])
            )
        who = f" {name!r}" if name else ""
        expect = f" (expected {spec.weights_file})" if spec is not None and spec.weights_file else ""
        raise WeightsError(
            f"weight file {str(path)!r} does not fit this model{who}{expect}: " + "; ".join(parts)
        )
    module.load_state_dict(sd, strict=strict)
    return module


def build_module(spec: "ModelSpec") -> Any:
    """Build the torch module described by ``spec`` on the CPU (weights loaded)."""
    if spec._local_key is not None:
        with _LOCK:
            module = _LOCAL_MODULES.get(spec._local_key)
        if module is None:
            raise SpecError(
                f"model {spec.name!r} was wrapped from a module object in another process; it "
                "cannot be rebuilt here (e.g. on a dask worker process). Give the spec an importable "
                "builder='package.module:function' so workers can build it themselves."
            )
        return module
    import torch

    fn = _import_builder(spec.builder)  # type: ignore[arg-type]
    # random initialisation is seeded, so weight-less builds agree across processes
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        module = fn(**dict(spec.builder_kwargs))
    if spec.weights:
        load_weights(module, spec.weights, spec=spec)
    return module


def get_model(spec: "ModelSpec", device: str) -> Any:
    """Return the cached model for ``spec`` on ``device``, building it once per process."""
    key = (spec.hash, device)
    model = _MODELS.get(key)
    if model is not None:
        return model
    with _LOCK:
        model = _MODELS.get(key)
        if model is None:
            import copy

            import torch

            module = build_module(spec)
            params = list(module.parameters())
            on = params[0].device if params else torch.device("cpu")
            if spec._local_key is not None and on != torch.device(device):
                module = copy.deepcopy(module)
            module = module.to(device).eval()
            for p in module.parameters():
                p.requires_grad_(False)
            _MODELS[key] = model = module
            _RUN_LOCKS[key] = threading.Lock()
    return model


def run_lock(spec: "ModelSpec", device: str) -> threading.Lock:
    """A lock per (model, device): one thread at a time drives one GPU model."""
    with _LOCK:
        return _RUN_LOCKS.setdefault((spec.hash, device), threading.Lock())


def clear_cache() -> None:
    """Drop all cached models of this process (wrapped modules stay registered)."""
    with _LOCK:
        _MODELS.clear()
        _RUN_LOCKS.clear()


def cached_models() -> list[tuple[str, str]]:
    """Keys ``(spec hash, device)`` of the models built in this process."""
    return list(_MODELS)


def is_cupy(arr: Any) -> bool:
    """True if ``arr`` is a CuPy array (checked without importing CuPy)."""
    return type(arr).__module__.split(".")[0] == "cupy"


def to_torch(arr: Any, device: str) -> "torch.Tensor":
    """Hand an array chunk to torch on ``device``.

    CuPy arrays go through DLPack (no host copy). NumPy arrays are wrapped
    without a copy on CPU; for CUDA they are staged in pinned memory and copied
    asynchronously.
    """
    import numpy as np
    import torch

    if is_cupy(arr):
        t = torch.from_dlpack(arr)
        return t if str(t.device) == device else t.to(device)
    a = np.ascontiguousarray(arr)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    if a.dtype == np.uint16 and not hasattr(torch, "uint16"):  # old torch
        a = a.astype(np.int32)
    t = torch.from_numpy(a)
    if device == "cpu":
        return t
    if device.startswith("cuda"):
        t = t.pin_memory()
        return t.to(device, non_blocking=True)
    return t.to(device)


def from_torch(t: "torch.Tensor", like: Any) -> Any:
    """Return ``t`` as the array type of ``like`` (CuPy stays on the GPU)."""
    if is_cupy(like):
        import cupy

        return cupy.from_dlpack(t.contiguous())
    return t.detach().cpu().numpy()


def warn_once(message: str, category: type[Warning] = UserWarning) -> None:
    """Emit a warning (a thin wrapper so callers set ``stacklevel`` consistently)."""
    warnings.warn(message, category, stacklevel=3)
