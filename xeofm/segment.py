"""Label cubes from models: segmentation heads and zero-shot text classification.

Both run through the embedding engine, so they are lazy, chunk-invariant and
seam-free: a segmentation model's logits are blended across chip overlaps
*before* the argmax, and zero-shot scores are computed from blended
embeddings.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import xarray as xr

from .engine import embed
from .errors import SpecError
from .labels import labels_from_scores

__all__ = ["segment", "classify", "softmax"]


def _softmax_block(x: np.ndarray, axis: int, temperature: float) -> np.ndarray:
    xp = np
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy as xp  # type: ignore[no-redef]
    z = x * temperature
    z = z - xp.nanmax(z, axis=axis, keepdims=True) if z.size else z
    e = xp.exp(z)
    return (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)


def softmax(scores: xr.DataArray, dim: str = "class", temperature: float = 1.0) -> xr.DataArray:
    """Lazy softmax along ``dim`` (NaN cells stay NaN)."""
    axis = scores.get_axis_num(dim)
    data = scores.data
    if hasattr(data, "map_blocks"):
        data = data.rechunk({axis: -1})
        out = data.map_blocks(_softmax_block, axis, temperature, dtype=np.float32)
    else:
        out = _softmax_block(np.asarray(data), axis, temperature)
    return scores.copy(data=out)


def _meta(spec) -> dict[str, Any]:
    return dict(spec.metadata)


def segment(
    obj: xr.DataArray | xr.Dataset,
    model: Any,
    *,
    probabilities: bool = False,
    weights: str | None = None,
    pretrained: bool = True,
    **kwargs: Any,
) -> xr.DataArray:
    """Lazy label cube (or class probabilities) from a segmentation model.

    Parameters
    ----------
    obj
        The input cube, as for :func:`xeofm.embed`.
    model
        A segmentation model: a spec whose ``metadata`` has ``"classes"`` (and
        optionally ``"colors"``) and whose module returns per-class logits
        ``(B, K, H/stride, W/stride)``.
    probabilities
        Return ``(..., class, y, x)`` softmax probabilities instead of labels.
    weights, pretrained, **kwargs
        Passed to :func:`xeofm.embed` (``overlap``, ``device``, ``batch_size``...).

    Returns
    -------
    xarray.DataArray
        ``labels``: ``(..., y, x)`` uint8/uint16 with class names and colours
        in attrs, nodata label (255/65535) where the input was invalid; or
        ``probabilities`` with a ``class`` coordinate.
    """
    from .models import resolve_model

    spec = resolve_model(model, weights=weights, pretrained=pretrained)
    meta = _meta(spec)
    classes = meta.get("classes")
    if not classes:
        raise SpecError(
            f"model {spec.name!r} has no classes: it is an encoder. Use embed(), fit a probe "
            "(xeofm.fit_probe) or classify() with a text model; segmentation specs list "
            "metadata={'classes': [...]}"
        )
    if len(classes) != spec.embedding_dim:
        raise SpecError(f"model {spec.name!r} lists {len(classes)} classes but outputs {spec.embedding_dim} channels")
    kwargs.setdefault("output", "patch" if spec.stride == 1 else "pixel")
    logits = embed(obj, spec, pretrained=pretrained, **kwargs)
    logits = logits.rename({"embedding": "class"}).assign_coords({"class": list(classes)})
    logits.attrs["xeofm:task"] = "segmentation"
    if probabilities:
        return softmax(logits).rename("probabilities")
    return labels_from_scores(logits, classes, colors=meta.get("colors"))


def classify(
    obj: xr.DataArray | xr.Dataset,
    classes: Sequence[str],
    *,
    model: Any,
    templates: Sequence[str] | None = None,
    unknown_below: float | None = None,
    probabilities: bool = False,
    temperature: float = 100.0,
    output: str | None = None,
    weights: str | None = None,
    pretrained: bool = True,
    **kwargs: Any,
) -> xr.DataArray:
    """Zero-shot, open-vocabulary class map from text prompts with a CLIP-type model.

    Each class name is turned into prompts (``templates``, e.g. ``"a satellite
    image of {}."``), encoded by the model's text tower and averaged. Cells get
    the class whose text embedding is most cosine-similar to their image
    embedding; with ``unknown_below`` cells whose best similarity is below it
    get an extra ``"unknown"`` class.

    Parameters
    ----------
    classes
        Class names (any taxonomy, no retraining).
    model
        A model with a text tower (see :func:`xeofm.models.encode_text`).
    probabilities
        Return per-class confidence (softmax of ``temperature`` x cosine, the
        CLIP logit scale) instead of labels.
    output
        ``"chip"`` (one prediction per chip; the default for pooled image
        towers) or ``"patch"`` (per patch token, for token models).
    """
    from . import models

    if not classes:
        raise SpecError("classify() needs at least one class name")
    spec = models.resolve_model(model, weights=weights, pretrained=pretrained)
    encode_text = getattr(models, "encode_text", None)
    if encode_text is None:
        raise SpecError("no text encoders are available in this installation (pip install 'xeofm[clip]')")
    txt = np.asarray(encode_text(spec, list(classes), templates=templates, pretrained=pretrained), dtype=np.float32)
    if txt.shape != (len(classes), spec.embedding_dim):
        raise SpecError(
            f"text embeddings of model {spec.name!r} have shape {txt.shape}, expected "
            f"({len(classes)}, {spec.embedding_dim}) to match its image embeddings"
        )
    txt = txt / np.linalg.norm(txt, axis=1, keepdims=True)
    if output is None:
        output = "chip" if spec.output == "vector" else "patch"
    emb = embed(obj, spec, output=output, pretrained=pretrained, **kwargs)
    sims = cosine_to(emb, txt, dim="embedding").rename({"embedding": "class"}).assign_coords({"class": list(classes)})
    sims.attrs = {**emb.attrs, "xeofm:task": "zero-shot", "xeofm:prompts": list(classes)}
    if probabilities:
        return softmax(sims, temperature=temperature).rename("probabilities")
    return labels_from_scores(sims, classes, unknown_below=unknown_below)


def _cosine_block(x: np.ndarray, axis: int, vecs: np.ndarray) -> np.ndarray:
    xp = np
    if type(x).__module__.split(".")[0] == "cupy":
        import cupy as xp  # type: ignore[no-redef]
        vecs = xp.asarray(vecs)
    xm = xp.moveaxis(x, axis, -1)
    n = xp.linalg.norm(xm, axis=-1, keepdims=True)
    s = (xm / xp.where(n > 0, n, 1)) @ vecs.T
    return xp.moveaxis(s, -1, axis).astype(np.float32)


def cosine_to(emb: xr.DataArray, vecs: np.ndarray, dim: str = "embedding") -> xr.DataArray:
    """Lazy cosine similarity of every cell's embedding to each row of ``vecs``.

    Returns a cube with ``dim`` replaced by one entry per row of ``vecs``.
    """
    axis = emb.get_axis_num(dim)
    vecs = np.asarray(vecs, dtype=np.float32)
    data = emb.data
    if hasattr(data, "map_blocks"):
        data = data.rechunk({axis: -1})
        chunks = tuple((vecs.shape[0],) if i == axis else c for i, c in enumerate(data.chunks))
        out = data.map_blocks(_cosine_block, axis, vecs, chunks=chunks, dtype=np.float32)
    else:
        out = _cosine_block(np.asarray(data), axis, vecs)
    coords = {k: v for k, v in emb.coords.items() if dim not in v.dims}
    res = xr.DataArray(out, dims=emb.dims, coords=coords, attrs=dict(emb.attrs), name="similarity")
    if "grid_mapping" in emb.encoding:
        res.encoding["grid_mapping"] = emb.encoding["grid_mapping"]
    return res
