"""Loading cubes from STAC: static catalogs, STAC APIs and lists of items.

:func:`load_stac` finds items (a ``pystac-client`` search for API URLs, a local
filter for static catalogs and item lists), resolves the requested bands by
name or STAC common name, checks that the items share one CRS (or reprojects
them to ``crs=``), loads them lazily with ``odc-stac`` and applies the cloud /
nodata mask the collection provides. The result is a dask-backed
``(time, band, y, x)`` DataArray ready for ``cube.eofm.embed(model)``.

Nothing here touches the network unless ``source`` is a URL.
"""

from __future__ import annotations

import os
from collections import Counter
from datetime import datetime as _dt
from datetime import timezone
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from .errors import EmptySearchError, InputError, MissingBandsError, StacError

if TYPE_CHECKING:  # pragma: no cover
    import pystac
    import xarray as xr

__all__ = ["load_stac", "find_items", "resolve_stac_bands", "MASKS"]

BBox = Sequence[float]
DatetimeLike = Any


# --------------------------------------------------------------------------------------
# Masks the collections provide
# --------------------------------------------------------------------------------------
def _scl_valid(scl: np.ndarray) -> np.ndarray:
    # Sentinel-2 L2A scene classification: 0 no data, 1 saturated or defective, 3 cloud shadow,
    # 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus
    return ~np.isin(scl, (0, 1, 3, 8, 9, 10))


def _qa_pixel_valid(qa: np.ndarray) -> np.ndarray:
    # Landsat Collection 2 QA_PIXEL bits: 0 fill, 1 dilated cloud, 2 cirrus, 3 cloud, 4 cloud shadow
    return (np.asarray(qa).astype(np.int64) & 0b11111) == 0


def _fmask_valid(fm: np.ndarray) -> np.ndarray:
    # HLS v2 Fmask bits: 1 cloud, 2 adjacent to cloud or shadow, 3 cloud shadow; 255 is fill
    f = np.asarray(fm).astype(np.int64)
    return ((f & 0b1110) == 0) & (f != 255)


#: Mask bands recognised by ``mask="auto"``: normalised name -> (description, validity function).
MASKS: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "scl": ("Sentinel-2 scene classification (drops no data, saturated, cloud shadow, clouds, cirrus)", _scl_valid),
    "qapixel": ("Landsat Collection 2 QA_PIXEL (drops fill, dilated cloud, cirrus, cloud, shadow)", _qa_pixel_valid),
    "fmask": ("HLS Fmask (drops cloud, adjacent cloud/shadow, shadow, fill)", _fmask_valid),
}


def _mask_key(name: str) -> str:
    return str(name).lower().replace("_", "").replace("-", "")


# --------------------------------------------------------------------------------------
# Finding items
# --------------------------------------------------------------------------------------
def _to_utc(t: Any) -> _dt:
    import pandas as pd

    ts = pd.Timestamp(t)
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.to_pydatetime()


def _parse_side(s: str, end: bool) -> _dt | None:
    import pandas as pd

    s = s.strip()
    if s in ("", ".."):
        return None
    if len(s) <= 10 and "T" not in s:  # a date, month or year: the whole period
        try:
            per = pd.Period(s)
        except (ValueError, TypeError):
            per = None
        if per is not None:
            return _to_utc(per.end_time if end else per.start_time)
    return _to_utc(s)


def parse_datetime(value: DatetimeLike) -> tuple[_dt | None, _dt | None]:
    """``(start, end)`` in UTC from a STAC datetime query.

    Accepts ``"2020"``, ``"2020-05"``, ``"2020-05-17"``, full timestamps,
    ranges ``"2020-01-01/2020-06-30"`` with open ends (``"../2020"``), a
    ``(start, end)`` pair or a single datetime. Dates, months and years stand
    for the whole period.
    """
    if value is None:
        return None, None
    try:
        if isinstance(value, (tuple, list)):
            if len(value) != 2:
                raise ValueError("give (start, end)")
            a, b = value
            start = None if a is None else (_parse_side(a, False) if isinstance(a, str) else _to_utc(a))
            stop = None if b is None else (_parse_side(b, True) if isinstance(b, str) else _to_utc(b))
        elif isinstance(value, str):
            if "/" in value:
                a, b = value.split("/", 1)
                start, stop = _parse_side(a, False), _parse_side(b, True)
            else:
                start, stop = _parse_side(value, False), _parse_side(value, True)
        else:
            start = stop = _to_utc(value)
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"cannot read datetime={value!r} ({exc}); use e.g. '2020', '2020-05', '2020-01-01/2020-06-30' or '../2020-12-31'"
        ) from None
    if start is not None and stop is not None and stop < start:
        raise InputError(f"datetime={value!r} ends before it starts")
    return start, stop


