"""Label cubes: segment(), zero-shot classify(), probes, and their errors."""

from __future__ import annotations

import dask
import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.errors import InputError, SpecError
from xeofm.probe import Probe, fit_probe, predict
from xeofm.segment import classify, segment

from .conftest import CountingScheduler, PatchLinear, TinyEncoder, make_cube

torch = pytest.importorskip("torch")


class Brightness(torch.nn.Module):
    """Per-pixel logits [dark, bright] = [-m, m], m = mean over bands."""

    def forward(self, x):
        m = x.mean(dim=1, keepdim=True)
        return torch.cat([-m, m], dim=1)


@pytest.fixture(scope="module")
def bright_spec():
    return xeofm.wrap(
        Brightness(), bands=["red", "green", "blue"], chip_size=32, stride=1, embedding_dim=2,
        scale=1e-4, mean=[0.5] * 3, std=[0.25] * 3, metadata={"classes": ["dark", "bright"], "colors": ["#000000", "#ffffff"]},
        name="brightness",
    )


def test_segment_labels_are_argmax_of_logits(bright_spec):
    cube = make_cube(70, 90).astype("float32")
    cube[:, :5, :5] = np.nan
    with dask.config.set(scheduler=CountingScheduler(0)):
        lab = segment(cube, bright_spec)
    assert lab.name == "labels" and lab.dtype == np.uint8 and lab.dims == ("y", "x")
    v = lab.values
    m = ((cube.values * 1e-4 - 0.5) / 0.25).mean(axis=0)
    want = np.where(m > 0, 1, 0)
    assert (v[:5, :5] == 255).all()
    ok = np.isfinite(m)
    np.testing.assert_array_equal(v[ok], want[ok])
    assert lab.attrs["xeofm:classes"] == ["dark", "bright"]
    assert lab.attrs["xeofm:colors"] == ["#000000", "#ffffff"]
    assert lab.attrs["flag_meanings"] == "dark bright" and lab.attrs["_FillValue"] == 255
    assert lab.rio.crs == cube.rio.crs
    np.testing.assert_array_equal(lab.x, cube.x)


def test_segment_probabilities(bright_spec):
    cube = make_cube(40, 40)
    p = segment(cube, bright_spec, probabilities=True)
    assert p.name == "probabilities" and p.dims == ("class", "y", "x")
    assert list(p["class"].values) == ["dark", "bright"]
    np.testing.assert_allclose(p.sum("class").values, 1.0, rtol=1e-6)


def test_segment_logits_blended_before_argmax_chunk_invariant():
    torch.manual_seed(0)
    spec = xeofm.wrap(TinyEncoder(dim=5), bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=5,
                      scale=1e-4, metadata={"classes": list("abcde")})
    cube = make_cube(90, 75, nt=2)
    ref = segment(cube, spec, probabilities=True, block_size=512).values
    got = segment(cube.chunk({"x": 20, "y": 33}), spec, probabilities=True, block_size=40, batch_size=3).values
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    lab = segment(cube.chunk({"x": 20}), spec, block_size=40).values
    np.testing.assert_array_equal(lab, ref.argmax(axis=1))


def test_segment_refuses_encoder(tiny_spec):
    with pytest.raises(SpecError, match="no classes.*encoder"):
        segment(make_cube(40, 40), tiny_spec)


def test_many_classes_use_uint16_and_too_many_refused():
    from xeofm.labels import label_dtype

    assert label_dtype(255) == (np.dtype("uint8"), 255)
    assert label_dtype(256) == (np.dtype("uint16"), 65535)
    with pytest.raises(InputError, match="65536 classes do not fit"):
        label_dtype(65536)


# ------------------------------------------------------------------------- zero-shot
class FakeClipImage(torch.nn.Module):
    """Image tower: pooled colour direction (r, g, b) as a 3-D embedding."""

    def forward(self, x):
        return x.mean(dim=(2, 3))


def _fake_encode_text(model, texts, templates=None, **kwargs):
    table = {"red things": [1, 0, 0], "green things": [0, 1, 0], "blue things": [0, 0, 1]}
    return np.array([table[t] for t in texts], dtype=np.float32)


def test_classify_zero_shot_with_unknown(monkeypatch):
    monkeypatch.setattr(xeofm.models, "encode_text", _fake_encode_text, raising=False)
    spec = xeofm.wrap(FakeClipImage(), bands=["red", "green", "blue"], chip_size=16, stride=16, embedding_dim=3,
                      output="vector", name="fakeclip")
    cube = make_cube(32, 48).astype("float32")
    cube[:] = 0
    cube.loc[{"band": "red"}] = 1.0
    cube[2, :16, 16:32] = 5.0  # a blue chip
    cube[:, 16:, 32:] = 1.0  # a grey chip: cosine 0.577 to every class
    lab = classify(cube, ["red things", "green things", "blue things"], model=spec, unknown_below=0.8)
    assert lab.attrs["xeofm:classes"] == ["red things", "green things", "blue things", "unknown"]
    v = lab.values
    assert v.shape == (2, 3)
    assert v[0, 0] == 0 and v[0, 1] == 2 and v[1, 2] == 3
    probs = classify(cube, ["red things", "green things", "blue things"], model=spec, probabilities=True)
    np.testing.assert_allclose(probs.sum("class").values, 1.0, rtol=1e-5)


