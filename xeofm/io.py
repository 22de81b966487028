"""Streaming, resumable zarr output.

:func:`to_zarr` writes a lazy cube (typically ``cube.eofm.embed(model)``) to a
zarr store block by block, so that a job over a continent survives crashes,
killed workers and full disks:

1. **Template first.** The store's metadata, coordinates, CRS (``spatial_ref``)
   and provenance are written before any data, with a *manifest* (see below).
2. **Region writes aligned to zarr chunks.** Every dask block of the cube is
   one *region*. Zarr chunks divide the regions, so each task writes whole
   chunks that no other task touches; the task then leaves a small *done
   marker* in the store (``_xeofm/done/...``). Rewriting a region is
   idempotent.
3. **Resume.** ``resume=True`` reads the markers, skips the regions that are
   done and computes only the others (the dask graph is culled to them). A
   killed or interrupted job re-run this way gives byte-identical arrays to an
   uninterrupted run.
4. **Manifest.** ``_xeofm/manifest.json`` (and the group attribute
   ``xeofm:manifest``) records the model, its spec hash, the engine parameters
   (output mode, overlap, bands, amp...), the grid (dims, shape, a fingerprint
   of the coordinates and CRS) and the storage options. Its hash is the job's
   identity: resuming a store made by another model or with other parameters
   is refused (:class:`~xeofm.errors.StoreMismatchError`) unless
   ``overwrite=True``.

Storage types
-------------
``dtype="float32"`` (the default for floating-point cubes) stores the values as
they are (NaN where the input was invalid); integer cubes such as label cubes keep
their dtype and nodata label by default. ``"float16"`` halves the size (about 3 significant digits;
values beyond +-65504 saturate to +-65504). ``"int8"`` quarters it with one
linear quantisation for the whole store, written as CF attributes so that
xarray decodes it transparently::

    scale_factor = (hi - lo) / 254          add_offset = (hi + lo) / 2
    stored = clip(round((x - add_offset) / scale_factor), -127, 127)
    decoded = stored * scale_factor + add_offset     (error <= scale_factor / 2)
    NaN -> _FillValue = -128 (decoded back to NaN)

``(lo, hi)`` is ``int8_range`` when given, else estimated once, when the store
is created, from a few blocks spread over the cube (their finite minimum and
maximum widened by 25 %; values outside saturate). The range is kept in the
manifest, so a resumed job quantises exactly like the first run.

The job runs on the caller's scheduler (threads by default, a
``distributed.Client`` when one is active); xeofm never creates a cluster.
Tasks carry the store location and encoding, never data or models.
"""

from __future__ import annotations

import dataclasses
import errno as _errno
import hashlib
import json
import math
import os
import shutil
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence

import numpy as np

from .errors import (
    IncompleteStoreError,
    InputError,
    JobError,
    StoreConflictError,
    StoreMismatchError,
    StoreWriteError,
)

if TYPE_CHECKING:  # pragma: no cover
    import xarray as xr

    from .progress import ProgressSpec

__all__ = [
    "StoreLocation",
    "ZarrJob",
    "to_zarr",
    "open_embeddings",
    "read_manifest",
    "store_progress",
]

#: Folder inside the store holding the manifest and the done markers.
PROGRESS_DIR = "_xeofm"
MANIFEST_FILE = f"{PROGRESS_DIR}/manifest.json"
DONE_DIR = f"{PROGRESS_DIR}/done"
#: Held by the process running a job on a local store (host, pid, start time).
LOCK_FILE = f"{PROGRESS_DIR}/lock"
COMPLETE_FILE = f"{PROGRESS_DIR}/complete.json"
#: Group attribute holding the manifest (JSON text).
MANIFEST_ATTR = "xeofm:manifest"
FORMAT = "xeofm-zarr/1"
#: Default upper bound of one zarr chunk (bytes, in the storage dtype).
CHUNK_TARGET_BYTES = 64 * 2**20
#: Regions per batch when ``regions_per_submit`` is not given (tiles of 16 x 16 regions).
DEFAULT_REGIONS_PER_SUBMIT = 256

StorageDtype = Literal["float32", "float16", "int8"]
_INT8_FILL = -128
_FLOAT16_MAX = float(np.finfo(np.float16).max)
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata")


