"""Time series, change and exploration operations on embedding and label cubes.

Every function here takes plain xarray objects and composes with plain xarray:
select, resample, roll or group an embedding cube first, then call
:func:`change`, :func:`anomaly`, :func:`similarity` or :func:`pca` on the result.
Functions that return cubes are lazy: they only add to the dask graph, and
anything they need from the data (a threshold, a PCA basis, a query vector) is
itself a node of that graph, computed with the result in one pass. Functions
that return tables (:func:`search`, :func:`area`, :func:`transitions`) compute,
reading each block once and keeping only small per-block summaries.

Embedding cubes are ``(..., embedding, y, x)`` DataArrays as returned by
:func:`xeofm.embed` (NaN where the input was invalid); label cubes follow the
convention of :mod:`xeofm.labels`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Hashable, Literal, Mapping, Sequence

import numpy as np
import xarray as xr

from .errors import InputError, MissingDimensionError, SpecError

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

__all__ = [
    "PCAFit",
    "anomaly",
    "area",
    "cell_area",
    "change",
    "check_comparable",
    "coarsen_mode",
    "distance",
    "fit_pca",
    "pca",
    "robust_stretch",
    "search",
    "similarity",
    "threshold",
    "transitions",
]

Metric = Literal["cosine", "euclidean"]
EMB = "embedding"
_X_NAMES = ("x", "lon", "longitude", "easting")
_Y_NAMES = ("y", "lat", "latitude", "northing")
#: Equal-area CRS used to measure cells of CRSs that are not equal-area.
AREA_CRS = "EPSG:6933"


# --------------------------------------------------------------------------------------
# Small helpers: dims, CRS, grids, attributes
# --------------------------------------------------------------------------------------
def _xy_dims(da: xr.DataArray) -> tuple[Hashable, Hashable]:
    """Names of the (y, x) dims of a cube."""

    def find(names: Sequence[str], what: str) -> Hashable:
        for n in names:
            if n in da.dims:
                return n
        raise MissingDimensionError(f"no {what} dim among the cube's dims {list(da.dims)} (tried {list(names)})")

    return find(_Y_NAMES, "y"), find(_X_NAMES, "x")


def _crs_of(da: xr.DataArray):
    """The cube's CRS as a :class:`pyproj.CRS`, or ``None``."""
    try:
        import rioxarray  # noqa: F401  (registers .rio)

        crs = da.rio.crs
    except Exception:
        crs = None
    if crs is None:
        return None
    from pyproj import CRS

    return CRS.from_user_input(crs.to_wkt())


def _crs_name(crs) -> str:
    if crs is None:
        return "no CRS"
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else (crs.name or "custom CRS")


@lru_cache(maxsize=32)
def _transformer(src: str, dst: str):
    from pyproj import Transformer

    return Transformer.from_crs(src, dst, always_xy=True)


def _step(coord: np.ndarray, da: xr.DataArray, axis: str) -> float:
    """Signed spacing of a regular coordinate (rio resolution for one-cell axes)."""
    if coord.size >= 2:
        d = np.diff(coord.astype(np.float64))
        if not np.allclose(d, d[0], rtol=1e-6, atol=0):
            raise InputError(f"the {axis} coordinate is not regularly spaced; regrid the cube first")
        return float(d[0])
    try:
        rx, ry = da.rio.resolution()
        return float(rx if axis == "x" else ry)
    except Exception:
        raise InputError(f"cannot tell the cell size along {axis} of a one-cell axis without a transform") from None


def _xeofm_attrs(da: xr.DataArray) -> dict[str, Any]:
    return {k: v for k, v in da.attrs.items() if str(k).startswith("xeofm:")}


def _finish(out: xr.DataArray, like: xr.DataArray, name: str, attrs: dict[str, Any]) -> xr.DataArray:
    out = out.rename(name)
    out.attrs = {**_xeofm_attrs(like), **attrs}
    gm = like.encoding.get("grid_mapping")
    if gm:
        out.encoding["grid_mapping"] = gm
    return out


def _check_embeddings(emb: Any, what: str = "emb") -> xr.DataArray:
    if not isinstance(emb, xr.DataArray):
        raise InputError(f"{what} must be an xarray.DataArray of embeddings, got {type(emb).__name__}")
    if EMB not in emb.dims:
        raise MissingDimensionError(
            f"{what} has no {EMB!r} dim (dims {list(emb.dims)}); pass the output of xeofm.embed() / cube.eofm.embed()"
        )
    return emb


def _check_metric(metric: str) -> None:
    if metric not in ("cosine", "euclidean"):
        raise InputError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")


def _one_chunk(da: xr.DataArray, dim: Hashable) -> xr.DataArray:
    if da.chunks is not None and len(da.chunks[da.get_axis_num(dim)]) > 1:
        return da.chunk({dim: -1})
    return da


def check_comparable(a: xr.DataArray, b: xr.DataArray, *, grid: bool = True) -> None:
    """Raise if two embedding cubes cannot be compared cell by cell.

    Embeddings are comparable when they come from the same model and spec
    (``xeofm:model`` and ``xeofm:spec_hash`` attributes; checked when both
    cubes carry them), have the same embedding size and, with ``grid=True``,
    lie on the same grid (same ``x``/``y`` coordinates and CRS).

    Parameters
    ----------
    a, b
        Embedding cubes.
    grid
        Also check the spatial grid.

    Raises
    ------
    InputError
        Naming what differs.
    """
    for key in ("xeofm:model", "xeofm:spec_hash"):
        va, vb = a.attrs.get(key), b.attrs.get(key)
        if va is not None and vb is not None and va != vb:
            raise InputError(
                f"the embeddings are not comparable: {key} is {va!r} for one and {vb!r} for the other. "
                "Embed both cubes with the same model and spec (same weights, bands, normalisation)."
            )
    if EMB in a.dims and EMB in b.dims and a.sizes[EMB] != b.sizes[EMB]:
        raise InputError(f"the embeddings have {a.sizes[EMB]} and {b.sizes[EMB]} dimensions; they are not comparable")
    if not grid:
        return
    ya, xa = _xy_dims(a)
    yb, xb = _xy_dims(b)
    for da_, db_, what in ((a[xa], b[xb], "x"), (a[ya], b[yb], "y")):
        va, vb = np.asarray(da_.values, dtype=np.float64), np.asarray(db_.values, dtype=np.float64)
        if va.shape != vb.shape:
            raise InputError(
                f"the embeddings are on different grids: {va.size} vs {vb.size} cells along {what}. "
                "Embed both cubes on the same grid (e.g. reproject one with cube.odc.reproject(other.odc.geobox))."
            )
        tol = 1e-6 * max(abs(va[1] - va[0]) if va.size > 1 else 1.0, 1e-12)
        if va.size and not np.allclose(va, vb, rtol=0, atol=tol):
            raise InputError(
                f"the embeddings are on different grids: their {what} coordinates differ "
                f"(first cell centre {va[0]!r} vs {vb[0]!r}). Embed both cubes on the same grid."
            )
    ca, cb = _crs_of(a), _crs_of(b)
    if ca is not None and cb is not None and not ca.equals(cb):
        raise InputError(f"the embeddings have different CRSs ({_crs_name(ca)} vs {_crs_name(cb)})")


