"""xeofm: Earth-observation foundation models as lazy xarray operations.

``import xeofm`` registers the ``.eofm`` accessor on DataArray and Dataset.
Torch, timm and other heavy libraries are imported only when first needed.
"""

from __future__ import annotations

from . import accessor as _accessor  # noqa: F401  (registers .eofm)
from . import data, models, ops, products, viz
from ._version import __version__
from .bands import Band, harmonize_s2_l2a
from .cost import estimate
from .engine import embed
from .errors import (
    DeviceError,
    EmptySearchError,
    IncompleteStoreError,
    JobError,
    StacError,
    StoreConflictError,
    StoreMismatchError,
    StoreWriteError,
    InputError,
    MissingBandsError,
    MissingDimensionError,
    SpecError,
    WeightsError,
    XeofmError,
)
from .io import open_embeddings, to_zarr
from .models import encode_text, list_models, load_model, register, wrap
from .ops import anomaly, area, change, distance, pca, search, similarity, threshold, transitions
from .plan import Plan, plan
from .probe import Probe, fit_probe, predict
from .segment import classify, segment
from .spec import ModelSpec
from .stac import load_stac

__all__ = [
    "__version__",
    "Band",
    "harmonize_s2_l2a",
    "ModelSpec",
    "Plan",
    "data",
    "ops",
    "products",
    "viz",
    "encode_text",
    "change",
    "anomaly",
    "distance",
    "threshold",
    "similarity",
    "search",
    "pca",
    "area",
    "transitions",
    "embed",
    "to_zarr",
    "open_embeddings",
    "load_stac",
    "estimate",
    "list_models",
    "load_model",
    "models",
    "plan",
    "Probe",
    "fit_probe",
    "predict",
    "segment",
    "classify",
    "register",
    "wrap",
    "XeofmError",
    "InputError",
    "MissingBandsError",
    "MissingDimensionError",
    "SpecError",
    "DeviceError",
    "WeightsError",
    "StacError",
    "EmptySearchError",
    "StoreConflictError",
    "StoreMismatchError",
    "StoreWriteError",
    "IncompleteStoreError",
    "JobError",
]
