"""The embedding engine: lazy, chunk-invariant tiled inference over datacubes.

:func:`embed` turns a ``(..., band, y, x)`` cube into a dask-backed
``(..., embedding, y, x)`` cube. The work is one ``map_blocks`` over the input
rechunked into GPU-sized blocks with halos (see :mod:`xeofm.grid`). Each task
receives a small picklable :class:`BlockContext`; the model is built from the
spec inside the worker process and cached there.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Hashable, Literal, Mapping, Sequence

import numpy as np
import xarray as xr

from . import runtime
from .errors import InputError, MissingDimensionError, SpecError
from .grid import AxisGrid, blend_weights, split_blocks
from .spec import ModelSpec

__all__ = ["embed", "BlockContext", "prepare"]

OutputMode = Literal["patch", "pixel", "chip"]
_X_NAMES = ("x", "lon", "longitude", "easting")
_Y_NAMES = ("y", "lat", "latitude", "northing")
_BAND_NAMES = ("band", "bands", "channel", "variable")


# --------------------------------------------------------------------------------------
# Block context and the block function
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BlockContext:
    """Everything a block task needs, small and picklable (no model, no data)."""

    spec: ModelSpec
    mode: OutputMode
    device: str
    batch_size: int
    amp: str | None
    ygrid: AxisGrid
    xgrid: AxisGrid
    depth_y: int
    depth_x: int
    nodata: tuple[float, ...] | None
    skip_empty: bool = True
    time_axis: int | None = None  # position of the time dim among the leading dims
    times: tuple[tuple[int, int], ...] | None = None  # (year, day of year) per global time step
    transform: tuple[float, float, float, float] = (0.0, 1.0, 0.0, -1.0)  # x0, dx, y0, dy
    crs_wkt: str | None = None
    gsd: float | None = None

    @property
    def cell(self) -> int:
        """Output cell size in pixels along y/x."""
        return {"patch": self.ygrid.unit, "pixel": 1, "chip": self.ygrid.chip}[self.mode]


def _axis_window(grid: AxisGrid, mode: OutputMode, o0: int, o1: int, depth: int):
    """For output range [o0, o1): token-cell range needed and extended-block start (pixels)."""
    u = grid.unit
    if mode == "pixel":
        c_lo = max(0, o0 // u - 1)
        c_hi = min(grid.n_pad // u, -(-o1 // u) + 1)
        px0 = o0
    else:
        c_lo, c_hi = o0, o1
        px0 = o0 * u
    ext0 = max(0, px0 - depth)
    return c_lo, c_hi, ext0


def _autocast(device: str, amp: str | None):
    import contextlib

    import torch

    if not amp:
        return contextlib.nullcontext()
    dtype = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16, "float16": torch.float16}[amp]
    return torch.autocast(device_type=device.split(":")[0], dtype=dtype)


def _forward(model, batch, ctx: BlockContext, aux: dict | None = None):
    """Run one batch and return float32 ``(B, D, t, t)`` or ``(B, D)``."""
    import torch

    spec = ctx.spec
    with torch.inference_mode(), _autocast(ctx.device, ctx.amp):
        out = model(batch, **(aux or {}))
    if isinstance(out, (tuple, list)):
        out = out[0]
    if isinstance(out, dict):
        raise SpecError(f"model {spec.name!r} returned a dict; wrap it so forward returns a tensor")
    spec.check_output_shape(tuple(out.shape), batch.shape[0])
    out = out.float()
    if spec.output == "tokens":
        t = spec.tokens_per_side
        tok = out[:, spec.prefix_tokens :, :].reshape(out.shape[0], spec.time_frames, t, t, -1)
        out = tok.mean(dim=1).permute(0, 3, 1, 2)
    return out


@lru_cache(maxsize=16)
def _to_lonlat(crs_wkt: str):
    from pyproj import Transformer

    return Transformer.from_crs(crs_wkt, "EPSG:4326", always_xy=True)


def _aux_inputs(ctx: BlockContext, sel, frames_of, time_index, dev) -> dict:
    """Keyword inputs for a batch, as the spec's ``aux`` asks."""
    import torch

    spec = ctx.spec
    aux: dict[str, Any] = {}
    for name in spec.aux:
        if name == "wavelengths":
            aux[name] = torch.tensor([b.wavelength for b in spec.bands], dtype=torch.float32, device=dev)
        elif name == "gsd":
            aux[name] = float(ctx.gsd) if ctx.gsd is not None else None
        elif name == "time":
            k = 3 if dict(spec.metadata).get("time_hour") else 2  # (year, day of year[, hour of day])
            yd = [[ctx.times[time_index[f]][:k] for f in frames_of(m)] for m, _, _ in sel]
            aux[name] = torch.tensor(yd, dtype=torch.float32, device=dev)
        elif name == "latlon":
            x0, dx, y0, dy = ctx.transform
            half = ctx.ygrid.chip / 2
            xs = np.array([x0 + (ox + half) * dx for _, _, ox in sel])
            ys = np.array([y0 + (oy + half) * dy for _, oy, _ in sel])
            if ctx.crs_wkt is None:
                raise SpecError(f"model {spec.name!r} takes chip latitude/longitude, but the cube has no CRS")
            lon, lat = _to_lonlat(ctx.crs_wkt).transform(xs, ys)
            aux[name] = torch.tensor(np.stack([lat, lon], axis=1), dtype=torch.float32, device=dev)
    return aux


