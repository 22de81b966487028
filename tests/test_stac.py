"""load_stac on the shipped static catalog and on small synthetic catalogs (no network)."""

from __future__ import annotations

import numpy as np
import pytest

import xeofm
from xeofm import data as xd
from xeofm.errors import EmptySearchError, InputError, MissingBandsError, StacError
from xeofm.stac import find_items, load_stac, parse_datetime

from .conftest import CountingScheduler

pystac = pytest.importorskip("pystac")
pytest.importorskip("odc.stac")
rasterio = pytest.importorskip("rasterio")
dask = pytest.importorskip("dask")

EXT = [
    "https://stac-extensions.github.io/projection/v2.0.0/schema.json",
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]
S2 = {"B02": "blue", "B03": "green", "B04": "red", "B08": "nir"}


def _write_tif(path, arr, crs, transform, nodata):
    with rasterio.open(path, "w", driver="GTiff", width=arr.shape[1], height=arr.shape[0], count=1, dtype=arr.dtype,
                       crs=crs, transform=transform, nodata=nodata) as dst:
        dst.write(arr, 1)


def _make_catalog(root, scenes, shape=(40, 48)):
    """A static catalog with one Sentinel-2-like item per scene: B02/B03/B04/B08 assets (+ SCL).

    ``scenes`` is a list of (id, date, epsg, x0, y0). Returns (catalog path, {item id: {asset: array}}).
    """
    from affine import Affine
    from pyproj import Transformer

    rng = np.random.default_rng(0)
    coll = pystac.Collection(
        "s2-test", "synthetic Sentinel-2-like scenes",
        pystac.Extent(pystac.SpatialExtent([[-180, -90, 180, 90]]), pystac.TemporalExtent([[None, None]])),
    )
    values = {}
    h, w = shape
    for sid, date, epsg, x0, y0 in scenes:
        folder = root / sid
        folder.mkdir(parents=True)
        t = Affine(10.0, 0.0, x0, 0.0, -10.0, y0)
        arrays = {b: rng.integers(1, 10000, size=shape).astype("uint16") for b in S2}
        scl = np.full(shape, 4, dtype="uint8")  # vegetation
        scl[5:12, 7:20] = 9  # cloud, high probability
        scl[20:25, 30:40] = 3  # cloud shadow
        arrays["SCL"] = scl
        values[sid] = arrays
        assets = {}
        for b, arr in arrays.items():
            _write_tif(folder / f"{b}.tif", arr, f"EPSG:{epsg}", t, 0)
            eo = [{"name": b, "common_name": S2[b]}] if b in S2 else [{"name": b}]
            assets[b] = pystac.Asset(
                str(folder / f"{b}.tif"), media_type=pystac.MediaType.GEOTIFF, roles=["data"],
                extra_fields={"eo:bands": eo, "raster:bands": [{"nodata": 0, "data_type": str(arr.dtype)}]},
            )
        tr = Transformer.from_crs(f"EPSG:{epsg}", "EPSG:4326", always_xy=True)
        xs, ys = [x0, x0 + 10 * w, x0 + 10 * w, x0], [y0, y0, y0 - 10 * h, y0 - 10 * h]
        lon, lat = tr.transform(xs, ys)
        bbox = [min(lon), min(lat), max(lon), max(lat)]
        geom = {"type": "Polygon", "coordinates": [[*zip(lon, lat), (lon[0], lat[0])]]}
        item = pystac.Item(
            sid, geom, bbox, pystac.utils.str_to_datetime(f"{date}T10:00:00Z"),
            properties={"proj:code": f"EPSG:{epsg}", "proj:shape": [h, w], "proj:transform": list(t)[:6]},
            stac_extensions=list(EXT),
        )
        for k, a in assets.items():
            item.add_asset(k, a)
        coll.add_item(item)
    cat = pystac.Catalog("test", "synthetic test catalog")
    cat.add_child(coll)
    cat.normalize_hrefs(str(root / "stac"))
    cat.make_all_asset_hrefs_relative()
    cat.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "stac" / "catalog.json", values


