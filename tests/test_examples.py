"""The example scripts run headless, end to end, on the shipped samples (so they never rot)."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest

pytest.importorskip("holoviews")
pytest.importorskip("matplotlib")
pytest.importorskip("geopandas")

import xeofm  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
pytestmark = pytest.mark.skipif(
    not {"xeofm-demo-patchpca", "xeofm-demo-patchpca-rgbn"} <= set(xeofm.list_models()),
    reason="the demo models (weights) are not installed",
)


def run_example(name: str, out: Path, monkeypatch) -> dict:
    monkeypatch.setattr(sys, "argv", [str(EXAMPLES / name)])
    monkeypatch.setenv("XEOFM_EXAMPLES_OUT", str(out))
    return runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def test_change_detection_example(tmp_path, monkeypatch):
    g = run_example("change_detection.py", tmp_path, monkeypatch)
    for f in ("change_overview.png", "change_transitions.png", "change_vs_first.html", "change_labels.html",
              "change_rgb.html", "change_transitions.csv", "change_class_areas.csv", "change_summary.json"):
        assert (tmp_path / f).stat().st_size > 0, f
    s = json.loads((tmp_path / "change_summary.json").read_text())
    assert s["real_series_max_change"] == 0.0  # the four sample dates are identical
    assert s["scores"]["otsu"]["precision"] == 1.0 and s["scores"]["otsu"]["recall"] > 0.9
    assert s["scores"]["mad"]["recall"] == 1.0
    table = g["table"]
    assert list(table.index) == ["water", "vegetation", "bare", "built"]
    assert 0 < s["changed_class_km2"] < 2 * 48 * 48 * 25 / 1e6  # only inside the pasted blocks


def test_explore_example(tmp_path, monkeypatch):
    g = run_example("explore.py", tmp_path, monkeypatch)
    for f in ("explore_pca.png", "explore_similarity.png", "explore_rgb.html", "explore_pca.html",
              "explore_similarity.html", "explore_tap.html", "explore_top_water.csv", "explore_top_tree.csv"):
        assert (tmp_path / f).stat().st_size > 0, f
    top = g["top_water"]
    assert len(top) == 10 and top.score.iloc[0] == pytest.approx(1.0, abs=1e-6)
    assert list(top.columns) == ["x", "y", "lon", "lat", "score"]
