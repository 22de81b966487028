"""Segmentation heads on zoo backbones: UPerNet through segment()."""

from __future__ import annotations

import dask
import numpy as np
import pytest

import xeofm
from xeofm.bands import SENTINEL2
from xeofm.errors import SpecError, WeightsError
from xeofm.models.heads import build_timm_upernet, segmenter

from .conftest import CountingScheduler, make_cube

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

L1C = [b.id for b in SENTINEL2]
CLASSES = ["water", "forest", "crop"]


def _spec(**kw):
    # a small chip keeps the forward passes fast; the architecture is the registered one
    return segmenter("ssl4eo-s12-resnet18", CLASSES, channels=32, **kw).replace(chip_size=64, overlap=16)


def _cube(n=96, seed=1):
    return make_cube(ny=n, nx=n + 16, bands=L1C, res=10.0, seed=seed)


def test_upernet_returns_logits_at_stride_4():
    m = build_timm_upernet("resnet18", 13, 5, channels=32).eval()
    with torch.no_grad():
        out = m(torch.randn(2, 13, 64, 64))
    assert out.shape == (2, 5, 16, 16)


def test_segmenter_spec_and_refusals():
    spec = segmenter("ssl4eo-s12-resnet50", CLASSES, colors=["#0000ff", "#00aa00", "#ffcc00"])
    assert spec.stride == 4 and spec.embedding_dim == 3 and spec.band_ids == L1C
    assert dict(spec.metadata)["classes"] == CLASSES and spec.scale == xeofm.models.get_spec("ssl4eo-s12-resnet50").scale
    with pytest.raises(SpecError, match="timm CNN encoders"):
        segmenter("ssl4eo-s12-vit-small16", CLASSES)
    with pytest.raises(SpecError, match="constant band"):
        segmenter("ssl4eo-s12-resnet18-l2a", CLASSES)
    with pytest.raises(SpecError, match="at least two"):
        segmenter("ssl4eo-s12-resnet18", ["water"])
    with pytest.raises(SpecError, match="unique"):
        segmenter("ssl4eo-s12-resnet18", ["a", "a"])


def test_an_untrained_head_is_never_run_silently():
    with pytest.raises(WeightsError, match="decoder is untrained"):
        _cube().eofm.segment(_spec())


def test_finetuned_checkpoint_gives_the_modules_own_logits(tmp_path):
    """weights= loads the whole segmenter; segment() equals the module's forward on a single chip."""
    from safetensors.torch import save_file

    spec = _spec()
    m = build_timm_upernet("resnet18", 13, 3, channels=32).eval()
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in m.parameters():  # not the seeded init: a loaded file must make the difference
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    path = tmp_path / "seg.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    cube = make_cube(ny=64, nx=64, bands=L1C, res=10.0, seed=3)
    probs = cube.eofm.segment(spec, weights=path, probabilities=True, output="patch")
    with torch.no_grad():
        ref = torch.softmax(m(torch.from_numpy(cube.values.astype("float32") * 1e-4)[None]), dim=1)[0].numpy()
    np.testing.assert_allclose(probs.values, ref, rtol=1e-4, atol=1e-5)
    random = cube.eofm.segment(spec, pretrained=False, probabilities=True, output="patch").values
    assert np.abs(random - ref).max() > 1e-3


def test_labels_are_lazy_named_and_chunk_invariant():
    spec = _spec()
    cube = _cube()
    with dask.config.set(scheduler=CountingScheduler(0)):  # building the label cube computes nothing
        labels = cube.chunk({"y": 40, "x": 56}).eofm.segment(spec, pretrained=False)
    assert labels.dtype == np.uint8 and labels.attrs["xeofm:classes"] == CLASSES
    a = labels.values
    b = cube.chunk({"y": 96, "x": 30}).eofm.segment(spec, pretrained=False, batch_size=3).values
    assert np.array_equal(a, b)
    assert a.shape == (96, 112) and set(np.unique(a)) <= {0, 1, 2}


def test_backbone_starts_from_the_encoders_file(tmp_path):
    enc = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=0)
    torch.nn.init.normal_(enc.conv1.weight)
    path = tmp_path / "resnet18_sentinel2_all_moco.pth"
    torch.save(enc.state_dict(), path)
    m = build_timm_upernet("resnet18", 13, 3, channels=16, backbone_weights=str(path))
    assert torch.equal(m.backbone.conv1.weight, enc.conv1.weight)
    assert torch.equal(m.backbone.layer4[1].conv2.weight, enc.layer4[1].conv2.weight)
    torch.save({"conv1.weight": enc.conv1.weight}, tmp_path / "partial.pth")
    with pytest.raises(SpecError, match="lack"):
        build_timm_upernet("resnet18", 13, 3, channels=16, backbone_weights=str(tmp_path / "partial.pth"))