def test_classify_without_text_tower(monkeypatch, tiny_spec):
    def no_text(model, texts, templates=None, **kwargs):
        raise SpecError(f"model {model.name!r} has no text tower")

    monkeypatch.setattr(xeofm.models, "encode_text", no_text, raising=False)
    with pytest.raises(SpecError, match="no text tower"):
        classify(make_cube(40, 40), ["water"], model=tiny_spec)


# ----------------------------------------------------------------------------- probes
def _halves_cube():
    cube = make_cube(64, 128, seed=5)
    noise = np.random.default_rng(5).integers(0, 1000, size=cube.shape)
    vals = np.where(np.arange(128) < 64, 6000, 1500) + noise  # the right half is darker
    return cube.copy(data=vals.astype("uint16"))


def _labels_gdf(cube, crs=None):
    gpd = pytest.importorskip("geopandas")
    from shapely.geometry import Point, box

    x0, x1 = float(cube.x.min()), float(cube.x.max())
    y0, y1 = float(cube.y.min()), float(cube.y.max())
    xm = (x0 + x1) / 2
    rng = np.random.default_rng(0)
    geoms, cls = [], []
    for _ in range(30):
        geoms.append(Point(rng.uniform(x0, xm - 200), rng.uniform(y0, y1)))
        cls.append("bright")
        geoms.append(Point(rng.uniform(xm + 200, x1), rng.uniform(y0, y1)))
        cls.append("dark")
    geoms.append(box(x0, y0, x0 + 300, y0 + 300))
    cls.append("bright")
    gdf = gpd.GeoDataFrame({"landcover": cls}, geometry=geoms, crs=cube.rio.crs)
    return gdf.to_crs(crs) if crs else gdf


@pytest.mark.parametrize("method", ["linear", "knn"])
def test_probe_learns_and_predicts_lazily(method, linear_spec):
    cube = _halves_cube()
    emb = cube.eofm.embed(linear_spec, overlap=0)
    gdf = _labels_gdf(cube, crs="EPSG:4326")  # labels in another CRS
    probe = fit_probe(emb, gdf, "landcover", method=method)
    assert probe.classes == ["bright", "dark"]
    assert probe.report["accuracy"] >= 0.95 and probe.report["n_test"] > 10
    cm = np.array(probe.report["confusion_matrix"])
    assert cm.sum() == probe.report["n_test"]
    with dask.config.set(scheduler=CountingScheduler(0)):
        lab = predict(emb, probe)
    v = lab.values
    assert (v[:, :7] == 0).mean() > 0.95 and (v[:, 9:] == 1).mean() > 0.95
    assert lab.attrs["xeofm:classes"] == ["bright", "dark"]


def test_probe_roundtrip_json(tmp_path, linear_spec):
    cube = _halves_cube()
    emb = cube.eofm.embed(linear_spec, overlap=0)
    probe = fit_probe(emb, _labels_gdf(cube), "landcover")
    probe.save(tmp_path / "p.json")
    again = Probe.load(tmp_path / "p.json")
    np.testing.assert_array_equal(predict(emb, again).values, predict(emb, probe).values)


def test_probe_bad_input(linear_spec, tiny_spec):
    gpd = pytest.importorskip("geopandas")
    from shapely.geometry import Point

    cube = _halves_cube()
    emb = cube.eofm.embed(linear_spec, overlap=0)
    gdf = _labels_gdf(cube)
    with pytest.raises(InputError, match="single class"):
        fit_probe(emb, gdf[gdf.landcover == "dark"], "landcover")
    with pytest.raises(InputError, match="empty"):
        fit_probe(emb, gdf.iloc[:0], "landcover")
    far = gpd.GeoDataFrame({"landcover": ["a", "b"]}, geometry=[Point(0, 0), Point(1, 1)], crs=cube.rio.crs)
    with pytest.raises(InputError, match="none of the labels fall inside"):
        fit_probe(emb, far, "landcover")
    with pytest.raises(InputError, match="no column 'lc'"):
        fit_probe(emb, gdf, "lc")
    probe = fit_probe(emb, gdf, "landcover")
    other = cube.eofm.embed(tiny_spec)
    with pytest.raises(InputError, match="trained on embeddings of 'lin'"):
        predict(other, probe)
