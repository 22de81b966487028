"""SatlasPretrain Swin-v2, DINOv3 SAT and the remote-sensing CLIPs: specs, checkpoint
layouts and equality with the torchvision / timm / open_clip references.

Reference models get random weights, are saved in the authors' checkpoint layout,
loaded through xeofm (``weights=``) and compared on a chip. Forward tests use
the small variants (``swin_v2_t``, ``vit_small_patch16_dinov3``, CLIP ViT-B-32).
"""

from __future__ import annotations

import os
from collections import OrderedDict

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.errors import SpecError, WeightsError

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
timm = pytest.importorskip("timm")

from xeofm.models import rgb  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


def _cube(bands, n, seed=0, high=256, dtype="uint8", res=10.0):
    import rioxarray  # noqa: F401

    rng = np.random.default_rng(seed)
    data = rng.integers(0, high, size=(len(bands), n, n)).astype(dtype)
    centres = res * (np.arange(n) + 0.5)
    coords = {"band": list(bands), "y": 5_000_000.0 - centres, "x": 400_000.0 + centres}
    return xr.DataArray(data, dims=("band", "y", "x"), coords=coords).rio.write_crs("EPSG:32633")


def _no_weights_env(monkeypatch, tmp_path):
    monkeypatch.setenv("XEOFM_WEIGHTS_DIR", str(tmp_path / "none"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))


# ======================================================================================
# Registry
# ======================================================================================
SATLAS = ["satlas-swinb-s2-rgb", "satlas-swinb-s2-ms", "satlas-swint-s2-rgb", "satlas-swint-s2-ms",
          "satlas-swinb-aerial", "satlas-swinb-landsat"]
CLIPS = ["remoteclip-rn50", "remoteclip-vit-b-32", "remoteclip-vit-b-32-tokens", "remoteclip-vit-l-14",
         "remoteclip-vit-l-14-tokens", "skyclip-vit-b-32", "skyclip-vit-b-32-tokens", "skyclip-vit-l-14",
         "skyclip-vit-l-14-tokens", "georsclip-vit-b-32", "georsclip-vit-b-32-tokens", "georsclip-vit-l-14",
         "georsclip-vit-l-14-tokens"]


def test_specs_registered():
    names = set(xeofm.list_models())
    assert set(SATLAS + CLIPS + ["dinov3-vitl16-sat493m"]) <= names
    ms = xeofm.models.get_spec("satlas-swinb-s2-ms")
    assert ms.band_ids == ["TCI_R", "TCI_G", "TCI_B", "B05", "B06", "B07", "B08", "B11", "B12"]
    assert ms.std == (255.0,) * 3 + (8160.0,) * 6 and ms.mean == (0.0,) * 9
    assert dict(ms.builder_kwargs)["clip"] is True and (ms.stride, ms.embedding_dim) == (32, 1024)
    assert xeofm.models.get_spec("satlas-swint-s2-rgb").embedding_dim == 768
    d = xeofm.models.get_spec("dinov3-vitl16-sat493m")
    assert (d.output, d.prefix_tokens, d.stride, d.embedding_dim) == ("tokens", 5, 16, 1024)
    assert d.mean == (0.430, 0.411, 0.296) and d.scale == pytest.approx(1 / 255)
    b32 = xeofm.models.get_spec("remoteclip-vit-b-32")
    assert (b32.output, b32.chip_size, b32.embedding_dim) == ("vector", 224, 512)
    tok = xeofm.models.get_spec("georsclip-vit-l-14-tokens")
    assert (tok.output, tok.prefix_tokens, tok.stride, tok.embedding_dim) == ("tokens", 1, 14, 768)
    assert "remoteclip-rn50-tokens" not in names  # a CNN image tower has no patch tokens
    assert "no licence" in xeofm.models.get_spec("remoteclip-vit-l-14").licence
    for n in SATLAS + CLIPS + ["dinov3-vitl16-sat493m"]:
        s = xeofm.models.get_spec(n)
        assert s.weights_file and dict(s.metadata).get("remap")


