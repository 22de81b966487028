"""Readers of precomputed embedding products (AlphaEarth, TESSERA) on small synthetic files."""

from __future__ import annotations

import numpy as np
import pytest

from xeofm import products
from xeofm.errors import InputError

from .conftest import CountingScheduler

rasterio = pytest.importorskip("rasterio")
dask = pytest.importorskip("dask")
from affine import Affine  # noqa: E402

CRS = "EPSG:32610"


def _write_aef(path, q, transform, nodata=-128):
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(
        path, "w", driver="GTiff", width=q.shape[2], height=q.shape[1], count=q.shape[0], dtype="int8",
        crs=CRS, transform=transform, nodata=nodata, tiled=True, blockxsize=16, blockysize=16,
    ) as dst:
        dst.write(q)
        dst.descriptions = tuple(f"A{i:02d}" for i in range(q.shape[0]))
    return path


def _aef_values(rng, shape):
    """Quantised unit vectors as the product stores them: q = round(sign(v) * sqrt|v| * 127.5)."""
    v = rng.normal(size=(64, *shape))
    v /= np.linalg.norm(v, axis=0, keepdims=True)
    q = np.clip(np.round(np.sign(v) * np.sqrt(np.abs(v)) * 127.5), -127, 127).astype(np.int8)
    return q


def test_alphaearth_dequantisation_formula():
    q = np.array([[-128, -127, -64, 0, 1, 64, 127]], dtype=np.int8).T  # 7 "channels" of one pixel
    v = products.dequantize_alphaearth(q[:, :1].repeat(2, 1)[1:], axis=0)
    want = np.sign(q[1:, 0]) * (q[1:, 0].astype(np.float64) / 127.5) ** 2
    np.testing.assert_allclose(v[:, 0], want, rtol=1e-6)
    masked = products.dequantize_alphaearth(q, axis=0)  # one channel is -128: the whole pixel is masked
    assert np.isnan(masked).all()


def test_open_alphaearth_values_nodata_crs_lazy(tmp_path):
    rng = np.random.default_rng(0)
    q = _aef_values(rng, (40, 48))
    q[:, 3, 5] = -128  # masked pixel
    t = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_200_000.0)
    f = _write_aef(tmp_path / "annual" / "2023" / "10N" / "xyz.tiff", q, t)
    with dask.config.set(scheduler=CountingScheduler(0)):  # opening computes nothing
        cube = products.open_alphaearth(f, chunks=16)
    assert isinstance(cube.data, dask.array.Array)
    assert cube.dims == ("time", "embedding", "y", "x")
    assert cube.sizes == {"time": 1, "embedding": 64, "y": 40, "x": 48}
    assert cube.dtype == np.float32
    assert cube["time"].dt.year.item() == 2023
    assert cube.data.chunksize[-2:] == (16, 16)
    assert cube.rio.crs.to_epsg() == 32610
    assert tuple(cube.rio.transform())[:6] == tuple(t)[:6]
    np.testing.assert_allclose(cube["x"].values[:2], [500_005.0, 500_015.0])
    np.testing.assert_allclose(cube["y"].values[:2], [4_199_995.0, 4_199_985.0])
    a = cube.attrs
    assert a["xeofm:model"] == products.ALPHAEARTH and a["xeofm:output"] == "pixel" and a["xeofm:cell_size"] == 1
    assert a["xeofm:spec_hash"] == products.product_hash(products.ALPHAEARTH, "v1-annual")
    assert a["xeofm:bands"][:2] == ["A00", "A01"] and "Google DeepMind" in a["xeofm:attribution"]
    v = cube.isel(time=0).values
    want = np.sign(q) * (q.astype(np.float64) / 127.5) ** 2
    ok = np.ones((40, 48), bool)
    ok[3, 5] = False
    np.testing.assert_allclose(v[:, ok], want[:, ok], rtol=1e-6, atol=1e-7)
    assert np.isnan(v[:, 3, 5]).all() and np.isfinite(v[:, ok]).all()
    norms = np.linalg.norm(v[:, ok], axis=0)  # unit vectors, up to the quantisation
    assert np.allclose(norms, 1.0, atol=0.05)