def _datetime_query(value: DatetimeLike) -> str | None:
    """The datetime as a STAC API query string."""
    if value is None or isinstance(value, str):
        return value
    start, stop = parse_datetime(value)
    fmt = lambda t: ".." if t is None else t.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    return f"{fmt(start)}/{fmt(stop)}"


def _item_interval(item: "pystac.Item") -> tuple[_dt | None, _dt | None]:
    props = item.properties
    s, e = props.get("start_datetime"), props.get("end_datetime")
    if s or e:
        return (_to_utc(s) if s else None), (_to_utc(e) if e else None)
    if item.datetime is not None:
        t = _to_utc(item.datetime)
        return t, t
    return None, None


def _bbox_intersects(a: Sequence[float] | None, b: Sequence[float]) -> bool:
    if a is None:
        return True
    ax0, ay0, ax1, ay1 = a[0], a[1], a[-2] if len(a) == 4 else a[3], a[-1] if len(a) == 4 else a[4]
    bx0, by0, bx1, by1 = b
    return not (ax1 < bx0 or bx1 < ax0 or ay1 < by0 or by1 < ay0)


def _check_bbox(bbox: BBox | None) -> tuple[float, float, float, float] | None:
    if bbox is None:
        return None
    try:
        w, s, e, n = (float(v) for v in bbox)
    except (TypeError, ValueError):
        raise InputError(f"bbox must be four numbers (west, south, east, north) in degrees, got {bbox!r}") from None
    if not (-180 <= w <= 180 and -180 <= e <= 180 and -90 <= s <= n <= 90) or w > e:
        raise InputError(
            f"bbox={bbox!r} is not (west, south, east, north) in longitude/latitude degrees with west <= east "
            "and south <= north"
        )
    return w, s, e, n


def _filter_static(
    items: Iterable["pystac.Item"], *, bbox, start, stop, collections: set[str] | None, ids: set[str] | None
) -> list["pystac.Item"]:
    out = []
    for it in items:
        if collections is not None and (it.collection_id or "") not in collections:
            continue
        if ids is not None and it.id not in ids:
            continue
        if bbox is not None and it.bbox is not None and not _bbox_intersects(it.bbox, bbox):
            continue
        if start is not None or stop is not None:
            a, b = _item_interval(it)
            if a is None and b is None:
                continue
            if stop is not None and a is not None and a > stop:
                continue
            if start is not None and b is not None and b < start:
                continue
        out.append(it)
    return out


def _describe_query(bbox, datetime, collections, query) -> str:
    parts = []
    if collections:
        parts.append(f"collections={list(collections)}")
    if bbox is not None:
        parts.append(f"bbox={list(bbox)}")
    if datetime is not None:
        parts.append(f"datetime={datetime!r}")
    if query:
        parts.append(f"query={query!r}")
    return ", ".join(parts) or "no filters"


def _is_url(s: str) -> bool:
    return s.split("://", 1)[0].lower() in ("http", "https") and "://" in s