def test_big_configs_build_on_meta_device():
    spec = xeofm.models.get_spec("satlas-swinb-landsat")
    with torch.device("meta"):
        m = rgb.build_satlas_swin(**dict(spec.builder_kwargs))
        from xeofm.models.builders import timm_tokens

        v = timm_tokens(**dict(xeofm.models.get_spec("dinov3-vitl16-sat493m").builder_kwargs))
    assert m.features[0][0].weight.shape == (128, 11, 4, 4)
    assert sum(p.numel() for p in m.parameters()) == dict(spec.metadata)["total_parameters"]
    assert v.num_prefix_tokens == 5 and v.embed_dim == 1024 and len(v.blocks) == 24
    assert sum(p.numel() for p in v.parameters()) == 303_128_576


# ======================================================================================
# SatlasPretrain
# ======================================================================================
def _satlas_ref(arch="swin_v2_t", in_chans=9, seed=0):
    torch.manual_seed(seed)
    ref = getattr(torchvision.models, arch)(weights=None)
    ref.features[0][0] = torch.nn.Conv2d(in_chans, ref.features[0][0].out_channels, kernel_size=4, stride=4)
    return ref.eval()


def _ref_stages(ref, x):
    """satlaspretrain_models' SwinBackbone.forward: every features output, NCHW, stages at -7, -5, -3, -1."""
    outs = []
    for layer in ref.features:
        x = layer(x)
        outs.append(x.permute(0, 3, 1, 2))
    return [outs[-7], outs[-5], outs[-3], outs[-1]]


def _satlas_checkpoint(ref, path, *, prefix="backbone.backbone.", fpn=None):
    sd = {prefix + k: v for k, v in ref.state_dict().items()}
    if fpn is not None:
        sd.update({"intermediates.0.fpn." + k: v for k, v in fpn.state_dict().items()})
    sd["heads.0.layers.0.0.weight"] = torch.zeros(2, 128, 3, 3)  # a task head, dropped on load
    torch.save(sd, str(path))
    return path


def test_satlas_ms_equals_torchvision_reference(tmp_path):
    ref = _satlas_ref()
    path = _satlas_checkpoint(ref, tmp_path / "sentinel2_swint_si_ms.pth")
    bands = rgb.SATLAS_S2_MS
    cube = _cube([b.id for b in bands], 256, dtype="uint16", high=12000)
    cube[:3] = cube[:3] % 256  # TCI is 8-bit
    emb = cube.eofm.embed("satlas-swint-s2-ms", weights=path).values
    raw = torch.tensor(cube.values.astype("float32"))[None]
    std = torch.tensor([255.0] * 3 + [8160.0] * 6).view(1, -1, 1, 1)
    x = (raw / std).clamp(0, 1)
    with torch.no_grad():
        want = _ref_stages(ref, x)[-1][0].numpy()
    assert emb.shape == (768, 8, 8)
    assert _rel(emb, want) < 1e-5


def test_satlas_torchvision_layout_and_rgb(tmp_path):
    ref = _satlas_ref(in_chans=3, seed=1)
    path = tmp_path / "sentinel2_swint_si_rgb-0c1a96e0.pth"
    torch.save(ref.state_dict(), str(path))  # torchgeo's copies: plain torchvision keys, norm and head included
    model = xeofm.load_model("satlas-swint-s2-rgb", weights=path)
    for k, v in model.state_dict().items():
        assert torch.equal(v, ref.state_dict()[k]), k
    x = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), _ref_stages(ref, x)[-1].numpy(), rtol=1e-5, atol=1e-6)


