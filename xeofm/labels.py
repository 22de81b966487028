"""Label cubes: class maps with names, colours and a nodata label.

Conventions (kept by rioxarray, zarr and hvplot):

* a ``(..., y, x)`` DataArray named ``"labels"``, ``uint8`` for up to 255
  classes and ``uint16`` up to 65535, with the nodata label ``255`` /
  ``65535`` in ``attrs["_FillValue"]`` and ``attrs["nodata"]``;
* ``attrs["xeofm:classes"]``: class names, label value = index;
  ``attrs["xeofm:colors"]``: ``"#rrggbb"`` per class;
* CF ``flag_values`` / ``flag_meanings`` for tools that read CF.

Class probabilities are a ``(..., class, y, x)`` DataArray named
``"probabilities"`` with a ``class`` coordinate of names.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xarray as xr

from .errors import InputError

__all__ = ["default_colors", "label_dtype", "labels_from_scores", "as_label_cube", "MAX_CLASSES"]

MAX_CLASSES = 65535

_PALETTE = [
    "#1f77b4", "#2ca02c", "#d62728", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#98df8a", "#ff9896", "#ffbb78", "#c5b0d5", "#c49c94",
]
#: Colours used for common land-cover names.
NAMED_COLORS = {
    "water": "#419bdf", "trees": "#397d49", "forest": "#397d49", "grass": "#88b053", "vegetation": "#5fa044",
    "flooded_vegetation": "#7a87c6", "crops": "#e49635", "cropland": "#e49635", "shrub_and_scrub": "#dfc35a",
    "built": "#c4281b", "built-up": "#c4281b", "urban": "#c4281b", "bare": "#a59b8f", "bare_ground": "#a59b8f",
    "snow_and_ice": "#b39fe1", "clouds": "#e0e0e0", "unknown": "#000000", "shadow": "#404040",
}


def default_colors(classes: Sequence[str]) -> list[str]:
    """A colour per class: land-cover names get their usual colours, others a palette."""
    out = []
    for i, c in enumerate(classes):
        out.append(NAMED_COLORS.get(str(c).lower().replace(" ", "_"), _PALETTE[i % len(_PALETTE)]))
    return out


def label_dtype(n_classes: int) -> tuple[np.dtype, int]:
    """Smallest unsigned dtype for ``n_classes`` plus a nodata label, and that nodata value."""
    if n_classes < 1:
        raise InputError("a label cube needs at least one class")
    if n_classes <= 255:
        return np.dtype("uint8"), 255
    if n_classes <= MAX_CLASSES:
        return np.dtype("uint16"), 65535
    raise InputError(f"{n_classes} classes do not fit a uint16 label cube (at most {MAX_CLASSES})")


def label_attrs(classes: Sequence[str], colors: Sequence[str] | None, nodata: int, extra: dict | None = None) -> dict:
    colors = list(colors) if colors is not None else default_colors(classes)
    if len(colors) != len(classes):
        raise InputError(f"{len(colors)} colours given for {len(classes)} classes")
    attrs: dict[str, Any] = {
        "long_name": "class label",
        "xeofm:classes": [str(c) for c in classes],
        "xeofm:colors": colors,
        "flag_values": list(range(len(classes))),
        "flag_meanings": " ".join(str(c).replace(" ", "_") for c in classes),
        "_FillValue": nodata,
        "nodata": nodata,
    }
    attrs.update(extra or {})
    return attrs


def _argmax_block(scores: np.ndarray, axis: int, nodata: int, dtype: np.dtype, min_score: float | None) -> np.ndarray:
    xp = np
    if type(scores).__module__.split(".")[0] == "cupy":  # keep CuPy blocks on the GPU
        import cupy as xp  # type: ignore[no-redef]
    valid = xp.isfinite(scores).all(axis=axis)
    filled = xp.where(xp.isfinite(scores), scores, -xp.inf)
    lab = xp.argmax(filled, axis=axis)
    if min_score is not None:
        valid_unknown = filled.max(axis=axis) < min_score
        lab = xp.where(valid_unknown, scores.shape[axis], lab)
    return xp.where(valid, lab, nodata).astype(dtype)


def labels_from_scores(
    scores: xr.DataArray,
    classes: Sequence[str],
    *,
    dim: str = "class",
    colors: Sequence[str] | None = None,
    unknown_below: float | None = None,
    attrs: dict | None = None,
) -> xr.DataArray:
    """Lazy argmax of a ``(..., class, y, x)`` score cube into a label cube.

    Parameters
    ----------
    scores
        Logits, probabilities or similarities; NaN marks invalid cells.
    classes
        Class names, in the order of ``dim``.
    unknown_below
        If given, cells whose best score is below it get an extra
        ``"unknown"`` class (label ``len(classes)``).
    """
    classes = [str(c) for c in classes]
    names = classes + (["unknown"] if unknown_below is not None else [])
    dtype, nodata = label_dtype(len(names))
    axis = scores.get_axis_num(dim)
    data = scores.data
    if hasattr(data, "map_blocks"):
        data = data.rechunk({axis: -1})
        meta = data._meta
        meta = meta.reshape((0,) * (data.ndim - 1)).astype(dtype) if hasattr(meta, "reshape") else None
        lab = data.map_blocks(
            _argmax_block, axis, nodata, dtype, unknown_below, drop_axis=axis, dtype=dtype, meta=meta
        )
    else:
        lab = _argmax_block(np.asarray(data), axis, nodata, dtype, unknown_below)
    dims = tuple(d for d in scores.dims if d != dim)
    coords = {k: v for k, v in scores.coords.items() if dim not in v.dims}
    out = xr.DataArray(lab, dims=dims, coords=coords, name="labels")
    keep = {k: v for k, v in scores.attrs.items() if k.startswith("xeofm:") and k not in ("xeofm:classes", "xeofm:colors")}
    out.attrs = label_attrs(names, None if colors is None else list(colors) + (["#000000"] if unknown_below is not None else []), nodata, {**keep, **(attrs or {})})
    if "grid_mapping" in scores.encoding:
        out.encoding["grid_mapping"] = scores.encoding["grid_mapping"]
    return out


def as_label_cube(data: xr.DataArray, classes: Sequence[str], colors: Sequence[str] | None = None) -> xr.DataArray:
    """Mark an integer DataArray as a label cube (names, colours, nodata attrs)."""
    dtype, nodata = label_dtype(len(classes))
    out = data.astype(dtype).rename("labels")
    out.attrs = label_attrs(classes, colors, nodata)
    return out
