"""Prithvi-EO-2.0: specs, architecture against the published formulas, the authors' reference code, bad input.

The reference-equality tests load ``prithvi_mae.py`` (the authors' model file,
shipped in terratorch and on the Hugging Face model pages) without importing
the rest of terratorch. They run when ``terratorch`` is installed (``pip install
--no-deps terratorch==1.2.13 einops`` is enough) or when ``XEOFM_PRITHVI_REF``
points at a copy of ``prithvi_mae.py``; otherwise they are skipped.
"""

from __future__ import annotations

import importlib.util
import math
import os
import warnings

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.errors import InputError, MissingBandsError, MissingDimensionError

from .conftest import make_cube

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from xeofm.models import prithvi  # noqa: E402

HLS_IDS = ["blue", "green", "red", "nir08", "swir16", "swir22"]
DATES = np.array(["2021-03-19", "2021-05-02", "2021-07-15", "2021-10-01"], dtype="datetime64[ns]")


def _reference_prithvi():
    """The authors' ``prithvi_mae`` module, loaded alone (terratorch's package init needs torchgeo>=0.9)."""
    path = os.environ.get("XEOFM_PRITHVI_REF")
    if not path:
        spec = importlib.util.find_spec("terratorch")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("reference not installed: pip install --no-deps terratorch==1.2.13 einops")
        path = os.path.join(spec.submodule_search_locations[0], "models", "backbones", "prithvi_mae.py")
    if not os.path.isfile(path):
        pytest.skip(f"no prithvi_mae.py at {path}")
    pytest.importorskip("einops")
    spec = importlib.util.spec_from_file_location("_reference_prithvi_mae", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _tiny(name: str, patch: int, chip: int, frames: int = 4):
    """A registered spec with a tiny architecture of the same family (fast forward passes)."""
    base = xeofm.models.get_spec(name)
    kw = dict(base.builder_kwargs)
    kw.update(img_size=chip, patch_size=patch, num_frames=frames, embed_dim=64, depth=2, num_heads=4)
    return base.replace(
        name=f"{name}-tiny-test", builder_kwargs=kw, chip_size=chip, stride=patch, embedding_dim=64,
        overlap=0, time_frames=frames,
    )


def _hls_series(chip: int) -> xr.DataArray:
    """Four 'dates' of real HLS-band reflectance: four crops of the shipped Sentinel-2 sample.

    The sample's few fill pixels (0) are replaced by the crop's band medians, so every pixel is valid.
    """
    s2 = xeofm.data.sample_cube("sentinel2").load()
    y0 = 45 - chip
    frames = []
    for x0 in (10, 30, 50, 70):
        a = s2.isel(y=slice(y0, y0 + chip), x=slice(x0, x0 + chip)).values.astype("float64")
        for b in range(a.shape[0]):
            a[b][a[b] == 0] = np.median(a[b][a[b] > 0])
        frames.append(a)
    data = np.stack(frames).astype("uint16")
    ref = s2.isel(y=slice(y0, y0 + chip), x=slice(10, 10 + chip))
    cube = xr.DataArray(
        data, dims=("time", "band", "y", "x"),
        coords={"time": DATES, "band": list(s2.band.values), "y": ref.y.values, "x": ref.x.values},
    )
    return cube.rio.write_crs(s2.rio.crs)


# --------------------------------------------------------------------------------------
# Specs
# --------------------------------------------------------------------------------------
def test_registered_specs():
    names = [n for n in xeofm.list_models() if n.startswith("prithvi-")]
    assert set(names) >= {"prithvi-eo-2.0-300m", "prithvi-eo-2.0-300m-tl", "prithvi-eo-2.0-600m", "prithvi-eo-2.0-600m-tl"}
    for n in names:
        s = xeofm.models.get_spec(n)
        assert [b.common_name for b in s.bands] == HLS_IDS
        assert s.mean == (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
        assert s.std == (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)
        assert (s.output, s.prefix_tokens, s.chip_size, s.gsd) == ("tokens", 1, 224, 30.0)
        assert s.chip_size % s.stride == 0
        assert dict(s.metadata)["remap"] == "xeofm.models.prithvi:remap_checkpoint"
        assert s.weights_file.startswith("Prithvi_EO_V2_") and s.weights_file.endswith(".pt")
        assert s.aux == (("time", "latlon") if n.endswith("-tl") else ())
    s300, s600 = xeofm.models.get_spec("prithvi-eo-2.0-300m"), xeofm.models.get_spec("prithvi-eo-2.0-600m")
    assert (s300.stride, s300.embedding_dim, s300.time_frames) == (16, 1024, 4)
    assert (s600.stride, s600.embedding_dim, s600.time_frames) == (14, 1280, 4)
    assert s600.tokens_per_side == 16  # 224 = 16 x 14, the pretraining size


def _params_formula(d: int, depth: int, patch: int, tl: bool) -> int:
    block = 12 * d * d + 13 * d  # qkv 3d(d+1), proj d(d+1), fc1 4d(d+1), fc2 d(4d+1), 2 norms 4d
    return depth * block + (6 * patch * patch * d + d) + d + 2 * d + (2 if tl else 0)


@pytest.mark.parametrize(
    "name, d, depth, patch, tl, lo, hi",
    [
        ("prithvi-eo-2.0-300m", 1024, 24, 16, False, 300e6, 310e6),
        ("prithvi-eo-2.0-300m-tl", 1024, 24, 16, True, 300e6, 310e6),
        ("prithvi-eo-2.0-600m", 1280, 32, 14, False, 620e6, 640e6),
        ("prithvi-eo-2.0-600m-tl", 1280, 32, 14, True, 620e6, 640e6),
    ],
)
def test_full_size_architectures_on_meta(name, d, depth, patch, tl, lo, hi):
    spec = xeofm.models.get_spec(name)
    with torch.device("meta"):
        model = prithvi.build_prithvi(**dict(spec.builder_kwargs))
        n = sum(p.numel() for p in model.parameters())
        assert n == _params_formula(d, depth, patch, tl)
        assert lo < n < hi
        out = model(torch.empty(1, 6, 4, 224, 224))
    assert tuple(out.shape) == (1, 1 + 4 * (224 // patch) ** 2, d)
    assert model.patch_embed.proj.kernel_size == (1, patch, patch)
    assert tuple(model.pos_embed.shape) == (1, 1 + 4 * (224 // patch) ** 2, d)


# --------------------------------------------------------------------------------------
# Independent re-derivations
# --------------------------------------------------------------------------------------
def test_sincos_3d_table_is_the_published_formula():
    d, (t, h, w) = 32, (2, 3, 4)
    table = prithvi.sincos_3d(d, (t, h, w))[0].double().numpy()
    assert table.shape == (1 + t * h * w, d)
    assert (table[0] == 0).all()  # class token row
    dw, dh, dt = 6 * d // 16, 6 * d // 16, 4 * d // 16

    def enc(pos, dim, c):  # channel c of a dim-wide 1-D sin-cos code
        half = dim // 2
        k = c % half
        f = math.sin if c < half else math.cos
        return f(pos / 10000 ** (k / half))

    for ti in range(t):
        for hi in range(h):
            for wi in range(w):
                row = table[1 + (ti * h + hi) * w + wi]
                want = [enc(wi, dw, c) for c in range(dw)] + [enc(hi, dh, c) for c in range(dh)]
                want += [enc(ti, dt, c) for c in range(dt)]
                np.testing.assert_allclose(row, want, atol=1e-6)


def test_date_and_location_encoders():
    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=8, num_frames=2, in_chans=6, embed_dim=32, depth=1, num_heads=4)
    tl = prithvi.build_prithvi(coords_encoding=("time", "location"), coords_scale_learn=True, **kw).eval()
    plain = prithvi.build_prithvi(**kw).eval()
    # published encodings: year on the first half of the channels, day of year on the second
    time = torch.tensor([[[2020.0, 100.0], [2021.0, 7.0]]])
    with torch.no_grad():
        tl.temporal_embed_enc.scale.fill_(0.5)
        tl.location_embed_enc.scale.fill_(2.0)
        emb = tl.temporal_embed_enc(time, 3)[0].numpy()
        loc = tl.location_embed_enc(torch.tensor([[45.0, -120.0]]))[0, 0].numpy()
    assert emb.shape == (6, 32)  # 2 frames x 3 tokens, repeated per token of a frame

    def code(v, dim):
        half = dim // 2
        return [math.sin(v / 10000 ** (k / half)) for k in range(half)] + [math.cos(v / 10000 ** (k / half)) for k in range(half)]

    np.testing.assert_allclose(emb[0], 0.5 * np.array(code(2020, 16) + code(100, 16)), atol=1e-4)
    np.testing.assert_allclose(emb[5], 0.5 * np.array(code(2021, 16) + code(7, 16)), atol=1e-4)
    np.testing.assert_allclose(loc, 2.0 * np.array(code(45.0, 16) + code(-120.0, 16)), atol=1e-4)

    # with zero scales the TL model is the plain model with the same weights
    sd = {k: v for k, v in tl.state_dict().items() if not k.endswith("_embed_enc.scale")}
    plain.load_state_dict(sd, strict=True)
    x = torch.randn(2, 6, 2, 32, 32)
    ll = torch.tensor([[45.0, -120.0], [-3.0, 20.0]])
    t2 = time.expand(2, -1, -1)
    with torch.no_grad():
        a = tl(x, time=t2, latlon=ll)
        b = tl(x, time=t2 + torch.tensor([0.0, 30.0]), latlon=ll)
        c = tl(x, time=t2, latlon=ll + 1.0)
        assert (a - b).abs().max() > 1e-3 and (a - c).abs().max() > 1e-3  # dates and places matter
        tl.temporal_embed_enc.scale.zero_()
        tl.location_embed_enc.scale.zero_()
        torch.testing.assert_close(tl(x, time=t2, latlon=ll), plain(x), rtol=0, atol=0)


def test_remap_drops_decoder_and_prefix():
    sd = {
        "encoder.cls_token": 1, "encoder.pos_embed": 2, "encoder.blocks.0.attn.qkv.weight": 3,
        "encoder.temporal_embed_enc.scale": 4, "decoder.mask_token": 5, "decoder.decoder_blocks.0.norm1.weight": 6,
        "decoder.temporal_embed_dec.scale": 7, "_timm_module.encoder.norm.weight": 8,
    }
    assert prithvi.remap_checkpoint(sd) == {
        "cls_token": 1, "blocks.0.attn.qkv.weight": 3, "temporal_embed_enc.scale": 4, "norm.weight": 8,
    }
    assert prithvi.remap_checkpoint({"model.encoder.norm.bias": 1}) == {"norm.bias": 1}


# --------------------------------------------------------------------------------------
# Engine runs (random weights)
# --------------------------------------------------------------------------------------
def test_embed_windows_of_four_dates_with_dates_and_place():
    spec = _tiny("prithvi-eo-2.0-300m-tl", 8, 32)
    cube = _hls_series(32)
    five = xr.concat([cube, cube.isel(time=[0]).assign_coords(time=[np.datetime64("2021-12-01", "ns")])], "time")
    emb = five.eofm.embed(spec, pretrained=False).compute()
    assert emb.dims == ("time", "embedding", "y", "x") and emb.shape == (2, 64, 4, 4)
    np.testing.assert_array_equal(emb.time.values, five.time.values[3:])
    assert np.isfinite(emb.values).all()


def test_single_date_variant_by_replacing_time_frames():
    spec = _tiny("prithvi-eo-2.0-300m", 8, 32).replace(time_frames=1)
    cube = _hls_series(32).isel(time=0)
    emb = cube.eofm.embed(spec, pretrained=False).compute()
    assert emb.shape == (64, 4, 4) and np.isfinite(emb.values).all()


def test_wrong_number_of_dates():
    spec = _tiny("prithvi-eo-2.0-300m-tl", 8, 32)
    cube = _hls_series(32)
    with pytest.raises(InputError, match="windows of 4 time steps.*has 3"):
        cube.isel(time=slice(0, 3)).eofm.embed(spec, pretrained=False)
    with pytest.raises(MissingDimensionError, match="takes 4 time steps"):
        cube.isel(time=0).eofm.embed(spec, pretrained=False)


def test_missing_band_names_the_names_tried():
    cube = make_cube(32, 32, nt=4, bands=("blue", "green", "red", "nir", "swir16"))
    with pytest.raises(MissingBandsError, match=r"swir22 \(tried swir22, B12, swir2"):
        cube.eofm.embed(_tiny("prithvi-eo-2.0-300m", 8, 32), pretrained=False)


def test_sentinel2_band_names_and_l30_common_names_match():
    spec = _tiny("prithvi-eo-2.0-300m", 8, 32)
    s2_names = make_cube(32, 32, nt=4, bands=("B02", "B03", "B04", "B8A", "B11", "B12"))
    common = make_cube(32, 32, nt=4, bands=("blue", "green", "red", "nir08", "swir1", "swir2"))
    a = s2_names.eofm.embed(spec, pretrained=False).values
    b = common.eofm.embed(spec, pretrained=False).values
    np.testing.assert_array_equal(a, b)


def test_pixel_size_far_from_30m_warns():
    spec = _tiny("prithvi-eo-2.0-300m", 8, 32)
    with pytest.warns(UserWarning, match="far from the 30 m"):
        make_cube(32, 32, nt=4, bands=HLS_IDS, res=10.0).eofm.embed(spec, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_cube(32, 32, nt=4, bands=HLS_IDS, res=30.0).eofm.embed(spec, pretrained=False)


# --------------------------------------------------------------------------------------
# Against the authors' code
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name, patch, chip", [("prithvi-eo-2.0-300m-tl", 8, 32), ("prithvi-eo-2.0-600m", 14, 28)]
)
def test_equals_reference_through_a_checkpoint_file(tmp_path, name, patch, chip):
    ref_mod = _reference_prithvi()
    spec = _tiny(name, patch, chip)
    tl = name.endswith("-tl")
    torch.manual_seed(0)
    ref = ref_mod.PrithviMAE(
        img_size=chip, patch_size=(1, patch, patch), num_frames=4, in_chans=6, embed_dim=64, depth=2, num_heads=4,
        decoder_embed_dim=32, decoder_depth=1, decoder_num_heads=4,
        coords_encoding=["time", "location"] if tl else [], coords_scale_learn=tl,
    ).eval()
    if tl:
        with torch.no_grad():
            ref.encoder.temporal_embed_enc.scale.fill_(0.6)
            ref.encoder.location_embed_enc.scale.fill_(0.3)
    path = tmp_path / spec.weights_file
    torch.save(ref.state_dict(), str(path))  # the authors' layout: encoder.*, decoder.*

    cube = _hls_series(chip)
    emb = cube.eofm.embed(spec, weights=path, overlap=0).values[0]  # the one window of 4 dates

    raw = torch.tensor(cube.values.astype("float32"))  # (T, C, H, W)
    mean = torch.tensor(prithvi.MEAN).view(1, 6, 1, 1)
    std = torch.tensor(prithvi.STD).view(1, 6, 1, 1)
    x = ((raw - mean) / std).permute(1, 0, 2, 3)[None]  # (1, C, T, H, W)
    kwargs = {}
    if tl:
        from pyproj import Transformer

        idx = cube.time.to_index()
        kwargs["temporal_coords"] = torch.tensor([[[d.year, d.day_of_year] for d in idx]], dtype=torch.float32)
        dx = float(cube.x[1] - cube.x[0])
        dy = float(cube.y[1] - cube.y[0])
        cx = float(cube.x[0]) - dx / 2 + chip / 2 * dx
        cy = float(cube.y[0]) - dy / 2 + chip / 2 * dy
        lon, lat = Transformer.from_crs(cube.rio.crs, "EPSG:4326", always_xy=True).transform(cx, cy)
        kwargs["location_coords"] = torch.tensor([[lat, lon]], dtype=torch.float32)
    with torch.no_grad():
        tokens = ref.encoder.forward_features(x, **kwargs)[-1]
    g = chip // patch
    want = tokens[0, 1:].reshape(4, g, g, 64).mean(0).permute(2, 0, 1).numpy()
    assert emb.shape == want.shape
    rel = np.abs(emb - want).max() / np.abs(want).max()
    assert rel < 1e-5, rel

    # the same file through load_model: the module equals the reference encoder
    model = xeofm.load_model(spec, weights=path)
    with torch.no_grad():
        got = model(x, time=kwargs.get("temporal_coords"), latlon=kwargs.get("location_coords"))
    torch.testing.assert_close(got, tokens, rtol=1e-5, atol=1e-5)


def test_other_frame_count_recomputes_positions_like_reference():
    ref_mod = _reference_prithvi()
    torch.manual_seed(0)
    kw = dict(img_size=32, patch_size=(1, 8, 8), num_frames=4, in_chans=6, embed_dim=64, depth=1, num_heads=4)
    ref = ref_mod.PrithviViT(**kw).eval()
    mine = prithvi.build_prithvi(**{**kw, "patch_size": 8}).eval()
    mine.load_state_dict(prithvi.remap_checkpoint(ref.state_dict()), strict=True)
    for shape in ((2, 6, 1, 32, 32), (2, 6, 4, 48, 48)):  # other T: recomputed; other size: interpolated
        x = torch.randn(*shape)
        with torch.no_grad():
            torch.testing.assert_close(mine(x), ref.forward_features(x)[-1], rtol=1e-5, atol=1e-5)
