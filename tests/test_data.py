"""Tests of the shipped sample data (xeofm.data) and its STAC catalog."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xeofm.data as xd

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("rioxarray")
dask_array = pytest.importorskip("dask.array")

SAMPLES = ["landsat", "landsat-224077", "sentinel2", "rgbn"]
EXPECTED = {
    # name: (bands, dtype, epsg, nodata, (height, width))
    "landsat": (("blue", "green", "red"), "uint16", 32621, 0, (1024, 1024)),
    "landsat-224077": (("blue", "green", "red"), "uint16", 32621, 0, (384, 512)),
    "sentinel2": (("blue", "green", "red", "nir", "swir16", "swir22"), "uint16", 8858, 0, (45, 115)),
    "rgbn": (("red", "green", "blue", "nir"), "uint8", 32618, None, (256, 256)),
}


def _all_files() -> list[Path]:
    return sorted(p for p in xd.SAMPLES_DIR.rglob("*") if p.is_file())


# ----------------------------------------------------------------------------- files


def test_list_samples():
    assert xd.list_samples() == SAMPLES


def test_files_exist_and_are_small():
    for name in SAMPLES:
        for path in xd.sample_paths(name):
            assert path.is_file(), path
    assert xd.catalog_path().is_file()
    for kind in ("points", "polygons"):
        assert xd.sample_labels(kind).is_file()
    total = sum(p.stat().st_size for p in _all_files())
    assert total < 8_000_000, f"sample data is {total / 1e6:.2f} MB"


def test_package_data_globs_cover_the_files():
    # pyproject.toml ships samples/*.tif, samples/*.json, samples/*/*.json, samples/*.geojson
    globs = ["*.tif", "*.json", "*/*.json", "*.geojson"]
    shipped = {p for g in globs for p in xd.SAMPLES_DIR.glob(g)}
    for p in _all_files():
        if p.name == "README.md":
            continue
        assert p in shipped, f"{p} is not covered by the package-data globs"


@pytest.mark.parametrize("name", SAMPLES)
def test_files_are_cogs_with_common_band_names(name):
    bands, dtype, epsg, nodata, shape = EXPECTED[name]
    for path in xd.sample_paths(name):
        with rasterio.open(path) as src:
            assert src.descriptions == bands
            assert src.dtypes == (dtype,) * len(bands)
            assert src.crs.to_epsg() == epsg
            assert src.nodata == nodata
            assert (src.height, src.width) == shape
            structure = src.tags(ns="IMAGE_STRUCTURE")
            assert structure.get("LAYOUT") == "COG"
            assert structure.get("COMPRESSION") == "DEFLATE"
            assert structure.get("PREDICTOR") == "2"
            assert all(b == (256, 256) for b in src.block_shapes)
            # whole-pixel crops of the source grids
            t = src.transform
            assert t.b == 0 and t.d == 0 and t.a == -t.e


# ----------------------------------------------------------------------------- cubes


def _file_transform(path):
    with rasterio.open(path) as src:
        return src.crs, src.transform, src.nodata


@pytest.mark.parametrize("name", SAMPLES)
def test_sample_cube_is_lazy_with_metadata(name):
    bands, dtype, epsg, nodata, shape = EXPECTED[name]
    da = xd.sample_cube(name)
    assert isinstance(da, xr.DataArray)
    assert da.name == name
    assert isinstance(da.data, dask_array.Array)
    expected_dims = ("time", "band", "y", "x") if name == "rgbn" else ("band", "y", "x")
    assert da.dims == expected_dims
    assert da.shape[-2:] == shape
    assert [str(b) for b in da.band.values] == list(bands)
    assert da.dtype == np.dtype(dtype)
    assert "spatial_ref" in da.coords
    crs, transform, file_nodata = _file_transform(xd.sample_paths(name)[0])
    assert da.rio.crs is not None
    assert da.rio.crs == crs
    assert da.rio.crs.to_epsg() == epsg
    assert tuple(da.rio.transform()) == pytest.approx(tuple(transform), abs=1e-6)
    assert da.rio.nodata == file_nodata == nodata
    if nodata is not None:
        assert da.attrs["_FillValue"] == nodata


def test_sample_cube_chunks():
    da = xd.sample_cube("landsat", chunks={"x": 256, "y": 512})
    assert da.chunks == ((3,), (512, 512), (256,) * 4)
    eager = xd.sample_cube("landsat", chunks=None)
    assert isinstance(eager.data, np.ndarray)
    np.testing.assert_array_equal(eager.values, da.values)


def test_sample_cube_pixels_match_file():
    da = xd.sample_cube("sentinel2").compute()
    with rasterio.open(xd.sample_path("sentinel2")) as src:
        np.testing.assert_array_equal(da.values, src.read())
    # the fill is 0 and there is valid data
    assert (da == 0).all("band").any()
    assert (da != 0).all("band").any()


def test_landsat_has_fill_and_valid_pixels():
    da = xd.sample_cube("landsat", chunks=None)
    fill = (da == 0).all("band")
    assert 0 < float(fill.mean()) < 0.1
    # no band has a 0 where another has data
    assert bool(((da == 0).any("band") == fill).all())


def test_rgbn_time_axis():
    da = xd.sample_cube("rgbn")
    assert da.sizes["time"] == 4
    assert np.issubdtype(da.time.dtype, np.datetime64)
    times = da.time.values
    assert (np.diff(times) > np.timedelta64(0, "s")).all()
    assert [str(t)[:10] for t in times] == ["2016-01-01", "2016-04-01", "2016-05-17", "2017-02-03"]
    assert isinstance(da.data, dask_array.Array)
    assert da.rio.crs.to_epsg() == 32618
    eager = xd.sample_cube("rgbn", chunks=None)
    assert isinstance(eager.data, np.ndarray)
    with rasterio.open(xd.sample_paths("rgbn")[2]) as src:
        np.testing.assert_array_equal(eager.isel(time=2).values, src.read())


@pytest.mark.parametrize("name", ["landsat", "rgbn"])
def test_sample_dataset(name):
    bands = EXPECTED[name][0]
    ds = xd.sample_dataset(name)
    assert isinstance(ds, xr.Dataset)
    assert list(ds.data_vars) == list(bands)
    da = xd.sample_cube(name)
    for b in bands:
        assert ds[b].dims == tuple(d for d in da.dims if d != "band")
        assert isinstance(ds[b].data, dask_array.Array)
    assert ds.rio.crs == da.rio.crs
    assert ds[bands[0]].rio.nodata == da.rio.nodata
    window = dict(x=slice(0, 7), y=slice(0, 5))
    np.testing.assert_array_equal(ds[bands[-1]].isel(window).values, da.sel(band=bands[-1]).isel(window).values)


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="landsat"):
        xd.sample_cube("modis")
    with pytest.raises(ValueError, match="valid names"):
        xd.sample_dataset("nope")
    with pytest.raises(ValueError):
        xd.sample_path("nope")
    with pytest.raises(ValueError, match="sample_paths"):
        xd.sample_path("rgbn")
    with pytest.raises(ValueError, match="points"):
        xd.sample_labels("lines")


# ----------------------------------------------------------------------------- labels


def test_labels_geojson():
    with rasterio.open(xd.sample_path("landsat")) as src:
        from rasterio.warp import transform_bounds

        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds)
    for kind, geom_type in (("points", "Point"), ("polygons", "Polygon")):
        fc = json.loads(xd.sample_labels(kind).read_text())
        assert fc["type"] == "FeatureCollection"
        assert len(fc["features"]) >= 3
        for feat in fc["features"]:
            assert feat["properties"]["name"] in {"water", "crop", "tree", "developed"}
            assert feat["geometry"]["type"] == geom_type
            coords = np.array(feat["geometry"]["coordinates"], dtype=float).reshape(-1, 2)
            assert (coords[:, 0] >= west).all() and (coords[:, 0] <= east).all()
            assert (coords[:, 1] >= south).all() and (coords[:, 1] <= north).all()


def test_read_labels():
    pytest.importorskip("geopandas")
    gdf = xd.read_labels("polygons")
    assert gdf.crs.to_epsg() == 4326
    assert set(gdf["name"]) == {"water", "crop", "tree", "developed"}
    utm = xd.read_labels("points", crs=xd.sample_cube("landsat").rio.crs)
    assert utm.crs.to_epsg() == 32621


# ----------------------------------------------------------------------------- STAC


def test_stac_catalog_is_relative_and_complete():
    pystac = pytest.importorskip("pystac")
    catalog = pystac.Catalog.from_file(str(xd.catalog_path()))
    collections = {c.id: c for c in catalog.get_children()}
    assert set(collections) == {"landsat8", "sentinel2", "rgbn"}
    n_items = 0
    for name in SAMPLES:
        info = xd.sample_info(name)
        for item_id, fname in zip(info.item_ids, info.files):
            item = collections[info.collection].get_item(item_id)
            assert item is not None, item_id
            n_items += 1
            assert item.datetime is not None
            assert len(item.bbox) == 4 and -180 <= item.bbox[0] < item.bbox[2] <= 180
            asset = item.assets["data"]
            assert Path(asset.get_absolute_href()).resolve() == (xd.SAMPLES_DIR / fname).resolve()
            eo = [(b["name"], b["common_name"]) for b in asset.extra_fields["eo:bands"]]
            assert [c for _, c in eo] == list(info.bands)
            raster = asset.extra_fields["raster:bands"]
            assert [b.get("nodata") for b in raster] == [info.nodata] * len(info.bands)
            assert {b["data_type"] for b in raster} == {info.dtype}
            props = item.properties
            with rasterio.open(xd.SAMPLES_DIR / fname) as src:
                assert props["proj:code"] == f"EPSG:{src.crs.to_epsg()}"
                assert props["proj:shape"] == [src.height, src.width]
                assert props["proj:transform"] == pytest.approx(list(src.transform)[:6])
    assert n_items == 7
    # every href written in the JSON files is relative
    for path in xd.SAMPLES_DIR.rglob("*.json"):
        doc = json.loads(path.read_text())
        hrefs = [link["href"] for link in doc.get("links", [])]
        hrefs += [a["href"] for a in doc.get("assets", {}).values()]
        for href in hrefs:
            if href.startswith("http"):
                continue  # licence link
            assert href.startswith("."), (path, href)
            assert (path.parent / href).resolve().exists(), (path, href)


def test_stac_items_helper():
    pytest.importorskip("pystac")
    items = xd.stac_items()
    assert len(items) == 7
    rgbn = xd.stac_items("rgbn")
    assert [it.id for it in rgbn] == list(xd.sample_info("rgbn").item_ids)
    with pytest.raises(ValueError, match="landsat8"):
        xd.stac_items("modis")


def test_odc_stac_load_matches_sample_cube():
    odc_stac = pytest.importorskip("odc.stac")
    pytest.importorskip("pystac")
    (item,) = [it for it in xd.stac_items("landsat8") if it.id == "landsat8_20200518"]
    ds = odc_stac.load([item], bands=["red", "green", "blue"])
    cube = xd.sample_cube("landsat", chunks=None)
    assert ds.sizes["time"] == 1
    assert ds.odc.geobox.shape == cube.shape[-2:]
    assert tuple(ds.odc.geobox.affine)[:6] == pytest.approx(tuple(cube.rio.transform())[:6])
    for b in ("red", "green", "blue"):
        assert ds[b].dtype == cube.dtype
        np.testing.assert_array_equal(ds[b].isel(time=0).values, cube.sel(band=b).values)

    s2 = odc_stac.load(xd.stac_items("sentinel2"), bands=["swir16", "nir"])
    s2_cube = xd.sample_cube("sentinel2", chunks=None)
    np.testing.assert_array_equal(s2["swir16"].isel(time=0).values, s2_cube.sel(band="swir16").values)
    assert s2.odc.geobox.crs.epsg == 8858


def test_odc_stac_load_time_series_and_mosaic():
    odc_stac = pytest.importorskip("odc.stac")
    pytest.importorskip("pystac")
    rgbn = odc_stac.load(xd.stac_items("rgbn"), bands=["red", "nir"], chunks={})
    assert rgbn.sizes["time"] == 4
    cube = xd.sample_cube("rgbn", chunks=None)
    np.testing.assert_array_equal(rgbn["nir"].values, cube.sel(band="nir").values)
    # both Landsat rows of the pass mosaic into one date covering both crops
    mosaic = odc_stac.load(xd.stac_items("landsat8"), bands=["blue"], groupby="solar_day")
    assert mosaic.sizes["time"] == 1
    a, b = xd.sample_cube("landsat"), xd.sample_cube("landsat-224077")
    assert mosaic.sizes["y"] > a.sizes["y"] and mosaic.sizes["x"] >= a.sizes["x"]
    assert set(b.x.values) <= set(mosaic.x.values)
