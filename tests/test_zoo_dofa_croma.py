"""DOFA and CROMA: specs, checkpoint layouts and equality with torchgeo 0.8.1's implementations.

The reference tests load ``torchgeo/models/dofa.py`` and ``torchgeo/models/croma.py``
on their own (they need only torch, timm, torchvision and einops), so
``pip install --no-deps torchgeo==0.8.1 einops`` is enough to run them; without
torchgeo they are skipped.
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.errors import MissingBandsError

from .conftest import make_cube

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from xeofm.models import croma, dofa  # noqa: E402

S2_L1C = ["B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12"]
UPSTREAM_S2_WAVELENGTHS = [0.665, 0.56, 0.49, 0.705, 0.74, 0.783, 0.842, 1.61, 2.19]  # DOFA README demo


def _torchgeo(module: str):
    """``torchgeo/models/<module>.py`` loaded alone (no torchgeo package import: no lightning, rasterio...)."""
    spec = importlib.util.find_spec("torchgeo")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("reference not installed: pip install --no-deps torchgeo==0.8.1 einops")
    if module == "croma":
        pytest.importorskip("einops")
    path = os.path.join(spec.submodule_search_locations[0], "models", f"{module}.py")
    loader = importlib.util.spec_from_file_location(f"_reference_torchgeo_{module}", path)
    mod = importlib.util.module_from_spec(loader)
    loader.loader.exec_module(mod)
    return mod


def _rel(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(np.abs(a - b).max() / np.abs(b).max())


# ======================================================================================
# DOFA
# ======================================================================================
def _tiny_dofa(spec):
    kw = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 4}
    return spec.replace(builder_kwargs=kw, chip_size=32, stride=8, embedding_dim=64, overlap=0)


def _torchgeo_dofa_file(tmp_path, name="dofa_base_patch16_224-a0275954.pth"):
    ref_mod = _torchgeo("dofa")
    torch.manual_seed(0)
    ref = ref_mod.DOFA(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=4).eval()
    with torch.no_grad():  # torchgeo leaves these at zeros/identity; give them values worth loading
        ref.pos_embed.normal_(std=0.5)
        ref.fc_norm.weight.normal_()
    path = tmp_path / name
    torch.save(ref.state_dict(), str(path))
    return ref, path


def _last_block_tokens(ref, x, wavelengths):
    seen = {}
    handle = ref.blocks[-1].register_forward_hook(lambda m, i, o: seen.__setitem__("tokens", o))
    with torch.no_grad():
        pooled = ref.forward_features(x, wavelengths)
    handle.remove()
    return seen["tokens"], pooled


def test_dofa_specs():
    for name, dim in (("dofa-base", 768), ("dofa-large", 1024)):
        s = xeofm.models.get_spec(name)
        assert [b.id for b in s.bands] == ["B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12"]
        assert [b.wavelength for b in s.bands] == UPSTREAM_S2_WAVELENGTHS
        assert (s.aux, s.output, s.prefix_tokens, s.chip_size, s.stride, s.embedding_dim) == (
            ("wavelengths",), "tokens", 1, 224, 16, dim,
        )
        # upstream 8-bit statistics (SatlasPretrain images) expressed in raw DN:
        # TCI bands B04/B03/B02 are DN * 255 / 2000, the others DN / 32
        assert s.mean[0] == pytest.approx(114.1099739 * 2000 / 255)
        assert s.std[2] == pytest.approx(67.42465279 * 2000 / 255)
        assert s.mean[3] == pytest.approx(84.33539309 * 32)
        assert s.std[8] == pytest.approx(42.55886798 * 32)
        assert s.licence == "CC-BY-4.0"


@pytest.mark.parametrize("name, params", [("dofa-base", 111_310_592), ("dofa-large", 337_103_360)])
def test_dofa_full_size_on_meta(name, params):
    spec = xeofm.models.get_spec(name)
    with torch.device("meta"):
        model = dofa.build_dofa(**dict(spec.builder_kwargs))
        out = model(torch.empty(1, 9, 224, 224), torch.empty(9))
    # torchgeo's dofa_*_patch16_224 less its classification head and fc_norm
    # (111.3M and 337.2M with them, as measured in the model notes)
    assert sum(p.numel() for p in model.parameters()) == params
    assert tuple(out.shape) == (1, 197, spec.embedding_dim)


def test_dofa_equals_torchgeo_on_sentinel2_nine_bands(tmp_path):
    ref, path = _torchgeo_dofa_file(tmp_path)
    spec = _tiny_dofa(xeofm.models.get_spec("dofa-base"))
    cube = make_cube(32, 32, bands=S2_L1C, seed=4)  # L1C order; the spec picks and reorders 9 bands
    emb = cube.eofm.embed(spec, weights=path).values

    order = [S2_L1C.index(b) for b in ("B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12")]
    raw = torch.tensor(cube.values[order].astype("float32"))[None]
    mean = torch.tensor(dofa.S2_MEAN, dtype=torch.float32).view(1, 9, 1, 1)
    std = torch.tensor(dofa.S2_STD, dtype=torch.float32).view(1, 9, 1, 1)
    tokens, pooled = _last_block_tokens(ref, (raw - mean) / std, UPSTREAM_S2_WAVELENGTHS)
    want = tokens[0, 1:].reshape(4, 4, 64).permute(2, 0, 1).numpy()
    assert _rel(emb, want) < 1e-5
    # torchgeo's pooled output is fc_norm(mean of these tokens)
    with torch.no_grad():
        np.testing.assert_allclose(ref.fc_norm(torch.tensor(emb).mean(dim=(1, 2))), pooled[0], rtol=1e-4, atol=1e-4)


def test_dofa_any_band_subset_by_replacing_bands(tmp_path):
    """Six bands of the shipped Sentinel-2 sample, a band set DOFA has no registered spec for."""
    ref, path = _torchgeo_dofa_file(tmp_path)
    s2 = xeofm.data.sample_cube("sentinel2").load()
    chip = s2.isel(y=slice(13, 45), x=slice(40, 72)).astype("float32")
    chip = chip.where(chip > 0, float(np.median(chip.values[chip.values > 0])))
    chip = chip.assign_coords(band=["B02", "B03", "B04", "B08", "B11", "B12"])
    chip.attrs = {}
    mean = [float(v) for v in chip.mean(dim=("y", "x")).values]
    std = [float(v) for v in chip.std(dim=("y", "x")).values]
    spec = _tiny_dofa(dofa.for_bands(["B02", "B03", "B04", "B08", "B11", "B12"], mean=mean, std=std))
    assert [b.wavelength for b in spec.bands] == [0.49, 0.56, 0.665, 0.842, 1.61, 2.19]
    emb = chip.eofm.embed(spec, weights=path).values

    x = (torch.tensor(chip.values)[None] - torch.tensor(mean).view(1, 6, 1, 1)) / torch.tensor(std).view(1, 6, 1, 1)
    tokens, _ = _last_block_tokens(ref, x, [0.49, 0.56, 0.665, 0.842, 1.61, 2.19])
    assert _rel(emb, tokens[0, 1:].reshape(4, 4, 64).permute(2, 0, 1).numpy()) < 1e-5
    # the same spec with the 9-band ordering of wavelengths would give different numbers
    tokens_wrong, _ = _last_block_tokens(ref, x, [0.665, 0.56, 0.49, 0.842, 1.61, 2.19])
    assert _rel(emb, tokens_wrong[0, 1:].reshape(4, 4, 64).permute(2, 0, 1).numpy()) > 1e-3


def test_dofa_remap_drops_heads_and_pretraining_parts():
    sd = {"blocks.0.norm1.weight": 1, "head.weight": 2, "fc_norm.bias": 3, "norm.weight": 4, "mask_token": 5,
          "projector.weight": 6, "patch_embed.fclayer.w1.weight": 7, "cls_token": 8}
    assert dofa.remap_checkpoint(sd) == {"blocks.0.norm1.weight": 1, "patch_embed.fclayer.w1.weight": 7, "cls_token": 8}


# ======================================================================================
# CROMA
# ======================================================================================
def _tiny_croma(name):
    spec = xeofm.models.get_spec(name)
    kw = dict(spec.builder_kwargs)
    kw.update(encoder_dim=64, encoder_depth=2, image_size=48)
    return spec.replace(builder_kwargs=kw, chip_size=48, embedding_dim=64, overlap=0)


def _s1_s2_dataset(n=48, seed=0):
    """One Dataset with Sentinel-1 (dB) and Sentinel-2 L1C (DN) variables, as odc-stac would give."""
    rng = np.random.default_rng(seed)
    base = make_cube(n, n, bands=["x"])
    ds = xr.Dataset(coords={k: base[k] for k in ("y", "x", "spatial_ref")})
    for b in [b for b in S2_L1C if b != "B10"]:
        ds[b] = (("y", "x"), rng.integers(200, 6000, (n, n)).astype("uint16"))
    ds["vv"] = (("y", "x"), rng.normal(-12, 5, (n, n)).astype("float32"))
    ds["vh"] = (("y", "x"), rng.normal(-20, 6, (n, n)).astype("float32"))
    return ds.rio.write_crs("EPSG:32633")


def _upstream_normalise(x, mean, std):
    """CROMA README: per band, (x - (m - 2s)) / ((m + 2s) - (m - 2s)), clipped to [0, 1]."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return ((x - (m - 2 * s)) / ((m + 2 * s) - (m - 2 * s))).clip(0, 1)


