"""Precomputed embedding products read as xeofm embedding cubes.

Some providers publish embeddings instead of models. The readers here turn
their files into the cubes :func:`xeofm.embed` returns, so the downstream
operations (similarity, change, probes, clustering...) apply unchanged:

* dims ``([time,] embedding, y, x)``, float32, lazy (dask), NaN where the
  product has no value;
* the product's CRS (``spatial_ref``) and pixel grid;
* provenance attributes: ``xeofm:model`` (the product id),
  ``xeofm:spec_hash`` (a stable id of product and version: cubes of different
  products or versions refuse to be compared), ``xeofm:output = "pixel"``,
  ``xeofm:cell_size = 1``, plus the licence and required attribution.

AlphaEarth Foundations Satellite Embedding V1 (Google / Google DeepMind, CC-BY-4.0)
    Annual 64-d embeddings at 10 m, as COGs of 64 signed 8-bit bands
    (``A00``...``A63``). De-quantisation as published with the files:
    ``v = sign(q) * (q / 127.5) ** 2``; ``q = -128`` marks a masked pixel. The
    de-quantised vectors have unit length. Some copies are written "bottom-up"
    (positive y resolution); they are flipped to north-up lazily.

TESSERA (University of Cambridge, embeddings CC0)
    Annual 128-d embeddings at 10 m in 0.1 degree tiles, shipped as
    ``grid_<lon>_<lat>.npy`` (int8, ``(H, W, 128)``) plus
    ``grid_<lon>_<lat>_scales.npy`` (float32, ``(H, W)`` or ``(H, W, 128)``), with
    the tile's UTM CRS and transform in a landmask GeoTIFF; ``geotessera`` can
    also export de-quantised float32 GeoTIFFs. De-quantisation: ``q * scale``.
    Scale sentinels: NaN = water, +inf = land without data yet; both become NaN.
"""

from __future__ import annotations

import hashlib
import re
import threading
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from .errors import InputError

__all__ = [
    "open_alphaearth",
    "open_tessera",
    "dequantize_alphaearth",
    "dequantize_tessera",
    "ALPHAEARTH",
    "TESSERA",
    "product_hash",
]

#: Product ids written to ``xeofm:model``.
ALPHAEARTH = "alphaearth-satellite-embedding"
TESSERA = "tessera"

_AEF_ATTRIBUTION = "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and Google DeepMind."
_TESSERA_ATTRIBUTION = "TESSERA embeddings, University of Cambridge (geotessera), CC0-1.0."
_AEF_NODATA = -128
_AEF_SCALE = 127.5