def _interp_axis(arr, axis: int, pos: np.ndarray, n_cells: int, c0: int, unit: int):
    """Linear interpolation from cell centres to pixel centres along one axis.

    ``pos`` holds global pixel indices; cell ``i`` has its centre at ``(i + .5) * unit``.
    Indices are clamped to the global cell range, so edges repeat the last cell.
    """
    import torch

    u = (pos + 0.5) / unit - 0.5
    i0 = np.floor(u).astype(np.int64)
    f = (u - i0).astype(np.float32)
    i1 = np.clip(i0 + 1, 0, n_cells - 1) - c0
    i0 = np.clip(i0, 0, n_cells - 1) - c0
    dev = arr.device
    a0 = torch.index_select(arr, axis, torch.as_tensor(i0, device=dev))
    a1 = torch.index_select(arr, axis, torch.as_tensor(i1, device=dev))
    shape = [1] * arr.ndim
    shape[axis] = len(pos)
    ft = torch.as_tensor(f, device=dev).reshape(shape)
    return a0 * (1 - ft) + a1 * ft


def _block_sat(valid_cells: np.ndarray) -> np.ndarray:
    """Summed-area table with a zero border: sat[m, i, j] = sum(valid[m, :i, :j])."""
    m, h, w = valid_cells.shape
    sat = np.zeros((m, h + 1, w + 1), dtype=np.int64)
    sat[:, 1:, 1:] = valid_cells.astype(np.int64).cumsum(1).cumsum(2)
    return sat