def test_croma_specs():
    joint, s2, s1 = (xeofm.models.get_spec(n) for n in ("croma-base", "croma-base-s2", "croma-base-s1"))
    assert joint.band_ids == ["VV", "VH"] + [b for b in S2_L1C if b != "B10"]
    assert s2.band_ids == joint.band_ids[2:] and s1.band_ids == ["VV", "VH"]
    for s in (joint, s2, s1):
        assert (s.chip_size, s.stride, s.output, s.prefix_tokens, s.gsd) == (120, 8, "tokens", 0, 10.0)
    # SSL4EO-S12 statistics folded as (x - (m - 2s)) / 4s
    assert joint.mean[0] == pytest.approx(-12.54847273 - 2 * 5.25697717)
    assert joint.std[0] == pytest.approx(4 * 5.25697717)
    assert s2.mean[0] == pytest.approx(1605.57504906 - 2 * 786.78685367)
    assert s2.std[-1] == pytest.approx(4 * 1136.53823676)
    assert xeofm.models.get_spec("croma-large").embedding_dim == 1024


@pytest.mark.parametrize("name, params", [("croma-base", 194_365_440), ("croma-large-s2", None)])
def test_croma_full_size_on_meta(name, params):
    spec = xeofm.models.get_spec(name)
    with torch.device("meta"):
        model = croma.build_croma(**dict(spec.builder_kwargs))
        out = model(torch.empty(1, len(spec.bands), 120, 120))
    assert tuple(out.shape) == (1, 225, spec.embedding_dim)
    if params:  # torchgeo croma_base with both modalities: 194.4M (model notes)
        assert sum(p.numel() for p in model.parameters()) == params


