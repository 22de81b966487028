"""Plots (xeofm.viz), rendered headless: Bokeh models and offline HTML."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm import ops
from xeofm.errors import MissingBandsError
from xeofm.labels import as_label_cube

hv = pytest.importorskip("holoviews")
pytest.importorskip("datashader")
pytest.importorskip("bokeh")
pytest.importorskip("rioxarray")

from xeofm import viz  # noqa: E402

from .test_ops import DATES, make_emb  # noqa: E402

CLASSES = ["water", "trees", "built"]
COLORS = ["#0000ff", "#00aa00", "#ff0000"]


def labels_cube(nt=2, ny=60, nx=80, crs="EPSG:32618", seed=0, chunks=None):
    lab = np.random.default_rng(seed).integers(0, 3, (nt, ny, nx)).astype(np.uint8)
    lab[:, :5, :] = 255
    da = xr.DataArray(
        lab, dims=("time", "y", "x"),
        coords={"time": DATES[:nt], "y": 2_050_000 - 30 * (np.arange(ny) + 0.5), "x": 793_600 + 30 * (np.arange(nx) + 0.5)},
    )
    da = as_label_cube(da, CLASSES, COLORS)
    if crs:
        da = da.rio.write_crs(crs)
    return da.chunk(chunks or {"time": 1, "y": 32, "x": 32})


def rgb_cube(crs="EPSG:32618"):
    rng = np.random.default_rng(0)
    a = rng.integers(1, 255, (4, 4, 40, 50)).astype(np.uint8)
    a[:, :, :3, :3] = 0
    da = xr.DataArray(
        a, dims=("time", "band", "y", "x"), name="rgbn",
        coords={"time": DATES, "band": ["red", "green", "blue", "nir"],
                "y": 2_050_000 - 5 * (np.arange(40) + 0.5), "x": 793_600 + 5 * (np.arange(50) + 0.5)},
        attrs={"_FillValue": 0},
    )
    return da.rio.write_crs(crs) if crs else da


def render(obj):
    return hv.render(obj, backend="bokeh")


def glyph_arrays(fig, glyph_type):
    from bokeh.models import GlyphRenderer

    return [r.data_source.data["image"][0] for r in fig.select(type=GlyphRenderer) if type(r.glyph).__name__ == glyph_type]


def rasterize_ops(obj):
    """(operation, kwargs) of every dynamic operation in a HoloViews object."""
    found = []
    if isinstance(obj, hv.DynamicMap):
        cb = obj.callback
        if getattr(cb, "operation", None) is not None:
            found.append((cb.operation, getattr(cb, "operation_kwargs", {})))
        for s in cb.inputs:
            found += rasterize_ops(s)
    elif hasattr(obj, "values") and not isinstance(obj, xr.DataArray):
        for v in obj.values():
            found += rasterize_ops(v)
    return found


def test_importing_xeofm_does_not_import_plotting_libraries():
    code = (
        "import sys, xeofm, xeofm.ops, xeofm.viz; "
        "bad = [m for m in ('holoviews', 'hvplot', 'bokeh', 'datashader', 'panel', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_labels_plot_legend_colours_and_mode_aggregation(tmp_path):
    L = labels_cube()
    obj = viz.plot_labels(L)
    opsfound = [(op, kw) for op, kw in rasterize_ops(obj) if op is not None and op.name == "rasterize"]
    assert opsfound and all(kw.get("aggregator") == "mode" for _, kw in opsfound)
    fig = render(obj)
    assert [it.label.value for it in fig.legend[0].items] == CLASSES
    from bokeh.models import LinearColorMapper

    (cm,) = [c for c in fig.select(type=LinearColorMapper)]
    assert list(cm.palette) == COLORS and (cm.low, cm.high) == (-0.5, 2.5)
    assert "EPSG:32618" in fig.title.text and "EPSG:32618" in fig.xaxis[0].axis_label
    (img,) = glyph_arrays(fig, "Image")
    vals = np.unique(img[np.isfinite(img)])
    assert set(vals) <= {0.0, 1.0, 2.0}  # mode of class ids: never a fractional/bogus class
    assert np.isnan(img).any()  # nodata stays transparent
    out = viz.save_html(obj, tmp_path / "labels.html")
    html = out.read_text()
    assert all(c in html for c in CLASSES) and "cdn.bokeh.org" not in html


def test_large_label_cubes_are_mode_downsampled_first():
    L = labels_cube(nt=1, ny=300, nx=420, chunks={"time": 1, "y": 64, "x": 100})
    obj = viz.plot_labels(L.isel(time=0), max_size=100, rasterize=False)
    (img,) = glyph_arrays(render(obj), "Image")
    assert img.shape == (60, 84)  # 300/5 x 420/5: a lazy block-wise mode, then plotted
    assert set(np.unique(img[np.isfinite(img)])) <= {0.0, 1.0, 2.0}


def test_rgb_plot_has_a_date_slider(tmp_path):
    c = rgb_cube()
    obj = viz.plot_rgb(c)
    assert isinstance(obj, hv.HoloMap) and [d.name for d in obj.kdims] == ["time"]
    assert list(obj.keys()) == list(DATES)
    fig = render(obj)
    assert "EPSG:32618" in fig.title.text
    (rgba,) = glyph_arrays(fig, "ImageRGBA")
    assert rgba.shape == (40, 50)
    alpha = rgba.view(np.uint8).reshape(40, 50, 4)[..., 3]
    assert (alpha == 0).sum() == 9 and (alpha == 255).sum() == 40 * 50 - 9  # the 3 x 3 nodata (0) corner is transparent
    with pytest.raises(MissingBandsError, match="swir"):
        viz.plot_rgb(c, bands=("swir16", "nir", "red"))
    html = viz.save_html(obj, tmp_path / "rgb.html").read_text()
    assert all(str(d)[:10] in html for d in DATES)
    pn = pytest.importorskip("panel")
    widget = pn.panel(obj)[1][0]
    assert type(widget).__name__ == "DiscreteSlider"
    assert [k[:10] for k in widget.options] == [str(d)[:10] for d in DATES]


def test_pca_and_change_plots():
    e = make_emb()
    obj = viz.plot_pca(e)
    assert isinstance(obj, hv.HoloMap) and len(obj) == 4
    fig = render(obj)
    assert "PCA of m embeddings" in fig.title.text and "variance" in fig.title.text
    ch = ops.change(e, reference="first")
    cp = viz.plot_change(ch)
    fig = render(cp)
    assert "cosine change vs first (2016-01-01)" in fig.title.text
    from bokeh.models import ColorBar

    assert fig.select(type=ColorBar)
    mask = ops.threshold(ch, 0.5)
    mops = [kw for op, kw in rasterize_ops(viz.plot_map(mask)) if op is not None and op.name == "rasterize"]
    assert mops and mops[0]["aggregator"] == "max"
    sim = ops.similarity(e.isel(time=0), x=float(e.x[3]), y=float(e.y[3]))
    assert "similarity to point" in render(viz.plot_similarity(sim)).title.text


def test_cube_without_crs_plots_on_pixel_axes_with_a_warning():
    L = labels_cube(crs=None)
    with pytest.warns(UserWarning, match="no CRS"):
        obj = viz.plot_labels(L)
    fig = render(obj)
    assert fig.xaxis[0].axis_label == "column" and fig.yaxis[0].axis_label == "row"
    assert "no CRS" in fig.title.text
    with pytest.warns(UserWarning, match="no CRS"):
        fig = render(viz.plot_rgb(rgb_cube(crs=None)))
    assert fig.xaxis[0].axis_label == "column"


def test_plot_namespace_dispatch():
    L = labels_cube(nt=1).isel(time=0)
    fig = render(viz.EofmPlot(L)())
    assert [it.label.value for it in fig.legend[0].items] == CLASSES
    assert isinstance(viz.EofmPlot(rgb_cube()).rgb(bands=("nir", "red", "green")), hv.HoloMap)
    assert isinstance(viz.EofmPlot(rgb_cube())(), hv.HoloMap)
    assert "PCA" in render(viz.EofmPlot(make_emb().isel(time=0))()).title.text
    ch = ops.change(make_emb())
    assert "change" in render(viz.EofmPlot(ch)()).title.text


@pytest.mark.skipif(not hasattr(xeofm.accessor.EofmDataArrayAccessor, "plot"), reason="accessor not hooked yet")
def test_accessor_plot_namespace():
    L = labels_cube(nt=1).isel(time=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        fig = render(L.eofm.plot())
    assert [it.label.value for it in fig.legend[0].items] == CLASSES
    assert isinstance(rgb_cube().eofm.plot.rgb(bands=("red", "green", "blue")), hv.HoloMap)
