"""Scaling on paper and in practice: throughput, per-block overhead, a continent-sized graph, flat memory.

Four measurements, each printed as a table and written to
``benchmarks/results/scale-<device>.json`` and ``.md``:

1. **Throughput.** Chips per second of the bare model (pre-cut batches) for
   ResNet-18, ResNet-50 and ViT-S/16 on 13 Sentinel-2 bands, and of the whole
   pipeline ``embed(...)`` -> :func:`xeofm.io.to_zarr` for ResNet-18 (lazy
   input, halos, blending, zarr writes and done markers included).
2. **Per-block overhead.** The same cube streamed to zarr with a nearly free
   model at block sizes from 2048 to 128 px: the slope of time against the
   number of blocks is the cost of one block (dask task, halo, region write,
   marker), independent of the model.
3. **A continent on paper.** Europe at 10 m (EPSG:3035 box 4,000 x 4,100 km,
   400,000 x 410,000 px), 13 bands, 12 monthly steps (a year), as a lazy dask
   cube on an odc-geo GeoBox. Measured in a fresh process: time and client
   memory (RSS) to build ``embed()``, the plan, the store template, and the
   culled graph of one submission batch of regions. Nothing is computed.
4. **Flat memory.** Peak RSS of ``to_zarr(embed(cube))`` in fresh processes as
   the cube grows 64x in area at a fixed block size.

Plus the continent's chips and FLOPs for ResNet-50 and ViT-S/16, turned into
device-hours at *assumed* GPU throughputs (no GPU is measured here).

Usage::

    python benchmarks/bench_scale.py            # full run (~5 min on 2 cores)
    python benchmarks/bench_scale.py --quick    # smaller sizes, for a smoke test
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
ROOT = HERE.parent
S2_BANDS = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
EUROPE_3035 = (2_500_000.0, 1_400_000.0, 6_500_000.0, 5_500_000.0)  # x0, y0, x1, y1 in metres


def s2_cube(n: int, chunks: int, seed: int = 0, nt: int | None = None):
    """A lazy random 13-band uint16 cube with a real CRS (EPSG:32633, 10 m)."""
    import dask.array as da
    import rioxarray  # noqa: F401
    import xarray as xr

    shape = (len(S2_BANDS), n, n) if nt is None else (nt, len(S2_BANDS), n, n)
    ch = (-1, chunks, chunks) if nt is None else (1, -1, chunks, chunks)
    data = da.random.default_rng(seed).integers(0, 10000, size=shape, chunks=ch, dtype="uint16")
    coords = {"band": S2_BANDS, "y": 6_000_000 - 10.0 * (np.arange(n) + 0.5), "x": 500_000 + 10.0 * (np.arange(n) + 0.5)}
    dims = ("band", "y", "x")
    if nt is not None:
        coords["time"] = (np.datetime64("2021-01", "M") + np.arange(nt)).astype("datetime64[ns]")
        dims = ("time", *dims)
    return xr.DataArray(data, dims=dims, coords=coords).rio.write_crs("EPSG:32633")


def cheap_spec():
    """A nearly free model (one strided 16x16 conv, 13 -> 16 channels): measures the engine, not the model."""
    import torch

    import xeofm

    torch.manual_seed(0)
    return xeofm.wrap(torch.nn.Conv2d(13, 16, 16, stride=16), bands=S2_BANDS, chip_size=32, stride=16,
                      embedding_dim=16, scale=1e-4, name="bench-cheap")


# --------------------------------------------------------------------------------------
# 1. throughput
# --------------------------------------------------------------------------------------
def bare_rate(model_name: str, n_chips: int, batch: int) -> float:
    """Chips/s of the model alone on random pre-cut batches (random weights; speed does not depend on them)."""
    import torch

    from xeofm import runtime
    from xeofm.models import resolve_model

    spec = resolve_model(model_name, pretrained=False)
    model = runtime.get_model(spec, "cpu")
    x = torch.rand(batch, len(spec.bands), spec.chip_size, spec.chip_size)
    with torch.inference_mode():
        model(x)  # warm-up
        t = time.perf_counter()
        for _ in range(max(1, n_chips // batch)):
            model(x)
        dt = time.perf_counter() - t
    return max(1, n_chips // batch) * batch / dt


def pipeline_rate(model_name: str, n: int, block: int) -> dict:
    """Chips/s of embed -> to_zarr end to end (random weights)."""
    from xeofm.io import to_zarr
    from xeofm.plan import plan

    cube = s2_cube(n, block)
    kw = dict(pretrained=False, block_size=block, device="cpu")
    p = plan(cube, model_name, **kw)
    emb = cube.eofm.embed(model_name, **kw)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        job = to_zarr(emb, os.path.join(tmp, "e.zarr"))
        dt = time.perf_counter() - t
    return {"model": model_name, "cube": f"13 x {n} x {n}", "block": block, "blocks": p.blocks,
            "chips_run": p.chips_total, "regions": job.regions_total, "seconds": dt, "chips_per_s": p.chips_total / dt}


# --------------------------------------------------------------------------------------
# 2. per-block overhead
# --------------------------------------------------------------------------------------
def block_overhead(n: int, blocks: list[int], rounds: int) -> dict:
    from xeofm.io import to_zarr

    spec = cheap_spec()
    rows = []
    for b in blocks:
        cube = s2_cube(n, b)
        emb = cube.eofm.embed(spec, block_size=b, device="cpu")
        times = []
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                job = to_zarr(emb, os.path.join(tmp, "e.zarr"))
                times.append(time.perf_counter() - t)
        rows.append({"block": b, "regions": job.regions_total, "seconds": min(times)})
    # fit where every core has blocks to work on (fewer blocks than cores leave cores idle)
    fit = [r for r in rows if r["regions"] >= 2 * (os.cpu_count() or 1)] or rows
    x = np.array([r["regions"] for r in fit], dtype=float)
    y = np.array([r["seconds"] for r in fit])
    slope, icpt = np.polyfit(x, y, 1) if len(fit) > 1 else (float("nan"), float("nan"))
    return {"cube": f"13 x {n} x {n}", "model": "1 conv 16x16/16, chip 32 (nearly free)", "rows": rows,
            "seconds_per_block": float(slope), "seconds_fixed": float(icpt)}


# --------------------------------------------------------------------------------------
# 3. the continent, on paper (fresh process)
# --------------------------------------------------------------------------------------
CONTINENT_CHILD = r"""
import json, os, sys, tempfile, time
sys.path.insert(0, {root!r})
import psutil
proc = psutil.Process()
def rss():
    return proc.memory_info().rss / 2**20
