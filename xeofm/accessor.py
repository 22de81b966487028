"""The ``.eofm`` accessor on DataArray and Dataset: a thin layer over the functional API."""

from __future__ import annotations

from typing import Any

import xarray as xr


class _EofmBase:
    def __init__(self, obj: xr.DataArray | xr.Dataset) -> None:
        self._obj = obj

    def embed(self, model: Any, **kwargs: Any) -> xr.DataArray:
        """Lazy embeddings of this cube; see :func:`xeofm.embed`."""
        from .engine import embed

        return embed(self._obj, model, **kwargs)

    def plan(self, model: Any, **kwargs: Any):
        """What :meth:`embed` would do, without running anything; see :func:`xeofm.plan`."""
        from .plan import plan

        return plan(self._obj, model, **kwargs)

    def segment(self, model: Any, **kwargs: Any) -> xr.DataArray:
        """Lazy label cube (or probabilities) from a segmentation model; see :func:`xeofm.segment`."""
        from .segment import segment

        return segment(self._obj, model, **kwargs)

    def classify(self, classes: Any, *, model: Any, **kwargs: Any) -> xr.DataArray:
        """Zero-shot class map from text prompts; see :func:`xeofm.classify`."""
        from .segment import classify

        return classify(self._obj, classes, model=model, **kwargs)


@xr.register_dataarray_accessor("eofm")
class EofmDataArrayAccessor(_EofmBase):
    """``DataArray.eofm``: foundation-model operations on cubes, embeddings and label cubes."""

    def predict(self, probe: Any) -> xr.DataArray:
        """Apply a probe to these embeddings, lazily; see :func:`xeofm.predict`."""
        from .probe import predict

        return predict(self._obj, probe)

    def to_zarr(self, store: Any, **kwargs: Any):
        """Write this lazy cube to zarr region by region, resumably; see :func:`xeofm.io.to_zarr`."""
        from .io import to_zarr

        return to_zarr(self._obj, store, **kwargs)

    # -- time series and change (see xeofm.ops) -------------------------------------
    def change(self, dim: str = "time", **kwargs: Any) -> xr.DataArray:
        """Per-pixel embedding change along ``dim``; see :func:`xeofm.ops.change`."""
        from .ops import change

        return change(self._obj, dim, **kwargs)

    def anomaly(self, dim: str = "time", **kwargs: Any) -> xr.DataArray:
        """Distance of each date from its temporal context; see :func:`xeofm.ops.anomaly`."""
        from .ops import anomaly

        return anomaly(self._obj, dim, **kwargs)

    def distance(self, other: xr.DataArray, **kwargs: Any) -> xr.DataArray:
        """Per-pixel distance to another embedding cube; see :func:`xeofm.ops.distance`."""
        from .ops import distance

        return distance(self._obj, other, **kwargs)

    def threshold(self, method: Any = "otsu", **kwargs: Any) -> xr.DataArray:
        """Boolean mask from a change/score map (Otsu, MAD or a value); see :func:`xeofm.ops.threshold`."""
        from .ops import threshold

        return threshold(self._obj, method, **kwargs)

    # -- query and exploration -------------------------------------------------------
    def similarity(self, **kwargs: Any) -> xr.DataArray:
        """Similarity to a point, polygon, vector or text; see :func:`xeofm.ops.similarity`."""
        from .ops import similarity

        return similarity(self._obj, **kwargs)

    def search(self, query: Any, k: int = 20, **kwargs: Any):
        """Top-``k`` most similar places as a DataFrame; see :func:`xeofm.ops.search`."""
        from .ops import search

        return search(self._obj, query, k, **kwargs)

    def pca(self, n: int = 3, **kwargs: Any) -> xr.DataArray:
        """Lazy projection onto ``n`` principal components; see :func:`xeofm.ops.pca`."""
        from .ops import pca

        return pca(self._obj, n, **kwargs)

    # -- label cubes -----------------------------------------------------------------
    def area(self):
        """Area per class (and per date) in m² and km²; see :func:`xeofm.ops.area`."""
        from .ops import area

        return area(self._obj)

    def transitions(self, start: Any = None, end: Any = None, **kwargs: Any):
        """From-to class transition areas between two dates; see :func:`xeofm.ops.transitions`."""
        from .ops import transitions

        return transitions(self._obj, start, end, **kwargs)

    def cell_area(self) -> xr.DataArray:
        """Area of each pixel in m², lazily; see :func:`xeofm.ops.cell_area`."""
        from .ops import cell_area

        return cell_area(self._obj)

    def coarsen_mode(self, factor: Any) -> xr.DataArray:
        """Majority-vote coarsening of a label cube; see :func:`xeofm.ops.coarsen_mode`."""
        from .ops import coarsen_mode

        return coarsen_mode(self._obj, factor)

    @property
    def plot(self):
        """Interactive plots (hvplot/holoviews): ``.eofm.plot()`` or ``.eofm.plot.rgb(...)``."""
        from .viz import EofmPlot

        return EofmPlot(self._obj)


@xr.register_dataset_accessor("eofm")
class EofmDatasetAccessor(_EofmBase):
    """``Dataset.eofm``: foundation-model operations on a Dataset of band variables."""