@pytest.fixture(scope="module")
def s2cat(tmp_path_factory):
    root = tmp_path_factory.mktemp("s2cat")
    return _make_catalog(root, [("s2a", "2021-06-01", 32633, 500_000.0, 5_000_000.0),
                                ("s2b", "2021-06-11", 32633, 500_000.0, 5_000_000.0)])


def test_sample_catalog_offline_matches_sample_cube():
    with dask.config.set(scheduler=CountingScheduler(0)):  # building the cube reads no pixels
        cube = load_stac(xd.catalog_path(), ["red", "green", "blue", "nir"], collections="rgbn")
    assert cube.dims == ("time", "band", "y", "x") and isinstance(cube.data, dask.array.Array)
    assert list(cube.band.values) == ["red", "green", "blue", "nir"]
    ref = xd.sample_cube("rgbn")
    assert cube.shape == ref.shape and np.array_equal(cube.values, ref.values)
    assert cube.rio.crs == ref.rio.crs
    assert tuple(cube.rio.transform())[:6] == pytest.approx(tuple(ref.rio.transform())[:6])
    # the cube goes straight into the engine
    emb = cube.eofm.embed("xeofm-demo-patchpca-rgbn", device="cpu")
    assert emb.dims == ("time", "embedding", "y", "x") and emb.rio.crs == ref.rio.crs


def test_filters_and_empty_search():
    c = load_stac(xd.catalog_path(), ["red"], collections=["rgbn"], datetime="2016-04-01/2016-06-30")
    assert [str(t)[:10] for t in c.time.values] == ["2016-04-01", "2016-05-17"]
    assert len(find_items(xd.catalog_path(), collections="rgbn", datetime="2016")) == 3
    assert len(find_items(xd.catalog_path(), collections="rgbn", datetime="../2016-04-30")) == 2
    assert len(find_items(xd.catalog_path(), bbox=(-72.3, 18.4, -72.1, 18.6))) == 4
    with pytest.raises(EmptySearchError, match="no items matching.*bbox=\\[0.0, 0.0, 1.0, 1.0\\].*Widen"):
        load_stac(xd.catalog_path(), ["red"], bbox=(0, 0, 1, 1))
    with pytest.raises(EmptySearchError, match="collections=\\['modis'\\]"):
        load_stac(xd.catalog_path(), ["red"], collections="modis")
    with pytest.raises(InputError, match="bbox"):
        load_stac(xd.catalog_path(), ["red"], bbox=(10, 50, 0, 40))
    with pytest.raises(InputError, match="datetime"):
        parse_datetime("not a date/2020")
    s, e = parse_datetime("2020-05")
    assert (s.day, e.day, e.month) == (1, 31, 5)


def test_common_names_resolve_to_asset_ids(s2cat):
    path, values = s2cat
    cube = load_stac(path, ["red", "green", "blue", "nir"], mask=False)
    assert list(cube.band.values) == ["red", "green", "blue", "nir"]
    assert list(cube.stac_band.values) == ["B04", "B03", "B02", "B08"]
    assert cube.sizes["time"] == 2 and cube.attrs["nodata"] == 0 and cube.rio.crs.to_epsg() == 32633
    np.testing.assert_array_equal(cube.sel(band="red").isel(time=0).values, values["s2a"]["B04"])
    np.testing.assert_array_equal(cube.sel(band="nir").isel(time=1).values, values["s2b"]["B08"])
    # ids with or without zero padding; common-name synonyms
    by_id = load_stac(path, ["B4", "b08"], mask=False)
    assert list(by_id.stac_band.values) == ["B04", "B08"]
    with pytest.raises(MissingBandsError, match="swir1.*available.*B04"):
        load_stac(path, ["red", "swir1"])