import numpy as np, xarray as xr, dask.array as da, rioxarray  # noqa
import torch, xeofm
from xeofm.io import to_zarr
from odc.geo.geobox import GeoBox
from odc.geo.xr import xr_coords
T, block, model, per = {T}, {block}, {model!r}, {per}
out = {{"rss_after_imports_mib": rss()}}
t = time.perf_counter()
gb = GeoBox.from_bbox({bbox!r}, crs="EPSG:3035", resolution=10)
bands = {bands!r}
data = da.zeros((T, len(bands), *gb.shape), dtype="uint16", chunks=(1, len(bands), block, block))
coords = xr_coords(gb, crs_coord_name="spatial_ref")
times = (np.datetime64("2021-01", "M") + np.arange(T)).astype("datetime64[ns]")
cube = xr.DataArray(data, dims=("time", "band", "y", "x"), coords={{"time": times, "band": bands, **coords}})
out["cube"] = {{"shape": [int(s) for s in cube.shape], "input_TiB": cube.nbytes / 2**40, "crs": "EPSG:3035"}}
t = time.perf_counter()
emb = cube.eofm.embed(model, pretrained=False, block_size=block, device="cpu")
out["embed_build_s"] = time.perf_counter() - t
g = emb.__dask_graph__()
out["layers"] = {{k.split("-")[0]: type(v).__name__ for k, v in g.layers.items()}}
out["blocks"] = int(emb.data.npartitions)
out["output_shape"] = [int(s) for s in emb.shape]
out["rss_after_embed_mib"] = rss()
t = time.perf_counter()
p = cube.eofm.plan(model, pretrained=False, block_size=block, device="cpu")
out["plan_s"] = time.perf_counter() - t
out["plan"] = {{k: v for k, v in p.to_dict().items() if k in ("chips_total", "chips_per_step", "blocks", "block_shape",
              "flops_per_chip", "flops_total", "output_bytes", "input_bytes", "block_bytes", "chips_per_block")}}