def test_open_alphaearth_years_stack_and_bottom_up(tmp_path):
    rng = np.random.default_rng(1)
    up = Affine(10.0, 0.0, 500_000.0, 0.0, 10.0, 4_199_800.0)  # "bottom-up": origin at the lower left
    q1, q2 = _aef_values(rng, (20, 16)), _aef_values(rng, (20, 16))
    f1 = _write_aef(tmp_path / "a.tif", q1, up)
    f2 = _write_aef(tmp_path / "b.tif", q2, up)
    cube = products.open_alphaearth([f2, f1], years=[2022, 2021])
    assert list(cube["time"].dt.year.values) == [2021, 2022]
    assert cube["y"].values[0] > cube["y"].values[-1]  # flipped to north-up
    assert cube.rio.transform().e < 0
    np.testing.assert_allclose(cube["y"].values[0], 4_199_800.0 + 10 * 19.5)
    top_row_file = np.sign(q1[:, -1]) * (q1[:, -1].astype(np.float64) / 127.5) ** 2  # last file row is northmost
    np.testing.assert_allclose(cube.sel(time="2021").isel(time=0, y=0).values, top_row_file, rtol=1e-6)
    with pytest.raises(InputError, match="year"):
        products.open_alphaearth([f1, f2])
    with pytest.raises(InputError, match="not found"):
        products.open_alphaearth(tmp_path / "missing.tif")


def test_alphaearth_cube_plugs_into_similarity(tmp_path):
    rng = np.random.default_rng(2)
    q = _aef_values(rng, (12, 12))
    f = _write_aef(tmp_path / "2024" / "t.tif", q, Affine(10.0, 0, 500_000.0, 0, -10.0, 4_200_000.0))
    cube = products.open_alphaearth(f).isel(time=0)
    ops = pytest.importorskip("xeofm.ops")
    sim = ops.similarity(cube, x=float(cube.x[4]), y=float(cube.y[7]))
    assert sim.shape == (12, 12)
    assert float(sim.isel(y=7, x=4)) == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------------------
# TESSERA
# --------------------------------------------------------------------------------------
def _tessera_tile(root, year, name="grid_0.15_52.05", H=24, W=20, scales3d=False, seed=0):
    rng = np.random.default_rng(seed)
    q = rng.integers(-127, 128, size=(H, W, 128)).astype(np.int8)
    s = rng.uniform(0.001, 0.02, size=(H, W, 128) if scales3d else (H, W)).astype(np.float32)
    s[2, 3] = np.nan  # water
    s[5, 6] = np.inf  # no data yet
    d = root / "global_0.1_degree_representation" / str(year) / name
    d.mkdir(parents=True, exist_ok=True)
    np.save(d / f"{name}.npy", q)
    np.save(d / f"{name}_scales.npy", s)
    lm = root / "global_0.1_degree_tiff_all"
    lm.mkdir(exist_ok=True)
    t = Affine(10.0, 0.0, 300_000.0, 0.0, -10.0, 5_770_000.0)
    if not (lm / f"{name}.tiff").exists():
        with rasterio.open(lm / f"{name}.tiff", "w", driver="GTiff", width=W, height=H, count=1, dtype="uint8",
                           crs="EPSG:32631", transform=t) as dst:
            dst.write(np.ones((1, H, W), np.uint8))
    return d / f"{name}.npy", q, s, t