def find_items(
    source: Any,
    *,
    bbox: BBox | None = None,
    datetime: DatetimeLike = None,
    collections: Sequence[str] | str | None = None,
    ids: Sequence[str] | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
) -> list["pystac.Item"]:
    """STAC items of ``source`` matching the filters, sorted by time.

    Parameters
    ----------
    source
        A STAC API URL (searched with pystac-client), a path or URL of a static
        catalog / collection / item / item collection, a pystac object, a
        ``pystac_client.Client``, or an iterable of items.
    bbox
        ``(west, south, east, north)`` in degrees.
    datetime
        A STAC datetime range (see :func:`parse_datetime`).
    collections, ids
        Keep only these collections / item ids.
    query
        STAC API ``query`` filter (API searches only).
    max_items
        Stop after this many items.

    Returns
    -------
    list of pystac.Item

    Raises
    ------
    StacError
        When the source cannot be opened or searched.
    EmptySearchError
        When nothing matches.
    """
    import pystac

    bbox = _check_bbox(bbox)
    start, stop = parse_datetime(datetime)
    if isinstance(collections, str):
        collections = [collections]
    colset = set(collections) if collections else None
    idset = set(ids) if ids else None
    what = _describe_query(bbox, datetime, collections, query)

    items: list[pystac.Item]
    client = None
    static: Any = None
    if isinstance(source, (str, os.PathLike)):
        src = os.fspath(source)
        if _is_url(src):
            client = _open_client(src)
        else:
            if not os.path.exists(src):
                raise StacError(
                    f"STAC source {src!r} does not exist; give a catalog.json / collection / item file, "
                    "a STAC API URL or a list of pystac items"
                )
            try:
                static = pystac.read_file(src)
            except Exception as exc:
                raise StacError(f"cannot read STAC file {src!r}: {type(exc).__name__}: {exc}") from exc
    elif type(source).__name__ == "Client" and type(source).__module__.startswith("pystac_client"):
        client = source
    else:
        static = source

    if client is not None:
        if _searchable(client):
            items = _search(client, src=getattr(client, "self_href", None) or str(source), bbox=bbox,
                            datetime=_datetime_query(datetime), collections=collections, ids=ids, query=query,
                            max_items=max_items)
            items = _filter_static(items, bbox=None, start=start, stop=stop, collections=colset, ids=idset)
        else:  # a static catalog served over HTTP
            static = client
    if static is not None:
        if query:
            raise InputError("query= filters need a STAC API; filter static catalogs with bbox/datetime/collections")
        if isinstance(static, pystac.Item):
            pool: Iterable[pystac.Item] = [static]
        elif isinstance(static, pystac.ItemCollection):
            pool = list(static)
        elif isinstance(static, pystac.Catalog):  # catalogs and collections
            try:
                pool = list(static.get_items(recursive=True))
            except Exception as exc:
                raise StacError(f"cannot read the items of catalog {static.id!r}: {type(exc).__name__}: {exc}") from exc
        else:
            try:
                pool = list(static)
            except TypeError:
                raise InputError(
                    f"cannot use {type(source).__name__} as a STAC source; give a URL, a path, a pystac "
                    "Catalog/Collection/ItemCollection or a list of pystac.Item"
                ) from None
            bad = [type(i).__name__ for i in pool if not isinstance(i, pystac.Item)]
            if bad:
                raise InputError(f"expected pystac.Item objects, got {sorted(set(bad))}")
        items = _filter_static(pool, bbox=bbox, start=start, stop=stop, collections=colset, ids=idset)
        for it in items:
            try:
                it.make_asset_hrefs_absolute()
            except Exception:
                pass
    if max_items is not None:
        items = items[: int(max_items)]
    if not items:
        raise EmptySearchError(
            f"the STAC source {_source_name(source)} has no items matching {what}. Widen bbox/datetime, check "
            "the collection names, or look at the catalog first (e.g. with pystac)."
        )

    def sort_key(it):
        a, _ = _item_interval(it)
        return (a or _dt.min.replace(tzinfo=timezone.utc), it.id)

    return sorted(items, key=sort_key)


def _source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return repr(os.fspath(source))
    return type(source).__name__


def _open_client(url: str) -> Any:
    try:
        from pystac_client import Client
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise StacError("searching a STAC API needs pystac-client (pip install pystac-client)") from exc
    try:
        return Client.open(url)
    except Exception as exc:
        raise StacError(
            f"cannot open STAC source {url!r}: {type(exc).__name__}: {exc}. Check the URL and the network, "
            "or use a local static catalog / a list of pystac items."
        ) from exc


def _searchable(client: Any) -> bool:
    try:
        from pystac_client import ConformanceClasses

        return bool(client.conforms_to(ConformanceClasses.ITEM_SEARCH))
    except Exception:
        return hasattr(client, "search")


