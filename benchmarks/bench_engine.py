"""Engine throughput and memory, measured as ratios in one run.

Compares, on the same model, the same chips and the same batch size:

* ``bare``: the model alone on pre-cut, pre-normalised batches (the ceiling);
* ``xeofm``: ``cube.eofm.embed(...).compute()`` end to end (reading the dask
  cube, normalisation, halos, blending, masking);
* ``naive``: a per-chip Python loop (one chip per forward, pasted into an
  output array), what a hand-written script usually does.

Then peak RSS of ``embed(...).to_zarr(...)`` in fresh processes as the cube
grows 4x and 16x in area with a fixed block size (streaming: should stay flat).

Prints a table and writes ``benchmarks/results/engine-<device>.json`` and ``.md``.

Usage::

    python benchmarks/bench_engine.py                 # CPU, ResNet-18, 4096^2 x 6 bands
    python benchmarks/bench_engine.py --size 2048     # quicker
    python benchmarks/bench_engine.py --device cuda --amp bf16
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
BANDS = ["blue", "green", "red", "nir08", "swir16", "swir22"]


def make_spec(arch: str):
    import xeofm

    return xeofm.ModelSpec(
        name=f"bench-{arch}-6band",
        bands=BANDS,
        chip_size=224,
        stride=32,
        embedding_dim={"resnet18": 512, "resnet50": 2048}[arch],
        output="patch",
        scale=1e-4,
        builder="xeofm.models.builders:timm_feature_map",
        builder_kwargs={"arch": arch, "in_chans": len(BANDS)},
    )


def make_cube(n: int, chunks: int | None = None, seed: int = 0):
    """A 6-band uint16 cube with a real CRS; lazy random data when ``chunks`` is given."""
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr

    if chunks:
        data = da.random.default_rng(seed).integers(0, 10000, size=(len(BANDS), n, n), chunks=(-1, chunks, chunks), dtype="uint16")
    else:
        data = np.random.default_rng(seed).integers(0, 10000, size=(len(BANDS), n, n), dtype="uint16")
    cube = xr.DataArray(
        data,
        dims=("band", "y", "x"),
        coords={"band": BANDS, "y": 6_000_000 - 10.0 * (np.arange(n) + 0.5), "x": 500_000 + 10.0 * (np.arange(n) + 0.5)},
    )
    return cube.rio.write_crs("EPSG:32633")


def chips_of(cube, spec, overlap):
    from xeofm.grid import AxisGrid

    step = spec.chip_size - overlap
    gy = AxisGrid(cube.sizes["y"], spec.chip_size, step, spec.stride)
    gx = AxisGrid(cube.sizes["x"], spec.chip_size, step, spec.stride)
    return [(oy, ox) for oy in gy.origins() for ox in gx.origins()]


def run_bare(model, x, chips, C, bs, device, amp):
    import torch

    from xeofm.engine import _autocast

    batches = []
    for i in range(0, len(chips), bs):
        sel = chips[i : i + bs]
        batches.append(torch.stack([x[:, oy : oy + C, ox : ox + C] for oy, ox in sel]).to(device))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    with torch.inference_mode(), _autocast(device, amp):
        for b in batches:
            model(b).float().cpu()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t


def run_naive(model, cube_np, chips, spec, device):
    import torch

    C, s = spec.chip_size, spec.stride
    n = cube_np.shape[-1]
    out = np.zeros((spec.embedding_dim, -(-n // s), -(-n // s)), np.float32)
    cnt = np.zeros(out.shape[1:], np.float32)
    t = time.perf_counter()
    with torch.inference_mode():
        for oy, ox in chips:
            chip = cube_np[:, oy : oy + C, ox : ox + C].astype(np.float32) * spec.scale
            y = model(torch.from_numpy(chip)[None].to(device))[0].float().cpu().numpy()
            out[:, oy // s : oy // s + C // s, ox // s : ox // s + C // s] += y
            cnt[oy // s : oy // s + C // s, ox // s : ox // s + C // s] += 1
    np.divide(out, cnt, out=out, where=cnt > 0)
    return time.perf_counter() - t


RSS_CHILD = r"""
import resource, sys, time, json
sys.path.insert(0, {root!r})
import xeofm
from benchmarks.bench_engine import make_cube, make_spec
n, block, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cube = make_cube(n, chunks=block)
emb = cube.eofm.embed(make_spec({arch!r}), block_size=block, device={device!r})
t = time.perf_counter()
emb.to_dataset().to_zarr(out, mode="w")
dt = time.perf_counter() - t
# VmHWM is this process's own high-water mark (ru_maxrss would include the parent's, kept across exec)
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"n": n, "seconds": dt, "peak_rss_mib": int(hwm) / 1024}}))
"""


def rss_series(sizes, block, arch, device):
    root = str(HERE.parent)
    code = RSS_CHILD.format(root=root, arch=arch, device=device)
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, "-c", code, str(n), str(block), os.path.join(tmp, "e.zarr")],
                               capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=4096)
    p.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet50"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--amp", default=None, choices=[None, "bf16", "fp16"])
    p.add_argument("--overlap", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--rounds", type=int, default=3, help="interleaved repetitions of bare and xeofm")
    p.add_argument("--naive-chips", type=int, default=120, help="chips timed for the naive loop (rate is per chip)")
    p.add_argument("--rss-sizes", type=int, nargs="*", default=[1024, 2048, 4096, 8192])
    p.add_argument("--rss-block", type=int, default=1024)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args(argv)

    import torch

    import xeofm
    from xeofm import runtime
    from xeofm.plan import choose_batch_size

    device = runtime.resolve_device(args.device)
    spec = make_spec(args.arch)
    bs = args.batch_size or choose_batch_size(spec, device)
    cube = make_cube(args.size)
    chips = chips_of(cube, spec, args.overlap)
    model = runtime.get_model(spec, device)
    x = torch.from_numpy(cube.values.astype(np.float32) * spec.scale)

    # warm-up (allocator, kernels) on a few batches
    run_bare(model, x, chips[: 2 * bs], spec.chip_size, bs, device, args.amp)

    plan = cube.eofm.plan(spec, overlap=args.overlap, batch_size=bs, device=device, amp=args.amp)
    emb = cube.chunk({"y": 1024, "x": 1024}).eofm.embed(spec, overlap=args.overlap, batch_size=bs, device=device, amp=args.amp)
    # interleaved rounds; the best of each path is reported (least disturbed by other load)
    bare_runs, xeofm_runs = [], []
    for _ in range(args.rounds):
        bare_runs.append(run_bare(model, x, chips, spec.chip_size, bs, device, args.amp))
        t = time.perf_counter()
        res = emb.compute()
        xeofm_runs.append(time.perf_counter() - t)
        assert np.isfinite(res.values).all()
    t_bare, t_xeofm = min(bare_runs), min(xeofm_runs)
    naive = chips[: args.naive_chips]
    t_naive = run_naive(model, cube.values, naive, spec, device) * len(chips) / len(naive)

    n_chips = len(chips)
    rate = {k: n_chips / v for k, v in (("bare", t_bare), ("xeofm", t_xeofm), ("naive", t_naive))}
    mpx = args.size**2 / 1e6
    result = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": device if device == "cpu" else torch.cuda.get_device_name(device),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "xeofm": xeofm.__version__,
        "python": platform.python_version(),
        "model": args.arch,
        "amp": args.amp or "fp32",
        "cube": f"6 x {args.size} x {args.size} uint16",
        "chips": n_chips,
        "chips_run_by_xeofm": plan.chips_total,
        "blocks": plan.blocks,
        "block_shape": list(plan.block_shape),
        "batch_size": bs,
        "overlap": args.overlap,
        "seconds": {"bare": t_bare, "xeofm": t_xeofm, "naive": t_naive},
        "rounds": {"bare": bare_runs, "xeofm": xeofm_runs},
        "chips_per_s": rate,
        "megapixels_per_s": {k: mpx / v for k, v in (("bare", t_bare), ("xeofm", t_xeofm), ("naive", t_naive))},
        "ratio_xeofm_vs_bare": rate["xeofm"] / rate["bare"],
        "ratio_xeofm_vs_naive": rate["xeofm"] / rate["naive"],
    }
    if args.rss_sizes:
        rows = rss_series(args.rss_sizes, args.rss_block, args.arch, device)
        result["rss_streaming_to_zarr"] = {"block": args.rss_block, "runs": rows,
                                           "ratio_largest_vs_smallest": rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]}

    lines = [
        f"# Engine benchmark — {result['device']} ({result['cpu_count']} CPU cores), {result['date']}",
        "",
        f"Model {args.arch} ({result['amp']}), cube {result['cube']}, chip 224, overlap {args.overlap}, "
        f"{n_chips} chips, batch {bs}; xeofm ran {plan.chips_total} chips in {plan.blocks} block(s) of {tuple(plan.block_shape)}.",
        "",
        "| path | seconds | chips/s | Mpx/s | vs bare |",
        "|---|---:|---:|---:|---:|",
    ]
    for k in ("bare", "xeofm", "naive"):
        lines.append(f"| {k} | {result['seconds'][k]:.1f} | {rate[k]:.2f} | {result['megapixels_per_s'][k]:.3f} | {rate[k] / rate['bare']:.3f} |")
    lines.append("")
    lines.append(f"(bare and xeofm: best of {args.rounds} interleaved rounds; naive: per-chip loop with batch 1, "
                 f"timed on the first {len(naive)} chips and scaled to all {n_chips})")
    if args.rss_sizes:
        lines += ["", f"Peak RSS of `embed().to_zarr()` in a fresh process, block {args.rss_block}:", "",
                  "| cube side | area | seconds | peak RSS (MiB) |", "|---:|---:|---:|---:|"]
        a0 = args.rss_sizes[0] ** 2
        for r in result["rss_streaming_to_zarr"]["runs"]:
            lines.append(f"| {r['n']} | {r['n'] ** 2 / a0:.0f}x | {r['seconds']:.1f} | {r['peak_rss_mib']:.0f} |")
    table = "\n".join(lines)
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cpu" if device == "cpu" else "gpu"
    (out / f"engine-{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"engine-{tag}.md").write_text(table + "\n")
    return result


if __name__ == "__main__":
    main()