# --------------------------------------------------------------------------------------
# Store locations: local folders and fsspec URLs
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives: a local folder or an fsspec URL (``s3://``, ``gs://``...).

    Small and picklable: tasks carry it to write chunks and markers.

    Parameters
    ----------
    url
        Absolute local path, or a URL with a protocol.
    storage_options
        fsspec options for URLs (credentials, endpoint...), as sorted pairs.
    """

    url: str
    storage_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(cls, store: "str | os.PathLike[str] | StoreLocation", storage_options: Mapping[str, Any] | None = None) -> "StoreLocation":
        """Normalise a path, URL or location."""
        if isinstance(store, StoreLocation):
            return store
        if isinstance(store, os.PathLike):
            store = os.fspath(store)
        if not isinstance(store, str) or not store:
            raise InputError(
                f"the output store must be a local path or a URL such as 's3://bucket/emb.zarr', got {store!r}"
            )
        if store.startswith("file://"):
            store = store[len("file://") :]
        if "://" in store:
            return cls(store.rstrip("/"), tuple(sorted((storage_options or {}).items())))
        return cls(str(Path(store).expanduser().absolute()), ())

    @property
    def is_local(self) -> bool:
        """Whether the store is a local folder."""
        return "://" not in self.url

    def _fs(self) -> tuple[Any, str]:
        from fsspec.core import url_to_fs

        return url_to_fs(self.url, **dict(self.storage_options))

    def _path(self, key: str) -> str:
        return f"{self.url}/{key}" if key else self.url

    def exists(self, key: str = "") -> bool:
        """Whether ``key`` (a file or folder under the store) exists."""
        if self.is_local:
            return os.path.exists(self._path(key))
        fs, root = self._fs()
        return bool(fs.exists(f"{root}/{key}" if key else root))

    def read(self, key: str) -> bytes | None:
        """Contents of ``key``, or ``None`` when it does not exist."""
        try:
            if self.is_local:
                with open(self._path(key), "rb") as f:
                    return f.read()
            fs, root = self._fs()
            return fs.cat_file(f"{root}/{key}")
        except (FileNotFoundError, NotADirectoryError):
            return None

    def write(self, key: str, data: bytes) -> None:
        """Write ``key`` atomically (local: temporary file + rename)."""
        if self.is_local:
            path = self._path(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial"
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                os.replace(tmp, path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
            return
        fs, root = self._fs()
        fs.pipe_file(f"{root}/{key}", data)

    def listdir(self, key: str) -> list[str]:
        """Names directly under the folder ``key`` (empty when it does not exist)."""
        if self.is_local:
            try:
                return sorted(n for n in os.listdir(self._path(key)) if not n.endswith(".partial"))
            except (FileNotFoundError, NotADirectoryError):
                return []
        fs, root = self._fs()
        try:
            return sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(f"{root}/{key}", detail=False))
        except FileNotFoundError:
            return []

    def is_empty(self) -> bool:
        """True when nothing (or an empty folder) is at the location."""
        if self.is_local:
            p = Path(self.url)
            return not p.exists() or (p.is_dir() and not any(p.iterdir()))
        return not self.listdir("")

    def looks_like_zarr(self) -> bool:
        """Whether the location holds zarr metadata at its root."""
        if self.is_local:
            return Path(self.url).is_dir() and any((Path(self.url) / m).exists() for m in _ZARR_MARKERS)
        return any(m in set(self.listdir("")) for m in _ZARR_MARKERS)

    def remove(self) -> None:
        """Delete the store (only called on zarr stores or empty folders)."""
        if self.is_local:
            p = Path(self.url)
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
            return
        fs, root = self._fs()
        if fs.exists(root):
            fs.rm(root, recursive=True)

    def clean_partials(self) -> None:
        """Remove temporary ``*.partial`` files left by a killed local writer."""
        if not self.is_local or not os.path.isdir(self.url):
            return
        for dirpath, _dirs, files in os.walk(self.url):
            for name in files:
                if name.endswith(".partial"):
                    try:
                        os.unlink(os.path.join(dirpath, name))
                    except OSError:
                        pass

    def xarray_args(self) -> dict[str, Any]:
        """``store``/``storage_options`` keyword arguments for xarray and zarr."""
        if self.is_local:
            return {"store": self.url}
        return {"store": self.url, "storage_options": dict(self.storage_options)}

    def __str__(self) -> str:
        return self.url


# --------------------------------------------------------------------------------------
# Encoding of values into the storage dtype (runs inside tasks)
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Quantisation:
    """How values are stored: dtype and, for int8, the CF scale and offset."""

    dtype: str
    scale_factor: float | None = None
    add_offset: float | None = None

    @property
    def fill_value(self) -> float | int | None:
        """The stored value of NaN (``None``: the native fill of the dtype)."""
        if self.dtype == "int8":
            return _INT8_FILL
        if np.dtype(self.dtype).kind == "f":
            return float("nan")
        return None

    def encode(self, block: np.ndarray) -> np.ndarray:
        """Values in the storage dtype (see the module notes)."""
        x = np.asarray(block)
        if self.dtype == "int8":
            assert self.scale_factor is not None and self.add_offset is not None
            q = (x.astype(np.float64) - float(np.float32(self.add_offset))) / float(np.float32(self.scale_factor))
            nan = ~np.isfinite(q)
            q = np.clip(np.rint(np.where(nan, 0.0, q)), -127, 127).astype(np.int8)
            q[nan] = _INT8_FILL
            return q
        if self.dtype == "float16":
            x = x.astype(np.float32, copy=False)
            return np.clip(x, -_FLOAT16_MAX, _FLOAT16_MAX).astype(np.float16)
        return x.astype(self.dtype, copy=False)

    def encoding(self) -> dict[str, Any]:
        """xarray ``encoding`` entries for the variable."""
        enc: dict[str, Any] = {"dtype": self.dtype}
        fill = self.fill_value
        if fill is not None:
            enc["_FillValue"] = fill
            if self.dtype == "int8":  # zarr's own fill (unwritten chunks) decodes to NaN too
                enc["fill_value"] = fill
        if self.dtype == "int8":
            # float32 attributes: xarray decodes to float32, exactly as encode() quantised
            enc["scale_factor"] = np.float32(self.scale_factor)
            enc["add_offset"] = np.float32(self.add_offset)
        return enc


_ARRAYS: dict[tuple[str, str, str], Any] = {}
_ARRAYS_LOCK = threading.Lock()


def _open_zarr_array(location: StoreLocation, variable: str, key: str) -> Any:
    """The store's zarr array, opened once per process (and per job identity)."""
    ck = (location.url, variable, key)
    arr = _ARRAYS.get(ck)
    if arr is None:
        import zarr

        with _ARRAYS_LOCK:
            arr = _ARRAYS.get(ck)
            if arr is None:
                kw = location.xarray_args()
                arr = zarr.open_array(kw.pop("store"), path=variable, mode="r+", **kw)
                _ARRAYS[ck] = arr
    return arr


@dataclass(frozen=True)
class RegionWriter:
    """Writes one region (a dask block) into the store and marks it done.

    Carried by the write tasks: a location, a variable name and the encoding.
    """

    location: StoreLocation
    variable: str
    key: str
    zarr_chunks: tuple[int, ...]
    quant: Quantisation

    def marker(self, loc: Sequence[tuple[int, int]]) -> str:
        """Done-marker name of the region at array location ``loc`` (zarr chunk ranges)."""
        return _ranges_key([(a // c, -(-b // c)) for (a, b), c in zip(loc, self.zarr_chunks)])

    def write(self, block: Any, loc: Sequence[tuple[int, int]]) -> None:
        """Encode ``block``, write it at ``loc`` and leave the done marker."""
        if type(block).__module__.split(".")[0] == "cupy":
            block = block.get()
        data = self.quant.encode(block)
        arr = _open_zarr_array(self.location, self.variable, self.key)
        arr[tuple(slice(a, b) for a, b in loc)] = data
        note = {"region": [list(r) for r in loc], "time": time.time()}
        self.location.write(f"{DONE_DIR}/{self.marker(loc)}", json.dumps(note).encode())


def _write_block(block: Any, writer: RegionWriter, block_info: dict | None = None) -> np.ndarray:
    loc = block_info[0]["array-location"]  # type: ignore[index]
    writer.write(block, loc)
    return np.ones((1,) * block.ndim, dtype=np.int8)


def _ranges_key(ranges: Sequence[tuple[int, int]]) -> str:
    return ".".join(f"{a}-{b}" for a, b in ranges)


def _parse_ranges_key(name: str) -> list[tuple[int, int]] | None:
    try:
        return [tuple(int(v) for v in part.split("-")) for part in name.split(".")]  # type: ignore[misc]
    except ValueError:
        return None


# --------------------------------------------------------------------------------------
# Manifest
# --------------------------------------------------------------------------------------
def _jsonable(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    return str(v)


def _coords_fingerprint(arr: "xr.DataArray") -> str:
    h = hashlib.sha256()
    for name in sorted(map(str, arr.coords)):
        c = arr.coords[name]
        h.update(f"{name}|{c.dims}|{c.dtype}".encode())
        vals = np.asarray(c.values)
        if vals.dtype.kind == "M":
            vals = vals.astype("datetime64[ns]").view(np.int64)
        if vals.dtype.kind in "biufcm":
            h.update(np.ascontiguousarray(vals).tobytes())
        else:
            h.update(json.dumps(_jsonable(vals.tolist())).encode())
        h.update(json.dumps(_jsonable(dict(c.attrs)), sort_keys=True).encode())
    return h.hexdigest()[:16]


def _crs_wkt(arr: "xr.DataArray") -> str | None:
    try:
        import rioxarray  # noqa: F401

        crs = arr.rio.crs
    except Exception:
        return None
    return None if crs is None else crs.to_wkt()


def _identity(arr: "xr.DataArray", variable: str, dtype: str, int8_range: tuple[float, float] | None) -> dict[str, Any]:
    params = {
        str(k): _jsonable(v)
        for k, v in arr.attrs.items()
        if str(k).startswith("xeofm:") and k not in ("xeofm:version", MANIFEST_ATTR)
    }
    return {
        "format": FORMAT,
        "variable": variable,
        "model": params.get("xeofm:model"),
        "spec_hash": params.get("xeofm:spec_hash"),
        "parameters": params,
        "storage": {"dtype": dtype, "int8_range": None if int8_range is None else [float(v) for v in int8_range]},
        "grid": {
            "dims": [str(d) for d in arr.dims],
            "shape": [int(s) for s in arr.shape],
            "source_dtype": str(arr.dtype),
            "coords": _coords_fingerprint(arr),
            "crs": _crs_wkt(arr),
        },
    }


def _identity_key(identity: Mapping[str, Any]) -> str:
    blob = json.dumps(identity, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:20]


def _describe_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    diffs = []
    if old.get("model") != new.get("model"):
        diffs.append(f"model {old.get('model')!r} (store) vs {new.get('model')!r} (this job)")
    elif old.get("spec_hash") != new.get("spec_hash"):
        diffs.append(f"spec hash {old.get('spec_hash')} (store) vs {new.get('spec_hash')} (this job): the model's "
                     "weights, bands or normalisation differ")
    op, np_ = old.get("parameters", {}), new.get("parameters", {})
    for k in sorted(set(op) | set(np_)):
        if k in ("xeofm:model", "xeofm:spec_hash"):
            continue
        if op.get(k) != np_.get(k):
            diffs.append(f"{k.replace('xeofm:', '')} {op.get(k)!r} (store) vs {np_.get(k)!r} (this job)")
    if old.get("storage") != new.get("storage"):
        diffs.append(f"storage {old.get('storage')} (store) vs {new.get('storage')} (this job)")
    og, ng = old.get("grid", {}), new.get("grid", {})
    for k in ("dims", "shape", "source_dtype"):
        if og.get(k) != ng.get(k):
            diffs.append(f"{k} {og.get(k)} (store) vs {ng.get(k)} (this job)")
    if og.get("crs") != ng.get("crs"):
        diffs.append("the CRS differs")
    elif og.get("coords") != ng.get("coords") and not any(d.startswith(("shape", "dims")) for d in diffs):
        diffs.append("the coordinates differ (another area, dates or grid)")
    if old.get("variable") != new.get("variable"):
        diffs.append(f"variable {old.get('variable')!r} (store) vs {new.get('variable')!r} (this job)")
    return "; ".join(diffs) or "the job identity differs"


def read_manifest(store: "str | os.PathLike[str] | StoreLocation", storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    """The manifest of a store written by :func:`to_zarr`, or ``None``.

    Parameters
    ----------
    store
        Local path or URL of the store.
    storage_options
        fsspec options for URLs.

    Returns
    -------
    dict or None
        ``None`` when the store does not exist or was not (fully) created by
        :func:`to_zarr`.
    """
    loc = StoreLocation.of(store, storage_options)
    raw = loc.read(MANIFEST_FILE)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return None


def _group_manifest(loc: StoreLocation) -> dict[str, Any] | None:
    """The manifest in the group attributes (present once the template was written)."""
    import zarr

    try:
        g = zarr.open_group(mode="r", **loc.xarray_args())
        raw = g.attrs.get(MANIFEST_ATTR)
    except Exception:
        return None
    if raw is None:
        return None
    try:
        return json.loads(raw) if isinstance(raw, str) else dict(raw)
    except ValueError:
        return None


def _done_chunks(loc: StoreLocation) -> set[tuple[int, ...]]:
    done: set[tuple[int, ...]] = set()
    import itertools

    for name in loc.listdir(DONE_DIR):
        ranges = _parse_ranges_key(name)
        if ranges is None:
            continue
        done.update(itertools.product(*(range(a, b) for a, b in ranges)))
    return done


def store_progress(store: "str | os.PathLike[str] | StoreLocation", storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """How far the job writing ``store`` got.

    Returns
    -------
    dict
        ``chunks_done``, ``chunks_total``, ``complete`` (bool) and the
        ``manifest`` (``None`` if the store was not made by :func:`to_zarr`).
    """
    loc = StoreLocation.of(store, storage_options)
    man = read_manifest(loc)
    if man is None:
        return {"chunks_done": 0, "chunks_total": None, "complete": False, "manifest": None}
    shape, zc = man["grid"]["shape"], man["zarr_chunks"]
    total = int(np.prod([-(-s // c) for s, c in zip(shape, zc)]))
    done = len(_done_chunks(loc))
    return {"chunks_done": done, "chunks_total": total, "complete": loc.exists(COMPLETE_FILE) or done >= total, "manifest": man}


# --------------------------------------------------------------------------------------
# Chunk layout
# --------------------------------------------------------------------------------------
def _boundaries(chunks: Sequence[int]) -> list[int]:
    return list(np.cumsum(chunks[:-1])) if len(chunks) > 1 else []


def _choose_zarr_chunks(
    chunks: tuple[tuple[int, ...], ...], shape: tuple[int, ...], dims: tuple, itemsize: int, target: int
) -> tuple[int, ...]:
    """Largest zarr chunks dividing every region boundary, at most ``target`` bytes when possible."""
    zc = []
    for c, n in zip(chunks, shape):
        b = _boundaries(c)
        g = 0
        for v in b:
            g = math.gcd(g, int(v))
        zc.append(int(g) if g else max(int(n), 1))
    # halve the spatial (last two) sizes while too big and still dividing the region grid
    spatial = [i for i in range(len(zc))][-2:]
    while int(np.prod(zc)) * itemsize > target:
        cand = [i for i in spatial if zc[i] % 2 == 0 and zc[i] >= 32]
        if not cand:
            break
        i = max(cand, key=lambda j: zc[j])
        zc[i] //= 2
    return tuple(zc)


def _aligned(chunks: tuple[tuple[int, ...], ...], zc: Sequence[int]) -> bool:
    return all(all(v % z == 0 for v in _boundaries(c)) for c, z in zip(chunks, zc))


def _align_chunks(chunks: tuple[tuple[int, ...], ...], zc: Sequence[int], shape: Sequence[int]) -> tuple[tuple[int, ...], ...]:
    """Regular chunks made of whole zarr chunks, about as large as the current ones."""
    out = []
    for c, z, n in zip(chunks, zc, shape):
        if all(v % z == 0 for v in _boundaries(c)):
            out.append(tuple(c))
            continue
        size = max(z, int(round(max(c) / z)) * z)
        k, rest = divmod(n, size)
        out.append(tuple([size] * k + ([rest] if rest else [])))
    return tuple(out)


# --------------------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------------------
@dataclass
class ZarrJob:
    """A resumable write of one lazy cube into a zarr store (see :func:`to_zarr`).

    Attributes
    ----------
    store
        Where the store is.
    variable
        Name of the array in the store.
    manifest
        The job's manifest (identity, zarr chunks, quantisation...).
    regions_total
        Number of regions (dask blocks) of the cube.
    regions_done_before
        Regions already written when the job was set up (``resume=True``).
    regions_written
        Regions written by :meth:`compute` so far.
    seconds
        Wall time spent in :meth:`compute`.
    """

    store: StoreLocation
    variable: str
    manifest: dict[str, Any]
    regions_total: int
    regions_done_before: int
    todo: list[tuple[int, ...]]
    status: Any = field(repr=False)  # dask array of write tasks, one per region
    resources: Mapping[str, float] | None = None
    regions_written: int = 0
    seconds: float = 0.0
    _hlg: Any = field(default=None, repr=False)

    @property
    def complete(self) -> bool:
        """Whether every region is written."""
        return self.regions_done_before + self.regions_written >= self.regions_total

    @property
    def key(self) -> str:
        """The job identity (hash of model, spec hash, parameters, grid and storage)."""
        return str(self.manifest["key"])

    def _graph_for(self, keys: list) -> Any:
        """The graph computing ``keys`` (write tasks), culled to their regions.

        Blockwise fusion is done once for the whole job and the fused graph is
        kept, so each batch only pays for culling. The result is a
        HighLevelGraph: layer annotations (GPU resources) survive on a cluster.
        """
        from dask.blockwise import optimize_blockwise

        if self._hlg is None:
            hlg = self.status.__dask_graph__()
            if self.resources:
                hlg = _annotate_layers(hlg, {"resources": dict(self.resources)})
            # the write layer is the only output: one of its keys stands for all
            first = (self.status.name, *([0] * self.status.ndim))
            self._hlg = optimize_blockwise(hlg, keys=[first])
        return self._hlg.cull(set(keys))

    def compute(
        self,
        *,
        progress: "ProgressSpec" = False,
        scheduler: Any = None,
        regions_per_submit: int | None = None,
    ) -> "ZarrJob":
        """Write the regions that are not done yet.

        Regions are submitted in batches of compact tiles (see
        ``regions_per_submit``); each batch's graph is culled to its regions.
        On a distributed cluster the next batch is submitted while the current
        one runs, so workers never wait on the client.

        Parameters
        ----------
        progress
            ``True`` for a text progress bar over regions (on stderr; works
            with local and distributed schedulers), ``"dask"`` for dask's own
            bars (:class:`dask.diagnostics.ProgressBar` locally,
            :func:`distributed.progress` on a cluster), or a callable
            ``fn(regions_done, regions_total)``.
        scheduler
            Dask scheduler: ``None`` (the configured one, else the default
            distributed client, else threads), a name or a Client.
        regions_per_submit
            Regions per batch, grouped in square tiles of blocks. Within a
            batch every input block is read once, but an input block must stay
            in memory until all its neighbours used it as a halo, so the memory
            front grows with the batch's width. Tiles bound it (flat memory
            however large the cube) at the price of reading the input blocks
            along tile edges twice (about ``4 / sqrt(regions_per_submit)`` more
            reads). Default :data:`DEFAULT_REGIONS_PER_SUBMIT` (tiles of
            16 x 16 regions, about 25 % more reads on very large cubes, none
            on cubes of fewer regions).

        Returns
        -------
        ZarrJob
            ``self``, with ``regions_written`` and ``seconds`` updated.

        Raises
        ------
        StoreWriteError
            When writing fails (disk full, permission denied...). Finished
            regions are kept: fix the cause and run again with ``resume=True``.
        JobError
            When a distributed job gives up (e.g. workers kept dying).
        """
        from .progress import RegionBar, resolve_scheduler, run_keys

        _get, client = resolve_scheduler(scheduler)
        per = int(regions_per_submit or DEFAULT_REGIONS_PER_SUBMIT)
        if per < 1:
            raise InputError(f"regions_per_submit must be >= 1, got {regions_per_submit}")
        batches = _tile_batches(self.todo, per)
        callbacks = []
        bar = None
        if progress is True:
            bar = RegionBar(self.regions_total, what="regions")
            callbacks.append(bar)
        elif callable(progress):
            callbacks.append(progress)

        def report(done: int, total: int) -> None:
            for cb in callbacks:
                cb(done, total)

        t0 = time.perf_counter()
        lock = _WriterLock(self.store)
        lock.__enter__()
        try:
            if client is not None:
                self._compute_distributed(client, batches, report if callbacks else None, dask_bar=progress == "dask")
            else:
                for batch in batches:
                    keys = [(self.status.name, *idx) for idx in batch]
                    run_keys(
                        self._graph_for(keys), keys, scheduler=scheduler,
                        progress=report if callbacks else (progress == "dask"),
                        total=self.regions_total, offset=self.regions_done_before + self.regions_written,
                    )
                    self._mark_written(batch)
        except OSError as exc:
            raise self._write_error(exc) from exc
        except Exception as exc:
            if type(exc).__name__ in ("KilledWorker", "FutureCancelledError", "CancelledError"):
                raise JobError(
                    f"the job writing {self.store} stopped: {type(exc).__name__}: {exc}. "
                    f"{self._done_note()} Check the workers (memory, logs) and run again with resume=True."
                ) from exc
            raise
        finally:
            lock.__exit__()
            self.seconds += time.perf_counter() - t0
            if bar is not None:
                bar.close()
        if self.complete:
            info = {"regions": self.regions_total, "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
            try:
                self.store.write(COMPLETE_FILE, json.dumps(info).encode())
            except OSError as exc:
                raise self._write_error(exc) from exc
        return self

    def _mark_written(self, batch: Sequence[tuple[int, ...]]) -> None:
        self.regions_written += len(batch)
        done = set(batch)
        self.todo = [idx for idx in self.todo if idx not in done]

    def _compute_distributed(self, client: Any, batches: list, report: Any, dask_bar: bool) -> None:
        """Batches on a cluster, the next one submitted while the current one runs."""
        from collections import deque

        from distributed import as_completed
        from distributed import progress as dist_progress

        inflight: deque = deque()
        done = self.regions_done_before + self.regions_written
        try:
            for batch in [*batches, None]:
                if batch is not None:
                    keys = [(self.status.name, *idx) for idx in batch]
                    futures = client.get(self._graph_for(keys), keys, sync=False)
                    inflight.append((batch, futures))
                    if len(inflight) < 2:
                        continue
                if not inflight:
                    break
                first, futures = inflight[0]
                if dask_bar:
                    dist_progress(futures)
                for fut in as_completed(futures):
                    fut.result()  # raises the task's error
                    done += 1
                    if report is not None:
                        report(done, self.regions_total)
                inflight.popleft()
                self._mark_written(first)
        finally:
            for _, futures in inflight:  # interrupted or failed: cancel what was submitted
                client.cancel([f for f in futures if not f.done()])

    def _done_note(self) -> str:
        try:
            done = len(_done_chunks(self.store))
            shape, zc = self.manifest["grid"]["shape"], self.manifest["zarr_chunks"]
            total = int(np.prod([-(-s // c) for s, c in zip(shape, zc)]))
            return f"{done} of {total} zarr chunks are written and kept."
        except Exception:
            return "Finished regions are kept."

    def _write_error(self, exc: OSError) -> StoreWriteError:
        what = {
            _errno.ENOSPC: "the disk is full",
            _errno.EDQUOT: "the disk quota is exceeded",
            _errno.EACCES: "permission denied",
            _errno.EPERM: "operation not permitted",
            _errno.EROFS: "the file system is read-only",
        }.get(getattr(exc, "errno", None) or -1, f"{type(exc).__name__}")
        err = StoreWriteError(
            f"writing to {self.store} failed: {what} ({exc}). {self._done_note()} "
            "Fix the cause (free space, write permission) and run the same call again with resume=True (--resume)."
        )
        err.errno = getattr(exc, "errno", None)
        return err

    def open(self, **kwargs: Any) -> "xr.DataArray":
        """Open the written array lazily (see :func:`open_embeddings`)."""
        return open_embeddings(self.store, variable=self.variable, **kwargs)

    def __repr__(self) -> str:
        return (
            f"ZarrJob({self.store}, model={self.manifest.get('model')!r}, regions {self.regions_done_before} done "
            f"before + {self.regions_written} written of {self.regions_total}, {self.seconds:.1f} s)"
        )


def _tile_batches(todo: Sequence[tuple[int, ...]], per: int) -> list[list[tuple[int, ...]]]:
    """Split region indices into batches of at most ``per``, each a compact tile along the last two dims."""
    todo = list(todo)
    if len(todo) <= per:
        return [todo] if todo else []
    side = max(1, math.isqrt(per))
    groups: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    for idx in todo:
        key = (*idx[:-2], idx[-2] // side, idx[-1] // side) if len(idx) >= 2 else tuple(idx)
        groups.setdefault(key, []).append(idx)
    return [groups[key] for key in sorted(groups)]


def _annotate_layers(hlg: Any, annotations: Mapping[str, Any]) -> Any:
    """A copy of ``hlg`` whose model-running and write layers carry ``annotations``."""
    import copy

    from dask.highlevelgraph import HighLevelGraph

    layers = {}
    for name, layer in hlg.layers.items():
        if str(name).startswith("xeofm-"):  # model-running and write layers
            layer = copy.copy(layer)
            layer.annotations = {**(layer.annotations or {}), **annotations}
        layers[name] = layer
    return HighLevelGraph(layers, hlg.dependencies)


def _as_dataarray(obj: Any) -> "xr.DataArray":
    import xarray as xr

    if isinstance(obj, xr.Dataset):
        names = list(obj.data_vars)
        if len(names) != 1:
            raise InputError(
                f"to_zarr writes one array; the Dataset has {len(names)} variables {names}. "
                "Pass one of them (ds['name'])."
            )
        obj = obj[names[0]]
    if not isinstance(obj, xr.DataArray):
        raise InputError(f"to_zarr expects an xarray DataArray (e.g. cube.eofm.embed(model)), got {type(obj).__name__}")
    return obj


def _estimate_int8_range(arr: Any, n_samples: int = 4) -> tuple[float, float]:
    """Finite min/max of a few blocks spread over the cube, widened by 25 %."""
    import itertools

    import dask

    all_idx = list(itertools.product(*(range(len(c)) for c in arr.chunks)))
    if len(all_idx) <= n_samples:
        picks = all_idx
    else:
        step = len(all_idx) / n_samples
        picks = [all_idx[int((k + 0.5) * step)] for k in range(n_samples)]
    lo, hi = np.inf, -np.inf
    for block in dask.compute(*[arr.blocks[idx] for idx in picks]):
        b = np.asarray(block)
        b = b[np.isfinite(b)]
        if b.size:
            lo, hi = min(lo, float(b.min())), max(hi, float(b.max()))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise InputError(
            "dtype='int8' needs a value range, and the sample blocks hold no finite values (all invalid?). "
            "Pass int8_range=(lo, hi), e.g. int8_range=(-1, 1) for normalised embeddings."
        )
    half = max((hi - lo) / 2, 1e-6)
    mid = (hi + lo) / 2
    return float(mid - 1.25 * half), float(mid + 1.25 * half)


def _quantisation(dtype: str, rng: tuple[float, float] | None) -> Quantisation:
    if dtype != "int8":
        return Quantisation(dtype)
    assert rng is not None
    lo, hi = float(rng[0]), float(rng[1])
    if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):
        raise InputError(f"int8_range must be two finite numbers lo < hi, got {rng!r}")
    return Quantisation(
        "int8", scale_factor=float(np.float32((hi - lo) / 254.0)), add_offset=float(np.float32((hi + lo) / 2.0))
    )


def _write_template(
    loc: StoreLocation, arr: "xr.DataArray", variable: str, zarr_chunks: tuple[int, ...], quant: Quantisation,
    manifest: dict[str, Any],
) -> None:
    import dask.array as dsa
    import xarray as xr

    coords = {}
    for name, c in arr.coords.items():
        coords[name] = c.variable.load() if c.chunks is not None else c.variable
    # one lazy chunk: xarray writes the metadata and never computes it (a chunk per region would make
    # xarray build a store graph as large as the job's)
    dummy = dsa.zeros(arr.shape, chunks=arr.shape, dtype=arr.dtype)
    attrs = {k: _jsonable(v) for k, v in arr.attrs.items()}
    gm = arr.encoding.get("grid_mapping") or arr.attrs.get("grid_mapping")
    if gm is None and "spatial_ref" in arr.coords:
        gm = "spatial_ref"
    if gm is not None and gm in arr.coords:
        attrs["grid_mapping"] = gm
    var = xr.DataArray(dummy, dims=arr.dims, coords=coords, attrs=attrs, name=variable)
    ds = var.to_dataset()
    ds.attrs[MANIFEST_ATTR] = json.dumps(manifest, sort_keys=True)
    ds.attrs["title"] = f"{manifest.get('model') or variable} written by xeofm"
    enc = quant.encoding()
    # CF encoding keys live in the encoding, not the attributes (label cubes carry _FillValue = nodata)
    fill_attr = ds[variable].attrs.pop("_FillValue", None)
    ds[variable].attrs.pop("missing_value", None)
    if fill_attr is not None and "_FillValue" not in enc and np.dtype(quant.dtype).kind in "iu":
        enc["_FillValue"] = np.asarray(fill_attr).astype(quant.dtype).item()
    encoding = {variable: {**enc, "chunks": zarr_chunks}}
    for name in ds.coords:  # coordinates: one chunk each (they are small)
        if ds[name].ndim:
            encoding[str(name)] = {"chunks": tuple(int(s) for s in ds[name].shape)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds.to_zarr(mode="w", compute=False, encoding=encoding, consolidated=True, **loc.xarray_args())


def _remove_store(loc: StoreLocation) -> None:
    if not loc.is_empty() and not loc.looks_like_zarr():
        raise StoreConflictError(
            f"{loc} exists and is not a zarr store; refusing to delete it. Choose another output path."
        )
    loc.remove()


def to_zarr(
    obj: "xr.DataArray | xr.Dataset",
    store: "str | os.PathLike[str]",
    *,
    resume: bool = False,
    overwrite: bool = False,
    dtype: StorageDtype | Literal["auto"] | None = "auto",
    int8_range: tuple[float, float] | None = None,
    chunks: Mapping[str, int] | None = None,
    storage_options: Mapping[str, Any] | None = None,
    compute: bool = True,
    progress: "ProgressSpec" = False,
    scheduler: Any = None,
    resources: Mapping[str, float] | None = None,
    regions_per_submit: int | None = None,
) -> ZarrJob:
    """Write a lazy cube to zarr region by region, resumably.

    Parameters
    ----------
    obj
        Lazy DataArray, typically ``cube.eofm.embed(model)`` (or a Dataset
        with one variable). Each dask block is one region.
    store
        Local path or fsspec URL (``s3://bucket/emb.zarr``).
    resume
        Continue a store made by the same job (same model, spec hash,
        parameters, grid and storage): finished regions are skipped. A store
        made by another job is refused (:class:`StoreMismatchError`).
    overwrite
        Delete an existing store first (only zarr stores or empty folders are
        ever deleted). With ``resume=True`` as well, a store of the same job
        is resumed and any other store replaced.
    dtype
        Storage type: ``"float32"``, ``"float16"`` or ``"int8"`` (CF
        scale/offset quantisation, see the module notes); ``None`` keeps the
        cube's dtype. ``"auto"`` (default): float32 for floating-point cubes,
        the cube's own dtype otherwise (label cubes stay uint8/uint16, with
        their nodata label as ``_FillValue``).
    int8_range
        ``(lo, hi)`` mapped onto the int8 codes -127..127; estimated from a
        few blocks when omitted.
    chunks
        Zarr chunk size per dim (e.g. ``{"x": 64, "y": 64}``). Each must
        divide the region (dask block) boundaries. Default: the region size,
        halved along y/x while a chunk exceeds 64 MiB.
    storage_options
        fsspec options for URLs.
    compute
        Run the job now. With ``False`` the template and manifest are written
        and the job is returned; call :meth:`ZarrJob.compute` later.
    progress
        ``True`` for a progress bar over regions (stderr, any scheduler),
        ``"dask"`` for dask's own bars, or ``fn(regions_done, regions_total)``.
    scheduler
        Dask scheduler (default: configured one, else the active distributed
        client, else threads). xeofm never starts a cluster.
    resources
        Dask worker resources each model-running task needs, e.g.
        ``{"GPU": 1}`` (distributed only): annotates the embedding and
        write tasks, so a worker started with ``--resources GPU=1`` runs one
        at a time.
    regions_per_submit
        See :meth:`ZarrJob.compute`.

    Returns
    -------
    ZarrJob
        The job (already run when ``compute=True``). ``job.open()`` opens the
        result lazily with its CRS.

    Raises
    ------
    StoreConflictError
        The store exists and neither ``resume`` nor ``overwrite`` was given,
        or the path holds something that is not a zarr store.
    StoreMismatchError
        ``resume=True`` on a store made by another model or with other
        parameters, or on a zarr store not made by xeofm.
    StoreWriteError
        Writing failed mid-job (disk full, permission denied); finished
        regions are kept, re-run with ``resume=True``.
    """
    import dask.array as dsa

    arr = _as_dataarray(obj)
    variable = str(arr.name) if arr.name is not None else "embeddings"
    if dtype == "auto":
        dtype = "float32" if np.dtype(arr.dtype).kind == "f" else None
    if dtype is None:
        dtype_s = str(np.dtype(arr.dtype))
    else:
        dtype_s = str(dtype)
        if dtype_s not in ("float32", "float16", "int8"):
            raise InputError(f"dtype must be 'float32', 'float16', 'int8' or None, got {dtype!r}")
        if dtype_s in ("float16", "int8") and np.dtype(arr.dtype).kind != "f":
            raise InputError(
                f"dtype={dtype_s!r} quantises floating point values, but the cube is {arr.dtype}; "
                "use dtype=None to keep it"
            )
    if dtype_s != "int8" and int8_range is not None:
        raise InputError("int8_range is only used with dtype='int8'")
    if not isinstance(arr.data, dsa.Array):
        arr = arr.chunk()
    loc = StoreLocation.of(store, storage_options)
    identity = _identity(arr, variable, dtype_s, int8_range)
    key = _identity_key(identity)

    # -- what is at the location ------------------------------------------------------
    _check_unlocked(loc)  # never replace or resume a store another live job is writing
    state, existing = _store_state(loc, key)
    if state == "ours":
        if resume:
            pass
        elif overwrite:
            state = "replace"
        else:
            prog = store_progress(loc)
            raise StoreConflictError(
                f"{loc} already holds this job's output ({prog['chunks_done']} of {prog['chunks_total']} zarr "
                "chunks written). Pass resume=True (--resume) to finish it, or overwrite=True (--overwrite) to "
                "start again."
            )
    elif state in ("other", "foreign"):
        if overwrite:
            state = "replace"
        elif state == "other":
            assert existing is not None
            raise StoreMismatchError(
                f"{loc} holds the output of another job: {_describe_differences(existing, identity)}. "
                "Outputs of different models or parameters are never mixed: write to another path, or pass "
                "overwrite=True (--overwrite) to replace the store."
            )
        else:
            raise StoreMismatchError(
                f"{loc} is a zarr store that was not written by xeofm.to_zarr (no manifest). Write to another "
                "path, or pass overwrite=True (--overwrite) to replace it."
            )
    elif state == "not-zarr":
        raise StoreConflictError(
            f"{loc} exists and is not a zarr store; refusing to write into it. Choose another output path."
        )

    # -- zarr chunks and the region grid -------------------------------------------------
    itemsize = np.dtype(dtype_s).itemsize
    user_zc = None
    if chunks is not None:
        unknown = set(chunks) - set(map(str, arr.dims))
        if unknown:
            raise InputError(f"chunks names dims {sorted(unknown)} that the array lacks (dims {list(arr.dims)})")
        user_zc = tuple(int(chunks.get(str(d), -1)) for d in arr.dims)
    if state == "ours":
        assert existing is not None
        zc = tuple(existing["zarr_chunks"])
        if user_zc is not None and any(u not in (-1, z) for u, z in zip(user_zc, zc)):
            raise StoreMismatchError(
                f"{loc} was written with zarr chunks {dict(zip(map(str, arr.dims), zc))}, not {dict(chunks or {})}; "
                "resume with the same chunks (or none), or overwrite=True"
            )
    else:
        zc = _choose_zarr_chunks(arr.chunks, arr.shape, arr.dims, itemsize, CHUNK_TARGET_BYTES)
        if user_zc is not None:
            zc = tuple(z if u == -1 else min(u, n) for u, z, n in zip(user_zc, zc, arr.shape))
            bad = [
                f"{d}={z}" for d, z, c in zip(arr.dims, zc, arr.chunks) if any(v % z for v in _boundaries(c)) or z <= 0
            ]
            if bad:
                raise InputError(
                    f"zarr chunks {', '.join(bad)} do not divide the cube's dask blocks "
                    f"{dict(zip(map(str, arr.dims), (c[0] for c in arr.chunks)))}: a region would share chunks with "
                    "its neighbour. Choose divisors of the block size (or rechunk the cube)."
                )
    if not _aligned(arr.chunks, zc):
        arr = arr.chunk(dict(zip(arr.dims, _align_chunks(arr.chunks, zc, arr.shape))))

    # -- create the store (template + manifest) ------------------------------------------
    if state in ("new", "replace", "template"):
        rng = None
        if dtype_s == "int8":
            rng = tuple(int8_range) if int8_range is not None else _estimate_int8_range(arr.data)
        quant = _quantisation(dtype_s, rng)  # type: ignore[arg-type]
        from ._version import __version__

        manifest = {
            **identity,
            "key": key,
            "zarr_chunks": [int(z) for z in zc],
            "quantisation": dataclasses.asdict(quant) | {"fill_value": _jsonable(quant.fill_value)},
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "xeofm_version": __version__,
        }
        if state == "replace" or (state == "template" and not loc.is_empty()):
            _remove_store(loc)
        _write_template(loc, arr, variable, zc, quant, manifest)
        loc.write(MANIFEST_FILE, json.dumps(manifest, indent=1, sort_keys=True).encode())
    else:
        assert existing is not None
        manifest = existing
        q = manifest["quantisation"]
        quant = Quantisation(q["dtype"], q.get("scale_factor"), q.get("add_offset"))
        loc.clean_partials()

    # -- regions still to write ------------------------------------------------------------
    import itertools

    done = _done_chunks(loc) if state == "ours" else set()
    zc_t = tuple(zc)
    starts = [np.concatenate([[0], np.cumsum(c)]) for c in arr.chunks]
    todo: list[tuple[int, ...]] = []
    total = 0
    for idx in itertools.product(*(range(len(c)) for c in arr.chunks)):
        total += 1
        if done:
            ranges = [
                range(int(starts[d][i]) // zc_t[d], -(-int(starts[d][i + 1]) // zc_t[d])) for d, i in enumerate(idx)
            ]
            if all(ch in done for ch in itertools.product(*ranges)):
                continue
        todo.append(idx)

    writer = RegionWriter(loc, variable, key, zc_t, quant)
    token = dsa.core.tokenize(arr.data.name, writer)
    status = dsa.map_blocks(
        _write_block, arr.data, writer=writer, chunks=tuple((1,) * len(c) for c in arr.chunks),
        dtype=np.int8, meta=np.empty((0,) * arr.ndim, dtype=np.int8), name=f"xeofm-write-{token}",
    )
    job = ZarrJob(
        store=loc, variable=variable, manifest=manifest, regions_total=total,
        regions_done_before=total - len(todo), todo=todo, status=status,
        resources=dict(resources) if resources else None,
    )
    if compute:
        job.compute(progress=progress, scheduler=scheduler, regions_per_submit=regions_per_submit)
    return job


def _pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True
    except (TypeError, ValueError):
        return False
    return True


def _lock_holder(loc: StoreLocation) -> dict[str, Any] | None:
    """The live job holding the store's lock (``None``: no lock, or a stale one of a dead local process)."""
    import socket

    if not loc.is_local:
        return None
    path = Path(loc.url) / LOCK_FILE
    try:
        info = json.loads(path.read_text() or "{}")
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        info = {}
    if info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid")):
        return None  # the process that held it is gone (killed, crashed): stale
    return info


def _check_unlocked(loc: StoreLocation) -> None:
    info = _lock_holder(loc)
    if info is not None:
        raise StoreConflictError(
            f"{loc} is being written by another job (pid {info.get('pid', '?')} on {info.get('host', '?')}, since "
            f"{info.get('started', '?')}); two jobs never write one store at once. Wait for it to finish, or, if "
            f"that job is gone, delete {Path(loc.url) / LOCK_FILE} and run again with resume=True."
        )


class _WriterLock:
    """Exclusive lock of a local store for the duration of a job (no-op for object stores)."""

    def __init__(self, loc: StoreLocation) -> None:
        self.loc = loc
        self.path: Path | None = None

    def __enter__(self) -> "_WriterLock":
        import socket

        if not self.loc.is_local:
            return self
        path = Path(self.loc.url) / LOCK_FILE
        path.parent.mkdir(parents=True, exist_ok=True)
        me = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                _check_unlocked(self.loc)  # raises while another job holds it
                path.unlink(missing_ok=True)  # stale: take it over
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.path = path
            return self
        _check_unlocked(self.loc)
        raise StoreConflictError(f"could not lock {self.loc} for writing ({path} keeps reappearing)")

    def __exit__(self, *exc: Any) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)
            self.path = None


def _store_state(loc: StoreLocation, key: str) -> tuple[str, dict[str, Any] | None]:
    """Classify the location: new, ours (same job), other (other job), template, foreign or not-zarr."""
    if loc.is_empty():
        return "new", None
    man = read_manifest(loc)
    if man is not None:
        return ("ours" if man.get("key") == key else "other"), man
    if not loc.looks_like_zarr():
        return "not-zarr", None
    gm = _group_manifest(loc)
    if gm is not None:
        # the template was being written when the job stopped: no region can be done yet
        return ("template" if gm.get("key") == key else "other"), gm
    return "foreign", None


def open_embeddings(
    store: "str | os.PathLike[str]",
    *,
    variable: str | None = None,
    allow_incomplete: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> "xr.DataArray":
    """Open an array written by :func:`to_zarr`, lazily, with its CRS.

    Parameters
    ----------
    store
        Local path or URL.
    variable
        Array name; the only (or ``"embeddings"``) data variable by default.
    allow_incomplete
        Open a store whose job has not finished (unwritten regions read as
        NaN / fill). By default this raises :class:`IncompleteStoreError`.
    storage_options
        fsspec options for URLs.
    **kwargs
        Passed to :func:`xarray.open_zarr` (e.g. ``mask_and_scale=False`` to
        see the stored int8 codes).

    Returns
    -------
    xarray.DataArray
        Dask-backed, with ``spatial_ref`` decoded (``.rio.crs`` works) and the
        provenance attributes; the manifest is in ``attrs["xeofm:manifest"]``.
    """
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    loc = StoreLocation.of(store, storage_options)
    if not loc.exists():
        raise InputError(f"no store at {loc}")
    prog = store_progress(loc)
    if prog["manifest"] is not None and not prog["complete"] and not allow_incomplete:
        raise IncompleteStoreError(
            f"{loc} is not finished: {prog['chunks_done']} of {prog['chunks_total']} zarr chunks are written. "
            "Run the job again with resume=True (--resume) to finish it, or pass allow_incomplete=True."
        )
    kwargs.setdefault("decode_coords", "all")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        ds = xr.open_zarr(**loc.xarray_args(), **kwargs)
    names = list(ds.data_vars)
    if variable is None:
        if prog["manifest"] is not None:
            variable = prog["manifest"]["variable"]
        elif len(names) == 1:
            variable = names[0]
        elif "embeddings" in names:
            variable = "embeddings"
        else:
            raise InputError(f"{loc} holds several arrays {names}; pass variable=...")
    if variable not in ds:
        raise InputError(f"{loc} has no array {variable!r}; it holds {names}")
    da = ds[variable]
    quant = (prog["manifest"] or {}).get("quantisation") or {}
    if quant.get("dtype") == "int8" and da.dtype == np.float64:
        # JSON attributes lose the float32 type of scale_factor/add_offset; decode to float32 as written
        da = da.astype(np.float32, keep_attrs=True)
    if prog["manifest"] is not None:
        da.attrs[MANIFEST_ATTR] = json.dumps(prog["manifest"], sort_keys=True)
    return da