def embed_block(block: Any, ctx: BlockContext, block_info: dict | None = None) -> Any:
    """Compute one output block from its extended (haloed) input block.

    ``block`` has shape ``(..., band, He, We)``; the result has shape
    ``(..., embedding, h, w)`` for the output location dask gives in
    ``block_info``. Works on NumPy and CuPy blocks alike.
    """
    import torch

    spec, mode = ctx.spec, ctx.mode
    loc = block_info[None]["array-location"]
    (oy0, oy1), (ox0, ox1) = loc[-2], loc[-1]
    lead = block.shape[:-3]
    nb, he, we = block.shape[-3:]
    D = spec.embedding_dim
    T = spec.time_frames
    M = int(np.prod(lead)) if lead else 1
    if T > 1:  # time is the last leading dim and one chunk; windows of T steps
        nT = lead[-1]
        nW = nT - T + 1
        out_lead = (*lead[:-1], nW)

        def frames_of(mo: int) -> list[int]:
            o, w = divmod(mo, nW)
            return [o * nT + w + k for k in range(T)]
    else:
        out_lead = lead

        def frames_of(mo: int) -> list[int]:
            return [mo]
    M_out = int(np.prod(out_lead)) if out_lead else 1
    out_shape = (*out_lead, D, oy1 - oy0, ox1 - ox0)
    time_index: list[int] = []
    if ctx.time_axis is not None and ctx.times is not None:
        offs = [loc[i][0] for i in range(len(lead))]
        for m in range(M):
            idx = np.unravel_index(m, lead)
            time_index.append(int(idx[ctx.time_axis]) + offs[ctx.time_axis])

    yg, xg = ctx.ygrid, ctx.xgrid
    u = yg.unit
    C = yg.chip
    cy_lo, cy_hi, ey0 = _axis_window(yg, mode, oy0, oy1, ctx.depth_y)
    cx_lo, cx_hi, ex0 = _axis_window(xg, mode, ox0, ox1, ctx.depth_x)
    ys = yg.origins(cy_lo * u, cy_hi * u)
    xs = xg.origins(cx_lo * u, cx_hi * u)
    gy0, gy1 = ys[0], ys[-1] + C
    gx0, gx1 = xs[0], xs[-1] + C
    if ey0 > gy0 or ex0 > gx0:  # guaranteed by the halo depth; guard against misuse
        raise RuntimeError("internal error: block halo does not cover its chips")

    dev = ctx.device
    raw = runtime.to_torch(block, dev).reshape(M, nb, he, we)

    # a canvas spanning all chips; virtual padding beyond the cube stays invalid.
    # Normalisation happens in place on the canvas: raw + canvas is the whole working set.
    Hc, Wc = gy1 - gy0, gx1 - gx0
    canvas = torch.zeros((M, nb, Hc, Wc), dtype=torch.float32, device=dev)
    cvalid = torch.zeros((M, Hc, Wc), dtype=torch.bool, device=dev)
    sy0, sy1 = max(gy0, ey0), min(gy1, ey0 + he)
    sx0, sx1 = max(gx0, ex0), min(gx1, ex0 + we)
    if sy1 > sy0 and sx1 > sx0:
        dst = (slice(None), slice(None), slice(sy0 - gy0, sy1 - gy0), slice(sx0 - gx0, sx1 - gx0))
        canvas[dst] = raw[:, :, sy0 - ey0 : sy1 - ey0, sx0 - ex0 : sx1 - ex0]
        region = canvas[dst]
        ok = torch.isfinite(region).all(dim=1)
        if ctx.nodata is not None:
            for b, nd in enumerate(ctx.nodata):
                if not math.isnan(nd):
                    ok &= region[:, b] != nd
        cvalid[:, dst[2], dst[3]] = ok
        del region, ok
    del raw
    # ((raw + offset) * scale - mean) / std, fused into one multiply-add per band
    mean = np.zeros(nb) if spec.mean is None else np.asarray(spec.mean, dtype=np.float64)
    std = np.ones(nb) if spec.std is None else np.asarray(spec.std, dtype=np.float64)
    a = spec.scale / std
    b = (spec.offset * spec.scale - mean) / std
    if not (np.all(a == 1) and np.all(b == 0)):
        canvas.mul_(torch.as_tensor(a, dtype=torch.float32, device=dev).view(1, -1, 1, 1))
        canvas.add_(torch.as_tensor(b, dtype=torch.float32, device=dev).view(1, -1, 1, 1))
    canvas.masked_fill_(~cvalid[:, None], 0.0)
    if T > 1:  # an output is valid where any frame of its window is
        ovalid = torch.stack([cvalid[frames_of(mo)].any(dim=0) for mo in range(M_out)])
    else:
        ovalid = cvalid

    # validity per output cell and per chip (summed-area table on the host: small)
    if mode == "chip":
        cell_valid = ovalid.reshape(M_out, Hc // C, C, Wc // C, C).any(dim=4).any(dim=2).cpu().numpy()
        t = 1
    else:
        cell_valid = ovalid.reshape(M_out, Hc // u, u, Wc // u, u).any(dim=4).any(dim=2).cpu().numpy()
        t = C // u
    sat = _block_sat(cell_valid)
    unit_c = C if mode == "chip" else u

    chips: list[tuple[int, int, int]] = []  # (output lead index, oy, ox), raster order per index
    for m in range(M_out):
        for oy in ys:
            iy = (oy - gy0) // unit_c
            for ox in xs:
                ix = (ox - gx0) // unit_c
                n_valid = sat[m, iy + t, ix + t] - sat[m, iy, ix + t] - sat[m, iy + t, ix] + sat[m, iy, ix]
                if n_valid > 0 or not ctx.skip_empty:
                    chips.append((m, oy, ox))

    def make_batch(sel):
        if T == 1:
            return torch.stack([canvas[m, :, oy - gy0 : oy - gy0 + C, ox - gx0 : ox - gx0 + C] for m, oy, ox in sel])
        return torch.stack(
            [canvas[frames_of(m), :, oy - gy0 : oy - gy0 + C, ox - gx0 : ox - gx0 + C].transpose(0, 1) for m, oy, ox in sel]
        )

    def aux_for(sel):
        return _aux_inputs(ctx, sel, frames_of, time_index, dev) if spec.aux else None

    model = runtime.get_model(spec, dev) if chips else None
    bs = max(1, ctx.batch_size)
    nan = float("nan")

    if mode == "chip":
        res = torch.full((M_out, D, Hc // C, Wc // C), nan, dtype=torch.float32, device=dev)
        for i in range(0, len(chips), bs):
            sel = chips[i : i + bs]
            out = _forward(model, make_batch(sel), ctx, aux_for(sel))
            if out.ndim == 4:
                out = out.mean(dim=(2, 3))
            for j, (m, oy, ox) in enumerate(sel):
                res[m, :, (oy - gy0) // C, (ox - gx0) // C] = out[j]
        r0, c0 = oy0 - gy0 // C, ox0 - gx0 // C
        res = res[:, :, r0 : r0 + (oy1 - oy0), c0 : c0 + (ox1 - ox0)]
        return runtime.from_torch(res.reshape(out_shape), block)

    if spec.output == "vector":
        raise SpecError(
            f"model {spec.name!r} returns one vector per chip (output='vector'); "
            "use output='chip', or a spec whose module returns a feature map"
        )
    Hk, Wk = Hc // u, Wc // u
    acc = torch.zeros((M_out, D, Hk, Wk), dtype=torch.float32, device=dev)
    wsum = torch.zeros((M_out, Hk, Wk), dtype=torch.float32, device=dev)
    wy = {oy: blend_weights(yg, oy) for oy in ys}
    wx = {ox: blend_weights(xg, ox) for ox in xs}
    for i in range(0, len(chips), bs):
        sel = chips[i : i + bs]
        out = _forward(model, make_batch(sel), ctx, aux_for(sel))
        w = torch.as_tensor(np.stack([np.outer(wy[oy], wx[ox]) for _, oy, ox in sel]), device=dev)
        out = out * w[:, None]
        for j, (m, oy, ox) in enumerate(sel):
            ky, kx = (oy - gy0) // u, (ox - gx0) // u
            acc[m, :, ky : ky + t, kx : kx + t] += out[j]
            wsum[m, ky : ky + t, kx : kx + t] += w[j]
    del canvas
    has = wsum > 0
    tok = torch.where(has[:, None], acc / torch.where(has, wsum, 1)[:, None], torch.zeros((), device=dev))

    if mode == "patch":
        r0, c0 = oy0 - gy0 // u, ox0 - gx0 // u
        tok = tok[:, :, r0 : r0 + (oy1 - oy0), c0 : c0 + (ox1 - ox0)]
        ok = torch.as_tensor(cell_valid[:, r0 : r0 + (oy1 - oy0), c0 : c0 + (ox1 - ox0)], device=dev)
        tok = torch.where(ok[:, None], tok, torch.full((), nan, device=dev))
        return runtime.from_torch(tok.reshape(out_shape), block)

    # pixel: normalised bilinear interpolation of the token map on global coordinates
    hasf = has.to(torch.float32)[:, None]
    py = np.arange(oy0, oy1)
    px = np.arange(ox0, ox1)
    k0y, k0x = gy0 // u, gx0 // u
    num = _interp_axis(_interp_axis(tok * hasf, 2, py, yg.n_pad // u, k0y, u), 3, px, xg.n_pad // u, k0x, u)
    den = _interp_axis(_interp_axis(hasf, 2, py, yg.n_pad // u, k0y, u), 3, px, xg.n_pad // u, k0x, u)
    pv = ovalid[:, oy0 - gy0 : oy1 - gy0, ox0 - gx0 : ox1 - gx0]
    ok = (den > 0) & pv[:, None]
    val = torch.where(ok, num / torch.where(den > 0, den, 1), torch.full((), nan, device=dev))
    return runtime.from_torch(val.reshape(out_shape), block)


# --------------------------------------------------------------------------------------
# Input handling
# --------------------------------------------------------------------------------------
def _find_dim(obj: xr.DataArray | xr.Dataset, given: str | None, names: Sequence[str], what: str) -> Hashable:
    dims = list(obj.dims)
    if given is not None:
        if given not in dims:
            raise MissingDimensionError(f"{what} dim {given!r} is not among the cube's dims {dims}")
        return given
    for n in names:
        if n in dims:
            return n
    try:  # rioxarray knows more spellings
        d = obj.rio.x_dim if what == "x" else obj.rio.y_dim
        if d in dims:
            return d
    except Exception:
        pass
    raise MissingDimensionError(
        f"no {what} dimension found: the cube has dims {dims}. Name the spatial dims 'y' and 'x' "
        f"(e.g. .rename(...)) or pass {what}_dim=..."
    )


def _to_band_array(obj, band_dim: str | None, spec: ModelSpec, bands: Mapping[str, str] | None):
    """Return (DataArray with a band dim ordered as the model needs, band dim name, chosen names)."""
    from .bands import resolve_bands
    from .models.weights import check_bands

    if isinstance(obj, xr.Dataset):
        names = list(obj.data_vars)
        if not names:
            raise InputError("the Dataset has no data variables; expected one variable per band")
        check_bands(spec, names, bands)
        chosen = resolve_bands(names, spec.bands, bands)
        sub = obj[chosen]
        arr = sub.to_dataarray(dim="band")
        bdim = "band"
        nodata = []
        for v in chosen:
            nodata.append(_nodata_of(obj[v]))
        arr.attrs["_xeofm_nodata"] = tuple(nodata)
        return arr, bdim, chosen
    if not isinstance(obj, xr.DataArray):
        raise InputError(f"expected an xarray DataArray or Dataset, got {type(obj).__name__}")
    bdim = band_dim
    if bdim is None:
        for n in _BAND_NAMES:
            if n in obj.dims:
                bdim = n
                break
    if bdim is None or bdim not in obj.dims:
        if band_dim is not None:
            raise MissingDimensionError(f"band dim {band_dim!r} is not among the cube's dims {list(obj.dims)}")
        raise MissingDimensionError(
            f"no band dimension found: the cube has dims {list(obj.dims)}. Give it a 'band' dim with "
            "band names as coordinate values (xr.concat(..., dim='band')), pass band_dim=..., or pass a "
            "Dataset with one variable per band"
        )
    if bdim in obj.coords:
        names = [v.item() if hasattr(v, "item") else v for v in obj[bdim].values]
    else:
        if obj.sizes[bdim] != len(spec.bands):
            raise MissingDimensionError(
                f"the band dim {bdim!r} has no coordinate labels and {obj.sizes[bdim]} entries while model "
                f"{spec.name!r} needs {len(spec.bands)} bands {spec.band_ids}; label the bands with "
                f"cube.assign_coords({bdim}=[...])"
            )
        names = list(spec.band_ids)
        obj = obj.assign_coords({bdim: names})
    check_bands(spec, names, bands)
    chosen = resolve_bands(names, spec.bands, bands)
    # bands already in the model's order: no selection (it would add a task per chunk to the graph)
    arr = obj.copy(deep=False) if list(names) == list(chosen) else obj.sel({bdim: chosen})
    nd = _nodata_of(obj)
    arr.attrs["_xeofm_nodata"] = None if nd is None else tuple([nd] * len(chosen))
    return arr, bdim, chosen


def _nodata_of(da: xr.DataArray) -> float | None:
    for src in (da.attrs, da.encoding):
        for key in ("nodata", "_FillValue", "missing_value"):
            if key in src and src[key] is not None:
                v = src[key]
                try:
                    return float(np.asarray(v).ravel()[0])
                except (TypeError, ValueError):
                    continue
    return None


def _check_dtype(dtype: np.dtype) -> None:
    dt = np.dtype(dtype)
    if dt.kind in "iu" and dt.itemsize >= 4:
        raise InputError(
            f"the cube has dtype {dt}, whose values above 2**24 cannot be represented exactly in float32 "
            "(the model's input type). Cast it yourself once you know the value range, e.g. "
            "cube.astype('float32'), or rescale to uint16."
        )
    if dt.kind not in "iuf":
        raise InputError(f"the cube has dtype {dt}; expected integer or floating point reflectance values")


def _axis_affine(coord: np.ndarray, name: Hashable, fallback: tuple[float, float] | None):
    """(first edge, signed resolution) of a regular, monotonic coordinate."""
    c = np.asarray(coord, dtype=np.float64)
    if c.size >= 2:
        d = np.diff(c)
        if not (np.all(d > 0) or np.all(d < 0)):
            raise InputError(
                f"coordinate {name!r} is not monotonic; sort it first (cube.sortby({name!r}))"
            )
        res = (c[-1] - c[0]) / (c.size - 1)
        if not np.allclose(d, res, rtol=1e-6, atol=abs(res) * 1e-6):
            raise InputError(
                f"coordinate {name!r} is not evenly spaced (steps from {d.min()} to {d.max()}); "
                "resample the cube to a regular grid (e.g. with odc-geo's .odc.reproject) first"
            )
        return c[0] - res / 2, res
    if fallback is not None:
        return fallback
    raise InputError(f"cannot infer the pixel size along {name!r} from a single coordinate value; write a transform")


@dataclass
class Prepared:
    """An input cube ready for the engine, with its layout (see :func:`prepare`)."""

    data: Any  # dask array (*extra, band, y, x)
    template: xr.DataArray
    spec: ModelSpec
    ctx: BlockContext
    extra_dims: tuple[Hashable, ...]
    y_dim: Hashable
    x_dim: Hashable
    band_names: list
    out_chunks: tuple
    in_chunks: tuple
    transform: tuple[float, float, float, float]  # x0, dx, y0, dy (edges)
    crs: Any
    overlap: int
    block_size: tuple[int, int]
    notes: list[str] = field(default_factory=list)


def _warn_s2_offset(spec: ModelSpec, obj: Any, arr: xr.DataArray, tdim: str | None) -> None:
    """Warn when a model expecting harmonised L2A gets dates of baseline >= 04.00 not yet harmonised."""
    if dict(spec.metadata).get("radiometry") != "s2-l2a-harmonized":
        return
    srcs = [obj] + ([obj[v] for v in obj.data_vars] if isinstance(obj, xr.Dataset) else [])
    if any(s.attrs.get("xeofm:s2_harmonized") for s in srcs) or arr.attrs.get("xeofm:s2_harmonized"):
        return
    if tdim is None or tdim not in arr.coords or not np.issubdtype(arr[tdim].dtype, np.datetime64):
        return
    from .bands import S2_L2A_OFFSET_DATE

    late = int((arr[tdim].values >= np.datetime64(S2_L2A_OFFSET_DATE)).sum())
    if late:
        warnings.warn(
            f"{late} date(s) of the cube are from {S2_L2A_OFFSET_DATE} or later, when Sentinel-2 L2A gained a "
            f"+1000 DN offset (processing baseline 04.00); model {spec.name!r} expects the old scale. Harmonise "
            "first with cube = xeofm.harmonize_s2_l2a(cube) (a no-op on data already harmonised).",
            UserWarning,
            stacklevel=4,
        )


def prepare(
    obj: xr.DataArray | xr.Dataset,
    model: Any,
    *,
    output: OutputMode = "patch",
    bands: Mapping[str, str] | None = None,
    overlap: int | None = None,
    device: str | None = "auto",
    batch_size: int | None = None,
    block_size: int | tuple[int, int] | None = None,
    amp: str | None = None,
    band_dim: str | None = None,
    y_dim: str | None = None,
    x_dim: str | None = None,
    nodata: float | Sequence[float] | None = None,
    weights: str | None = None,
    pretrained: bool = True,
    skip_empty: bool = True,
    time_dim: str | None = None,
) -> Prepared:
    """Validate the cube and model, and lay out chips and blocks (nothing is computed)."""
    import dask.array as dsa
    import rioxarray  # noqa: F401  (registers .rio)

    from .models import resolve_model
    from .plan import choose_batch_size, choose_block_size

    spec = resolve_model(model, weights=weights, pretrained=pretrained)
    if output not in ("patch", "pixel", "chip"):
        raise InputError(f"output must be 'patch', 'pixel' or 'chip', got {output!r}")
    if amp not in (None, "bf16", "bfloat16", "fp16", "float16"):
        raise InputError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    dev = runtime.resolve_device(device)

    arr, bdim, chosen = _to_band_array(obj, band_dim, spec, bands)
    yd = _find_dim(arr, y_dim, _Y_NAMES, "y")
    xd = _find_dim(arr, x_dim, _X_NAMES, "x")
    _check_dtype(arr.dtype)
    nd = arr.attrs.pop("_xeofm_nodata", None)
    if nodata is not None:
        nd = tuple(float(v) for v in (nodata if isinstance(nodata, (list, tuple)) else [nodata] * len(chosen)))
    if nd is not None and all(v is None for v in nd):
        nd = None
    if nd is not None:
        nd = tuple(float("nan") if v is None else float(v) for v in nd)

    # geography
    crs = None
    try:
        crs = arr.rio.crs
    except Exception:
        crs = None
    if crs is None:
        warnings.warn(
            "the cube has no CRS; embeddings keep its coordinates but carry no georeference. "
            "Set one with cube.rio.write_crs(...) to keep outputs georeferenced.",
            UserWarning,
            stacklevel=3,
        )
    fb_x = fb_y = None
    if arr.sizes[xd] < 2 or arr.sizes[yd] < 2:
        try:
            tr = arr.rio.transform()
            fb_x, fb_y = (tr.c, tr.a), (tr.f, tr.e)
        except Exception:
            pass
    if xd not in arr.coords or yd not in arr.coords:
        raise InputError(
            f"the cube has no coordinate values on {yd!r}/{xd!r}; assign coordinates "
            "(or load it with rioxarray/odc-stac, which do)"
        )
    x0, dx = _axis_affine(arr[xd].values, xd, fb_x)
    y0, dy = _axis_affine(arr[yd].values, yd, fb_y)

    extra = tuple(d for d in arr.dims if d not in (bdim, yd, xd))
    tdim = time_dim if time_dim is not None else ("time" if "time" in extra else None)
    if time_dim is not None and time_dim not in extra:
        raise MissingDimensionError(f"time dim {time_dim!r} is not among the cube's dims {list(arr.dims)}")
    _warn_s2_offset(spec, obj, arr, tdim)
    T = spec.time_frames
    if T > 1:
        if tdim is None:
            raise MissingDimensionError(
                f"model {spec.name!r} takes {T} time steps at once, but the cube has no time dim "
                f"(dims {list(arr.dims)}); stack dates along 'time' or pass time_dim=..."
            )
        if arr.sizes[tdim] < T:
            raise InputError(
                f"model {spec.name!r} takes windows of {T} time steps, but the cube has "
                f"{arr.sizes[tdim]} along {tdim!r}; select at least {T} dates"
            )
        extra = tuple(d for d in extra if d != tdim) + (tdim,)  # time last: windows slide along it
    arr = arr.transpose(*extra, bdim, yd, xd)
    ny, nx = arr.sizes[yd], arr.sizes[xd]
    times = None
    time_axis = None
    if tdim is not None and ("time" in spec.aux or T > 1):
        import pandas as pd

        tv = pd.DatetimeIndex(arr[tdim].values) if tdim in arr.coords else None
        if tv is None:
            raise InputError(f"model {spec.name!r} needs the dates of {tdim!r}; give it datetime coordinates")
        times = tuple((int(t.year), int(t.day_of_year), t.hour + t.minute / 60 + t.second / 3600) for t in tv)
        time_axis = extra.index(tdim)
    elif "time" in spec.aux:
        raise MissingDimensionError(f"model {spec.name!r} takes acquisition dates; the cube needs a time dim")

    # chip layout
    C, s = spec.chip_size, spec.stride
    if output == "chip":
        unit, step = C, C
        if overlap not in (None, 0):
            raise InputError("output='chip' gives one vector per non-overlapping chip; overlap must be 0")
        ov = 0
    else:
        if spec.output == "vector":
            raise SpecError(
                f"model {spec.name!r} returns one vector per chip; only output='chip' is possible"
            )
        unit = s
        ov = spec.default_overlap() if overlap is None else int(overlap)
        if ov < 0 or ov >= C:
            raise InputError(f"overlap must be in [0, {C}) pixels, got {ov}")
        ov = (ov // s) * s
        step = C - ov
    ygrid, xgrid = AxisGrid(ny, C, step, unit), AxisGrid(nx, C, step, unit)
    depth = 0 if output == "chip" else (C if output == "pixel" else C - unit)
    depth_y = min(depth, max(ny - 1, 0))
    depth_x = min(depth, max(nx - 1, 0))

    m_extra = 1
    data = arr.data
    if not isinstance(data, dsa.Array):
        data = dsa.from_array(data, chunks=tuple([1] * len(extra) + [-1, -1, -1]))
    if T > 1:
        data = data.rechunk({len(extra) - 1: -1})
    if len(extra):
        m_extra = int(np.prod([max(c) for c in data.chunks[: len(extra)]]))
    if batch_size is None:
        batch_size = choose_batch_size(spec, dev)
    if block_size is None:
        by = bx = choose_block_size(spec, output, dev, len(chosen), m_extra, batch_size, depth)
    elif isinstance(block_size, int):
        by = bx = int(block_size)
    else:
        by, bx = (int(v) for v in block_size)
    align = C if output == "chip" else unit
    min_block = -(-max(depth, 1) // align) * align  # halos must not span two blocks
    by = max(min_block, by // align * align)
    bx = max(min_block, bx // align * align)
    ych = split_blocks(ny, by, align, depth_y)
    xch = split_blocks(nx, bx, align, depth_x)
    in_chunks = (*data.chunks[: len(extra)], (len(chosen),), ych, xch)
    data = data.rechunk(in_chunks)

    if output == "pixel":
        oy, ox = ych, xch
    else:
        oy = tuple(-(-c // align) for c in ych[:-1]) + (ygrid.n_cells if output != "chip" else -(-ny // C),)
        ox = tuple(-(-c // align) for c in xch[:-1]) + (xgrid.n_cells if output != "chip" else -(-nx // C),)
        oy = oy[:-1] + (oy[-1] - sum(oy[:-1]),)
        ox = ox[:-1] + (ox[-1] - sum(ox[:-1]),)
    lead_chunks = data.chunks[: len(extra)]
    if T > 1:
        lead_chunks = (*lead_chunks[:-1], (lead_chunks[-1][0] - T + 1,))
    out_chunks = (*lead_chunks, (spec.embedding_dim,), oy, ox)

    crs_wkt = None
    if crs is not None:
        try:
            crs_wkt = crs.to_wkt()
        except Exception:
            crs_wkt = str(crs)
    gsd = abs(dx)
    try:
        if crs is not None and crs.is_geographic:
            gsd = abs(dx) * 111_320.0
    except Exception:
        pass
    from .models.weights import warn_gsd

    warn_gsd(spec, gsd if crs is not None else None, stacklevel=4)
    ctx = BlockContext(
        spec=spec, mode=output, device=dev, batch_size=int(batch_size), amp=amp,
        ygrid=ygrid, xgrid=xgrid, depth_y=depth_y, depth_x=depth_x, nodata=nd, skip_empty=skip_empty,
        time_axis=time_axis, times=times, transform=(x0, dx, y0, dy), crs_wkt=crs_wkt, gsd=gsd,
    )
    return Prepared(
        data=data, template=arr, spec=spec, ctx=ctx, extra_dims=extra, y_dim=yd, x_dim=xd,
        band_names=chosen, out_chunks=out_chunks, in_chunks=in_chunks, transform=(x0, dx, y0, dy),
        crs=crs, overlap=ov, block_size=(by, bx),
    )


def _meta_like(data: Any):
    meta = getattr(data, "_meta", None)
    if meta is not None and runtime.is_cupy(meta):
        import cupy

        return cupy.empty((0,) * data.ndim, dtype=np.float32)
    return np.empty((0,) * data.ndim, dtype=np.float32)


def embed(
    obj: xr.DataArray | xr.Dataset,
    model: Any,
    *,
    output: OutputMode = "patch",
    bands: Mapping[str, str] | None = None,
    overlap: int | None = None,
    device: str | None = "auto",
    batch_size: int | None = None,
    block_size: int | tuple[int, int] | None = None,
    amp: str | None = None,
    band_dim: str | None = None,
    y_dim: str | None = None,
    x_dim: str | None = None,
    nodata: float | Sequence[float] | None = None,
    weights: str | None = None,
    pretrained: bool = True,
    skip_empty: bool = True,
    time_dim: str | None = None,
) -> xr.DataArray:
    """Embed a datacube with an encoder, lazily.

    Parameters
    ----------
    obj
        ``(..., band, y, x)`` DataArray, or a Dataset with one variable per band
        (as odc-stac returns). Extra dims (time, scene...) are mapped over.
    model
        A registered model name (see :func:`xeofm.models.list_models`), a
        :class:`~xeofm.ModelSpec`, or a module wrapped with :func:`xeofm.wrap`.
    output
        ``"patch"``: one vector per output cell of the model's stride
        (``(..., embedding, ceil(y/stride), ceil(x/stride))``);
        ``"pixel"``: interpolated back to the input grid;
        ``"chip"``: one pooled vector per non-overlapping chip.
    bands
        Explicit ``{model band: cube band}`` mapping, for names that do not match.
    overlap
        Chip overlap in pixels (``"patch"``/``"pixel"``); rounded down to a
        multiple of the stride. Defaults to the spec's, else a quarter chip.
        Overlapping chips are blended with raised-sine ramps (no seams).
    device
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    batch_size, block_size
        Chips per forward pass and block side in pixels; chosen by the planner
        from the model and device when omitted (see :func:`xeofm.plan`).
        Results do not depend on either.
    amp
        ``None`` (float32), ``"bf16"`` or ``"fp16"`` autocast.
    band_dim, y_dim, x_dim
        Dim names when they are not ``band``/``y``/``x``.
    nodata
        Invalid value(s) of the raw data; defaults to the cube's
        ``nodata``/``_FillValue``. NaN is always invalid.
    weights, pretrained
        Weight file for a registered model; ``pretrained=False`` builds random
        weights (for testing).
    skip_empty
        Do not run chips without any valid pixel (their outputs are NaN anyway).
    time_dim
        The time dim, for models that take several dates (``time_frames > 1``)
        or acquisition dates; defaults to ``"time"``. Multi-date models slide a
        window of ``time_frames`` steps along it; the output's time is the last
        date of each window.

    Returns
    -------
    xarray.DataArray
        Dask-backed ``(..., embedding, y, x)`` float32 cube named
        ``"embeddings"`` (dim ``embedding``), NaN where the input was invalid, with the input's CRS
        (``spatial_ref``), cell-centre coordinates of the output grid, and
        provenance attributes (``xeofm:*``). Nothing is computed until asked.
    """
    import dask.array as dsa

    p = prepare(
        obj, model, output=output, bands=bands, overlap=overlap, device=device, batch_size=batch_size,
        block_size=block_size, amp=amp, band_dim=band_dim, y_dim=y_dim, x_dim=x_dim, nodata=nodata,
        weights=weights, pretrained=pretrained, skip_empty=skip_empty, time_dim=time_dim,
    )
    data = p.data
    ndim = data.ndim
    depth = {ndim - 2: p.ctx.depth_y, ndim - 1: p.ctx.depth_x}
    if p.ctx.depth_y or p.ctx.depth_x:
        data = dsa.overlap.overlap(data, depth=depth, boundary={ndim - 2: "none", ndim - 1: "none"}, allow_rechunk=False)
    name = f"xeofm-embed-{p.spec.name}-" + dsa.core.tokenize(p.data, p.ctx)
    out = dsa.map_blocks(
        embed_block, data, ctx=p.ctx, chunks=p.out_chunks, dtype=np.float32,
        meta=_meta_like(p.data), name=name,
    )
    return _wrap_output(out, p)


def _wrap_output(out: Any, p: Prepared) -> xr.DataArray:
    from ._version import __version__

    tmpl = p.template
    T = p.spec.time_frames
    if T > 1:
        tmpl = tmpl.isel({p.extra_dims[-1]: slice(T - 1, None)})
    x0, dx, y0, dy = p.transform
    mode = p.ctx.mode
    cell = p.ctx.cell
    ny_out, nx_out = out.shape[-2], out.shape[-1]
    if mode == "pixel":
        ycoord = tmpl[p.y_dim].values
        xcoord = tmpl[p.x_dim].values
    else:
        ycoord = y0 + (np.arange(ny_out) + 0.5) * cell * dy
        xcoord = x0 + (np.arange(nx_out) + 0.5) * cell * dx
    coords: dict[Hashable, Any] = {}
    for d in p.extra_dims:
        if d in tmpl.coords:
            coords[d] = tmpl[d]
    # non-index coords along extra dims only (e.g. time-stamped ids)
    for name, c in tmpl.coords.items():
        if name in coords or name in tmpl.dims:
            continue
        if set(c.dims) <= set(p.extra_dims):
            coords[name] = c
    coords[p.y_dim] = xr.Variable((p.y_dim,), ycoord, attrs=tmpl[p.y_dim].attrs)
    coords[p.x_dim] = xr.Variable((p.x_dim,), xcoord, attrs=tmpl[p.x_dim].attrs)
    coords["embedding"] = np.arange(p.spec.embedding_dim)
    dims = (*p.extra_dims, "embedding", p.y_dim, p.x_dim)
    attrs = {
        "long_name": f"{p.spec.name} embedding",
        "xeofm:model": p.spec.name,
        "xeofm:spec_hash": p.spec.hash,
        "xeofm:version": __version__,
        "xeofm:output": mode,
        "xeofm:chip_size": p.spec.chip_size,
        "xeofm:stride": p.spec.stride,
        "xeofm:cell_size": cell,
        "xeofm:overlap": p.overlap,
        "xeofm:bands": [str(b) for b in p.band_names],
        "xeofm:amp": p.ctx.amp or "none",
        "xeofm:time_frames": T,
    }
    if p.spec.weights:
        attrs["xeofm:weights"] = str(p.spec.weights)
    res = xr.DataArray(out, dims=dims, coords=coords, attrs=attrs, name="embeddings")
    gm = None
    for cname in ("spatial_ref", tmpl.encoding.get("grid_mapping"), tmpl.attrs.get("grid_mapping")):
        if cname and cname in tmpl.coords:
            gm = cname
            break
    if gm is not None:
        ref = tmpl.coords[gm].variable.copy(deep=True)
        ref.attrs = dict(ref.attrs)
        if mode != "pixel" and "GeoTransform" in ref.attrs:
            ref.attrs["GeoTransform"] = " ".join(
                repr(float(v)) for v in (x0, dx * cell, 0.0, y0, 0.0, dy * cell)
            )
        res = res.assign_coords({gm: ref})
        res.encoding["grid_mapping"] = gm
    elif p.crs is not None:
        res = res.rio.write_crs(p.crs)
    return res
