"""The shipped demo models and the README's main job."""

from __future__ import annotations

import json
import runpy
import sys

import numpy as np
import pytest

import xeofm
from xeofm.models import demo

torch = pytest.importorskip("torch")


def test_demo_models_are_registered_with_shipped_weights():
    names = xeofm.list_models()
    for n in ("xeofm-demo-patchpca", "xeofm-demo-patchpca-rgbn", "xeofm-demo-landcover"):
        assert n in names
        spec = xeofm.models.get_spec(n)
        assert spec.weights and spec.weights.endswith(".safetensors")


def test_patchpca_embedding_is_the_pca_score_of_each_patch():
    cube = xeofm.data.sample_cube("landsat", chunks=None).isel(x=slice(0, 128), y=slice(0, 128))
    emb = cube.eofm.embed("xeofm-demo-patchpca", overlap=0).values
    spec = xeofm.models.get_spec("xeofm-demo-patchpca")
    from safetensors.numpy import load_file

    w = load_file(spec.weights)
    a = cube.sel(band=["red", "green", "blue"]).values.astype(np.float64)
    z = (a - np.array(spec.mean)[:, None, None]) / np.array(spec.std)[:, None, None]
    patch = z[:, 16:24, 40:48].ravel()
    want = w["weight"].reshape(16, -1) @ patch + w["bias"]
    np.testing.assert_allclose(emb[:, 2, 5], want, rtol=1e-4, atol=1e-4)


def test_landcover_model_agrees_with_its_weak_labels():
    cube = xeofm.data.sample_cube("rgbn").isel(time=0)
    lab = cube.eofm.segment("xeofm-demo-landcover").values
    weak = demo.weak_labels(cube.sel(band=["red", "green", "blue", "nir"]).values.astype(float))
    agree = (lab == weak).mean()
    assert agree > 0.9  # held-out agreement is recorded in the weights' JSON
    meta = json.loads((demo.WEIGHTS_DIR / "demo-landcover-rgbn.json").read_text())
    assert meta["heldout_pixel_agreement"] > 0.9


def test_main_job_runs_and_writes_outputs(tmp_path, monkeypatch):
    pytest.importorskip("zarr")
    pytest.importorskip("matplotlib")
    from pathlib import Path

    monkeypatch.setattr(sys, "argv", ["demo.py", "--out", str(tmp_path)])
    mod = runpy.run_path(str(Path(__file__).resolve().parents[1] / "examples" / "demo.py"))
    summary = mod["main"](["--out", str(tmp_path)])
    assert (tmp_path / "demo.png").stat().st_size > 10_000
    for name in ("embeddings", "labels", "change"):
        assert xeofm.io.store_progress(tmp_path / f"{name}.zarr")["complete"]
    again = mod["main"](["--out", str(tmp_path)])  # a second run resumes: nothing is recomputed
    assert again["regions_written"] == 0 and summary["regions_written"] > 0
    fr = summary["class_fractions_first_date"]
    assert abs(sum(fr.values()) - 1) < 1e-6
