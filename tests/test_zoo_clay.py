"""Clay v1.5: spec, date/place codes, the authors' reference encoder, bad input.

The reference-equality tests load the authors' ``claymodel`` 1.5.0 files
(``model.py``, ``factory.py``, ``backbone.py``, ``utils.py``; they import each
other as ``src.*``) from ``.venv/ref/claymodel`` or from the folder in
``$XEOFM_CLAY_REF``, with ``src`` shim modules present only while they load.
Without the folder these tests are skipped.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import math
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.errors import MissingBandsError

torch = pytest.importorskip("torch")

from xeofm.models import clay  # noqa: E402

_DEFAULT_REF = Path(__file__).resolve().parents[1] / ".venv" / "ref" / "claymodel"
TINY = dict(patch_size=8, dim=40, depth=2, heads=4, dim_head=16, mlp_ratio=2)
CHIP = 32
DATE = "2021-03-19"  # the sample's ACQUISITION_DATE
SAMPLE_BANDS = ["blue", "green", "red", "nir", "swir16", "swir22"]


@pytest.fixture(scope="module")
def ref_model():
    """The authors' ``src.model`` module (``Encoder``), loaded file by file."""
    folder = Path(os.environ.get("XEOFM_CLAY_REF") or _DEFAULT_REF)
    if not (folder / "model.py").is_file():
        pytest.skip(f"Clay reference code not found at {folder} (set XEOFM_CLAY_REF to claymodel 1.5.0's folder)")
    for dep in ("einops", "timm", "torchvision"):
        pytest.importorskip(dep)
    with pytest.MonkeyPatch.context() as mp:
        src = types.ModuleType("src")
        src.__path__ = []  # a package, so "from src.x import y" resolves through sys.modules
        mp.setitem(sys.modules, "src", src)
        mods = {}
        for name in ("utils", "backbone", "factory", "model"):
            spec = importlib.util.spec_from_file_location(f"src.{name}", folder / f"{name}.py")
            mod = importlib.util.module_from_spec(spec)
            mp.setitem(sys.modules, f"src.{name}", mod)
            spec.loader.exec_module(mod)
            mods[name] = mod
        yield mods["model"]


def _ref_encoder(ref_model, seed=0, **kw):
    torch.manual_seed(seed)
    args = dict(TINY, mask_ratio=0.0, shuffle=False)
    args.update(kw)
    return ref_model.Encoder(**args).eval()


def _tiny_spec(**changes):
    """``clay-v1.5`` on the sample's six bands with a tiny architecture (fast forward passes)."""
    base = clay.for_bands(SAMPLE_BANDS)
    kw = dict(base.builder_kwargs)
    kw.update(TINY)
    return base.replace(
        name="clay-v1.5-tiny-test", builder_kwargs=kw, chip_size=CHIP, embedding_dim=TINY["dim"], overlap=0,
        **changes,
    )


def _sample_chip(with_time=True) -> xr.DataArray:
    """A 32 x 32 crop of the shipped Sentinel-2 sample (fill pixels set to the crop's band medians)."""
    s2 = xeofm.data.sample_cube("sentinel2").load()
    chip = s2.isel(y=slice(13, 13 + CHIP), x=slice(40, 40 + CHIP)).astype("float32")
    vals = chip.values
    for b in range(vals.shape[0]):
        vals[b][vals[b] == 0] = np.median(vals[b][vals[b] > 0])
    chip = chip.copy(data=vals)
    chip.attrs = {}
    chip = chip.rio.write_crs(s2.rio.crs)
    if with_time:
        chip = chip.expand_dims(time=np.array([DATE], dtype="datetime64[ns]"))
    return chip


# Clay's tutorial functions (normalize_timestamp / normalize_latlon), written out independently
def _clay_time(date: dt.datetime):
    week = date.isocalendar().week * 2 * np.pi / 52
    hour = date.hour * 2 * np.pi / 24
    return [math.sin(week), math.cos(week), math.sin(hour), math.cos(hour)]