def test_satlas_fpn_level_and_multi_image(tmp_path):
    ref = _satlas_ref(in_chans=3, seed=2)
    torch.manual_seed(3)
    fpn = torchvision.ops.FeaturePyramidNetwork([96, 192, 384, 768], 128).eval()
    path = _satlas_checkpoint(ref, tmp_path / "mi.pth", prefix="backbone.backbone.backbone.", fpn=fpn)
    spec = rgb.satlas_variant("satlas-swint-s2-rgb", level=2, fpn=True, frames=2)
    assert (spec.stride, spec.embedding_dim, spec.time_frames) == (8, 128, 2)
    assert spec.weights_file == "sentinel2_swint_mi_rgb.pth"
    model = xeofm.load_model(spec, weights=path)
    x = torch.rand(2, 3, 2, 64, 64)
    with torch.no_grad():
        got = model(x)
        f0, f1 = _ref_stages(ref, x[:, :, 0]), _ref_stages(ref, x[:, :, 1])
        agg = [torch.maximum(a, b) for a, b in zip(f0, f1)]  # Satlas' multi-image max aggregation
        want = list(fpn(OrderedDict((f"feat{i}", t) for i, t in enumerate(agg))).values())[1]
    assert got.shape == (2, 128, 8, 8)
    assert _rel(got.numpy(), want.numpy()) < 1e-5
    # the FPN spec needs the authors' full checkpoint
    plain = tmp_path / "backbone_only.pth"
    torch.save(ref.state_dict(), str(plain))
    with pytest.raises(WeightsError, match="FPN"):
        xeofm.load_model(rgb.satlas_variant("satlas-swint-s2-rgb", fpn=True), weights=plain)


def test_satlas_wrong_weights(tmp_path):
    ref = _satlas_ref(in_chans=3)
    path = _satlas_checkpoint(ref, tmp_path / "rgb.pth")
    with pytest.raises(WeightsError, match="shape mismatch.*features.0.0.weight"):
        xeofm.load_model("satlas-swint-s2-ms", weights=path)  # a 3-band file for the 9-band model
    with pytest.raises(WeightsError, match="does not fit.*missing keys"):
        xeofm.load_model("satlas-swinb-s2-rgb", weights=path)  # swin_v2_t file for swin_v2_b
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage")
    with pytest.raises(WeightsError, match="cannot read weight file"):
        xeofm.load_model("satlas-swint-s2-rgb", weights=bad)
    other = tmp_path / "other.pth"
    torch.save({"encoder.blocks.0.weight": torch.zeros(2)}, str(other))
    with pytest.raises(WeightsError, match="features.0.0.weight"):
        xeofm.load_model("satlas-swint-s2-rgb", weights=other)


# ======================================================================================
# DINOv3 SAT-493M
# ======================================================================================
def _small_dinov3(chip=64):
    spec = xeofm.models.get_spec("dinov3-vitl16-sat493m")
    return spec.replace(
        builder_kwargs={"arch": "vit_small_patch16_dinov3_qkvb", "in_chans": 3},
        embedding_dim=384, chip_size=chip, overlap=0,
    )


def _dinov3_ref(arch="vit_small_patch16_dinov3_qkvb", seed=0):
    torch.manual_seed(seed)
    ref = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    with torch.no_grad():  # give LayerScale and biases values that matter
        for name, p in ref.named_parameters():
            if "gamma" in name or name.endswith(("q_bias", "v_bias")):
                p.normal_(0, 0.5)
            if name in ("cls_token", "reg_token"):
                p.normal_()
    return ref


def _to_meta_layout(sd):
    """timm Eva keys -> Meta's DINOv3 release keys (storage tokens, ls*.gamma, fused qkv bias + mask)."""
    out = {}
    for k, v in sd.items():
        if k.endswith("attn.q_bias"):
            base = k[: -len("q_bias")]
            vb = sd[base + "v_bias"]
            out[base + "qkv.bias"] = torch.cat([v, torch.full_like(v, 7.0), vb])  # k part is masked
            out[base + "qkv.bias_mask"] = torch.cat([torch.ones_like(v), torch.zeros_like(v), torch.ones_like(v)])
            continue
        if k.endswith("attn.v_bias"):
            continue
        k = k.replace("reg_token", "storage_tokens").replace("gamma_1", "ls1.gamma").replace("gamma_2", "ls2.gamma")
        out[k] = v
    out["mask_token"] = torch.zeros(1, sd["cls_token"].shape[-1])
    out["rope_embed.periods"] = torch.ones(16)
    return out


def _ref_grid(ref, x, prefix=5):
    with torch.no_grad():
        tok = ref.forward_features(x)[0, prefix:]
    t = int(round(tok.shape[0] ** 0.5))
    return tok.reshape(t, t, -1).permute(2, 0, 1).numpy()


