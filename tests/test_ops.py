"""Time series, change, queries, PCA and label-cube areas (xeofm.ops)."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import xeofm
from xeofm import ops
from xeofm.errors import InputError, MissingDimensionError, SpecError
from xeofm.labels import as_label_cube

from .conftest import CountingScheduler, make_cube

rioxarray = pytest.importorskip("rioxarray")

DATES = np.array(["2016-01-01", "2016-04-01", "2016-05-17", "2017-02-03"], dtype="datetime64[ns]")
X0, Y0, RES = 793_600.0, 2_050_000.0, 40.0


def make_emb(data=None, *, nt=4, D=6, ny=20, nx=30, seed=0, chunks=None, crs="EPSG:32618", model="m", spec="abc"):
    """A hand-made embedding cube following the engine's conventions."""
    if data is None:
        data = np.random.default_rng(seed).normal(size=(nt, D, ny, nx)).astype("float32")
        data[:, :, 0, 0] = np.nan
    nt, D, ny, nx = data.shape
    da = xr.DataArray(
        data,
        dims=("time", "embedding", "y", "x"),
        coords={
            "time": DATES[:nt] if nt <= 4 else np.arange(nt) * np.timedelta64(1, "D") + DATES[0],
            "embedding": np.arange(D),
            "y": Y0 - RES * (np.arange(ny) + 0.5),
            "x": X0 + RES * (np.arange(nx) + 0.5),
        },
        name="embeddings",
        attrs={"xeofm:model": model, "xeofm:spec_hash": spec, "xeofm:output": "patch", "xeofm:cell_size": 8},
    )
    if crs is not None:
        da = da.rio.write_crs(crs)
    return da.chunk(chunks or {"time": 1, "y": 8, "x": 16})


def cos_dist(a, b, axis=0):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return 1 - (a * b).sum(axis) / np.sqrt((a * a).sum(axis) * (b * b).sum(axis))


@pytest.fixture(scope="module")
def real_emb(linear_spec):
    """Embeddings from the engine (a wrapped linear patch encoder) of a 4-date cube."""
    cube = make_cube(64, 64, nt=4)
    return cube.eofm.embed(linear_spec, block_size=32)


# --------------------------------------------------------------------------------------
# Laziness
# --------------------------------------------------------------------------------------
def test_everything_is_lazy_and_computes_in_one_pass(real_emb):
    e = real_emb
    with dask.config.set(scheduler=CountingScheduler(0)):
        outs = {
            "previous": ops.change(e),
            "first": ops.change(e, reference="first"),
            "window": ops.change(e, reference={"window": 2}),
            "date": ops.change(e, reference=str(e.time.values[1])[:10]),
            "threshold": ops.threshold(ops.change(e), "otsu"),
            "mad": ops.threshold(ops.change(e), "mad"),
            "anomaly": ops.anomaly(e, standardize=True),
            "similarity": ops.similarity(e, x=float(e.x[3]), y=float(e.y[2])),
            "pca": ops.pca(e),
            "stretch": ops.robust_stretch(ops.pca(e), "component"),
            "yearly": ops.change(e.resample(time="1MS").mean()),
        }
    for name, out in outs.items():
        assert out.chunks is not None, name
        sched = CountingScheduler(1)
        with dask.config.set(scheduler=sched):
            out.compute()
        assert sched.total == 1, name


def test_change_attrs_coords_and_crs(real_emb):
    c = ops.change(real_emb)
    assert c.name == "change" and c.dtype == np.float32
    assert c.dims == ("time", "y", "x")
    assert c.attrs["xeofm:model"] == real_emb.attrs["xeofm:model"]
    assert c.attrs["xeofm:spec_hash"] == real_emb.attrs["xeofm:spec_hash"]
    assert c.attrs["xeofm:metric"] == "cosine" and c.attrs["xeofm:reference"] == "previous"
    np.testing.assert_array_equal(c.time.values, real_emb.time.values[1:])
    np.testing.assert_array_equal(c.reference_time.values, real_emb.time.values[:-1])
    assert c.rio.crs == real_emb.rio.crs
    np.testing.assert_array_equal(c.x.values, real_emb.x.values)