def _clay_latlon(lat, lon):
    lat, lon = lat * np.pi / 180, lon * np.pi / 180
    return [math.sin(lat), math.cos(lat), math.sin(lon), math.cos(lon)]


def _chip_centre_latlon(chip):
    from pyproj import Transformer

    dx = float(chip.x[1] - chip.x[0])
    dy = float(chip.y[1] - chip.y[0])
    cx = float(chip.x[0]) - dx / 2 + CHIP / 2 * dx
    cy = float(chip.y[0]) - dy / 2 + CHIP / 2 * dy
    lon, lat = Transformer.from_crs(chip.rio.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
    return lat, lon


def _normalised(chip, spec):
    raw = torch.tensor(np.asarray(chip.values, dtype="float32")).reshape(1, len(spec.bands), CHIP, CHIP)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, -1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(1, -1, 1, 1)
    return (raw - mean) / std


def _rel(a, b):
    a, b = np.asarray(a, dtype="float64"), np.asarray(b, dtype="float64")
    return float(np.abs(a - b).max() / np.abs(b).max())


def _save_lightning_ckpt(ref, path):
    """Clay's release layout: a Lightning checkpoint with the whole ClayMAE under ``model.``."""
    sd = {f"model.encoder.{k}": v for k, v in ref.state_dict().items()}
    sd["model.decoder.mask_patch"] = torch.zeros(8)
    sd["model.teacher.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    sd["model.proj.weight"] = torch.zeros(4, TINY["dim"])
    torch.save({"state_dict": sd, "epoch": 1, "hyper_parameters": {"model_size": "tiny", "mask_ratio": 0.75}}, path)


# --------------------------------------------------------------------------------------
# Spec and codes
# --------------------------------------------------------------------------------------
def test_registered_spec():
    s = xeofm.models.get_spec("clay-v1.5")
    assert s.band_ids == ["B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"]
    assert [b.common_name for b in s.bands] == [
        "blue", "green", "red", "rededge1", "rededge2", "rededge3", "nir", "nir08", "swir16", "swir22"]
    # Clay's configs/metadata.yaml, sentinel-2-l2a: wavelengths in micrometres, as the encoder was trained
    assert [b.wavelength for b in s.bands] == [0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19]
    assert s.mean == (1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0)
    assert s.std == (1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0)
    assert (s.chip_size, s.stride, s.embedding_dim) == (256, 8, 1024)
    assert (s.output, s.prefix_tokens, s.gsd) == ("tokens", 1, 10.0)
    assert s.aux == ("wavelengths", "gsd", "time", "latlon")
    assert (s.licence, s.weights_file) == ("Apache-2.0", "clay-v1.5.ckpt")
    md = dict(s.metadata)
    assert md["remap"] == "xeofm.models.clay:remap_checkpoint"
    assert (md["hf_repo"], md["hf_file"]) == ("made-with-clay/Clay", "v1.5/clay-v1.5.ckpt")


def test_for_bands_uses_clay_wavelengths_and_statistics():
    s = clay.for_bands(["B02", "nir", "swir22"])
    assert [b.wavelength for b in s.bands] == [0.493, 0.842, 2.19]
    assert (s.mean, s.std) == ((1105.0, 2743.0, 1835.0), (1809.0, 1742.0, 1379.0))
    other = clay.for_bands([xeofm.Band("pan", None, 0.6)], mean=[100.0], std=[50.0])
    assert other.bands[0].wavelength == 0.6 and other.mean == (100.0,)


def test_date_and_place_codes():
    # 2021-03-19 is in ISO week 11; 2020-12-31 in ISO week 53; 2021-01-01 in ISO week 53 of 2020
    for date in ("2021-03-19", "2020-12-31", "2021-01-01", "2024-07-01"):
        d = dt.datetime.fromisoformat(date)
        got = clay.encode_time(d.year, d.timetuple().tm_yday)
        np.testing.assert_allclose(got, _clay_time(d), atol=1e-12)
    np.testing.assert_allclose(clay.encode_time(2021, 78, hour=10), _clay_time(dt.datetime(2021, 3, 19, 10)))
    np.testing.assert_allclose(clay.encode_latlon(-28.9, 31.5), _clay_latlon(-28.9, 31.5), atol=1e-12)


def test_remap_keeps_the_encoder_only():
    sd = {"model.encoder.cls_token": 1, "model.encoder.transformer.norm.weight": 2, "model.decoder.mask_patch": 3,
          "model.teacher.cls_token": 4, "model.proj.weight": 5}
    assert clay.remap_checkpoint(sd) == {"cls_token": 1, "transformer.norm.weight": 2}
    assert clay.remap_checkpoint({"cls_token": 1}) == {"cls_token": 1}


def test_full_size_on_meta(ref_model):
    spec = xeofm.models.get_spec("clay-v1.5")
    with torch.device("meta"):
        mine = clay.build_clay(**dict(spec.builder_kwargs))
        ref = ref_model.Encoder(mask_ratio=0.0, patch_size=8, shuffle=False, dim=1024, depth=24, heads=16,
                                dim_head=64, mlp_ratio=4)
        out = mine(torch.empty(1, 10, 256, 256), torch.empty(10), 10.0)
    assert {k: tuple(v.shape) for k, v in mine.state_dict().items()} == {
        k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert sum(p.numel() for p in mine.parameters()) == 311_442_944  # "encoder 311M"
    assert tuple(out.shape) == (1, 1 + 32 * 32, 1024)


# --------------------------------------------------------------------------------------
# Against the authors' code
# --------------------------------------------------------------------------------------
def test_module_equals_reference_through_a_lightning_checkpoint(tmp_path, ref_model):
    ref = _ref_encoder(ref_model)
    path = tmp_path / "clay-v1.5.ckpt"
    _save_lightning_ckpt(ref, path)
    spec = _tiny_spec()
    model = xeofm.load_model(spec, weights=path)

    chip = _sample_chip()
    x = _normalised(chip, spec)
    x = torch.cat([x, x.flip(-1)])  # a batch of two
    waves = torch.tensor([b.wavelength for b in spec.bands], dtype=torch.float32)
    lat, lon = _chip_centre_latlon(chip)
    d = dt.datetime.fromisoformat(DATE)
    ref_in = {
        "pixels": x,
        "time": torch.tensor([_clay_time(d)] * 2, dtype=torch.float32),
        "latlon": torch.tensor([_clay_latlon(lat, lon), _clay_latlon(-lat, lon + 100)], dtype=torch.float32),
        "gsd": torch.tensor(30.0),
        "waves": waves,
    }
    with torch.no_grad():
        want = ref(ref_in)[0]
        # the engine's form: (B, T, 2) year/day of year, (B, 2) degrees, a float GSD
        got = model(
            x, wavelengths=waves, gsd=30.0,
            time=torch.tensor([[[2021.0, 78.0]]] * 2),
            latlon=torch.tensor([[lat, lon], [-lat, lon + 100]], dtype=torch.float32),
        )
        # Clay's own (B, 4) codes are passed through
        got4 = model(x, waves, 30.0, ref_in["time"], ref_in["latlon"])
        # no date / place: zeros, Clay's "unknown" convention
        want0 = ref({**ref_in, "time": torch.zeros(2, 4), "latlon": torch.zeros(2, 4)})[0]
        got0 = model(x, waves, 30.0)
    assert tuple(got.shape) == (2, 1 + (CHIP // 8) ** 2, TINY["dim"])
    for a, b in ((got, want), (got4, want), (got0, want0)):
        assert _rel(a, b) < 1e-5
    assert _rel(got0, want) > 1e-4  # date and place matter


def test_embed_equals_reference_patch_tokens(tmp_path, ref_model):
    ref = _ref_encoder(ref_model, seed=1)
    path = tmp_path / "clay-v1.5.ckpt"
    _save_lightning_ckpt(ref, path)
    spec = _tiny_spec()
    chip = _sample_chip()
    emb = chip.eofm.embed(spec, weights=path).values  # (time, embedding, y, x): one chip
    assert emb.shape == (1, TINY["dim"], CHIP // 8, CHIP // 8)

    lat, lon = _chip_centre_latlon(chip)
    ref_in = {
        "pixels": _normalised(chip, spec),
        "time": torch.tensor([_clay_time(dt.datetime.fromisoformat(DATE))], dtype=torch.float32),
        "latlon": torch.tensor([_clay_latlon(lat, lon)], dtype=torch.float32),
        "gsd": torch.tensor(abs(float(chip.x[1] - chip.x[0]))),  # the cube's 30 m pixels
        "waves": torch.tensor([0.493, 0.56, 0.665, 0.842, 1.61, 2.19]),
    }
    with torch.no_grad():
        tokens = ref(ref_in)[0]
    g = CHIP // 8
    want = tokens[0, 1:].reshape(g, g, -1).permute(2, 0, 1).numpy()
    assert _rel(emb[0], want) < 1e-5

    # the same chip without a time dim, on a spec that does not take dates: time code zeros
    no_time = spec.replace(aux=("wavelengths", "gsd", "latlon"))
    emb0 = _sample_chip(with_time=False).eofm.embed(no_time, weights=path).values
    with torch.no_grad():
        tokens0 = ref({**ref_in, "time": torch.zeros(1, 4)})[0]
    assert _rel(emb0, tokens0[0, 1:].reshape(g, g, -1).permute(2, 0, 1).numpy()) < 1e-5


# --------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------
def test_missing_bands_are_named():
    spec = xeofm.models.get_spec("clay-v1.5").replace(
        builder_kwargs={**TINY, "gsd": 10.0}, chip_size=CHIP, embedding_dim=TINY["dim"], overlap=0,
    )
    chip = _sample_chip()  # six of the ten bands: no red edge, no nir08
    with pytest.raises(MissingBandsError, match=r"B05 \(tried B05, rededge1.*B07 .*B8A \(tried B8A, nir08") as err:
        chip.eofm.embed(spec, pretrained=False)
    assert "B02" not in str(err.value) and "B12" not in str(err.value)  # the bands the cube has are not listed


def test_wrong_number_of_wavelengths():
    model = clay.build_clay(**TINY).eval()
    with pytest.raises(ValueError, match="6 bands but 3 wavelengths"):
        model(torch.zeros(1, 6, CHIP, CHIP), torch.tensor([0.49, 0.56, 0.665]))
    with pytest.raises(ValueError, match="wavelengths"):
        model(torch.zeros(1, 6, CHIP, CHIP))


def test_acquisition_hour_reaches_the_time_code(tmp_path, ref_model):
    """The engine passes the hour of the cube's timestamps; Clay encodes its integer hour."""
    ref = _ref_encoder(ref_model, seed=2)
    path = tmp_path / "clay-v1.5.ckpt"
    _save_lightning_ckpt(ref, path)
    spec = _tiny_spec()
    when = dt.datetime(2021, 3, 19, 10, 47)
    chip = _sample_chip().assign_coords(time=np.array([when], dtype="datetime64[ns]"))
    emb = chip.eofm.embed(spec, weights=path).values
    lat, lon = _chip_centre_latlon(chip)
    ref_in = {
        "pixels": _normalised(chip, spec),
        "time": torch.tensor([_clay_time(when)], dtype=torch.float32),
        "latlon": torch.tensor([_clay_latlon(lat, lon)], dtype=torch.float32),
        "gsd": torch.tensor(abs(float(chip.x[1] - chip.x[0]))),
        "waves": torch.tensor([0.493, 0.56, 0.665, 0.842, 1.61, 2.19]),
    }
    g = CHIP // 8
    with torch.no_grad():
        want = ref(ref_in)[0][0, 1:].reshape(g, g, -1).permute(2, 0, 1).numpy()
        at_midnight = ref({**ref_in, "time": torch.tensor([_clay_time(when.replace(hour=0))])})[0]
    assert _rel(emb[0], want) < 1e-5
    assert _rel(emb[0], at_midnight[0, 1:].reshape(g, g, -1).permute(2, 0, 1).numpy()) > 1e-4
