"""Registered models, weight loading and the per-process model cache."""

from __future__ import annotations

import numpy as np
import pytest

import xeofm
from xeofm import runtime
from xeofm.bands import SENTINEL2
from xeofm.errors import WeightsError

from .conftest import make_cube

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

S2 = [b.id for b in SENTINEL2]


def _s2_cube(n=224, seed=0):
    return make_cube(n, n, bands=S2, seed=seed)


def _save(sd, path):
    if str(path).endswith(".safetensors"):
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, str(path))
    return path


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_ssl4eo_resnet18_equals_timm_reference(tmp_path, suffix):
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=0, global_pool="").eval()
    path = _save(ref.state_dict(), tmp_path / f"r18{suffix}")
    cube = _s2_cube()
    emb = cube.eofm.embed("ssl4eo-s12-resnet18", weights=path).values
    x = torch.tensor(cube.values.astype("float32"))[None] * 1e-4
    with torch.no_grad():
        want = ref.forward_features(x)[0].numpy()
    assert emb.shape == (512, 7, 7)
    np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-5)


def test_ssl4eo_vit_tokens_equal_timm_reference(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("vit_small_patch16_224", pretrained=False, in_chans=13, num_classes=0).eval()
    path = _save(ref.state_dict(), tmp_path / "vits.safetensors")
    cube = _s2_cube(seed=3)
    emb = cube.eofm.embed("ssl4eo-s12-vit-small16", weights=path).values
    x = torch.tensor(cube.values.astype("float32"))[None] * 1e-4
    with torch.no_grad():
        tok = ref.forward_features(x)[0, 1:].reshape(14, 14, 384).permute(2, 0, 1).numpy()
    np.testing.assert_allclose(emb, tok, rtol=1e-4, atol=1e-5)


def test_checkpoint_nested_under_state_dict(tmp_path):
    torch.manual_seed(0)
    ref = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=0, global_pool="")
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": ref.state_dict(), "epoch": 3}, str(path))
    model = xeofm.load_model("ssl4eo-s12-resnet18", weights=path)
    assert torch.equal(model.conv1.weight, ref.conv1.weight)


def test_wrong_weights_name_the_keys(tmp_path):
    torch.manual_seed(0)
    r18 = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=0, global_pool="")
    path = _save(r18.state_dict(), tmp_path / "r18.safetensors")
    with pytest.raises(WeightsError, match="does not fit this model.*(missing keys|shape mismatch)"):
        xeofm.load_model("ssl4eo-s12-resnet50", weights=path)


def test_corrupt_weight_file(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="cannot read weight file"):
        xeofm.load_model("ssl4eo-s12-resnet18", weights=bad)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x00garbage")
    with pytest.raises(WeightsError, match="cannot read weight file"):
        xeofm.load_model("ssl4eo-s12-resnet18", weights=bad)


def test_torch_files_are_read_weights_only(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("unpickled arbitrary code",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, str(path))
    with pytest.raises(WeightsError):
        runtime.load_state_dict(path)


def test_random_weights_on_request_and_cache_once_per_process():
    runtime.clear_cache()
    cube = _s2_cube(64)
    spec = xeofm.models.resolve_model("ssl4eo-s12-resnet18", pretrained=False)
    m1 = runtime.get_model(spec, "cpu")
    m2 = runtime.get_model(spec, "cpu")
    assert m1 is m2
    emb = cube.eofm.embed("ssl4eo-s12-resnet18", pretrained=False, overlap=0).compute()
    assert emb.shape == (512, 2, 2)
    assert runtime.cached_models() == [(spec.hash, "cpu")]


def test_spec_hash_is_stable_and_sensitive():
    s = xeofm.models.get_spec("ssl4eo-s12-resnet18")
    assert s.hash == xeofm.models.get_spec("ssl4eo-s12-resnet18").hash
    assert s.replace(scale=1.0).hash != s.hash
    assert s.replace(description="other words").hash == s.hash


def test_register_custom_builder_spec():
    spec = xeofm.ModelSpec(
        name="test-timm-r18-rgb", bands=["red", "green", "blue"], chip_size=64, stride=32, embedding_dim=512,
        builder="xeofm.models.builders:timm_feature_map", builder_kwargs={"arch": "resnet18", "in_chans": 3},
    )
    xeofm.register(spec, overwrite=True)
    assert "test-timm-r18-rgb" in xeofm.list_models()
    emb = make_cube(64, 64).eofm.embed("test-timm-r18-rgb")
    assert emb.shape == (512, 2, 2)
    with pytest.raises(xeofm.SpecError, match="already registered"):
        xeofm.register(spec)
