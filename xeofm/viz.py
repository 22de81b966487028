"""Interactive maps of cubes, embeddings, label cubes and change, with HoloViews.

Every function returns a HoloViews object (Bokeh backend): display it in a
notebook, or write a self-contained HTML file with :func:`save_html` (works
offline). HoloViews, Datashader and Bokeh are imported when a plot is made,
never by ``import xeofm``.

* Large rasters are first reduced lazily (a block-wise mode for labels, a
  mean for continuous values) to at most ``max_size`` cells a side, computed
  once, then rasterized with Datashader to the screen. Labels are always
  aggregated with the **mode** (never averaged: the mean of two class ids is a
  third, wrong class) and shown with the class colours and a legend of names.
* Extra dims (``time``...) become a slider; with ``time`` its values are the
  dates.
* With GeoViews installed and ``geo=True`` the maps are drawn in their CRS
  (for tiles and projections); otherwise the axes are the CRS's own x/y, and
  the title names the CRS. A cube without a CRS is drawn on pixel axes
  (``column``/``row``) with a warning.
* A static HTML file holds what was rendered: zooming in it does not re-run the
  aggregation (that needs a live notebook or server).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import xarray as xr

from .errors import InputError, MissingBandsError, MissingDimensionError

__all__ = [
    "EofmPlot",
    "plot_labels",
    "plot_rgb",
    "plot_pca",
    "plot_map",
    "plot_change",
    "plot_similarity",
    "save_html",
]


# --------------------------------------------------------------------------------------
# Set-up and shared preparation
# --------------------------------------------------------------------------------------
def _hv():
    import holoviews as hv

    if "bokeh" not in hv.Store.loaded_backends():
        hv.extension("bokeh", logo=False)
    return hv


def _geo_requested(geo: bool | None, crs) -> bool:
    if geo is False or crs is None:
        return False
    try:
        import cartopy.crs  # noqa: F401
        import geoviews  # noqa: F401
    except ImportError:
        if geo:
            raise ImportError("geo=True needs geoviews and cartopy (pip install geoviews)") from None
        return False
    return True


def _cartopy_crs(crs):
    import cartopy.crs as ccrs

    epsg = crs.to_epsg()
    if epsg is None:
        raise InputError(f"geo=True needs a CRS with an EPSG code, got {crs.name!r}; use geo=False")
    return ccrs.epsg(epsg)


class _Frame:
    """A cube prepared for plotting: in-memory, small enough, with axis info."""

    def __init__(self, da: xr.DataArray, ydim, xdim, crs, lead: list, xlabel: str, ylabel: str, crs_name: str, pixel: bool):
        self.da, self.ydim, self.xdim, self.crs, self.lead = da, ydim, xdim, crs, lead
        self.xlabel, self.ylabel, self.crs_name, self.pixel = xlabel, ylabel, crs_name, pixel

    def keys(self) -> list[tuple]:
        if not self.lead:
            return [()]
        return list(np.ndindex(*[self.da.sizes[d] for d in self.lead]))

    def key_values(self, k: tuple) -> tuple:
        return tuple(self.da[d].values[i] if d in self.da.coords else i for d, i in zip(self.lead, k))

    def select(self, k: tuple) -> xr.DataArray:
        return self.da.isel(dict(zip(self.lead, k))) if k else self.da


def _prepare(da: xr.DataArray, *, inner: Sequence[str] = (), max_size: int, reduce: str) -> _Frame:
    """Find dims and CRS, reduce to at most ``max_size`` cells a side (lazily), then compute."""
    from .ops import _crs_name, _crs_of, _xy_dims, coarsen_mode

    ydim, xdim = _xy_dims(da)
    crs = _crs_of(da)
    ny, nx = da.sizes[ydim], da.sizes[xdim]
    f = max(1, math.ceil(max(ny, nx) / max(int(max_size), 1)))
    if f > 1:
        if reduce == "mode":
            da = coarsen_mode(da, f)
        else:
            da = da.coarsen({ydim: f, xdim: f}, boundary="pad").mean(skipna=True)
    pixel = crs is None
    if pixel:
        warnings.warn(
            "the cube has no CRS: plotting on pixel axes (column/row). Set one with "
            "da.rio.write_crs('EPSG:...') for map coordinates.",
            UserWarning,
            stacklevel=3,
        )
        da = da.assign_coords({xdim: np.arange(da.sizes[xdim]), ydim: np.arange(da.sizes[ydim])})
        xlabel, ylabel, crs_name = "column", "row", "no CRS"
    else:
        crs_name = _crs_name(crs)
        unit = crs.axis_info[0].unit_name if crs.axis_info else ""
        xlabel = f"{xdim} ({crs_name}{', ' + unit if unit else ''})"
        ylabel = f"{ydim} ({crs_name}{', ' + unit if unit else ''})"
    lead = [d for d in da.dims if d not in (ydim, xdim, *inner)]
    da = da.transpose(*lead, *inner, ydim, xdim).compute()
    return _Frame(da, ydim, xdim, crs, lead, xlabel, ylabel, crs_name, pixel)


def _key_dims(fr: _Frame) -> list:
    hv = _hv()
    dims = []
    for d in fr.lead:
        vals = fr.da[d].values if d in fr.da.coords else None
        if vals is not None and vals.dtype.kind == "M":
            dims.append(hv.Dimension(str(d), value_format=lambda v: str(np.datetime64(v, "D"))))
        else:
            dims.append(hv.Dimension(str(d)))
    return dims


def _collect(fr: _Frame, make) -> Any:
    """One element per step of the lead dims: a HoloMap (slider) or a single element."""
    hv = _hv()
    items = {fr.key_values(k): make(fr.select(k)) for k in fr.keys()}
    if not fr.lead:
        return items[()]
    return hv.HoloMap(items, kdims=_key_dims(fr))


def _title(base: str, fr: _Frame, title: str | None) -> str:
    return title if title is not None else f"{base} — {fr.crs_name}"


def _common_opts(fr: _Frame, title: str, width: int, height: int | None) -> dict:
    opts: dict[str, Any] = {"title": title, "xlabel": fr.xlabel, "ylabel": fr.ylabel, "tools": ["hover"]}
    if height is None:
        opts.update(frame_width=int(width), data_aspect=1)
    else:
        opts.update(width=int(width), height=int(height))
    if fr.pixel:
        opts["invert_yaxis"] = True
    return opts


def _image(hv, fr: _Frame, arr: np.ndarray, vdim: str, geo: bool):
    xs = fr.da[fr.xdim].values
    ys = fr.da[fr.ydim].values
    kd = [fr.xdim, fr.ydim]
    if geo:
        import geoviews as gv

        return gv.Image((xs, ys, arr), kdims=kd, vdims=[vdim], crs=_cartopy_crs(fr.crs))
    return hv.Image((xs, ys, arr), kdims=kd, vdims=[vdim])


def _rgb(hv, fr: _Frame, rgba: np.ndarray, geo: bool):
    xs = fr.da[fr.xdim].values
    ys = fr.da[fr.ydim].values
    data = (xs, ys, *[rgba[i] for i in range(rgba.shape[0])])
    vd = ["R", "G", "B", "A"][: rgba.shape[0]]
    if geo:
        import geoviews as gv

        return gv.RGB(data, kdims=[fr.xdim, fr.ydim], vdims=vd, crs=_cartopy_crs(fr.crs))
    return hv.RGB(data, kdims=[fr.xdim, fr.ydim], vdims=vd)


def _rasterize(obj, aggregator: str, enabled: bool):
    """Datashader aggregation to the screen (re-run on zoom in a live session)."""
    if not enabled:
        return obj
    from holoviews.operation.datashader import rasterize

    return rasterize(obj, aggregator=aggregator)


# --------------------------------------------------------------------------------------
# Label cubes
# --------------------------------------------------------------------------------------
def plot_labels(
    labels: xr.DataArray,
    *,
    rasterize: bool = True,
    max_size: int = 2048,
    width: int = 600,
    height: int | None = None,
    title: str | None = None,
    geo: bool | None = None,
    legend_position: str = "right",
):
    """A label cube as a categorical map with a legend of class names and colours.

    Parameters
    ----------
    labels
        Label cube ``(..., y, x)`` (``xeofm:classes``, ``xeofm:colors``,
        nodata label); extra dims become a slider.
    rasterize
        Aggregate to the screen with Datashader using the **mode** of the
        class ids (``rasterize(..., aggregator="mode")``), re-run on zoom in a
        live session.
    max_size
        Larger cubes are first reduced lazily by a block-wise mode
        (:func:`xeofm.ops.coarsen_mode`) to at most this many cells a side.
    width, height
        Plot size in screen pixels (equal aspect unless ``height`` is given).
    title
        Title; defaults to ``"<classes> — <CRS>"``.
    geo
        Draw in the CRS with GeoViews (``None``: when it is installed).
    legend_position
        Where the legend goes.

    Returns
    -------
    holoviews.Overlay or holoviews.DynamicMap
        The map (nodata transparent) overlaid with one legend entry per class.
    """
    from .labels import default_colors
    from .ops import _label_meta

    hv = _hv()
    classes, nodata = _label_meta(labels)
    colors = list(labels.attrs.get("xeofm:colors") or default_colors(classes))
    K = len(classes)
    fr = _prepare(labels, max_size=max_size, reduce="mode")
    use_geo = _geo_requested(geo, fr.crs)

    def make(a: xr.DataArray):
        v = a.values
        f = np.where((v < K) & (v != nodata), v, np.nan).astype(np.float32)
        return _image(hv, fr, f, "label", use_geo)

    img = _rasterize(_collect(fr, make), "mode", rasterize)
    opts = _common_opts(fr, _title("labels", fr, title), width, height)
    img = img.opts(
        cmap=colors, clim=(-0.5, K - 0.5), color_levels=K, colorbar=False,
        clipping_colors={"NaN": "transparent"}, **opts,
    )
    xd, yd = fr.xdim, fr.ydim
    keys = [
        hv.Points([], kdims=[xd, yd], label=name).opts(color=c, marker="square", size=10)
        for name, c in zip(classes, colors)
    ]
    return (img * hv.Overlay(keys)).opts(legend_position=legend_position, show_legend=True)


# --------------------------------------------------------------------------------------
# RGB composites, PCA false colour
# --------------------------------------------------------------------------------------
def _rgba_frames(fr: _Frame, hv, use_geo: bool):
    def make(a: xr.DataArray):
        v = np.asarray(a.values, dtype=np.float32)  # (3, y, x) in [0, 1]
        ok = np.isfinite(v).all(0)
        rgba = np.concatenate([np.where(np.isfinite(v), v, 0), ok[None].astype(np.float32)])
        return _rgb(hv, fr, rgba, use_geo)

    return make


def plot_rgb(
    cube: xr.DataArray,
    bands: Sequence[str] = ("red", "green", "blue"),
    *,
    band_dim: str = "band",
    lo: float = 2.0,
    hi: float = 98.0,
    max_size: int = 1024,
    width: int = 600,
    height: int | None = None,
    title: str | None = None,
    geo: bool | None = None,
):
    """A true- or false-colour composite with a robust stretch and a time slider.

    Parameters
    ----------
    cube
        ``(..., band, y, x)`` cube; the cube's nodata value (``_FillValue`` /
        ``nodata`` / rio nodata) and NaN are transparent.
    bands
        Three band labels for red, green and blue.
    band_dim
        Name of the band dim.
    lo, hi
        Percentiles stretched to 0 and 1 per band, estimated on a sample of
        the whole cube (:func:`xeofm.ops.robust_stretch`), so all dates share
        one stretch.
    max_size
        Larger cubes are averaged lazily to at most this many cells a side.
    width, height, title, geo
        As in :func:`plot_labels`.

    Returns
    -------
    holoviews.RGB or holoviews.HoloMap
        A HoloMap keyed by the extra dims (a date slider for ``time``).
    """
    from .ops import robust_stretch

    hv = _hv()
    if band_dim not in cube.dims:
        raise MissingDimensionError(f"plot_rgb(): no {band_dim!r} dim in {list(cube.dims)}; pass band_dim=")
    bands = list(bands)
    if len(bands) != 3:
        raise InputError(f"plot_rgb() needs 3 bands (red, green, blue), got {bands}")
    have = [str(b) for b in cube[band_dim].values] if band_dim in cube.coords else []
    missing = [b for b in bands if b not in have]
    if missing:
        raise MissingBandsError(f"bands {missing} are not in the cube (bands: {have})")
    sel = cube.sel({band_dim: bands})
    nd = sel.attrs.get("_FillValue", sel.attrs.get("nodata"))
    if nd is None:
        try:
            nd = sel.rio.nodata
        except Exception:
            nd = None
    x = sel.astype(np.float32)
    if nd is not None and not (isinstance(nd, float) and math.isnan(nd)):
        x = x.where(sel != nd)
    x = robust_stretch(x, band_dim, lo=lo, hi=hi)
    fr = _prepare(x, inner=[band_dim], max_size=max_size, reduce="mean")
    use_geo = _geo_requested(geo, fr.crs)
    obj = _collect(fr, _rgba_frames(fr, hv, use_geo))
    name = "RGB" if bands == ["red", "green", "blue"] else "/".join(bands)
    return obj.opts(**_common_opts(fr, _title(f"{cube.name or 'cube'} {name}", fr, title), width, height))


def plot_pca(
    emb: xr.DataArray,
    *,
    fit: Any = None,
    sample: int = 20_000,
    seed: int = 0,
    max_size: int = 1024,
    width: int = 600,
    height: int | None = None,
    title: str | None = None,
    geo: bool | None = None,
):
    """Embeddings as colour: their first three principal components as RGB.

    Parameters
    ----------
    emb
        Embedding cube ``(..., embedding, y, x)``.
    fit
        A :class:`xeofm.ops.PCAFit` to reuse (e.g. fitted on another date);
        otherwise fitted on a sample (``sample``, ``seed``) of all steps, so
        colours mean the same on every date.
    max_size, width, height, title, geo
        As in :func:`plot_rgb`.

    Returns
    -------
    holoviews.RGB or holoviews.HoloMap
    """
    from .ops import pca, robust_stretch

    hv = _hv()
    p = robust_stretch(pca(emb, 3, sample=sample, seed=seed, fit=fit), "component")
    fr = _prepare(p, inner=["component"], max_size=max_size, reduce="mean")
    use_geo = _geo_requested(geo, fr.crs)
    obj = _collect(fr, _rgba_frames(fr, hv, use_geo))
    ratio = fr.da.coords.get("explained_variance_ratio")
    var = ""
    if ratio is not None:
        var = " (variance " + ", ".join(f"{100 * float(r):.0f}%" for r in np.asarray(ratio.values).ravel()) + ")"
    model = emb.attrs.get("xeofm:model", "")
    base = f"PCA of {model + ' ' if model else ''}embeddings{var}"
    return obj.opts(**_common_opts(fr, _title(base, fr, title), width, height))


# --------------------------------------------------------------------------------------
# Scalar maps: change, similarity, anomaly, masks
# --------------------------------------------------------------------------------------
def plot_map(
    da: xr.DataArray,
    *,
    cmap: Any = "viridis",
    clim: tuple[float | None, float | None] | None = None,
    label: str | None = None,
    rasterize: bool = True,
    aggregator: str = "mean",
    max_size: int = 2048,
    width: int = 600,
    height: int | None = None,
    title: str | None = None,
    geo: bool | None = None,
):
    """A scalar cube (``(..., y, x)``) as a colour-mapped map with a colourbar.

    Parameters
    ----------
    da
        Values to show; booleans are drawn as 0/1 (aggregated with ``"max"``
        so a thin ``True`` survives zooming out). NaN is transparent.
    cmap, clim
        Colour map and limits (``None`` ends: the 2nd/98th percentile).
    label
        Name of the value in hover and colourbar (default ``da.name``).
    rasterize, aggregator
        Datashader aggregation to the screen and its reduction.
    max_size, width, height, title, geo
        As in :func:`plot_labels`.

    Returns
    -------
    holoviews.Image, holoviews.HoloMap or holoviews.DynamicMap
    """
    hv = _hv()
    if da.dtype == bool:
        da = da.astype(np.float32)
        aggregator = "max" if aggregator == "mean" else aggregator
        clim = clim or (0.0, 1.0)
    fr = _prepare(da.astype(np.float32), max_size=max_size, reduce="mean")
    use_geo = _geo_requested(geo, fr.crs)
    vd = str(label or da.name or "value")
    vals = np.asarray(fr.da.values, dtype=np.float64)
    finite = vals[np.isfinite(vals)]
    lo, hi = (np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0))
    c0, c1 = clim if clim is not None else (None, None)
    c0 = float(lo) if c0 is None else float(c0)
    c1 = float(hi) if c1 is None else float(c1)
    if c1 <= c0:
        c1 = c0 + 1e-6

    def make(a: xr.DataArray):
        return _image(hv, fr, np.asarray(a.values, dtype=np.float32), vd, use_geo)

    obj = _rasterize(_collect(fr, make), aggregator, rasterize)
    base = da.attrs.get("long_name", vd)
    return obj.opts(
        cmap=cmap, clim=(c0, c1), colorbar=True, clipping_colors={"NaN": "transparent"},
        **_common_opts(fr, _title(str(base), fr, title), width, height),
    )


def plot_change(change: xr.DataArray, *, cmap: Any = "magma", clim: tuple | None = None, **kwargs: Any):
    """A change (or anomaly) cube from :func:`xeofm.ops.change`; see :func:`plot_map`.

    The colour scale starts at 0 (no change); the title says the metric and
    the reference.
    """
    ref = change.attrs.get("xeofm:reference")
    metric = change.attrs.get("xeofm:metric", "")
    base = f"{metric} {change.name or 'change'}".strip() + (f" vs {ref}" if ref else "")
    if "title" not in kwargs:
        from .ops import _crs_name, _crs_of

        kwargs["title"] = f"{base} — {_crs_name(_crs_of(change))}"
    return plot_map(change, cmap=cmap, clim=clim if clim is not None else (0.0, None), **kwargs)


def plot_similarity(sim: xr.DataArray, *, cmap: Any = "viridis", clim: tuple | None = None, **kwargs: Any):
    """A similarity cube from :func:`xeofm.ops.similarity`; see :func:`plot_map`."""
    if "title" not in kwargs:
        from .ops import _crs_name, _crs_of

        q = sim.attrs.get("xeofm:query", "")
        kwargs["title"] = f"similarity to {q} — {_crs_name(_crs_of(sim))}" if q else None
    return plot_map(sim, cmap=cmap, clim=clim, **kwargs)


def save_html(obj: Any, path: str | Path, *, title: str | None = None) -> Path:
    """Write a plot to a self-contained HTML file (Bokeh resources inline: opens offline).

    Sliders are embedded with all their frames. Rasterized plots are saved at
    the resolution they were rendered at.
    """
    hv = _hv()
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    hv.save(obj, str(p), backend="bokeh", resources="inline", title=title or p.stem)
    return p


# --------------------------------------------------------------------------------------
# The .eofm.plot namespace
# --------------------------------------------------------------------------------------
class EofmPlot:
    """Plot namespace of ``DataArray.eofm``: call it, or pick a kind.

    ``da.eofm.plot()`` picks from the content: a label cube (``xeofm:classes``)
    → :func:`plot_labels`; embeddings (``embedding`` dim) → :func:`plot_pca`;
    a cube with a ``band`` dim → :func:`plot_rgb`; anything else →
    :func:`plot_map` (:func:`plot_change` for change/anomaly cubes).

    Examples
    --------
    >>> labels.eofm.plot()                                   # doctest: +SKIP
    >>> cube.eofm.plot.rgb(bands=("nir", "red", "green"))    # doctest: +SKIP
    >>> emb.eofm.plot.pca()                                  # doctest: +SKIP
    """

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    def __call__(self, **kwargs: Any):
        o = self._obj
        if not isinstance(o, xr.DataArray):
            raise InputError(".eofm.plot() works on DataArrays; pick a variable of the Dataset first")
        if "xeofm:classes" in o.attrs or o.attrs.get("flag_meanings"):
            return self.labels(**kwargs)
        if "embedding" in o.dims:
            return self.pca(**kwargs)
        if "band" in o.dims:
            return self.rgb(**kwargs)
        if o.name in ("change", "anomaly", "distance"):
            return self.change(**kwargs)
        return self.map(**kwargs)

    def labels(self, **kwargs: Any):
        """See :func:`plot_labels`."""
        return plot_labels(self._obj, **kwargs)

    def rgb(self, bands: Sequence[str] = ("red", "green", "blue"), **kwargs: Any):
        """See :func:`plot_rgb`."""
        return plot_rgb(self._obj, bands, **kwargs)

    def pca(self, **kwargs: Any):
        """See :func:`plot_pca`."""
        return plot_pca(self._obj, **kwargs)

    def change(self, **kwargs: Any):
        """See :func:`plot_change`."""
        return plot_change(self._obj, **kwargs)

    def similarity(self, **kwargs: Any):
        """See :func:`plot_similarity`."""
        return plot_similarity(self._obj, **kwargs)

    def map(self, **kwargs: Any):
        """See :func:`plot_map`."""
        return plot_map(self._obj, **kwargs)