def _dinov3_input(cube):
    mean = torch.tensor(rgb.DINOV3_SAT_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(rgb.DINOV3_SAT_STD).view(1, 3, 1, 1)
    return (torch.tensor(cube.values.astype("float32"))[None] / 255 - mean) / std


def test_dinov3_tokens_equal_timm_reference(tmp_path):
    from safetensors.torch import save_file

    ref = _dinov3_ref()
    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(path))
    cube = _cube(["red", "green", "blue"], 64, seed=4)
    emb = cube.eofm.embed(_small_dinov3(), weights=path).values
    want = _ref_grid(ref, _dinov3_input(cube))
    assert emb.shape == (384, 4, 4)
    assert _rel(emb, want) < 1e-5


def test_dinov3_meta_release_layout_and_biasless_timm_file(tmp_path):
    ref = _dinov3_ref(seed=5)
    meta_path = tmp_path / "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth"
    torch.save(_to_meta_layout(ref.state_dict()), str(meta_path))
    model = xeofm.load_model(_small_dinov3(), weights=meta_path)
    for k, v in ref.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), ref.forward_features(x).numpy(), rtol=1e-5, atol=1e-5)
    # timm's own sat493m weights have no query/value biases: zero biases, same model
    plain = _dinov3_ref("vit_small_patch16_dinov3", seed=6)
    p2 = tmp_path / "plain.pth"
    torch.save(plain.state_dict(), str(p2))
    model = xeofm.load_model(_small_dinov3(), weights=p2)
    with torch.no_grad():
        np.testing.assert_allclose(model(x).numpy(), plain.forward_features(x).numpy(), rtol=1e-5, atol=1e-5)


def test_dinov3_missing_weights_message(monkeypatch, tmp_path):
    _no_weights_env(monkeypatch, tmp_path)
    with pytest.raises(WeightsError, match="DINOv3 License"):
        xeofm.models.resolve_model("dinov3-vitl16-sat493m")


# ======================================================================================
# CLIP (open_clip)
# ======================================================================================
@pytest.fixture(scope="module")
def clip_b32(tmp_path_factory):
    """A random open_clip ViT-B-32 (QuickGELU, as RemoteCLIP/GeoRSCLIP) saved as a plain state dict."""
    open_clip = pytest.importorskip("open_clip")
    torch.manual_seed(0)
    ref = open_clip.create_model("ViT-B-32", pretrained=None, force_quick_gelu=True).eval()
    path = tmp_path_factory.mktemp("clip") / "RemoteCLIP-ViT-B-32.pt"
    torch.save(ref.state_dict(), str(path))
    return ref, path


def _clip_input(cube):
    from xeofm.models.clip import CLIP_MEAN, CLIP_STD

    x = torch.tensor(cube.values.astype("float32"))[None] / 255
    return (x - torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)) / torch.tensor(CLIP_STD).view(1, 3, 1, 1)


def test_clip_image_vector_and_tokens_equal_open_clip(clip_b32):
    import torch.nn.functional as F

    ref, path = clip_b32
    cube = _cube(["red", "green", "blue"], 224, seed=7)
    x = _clip_input(cube)
    vec = cube.eofm.embed("remoteclip-vit-b-32", weights=path, output="chip").values
    with torch.no_grad():
        want = F.normalize(ref.encode_image(x), dim=-1)[0].numpy()
    assert vec.shape == (512, 1, 1)
    assert _rel(vec[:, 0, 0], want) < 1e-5
    assert np.linalg.norm(vec[:, 0, 0]) == pytest.approx(1.0, abs=1e-5)
    tok = cube.eofm.embed("remoteclip-vit-b-32-tokens", weights=path).values
    with torch.no_grad():
        v = ref.visual
        h = v.ln_post(v.transformer(v._embeds(x)))[0, 1:] @ v.proj  # patch tokens in the joint space
        grid = F.normalize(h, dim=-1).reshape(7, 7, 512).permute(2, 0, 1).numpy()
    assert tok.shape == (512, 7, 7)
    assert _rel(tok, grid) < 1e-5