out["rss_after_plan_mib"] = rss()
with tempfile.TemporaryDirectory() as tmp:
    t = time.perf_counter()
    job = to_zarr(emb, os.path.join(tmp, "europe.zarr"), compute=False, dtype="int8", int8_range=(-8.0, 8.0))
    out["template_s"] = time.perf_counter() - t
    out["template_bytes_on_disk"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(tmp) for f in fs)
    out["regions"] = job.regions_total
    out["zarr_chunks"] = job.manifest["zarr_chunks"]
    out["rss_after_template_mib"] = rss()
    from xeofm.io import _tile_batches
    batches = []
    for i, batch in enumerate(_tile_batches(job.todo, per)[:6]):
        keys = [(job.status.name, *idx) for idx in batch]
        t = time.perf_counter()
        dsk = job._graph_for(keys)
        n = len(dsk.to_dict())
        batches.append({{"regions": len(keys), "tasks": n, "seconds": time.perf_counter() - t, "rss_mib": rss()}})
        del dsk
    out["n_batches"] = len(_tile_batches(job.todo, per))
    out["submit_batches"] = batches
print(json.dumps(out))
"""


def continent(T: int, block: int, model: str, per: int) -> dict:
    code = CONTINENT_CHILD.format(root=str(ROOT), T=T, block=block, model=model, per=per, bbox=EUROPE_3035,
                                  bands=S2_BANDS)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(r.stderr[-3000:])
    res = json.loads(r.stdout.strip().splitlines()[-1])
    res.update({"T": T, "block": block, "model": model})
    return res


# --------------------------------------------------------------------------------------
# 4. flat memory while streaming
# --------------------------------------------------------------------------------------
RSS_CHILD = r"""
import json, sys, time
sys.path.insert(0, {root!r})
from benchmarks.bench_scale import cheap_spec, s2_cube
from xeofm.io import to_zarr
n, block, out, per = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
emb = s2_cube(n, block).eofm.embed(cheap_spec(), block_size=block, device="cpu")
t = time.perf_counter()
job = to_zarr(emb, out, regions_per_submit=per or None)
dt = time.perf_counter() - t
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(json.dumps({{"n": n, "per": per, "regions": job.regions_total, "seconds": dt, "peak_rss_mib": int(hwm) / 1024}}))
"""


def rss_series(sizes: list[int], block: int, per: int = 0) -> list[dict]:
    code = RSS_CHILD.format(root=str(ROOT))
    rows = []
    for n in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            r = subprocess.run([sys.executable, "-c", code, str(n), str(block), os.path.join(tmp, "e.zarr"), str(per)],
                               capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-3000:])
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    return rows


# --------------------------------------------------------------------------------------
def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke test)")
    ap.add_argument("--T", type=int, default=12, help="time steps of the continent (default 12: monthly, a year)")
    ap.add_argument("--continent-block", type=int, default=4096, help="block side for the continent (pixels)")
    ap.add_argument("--regions-per-submit", type=int, default=None,
                    help="batch size for the continent graph (default: xeofm.io.DEFAULT_REGIONS_PER_SUBMIT)")
    ap.add_argument("--assume-tflops", type=float, nargs="+", default=[20.0, 45.0],
                    help="assumed sustained GPU TFLOP/s on these models (NOT measured here); the defaults are the "
                         "order of published PyTorch bf16 inference rates of ResNet-50 on A100- and H100-class GPUs")
    ap.add_argument("--assume-price", type=float, default=3.0, help="assumed price of a GPU-hour (USD)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args(argv)

    import torch

    import xeofm

    torch.manual_seed(0)
    q = args.quick
    result: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": "cpu", "cpu_count": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
        "xeofm": xeofm.__version__, "python": platform.python_version(),
    }
    t_all = time.perf_counter()

    # 1. throughput
    models = ["ssl4eo-s12-resnet18", "ssl4eo-s12-resnet50", "ssl4eo-s12-vit-small16"]
    result["bare_chips_per_s"] = {m: bare_rate(m, 24 if q else 96, 4) for m in models}
    result["pipeline"] = pipeline_rate("ssl4eo-s12-resnet18", 1024 if q else 2048, 1024)
    # 2. per-block overhead
    result["block_overhead"] = block_overhead(1024 if q else 2048, [1024, 512, 256, 128] if q else [2048, 1024, 512, 256, 128],
                                              rounds=1 if q else 2)
    # 3. continent
    from xeofm.io import DEFAULT_REGIONS_PER_SUBMIT

    per = args.regions_per_submit or DEFAULT_REGIONS_PER_SUBMIT
    result["continent"] = [continent(T, args.continent_block, "ssl4eo-s12-resnet50", per)
                           for T in ([1] if q else [1, args.T])]
    vit = continent(1 if q else args.T, args.continent_block, "ssl4eo-s12-vit-small16", per)
    result["continent_vit"] = {k: vit[k] for k in ("T", "plan", "output_shape", "regions")}
    # 4. flat memory
    sizes = [512, 1024, 2048] if q else [1024, 2048, 4096, 8192, 16384]
    blk = 256 if q else 512
    series = {}
    for per in (0, 16):  # 0: the default batches (tiles of 16 x 16 regions); 16: tiles of 4 x 4
        rows = rss_series(sizes, blk, per)
        series[str(per or DEFAULT_REGIONS_PER_SUBMIT)] = {
            "runs": rows, "ratio_largest_vs_smallest": rows[-1]["peak_rss_mib"] / rows[0]["peak_rss_mib"]}
    result["rss_streaming"] = {"block": blk, "by_regions_per_submit": series}

    # cost on paper: measured chips and FLOPs, assumed throughput and price
    big = result["continent"][-1]
    costs = []
    for name, c in (("ssl4eo-s12-resnet50", big), ("ssl4eo-s12-vit-small16", vit)):
        chips, fpc = c["plan"]["chips_total"], c["plan"]["flops_per_chip"]
        cpu_rate = result["bare_chips_per_s"][name]
        row = {"model": name, "T": c["T"], "chips": chips, "flops_per_chip": fpc, "flops_total": c["plan"]["flops_total"],
               "output_TiB_float32": c["plan"]["output_bytes"] / 2**40, "cpu_chips_per_s_measured": cpu_rate,
               "cpu_hours_this_machine": chips / cpu_rate / 3600, "gpu": []}
        for tf in args.assume_tflops:
            rate = tf * 1e12 / fpc
            h = chips / rate / 3600
            row["gpu"].append({"assumed_tflops": tf, "chips_per_s": rate, "gpu_hours": h, "usd": h * args.assume_price})
        costs.append(row)
    result["cost_on_paper"] = {"assumed_price_usd_per_gpu_hour": args.assume_price, "rows": costs}
    result["bench_seconds"] = time.perf_counter() - t_all

    md = render(result, args)
    print(md)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cpu-quick" if q else "cpu"
    (out / f"scale-{tag}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"scale-{tag}.md").write_text(md + "\n")
    return result


def render(r: dict, args) -> str:
    L = [f"# Scale benchmark — {r['device']} ({r['cpu_count']} CPU cores, torch {r['torch']}, "
         f"{r['torch_threads']} threads), {r['date']}", ""]
    L += ["## 1. Throughput (measured on this CPU, random weights, 13 bands, batch 4)", "",
          "| model | chips/s, bare model |", "|---|---:|"]
    for m, v in r["bare_chips_per_s"].items():
        L.append(f"| {m} | {v:.2f} |")
    p = r["pipeline"]
    L += ["", f"End to end, `to_zarr(embed(cube))` with {p['model']}, cube {p['cube']} uint16 (lazy random), block "
          f"{p['block']}: {p['chips_run']} chips (halos included) in {p['seconds']:.1f} s = **{p['chips_per_s']:.2f} chips/s** "
          f"({p['chips_per_s'] / r['bare_chips_per_s'][p['model']]:.2f} x the bare model)."]
    b = r["block_overhead"]
    L += ["", f"## 2. Per-block overhead (measured; {b['model']}, cube {b['cube']})", "",
          "| block (px) | regions | seconds to zarr |", "|---:|---:|---:|"]
    for row in b["rows"]:
        L.append(f"| {row['block']} | {row['regions']} | {row['seconds']:.2f} |")
    L += ["", f"Linear fit over the rows with at least two blocks per core: **{b['seconds_per_block'] * 1e3:.1f} ms per "
          f"block** (dask task, halo, region write, done marker) + {b['seconds_fixed']:.2f} s fixed."]
    L += ["", "## 3. Europe on paper (measured graph building; nothing computed)", "",
          f"EPSG:3035 box {EUROPE_3035} m at 10 m = 400,000 x 410,000 px, 13 bands, uint16, lazy dask zeros on an "
          f"odc-geo GeoBox, blocks of {args.continent_block} px, model ssl4eo-s12-resnet50 (chip 224, stride 32, overlap 64), "
          "store int8. Times and client RSS in a fresh process:", "",
          "| time steps | input | regions | embed() build | plan() | to_zarr template | 1st batch graph | next batches | all batches (est.) | client RSS |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c in r["continent"]:
        b = c["submit_batches"]
        nxt = b[1:] or b
        mean_next = sum(x["seconds"] for x in nxt) / len(nxt)
        total = b[0]["seconds"] + mean_next * (c["n_batches"] - 1)
        L.append(
            f"| {c['T']} | {c['cube']['input_TiB']:.1f} TiB | {c['regions']:,} | {c['embed_build_s']:.1f} s | {c['plan_s']:.1f} s "
            f"| {c['template_s']:.1f} s ({c['template_bytes_on_disk'] / 2**20:.1f} MiB) "
            f"| {b[0]['seconds']:.1f} s ({b[0]['regions']} regions, {b[0]['tasks']:,} tasks) "
            f"| {mean_next:.2f} s each | {c['n_batches']:,} batches, {total / 60:.1f} min "
            f"| {c['rss_after_imports_mib']:.0f} -> {max(x['rss_mib'] for x in b):.0f} MiB |")
    L += ["", f"Graph layers: {r['continent'][-1]['layers']}."]
    s = r["rss_streaming"]
    pers = list(s["by_regions_per_submit"])
    L += ["", f"## 4. Peak memory while streaming to zarr (measured; nearly free model, block {s['block']}, fresh process each)",
          "", "Peak RSS (MiB) and seconds, by `regions_per_submit` (regions per batch, submitted as square tiles):", "",
          "| cube side | area | regions | " + " | ".join(f"per={p}: seconds, peak RSS" for p in pers) + " |",
          "|---:|---:|---:|" + "---:|" * len(pers)]
    first = s["by_regions_per_submit"][pers[0]]["runs"]
    a0 = first[0]["n"] ** 2
    for i, row in enumerate(first):
        cells = " | ".join(f"{s['by_regions_per_submit'][p]['runs'][i]['seconds']:.1f} s, "
                           f"{s['by_regions_per_submit'][p]['runs'][i]['peak_rss_mib']:.0f}" for p in pers)
        L.append(f"| {row['n']} | {row['n'] ** 2 / a0:.0f}x | {row['regions']} | {cells} |")
    L += ["", "Largest / smallest peak RSS: " + ", ".join(
        f"per={p}: {s['by_regions_per_submit'][p]['ratio_largest_vs_smallest']:.2f}" for p in pers) + "."]
    c = r["cost_on_paper"]
    L += ["", "## 5. The continent in device-hours", "",
          "Chips and FLOPs are exact (plan + fake-tensor trace). CPU rates are measured above. **GPU throughputs are "
          f"assumptions** (sustained TFLOP/s on the model, not measured here); price {c['assumed_price_usd_per_gpu_hour']:.2f} "
          "USD per GPU-hour is an assumption too.", "",
          "| model | steps | chips | GFLOP/chip | output (float32) | this CPU: chips/s, hours | " +
          " | ".join(f"GPU @ {g['assumed_tflops']:g} TFLOP/s: h, USD" for g in c["rows"][0]["gpu"]) + " |",
          "|---|---:|---:|---:|---:|---:|" + "---:|" * len(c["rows"][0]["gpu"])]
    for row in c["rows"]:
        g = " | ".join(f"{x['gpu_hours']:,.1f} h, ${x['usd']:,.0f}" for x in row["gpu"])
        L.append(f"| {row['model']} | {row['T']} | {row['chips']:,} | {row['flops_per_chip'] / 1e9:.2f} | "
                 f"{row['output_TiB_float32']:.1f} TiB | {row['cpu_chips_per_s_measured']:.1f}, {row['cpu_hours_this_machine']:,.0f} h | {g} |")
    L += ["", f"(benchmark wall time {r['bench_seconds']:.0f} s)"]
    return "\n".join(L)


if __name__ == "__main__":
    main()