def product_hash(product: str, version: str) -> str:
    """Stable 16-hex-digit id of a product and version (the cube's ``xeofm:spec_hash``)."""
    return hashlib.sha256(f"xeofm-product:{product}:{version}".encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------
# De-quantisation (NumPy or dask arrays, embedding axis first)
# ---------------------------------------------------------------------------------------
def dequantize_alphaearth(q: Any, axis: int = 0) -> Any:
    """AlphaEarth int8 -> float32: ``sign(q) * (q / 127.5) ** 2``, NaN where any channel is -128.

    Parameters
    ----------
    q
        Signed 8-bit values (NumPy or dask array).
    axis
        The embedding axis: a pixel with any masked channel is NaN in all channels.
    """
    x = q.astype(np.float32)
    v = x * abs(x) / np.float32(_AEF_SCALE**2)
    bad = (q == _AEF_NODATA).any(axis=axis, keepdims=True)
    return _where(bad, np.float32(np.nan), v)


def dequantize_tessera(q: Any, scales: Any) -> Any:
    """TESSERA int8 ``(..., H, W)`` with the embedding axis first -> float32 ``q * scales``.

    ``scales`` is ``(H, W)`` (one scale per pixel) or ``(128, H, W)``. Non-finite
    scales (NaN: water, +inf: no data) give NaN.
    """
    s = scales.astype(np.float32)
    if s.ndim == q.ndim - 1:
        s = s[None]
    ok = _isfinite(s)
    v = q.astype(np.float32) * _where(ok, s, np.float32(0))
    return _where(ok, v, np.float32(np.nan))


def _where(cond, a, b):
    if any(type(t).__module__.startswith("dask") for t in (cond, a, b)):
        import dask.array as dsa

        return dsa.where(cond, a, b)
    return np.where(cond, a, b)


def _isfinite(a):
    if type(a).__module__.startswith("dask"):
        import dask.array as dsa

        return dsa.isfinite(a)
    return np.isfinite(a)


# ---------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------
_REMOTE = ("/vsi", "http://", "https://", "s3://", "gs://")


def _paths(paths: Any) -> list[Any]:
    """Local paths as ``Path`` (checked to exist); remote URLs / GDAL virtual paths kept as strings."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    out = [str(p) if str(p).startswith(_REMOTE) else Path(p).expanduser() for p in paths]
    if not out:
        raise InputError("no files given")
    missing = [str(p) for p in out if isinstance(p, Path) and not p.exists()]
    if missing:
        raise InputError(f"file(s) not found: {missing}")
    return out


def _year_of(path: Any) -> int | None:
    """A year (1900-2199) in the file name or its three nearest parent directories."""
    from pathlib import PurePosixPath

    path = PurePosixPath(str(path))
    for part in (path.stem, *[p.name for p in list(path.parents)[:3]]):
        m = re.search(r"(?<!\d)(19\d\d|2[01]\d\d)(?!\d)", part)
        if m:
            return int(m.group(1))
    return None


def _years(paths: list[Path], years: Sequence[int] | int | None) -> list[int] | None:
    if years is not None:
        ys = [int(years)] if np.isscalar(years) else [int(y) for y in years]  # type: ignore[arg-type]
        if len(ys) != len(paths):
            raise InputError(f"{len(paths)} file(s) but {len(ys)} year(s); give one year per file")
        return ys
    found = [_year_of(p) for p in paths]
    if len(paths) == 1 and found[0] is None:
        return None
    if any(y is None for y in found):
        raise InputError(
            "cannot tell the year of " + ", ".join(str(p) for p, y in zip(paths, found) if y is None)
            + "; pass years=[...] (one per file)"
        )
    return found  # type: ignore[return-value]


def _stack_years(cubes: list[xr.DataArray], years: list[int] | None) -> xr.DataArray:
    if years is None:
        return cubes[0]
    if len(set(years)) != len(years):
        raise InputError(f"years repeat ({years}); give one file per year for one tile or scene")
    ref = cubes[0]
    for c, y in zip(cubes[1:], years[1:]):
        same = (
            c.shape == ref.shape
            and np.array_equal(c["x"].values, ref["x"].values)
            and np.array_equal(c["y"].values, ref["y"].values)
            and (c.rio.crs == ref.rio.crs)
        )
        if not same:
            raise InputError(
                f"the file for {y} is not on the grid of the file for {years[0]}: stack only files of "
                "the same tile or scene (mosaic other tiles afterwards, per UTM zone)"
            )
    order = np.argsort(years)
    time = np.array([f"{years[i]}-01-01" for i in order], dtype="datetime64[ns]")
    out = xr.concat([cubes[i] for i in order], dim="time", coords="minimal", compat="override", join="override")
    out = out.assign_coords(time=("time", time), year=("time", np.array([years[i] for i in order])))
    return out.transpose("time", "embedding", "y", "x")


def _attrs(product: str, version: str, long_name: str, licence: str, attribution: str, bands, sources) -> dict:
    from ._version import __version__

    return {
        "long_name": long_name,
        "xeofm:model": product,
        "xeofm:spec_hash": product_hash(product, version),
        "xeofm:product_version": version,
        "xeofm:version": __version__,
        "xeofm:output": "pixel",
        "xeofm:cell_size": 1,
        "xeofm:stride": 1,
        "xeofm:bands": list(bands),
        "xeofm:licence": licence,
        "xeofm:attribution": attribution,
        "xeofm:source": [str(s) for s in sources],
    }


def _north_up(da: xr.DataArray) -> xr.DataArray:
    """Flip a bottom-up raster (increasing y) to north-up, lazily, keeping the transform right."""
    ys = da["y"].values
    if ys.size < 2 or ys[1] < ys[0]:
        return da
    flipped = da.isel(y=slice(None, None, -1))
    return flipped.rio.write_transform(flipped.rio.transform(recalc=True))


def _chunks(chunks: int | dict | None, ny: int, nx: int) -> tuple[int, int]:
    if chunks is None:
        return ny, nx
    if isinstance(chunks, dict):
        return int(chunks.get("y", ny)), int(chunks.get("x", nx))
    return int(chunks), int(chunks)


# ---------------------------------------------------------------------------------------
# AlphaEarth Foundations Satellite Embedding
# ---------------------------------------------------------------------------------------
def open_alphaearth(
    paths: str | Path | Sequence[str | Path],
    *,
    years: int | Sequence[int] | None = None,
    chunks: int | dict | None = 1024,
    north_up: bool = True,
    version: str = "v1-annual",
) -> xr.DataArray:
    """Open AlphaEarth Satellite Embedding COGs (or their VRTs) as a lazy embedding cube.

    Parameters
    ----------
    paths
        One file, or one file per year of the same tile (same grid). Local
        paths or anything rasterio opens (``/vsis3/...``, ``https://...``).
    years
        Year of each file. Default: a 4-digit year in the file name or its
        directories (``.../annual/2023/10N/...``); a single file without one gives
        a cube without ``time``.
    chunks
        Dask chunk side in pixels along ``y``/``x`` (all 64 channels in one chunk).
    north_up
        Flip "bottom-up" files (positive y resolution) to the usual orientation.
    version
        Dataset version recorded in the provenance (``xeofm:spec_hash``).

    Returns
    -------
    xarray.DataArray
        ``([time,] embedding=64, y, x)`` float32, NaN where masked (``-128``).
    """
    import rioxarray

    files = _paths(paths)
    ys = _years(files, years)
    cubes = []
    for f in files:
        raw = rioxarray.open_rasterio(str(f), mask_and_scale=False, lock=False)
        nb, ny, nx = raw.shape
        if nb != 64 or raw.dtype != np.int8:
            raise InputError(
                f"{f} has {nb} band(s) of {raw.dtype}; AlphaEarth Satellite Embedding files have 64 int8 bands"
            )
        cy, cx = _chunks(chunks, ny, nx)
        raw = raw.chunk({"band": -1, "y": cy, "x": cx})
        names = _band_names(raw, 64, "A")
        data = dequantize_alphaearth(raw.data, axis=0)
        da = xr.DataArray(
            data,
            dims=("embedding", "y", "x"),
            coords={"embedding": np.arange(64), "y": raw["y"], "x": raw["x"], "spatial_ref": raw["spatial_ref"]},
            name="embeddings",
        )
        da.encoding["grid_mapping"] = "spatial_ref"
        if north_up:
            da = _north_up(da)
        da.attrs = _attrs(
            ALPHAEARTH, version, "AlphaEarth Foundations satellite embedding", "CC-BY-4.0", _AEF_ATTRIBUTION,
            names, [f],
        )
        cubes.append(da)
    out = _stack_years(cubes, ys)
    out.attrs = {**cubes[0].attrs, "xeofm:source": [str(f) for f in files]}
    out.encoding["grid_mapping"] = "spatial_ref"
    return out


def _band_names(raw: xr.DataArray, n: int, prefix: str) -> list[str]:
    desc = raw.attrs.get("long_name")
    if isinstance(desc, (list, tuple)) and len(desc) == n and all(desc):
        return [str(d) for d in desc]
    return [f"{prefix}{i:02d}" for i in range(n)]


# ---------------------------------------------------------------------------------------
# TESSERA
# ---------------------------------------------------------------------------------------
_LANDMASK_DIRS = ("global_0.1_degree_tiff_all", "landmasks")
_NPY_CACHE: dict[str, np.ndarray] = {}
_NPY_LOCK = threading.Lock()


class _LazyNpy:
    """A ``.npy`` file seen as an array; slices are read through a per-process memory map.

    Picklable and small, so dask graphs (and distributed workers) carry the
    path, not the data.
    """

    def __init__(self, path: str):
        self.path = str(path)
        arr = np.load(self.path, mmap_mode="r")
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.ndim = arr.ndim

    def _arr(self) -> np.ndarray:
        with _NPY_LOCK:
            a = _NPY_CACHE.get(self.path)
            if a is None:
                a = _NPY_CACHE[self.path] = np.load(self.path, mmap_mode="r")
        return a

    def __getitem__(self, key):
        return np.asarray(self._arr()[key])

    def __getstate__(self):
        return {"path": self.path, "shape": self.shape, "dtype": self.dtype, "ndim": self.ndim}

    def __setstate__(self, state):
        self.__dict__.update(state)


def _find_landmask(npy: Path) -> Path | None:
    name = npy.stem + ".tiff"
    for parent in npy.parents:
        for d in _LANDMASK_DIRS:
            for cand in (parent / d / name, parent / d / (npy.stem + ".tif")):
                if cand.is_file():
                    return cand
    for cand in (npy.with_suffix(".tiff"), npy.with_suffix(".tif")):
        if cand.is_file():
            return cand
    return None


def _grid_of(path: Path, landmask, crs, transform, shape) -> tuple[Any, Any]:
    """CRS and affine transform of a TESSERA ``.npy`` tile."""
    if crs is not None and transform is not None:
        from affine import Affine

        t = transform if isinstance(transform, Affine) else Affine(*transform)
        return crs, t
    lm = Path(landmask).expanduser() if landmask is not None else _find_landmask(path)
    if lm is None or not lm.is_file():
        raise InputError(
            f"no landmask GeoTIFF found for {path.name}: TESSERA .npy tiles carry no georeferencing. "
            f"Pass landmask='.../global_0.1_degree_tiff_all/{path.stem}.tiff' (geotessera downloads it "
            "next to the embeddings), or crs=... and transform=..."
        )
    import rasterio

    with rasterio.open(lm) as src:
        if (src.height, src.width) != tuple(shape):
            raise InputError(
                f"landmask {lm} is {src.height} x {src.width} pixels but the tile {path.name} is "
                f"{shape[0]} x {shape[1]}; is it the landmask of another tile?"
            )
        return src.crs, src.transform


def _open_tessera_npy(path: Path, scales, landmask, crs, transform, chunks) -> xr.DataArray:
    import dask.array as dsa
    import rioxarray  # noqa: F401  (registers .rio)

    sp = Path(scales).expanduser() if scales is not None else path.with_name(path.stem + "_scales.npy")
    if not sp.is_file():
        raise InputError(f"scales file {sp} not found: TESSERA tiles need grid_<lon>_<lat>_scales.npy next to the .npy")
    q = _LazyNpy(str(path))
    s = _LazyNpy(str(sp))
    if q.ndim != 3 or q.dtype != np.int8:
        raise InputError(f"{path} holds {q.dtype} {q.shape}; a TESSERA tile is int8 (H, W, 128)")
    H, W, D = q.shape
    if s.shape not in ((H, W), (H, W, D)):
        raise InputError(f"scales {sp} have shape {s.shape}; expected ({H}, {W}) or ({H}, {W}, {D}) for tile {q.shape}")
    crs_, t = _grid_of(path, landmask, crs, transform, (H, W))
    cy, cx = _chunks(chunks, H, W)
    qd = dsa.from_array(q, chunks=(cy, cx, D), name=f"tessera-q-{_token(path)}", asarray=False)
    sd = dsa.from_array(s, chunks=(cy, cx) + ((D,) if len(s.shape) == 3 else ()), name=f"tessera-s-{_token(sp)}",
                        asarray=False)
    qd = qd.transpose(2, 0, 1)
    sd = sd.transpose(2, 0, 1) if sd.ndim == 3 else sd
    data = dequantize_tessera(qd, sd)
    xs = t.c + t.a * (np.arange(W) + 0.5)
    ys = t.f + t.e * (np.arange(H) + 0.5)
    da = xr.DataArray(data, dims=("embedding", "y", "x"), coords={"embedding": np.arange(D), "y": ys, "x": xs},
                      name="embeddings")
    da = da.rio.write_crs(crs_).rio.write_transform(t)
    da.encoding["grid_mapping"] = "spatial_ref"
    return da


def _token(path: Path) -> str:
    st = path.stat()
    return hashlib.sha1(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]


def _open_tessera_tiff(path: Path, chunks) -> xr.DataArray:
    import rioxarray

    raw = rioxarray.open_rasterio(str(path), mask_and_scale=False, lock=False)
    nb, ny, nx = raw.shape
    cy, cx = _chunks(chunks, ny, nx)
    raw = raw.chunk({"band": -1, "y": cy, "x": cx})
    data = raw.data
    if raw.dtype == np.int8:
        raise InputError(
            f"{path} holds int8 values without scales; read the .npy tile with its _scales.npy, or a "
            "de-quantised float32 GeoTIFF export"
        )
    data = data.astype(np.float32)
    nodata = raw.rio.nodata
    if nodata is not None and not np.isnan(nodata):
        data = _where(data == np.float32(nodata), np.float32(np.nan), data)
    import dask.array as dsa

    data = dsa.where(dsa.isfinite(data), data, np.float32(np.nan))
    da = xr.DataArray(
        data,
        dims=("embedding", "y", "x"),
        coords={"embedding": np.arange(nb), "y": raw["y"], "x": raw["x"], "spatial_ref": raw["spatial_ref"]},
        name="embeddings",
    )
    da.encoding["grid_mapping"] = "spatial_ref"
    return _north_up(da)


def open_tessera(
    paths: str | Path | Sequence[str | Path],
    *,
    scales: str | Path | None = None,
    landmask: str | Path | None = None,
    crs: Any = None,
    transform: Any = None,
    years: int | Sequence[int] | None = None,
    chunks: int | dict | None = 1024,
    version: str = "v1",
) -> xr.DataArray:
    """Open TESSERA embedding tiles as a lazy embedding cube.

    Parameters
    ----------
    paths
        A tile ``grid_<lon>_<lat>.npy`` (int8 ``(H, W, 128)``, with
        ``grid_<lon>_<lat>_scales.npy`` beside it), or a de-quantised GeoTIFF
        export; or one such file per year of the same tile.
    scales
        The scales file, when it is not beside a single ``.npy``.
    landmask
        The tile's landmask GeoTIFF, which gives the UTM CRS and transform of
        ``.npy`` tiles. Default: ``<ancestor>/global_0.1_degree_tiff_all/<grid>.tiff``
        (geotessera's layout), ``<ancestor>/landmasks/<grid>.tiff``, or a ``.tiff``
        next to the ``.npy``.
    crs, transform
        Georeferencing given directly instead of a landmask (``transform`` an
        ``affine.Affine`` or its six coefficients).
    years
        Year of each file; default from the path (``.../2024/grid_.../grid_....npy``).
    chunks
        Dask chunk side in pixels along ``y``/``x``.
    version
        TESSERA release recorded in the provenance (``"v1"``, ``"v1.1"``...): never mix releases.

    Returns
    -------
    xarray.DataArray
        ``([time,] embedding=128, y, x)`` float32; NaN over water (NaN scale) and
        where the product has no data yet (+inf scale).
    """
    files = _paths(paths)
    if scales is not None and len(files) > 1:
        raise InputError("scales= applies to a single tile; for several years keep each _scales.npy beside its .npy")
    ys = _years(files, years)
    cubes = []
    for f in files:
        suffix = Path(str(f)).suffix.lower()
        if suffix == ".npy":
            if not isinstance(f, Path):
                raise InputError(f"{f}: TESSERA .npy tiles are read from local files; download them first (geotessera)")
            da = _open_tessera_npy(f, scales, landmask, crs, transform, chunks)
        elif suffix in (".tif", ".tiff"):
            da = _open_tessera_tiff(f, chunks)
        else:
            raise InputError(f"{f}: expected a TESSERA .npy tile or a GeoTIFF export")
        cubes.append(da)
    out = _stack_years(cubes, ys)
    D = out.sizes["embedding"]
    out.attrs = _attrs(TESSERA, version, "TESSERA embedding", "CC0-1.0", _TESSERA_ATTRIBUTION,
                       [f"dim{i:03d}" for i in range(D)], files)
    out.encoding["grid_mapping"] = "spatial_ref"
    return out