def _search(client: Any, *, src: str, bbox, datetime, collections, ids, query, max_items) -> list["pystac.Item"]:
    kw: dict[str, Any] = {"bbox": bbox, "datetime": datetime, "collections": collections, "ids": ids, "query": query}
    kw = {k: v for k, v in kw.items() if v is not None}
    if max_items is not None:
        kw["max_items"] = int(max_items)
    try:
        return list(client.search(**kw).items())
    except Exception as exc:
        raise StacError(
            f"the STAC search at {src} failed: {type(exc).__name__}: {exc}. Check the URL, the network, and "
            "the search parameters (collection names, bbox, datetime)."
        ) from exc


# --------------------------------------------------------------------------------------
# Bands
# --------------------------------------------------------------------------------------
def _collection_metadata(items: Sequence["pystac.Item"]) -> dict[str, Any]:
    from odc.stac import extract_collection_metadata

    out: dict[str, Any] = {}
    for it in items:
        cid = it.collection_id or "_"
        if cid not in out:
            try:
                out[cid] = extract_collection_metadata(it)
            except Exception as exc:
                raise StacError(
                    f"cannot read the raster bands of item {it.id!r} (collection {cid!r}): {type(exc).__name__}: {exc}"
                ) from exc
    return out


def _names_of(md: Any) -> list[str]:
    names = list(md.all_bands)
    for alias in md.meta.aliases:
        if alias not in names:
            names.append(alias)
    return names


def _candidates(name: str) -> list[str]:
    from .bands import _COMMON_SYNONYMS, normalize_name

    key = normalize_name(name)
    out = [name]
    for common, syns in _COMMON_SYNONYMS.items():
        if key in {normalize_name(s) for s in syns}:
            out += [common, *syns]
    return out


def resolve_stac_bands(items: Sequence["pystac.Item"], bands: Sequence[str]) -> dict[str, str]:
    """Map each requested band to a name odc-stac can load for every item.

    Names are matched as given, then by asset / ``eo:bands`` name and
    ``eo:common_name`` ignoring case and zero padding (``B4`` = ``B04``), then
    by common-name synonyms (``swir1`` = ``swir16``). ``"red"`` finds the
    ``B04`` asset of a Sentinel-2 collection through its common name.

    Returns
    -------
    dict
        ``{requested: loadable name}``.

    Raises
    ------
    MissingBandsError
        Naming each band not found and the bands the items have.
    """
    from .bands import normalize_name

    mds = _collection_metadata(items)
    chosen: dict[str, str] = {}
    missing: list[str] = []
    for req in bands:
        hit = None
        for cand in _candidates(str(req)):
            ok = True
            name_everywhere = None
            for md in mds.values():
                names = _names_of(md)
                if cand in names:
                    found = cand
                else:
                    by_norm = {normalize_name(n): n for n in names}
                    found = by_norm.get(normalize_name(cand))
                if found is None or (name_everywhere is not None and found != name_everywhere):
                    ok = False
                    break
                name_everywhere = found
            if ok and name_everywhere is not None:
                hit = name_everywhere
                break
        if hit is None:
            missing.append(str(req))
        else:
            chosen[str(req)] = hit
    if missing:
        avail = {cid: _names_of(md) for cid, md in mds.items()}
        raise MissingBandsError(
            f"the STAC items lack bands {missing} (matched by name, eo:bands name and eo:common_name). "
            f"Bands available: {avail}. Ask for those names (or their common names)"
            + (
                f", or pick one collection with collections=[...] (CLI --collections): the items come from "
                f"{len(avail)} collections {sorted(avail)}."
                if len(avail) > 1
                else "."
            )
        )
    dup = [n for n, c in Counter(chosen.values()).items() if c > 1]
    if dup:
        raise MissingBandsError(f"several requested bands resolve to the same STAC band {dup}: {chosen}")
    return chosen