def test_clip_text_embedding_equals_open_clip(clip_b32):
    import open_clip
    import torch.nn.functional as F

    from xeofm.models import clip

    ref, path = clip_b32
    tokenizer = open_clip.get_tokenizer("ViT-B-32")  # bundled vocabulary: works offline
    texts = ["forest", "a harbour with boats"]
    got = clip.encode_text("remoteclip-vit-b-32", texts, weights=path)
    with torch.no_grad():
        prompts = [t.format(c) for c in texts for t in clip.DEFAULT_TEMPLATES]
        per = F.normalize(ref.encode_text(tokenizer(prompts)), dim=-1)
        want = F.normalize(per.reshape(2, len(clip.DEFAULT_TEMPLATES), -1).mean(1), dim=-1).numpy()
    assert got.shape == (2, 512) and got.dtype == np.float32
    assert _rel(got, want) < 1e-5
    raw = clip.encode_text("remoteclip-vit-b-32-tokens", "forest", weights=path, templates=["{}"])
    with torch.no_grad():
        np.testing.assert_allclose(raw[0], F.normalize(ref.encode_text(tokenizer(["forest"])), dim=-1)[0].numpy(),
                                   rtol=1e-5, atol=1e-6)
    # zero-shot: image vectors and text vectors share one space (cosine = CLIP logits / logit scale)
    cube = _cube(["red", "green", "blue"], 224, seed=8)
    img = cube.eofm.embed("remoteclip-vit-b-32", weights=path, output="chip").values[:, 0, 0]
    with torch.no_grad():
        logits, _ = ref.get_logits(_clip_input(cube), tokenizer([clip.DEFAULT_TEMPLATES[0].format("forest")]))
    one = clip.encode_text("remoteclip-vit-b-32", "forest", weights=path, templates=[clip.DEFAULT_TEMPLATES[0]])
    assert float(img @ one[0]) == pytest.approx(float(logits[0, 0] / ref.logit_scale.exp()), abs=1e-5)


def test_clip_checkpoint_wrappers(clip_b32, tmp_path):
    ref, path = clip_b32
    sd = ref.state_dict()
    ckpt = tmp_path / "SkyCLIP_ViT_B32_top50pct.pt"  # open_clip training checkpoint, DDP prefix
    torch.save({"epoch": 20, "name": "skyclip", "state_dict": {"module." + k: v for k, v in sd.items()}}, str(ckpt))
    m = xeofm.load_model("georsclip-vit-b-32", weights=ckpt)
    assert all(torch.equal(m.state_dict()[k], v) for k, v in sd.items())
    openai = tmp_path / "openai_style.pt"
    torch.save({**sd, "input_resolution": torch.tensor(224), "context_length": torch.tensor(77),
                "vocab_size": torch.tensor(49408)}, str(openai))
    xeofm.load_model("remoteclip-vit-b-32", weights=openai)


def test_clip_bad_inputs(clip_b32, tmp_path, monkeypatch):
    from xeofm.models import clip

    _, path = clip_b32
    with pytest.raises(SpecError, match="no text tower.*remoteclip-vit-b-32"):
        clip.encode_text("satlas-swint-s2-rgb", ["forest"])
    with pytest.raises(SpecError, match="template"):
        clip.encode_text("remoteclip-vit-b-32", ["forest"], weights=path, templates=["a photo"])
    bad = tmp_path / "RemoteCLIP-ViT-B-32.pt"
    bad.write_bytes(b"PK\x03\x04 not a checkpoint")
    with pytest.raises(WeightsError, match="cannot read weight file"):
        clip.encode_text("remoteclip-vit-b-32", ["forest"], weights=bad)
    wrong = tmp_path / "wrong.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, str(wrong))
    with pytest.raises(WeightsError, match="visual"):
        xeofm.load_model("skyclip-vit-b-32", weights=wrong)
    ref, _ = clip_b32
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in ref.state_dict().items() if k != "text_projection"}, str(partial))
    with pytest.raises(WeightsError, match="does not fit.*missing keys: text_projection"):
        xeofm.load_model("remoteclip-vit-b-32", weights=partial)
    _no_weights_env(monkeypatch, tmp_path)
    with pytest.raises(WeightsError, match="chendelong/RemoteCLIP"):
        clip.encode_text("remoteclip-vit-b-32", ["forest"])
    with pytest.raises(WeightsError, match="SkyCLIP_ViT_L14_top30pct.zip"):
        xeofm.models.resolve_model("skyclip-vit-l-14")