def test_scl_cloud_mask(s2cat):
    path, values = s2cat
    cube = load_stac(path, ["red", "nir"])  # mask="auto": the collection has SCL
    assert cube.attrs["xeofm:stac_mask"] == "SCL" and cube.dtype == np.uint16
    red = cube.sel(band="red").isel(time=0).values
    scl = values["s2a"]["SCL"]
    bad = np.isin(scl, (3, 9))
    assert bad.sum() > 100 and (red[bad] == 0).all()
    np.testing.assert_array_equal(red[~bad], values["s2a"]["B04"][~bad])
    # the engine treats masked pixels as nodata: cells made only of cloud are NaN
    spec = xeofm.wrap(__import__("tests.conftest", fromlist=["PatchLinear"]).PatchLinear(in_chans=2, dim=3, patch=4),
                      bands=["red", "nir"], chip_size=16, stride=4, embedding_dim=3)
    emb = cube.isel(time=[0]).eofm.embed(spec, device="cpu").compute()
    assert np.isnan(emb.values[0, :, 2, 3]).all()  # pixels 8..11 x 12..15: all cloud
    assert np.isfinite(emb.values[0, :, 9, 1]).all()
    raw = load_stac(path, ["red"], mask=False)
    assert "xeofm:stac_mask" not in raw.attrs and (raw.isel(time=0, band=0).values[bad] > 0).all()
    with pytest.raises(InputError, match="no such mask band"):
        load_stac(xd.catalog_path(), ["red"], collections="rgbn", mask="scl")


def test_items_in_several_crs_refused_or_reprojected(tmp_path):
    path, _ = _make_catalog(tmp_path, [("a33", "2021-06-01", 32633, 800_000.0, 5_000_000.0),
                                       ("b34", "2021-06-01", 32634, 300_000.0, 5_000_000.0)])
    with pytest.raises(StacError, match="2 different CRSs: EPSG:3263[34] \\(1 items\\), EPSG:3263[34].*crs="):
        load_stac(path, ["red"])
    cube = load_stac(path, ["red"], crs="EPSG:32633", resolution=10, groupby="id")
    assert cube.rio.crs.to_epsg() == 32633 and cube.sizes["time"] == 2
    assert abs(cube.rio.resolution()[0]) == pytest.approx(10)


def test_unreachable_and_failing_apis(monkeypatch):
    pc = pytest.importorskip("pystac_client")
    with pytest.raises(StacError, match="does not exist"):
        load_stac("/no/such/catalog.json", ["red"])

    def refuse(url, *a, **k):
        raise ConnectionError(f"Failed to establish a new connection: {url}")

    monkeypatch.setattr(pc.Client, "open", staticmethod(refuse))
    with pytest.raises(StacError, match="cannot open STAC source 'https://stac.invalid/v1'.*network"):
        load_stac("https://stac.invalid/v1", ["red"])

    calls = {}

    class Search:
        def __init__(self, fail):
            self.fail = fail

        def items(self):
            if self.fail:
                raise pc.exceptions.APIError("502 Bad Gateway")
            return iter([])

    class FakeClient:
        self_href = "https://stac.invalid/v1"

        def __init__(self, fail):
            self.fail = fail

        def conforms_to(self, _):
            return True

        def search(self, **kw):
            calls.update(kw)
            return Search(self.fail)

    monkeypatch.setattr(pc.Client, "open", staticmethod(lambda url, *a, **k: FakeClient(fail=False)))
    with pytest.raises(EmptySearchError, match="no items matching collections=\\['sentinel-2-l2a'\\].*datetime"):
        load_stac("https://stac.invalid/v1", ["red"], collections="sentinel-2-l2a", bbox=(5, 45, 6, 46),
                  datetime="2021-06")
    assert calls["collections"] == ["sentinel-2-l2a"] and calls["bbox"] == (5.0, 45.0, 6.0, 46.0)
    assert calls["datetime"] == "2021-06"
    monkeypatch.setattr(pc.Client, "open", staticmethod(lambda url, *a, **k: FakeClient(fail=True)))
    with pytest.raises(StacError, match="search at https://stac.invalid/v1 failed: APIError"):
        load_stac("https://stac.invalid/v1", ["red"])