# --------------------------------------------------------------------------------------
# Distances
# --------------------------------------------------------------------------------------
def _pair_core(a: np.ndarray, b: np.ndarray, metric: str, similarity: bool = False) -> np.ndarray:
    """Distance (or similarity) along the last axis; NaN where either side is NaN."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric == "cosine":
            # 1 - cos = |a/|a| - b/|b||^2 / 2: no cancellation, exactly 0 for equal directions
            na = np.sqrt((a * a).sum(-1, keepdims=True))
            nb = np.sqrt((b * b).sum(-1, keepdims=True))
            ua = a / np.where(na > 0, na, 1.0)
            ub = b / np.where(nb > 0, nb, 1.0)
            d = ((ua - ub) ** 2).sum(-1) / 2
            za, zb = na[..., 0] == 0, nb[..., 0] == 0
            d = np.where(za & zb, 0.0, np.where(za | zb, 1.0, d))  # a zero vector: orthogonal to all but itself
            d = np.clip(d, 0.0, 2.0)  # NaN stays NaN
            out = 1.0 - d if similarity else d
        else:
            d = np.sqrt(((a - b) ** 2).sum(-1))
            out = -d if similarity else d
    return out.astype(np.float32)


def _apply_pair(a: xr.DataArray, b: xr.DataArray, metric: str, similarity: bool = False) -> xr.DataArray:
    a = _one_chunk(a, EMB)
    if b.chunks is not None:
        b = _one_chunk(b, EMB)
    out = xr.apply_ufunc(
        _pair_core,
        a,
        b,
        input_core_dims=[[EMB], [EMB]],
        kwargs={"metric": metric, "similarity": similarity},
        dask="parallelized",
        output_dtypes=[np.float32],
        keep_attrs=True,
    )
    order = [d for d in a.dims if d != EMB] + [d for d in out.dims if d not in a.dims]
    return out.transpose(*order)


def distance(a: xr.DataArray, b: xr.DataArray, metric: Metric = "cosine") -> xr.DataArray:
    """Per-cell distance between two comparable embedding cubes, lazily.

    Parameters
    ----------
    a, b
        Embedding cubes of the same model and spec on the same grid (checked
        with :func:`check_comparable`). Other dims broadcast as in xarray
        (``b`` without ``time`` is compared with every date of ``a``).
    metric
        ``"cosine"``: ``1 - cos(a, b)``, in ``[0, 2]``, blind to the length of
        the vectors; ``"euclidean"``: ``|a - b|`` in embedding units.

    Returns
    -------
    xarray.DataArray
        ``a``'s dims without ``embedding``, float32, NaN where either input is NaN.
    """
    _check_embeddings(a, "a")
    _check_embeddings(b, "b")
    _check_metric(metric)
    check_comparable(a, b)
    ya, xa = _xy_dims(a)
    yb, xb = _xy_dims(b)
    b = b.rename({yb: ya, xb: xa}) if (yb, xb) != (ya, xa) else b
    b = b.assign_coords({ya: a[ya].values, xa: a[xa].values}).reset_coords(drop=True)
    out = _apply_pair(a, b, metric)
    return _finish(out, a, "distance", {"long_name": f"{metric} distance", "xeofm:metric": metric})


# --------------------------------------------------------------------------------------
# Change
# --------------------------------------------------------------------------------------
def _mean_over(da: xr.DataArray, dims: Sequence[Hashable]) -> xr.DataArray:
    """NaN-aware mean that keeps a cell NaN only where all inputs are NaN."""
    return da.mean(list(dims), skipna=True) if dims else da


def _cumsum_at(S: xr.DataArray, dim: Hashable, off: int) -> xr.DataArray:
    """``S[t + off]`` for every ``t`` of a cumulative sum (0 before the start, the total after the end)."""
    n = S.sizes[dim]
    if off == 0:
        return S
    if off >= n:
        return xr.zeros_like(S) + S.isel({dim: -1}, drop=True)
    if off <= -n:
        return xr.zeros_like(S)
    sh = S.shift({dim: -off})
    return sh.fillna(S.isel({dim: -1}, drop=True)) if off > 0 else sh.fillna(0.0)


def _window_mean(emb: xr.DataArray, dim: Hashable, lo: int, hi: int, exclude_self: bool = False) -> xr.DataArray:
    """NaN-aware mean embedding over steps ``t + lo .. t + hi`` (clipped to the series), lazily.

    Uses differences of float64 cumulative sums along ``dim``, so the chunks of
    the cube are kept (no rolling-window rechunking). A cell is valid at a step
    when all its embedding values are finite; windows without a valid step give NaN.
    """
    valid = emb.notnull().all(EMB)
    x0 = emb.where(valid, 0.0).astype(np.float64)
    v0 = valid.astype(np.float64)
    S, C = x0.cumsum(dim), v0.cumsum(dim)
    s = _cumsum_at(S, dim, hi) - _cumsum_at(S, dim, lo - 1)
    c = _cumsum_at(C, dim, hi) - _cumsum_at(C, dim, lo - 1)
    if exclude_self:
        s, c = s - x0, c - v0
    c = c.round()  # counts are integers; cumsum differences may be off by rounding
    return (s / c.where(c > 0)).astype(np.float32).transpose(*emb.dims)


def change(
    emb: xr.DataArray,
    dim: str = "time",
    reference: Any = "previous",
    metric: Metric = "cosine",
) -> xr.DataArray:
    """Change of every cell's embedding along a dim, against a reference, lazily.

    Parameters
    ----------
    emb
        Embedding cube ``(..., embedding, y, x)``: per pixel, patch or chip as
        the embedding grid is. Any xarray result works: ``emb.sel(time=...)``,
        ``emb.resample(time="1YS").mean()``, ``emb.groupby("time.season").mean()``
        (then ``dim="season"``)...
    dim
        The dim to compare along (``"time"``).
    reference
        What each step is compared with:

        * ``"previous"``: the step before (the output drops the first step);
        * ``"first"``: the first step (the output keeps every step; the first is 0);
        * a label of ``dim`` (``"2016-04-01"``, a ``np.datetime64``): that step.
          A partial date (``"2016"``), a ``slice`` or a list selecting several
          steps compares with their NaN-aware mean embedding;
        * ``{"window": n}``: the NaN-aware mean embedding of the ``n`` steps
          before (a rolling baseline; the output drops the first ``n`` steps);
        * an embedding DataArray of the same model, spec and grid (e.g. last
          year's mean embedding): compared with every step (checked with
          :func:`check_comparable`).
    metric
        ``"cosine"`` (``1 - cos``, in ``[0, 2]``, insensitive to a uniform
        scaling of the vectors) or ``"euclidean"``.

    Returns
    -------
    xarray.DataArray
        ``"change"``: ``emb``'s dims without ``embedding``, float32, NaN where
        the cell or its reference is NaN (a rolling baseline needs one valid
        step in its window). ``reference_<dim>`` gives each step's reference;
        attrs keep the model provenance plus ``xeofm:metric`` and
        ``xeofm:reference``.

    Raises
    ------
    MissingDimensionError
        If ``dim`` is not a dim of ``emb``.
    InputError
        If ``dim`` has fewer than 2 steps, the reference is unknown, or a
        reference cube is not comparable.
    """
    _check_embeddings(emb)
    _check_metric(metric)
    if isinstance(reference, xr.DataArray):
        _check_embeddings(reference, "reference")
        ref = reference
        if dim in ref.dims and ref.sizes[dim] == 1:
            ref = ref.isel({dim: 0}, drop=True)
        if dim in ref.dims:
            if dim not in emb.dims or not np.array_equal(ref[dim].values, emb[dim].values):
                raise InputError(
                    f"the reference cube has {ref.sizes[dim]} steps along {dim!r} that do not match the cube's; "
                    f"pass one step (e.g. reference.mean({dim!r})) or the same {dim!r} labels"
                )
        out = distance(emb, ref, metric)
        return _finish(
            out, emb, "change",
            {"long_name": f"{metric} change", "xeofm:metric": metric, "xeofm:reference": "given embeddings"},
        )
    if dim not in emb.dims:
        raise MissingDimensionError(f"change() along {dim!r}: the cube has no such dim (dims {list(emb.dims)})")
    n = emb.sizes[dim]
    if n < 2:
        raise InputError(
            f"change() along {dim!r} needs at least 2 steps, the cube has {n}; "
            "select more dates, or compare with another cube with reference=<embeddings>"
        )
    labels = emb[dim].values if dim in emb.coords else np.arange(n)
    ref_coord: Any = None
    if isinstance(reference, str) and reference == "previous":
        cur = emb.isel({dim: slice(1, None)})
        ref = cur.copy(data=emb.isel({dim: slice(None, -1)}).data)
        ref_coord = (dim, labels[:-1])
        desc = "previous"
    elif isinstance(reference, str) and reference == "first":
        cur = emb
        ref = emb.isel({dim: 0}, drop=True)
        ref_coord = labels[0]
        desc = f"first ({_fmt(labels[0])})"
    elif isinstance(reference, Mapping):
        if set(reference) != {"window"}:
            raise InputError(f"a rolling reference is {{'window': n}}, got {dict(reference)!r}")
        w = reference["window"]
        if not isinstance(w, (int, np.integer)) or not 1 <= int(w) < n:
            raise InputError(f"window must be an integer in [1, {n - 1}] for {n} steps along {dim!r}, got {w!r}")
        w = int(w)
        base = _window_mean(emb, dim, -w, -1)  # steps t - w .. t - 1
        cur = emb.isel({dim: slice(w, None)})
        ref = cur.copy(data=base.isel({dim: slice(w, None)}).data)
        ref_coord = None
        desc = f"mean of the previous {w} steps"
    else:
        try:
            sel = emb.sel({dim: reference})
        except (KeyError, TypeError, ValueError) as e:
            shown = ", ".join(_fmt(v) for v in labels[:8]) + (", ..." if n > 8 else "")
            raise InputError(
                f"reference {reference!r} is not 'previous', 'first', {{'window': n}}, an embedding cube, "
                f"or a label of {dim!r} (labels: {shown})"
            ) from e
        if dim in sel.dims:
            if sel.sizes[dim] == 0:
                raise InputError(f"reference {reference!r} selects no step of {dim!r}")
            ref_coord = None
            desc = f"mean of {sel.sizes[dim]} steps {_fmt(sel[dim].values[0])} .. {_fmt(sel[dim].values[-1])}"
            ref = _mean_over(sel, [dim])
        else:
            ref = sel.drop_vars(dim, errors="ignore")
            ref_coord = sel[dim].values if dim in sel.coords else reference
            desc = _fmt(ref_coord)
        cur = emb
    out = _apply_pair(cur, ref.reset_coords(drop=True), metric)
    if ref_coord is not None:
        out = out.assign_coords({f"reference_{dim}": ref_coord})
    units = "1" if metric == "cosine" else "embedding units"
    return _finish(
        out, emb, "change",
        {
            "long_name": f"{metric} change", "units": units, "xeofm:metric": metric,
            "xeofm:reference": desc, "xeofm:dim": dim,
        },
    )


def _fmt(v: Any) -> str:
    if isinstance(v, np.datetime64) or (isinstance(v, np.ndarray) and v.dtype.kind == "M"):
        s = str(np.datetime_as_string(np.datetime64(v, "s")))
        return s[:10] if s.endswith("T00:00:00") else s
    return str(v)


def _robust_z_core(a: np.ndarray) -> np.ndarray:
    """Robust z-score along the last axis: (a - median) / (1.4826 * MAD)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN series stay NaN
        med = np.nanmedian(a, axis=-1, keepdims=True)
        mad = 1.4826 * np.nanmedian(np.abs(a - med), axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(mad > 0, (a - med) / np.where(mad > 0, mad, 1), np.nan).astype(np.float32)


def anomaly(
    emb: xr.DataArray,
    dim: str = "time",
    window: int | None = None,
    metric: Metric = "cosine",
    standardize: bool = False,
) -> xr.DataArray:
    """How unusual each step of a cell's embedding series is, lazily.

    The score of step ``t`` is the distance of its embedding to the NaN-aware
    mean embedding of the *other* steps: all of them (``window=None``,
    leave-one-out), or those of the window of ``window`` steps centred on ``t``
    (``t - window // 2 .. t + (window - 1) // 2``, clipped at the ends; ``t``
    itself left out). A persistent change gives high scores only around its start with a
    short window; with ``window=None`` it raises every step on the minority
    side.

    Parameters
    ----------
    emb
        Embedding cube with ``dim``.
    dim
        Time dim.
    window
        Centred window length in steps (at least 2), or ``None`` for all steps.
    metric
        ``"cosine"`` or ``"euclidean"``.
    standardize
        Return a robust z-score per cell instead:
        ``(score - median_t) / (1.4826 * MAD_t)`` along ``dim``.

    Returns
    -------
    xarray.DataArray
        ``"anomaly"``: ``emb``'s dims without ``embedding``, float32, NaN where
        the step or all others are invalid.
    """
    _check_embeddings(emb)
    _check_metric(metric)
    if dim not in emb.dims:
        raise MissingDimensionError(f"anomaly() along {dim!r}: the cube has no such dim (dims {list(emb.dims)})")
    n = emb.sizes[dim]
    if n < 2:
        raise InputError(f"anomaly() along {dim!r} needs at least 2 steps, the cube has {n}")
    if window is None:
        lo, hi = -n, n
    else:
        if not isinstance(window, (int, np.integer)) or window < 2:
            raise InputError(f"window must be an integer >= 2 (steps), got {window!r}")
        lo, hi = -(int(window) // 2), int(window) - 1 - int(window) // 2
    base = _window_mean(emb, dim, lo, hi, exclude_self=True)
    out = _apply_pair(emb, base, metric)
    if standardize:
        o = _one_chunk(out, dim)
        z = xr.apply_ufunc(
            _robust_z_core, o, input_core_dims=[[dim]], output_core_dims=[[dim]],
            dask="parallelized", output_dtypes=[np.float32], keep_attrs=True,
        )
        out = z.transpose(*o.dims)
    return _finish(
        out, emb, "anomaly",
        {
            "long_name": f"{metric} anomaly" + (" (robust z-score)" if standardize else ""),
            "xeofm:metric": metric,
            "xeofm:reference": "all other steps" if window is None else f"centred window of {window} steps, self excluded",
            "xeofm:dim": dim,
        },
    )


# --------------------------------------------------------------------------------------
# Sampling (lazy) and automatic thresholds
# --------------------------------------------------------------------------------------
def _rows_from_block(block: np.ndarray, feature_axis: int | None, p: float, seed: Sequence[int]) -> np.ndarray:
    a = np.asarray(block)
    if feature_axis is None:
        rows = a.reshape(-1, 1)
    else:
        rows = np.moveaxis(a, feature_axis, -1).reshape(-1, a.shape[feature_axis])
    rows = rows[np.isfinite(rows).all(1)]
    if p < 1 and len(rows):
        keep = np.random.default_rng(list(seed)).random(len(rows)) < p
        rows = rows[keep]
    return rows.astype(np.float64)


def _merge_rows(parts: Sequence[np.ndarray], n: int, seed: int, n_features: int) -> np.ndarray:
    parts = [p for p in parts if len(p)]
    rows = np.concatenate(parts) if parts else np.empty((0, n_features))
    if len(rows) > n:
        idx = np.sort(np.random.default_rng(seed).choice(len(rows), n, replace=False))
        rows = rows[idx]
    return rows


def _sample_rows(data: Any, feature_axis: int | None, n: int, seed: int, min_blocks: int = 8):
    """Up to ``n`` valid rows drawn uniformly from a random subset of blocks.

    Returns a numpy array ``(m, F)`` for in-memory data, or a
    :class:`dask.delayed.Delayed` of it for dask data. Blocks are taken in a
    random order until they hold at least ``4 n`` cells and ``min_blocks``
    blocks (or all of them), so a sample of a huge cube reads few blocks.
    """
    if n < 1:
        raise InputError(f"sample size must be at least 1, got {n}")
    nf = 1 if feature_axis is None else data.shape[feature_axis]
    if not hasattr(data, "to_delayed"):
        a = np.asarray(data)
        size = a.size // nf
        return _merge_rows([_rows_from_block(a, feature_axis, min(1.0, 2 * n / max(size, 1)), (seed, 0))], n, seed, nf)
    import dask

    if feature_axis is not None and len(data.chunks[feature_axis]) > 1:
        data = data.rechunk({feature_axis: -1})
    blocks = list(np.ndindex(*data.numblocks))
    sizes = []
    for b in blocks:
        s = 1
        for ax, i in enumerate(b):
            if ax != feature_axis:
                s *= data.chunks[ax][i]
        sizes.append(s)
    rng = np.random.default_rng(seed)
    chosen, total = [], 0
    for i in rng.permutation(len(blocks)):
        chosen.append(int(i))
        total += sizes[i]
        if total >= 4 * n and len(chosen) >= min_blocks:
            break
    p = min(1.0, 2.0 * n / max(total, 1))
    dl = data.to_delayed(optimize_graph=False)
    parts = [
        dask.delayed(_rows_from_block, pure=True)(dl[blocks[i]], feature_axis, p, (seed, i)) for i in sorted(chosen)
    ]
    return dask.delayed(_merge_rows, pure=True)(parts, n, seed, nf)


def _otsu(v: np.ndarray, bins: int = 256) -> float:
    v = np.asarray(v, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("threshold(): the sample holds no valid (finite) values; is the whole cube NaN?")
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(hist).astype(np.float64)
    w1 = w0[-1] - w0
    m = np.cumsum(hist * centres)
    with np.errstate(invalid="ignore", divide="ignore"):
        mu0 = m / w0
        mu1 = (m[-1] - m) / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between = np.where(np.isfinite(between), between, -1.0)[:-1]
    return float(edges[int(np.argmax(between)) + 1])


def _mad_threshold(v: np.ndarray, k: float) -> float:
    v = np.asarray(v, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise InputError("threshold(): the sample holds no valid (finite) values; is the whole cube NaN?")
    med = float(np.median(v))
    mad = float(np.median(np.abs(v - med)))
    return med + k * 1.4826 * mad


def _auto_threshold(rows: np.ndarray, method: str, k: float, bins: int) -> np.float64:
    v = rows[:, 0] if rows.ndim == 2 else rows
    return np.float64(_otsu(v, bins) if method == "otsu" else _mad_threshold(v, k))


def threshold(
    d: xr.DataArray,
    method: Literal["otsu", "mad"] | float = "otsu",
    *,
    k: float = 3.0,
    sample: int = 100_000,
    seed: int = 0,
    bins: int = 256,
) -> xr.DataArray:
    """Boolean mask of the cells of a score cube above a threshold, lazily.

    Parameters
    ----------
    d
        A score cube (change, anomaly, distance...). NaN cells are ``False``.
    method
        A number, or an automatic threshold computed from a sample of the
        finite values of ``d`` (up to ``sample`` cells drawn uniformly from a
        random subset of blocks, see below):

        * ``"otsu"``: Otsu's threshold on a ``bins``-bin histogram of the
          sample (maximises the between-class variance of the two sides); good
          when changed and unchanged cells form two modes;
        * ``"mad"``: ``median + k * 1.4826 * MAD`` of the sample (a robust
          ``k``-sigma rule; 1.4826 makes the MAD a standard deviation for
          normal data); good when change is rare.
    k
        Multiplier for ``"mad"``.
    sample
        Sample size. Blocks of ``d`` are taken in a random (seeded) order until
        they hold ``4 * sample`` cells and at least 8 blocks, so on a large
        cube the threshold reads only those blocks.
    seed
        Seed of the sample.
    bins
        Histogram bins for ``"otsu"``.

    Returns
    -------
    xarray.DataArray
        ``bool`` mask ``d > threshold`` named ``<name>_mask``. The threshold
        is the 0-d ``threshold`` coordinate: lazy for a dask-backed ``d``, and
        computed in the same pass as the mask (``mask.compute()`` gives both;
        ``float(mask.threshold)`` computes only the sample). It is also in
        ``attrs["xeofm:threshold"]`` whenever it is known without computing
        (a number, or an in-memory ``d``). ``attrs`` also hold
        ``xeofm:threshold_method``, ``xeofm:threshold_k`` and
        ``xeofm:threshold_sample``.

    Raises
    ------
    InputError
        Unknown method, or (when computed) a sample without finite values.
    """
    if not isinstance(d, xr.DataArray):
        raise InputError(f"threshold() takes a DataArray, got {type(d).__name__}")
    attrs: dict[str, Any] = {**_xeofm_attrs(d)}
    if isinstance(method, (int, float, np.integer, np.floating)) and not isinstance(method, bool):
        t: Any = float(method)
        attrs.update({"xeofm:threshold_method": "fixed", "xeofm:threshold": t})
    elif method in ("otsu", "mad"):
        rows = _sample_rows(d.data, None, int(sample), int(seed))
        attrs.update({"xeofm:threshold_method": method, "xeofm:threshold_sample": int(sample)})
        if method == "mad":
            attrs["xeofm:threshold_k"] = float(k)
        if isinstance(rows, np.ndarray):
            t = float(_auto_threshold(rows, method, k, bins))
            attrs["xeofm:threshold"] = t
        else:
            import dask
            import dask.array as dsa

            value = dask.delayed(_auto_threshold, pure=True)(rows, method, k, bins)
            t = dsa.from_delayed(value, shape=(), dtype=np.float64)
    else:
        raise InputError(f"method must be 'otsu', 'mad' or a number, got {method!r}")
    tda = xr.DataArray(t)
    mask = (d > tda).assign_coords(threshold=tda)
    name = f"{d.name}_mask" if d.name else "mask"
    attrs["long_name"] = f"{d.attrs.get('long_name', d.name or 'score')} above threshold"
    return _finish(mask, d, name, attrs)


# --------------------------------------------------------------------------------------
# Queries: similarity and top-k search
# --------------------------------------------------------------------------------------
def _axis_extent(c: np.ndarray, step: float) -> tuple[float, float]:
    h = abs(step) / 2
    return float(np.min(c)) - h, float(np.max(c)) + h


def _to_cube_crs(xs: np.ndarray, ys: np.ndarray, crs: Any, cube_crs) -> tuple[np.ndarray, np.ndarray]:
    if crs is None:
        return xs, ys
    from pyproj import CRS

    src = CRS.from_user_input(crs)
    if cube_crs is None:
        raise InputError(
            f"the query is in {_crs_name(src)} but the cube has no CRS; give the query in the cube's coordinates"
        )
    if src.equals(cube_crs):
        return xs, ys
    return _transformer(src.to_wkt(), cube_crs.to_wkt()).transform(xs, ys)


def _locate(emb: xr.DataArray, x: float, y: float, crs: Any) -> tuple[int, int, float, float]:
    """Row/column of the cell containing a point (raises if outside)."""
    ydim, xdim = _xy_dims(emb)
    cube_crs = _crs_of(emb)
    xq, yq = _to_cube_crs(np.array([float(x)]), np.array([float(y)]), crs, cube_crs)
    xq, yq = float(xq[0]), float(yq[0])
    xs, ys = emb[xdim].values.astype(np.float64), emb[ydim].values.astype(np.float64)
    dx, dy = _step(xs, emb, "x"), _step(ys, emb, "y")
    (x0, x1), (y0, y1) = _axis_extent(xs, dx), _axis_extent(ys, dy)
    if not (x0 <= xq <= x1 and y0 <= yq <= y1) or not (math.isfinite(xq) and math.isfinite(yq)):
        given = f"({x}, {y})" + (f" in {crs}" if crs is not None else "")
        raise InputError(
            f"the query point {given} is outside the cube: it is at x={xq:.6g}, y={yq:.6g} in "
            f"{_crs_name(cube_crs)}, the cube covers x {x0:.6g} .. {x1:.6g}, y {y0:.6g} .. {y1:.6g}"
        )
    return int(np.argmin(np.abs(ys - yq))), int(np.argmin(np.abs(xs - xq))), xq, yq


def _as_geometry(geometry: Any, crs: Any, cube_crs):
    """A shapely geometry in the cube's CRS."""
    import shapely
    from shapely.geometry import shape
    from shapely.geometry.base import BaseGeometry

    src = crs
    if hasattr(geometry, "to_crs") and hasattr(geometry, "crs"):  # GeoDataFrame / GeoSeries
        gcrs = geometry.crs if geometry.crs is not None else crs
        if gcrs is None and cube_crs is not None:
            raise InputError("the GeoDataFrame has no CRS; set one (gdf.set_crs(...)) or pass crs=")
        geoms = geometry.geometry if hasattr(geometry, "geometry") else geometry
        geom = shapely.union_all(np.asarray(geoms.values))
        src = gcrs
    elif isinstance(geometry, BaseGeometry):
        geom = geometry
    elif isinstance(geometry, Mapping) or hasattr(geometry, "__geo_interface__"):
        gj = geometry if isinstance(geometry, Mapping) else geometry.__geo_interface__
        if gj.get("type") == "FeatureCollection":
            geom = shapely.union_all([shape(f["geometry"]) for f in gj["features"]])
        elif gj.get("type") == "Feature":
            geom = shape(gj["geometry"])
        else:
            geom = shape(gj)
        if src is None and cube_crs is not None:
            src = "EPSG:4326"  # RFC 7946: GeoJSON coordinates are WGS 84 longitude/latitude
    else:
        raise InputError(
            f"geometry must be a shapely geometry, a GeoJSON mapping or a GeoDataFrame, got {type(geometry).__name__}"
        )
    if geom.is_empty:
        raise InputError("the query geometry is empty")
    if src is not None:
        from pyproj import CRS

        s = CRS.from_user_input(src)
        if cube_crs is None:
            raise InputError(f"the geometry is in {_crs_name(s)} but the cube has no CRS")
        if not s.equals(cube_crs):
            t = _transformer(s.to_wkt(), cube_crs.to_wkt())
            geom = shapely.transform(geom, lambda xy: np.column_stack(t.transform(xy[:, 0], xy[:, 1])))
    return geom


def _cells_in(emb: xr.DataArray, geom) -> tuple[slice, slice, np.ndarray]:
    """Index window and mask of the cells whose centre is inside ``geom``
    (or, for a geometry smaller than a cell, the cells it touches)."""
    import shapely

    ydim, xdim = _xy_dims(emb)
    xs, ys = emb[xdim].values.astype(np.float64), emb[ydim].values.astype(np.float64)
    dx, dy = _step(xs, emb, "x"), _step(ys, emb, "y")
    gx0, gy0, gx1, gy1 = geom.bounds
    hx, hy = abs(dx) / 2, abs(dy) / 2
    ix = np.flatnonzero((xs + hx >= gx0) & (xs - hx <= gx1))
    iy = np.flatnonzero((ys + hy >= gy0) & (ys - hy <= gy1))
    if ix.size == 0 or iy.size == 0:
        (x0, x1), (y0, y1) = _axis_extent(xs, dx), _axis_extent(ys, dy)
        raise InputError(
            f"the query geometry (bounds {gx0:.6g}, {gy0:.6g}, {gx1:.6g}, {gy1:.6g} in the cube's CRS) "
            f"does not overlap the cube (x {x0:.6g} .. {x1:.6g}, y {y0:.6g} .. {y1:.6g})"
        )
    wy, wx = slice(int(iy[0]), int(iy[-1]) + 1), slice(int(ix[0]), int(ix[-1]) + 1)
    X, Y = np.meshgrid(xs[wx], ys[wy])
    mask = shapely.contains_xy(geom, X, Y)
    if not mask.any():
        boxes = shapely.box(X - hx, Y - hy, X + hx, Y + hy)
        mask = shapely.intersects(geom, boxes)
    if not mask.any():
        raise InputError("the query geometry does not overlap any cell of the cube")
    return wy, wx, mask


def _text_vector(emb: xr.DataArray, text: str, model: Any) -> np.ndarray:
    ref = model if model is not None else emb.attrs.get("xeofm:model")
    if ref is None:
        raise InputError("similarity(text=...) needs the model: pass model=..., the embeddings carry no 'xeofm:model'")
    name = getattr(ref, "name", ref)
    want = emb.attrs.get("xeofm:model")
    if want is not None and name != want:
        raise InputError(f"the embeddings come from {want!r}, not {name!r}; text and image embeddings must share a model")
    h = getattr(ref, "hash", None)
    if h is not None and emb.attrs.get("xeofm:spec_hash") not in (None, h):
        raise InputError(f"the embeddings were made with another spec of {name!r} (spec hash differs)")
    try:
        from .models import encode_text
    except ImportError as e:
        raise SpecError(
            "text queries need a text encoder (xeofm.models.encode_text), which this installation does not "
            "provide; install the CLIP extra (pip install 'xeofm[clip]')"
        ) from e
    try:
        # the text tower must carry the weights the image tower ran with (none: seeded random init)
        w = emb.attrs.get("xeofm:weights") or getattr(ref, "weights", None)
        vec = encode_text(ref, [str(text)], **({"weights": w} if w else {"pretrained": False}))
    except (SpecError, NotImplementedError, KeyError, AttributeError, LookupError) as e:
        raise SpecError(
            f"model {name!r} has no text tower, so its embeddings cannot be queried by text ({e}). "
            "Query by location or geometry instead, or embed with a CLIP-type model."
        ) from e
    if hasattr(vec, "detach"):
        vec = vec.detach().cpu().numpy()
    vec = np.asarray(vec, dtype=np.float32)
    if vec.size != emb.sizes[EMB]:
        raise SpecError(
            f"the text embedding of model {name!r} has {vec.size} values, the image embeddings "
            f"{emb.sizes[EMB]}; they are not in one space"
        )
    return vec.reshape(-1)


def _query_vector(
    emb: xr.DataArray,
    *,
    x: float | None,
    y: float | None,
    geometry: Any,
    crs: Any,
    text: str | None,
    vector: Any,
    model: Any,
    at: Mapping[str, Any] | None,
) -> tuple[xr.DataArray, str]:
    options = (("x/y", x if x is not None else y), ("geometry", geometry), ("text", text), ("vector", vector))
    given = [n for n, v in options if v is not None]
    if len(given) != 1:
        raise InputError(f"give exactly one query: x= and y=, geometry=, text= or vector= (got {given or 'none'})")
    if given[0] == "x/y" and (x is None or y is None):
        raise InputError("a point query needs both x= and y=")
    ydim, xdim = _xy_dims(emb)
    if given[0] in ("text", "vector"):
        if given[0] == "text":
            v = _text_vector(emb, text, model)  # type: ignore[arg-type]
            desc = f"text {text!r}"
        else:
            v = np.asarray(vector, dtype=np.float32).reshape(-1)
            if v.size != emb.sizes[EMB]:
                raise InputError(f"the query vector has {v.size} values, the embeddings {emb.sizes[EMB]}")
            desc = "vector"
        return xr.DataArray(v, dims=(EMB,)), desc
    src = emb.sel(at) if at else emb
    if given[0] == "x/y":
        iy, ix, xq, yq = _locate(emb, x, y, crs)  # type: ignore[arg-type]
        q = src.isel({ydim: iy, xdim: ix})
        desc = f"point x={xq:.6g}, y={yq:.6g} ({_crs_name(_crs_of(emb))})"
    else:
        geom = _as_geometry(geometry, crs, _crs_of(emb))
        wy, wx, mask = _cells_in(emb, geom)
        win = src.isel({ydim: wy, xdim: wx})
        m = xr.DataArray(mask, dims=(ydim, xdim), coords={ydim: win[ydim], xdim: win[xdim]})
        q = win.where(m)
        desc = f"geometry ({int(mask.sum())} cells)"
    q = _mean_over(q, [d for d in q.dims if d != EMB])
    q = xr.DataArray(q.data, dims=(EMB,))
    if at:
        desc += f" at {', '.join(f'{k}={_fmt(np.asarray(v)) if not isinstance(v, str) else v}' for k, v in at.items())}"
    return q, desc


def similarity(
    emb: xr.DataArray,
    *,
    x: float | None = None,
    y: float | None = None,
    geometry: Any = None,
    crs: Any = None,
    text: str | None = None,
    vector: Any = None,
    model: Any = None,
    at: Mapping[str, Any] | None = None,
    metric: Metric = "cosine",
) -> xr.DataArray:
    """Similarity of every cell to a query, lazily.

    Give exactly one query:

    * ``x``, ``y``: a point, in the cube's CRS or in ``crs`` (e.g.
      ``crs="EPSG:4326"`` with ``x=lon, y=lat``); the query is the embedding
      of the cell containing it;
    * ``geometry``: a polygon (shapely, a GeoJSON mapping (WGS 84 unless
      ``crs`` says otherwise), or a GeoDataFrame/GeoSeries with its own CRS);
      the query is the mean embedding of the cells whose centre is inside it
      (the cells it touches, for a polygon smaller than one cell);
    * ``text``: a phrase, encoded by the text tower of the embeddings' model
      (``xeofm.models.encode_text``; CLIP-type models only);
    * ``vector``: an embedding vector.

    Parameters
    ----------
    emb
        Embedding cube ``(..., embedding, y, x)``.
    crs
        CRS of ``x``/``y`` or ``geometry``; defaults to the cube's.
    model
        For ``text``: the model (name or spec); defaults to the embeddings'
        ``xeofm:model``.
    at
        For a location query on a cube with more dims (``time``...): which
        step(s) give the query, as for ``emb.sel(at)``; by default the query
        is the NaN-aware mean over them (the place's mean embedding).
    metric
        ``"cosine"``: cosine similarity in ``[-1, 1]`` (1 at the query);
        ``"euclidean"``: minus the Euclidean distance (0 at the query).

    Returns
    -------
    xarray.DataArray
        ``"similarity"``: ``emb``'s dims without ``embedding``, float32, NaN
        where the cell (or the query) is invalid. The query vector is part of
        the graph: nothing is computed here.

    Raises
    ------
    InputError
        No query or several, a point or geometry outside the cube.
    SpecError
        A text query with a model that has no text tower.
    """
    _check_embeddings(emb)
    _check_metric(metric)
    q, desc = _query_vector(emb, x=x, y=y, geometry=geometry, crs=crs, text=text, vector=vector, model=model, at=at)
    out = _apply_pair(emb, q, metric, similarity=True)
    return _finish(
        out, emb, "similarity",
        {"long_name": f"{metric} similarity", "xeofm:metric": metric, "xeofm:query": desc},
    )


def _nms(scores: np.ndarray, xy: np.ndarray, k: int, min_distance: float) -> np.ndarray:
    """Greedy selection, best first, of up to k candidates at least min_distance apart."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    r2 = float(min_distance) ** 2
    for i in order:
        if keep:
            d2 = ((xy[keep] - xy[i]) ** 2).sum(1)
            if (d2 < r2).any():
                continue
        keep.append(int(i))
        if len(keep) == k:
            break
    return np.asarray(keep, dtype=np.int64)


def _block_topk(
    block: np.ndarray,
    offsets: tuple[int, ...],
    k: int,
    yx_axes: tuple[int, int],
    ys: np.ndarray,
    xs: np.ndarray,
    min_distance: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` finite values of one block and their global indices
    (``ys``/``xs``: the block's own coordinates, used for ``min_distance``)."""
    a = np.asarray(block)
    flat = a.ravel()
    idx = np.flatnonzero(np.isfinite(flat))
    cap = k if not min_distance else max(1000, 50 * k)
    if idx.size > cap:
        idx = idx[np.argpartition(-flat[idx], cap - 1)[:cap]]
    local = np.stack(np.unravel_index(idx, a.shape), 1) if idx.size else np.empty((0, a.ndim), np.int64)
    sc = flat[idx].astype(np.float64)
    if min_distance and idx.size:
        xy = np.column_stack([xs[local[:, yx_axes[1]]], ys[local[:, yx_axes[0]]]])
        sel = _nms(sc, xy, k, min_distance)
        local, sc = local[sel], sc[sel]
    return sc, local + np.asarray(offsets, dtype=np.int64)


def _merge_topk(
    parts: Sequence[tuple[np.ndarray, np.ndarray]],
    k: int,
    shape: tuple[int, ...],
    yx_axes: tuple[int, int],
    ys: np.ndarray,
    xs: np.ndarray,
    min_distance: float | None,
) -> tuple[np.ndarray, np.ndarray]:
    sc = np.concatenate([p[0] for p in parts]) if parts else np.empty(0)
    ix = np.concatenate([p[1] for p in parts]) if parts else np.empty((0, len(shape)), np.int64)
    if sc.size == 0:
        return sc, ix
    flat = np.ravel_multi_index(tuple(ix.T), shape)
    order = np.lexsort((flat, -sc))  # best score first, ties in raster order
    sc, ix = sc[order], ix[order]
    if min_distance:
        xy = np.column_stack([xs[ix[:, yx_axes[1]]], ys[ix[:, yx_axes[0]]]])
        sel = _nms(sc, xy, k, min_distance)
        return sc[sel], ix[sel]
    return sc[:k], ix[:k]


def search(
    emb: xr.DataArray,
    query: Any,
    k: int = 20,
    *,
    crs: Any = None,
    model: Any = None,
    at: Mapping[str, Any] | None = None,
    metric: Metric = "cosine",
    min_distance: float | None = None,
) -> pd.DataFrame:
    """The ``k`` places most similar to a query, as a table.

    Computed blockwise: every block of the similarity cube is reduced to its
    own top ``k`` (value and position) as soon as it is computed, then the
    per-block candidates are merged. Only ``k`` values per block are ever held
    in memory, and everything (query vector included) is one dask compute.

    Parameters
    ----------
    emb
        Embedding cube ``(..., embedding, y, x)``, or an already computed
        score cube without ``embedding`` (e.g. from :func:`similarity`):
        then ``query`` is ignored and ``emb`` is ranked as is.
    query
        ``(x, y)`` (in the cube's CRS or ``crs``), a shapely geometry / GeoJSON
        mapping / GeoDataFrame, a text string, or an embedding vector; see
        :func:`similarity`.
    k
        Number of places.
    crs, model, at, metric
        As in :func:`similarity`.
    min_distance
        If given (in CRS units), places closer than this to a better one are
        skipped (greedy non-maximum suppression, per block and then over the
        merged candidates), so the table lists distinct places rather than
        the query's neighbours. Applies to x/y only: with a ``time`` dim the
        same place is not listed again at another date.

    Returns
    -------
    pandas.DataFrame
        One row per place, best first: ``x``, ``y`` (cell centre in the
        cube's CRS), ``lon``, ``lat`` (WGS 84; NaN without a CRS), the labels
        of other dims (``time`` if any), and ``score``. ``df.attrs`` records
        the query, metric and CRS.
    """
    import dask
    import pandas as pd

    if not isinstance(emb, xr.DataArray):
        raise InputError(f"search() takes a DataArray, got {type(emb).__name__}")
    if not isinstance(k, (int, np.integer)) or k < 1:
        raise InputError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if EMB in emb.dims:
        kw: dict[str, Any] = {"crs": crs, "model": model, "at": at, "metric": metric}
        if isinstance(query, str):
            kw["text"] = query
        elif isinstance(query, (tuple, list)) and len(query) == 2 and all(np.isscalar(v) for v in query):
            kw["x"], kw["y"] = query
        elif isinstance(query, (np.ndarray, xr.DataArray)) or (
            isinstance(query, (tuple, list)) and len(query) == emb.sizes[EMB]
        ):
            kw["vector"] = np.asarray(query)
        else:
            kw["geometry"] = query
        sim = similarity(emb, **kw)
    else:
        sim = emb
    ydim, xdim = _xy_dims(sim)
    yx_axes = (sim.get_axis_num(ydim), sim.get_axis_num(xdim))
    ys = sim[ydim].values.astype(np.float64)
    xs = sim[xdim].values.astype(np.float64)
    data = sim.data
    shape = tuple(int(s) for s in data.shape)
    if hasattr(data, "to_delayed"):
        starts = [np.concatenate([[0], np.cumsum(c)[:-1]]).astype(int) for c in data.chunks]
        dl = data.to_delayed(optimize_graph=False)
        parts = []
        for b in np.ndindex(*data.numblocks):
            off = tuple(int(starts[a][i]) for a, i in enumerate(b))
            sl_y = slice(off[yx_axes[0]], off[yx_axes[0]] + data.chunks[yx_axes[0]][b[yx_axes[0]]])
            sl_x = slice(off[yx_axes[1]], off[yx_axes[1]] + data.chunks[yx_axes[1]][b[yx_axes[1]]])
            parts.append(
                dask.delayed(_block_topk, pure=True)(
                    dl[b], off, k, yx_axes, ys[sl_y] if min_distance else ys[:0],
                    xs[sl_x] if min_distance else xs[:0], min_distance,
                )
            )
        merged = dask.delayed(_merge_topk, pure=True)(parts, k, shape, yx_axes, ys, xs, min_distance)
        (scores, idx), = dask.compute(merged)
    else:
        part = _block_topk(np.asarray(data), (0,) * len(shape), k, yx_axes, ys, xs, min_distance)
        scores, idx = _merge_topk([part], k, shape, yx_axes, ys, xs, min_distance)
    if len(scores) == 0:
        raise InputError(
            "search(): no cell has a valid score; the query is invalid (a point on nodata?) "
            "or the cube is NaN everywhere"
        )
    cols: dict[str, Any] = {"x": xs[idx[:, yx_axes[1]]], "y": ys[idx[:, yx_axes[0]]]}
    cube_crs = _crs_of(sim)
    if cube_crs is not None and len(scores):
        lon, lat = _transformer(cube_crs.to_wkt(), "EPSG:4326").transform(cols["x"], cols["y"])
    else:
        lon = lat = np.full(len(scores), np.nan)
    cols["lon"], cols["lat"] = np.asarray(lon), np.asarray(lat)
    for ax, dname in enumerate(sim.dims):
        if dname in (ydim, xdim):
            continue
        vals = sim[dname].values if dname in sim.coords else np.arange(sim.sizes[dname])
        cols[str(dname)] = vals[idx[:, ax]]
    cols["score"] = scores.astype(np.float64)
    df = pd.DataFrame(cols)
    df.index.name = "rank"
    df.attrs = {
        "query": sim.attrs.get("xeofm:query", "given scores"),
        "metric": sim.attrs.get("xeofm:metric"),
        "crs": _crs_name(cube_crs),
        "model": sim.attrs.get("xeofm:model"),
    }
    return df


# --------------------------------------------------------------------------------------
# PCA and display stretch
# --------------------------------------------------------------------------------------
@dataclass
class PCAFit:
    """A principal-component basis of embeddings, fitted on a sample of cells.

    Attributes
    ----------
    components : numpy.ndarray
        ``(n, D)`` unit vectors, by decreasing variance; the sign of each is
        fixed so that its largest-magnitude loading is positive.
    mean : numpy.ndarray
        ``(D,)`` mean embedding of the sample.
    explained_variance : numpy.ndarray
        ``(n,)`` variance of the sample along each component.
    explained_variance_ratio : numpy.ndarray
        ``(n,)`` share of the sample's total variance.
    n_samples : int
        Valid cells the fit used.
    model, spec_hash : str or None
        Provenance of the embeddings.
    """

    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    n_samples: int
    model: str | None = None
    spec_hash: str | None = field(default=None)

    def transform(self, X: np.ndarray) -> np.ndarray:
        """Project rows ``(m, D)`` onto the components: ``(X - mean) @ components.T``."""
        return (np.asarray(X, dtype=np.float64) - self.mean) @ self.components.T


def _fit_rows(rows: np.ndarray, n: int) -> PCAFit:
    if len(rows) == 0:
        raise InputError(
            "pca(): the sample holds no valid cell; the embeddings are NaN everywhere that was sampled "
            "(was the input invalid or nodata everywhere?). Check emb.notnull().any() or select valid dates/areas."
        )
    if len(rows) <= n:
        raise InputError(f"pca(): {len(rows)} valid cells in the sample are too few for {n} components")
    mu = rows.mean(0)
    _, s, vt = np.linalg.svd(rows - mu, full_matrices=False)
    comps = vt[:n].copy()
    flip = np.sign(comps[np.arange(n), np.argmax(np.abs(comps), axis=1)])
    comps *= np.where(flip == 0, 1.0, flip)[:, None]
    var = s**2 / (len(rows) - 1)
    total = var.sum()
    return PCAFit(
        components=comps, mean=mu, explained_variance=var[:n],
        explained_variance_ratio=var[:n] / total if total > 0 else np.zeros(n), n_samples=int(len(rows)),
    )


def _check_n(emb: xr.DataArray, n: int) -> int:
    if not isinstance(n, (int, np.integer)) or not 1 <= n <= emb.sizes[EMB]:
        raise InputError(f"n must be an integer in [1, {emb.sizes[EMB]}] (the embedding size), got {n!r}")
    return int(n)


def fit_pca(emb: xr.DataArray, n: int = 3, *, sample: int = 20_000, seed: int = 0) -> PCAFit:
    """Fit a PCA basis on a random sample of valid cells (computes the sample).

    Parameters
    ----------
    emb
        Embedding cube.
    n
        Number of components.
    sample
        Up to this many valid cells, drawn uniformly from a random subset of
        blocks (blocks are added in a seeded random order until they hold
        ``4 * sample`` cells and at least 8 blocks).
    seed
        Seed of the sample.

    Returns
    -------
    PCAFit
        Reuse it with ``pca(other, fit=...)`` to put several cubes in one
        colour space.

    Raises
    ------
    InputError
        If the sample has no valid cell (all-NaN embeddings).
    """
    import dask

    _check_embeddings(emb)
    n = _check_n(emb, n)
    rows = _sample_rows(emb.data, emb.get_axis_num(EMB), int(sample), int(seed))
    if not isinstance(rows, np.ndarray):
        (rows,) = dask.compute(rows)
    fit = _fit_rows(rows, n)
    fit.model, fit.spec_hash = emb.attrs.get("xeofm:model"), emb.attrs.get("xeofm:spec_hash")
    return fit


def _project_core(a: np.ndarray, comps: np.ndarray, mean: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    return ((a - mean) @ np.asarray(comps, dtype=np.float64).T).astype(np.float32)


def pca(
    emb: xr.DataArray,
    n: int = 3,
    *,
    sample: int = 20_000,
    seed: int = 0,
    fit: PCAFit | None = None,
) -> xr.DataArray:
    """Project embeddings on their leading principal components, lazily.

    The basis is fitted (numpy SVD of the centred sample) on up to ``sample``
    valid cells drawn as in :func:`fit_pca`; the fit is a node of the graph,
    computed with the result. Pass ``fit=`` (from :func:`fit_pca`) to reuse a
    basis (no fitting at all) or to compute several pieces of one cube
    consistently without refitting each time.

    Parameters
    ----------
    emb
        Embedding cube ``(..., embedding, y, x)``.
    n
        Number of components (3 for a false-colour image).
    sample, seed
        The fitting sample (ignored with ``fit``).
    fit
        A fitted basis of the same model and spec.

    Returns
    -------
    xarray.DataArray
        ``"pca"``: ``(..., component, y, x)`` float32 scores (``component`` =
        0 .. n-1, with the ``explained_variance_ratio`` coordinate), NaN where
        the embedding is. Display with :func:`robust_stretch` or
        ``xeofm.viz.plot_pca``.

    Raises
    ------
    InputError
        ``n`` out of range, a ``fit`` of another model/spec/size, or (when
        computed) a sample without valid cells.
    """
    import dask
    import dask.array as dsa

    _check_embeddings(emb)
    n = _check_n(emb, n) if fit is None else int(fit.components.shape[0])
    D = emb.sizes[EMB]
    if fit is not None:
        if fit.components.shape[1] != D:
            raise InputError(f"the PCA fit is for {fit.components.shape[1]}-D embeddings, these are {D}-D")
        if fit.spec_hash is not None and emb.attrs.get("xeofm:spec_hash") not in (None, fit.spec_hash):
            raise InputError("the PCA fit was made on embeddings of another model or spec (xeofm:spec_hash differs)")
        comps, mean, ratio = fit.components, fit.mean, fit.explained_variance_ratio
        how = f"fit given ({fit.n_samples} cells)"
    else:
        rows = _sample_rows(emb.data, emb.get_axis_num(EMB), int(sample), int(seed))
        if isinstance(rows, np.ndarray):
            f = _fit_rows(rows, n)
            comps, mean, ratio = f.components, f.mean, f.explained_variance_ratio
        else:
            fd = dask.delayed(_fit_rows, pure=True)(rows, n)
            comps = dsa.from_delayed(fd.components, shape=(n, D), dtype=np.float64)
            mean = dsa.from_delayed(fd.mean, shape=(D,), dtype=np.float64)
            ratio = dsa.from_delayed(fd.explained_variance_ratio, shape=(n,), dtype=np.float64)
        how = f"fitted on up to {int(sample)} sampled cells (seed {int(seed)})"
    c_da = xr.DataArray(comps, dims=("component", EMB))
    m_da = xr.DataArray(mean, dims=(EMB,))
    e = _one_chunk(emb, EMB)
    out = xr.apply_ufunc(
        _project_core, e, c_da, m_da,
        input_core_dims=[[EMB], ["component", EMB], [EMB]],
        output_core_dims=[["component"]],
        dask="parallelized",
        output_dtypes=[np.float32],
        dask_gufunc_kwargs={"output_sizes": {"component": n}},
        keep_attrs=True,
    )
    order = [("component" if d == EMB else d) for d in emb.dims]
    out = out.transpose(*order).assign_coords(component=np.arange(n), explained_variance_ratio=("component", ratio))
    return _finish(out, emb, "pca", {"long_name": "principal components of embeddings", "xeofm:pca": how})


def _percentiles(rows: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if len(rows) == 0:
        return np.array([np.zeros(rows.shape[1]), np.ones(rows.shape[1])])
    return np.percentile(rows, [lo, hi], axis=0)


def robust_stretch(
    da: xr.DataArray,
    dim: str | None = None,
    *,
    lo: float = 2.0,
    hi: float = 98.0,
    sample: int = 100_000,
    seed: int = 0,
) -> xr.DataArray:
    """Percentile stretch to ``[0, 1]`` for display, lazily.

    Parameters
    ----------
    da
        Any cube (bands, principal components, scores).
    dim
        Stretch each entry of this dim separately (``"band"``,
        ``"component"``); ``None`` stretches all values together.
    lo, hi
        Percentiles mapped to 0 and 1 (values beyond are clipped), estimated on
        a sample of valid values as in :func:`threshold` (the same values for
        every date, so frames of a time series stay comparable).
    sample, seed
        The sample.

    Returns
    -------
    xarray.DataArray
        float32 in ``[0, 1]``, NaN where ``da`` is NaN; the percentiles are in
        the ``stretch_lo``/``stretch_hi`` coordinates.
    """
    import dask
    import dask.array as dsa

    if not 0 <= lo < hi <= 100:
        raise InputError(f"need 0 <= lo < hi <= 100, got lo={lo}, hi={hi}")
    x = da.astype(np.float32)
    if dim is not None and dim not in x.dims:
        raise MissingDimensionError(f"robust_stretch(): no dim {dim!r} in {list(x.dims)}")
    axis = None if dim is None else x.get_axis_num(dim)
    nf = 1 if dim is None else x.sizes[dim]
    rows = _sample_rows(x.data, axis, int(sample), int(seed))
    if isinstance(rows, np.ndarray):
        p = _percentiles(rows, lo, hi)
    else:
        p = dsa.from_delayed(dask.delayed(_percentiles, pure=True)(rows, lo, hi), shape=(2, nf), dtype=np.float64)
    if dim is None:
        plo, phi = xr.DataArray(p[0, 0]), xr.DataArray(p[1, 0])
    else:
        plo, phi = xr.DataArray(p[0], dims=(dim,)), xr.DataArray(p[1], dims=(dim,))
    span = (phi - plo).clip(min=1e-12)
    out = ((x - plo) / span).clip(0, 1).astype(np.float32)
    out = out.assign_coords(stretch_lo=plo, stretch_hi=phi)
    out.attrs = {**da.attrs, "xeofm:stretch": f"percentiles {lo:g}..{hi:g} to 0..1"}
    return out.rename(da.name)


# --------------------------------------------------------------------------------------
# Label cubes: cell areas, class areas, transitions, mode downsampling
# --------------------------------------------------------------------------------------
_EQUAL_AREA_METHODS = (
    "equal area", "equal earth", "albers", "mollweide", "sinusoidal", "eckert iv", "eckert vi",
    "goode", "quartic authalic", "hammer",
)


def _area_kind(crs) -> str:
    if crs is None:
        raise InputError(
            "areas need a CRS and the cube has none; set it with da.rio.write_crs('EPSG:...') "
            "(labels from xeofm keep the CRS of their input)"
        )
    if crs.is_geographic:
        return "project"
    op = crs.coordinate_operation
    name = (op.method_name if op is not None else "").lower()
    if crs.is_projected and "spherical" not in name and any(m in name for m in _EQUAL_AREA_METHODS):
        return "equal"
    return "project"


def _area_block(y: np.ndarray, x: np.ndarray, dx: float, dy: float, wkt: str, kind: str, unit: float) -> np.ndarray:
    """Cell areas (km²) of one block from its cell-centre coordinates."""
    if kind == "equal":
        return np.full((y.size, x.size), abs(dx * dy) * unit * unit / 1e6)
    xe = np.concatenate([x - dx / 2, [x[-1] + dx / 2]])
    ye = np.concatenate([y - dy / 2, [y[-1] + dy / 2]])
    X, Y = np.meshgrid(xe, ye)
    if "GEOGCRS" in wkt[:12] or "GEOGCS" in wkt[:12]:
        Y = np.clip(Y, -90.0, 90.0)
    E, N = _transformer(wkt, AREA_CRS).transform(X, Y)
    E, N = np.asarray(E), np.asarray(N)
    # quadrilateral area from its diagonals: |(p2 - p0) x (p3 - p1)| / 2
    d1x, d1y = E[1:, 1:] - E[:-1, :-1], N[1:, 1:] - N[:-1, :-1]
    d2x, d2y = E[1:, :-1] - E[:-1, 1:], N[1:, :-1] - N[:-1, 1:]
    return np.abs(d1x * d2y - d1y * d2x) / 2 / 1e6


def cell_area(da: xr.DataArray) -> xr.DataArray:
    """Area of every cell in km², lazily, from the cube's CRS and grid.

    * Projected **equal-area** CRSs (Albers, Lambert azimuthal or cylindrical
      equal-area, Equal Earth, Mollweide, sinusoidal... on the ellipsoid):
      the exact cell area ``|dx * dy|`` (in metres).
    * Any other CRS (UTM and other conformal projections, Web Mercator,
      longitude/latitude): the four corners of each cell are projected to
      EPSG:6933 (WGS 84 / NSIDC EASE-Grid 2.0 Global, a cylindrical
      equal-area projection on the WGS 84 ellipsoid) and the area of that
      quadrilateral is taken. This is exact for longitude/latitude grids
      (meridians and parallels are straight lines there); for projected grids
      the only error is the curvature of the cell edges, far below 1e-6 of
      the area for cells up to a kilometre outside the polar regions.

    Parameters
    ----------
    da
        Any cube with ``y``/``x`` cell-centre coordinates and a CRS.

    Returns
    -------
    xarray.DataArray
        ``(y, x)`` float64 ``"cell_area"`` in km², dask-backed with the cube's
        ``y``/``x`` chunks; ``attrs["xeofm:area_method"]`` says which rule.

    Raises
    ------
    InputError
        If the cube has no CRS or an irregular grid.
    """
    import dask.array as dsa

    ydim, xdim = _xy_dims(da)
    crs = _crs_of(da)
    kind = _area_kind(crs)
    ys = np.asarray(da[ydim].values, dtype=np.float64)
    xs = np.asarray(da[xdim].values, dtype=np.float64)
    dy, dx = _step(ys, da, "y"), _step(xs, da, "x")
    unit = 1.0
    if crs.is_projected:
        unit = float(crs.axis_info[0].unit_conversion_factor or 1.0)
    if da.chunks is not None:
        yc, xc = da.chunks[da.get_axis_num(ydim)], da.chunks[da.get_axis_num(xdim)]
    else:
        yc, xc = (ys.size,), (xs.size,)
    ya = dsa.from_array(ys, chunks=(yc,))
    xa = dsa.from_array(xs, chunks=(xc,))
    arr = dsa.blockwise(
        _area_block, "ij", ya, "i", xa, "j", dx=dx, dy=dy, wkt=crs.to_wkt(), kind=kind, unit=unit, dtype=np.float64,
    )
    method = (
        f"exact: equal-area CRS {_crs_name(crs)}" if kind == "equal"
        else f"cell corners projected from {_crs_name(crs)} to {AREA_CRS} (equal-area)"
    )
    coords = {ydim: da[ydim], xdim: da[xdim]}
    for cname in ("spatial_ref",):
        if cname in da.coords:
            coords[cname] = da.coords[cname]
    return xr.DataArray(
        arr, dims=(ydim, xdim), coords=coords, name="cell_area",
        attrs={"units": "km2", "long_name": "cell area", "xeofm:area_method": method},
    )


def _label_meta(labels: xr.DataArray) -> tuple[list[str], int]:
    if not isinstance(labels, xr.DataArray):
        raise InputError(f"expected a label cube (DataArray), got {type(labels).__name__}")
    if labels.dtype.kind not in "ui":
        raise InputError(f"a label cube holds integers, this one holds {labels.dtype}")
    classes = labels.attrs.get("xeofm:classes")
    if classes is None and labels.attrs.get("flag_meanings"):
        fv = list(labels.attrs.get("flag_values", []))
        names = str(labels.attrs["flag_meanings"]).split()
        if fv and [int(v) for v in fv] != list(range(len(names))):
            raise InputError("flag_values must be 0 .. K-1 to be read as class ids")
        classes = names
    if classes is None:
        raise InputError(
            "not a label cube: attrs['xeofm:classes'] (class names, label = index) is missing; "
            "mark integer maps with xeofm.labels.as_label_cube(da, classes)"
        )
    nodata = labels.attrs.get("_FillValue", labels.attrs.get("nodata"))
    if nodata is None:
        nodata = 255 if labels.dtype.itemsize == 1 else 65535
    return [str(c) for c in classes], int(nodata)


def _wbincount(codes: Any, weights: Any, M: int) -> Any:
    """Lazy weighted bincount of a 2-D dask array (blockwise, then summed)."""
    import dask.array as dsa

    def blk(c: np.ndarray, w: np.ndarray) -> np.ndarray:
        return np.bincount(c.ravel(), weights=w.ravel(), minlength=M)[None, None, :]

    nby, nbx = codes.numblocks
    out = dsa.map_blocks(
        blk, codes, weights, new_axis=2, chunks=((1,) * nby, (1,) * nbx, (M,)), dtype=np.float64,
    )
    return out.sum(axis=(0, 1))


def _codes(lab2d: xr.DataArray, K: int, chunks: tuple) -> Any:
    import dask.array as dsa

    d = lab2d.data
    if not hasattr(d, "rechunk"):
        d = dsa.from_array(np.asarray(d), chunks=chunks)
    else:
        d = d.rechunk(chunks)
    return dsa.where(d < K, d, K).astype(np.int64)


def area(labels: xr.DataArray) -> pd.DataFrame:
    """Area of each class in km² (computes), equal-area correct.

    Cells are weighted by their true area (:func:`cell_area`), so a UTM or
    longitude/latitude grid gives the same km² as an equal-area grid.

    Parameters
    ----------
    labels
        Label cube ``(..., y, x)`` with ``xeofm:classes`` and a CRS.

    Returns
    -------
    pandas.DataFrame
        Index: class names. For a 2-D cube, columns ``area_km2`` and
        ``fraction`` (of the valid area); with more dims (``time``...), one
        column of km² per step. ``df.attrs`` gives ``nodata_km2`` (per step for
        several) and ``area_method``.
    """
    import dask
    import pandas as pd

    classes, _ = _label_meta(labels)
    K = len(classes)
    ydim, xdim = _xy_dims(labels)
    A = cell_area(labels)
    lead = [d for d in labels.dims if d not in (ydim, xdim)]
    lab = labels.transpose(*lead, ydim, xdim)
    keys = list(np.ndindex(*[labels.sizes[d] for d in lead])) if lead else [()]
    sums = [_wbincount(_codes(lab[k] if k else lab, K, A.data.chunks), A.data, K + 1) for k in keys]
    res = np.stack(dask.compute(*sums)) if sums else np.zeros((0, K + 1))
    method = A.attrs["xeofm:area_method"]
    if not lead:
        v = res[0]
        valid = v[:K].sum()
        df = pd.DataFrame(
            {"area_km2": v[:K], "fraction": v[:K] / valid if valid > 0 else np.nan},
            index=pd.Index(classes, name="class"),
        )
        df.attrs = {"nodata_km2": float(v[K]), "area_method": method}
        return df
    if len(lead) == 1:
        cols = pd.Index(labels[lead[0]].values if lead[0] in labels.coords else np.arange(len(keys)), name=str(lead[0]))
    else:
        cols = pd.MultiIndex.from_tuples(
            [tuple((labels[d].values[i] if d in labels.coords else i) for d, i in zip(lead, k)) for k in keys],
            names=[str(d) for d in lead],
        )
    df = pd.DataFrame(res[:, :K].T, index=pd.Index(classes, name="class"), columns=cols)
    df.attrs = {"nodata_km2": res[:, K].tolist(), "area_method": method}
    return df


def _one_step(labels: xr.DataArray, dim: str, key: Any, default: int) -> tuple[xr.DataArray, Any]:
    if key is None:
        s = labels.isel({dim: default})
    else:
        try:
            s = labels.sel({dim: key})
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"{key!r} is not a label of {dim!r}") from e
        if dim in s.dims:
            if s.sizes[dim] != 1:
                raise InputError(f"{key!r} selects {s.sizes[dim]} steps of {dim!r}; select exactly one")
            s = s.isel({dim: 0})
    lbl = s[dim].values if dim in s.coords else key
    return s.drop_vars(dim, errors="ignore"), lbl


def transitions(
    labels: xr.DataArray,
    start: Any = None,
    end: Any = None,
    *,
    dim: str = "time",
) -> pd.DataFrame:
    """From-to class matrix between two steps of a label cube, in km² (computes).

    Parameters
    ----------
    labels
        Label cube ``(dim, y, x)`` with ``xeofm:classes`` and a CRS.
    start, end
        Labels of ``dim`` (``"2016-01-01"``); default the first and last step.
    dim
        The dim holding the steps.

    Returns
    -------
    pandas.DataFrame
        ``K x K`` km² (rows ``from`` class at ``start``, columns ``to`` class at
        ``end``; the diagonal is what stayed), each cell weighted by its true
        area as in :func:`cell_area`. ``df.attrs`` gives ``start``, ``end``,
        ``nodata_km2`` (cells invalid at either step) and ``area_method``.

    Raises
    ------
    InputError
        Not a label cube, no CRS, ``dim`` missing, or a step that does not
        select exactly one label.
    """
    import dask
    import pandas as pd

    classes, _ = _label_meta(labels)
    K = len(classes)
    if K > 1024:
        raise InputError(f"{K} classes are too many for a transition matrix (at most 1024)")
    if dim not in labels.dims:
        raise MissingDimensionError(f"transitions() along {dim!r}: the label cube has dims {list(labels.dims)}")
    ydim, xdim = _xy_dims(labels)
    a, la = _one_step(labels, dim, start, 0)
    b, lb = _one_step(labels, dim, end, -1)
    extra = [d for d in a.dims if d not in (ydim, xdim)]
    if extra:
        raise InputError(f"transitions() needs 2-D steps; select the other dims {extra} first")
    A = cell_area(labels)
    ch = A.data.chunks
    codes = _codes(a.transpose(ydim, xdim), K, ch) * (K + 1) + _codes(b.transpose(ydim, xdim), K, ch)
    (v,) = dask.compute(_wbincount(codes, A.data, (K + 1) ** 2))
    m = v.reshape(K + 1, K + 1)
    df = pd.DataFrame(m[:K, :K], index=pd.Index(classes, name="from"), columns=pd.Index(classes, name="to"))
    df.attrs = {
        "start": _fmt(la), "end": _fmt(lb), "units": "km2",
        "nodata_km2": float(m[K, :].sum() + m[:K, K].sum()), "area_method": A.attrs["xeofm:area_method"],
    }
    return df


def _mode_rows(a: np.ndarray, nodata: int) -> np.ndarray:
    """Most frequent value per row, ignoring ``nodata`` (ties: the smallest value)."""
    s = np.sort(a, axis=1)
    m = s.shape[1]
    pos = np.arange(m)
    new = np.ones(s.shape, dtype=bool)
    new[:, 1:] = s[:, 1:] != s[:, :-1]
    start = np.maximum.accumulate(np.where(new, pos, 0), axis=1)
    run = np.where(s == nodata, 0, pos - start + 1)
    best = run.argmax(axis=1)
    val = s[np.arange(len(s)), best]
    return np.where(run.max(axis=1) > 0, val, nodata).astype(a.dtype)


def _mode_block(block: np.ndarray, fy: int, fx: int, ay: int, ax: int, nodata: int) -> np.ndarray:
    a = np.moveaxis(np.asarray(block), (ay, ax), (-2, -1))
    lead = a.shape[:-2]
    H, W = a.shape[-2:]
    h, w = -(-H // fy), -(-W // fx)
    if (h * fy, w * fx) != (H, W):
        pad = [(0, 0)] * len(lead) + [(0, h * fy - H), (0, w * fx - W)]
        a = np.pad(a, pad, constant_values=nodata)
    a = a.reshape(*lead, h, fy, w, fx)
    a = np.moveaxis(a, -3, -2).reshape(-1, fy * fx)
    out = _mode_rows(a, nodata).reshape(*lead, h, w)
    return np.moveaxis(out, (-2, -1), (ay, ax))


def _multiple_chunks(chunks: tuple[int, ...], n: int, f: int) -> tuple[int, ...]:
    c = max(f, -(-max(chunks) // f) * f)
    full, rest = divmod(n, c)
    return (c,) * full + ((rest,) if rest else ())


def coarsen_mode(labels: xr.DataArray, factor: int | tuple[int, int]) -> xr.DataArray:
    """Downsample a label cube by the most frequent class of each window, lazily.

    Averaging class ids creates classes that are not there (the mean of
    *water* = 0 and *built* = 3 is *bare* = 2); the mode keeps every output a
    class of its window. Nodata cells are ignored, a window of nodata only
    stays nodata, ties go to the smaller id. Edge windows are partial.

    Parameters
    ----------
    labels
        Label cube ``(..., y, x)`` (any integer class map; the nodata label is
        ``_FillValue``/``nodata`` or the dtype's largest value).
    factor
        Window size in cells, one for both axes or ``(fy, fx)``.

    Returns
    -------
    xarray.DataArray
        Label cube with ``ceil(ny / fy) x ceil(nx / fx)`` cells (centres on the
        coarse grid), same dtype and attributes.
    """
    import dask.array as dsa

    if labels.dtype.kind not in "ui":
        raise InputError(
            f"coarsen_mode() takes integer class ids, got {labels.dtype}; use da.coarsen(...).mean() for values"
        )
    nodata = labels.attrs.get("_FillValue", labels.attrs.get("nodata"))
    nodata = int(nodata) if nodata is not None else int(np.iinfo(labels.dtype).max)
    fy, fx = (int(factor), int(factor)) if np.isscalar(factor) else (int(factor[0]), int(factor[1]))
    if fy < 1 or fx < 1:
        raise InputError(f"factor must be >= 1, got {factor!r}")
    if fy == fx == 1:
        return labels
    ydim, xdim = _xy_dims(labels)
    ay, ax = labels.get_axis_num(ydim), labels.get_axis_num(xdim)
    d = labels.data
    if not hasattr(d, "rechunk"):
        d = dsa.from_array(np.asarray(d), chunks=-1)
    ny, nx = labels.sizes[ydim], labels.sizes[xdim]
    d = d.rechunk({ay: _multiple_chunks(d.chunks[ay], ny, fy), ax: _multiple_chunks(d.chunks[ax], nx, fx)})
    out_chunks = list(d.chunks)
    out_chunks[ay] = tuple(-(-c // fy) for c in d.chunks[ay])
    out_chunks[ax] = tuple(-(-c // fx) for c in d.chunks[ax])
    out = d.map_blocks(_mode_block, fy, fx, ay, ax, nodata, chunks=tuple(out_chunks), dtype=d.dtype)
    ys = np.asarray(labels[ydim].values, dtype=np.float64)
    xs = np.asarray(labels[xdim].values, dtype=np.float64)
    dy, dx = _step(ys, labels, "y"), _step(xs, labels, "x")
    h, w = -(-ny // fy), -(-nx // fx)
    coords = {k: v for k, v in labels.coords.items() if ydim not in v.dims and xdim not in v.dims}
    coords[ydim] = ys[0] + (np.arange(h) * fy + (fy - 1) / 2) * dy
    coords[xdim] = xs[0] + (np.arange(w) * fx + (fx - 1) / 2) * dx
    res = xr.DataArray(out, dims=labels.dims, coords=coords, attrs=dict(labels.attrs), name=labels.name)
    if "spatial_ref" in res.coords and "GeoTransform" in res.coords["spatial_ref"].attrs:
        ref = res.coords["spatial_ref"].variable.copy(deep=True)
        ref.attrs = dict(ref.attrs)
        ref.attrs["GeoTransform"] = " ".join(
            repr(float(v)) for v in (xs[0] - dx / 2, dx * fx, 0.0, ys[0] - dy / 2, 0.0, dy * fy)
        )
        res = res.assign_coords(spatial_ref=ref)
    res.encoding.update({k: v for k, v in labels.encoding.items() if k == "grid_mapping"})
    return res
