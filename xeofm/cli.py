"""The ``xeofm`` command line.

::

    xeofm models                                   # registered models
    xeofm plan  --stac catalog.json --bands red green blue nir --model NAME
    xeofm embed --stac catalog.json --bands red green blue nir --model NAME --out emb.zarr
    xeofm embed image.tif --bands red green blue nir --model NAME --out emb.zarr --resume

Inputs are a STAC catalog / API (``--stac``, filtered with ``--collections``,
``--bbox``, ``--datetime``) or a raster / zarr path. ``embed`` streams the
embeddings into a resumable zarr store (:func:`xeofm.io.to_zarr`); ``--dry-run``
prints the plan instead. Jobs run on dask's threads, or on an existing
cluster given with ``--scheduler tcp://host:8786`` (the CLI never starts one).

Exit codes: 0 success, 2 bad input (arguments, data, model, existing store),
1 failure while running (write errors, dead workers...), 130 interrupted.
Errors are one line on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Sequence

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAIL, EXIT_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


class _Fail(Exception):
    """An input problem found by the CLI itself (exit code 2)."""


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _add_input_args(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("input")
    src.add_argument("source", nargs="?", help="raster (GeoTIFF...) or zarr path, when --stac is not used")
    src.add_argument("--stac", metavar="CATALOG_OR_URL", help="static STAC catalog / collection / item file or STAC API URL")
    src.add_argument("--bands", nargs="+", metavar="BAND",
                     help="bands to load (names or STAC common names); for a raster: the names of its bands in order")
    src.add_argument("--collections", nargs="+", metavar="ID", help="STAC collections to use")
    src.add_argument("--bbox", nargs=4, type=float, metavar=("WEST", "SOUTH", "EAST", "NORTH"), help="degrees")
    src.add_argument("--datetime", help="e.g. 2020, 2020-06, 2020-01-01/2020-06-30")
    src.add_argument("--resolution", type=float, help="output pixel size in CRS units (STAC)")
    src.add_argument("--crs", help="output CRS, e.g. EPSG:3035 (needed when STAC items are in several CRSs)")
    src.add_argument("--mask", default="auto", help="STAC cloud/quality mask: auto (default), none, or a mask band name")
    src.add_argument("--max-items", type=int, help="use at most this many STAC items")
    m = p.add_argument_group("model")
    m.add_argument("--model", required=True, help="registered model name (see `xeofm models`)")
    m.add_argument("--weights", help="weight file for the model")
    m.add_argument("--random-weights", action="store_true", help="random (seeded) weights: for testing the pipeline")
    m.add_argument("--output", default="patch", choices=["patch", "pixel", "chip"], help="output grid (default patch)")
    m.add_argument("--overlap", type=int, help="chip overlap in pixels")
    m.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N")
    m.add_argument("--amp", choices=["bf16", "fp16"], help="autocast precision on GPU")
    m.add_argument("--batch-size", type=int)
    m.add_argument("--block-size", type=int, help="block side in pixels (default: chosen for the device)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``xeofm`` command."""
    from ._version import __version__

    parser = argparse.ArgumentParser(
        prog="xeofm", description="Earth-observation foundation models over datacubes, from the command line.",
    )
    parser.add_argument("--version", action="version", version=f"xeofm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    pm = sub.add_parser("models", help="list the registered models")
    pm.add_argument("--json", action="store_true", help="machine-readable output")
    pm.set_defaults(func=_cmd_models)

    pp = sub.add_parser("plan", help="what embed would do: chips, blocks, bytes, FLOPs (nothing runs)")
    _add_input_args(pp)
    _add_estimate_args(pp)
    pp.add_argument("--json", action="store_true", help="machine-readable output")
    pp.set_defaults(func=_cmd_plan)

    pe = sub.add_parser("embed", help="embed a cube into a resumable zarr store")
    _add_input_args(pe)
    o = pe.add_argument_group("output")
    o.add_argument("--out", required=True, help="zarr store path or URL (s3://...)")
    o.add_argument("--resume", action="store_true", help="finish a store of the same job, skipping written regions")
    o.add_argument("--overwrite", action="store_true", help="replace an existing store")
    o.add_argument("--dtype", default="float32", choices=["float32", "float16", "int8"], help="storage type")
    o.add_argument("--int8-range", nargs=2, type=float, metavar=("LO", "HI"), help="int8 quantisation range")
    o.add_argument("--dry-run", action="store_true", help="print the plan and exit without computing")
    r = pe.add_argument_group("running")
    r.add_argument("--scheduler", help="threads (default), synchronous, or the address of a running dask scheduler")
    r.add_argument("--connect-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long to try reaching --scheduler (default 10)")
    r.add_argument("--resources", nargs="+", metavar="NAME=N", help="dask worker resources per task, e.g. GPU=1")
    r.add_argument("--quiet", action="store_true", help="no progress bar")
    _add_estimate_args(pe)
    pe.set_defaults(func=_cmd_embed)
    return parser


def _add_estimate_args(p: argparse.ArgumentParser) -> None:
    e = p.add_argument_group("cost estimate (throughput is an input: measure it or assume it)")
    e.add_argument("--chips-per-second", type=float, help="throughput of one device on this model")
    e.add_argument("--tflops", type=float, help="or: sustained TFLOP/s of one device on this model")
    e.add_argument("--devices", type=int, default=1, help="devices running in parallel")
    e.add_argument("--price", type=float, help="price of one device-hour")


# --------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------
def _load_input(args: argparse.Namespace) -> Any:
    if args.stac and args.source:
        raise _Fail("give either a raster/zarr path or --stac, not both")
    if args.stac:
        if not args.bands:
            raise _Fail("--stac needs --bands (e.g. --bands red green blue nir)")
        from .stac import load_stac

        mask: Any = args.mask
        if str(mask).lower() in ("none", "false", "off", "no"):
            mask = False
        return load_stac(
            args.stac, args.bands, collections=args.collections, bbox=args.bbox, datetime=args.datetime,
            resolution=args.resolution, crs=args.crs, mask=mask, max_items=args.max_items,
        )
    if not args.source:
        raise _Fail("no input: give a raster or zarr path, or --stac CATALOG")
    from pathlib import Path

    path = Path(args.source)
    if not path.exists() and "://" not in args.source:
        raise _Fail(f"input {args.source!r} does not exist")
    if path.is_dir() or args.source.rstrip("/").endswith(".zarr"):
        return _open_zarr_input(args)
    return _open_raster(args)


def _open_zarr_input(args: argparse.Namespace) -> Any:
    import xarray as xr

    try:
        ds = xr.open_zarr(args.source, decode_coords="all")
    except Exception as exc:
        raise _Fail(f"cannot open {args.source!r} as zarr: {type(exc).__name__}: {exc}") from exc
    with_band = [v for v in ds.data_vars if "band" in ds[v].dims]
    if len(with_band) == 1:
        da = ds[with_band[0]]
        if args.bands:
            names = [str(b) for b in da["band"].values] if "band" in da.coords else []
            if not names:
                if len(args.bands) != da.sizes["band"]:
                    raise _Fail(f"{args.source!r} has {da.sizes['band']} bands but --bands names {len(args.bands)}")
                da = da.assign_coords(band=list(args.bands))
        return da
    if args.bands:
        missing = [b for b in args.bands if b not in ds.data_vars]
        if missing:
            raise _Fail(f"{args.source!r} has no variables {missing}; it holds {list(ds.data_vars)}")
        ds = ds[list(args.bands)]
    return ds


def _open_raster(args: argparse.Namespace) -> Any:
    import rioxarray

    try:
        da = rioxarray.open_rasterio(args.source, chunks={"band": -1, "y": 2048, "x": 2048})
    except Exception as exc:
        raise _Fail(f"cannot open {args.source!r} as a raster: {type(exc).__name__}: {exc}") from exc
    if isinstance(da, list):
        raise _Fail(f"{args.source!r} holds several subdatasets; give one of them")
    if hasattr(da, "data_vars"):  # a Dataset (subdatasets)
        raise _Fail(f"{args.source!r} holds several variables; give one of them")
    n = da.sizes.get("band", 1)
    if args.bands:
        if len(args.bands) != n:
            raise _Fail(f"{args.source!r} has {n} bands; --bands must name each of them in order (got {len(args.bands)})")
        names = list(args.bands)
    else:
        desc = da.attrs.get("long_name")
        if isinstance(desc, (list, tuple)) and len(desc) == n and all(desc):
            names = [str(d) for d in desc]
        else:
            raise _Fail(f"{args.source!r} has {n} unnamed bands; name them in order with --bands (e.g. red green blue nir)")
    return da.assign_coords(band=names)


def _check_model(args: argparse.Namespace) -> None:
    """Fail fast on an unknown model or missing weights, before any data is opened."""
    from .models import resolve_model

    resolve_model(args.model, weights=args.weights, pretrained=not args.random_weights)


def _engine_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kw: dict[str, Any] = {"output": args.output, "device": args.device}
    for name in ("overlap", "batch_size", "block_size", "amp", "weights"):
        v = getattr(args, name, None)
        if v is not None:
            kw[name] = v
    if args.random_weights:
        kw["pretrained"] = False
    return kw


def _estimate_of(plan: Any, args: argparse.Namespace) -> Any:
    if args.chips_per_second is None and args.tflops is None:
        return None
    from .cost import estimate

    try:
        return estimate(plan, chips_per_second=args.chips_per_second, effective_tflops=args.tflops,
                        devices=args.devices, price_per_device_hour=args.price,
                        source="given on the command line" if args.chips_per_second else None)
    except ValueError as exc:
        raise _Fail(str(exc)) from exc


# --------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------
def _cmd_models(args: argparse.Namespace) -> int:
    from .models import get_spec, list_models

    rows = []
    for name in list_models():
        s = get_spec(name)
        rows.append({
            "name": name, "bands": len(s.bands), "chip_size": s.chip_size, "stride": s.stride,
            "embedding_dim": s.embedding_dim, "output": s.output, "gsd": s.gsd, "time_frames": s.time_frames,
            "description": s.description or "",
        })
    if args.json:
        print(json.dumps(rows, indent=1))
        return EXIT_OK
    w = max(len(r["name"]) for r in rows) if rows else 4
    print(f"{'model':<{w}}  bands  chip  stride    dim  description")
    for r in rows:
        print(f"{r['name']:<{w}}  {r['bands']:>5}  {r['chip_size']:>4}  {r['stride']:>6}  {r['embedding_dim']:>5}  "
              f"{_one_line(r['description'])[:70]}")
    return EXIT_OK


def _cmd_plan(args: argparse.Namespace) -> int:
    from .plan import plan

    _check_model(args)
    cube = _load_input(args)
    p = plan(cube, args.model, **_engine_kwargs(args))
    est = _estimate_of(p, args)
    if args.json:
        out = {"plan": p.to_dict()}
        if est is not None:
            out["estimate"] = est.to_dict()
        print(json.dumps(out, indent=1, default=str))
    else:
        print(p)
        if est is not None:
            print(est)
    return EXIT_OK


def _parse_resources(items: Sequence[str] | None) -> dict[str, float] | None:
    if not items:
        return None
    out = {}
    for it in items:
        name, sep, val = it.partition("=")
        try:
            out[name] = float(val) if sep else 1.0
        except ValueError:
            raise _Fail(f"--resources expects NAME=NUMBER, got {it!r}") from None
    return out


def _scheduler(args: argparse.Namespace) -> tuple[Any, Any]:
    """(scheduler for dask, client to close) from --scheduler."""
    s = args.scheduler
    if not s:
        return None, None
    if "://" in s or (":" in s and s.split(":")[-1].isdigit()):
        try:
            from distributed import Client
        except ImportError:
            raise _Fail("--scheduler with an address needs the 'distributed' package") from None
        try:
            client = Client(s, timeout=f"{args.connect_timeout}s")
        except Exception as exc:
            raise _Fail(f"cannot connect to the dask scheduler at {s}: {type(exc).__name__}: {exc}") from exc
        return client, client
    if s not in ("threads", "synchronous", "sync", "single-threaded", "processes"):
        raise _Fail(f"--scheduler must be threads, synchronous, processes or a scheduler address, got {s!r}")
    return s, None


def _cmd_embed(args: argparse.Namespace) -> int:
    from .engine import embed
    from .io import to_zarr
    from .plan import plan

    if args.int8_range is not None and args.dtype != "int8":
        raise _Fail("--int8-range is only used with --dtype int8")
    resources = _parse_resources(args.resources)
    _check_model(args)
    cube = _load_input(args)
    kw = _engine_kwargs(args)
    if args.dry_run:
        p = plan(cube, args.model, **kw)
        print(p)
        est = _estimate_of(p, args)
        if est is not None:
            print(est)
        print(f"dry run: nothing computed or written (would write {args.out})")
        return EXIT_OK
    emb = embed(cube, args.model, **kw)
    scheduler, client = _scheduler(args)
    try:
        t0 = time.perf_counter()
        job = to_zarr(
            emb, args.out, resume=args.resume, overwrite=args.overwrite, dtype=args.dtype,
            int8_range=tuple(args.int8_range) if args.int8_range else None,
            progress=not args.quiet, scheduler=scheduler, resources=resources,
        )
        dt = time.perf_counter() - t0
    finally:
        if client is not None:
            client.close()
    skipped = f", {job.regions_done_before} already done" if job.regions_done_before else ""
    print(f"xeofm: wrote {job.regions_written} of {job.regions_total} regions{skipped} of {args.model} "
          f"to {job.store} in {dt:.1f} s")
    return EXIT_OK


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------
def _warn_one_line(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    print(f"xeofm: warning: {_one_line(message)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``xeofm`` command; returns the exit code.

    Parameters
    ----------
    argv
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        0 success, 2 bad input, 1 failure, 130 interrupted.
    """
    import warnings

    from .errors import (
        DeviceError,
        InputError,
        SpecError,
        WeightsError,
        XeofmError,
    )

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version (0) and usage errors (2)
        return int(exc.code or 0)
    old_show = warnings.showwarning
    warnings.showwarning = _warn_one_line
    old_filters = list(warnings.filters)
    # users of the command see xeofm's warnings, not libraries' deprecation notices
    for cat in (DeprecationWarning, PendingDeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=cat)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        print("xeofm: interrupted; finished regions are kept, run the same command with --resume to continue",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except (_Fail, InputError, SpecError, DeviceError, WeightsError) as exc:
        print(f"xeofm: error: {_one_line(exc)}", file=sys.stderr)
        return EXIT_INPUT
    except XeofmError as exc:
        print(f"xeofm: failed: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAIL
    except Exception as exc:  # unexpected: still one line, with the exception type
        print(f"xeofm: failed: {type(exc).__name__}: {_one_line(exc)}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        warnings.showwarning = old_show
        warnings.filters[:] = old_filters


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