# --------------------------------------------------------------------------------------
# Change: values
# --------------------------------------------------------------------------------------
def test_identical_dates_have_zero_cosine_change():
    e = make_emb(nt=1)
    e4 = xr.concat([e] * 4, dim="time").assign_coords(time=DATES).chunk({"time": 1})
    c = ops.change(e4).values
    valid = np.isfinite(c)
    assert valid.sum() == c.size - 3  # only the invalid cell is NaN
    np.testing.assert_allclose(c[valid], 0, atol=1e-6)
    np.testing.assert_allclose(ops.change(e4, metric="euclidean").values[valid], 0, atol=1e-6)


def test_scaled_copy_cosine_zero_euclidean_not():
    e = make_emb(nt=1)
    e2 = xr.concat([e, 3 * e], dim="time").assign_coords(time=DATES[:2])
    e2.attrs = e.attrs
    cos = ops.change(e2).isel(time=0).values
    euc = ops.change(e2, metric="euclidean").isel(time=0).values
    ok = np.isfinite(cos)
    np.testing.assert_allclose(cos[ok], 0, atol=1e-6)
    norm = np.sqrt((e.isel(time=0).values.astype(np.float64) ** 2).sum(0))
    np.testing.assert_allclose(euc[ok], 2 * norm[ok], rtol=1e-5)
    assert (euc[ok] > 0.1).all()


def test_change_references_match_numpy():
    e = make_emb()
    a = e.values
    prev = ops.change(e).values
    np.testing.assert_allclose(prev, cos_dist(a[1:], a[:-1], axis=1), rtol=1e-5, atol=1e-6)
    first = ops.change(e, reference="first")
    assert first.reference_time.values == DATES[0]
    np.testing.assert_allclose(first.values, cos_dist(a, a[:1], axis=1), rtol=1e-5, atol=1e-6)
    on = ops.change(e, reference="2016-05-17", metric="euclidean").values
    np.testing.assert_allclose(on, np.sqrt(((a - a[2:3]) ** 2).sum(1)), rtol=1e-5)
    year = ops.change(e, reference="2016").values  # partial date: mean of the 3 steps of 2016
    np.testing.assert_allclose(year, cos_dist(a, a[:3].mean(0, keepdims=True), axis=1), rtol=1e-5, atol=1e-6)
    win = ops.change(e, reference={"window": 2})
    np.testing.assert_array_equal(win.time.values, DATES[2:])
    base = np.stack([a[0:2].mean(0), a[1:3].mean(0)])
    np.testing.assert_allclose(win.values, cos_dist(a[2:], base, axis=1), rtol=1e-5, atol=1e-6)


def test_change_is_nan_aware():
    e = make_emb()
    a = e.values.copy()
    a[1, :, 5, 5] = np.nan  # one invalid step at one cell
    e = e.copy(data=a)
    prev = ops.change(e).values
    assert np.isnan(prev[0, 5, 5]) and np.isnan(prev[1, 5, 5]) and np.isfinite(prev[2, 5, 5])
    win = ops.change(e, reference={"window": 2}).values  # step 2 vs mean(step 0, step 1) -> step 0 only
    np.testing.assert_allclose(win[0, 5, 5], cos_dist(a[2, :, 5, 5], a[0, :, 5, 5]), rtol=1e-5)
    assert np.isnan(win[:, 0, 0]).all()


def test_change_against_another_cube_and_mismatches():
    e = make_emb()
    base = e.isel(time=slice(0, 2)).mean("time")
    base.attrs = e.attrs
    c = ops.change(e, reference=base)
    np.testing.assert_allclose(c.values, cos_dist(e.values, base.values[None], axis=1), rtol=1e-5, atol=1e-6)
    other = make_emb(spec="zzz")
    with pytest.raises(InputError, match="spec_hash"):
        ops.change(e, reference=other.isel(time=0))
    with pytest.raises(InputError, match="xeofm:model"):
        ops.distance(e, make_emb(model="other"))
    shifted = e.assign_coords(x=e.x + RES)
    with pytest.raises(InputError, match="different grids"):
        ops.change(e, reference=shifted.isel(time=0))
    with pytest.raises(InputError, match="different grids"):
        ops.distance(e, make_emb(nx=31))
    with pytest.raises(InputError, match="different CRSs"):
        ops.distance(e, make_emb(crs="EPSG:32617"))
    with pytest.raises(InputError, match="dimensions"):
        ops.distance(e, make_emb(D=4))