def test_alibi_is_distance_times_slope():
    bias = croma.alibi_2d(16, 3)[0].numpy()
    slopes = [2 ** (-0.5 * (h + 1)) for h in range(16)]  # 2^(-8/16 * (h+1)) for 16 heads
    # patch 1 is (0, 1), patch 5 is (1, 2): distance sqrt(2)
    np.testing.assert_allclose(bias[:, 1, 5], [-np.sqrt(2) * s for s in slopes], rtol=1e-6)
    assert (np.diagonal(bias, axis1=1, axis2=2) == 0).all()


@pytest.fixture
def croma_file(tmp_path):
    """torchgeo's CROMA (tiny) with random weights, saved in the authors' nested layout."""
    ref_mod = _torchgeo("croma")
    torch.manual_seed(0)
    ref = ref_mod.CROMA(modalities=["sar", "optical"], encoder_dim=64, encoder_depth=2, num_heads=16, image_size=48).eval()
    sd = ref.state_dict()
    nested = {
        part: {k.split(".", 1)[1]: v for k, v in sd.items() if k.split(".", 1)[0] == part}
        for part in ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder")
    }
    path = tmp_path / "CROMA_base.pt"
    torch.save(nested, str(path))
    return ref, path


@pytest.mark.parametrize(
    "name, key", [("croma-base", "joint_encodings"), ("croma-base-s2", "optical_encodings"), ("croma-base-s1", "sar_encodings")]
)
def test_croma_equals_torchgeo_from_one_dataset(croma_file, name, key):
    ref, path = croma_file
    spec = _tiny_croma(name)
    ds = _s1_s2_dataset()
    emb = ds.eofm.embed(spec, weights=path).values

    s1 = _upstream_normalise(torch.tensor(np.stack([ds.vv.values, ds.vh.values]))[None], croma.SSL4EO_S1_MEAN, croma.SSL4EO_S1_STD)
    s2_names = [b for b in S2_L1C if b != "B10"]
    s2 = _upstream_normalise(
        torch.tensor(np.stack([ds[b].values for b in s2_names]).astype("float32"))[None],
        croma.SSL4EO_S2_MEAN, croma.SSL4EO_S2_STD,
    )
    with torch.no_grad():
        out = ref(x_sar=s1, x_optical=s2)
    want = out[key][0].reshape(6, 6, 64).permute(2, 0, 1).numpy()
    assert _rel(emb, want) < 1e-5


