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


@xr.register_dataset_accessor("eofm")
class EofmDatasetAccessor(_EofmBase):
    """``Dataset.eofm``: foundation-model operations on a Dataset of band variables."""