def test_change_bad_input():
    e = make_emb()
    with pytest.raises(InputError, match="at least 2 steps"):
        ops.change(e.isel(time=[0]))
    with pytest.raises(MissingDimensionError, match="no such dim"):
        ops.change(e.isel(time=0))
    with pytest.raises(InputError, match="not 'previous'"):
        ops.change(e, reference="1999-01-01")
    with pytest.raises(InputError, match="window"):
        ops.change(e, reference={"window": 4})
    with pytest.raises(InputError, match="metric"):
        ops.change(e, metric="manhattan")
    with pytest.raises(MissingDimensionError, match="embedding"):
        ops.change(e.isel(embedding=0))


# --------------------------------------------------------------------------------------
# Composition with plain xarray
# --------------------------------------------------------------------------------------
def test_composes_with_xarray_operations():
    e = make_emb()
    with dask.config.set(scheduler=CountingScheduler(0)):
        yearly = e.resample(time="1YS").mean()  # 2016 (3 dates) and 2017 (1 date)
        c_year = ops.change(yearly)
        c_sel = ops.change(e.sel(time=slice("2016-01-01", "2016-05-31")), reference="first")
        c_roll = ops.change(e.rolling(time=2).mean().isel(time=slice(1, None)))
        seasons = ops.change(e.groupby("time.season").mean(), dim="season", reference="first")
        accel = ops.change(e).diff("time")
        c_dt = ops.change(e.isel(time=[0, 3]))
    a = e.values
    np.testing.assert_allclose(c_year.values[0], cos_dist(a[3], a[:3].mean(0)), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(c_year.time.values, np.array(["2017-01-01"], dtype="datetime64[ns]"))
    assert c_sel.sizes["time"] == 3
    assert c_roll.sizes["time"] == 2 and np.isfinite(c_roll.values[:, 1:, 1:]).all()
    assert seasons.dims[0] == "season" and seasons.sizes["season"] == 2  # DJF, MAM
    prev = ops.change(e).values
    np.testing.assert_allclose(accel.values, np.diff(prev, axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(c_dt.values[0], cos_dist(a[3], a[0]), rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------------------
# Thresholds and anomalies
# --------------------------------------------------------------------------------------
def _bimodal(n=40, seed=1, truth=False):
    rng = np.random.default_rng(seed)
    changed = rng.random((2, n, n)) >= 0.8
    v = np.where(changed, rng.normal(0.7, 0.05, (2, n, n)), rng.normal(0.1, 0.02, (2, n, n)))
    v[0, 0, :5] = np.nan
    changed[0, 0, :5] = False
    return xr.DataArray(
        v.astype(np.float32), dims=("time", "y", "x"), name="change",
        coords={"time": DATES[:2], "y": Y0 - RES * np.arange(n), "x": X0 + RES * np.arange(n)},
        attrs={"xeofm:model": "m"},
    ), changed


def test_otsu_threshold_separates_modes_lazily():
    d, changed = _bimodal()
    d = d.chunk({"time": 1, "y": 20, "x": 20})
    with dask.config.set(scheduler=CountingScheduler(0)):
        m = ops.threshold(d, "otsu")
    assert m.dtype == bool and m.name == "change_mask"
    assert m.attrs["xeofm:threshold_method"] == "otsu" and "xeofm:threshold" not in m.attrs
    assert m.threshold.chunks is not None or hasattr(m.threshold.data, "dask")
    sched = CountingScheduler(1)
    with dask.config.set(scheduler=sched):
        mc = m.compute()
    t = float(mc.threshold)
    assert 0.15 < t < 0.5
    assert (mc.values == changed).mean() > 0.999  # the two modes are told apart
    v = d.values
    np.testing.assert_array_equal(mc.values, np.where(np.isfinite(v), v > t, False))
    assert not mc.values[0, 0, :5].any()  # NaN is never change


def test_mad_and_fixed_thresholds_in_attrs():
    d, _ = _bimodal()
    v = d.values[np.isfinite(d.values)].astype(np.float64)
    med = np.median(v)
    expect = med + 2.5 * 1.4826 * np.median(np.abs(v - med))
    m = ops.threshold(d, "mad", k=2.5)  # in memory: computed now, stored in attrs
    assert m.attrs["xeofm:threshold"] == pytest.approx(expect, rel=1e-9)
    assert float(m.threshold) == pytest.approx(expect, rel=1e-9)
    f = ops.threshold(d.chunk({"time": 1}), 0.3)
    assert f.attrs["xeofm:threshold"] == 0.3 and f.attrs["xeofm:threshold_method"] == "fixed"
    np.testing.assert_array_equal(f.values, np.nan_to_num(d.values, nan=-1) > 0.3)
    with pytest.raises(InputError, match="method"):
        ops.threshold(d, "kmeans")


def test_threshold_sample_reads_few_blocks_and_all_nan_is_clear(monkeypatch):
    d, changed = _bimodal(n=64)
    d = d.chunk({"time": 1, "y": 8, "x": 8})  # 128 blocks
    calls = []
    orig = ops._rows_from_block
    monkeypatch.setattr(ops, "_rows_from_block", lambda *a, **k: calls.append(1) or orig(*a, **k))
    t = float(ops.threshold(d, "otsu", sample=50).threshold)
    assert len(calls) == 8  # 8 of 128 blocks
    assert ((d.values > t) == changed).mean() > 0.99
    nan = (d * np.nan).rename("change")
    with pytest.raises(InputError, match="no valid"):
        ops.threshold(nan, "otsu").compute()


def test_anomaly_flags_the_odd_step():
    base = np.random.default_rng(3).normal(size=(1, 6, 10, 12)).astype(np.float32)
    a = np.repeat(base, 5, axis=0) + 0.01 * np.random.default_rng(4).normal(size=(5, 6, 10, 12)).astype(np.float32)
    a[2] = -a[2]  # an odd step
    e = make_emb(a, chunks={"time": 1})
    e = e.assign_coords(time=np.arange(5) * np.timedelta64(30, "D") + DATES[0])
    s = ops.anomaly(e).values
    assert (s.argmax(0) == 2).all()
    loo = np.stack([np.delete(a, t, 0).mean(0) for t in range(5)])
    np.testing.assert_allclose(s, cos_dist(a, loo, axis=1), rtol=1e-4, atol=1e-5)
    w = ops.anomaly(e, window=3).values
    win = np.stack([np.delete(a[max(0, t - 1) : t + 2], min(t, 1), 0).mean(0) for t in range(5)])
    np.testing.assert_allclose(w, cos_dist(a, win, axis=1), rtol=1e-4, atol=1e-5)
    z = ops.anomaly(e, standardize=True).values
    assert (z.argmax(0) == 2).all() and (z[2] > 3).all()
    with pytest.raises(InputError, match="at least 2"):
        ops.anomaly(e.isel(time=[0]))


# --------------------------------------------------------------------------------------
# Similarity and search
# --------------------------------------------------------------------------------------
def test_point_similarity_and_crs_of_the_query():
    from pyproj import Transformer

    e = make_emb().isel(time=slice(0, 2))
    x, y = float(e.x[7]), float(e.y[4])
    s = ops.similarity(e, x=x + 10, y=y - 15, at={"time": "2016-04-01"})
    assert s.dims == ("time", "y", "x") and s.name == "similarity"
    assert float(s.sel(time="2016-04-01").isel(y=4, x=7)) == pytest.approx(1.0, abs=1e-6)
    q = e.values[1, :, 4, 7]
    np.testing.assert_allclose(s.values, 1 - cos_dist(e.values, q[None, :, None, None], axis=1), rtol=1e-5, atol=1e-6)
    lon, lat = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True).transform(x, y)
    s2 = ops.similarity(e, x=lon, y=lat, crs="EPSG:4326", at={"time": "2016-04-01"})
    np.testing.assert_allclose(s2.values, s.values, equal_nan=True)
    mean_q = ops.similarity(e, x=x, y=y)  # default: the place's mean embedding over time
    np.testing.assert_allclose(
        mean_q.values, 1 - cos_dist(e.values, e.values[:, :, 4, 7].mean(0)[None, :, None, None], axis=1), rtol=1e-5, atol=1e-6
    )
    neg = ops.similarity(e, x=x, y=y, metric="euclidean", at={"time": "2016-01-01"})
    assert float(neg.isel(time=0, y=4, x=7)) == pytest.approx(0.0, abs=1e-5)


def test_query_outside_the_cube_and_bad_queries():
    e = make_emb()
    with pytest.raises(InputError, match="outside the cube"):
        ops.similarity(e, x=X0 - 500, y=Y0 - 100)
    with pytest.raises(InputError, match="outside the cube"):
        ops.similarity(e, x=0.0, y=0.0, crs="EPSG:4326")
    with pytest.raises(InputError, match="exactly one query"):
        ops.similarity(e)
    with pytest.raises(InputError, match="exactly one query"):
        ops.similarity(e, x=X0, y=Y0, text="water")
    with pytest.raises(InputError, match="both x= and y="):
        ops.similarity(e, x=X0)
    with pytest.raises(InputError, match="query vector"):
        ops.similarity(e, vector=np.ones(3))
    with pytest.raises(InputError, match="no CRS"):
        ops.similarity(make_emb(crs=None), x=-75.0, y=18.5, crs="EPSG:4326")


def test_polygon_query_is_the_mean_of_cells_inside():
    import shapely
    from pyproj import Transformer
    from shapely.geometry import box, mapping

    e = make_emb().isel(time=0)
    poly = box(X0 + 2 * RES, Y0 - 6 * RES, X0 + 5 * RES, Y0 - 3 * RES)  # centres of 3 x 3 cells inside
    s = ops.similarity(e, geometry=poly)
    q = e.values[:, 3:6, 2:5].reshape(6, -1).mean(1)
    np.testing.assert_allclose(s.values, 1 - cos_dist(e.values, q[:, None, None], axis=0), rtol=1e-5, atol=1e-6)
    assert "9 cells" in s.attrs["xeofm:query"]
    t = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True)
    gj = mapping(shapely.transform(poly, lambda p: np.column_stack(t.transform(p[:, 0], p[:, 1]))))  # GeoJSON: WGS 84 by default
    np.testing.assert_allclose(ops.similarity(e, geometry=gj).values, s.values, rtol=1e-4, atol=1e-5, equal_nan=True)
    tiny = box(X0 + 2.1 * RES, Y0 - 2.9 * RES, X0 + 2.2 * RES, Y0 - 2.8 * RES)  # inside one cell, no centre
    np.testing.assert_allclose(
        ops.similarity(e, geometry=tiny).values,
        1 - cos_dist(e.values, e.values[:, 2, 2][:, None, None], axis=0), rtol=1e-5, atol=1e-6,
    )
    with pytest.raises(InputError, match="does not overlap"):
        ops.similarity(e, geometry=box(0, 0, 1, 1))


def test_text_query_uses_the_text_tower(monkeypatch):
    e = make_emb(model="clip-ish").isel(time=0)
    seen = {}

    def encode_text(model, texts, templates=None, **kwargs):
        seen["args"] = (model, list(texts))
        return np.arange(1, 7, dtype=np.float32)[None]

    monkeypatch.setattr(xeofm.models, "encode_text", encode_text, raising=False)
    s = ops.similarity(e, text="a lake")
    assert seen["args"] == ("clip-ish", ["a lake"])
    q = np.arange(1, 7, dtype=np.float64)
    np.testing.assert_allclose(s.values, 1 - cos_dist(e.values, q[:, None, None], axis=0), rtol=1e-5, atol=1e-6)
    df = ops.search(e, "a lake", k=3)
    assert list(df.score) == sorted(df.score, reverse=True)

    def no_tower(model, texts, templates=None, **kwargs):
        raise SpecError(f"model {model!r} has no text encoder")

    monkeypatch.setattr(xeofm.models, "encode_text", no_tower, raising=False)
    with pytest.raises(SpecError, match="no text tower"):
        ops.similarity(e, text="a lake")
    monkeypatch.setattr(xeofm.models, "encode_text", lambda m, t, templates=None, **kw: np.ones((1, 4)), raising=False)
    with pytest.raises(SpecError, match="not in one space"):
        ops.similarity(e, text="a lake")
    with pytest.raises(InputError, match="not 'other'"):
        ops.similarity(e, text="a lake", model="other")


def test_search_finds_the_query_first_blockwise(monkeypatch):
    from pyproj import Transformer

    e = make_emb(chunks={"time": 1, "y": 7, "x": 9})
    x, y = float(e.x[11]), float(e.y[13])
    calls = []
    orig = ops._block_topk
    monkeypatch.setattr(ops, "_block_topk", lambda *a, **k: calls.append(a[0].shape) or orig(*a, **k))
    sched = CountingScheduler(1)
    with dask.config.set(scheduler=sched):
        df = ops.search(e, (x, y), k=10, at={"time": "2016-05-17"})
    assert sched.total == 1
    assert len(calls) == 4 * 3 * 4  # one task per block of the (time, y, x) score cube
    assert isinstance(df, pd.DataFrame) and len(df) == 10
    assert list(df.columns) == ["x", "y", "lon", "lat", "time", "score"]
    top = df.iloc[0]
    assert (top.x, top.y, top.time) == (x, y, pd.Timestamp("2016-05-17")) and top.score == pytest.approx(1.0, abs=1e-6)
    s = ops.similarity(e, x=x, y=y, at={"time": "2016-05-17"}).values.ravel()
    best = np.sort(s[np.isfinite(s)])[::-1][:10]
    np.testing.assert_allclose(df.score.values, best, rtol=1e-6)
    lon, lat = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True).transform(df.x.values, df.y.values)
    np.testing.assert_allclose(df.lon, lon)
    np.testing.assert_allclose(df.lat, lat)
    # distinct places: no two results closer than min_distance
    far = ops.search(e.isel(time=0), (x, y), k=6, min_distance=5 * RES)
    assert far.iloc[0].score == pytest.approx(1.0, abs=1e-6) and "time" not in far.columns
    xy = far[["x", "y"]].values
    d = np.sqrt(((xy[:, None] - xy[None]) ** 2).sum(-1))
    assert (d[np.triu_indices(len(xy), 1)] >= 5 * RES).all()
    with pytest.raises(InputError, match="no cell has a valid score"):
        ops.search(e, (float(e.x[0]), float(e.y[0])), k=3, at={"time": "2016-01-01"})  # query on an invalid cell
    # a score cube is ranked as is
    sc = ops.search(ops.similarity(e.isel(time=0), x=x, y=y), None, k=2)
    assert sc.iloc[0].score == pytest.approx(1.0, abs=1e-6)


# --------------------------------------------------------------------------------------
# PCA and stretch
# --------------------------------------------------------------------------------------
def test_pca_reproduces_numpy_pca_on_the_sample():
    e = make_emb(D=8, chunks={"time": 2, "y": 10, "x": 15})
    a = e.values
    p = ops.pca(e, 3, sample=100_000)  # more than all cells: the sample is every valid cell
    assert p.dims == ("time", "component", "y", "x") and p.sizes["component"] == 3
    X = np.moveaxis(a, 1, -1).reshape(-1, 8).astype(np.float64)
    X = X[np.isfinite(X).all(1)]
    mu = X.mean(0)
    _, s, vt = np.linalg.svd(X - mu, full_matrices=False)
    V = vt[:3] * np.sign(vt[:3][np.arange(3), np.abs(vt[:3]).argmax(1)])[:, None]
    ref = np.einsum("tdyx,cd->tcyx", a - mu[None, :, None, None], V)
    np.testing.assert_allclose(p.values, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(p.explained_variance_ratio.values, (s**2)[:3] / (s**2).sum(), rtol=1e-6)
    assert np.isnan(p.values[:, :, 0, 0]).all()
    fit = ops.fit_pca(e, 3, sample=100_000)
    np.testing.assert_allclose(fit.components, V, atol=1e-8)
    np.testing.assert_allclose(ops.pca(e.isel(time=2), fit=fit).values, ref[2], rtol=1e-4, atol=1e-4)
    small = ops.fit_pca(e, 3, sample=200, seed=1)
    assert small.n_samples == 200
    again = ops.fit_pca(e, 3, sample=200, seed=1)
    np.testing.assert_array_equal(small.components, again.components)


def test_pca_errors():
    e = make_emb()
    nan = e * np.nan
    nan.attrs = e.attrs
    with pytest.raises(InputError, match="no valid cell"):
        ops.fit_pca(nan)
    lazy = ops.pca(nan)  # lazy: the error comes when the fit is computed
    with pytest.raises(InputError, match="no valid cell"):
        lazy.compute()
    with pytest.raises(InputError, match="n must be"):
        ops.pca(e, 7)
    with pytest.raises(InputError, match="another model"):
        ops.pca(e, fit=ops.fit_pca(make_emb(spec="zzz")))


def test_robust_stretch():
    e = make_emb()
    p = ops.pca(e, 3, sample=100_000)
    r = ops.robust_stretch(p, "component", lo=5, hi=95, sample=10**6).compute()
    v = r.values
    ok = np.isfinite(v)
    assert v[ok].min() == 0 and v[ok].max() == 1 and np.isnan(v[:, :, 0, 0]).all()
    pv = np.moveaxis(p.values, 1, -1).reshape(-1, 3)
    pv = pv[np.isfinite(pv).all(1)]
    np.testing.assert_allclose(r.stretch_lo.values, np.percentile(pv, 5, axis=0), rtol=1e-5)
    np.testing.assert_allclose(r.stretch_hi.values, np.percentile(pv, 95, axis=0), rtol=1e-5)


# --------------------------------------------------------------------------------------
# Areas and transitions
# --------------------------------------------------------------------------------------
def label_cube(lab, crs="EPSG:32618", res=30.0, x0=X0, y0=Y0, classes=("water", "trees", "built")):
    lab = np.asarray(lab)
    ny, nx = lab.shape[-2:]
    coords = {"y": y0 - res * (np.arange(ny) + 0.5), "x": x0 + res * (np.arange(nx) + 0.5)}
    dims = ("y", "x")
    if lab.ndim == 3:
        coords["time"] = DATES[: lab.shape[0]]
        dims = ("time", "y", "x")
    da = as_label_cube(xr.DataArray(lab, dims=dims, coords=coords), list(classes))
    return da.rio.write_crs(crs) if crs else da


def test_cell_area_rules():
    from pyproj import Proj, Transformer

    ea = label_cube(np.zeros((4, 5), np.uint8), crs="EPSG:6933", res=1000.0, x0=0.0, y0=0.0)
    A = ops.cell_area(ea)
    assert "exact" in A.attrs["xeofm:area_method"]
    np.testing.assert_allclose(A.values, 1.0)
    utm = label_cube(np.zeros((30, 40), np.uint8)).chunk({"y": 7, "x": 16})
    A = ops.cell_area(utm)
    assert A.chunks == ((7, 7, 7, 7, 2), (16, 16, 8)) and "EPSG:6933" in A.attrs["xeofm:area_method"]
    X, Y = np.meshgrid(utm.x.values, utm.y.values)
    lon, lat = Transformer.from_crs("EPSG:32618", "EPSG:4326", always_xy=True).transform(X, Y)
    scale = Proj("EPSG:32618").get_factors(lon, lat).areal_scale  # UTM area scale factor
    np.testing.assert_allclose(A.values, 900 / scale / 1e6, rtol=1e-8)
    world = label_cube(np.zeros((180, 360), np.uint8), crs="EPSG:4326", res=1.0, x0=-180.0, y0=90.0)
    assert ops.cell_area(world).values.sum() == pytest.approx(510_065_621.7, rel=1e-6)  # WGS 84 surface
    with pytest.raises(InputError, match="CRS"):
        ops.cell_area(label_cube(np.zeros((3, 3), np.uint8), crs=None))


def test_area_and_transitions_in_km2():
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, (2, 40, 50)).astype(np.uint8)
    lab[:, :2] = 255
    L = label_cube(lab, crs="EPSG:6933", res=100.0, x0=0.0, y0=0.0).chunk({"time": 1, "y": 16, "x": 16})
    cell = 0.01  # km2
    df = ops.area(L)
    assert list(df.index) == ["water", "trees", "built"] and list(df.columns) == list(DATES[:2])
    for t in range(2):
        np.testing.assert_allclose(df.iloc[:, t].values, np.bincount(lab[t][lab[t] < 3], minlength=3) * cell)
    a0 = ops.area(L.isel(time=0))
    np.testing.assert_allclose(a0.area_km2.values, df.iloc[:, 0].values)
    assert a0.fraction.sum() == pytest.approx(1.0) and a0.attrs["nodata_km2"] == pytest.approx(100 * cell)
    tr = ops.transitions(L, "2016-01-01", "2016-04-01")
    ok = (lab[0] < 3) & (lab[1] < 3)
    expect = np.zeros((3, 3))
    np.add.at(expect, (lab[0][ok], lab[1][ok]), cell)
    np.testing.assert_allclose(tr.values, expect)
    assert tr.index.name == "from" and tr.columns.name == "to" and list(tr.index) == ["water", "trees", "built"]
    assert tr.attrs["start"] == "2016-01-01" and tr.attrs["end"] == "2016-04-01"
    np.testing.assert_allclose(ops.transitions(L).values, expect)  # first -> last by default
    # same labels on a UTM grid: areas follow the true cell areas
    U = label_cube(lab, crs="EPSG:32618", res=30.0)
    A = ops.cell_area(U).values
    tr_u = ops.transitions(U)
    expect_u = np.zeros((3, 3))
    np.add.at(expect_u, (lab[0][ok], lab[1][ok]), A[ok])
    np.testing.assert_allclose(tr_u.values, expect_u, rtol=1e-10)


def test_area_uint16_and_errors():
    names = [f"c{i}" for i in range(300)]
    lab = np.arange(600, dtype=np.uint16).reshape(20, 30) % 300
    L = label_cube(lab, crs="EPSG:6933", res=1000.0, x0=0, y0=0, classes=names)
    assert L.dtype == np.uint16
    df = ops.area(L)
    np.testing.assert_allclose(df.area_km2.values, 2.0)
    with pytest.raises(InputError, match="not a label cube"):
        ops.area(xr.DataArray(np.zeros((3, 3), np.uint8), dims=("y", "x")))
    with pytest.raises(MissingDimensionError):
        ops.transitions(L)
    L2 = label_cube(np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(InputError, match="not a label"):
        ops.transitions(L2, "2001-01-01")


def _brute_mode(a, f, nodata):
    ny, nx = a.shape
    out = np.full((-(-ny // f), -(-nx // f)), nodata, a.dtype)
    for i in range(out.shape[0]):
        for j in range(out.shape[1]):
            w = a[i * f : (i + 1) * f, j * f : (j + 1) * f].ravel()
            w = w[w != nodata]
            if w.size:
                c = np.bincount(w)
                out[i, j] = np.flatnonzero(c == c.max())[0]
    return out


def test_coarsen_mode_keeps_class_ids():
    rng = np.random.default_rng(5)
    lab = rng.integers(0, 4, (2, 37, 45)).astype(np.uint8)
    lab[:, 10:20, 10:20] = 255
    L = label_cube(lab, classes=("a", "b", "c", "d")).chunk({"time": 1, "y": 10, "x": 13})
    for f in (2, 3, 5):
        c = ops.coarsen_mode(L, f)
        assert c.dtype == np.uint8 and c.attrs["xeofm:classes"] == ["a", "b", "c", "d"]
        v = c.values
        assert set(np.unique(v)) <= {0, 1, 2, 3, 255}
        for t in range(2):
            np.testing.assert_array_equal(v[t], _brute_mode(lab[t], f, 255))
        np.testing.assert_allclose(c.x.values[0], L.x.values[: f].mean())
        np.testing.assert_allclose(np.diff(c.y.values), -30.0 * f)
    # chunk-invariant
    np.testing.assert_array_equal(ops.coarsen_mode(L.chunk({"y": 37, "x": 45}), 3).values, ops.coarsen_mode(L, 3).values)