def _find_mask_band(mds: Mapping[str, Any], mask: Any) -> tuple[str, Callable] | None:
    if mask is None or mask is False:
        return None
    if mask is True:
        mask = "auto"
    if not isinstance(mask, str):
        raise InputError(f"mask must be 'auto', False or the name of a mask band ({', '.join(MASKS)}), got {mask!r}")
    found = None
    for md in mds.values():
        names = _names_of(md)
        here = None
        for n in names:
            k = _mask_key(n)
            if k in MASKS and (mask == "auto" or k == _mask_key(mask) or n == mask):
                here = n
                break
        if here is None:
            if mask != "auto":
                raise InputError(
                    f"mask={mask!r}: the items have no such mask band (bands: {names}); known masks: "
                    + "; ".join(f"{k}: {v[0]}" for k, v in MASKS.items())
                )
            return None  # a collection without a mask: do not mask the others by halves
        if found is not None and found != here:
            return None
        found = here
    if found is None:
        return None
    return found, MASKS[_mask_key(found)][1]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------
def _crs_counts(items: Sequence["pystac.Item"], bands: Sequence[str]) -> Counter:
    from odc.stac import parse_items

    counts: Counter = Counter()
    try:
        for pi in parse_items(items):
            c = pi.crs(list(bands))
            counts[str(c) if c is not None else "unknown"] += 1
    except Exception:
        return Counter()
    return counts