@pytest.mark.parametrize("scales3d", [False, True])
def test_open_tessera_npy(tmp_path, scales3d):
    f, q, s, t = _tessera_tile(tmp_path, 2024, scales3d=scales3d)
    with dask.config.set(scheduler=CountingScheduler(0)):
        cube = products.open_tessera(f, chunks=8)
    assert isinstance(cube.data, dask.array.Array)
    assert cube.dims == ("time", "embedding", "y", "x") and cube.sizes["embedding"] == 128
    assert cube.dtype == np.float32 and cube["time"].dt.year.item() == 2024
    assert cube.rio.crs.to_epsg() == 32631
    assert tuple(cube.rio.transform())[:6] == tuple(t)[:6]
    assert cube.attrs["xeofm:model"] == products.TESSERA and cube.attrs["xeofm:cell_size"] == 1
    assert cube.attrs["xeofm:spec_hash"] == products.product_hash("tessera", "v1")
    v = cube.isel(time=0).values
    want = q.astype(np.float32) * (s if scales3d else s[..., None])
    want = np.moveaxis(want, -1, 0)
    ok = np.isfinite(want)
    np.testing.assert_allclose(v[ok], want[ok], rtol=1e-6)
    assert np.isnan(v[:, 2, 3]).all() and np.isnan(v[:, 5, 6]).all()  # water and no-data sentinels
    assert np.isfinite(v[:, 0, 0]).all()
    # the graph carries file paths, not arrays
    import pickle

    assert len(pickle.dumps(cube.data.dask)) < 100_000


def test_open_tessera_years_and_errors(tmp_path):
    f1, q1, s1, _ = _tessera_tile(tmp_path, 2023, seed=1)
    f2, q2, s2, _ = _tessera_tile(tmp_path, 2024, seed=2)
    cube = products.open_tessera([f2, f1])
    assert list(cube["time"].dt.year.values) == [2023, 2024]
    np.testing.assert_allclose(cube.isel(time=1, y=0, x=0).values, q2[0, 0] * s2[0, 0], rtol=1e-6)
    other = tmp_path / "elsewhere"
    other.mkdir()
    np.save(other / "grid_1.05_2.05.npy", q1)
    np.save(other / "grid_1.05_2.05_scales.npy", s1)
    with pytest.raises(InputError, match="landmask"):
        products.open_tessera(other / "grid_1.05_2.05.npy")
    cube = products.open_tessera(other / "grid_1.05_2.05.npy", crs="EPSG:32631", transform=(10, 0, 0, 0, -10, 240))
    assert "time" not in cube.dims and cube.rio.crs.to_epsg() == 32631
    np.save(other / "grid_9.05_9.05.npy", q1)
    with pytest.raises(InputError, match="scales"):
        products.open_tessera(other / "grid_9.05_9.05.npy", crs="EPSG:32631", transform=(10, 0, 0, 0, -10, 240))
    np.save(other / "bad.npy", q1.astype(np.float32))
    np.save(other / "bad_scales.npy", s1)
    with pytest.raises(InputError, match="int8"):
        products.open_tessera(other / "bad.npy", crs="EPSG:32631", transform=(10, 0, 0, 0, -10, 240))


def test_open_tessera_geotiff_export(tmp_path):
    rng = np.random.default_rng(3)
    v = rng.normal(size=(128, 10, 12)).astype(np.float32)
    v[:, 1, 1] = np.nan
    t = Affine(10.0, 0.0, 300_000.0, 0.0, -10.0, 5_770_000.0)
    f = tmp_path / "2024" / "grid_0.15_52.05" / "grid_0.15_52.05_2024.tiff"
    f.parent.mkdir(parents=True)
    with rasterio.open(f, "w", driver="GTiff", width=12, height=10, count=128, dtype="float32",
                       crs="EPSG:32631", transform=t) as dst:
        dst.write(v)
    cube = products.open_tessera(f)
    assert cube.dims == ("time", "embedding", "y", "x") and cube["time"].dt.year.item() == 2024
    got = cube.isel(time=0).values
    np.testing.assert_array_equal(np.isnan(got), np.isnan(v))
    np.testing.assert_allclose(got[np.isfinite(v)], v[np.isfinite(v)])


def test_products_are_not_comparable_with_each_other(tmp_path):
    f, *_ = _tessera_tile(tmp_path, 2024)
    a = products.open_tessera(f, version="v1")
    b = products.open_tessera(f, version="v1.1")
    ops = pytest.importorskip("xeofm.ops")
    with pytest.raises(InputError, match="spec_hash"):
        ops.check_comparable(a, b)
