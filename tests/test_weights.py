"""Weights offline: authors' layouts, the Hugging Face / torch hub caches, checksums, bad files."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import warnings

import numpy as np
import pytest

import xeofm
from xeofm.errors import WeightsError
from xeofm.models import weights

from .conftest import make_cube

torch = pytest.importorskip("torch")
pytest.importorskip("timm")

from xeofm.models import prithvi  # noqa: E402

HLS_IDS = ["blue", "green", "red", "nir08", "swir16", "swir22"]


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, and no caches but the ones a test builds."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hf-cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-torch-home"))
    monkeypatch.delenv("XEOFM_WEIGHTS_DIR", raising=False)


def _tiny_spec(name="prithvi-eo-2.0-300m"):
    """The registered spec (file name, hub ids, remap hook) with a tiny architecture."""
    base = xeofm.models.get_spec(name)
    kw = dict(base.builder_kwargs)
    kw.update(img_size=32, patch_size=8, num_frames=1, embed_dim=32, depth=1, num_heads=4)
    return base.replace(builder_kwargs=kw, chip_size=32, stride=8, embedding_dim=32, overlap=0, time_frames=1)


def _authors_layout(module) -> dict:
    """What the released Prithvi files hold: encoder.* (pos_embed included) plus the MAE decoder."""
    sd = {f"encoder.{k}": v.clone() for k, v in module.state_dict().items()}
    sd["encoder.pos_embed"] = module.pos_embed.clone()
    sd["decoder.mask_token"] = torch.zeros(1, 1, 16)
    sd["decoder.decoder_embed.weight"] = torch.zeros(16, 32)
    sd["decoder.decoder_blocks.0.norm1.weight"] = torch.ones(16)
    return sd


@pytest.fixture
def prithvi_file(tmp_path):
    torch.manual_seed(3)
    spec = _tiny_spec()
    src = prithvi.build_prithvi(**dict(spec.builder_kwargs)).eval()
    path = tmp_path / "Prithvi_EO_V2_300M.pt"
    torch.save(_authors_layout(src), str(path))
    return spec, src, path


def _cube():
    return make_cube(32, 32, bands=HLS_IDS, seed=1)


def _forward(model, cube, spec):
    raw = torch.tensor(cube.values.astype("float32"))[None]
    x = (raw - torch.tensor(spec.mean).view(1, -1, 1, 1)) / torch.tensor(spec.std).view(1, -1, 1, 1)
    with torch.no_grad():
        return model(x)


# --------------------------------------------------------------------------------------
# Authors' layouts, file formats
# --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["pt", "safetensors", "safetensors-named-pt", "nested"])
def test_authors_layout_loads(prithvi_file, tmp_path, fmt):
    spec, src, path = prithvi_file
    if fmt == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in _authors_layout(src).items()}, str(path))
    elif fmt == "safetensors-named-pt":  # the format is read from the file, not its name
        from safetensors.torch import save_file

        path = tmp_path / "w.pt"
        save_file({k: v.contiguous() for k, v in _authors_layout(src).items()}, str(path))
    elif fmt == "nested":  # a training checkpoint: weights under "model", plus other entries
        path = tmp_path / "ckpt.pt"
        torch.save({"model": _authors_layout(src), "epoch": 7, "optimizer": {"lr": 1e-4}}, str(path))
    model = xeofm.load_model(spec, weights=path)
    cube = _cube()
    torch.testing.assert_close(_forward(model, cube, spec), _forward(src, cube, spec), rtol=0, atol=0)
    emb = cube.eofm.embed(spec, weights=path).values
    want = _forward(src, cube, spec)[0, 1:].reshape(4, 4, 32).permute(2, 0, 1).numpy()
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)


def test_pretrained_false_is_seeded_random_and_ignores_files(prithvi_file):
    spec, src, path = prithvi_file
    with_file = spec.replace(weights=str(path))
    assert xeofm.models.resolve_model(with_file, pretrained=False).weights is None
    a = xeofm.load_model(spec.replace(description="a"), pretrained=False)
    xeofm.runtime.clear_cache()
    b = xeofm.load_model(spec.replace(description="a"), pretrained=False)
    assert a is not b
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


# --------------------------------------------------------------------------------------
# Offline places
# --------------------------------------------------------------------------------------
def _hf_snapshot(cache, repo, filename, payload: bytes, rev="0123456789abcdef0123456789abcdef01234567", ref=True):
    org, name = repo.split("/")
    root = cache / f"models--{org}--{name}"
    snap = root / "snapshots" / rev
    snap.mkdir(parents=True)
    (snap / filename).write_bytes(payload)
    if ref:
        (root / "refs").mkdir()
        (root / "refs" / "main").write_text(rev)
    return snap / filename


def test_found_in_the_hugging_face_cache_offline(prithvi_file, tmp_path, monkeypatch):
    spec, src, path = prithvi_file
    cache = tmp_path / "hf"
    hit = _hf_snapshot(cache, "ibm-nasa-geospatial/Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt", path.read_bytes())
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    resolved = xeofm.models.resolve_model(spec)
    assert resolved.weights == str(hit)
    cube = _cube()
    emb = cube.eofm.embed(spec).values  # no weights argument: found in the cache
    want = _forward(src, cube, spec)[0, 1:].reshape(4, 4, 32).permute(2, 0, 1).numpy()
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)
    # by registered name too (the full-size model is not built here)
    assert xeofm.models.resolve_model("prithvi-eo-2.0-300m").weights == str(hit)
    # HF_HOME/hub is the other way to point at a cache
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    (tmp_path / "hf").rename(tmp_path / "hub")
    assert xeofm.models.resolve_model("prithvi-eo-2.0-300m").weights.startswith(str(tmp_path / "hub"))


def test_pinned_revision_found_without_refs(tmp_path, monkeypatch):
    spec = xeofm.models.get_spec("dofa-base")
    rev = dict(spec.metadata)["hf_revision"]
    cache = tmp_path / "hf"
    hit = _hf_snapshot(cache, "torchgeo/dofa", spec.weights_file, b"x", rev=rev, ref=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    assert xeofm.models.resolve_model("dofa-base").weights == str(hit)


def test_found_in_torch_hub_cache_and_weights_dir(tmp_path, monkeypatch):
    hub = tmp_path / "th" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    (hub / "CROMA_base-0238d814.pt").write_bytes(b"x")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    for name in ("croma-base", "croma-base-s1", "croma-base-s2"):  # one file, three models
        assert xeofm.models.resolve_model(name).weights == str(hub / "CROMA_base-0238d814.pt")
    wdir = tmp_path / "w"
    wdir.mkdir()
    (wdir / "CROMA_base-0238d814.pt").write_bytes(b"y")
    monkeypatch.setenv("XEOFM_WEIGHTS_DIR", str(wdir))
    assert xeofm.models.resolve_model("croma-base").weights == str(wdir / "CROMA_base-0238d814.pt")


def test_not_found_says_what_to_get_and_where(monkeypatch):
    with pytest.raises(WeightsError) as err:
        xeofm.models.resolve_model("prithvi-eo-2.0-600m-tl")
    msg = str(err.value)
    for part in ("Prithvi_EO_V2_600M_TL.pt", "huggingface.co/ibm-nasa-geospatial/Prithvi-EO-2.0-600M-TL",
                 "Hugging Face cache", "XEOFM_WEIGHTS_DIR", "weights='path/to/file'", "pretrained=False"):
        assert part in msg
    with pytest.raises(WeightsError, match="dofa_base_patch16_224-a0275954.pth.*torch hub cache"):
        make_cube(32, 32, bands=["B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12"]).eofm.embed("dofa-base")
    # a spec derived from a registered one still needs its weights
    with pytest.raises(WeightsError, match="CROMA_base-0238d814.pt"):
        xeofm.models.resolve_model(xeofm.models.get_spec("croma-base-s2").replace(name="my-croma"))


# --------------------------------------------------------------------------------------
# Checksums
# --------------------------------------------------------------------------------------
def test_checksum_mismatch_names_both_digests(prithvi_file):
    spec, _, path = prithvi_file
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    wrong = "0" * 64
    with pytest.raises(WeightsError) as err:
        xeofm.load_model(spec.replace(weights_sha256=wrong), weights=path)
    assert digest in str(err.value) and wrong in str(err.value)
    # also when the spec carries the path (checked again where the file is read)
    with pytest.raises(WeightsError, match=f"has SHA-256 {digest}, but {wrong} was expected"):
        xeofm.runtime.build_module(spec.replace(weights=str(path), weights_sha256=wrong))
    # full digest and an 8-digit prefix (torch hub file-name convention) both pass
    xeofm.load_model(spec.replace(weights_sha256=digest), weights=path)
    xeofm.load_model(spec.replace(weights_sha256=digest[:8].upper()), weights=path)
    with pytest.raises(xeofm.SpecError, match="not a hex SHA-256"):
        xeofm.load_model(spec.replace(weights_sha256="abc"), weights=path)


def test_checksum_of_a_cached_file(tmp_path, monkeypatch):
    cache = tmp_path / "hf"
    _hf_snapshot(cache, "ibm-nasa-geospatial/Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt", b"not the release")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    spec = xeofm.models.get_spec("prithvi-eo-2.0-300m").replace(weights_sha256="ab" * 32)
    with pytest.raises(WeightsError, match="SHA-256 .* but abab"):
        xeofm.models.resolve_model(spec)


# --------------------------------------------------------------------------------------
# Bad files
# --------------------------------------------------------------------------------------
def test_wrong_file_for_the_model_names_keys(tmp_path):
    torch.manual_seed(0)
    other = xeofm.models.dofa.build_dofa(img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=4)
    path = tmp_path / "dofa.pth"
    torch.save(other.state_dict(), str(path))
    spec = _tiny_spec()
    with pytest.raises(WeightsError) as err:
        xeofm.load_model(spec, weights=path)
    msg = str(err.value)
    assert "does not fit this model 'prithvi-eo-2.0-300m' (expected Prithvi_EO_V2_300M.pt)" in msg
    assert "missing keys: " in msg and "patch_embed.proj.weight" in msg
    assert "unexpected keys: " in msg and "patch_embed.weight_generator" in msg


def test_right_family_wrong_size_names_shapes(prithvi_file, tmp_path):
    spec, _, path = prithvi_file
    bigger = spec.replace(builder_kwargs={**dict(spec.builder_kwargs), "embed_dim": 64})
    with pytest.raises(WeightsError, match=r"shape mismatch: blocks.0.attn.proj.bias file \(32,\) vs model \(64,\)"):
        xeofm.load_model(bigger.replace(embedding_dim=64), weights=path)


@pytest.mark.parametrize("name, payload", [
    ("bad.pt", b"\x00garbage"),
    ("bad.safetensors", b"not a safetensors file"),
    ("truncated.safetensors", None),
])
def test_corrupt_file(prithvi_file, tmp_path, name, payload):
    spec, src, good = prithvi_file
    if payload is None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in _authors_layout(src).items()}, str(tmp_path / "full.safetensors"))
        payload = (tmp_path / "full.safetensors").read_bytes()[:-1000]
    path = tmp_path / name
    path.write_bytes(payload)
    with pytest.raises(WeightsError, match="cannot read weight file"):
        xeofm.load_model(spec, weights=path)


def test_remap_failure_is_a_weights_error(tmp_path):
    path = tmp_path / "croma.pt"
    torch.save({"s1_encoder": {"linear_input.weight": torch.zeros(2)}, "joint_encoder": {}}, str(path))
    tiny_croma = xeofm.models.get_spec("croma-base-s2")
    tiny_croma = tiny_croma.replace(builder_kwargs={**dict(tiny_croma.builder_kwargs), "encoder_dim": 32, "encoder_depth": 2})
    with pytest.raises(WeightsError, match="missing keys: s2_GAP_FFN"):
        xeofm.load_model(tiny_croma, weights=path)
    path1 = tmp_path / "intkeys.pt"
    torch.save({1: torch.zeros(1)}, str(path1))
    with pytest.raises(WeightsError, match="could not be converted for model 'prithvi-eo-2.0-300m'.*Prithvi_EO_V2_300M.pt"):
        xeofm.load_model(_tiny_spec(), weights=path1)
    path2 = tmp_path / "twice.pt"
    torch.save({"model.cls_token": torch.zeros(1), "cls_token": torch.zeros(1)}, str(path2))
    with pytest.raises(WeightsError, match="two checkpoint keys map to 'cls_token'"):
        xeofm.load_model(_tiny_spec(), weights=path2)


def test_unpickling_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled arbitrary code",))

    path = tmp_path / "Prithvi_EO_V2_300M.pt"
    torch.save({"encoder.cls_token": Evil()}, str(path))
    with pytest.raises(WeightsError, match="cannot read weight file"):
        xeofm.load_model(_tiny_spec(), weights=path)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------
def test_warn_gsd():
    spec = xeofm.models.get_spec("prithvi-eo-2.0-300m")
    with pytest.warns(UserWarning, match=r"pixel size \(10 m\) is far from the 30 m model 'prithvi-eo-2.0-300m'"):
        assert weights.warn_gsd(spec, 10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not weights.warn_gsd(spec, 20.0)
        assert not weights.warn_gsd(spec, 60.0)
        assert not weights.warn_gsd(spec, None)
        assert not weights.warn_gsd(xeofm.models.get_spec("dofa-base"), 0.5)  # no training GSD: many
        assert not weights.warn_gsd(spec.replace(aux=("gsd",)), 300.0)  # the model takes the GSD


def test_key_helpers():
    assert weights.flatten({"a": {"b": 1, "c": {"d": 2}}, "e": 3}) == {"a.b": 1, "a.c.d": 2, "e": 3}
    assert weights.strip_prefixes({"module.model.x": 1, "y": 2}, ("model.", "module.")) == {"x": 1, "y": 2}
    assert weights.drop_keys({"head.w": 1, "a_dec.b": 2, "k": 3, "z": 4}, prefixes=("head.",), contains=("_dec.",), exact=("z",)) == {"k": 3}


def test_registering_the_zoo_imports_no_torch():
    code = "import sys, xeofm; assert 'prithvi-eo-2.0-300m' in xeofm.list_models(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