def load_stac(
    source: Any,
    bands: Sequence[str],
    *,
    bbox: BBox | None = None,
    datetime: DatetimeLike = None,
    collections: Sequence[str] | str | None = None,
    ids: Sequence[str] | None = None,
    query: Mapping[str, Any] | None = None,
    max_items: int | None = None,
    crs: Any = None,
    resolution: float | None = None,
    groupby: str | None = "solar_day",
    resampling: str = "nearest",
    chunks: Mapping[str, int] | None = None,
    mask: str | bool | None = "auto",
    fail_on_error: bool = True,
    **odc_kwargs: Any,
) -> "xr.DataArray":
    """Load a lazy ``(time, band, y, x)`` cube from STAC.

    Parameters
    ----------
    source
        A STAC API URL (searched with pystac-client), a static catalog /
        collection / item file or URL (e.g. :func:`xeofm.data.catalog_path`),
        a pystac object or a list of items. Offline with local catalogs.
    bands
        Band names or STAC common names, e.g. ``["red", "green", "blue",
        "nir"]``; ``"red"`` loads ``B04`` from Sentinel-2 collections. The
        band coordinate of the result holds these names.
    bbox
        ``(west, south, east, north)`` in degrees: search filter and the
        extent loaded.
    datetime
        Search filter: ``"2020"``, ``"2020-06"``, ``"2020-01-01/2020-06-30"``...
    collections, ids, query, max_items
        Further search filters (``query`` needs a STAC API).
    crs, resolution
        Output grid. Items in several CRSs are refused unless ``crs`` is
        given (they are then all reprojected onto one grid). ``resolution``
        is in units of the CRS (metres for UTM / EPSG:3035).
    groupby
        How items become time steps: ``"solar_day"`` (default: mosaic the
        scenes of one pass), ``"time"`` or ``"id"``.
    resampling
        Resampling of data bands when reprojecting; mask bands always use
        nearest.
    chunks
        Dask chunks, default ``{"time": 1, "y": 2048, "x": 2048}``.
    mask
        ``"auto"`` (default) applies the collection's cloud / quality mask
        when it has one (Sentinel-2 ``SCL``, Landsat ``QA_PIXEL``, HLS
        ``Fmask``; see :data:`MASKS`); masked pixels get the bands' nodata
        value (NaN when the bands have none). ``False`` disables masking;
        a band name forces that mask.
    fail_on_error
        Passed to :func:`odc.stac.load`: fail on unreadable assets (default)
        or fill them with nodata.
    **odc_kwargs
        Further arguments for :func:`odc.stac.load` (``anchor``, ``geobox``,
        ``patch_url``, ``stac_cfg``...).

    Returns
    -------
    xarray.DataArray
        Dask-backed ``(time, band, y, x)``, named ``"stac"``, with the CRS in
        ``spatial_ref`` and the shared nodata value in ``attrs["nodata"]``;
        ``attrs["xeofm:stac_items"]`` counts the items loaded and the
        ``stac_band`` coordinate names the STAC band used for each band.

    Raises
    ------
    StacError
        The source cannot be opened or searched, or the items are in several
        CRSs and no ``crs`` was given.
    EmptySearchError
        Nothing matches the filters.
    MissingBandsError
        A band is not in the items.
    """
    import odc.stac
    import xarray as xr

    if isinstance(bands, str):
        bands = [bands]
    bands = [str(b) for b in bands]
    if not bands:
        raise InputError("give the bands to load, e.g. bands=['red', 'green', 'blue', 'nir']")
    items = find_items(source, bbox=bbox, datetime=datetime, collections=collections, ids=ids, query=query,
                       max_items=max_items)
    names = resolve_stac_bands(items, bands)
    mds = _collection_metadata(items)
    mask_band = _find_mask_band(mds, mask)
    load_names = list(names.values())
    if mask_band is not None and mask_band[0] not in load_names:
        load_names.append(mask_band[0])

    if crs is None:
        counts = _crs_counts(items, load_names)
        known = {k: v for k, v in counts.items() if k != "unknown"}
        if len(known) > 1:
            raise StacError(
                f"the {len(items)} STAC items are in {len(known)} different CRSs: "
                + ", ".join(f"{_short_crs(k)} ({v} items)" for k, v in sorted(known.items(), key=lambda kv: -kv[1]))
                + ". Pass crs='EPSG:...' (and resolution=...) to reproject them all onto one grid "
                "(e.g. crs='EPSG:3035' for Europe), or narrow the search to one CRS/zone."
            )
    kw: dict[str, Any] = dict(odc_kwargs)
    if crs is not None:
        kw["crs"] = crs
    if resolution is not None:
        kw["resolution"] = resolution
    if bbox is not None:
        kw["bbox"] = tuple(_check_bbox(bbox))  # type: ignore[arg-type]
    res_map: dict[str, str] = {"*": resampling}
    if mask_band is not None:
        res_map[mask_band[0]] = "nearest"
    try:
        ds = odc.stac.load(
            items, bands=load_names, groupby=groupby, resampling=res_map,
            chunks=dict(chunks) if chunks is not None else {"time": 1, "y": 2048, "x": 2048},
            fail_on_error=fail_on_error, **kw,
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise StacError(f"odc-stac cannot load these items: {type(exc).__name__}: {exc}") from exc

    nodata = {b: ds[n].attrs.get("nodata") for b, n in names.items()}
    shared = set(v for v in nodata.values())
    common = next(iter(shared)) if len(shared) == 1 else None
    if common is not None and isinstance(common, float) and np.isnan(common):
        common = None
    if mask_band is not None:
        valid = xr.apply_ufunc(mask_band[1], ds[mask_band[0]], dask="parallelized", output_dtypes=[bool])
    else:
        valid = None
    arrays = []
    for b, n in names.items():
        v = ds[n]
        if valid is not None:
            if common is not None:
                v = v.where(valid, other=np.asarray(common, dtype=v.dtype))
            else:
                v = v.astype(np.float32).where(valid)
        v = v.copy(deep=False)
        v.attrs = {}
        arrays.append(v)
    if valid is not None and common is None:
        arrays = [a.astype(np.float32) for a in arrays]
    cube = xr.concat(arrays, dim="band", coords="minimal", compat="override", join="exact")
    canonical = [_canonical(mds, n) for n in names.values()]
    cube = cube.assign_coords(band=list(names), stac_band=("band", canonical))
    cube = cube.transpose("time", "band", ...)
    cube.name = "stac"
    cube.attrs = {"xeofm:stac_items": len(items)}
    if mask_band is not None:
        cube.attrs["xeofm:stac_mask"] = mask_band[0]
    if common is not None:
        cube.attrs["nodata"] = common
    if "spatial_ref" in cube.coords:
        cube.encoding["grid_mapping"] = "spatial_ref"
    return cube


def _canonical(mds: Mapping[str, Any], name: str) -> str:
    """The asset (or ``asset.index``) a band name refers to, e.g. ``"red"`` -> ``"B04"``."""
    outs = set()
    for md in mds.values():
        try:
            outs.add(md.canonical_name(name))
        except (ValueError, KeyError):
            outs.add(name)
    return outs.pop() if len(outs) == 1 else name


def _short_crs(s: str) -> str:
    try:
        from odc.geo import CRS

        c = CRS(s)
        return f"EPSG:{c.epsg}" if c.epsg else s[:40]
    except Exception:
        return s[:40]