def test_croma_flat_torchgeo_state_dict_loads_too(croma_file, tmp_path):
    ref, _ = croma_file
    path = tmp_path / "flat.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))  # includes attn_bias
    model = xeofm.load_model(_tiny_croma("croma-base-s2"), weights=path)
    x1, x2 = torch.rand(1, 2, 48, 48), torch.rand(1, 12, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x2), ref(x_sar=x1, x_optical=x2)["optical_encodings"])


def test_croma_joint_model_refuses_a_missing_sensor():
    spec = xeofm.models.get_spec("croma-base")
    ds = _s1_s2_dataset(16)
    s2_only = ds.drop_vars(["vv", "vh"])
    with pytest.raises(MissingBandsError, match="no Sentinel-1 VV/VH.*Use 'croma-base-s2'"):
        croma.check_sensors(spec, list(s2_only.data_vars))
    with pytest.raises(MissingBandsError, match="lacks the Sentinel-2 bands.*Use 'croma-base-s1'"):
        croma.check_sensors(spec, ["vv", "vh"])
    croma.check_sensors(spec, list(ds.data_vars))  # both sensors: fine
    xeofm.models.weights.check_bands(spec, list(ds.data_vars))
    # through the engine: prepare() runs the spec's band check before generic band matching
    with pytest.raises(MissingBandsError, match="Use 'croma-base-s2'"):
        s2_only.eofm.embed(_tiny_croma("croma-base"), pretrained=False)


def test_croma_stats_from_the_users_data():
    ds = _s1_s2_dataset(32, seed=2)
    spec = croma.stats_from(ds, "croma-base-s1")
    vv = ds.vv.values.astype("float64")
    assert spec.mean[0] == pytest.approx(vv.mean() - 2 * vv.std(), rel=1e-6)
    assert spec.std[0] == pytest.approx(4 * vv.std(), rel=1e-6)
    with pytest.raises(ValueError, match="one mean and std per band"):
        croma.with_stats("croma-base-s1", [0.0], [1.0])
    emb = ds.eofm.embed(_tiny_croma("croma-base-s1").replace(mean=spec.mean, std=spec.std), pretrained=False)
    assert emb.shape == (64, 4, 4)
