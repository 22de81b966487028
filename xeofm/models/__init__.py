"""Model registry: named specs, user-wrapped modules and model resolution.

>>> import xeofm
>>> xeofm.models.list_models()  # doctest: +SKIP
['ssl4eo-s12-resnet18', 'ssl4eo-s12-resnet50', 'ssl4eo-s12-vit-small16', 'xeofm-demo-patchpca']
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any, Sequence

from ..bands import SENTINEL2, SENTINEL2_L2A, Band
from ..errors import SpecError, WeightsError
from ..spec import ModelSpec

__all__ = ["list_models", "get_spec", "register", "resolve_model", "wrap", "load_model", "encode_text", "segmenter"]

# name -> (spec, hint shown when a weight file is needed but not given)
_REGISTRY: dict[str, tuple[ModelSpec, str | None]] = {}


def register(spec: ModelSpec, *, weights_hint: str | None = None, overwrite: bool = False) -> ModelSpec:
    """Register a spec under ``spec.name`` so it can be used by name.

    Parameters
    ----------
    spec
        The model spec. It needs an importable ``builder``.
    weights_hint
        If given, the model needs pretrained weights that are not shipped; the
        text tells users which file to get (shown when none is passed).
    overwrite
        Replace an existing registration of the same name.
    """
    if spec.name in _REGISTRY and not overwrite:
        raise SpecError(f"a model named {spec.name!r} is already registered; pass overwrite=True")
    if spec._local_key is not None:
        raise SpecError("register specs with an importable builder, not wrapped module objects")
    _REGISTRY[spec.name] = (spec, weights_hint)
    return spec


def list_models() -> list[str]:
    """Names of the registered models."""
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registered spec for ``name`` (without user weights)."""
    try:
        return _REGISTRY[name][0]
    except KeyError:
        raise SpecError(f"unknown model {name!r}; registered models: {list_models()}") from None


def resolve_model(model: Any, *, weights: str | Path | None = None, pretrained: bool = True) -> ModelSpec:
    """Turn a name, spec or wrapped module into a :class:`ModelSpec` ready to build.

    Weights come from ``weights`` (a safetensors or torch file), else from
    ``spec.weights``, else, for a pretrained model whose file is not shipped,
    from the offline places :mod:`xeofm.models.weights` looks in
    (``$XEOFM_WEIGHTS_DIR``, the Hugging Face and torch hub caches). The file's
    SHA-256 is checked here when the spec gives one. ``pretrained=False`` drops
    any weights: the model is built with (seeded) random weights.

    Raises
    ------
    WeightsError
        If a pretrained model's file was not given and is in none of those
        places while ``pretrained=True``, or a file fails its checksum.
    """
    from . import weights as _weights

    if isinstance(model, str):
        spec = get_spec(model)
        hint = _REGISTRY[model][1]
    elif isinstance(model, ModelSpec):
        spec = model
        reg = _REGISTRY.get(spec.name)
        hint = reg[1] if reg is not None and spec._local_key is None else None
    else:
        try:
            import torch

            is_module = isinstance(model, torch.nn.Module)
        except ImportError:  # pragma: no cover
            is_module = False
        if is_module:
            raise SpecError(
                "a bare torch module does not say which bands, chip size and stride it expects; wrap it "
                "once: spec = xeofm.wrap(module, bands=[...], chip_size=224, stride=16, embedding_dim=..., "
                "output='patch'|'tokens'|'vector')"
            )
        raise SpecError(f"model must be a registered name, a ModelSpec or xeofm.wrap(...), got {type(model).__name__}")
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise WeightsError(f"weight file {str(p)!r} does not exist")
        _weights.verify_sha256(p, spec.weights_sha256, model=spec.name)
        return spec.replace(weights=str(p.resolve()))
    if not pretrained:
        return spec.replace(weights=None) if spec.weights else spec
    if spec.weights is None and spec._local_key is None and (hint is not None or _weights.needs_weights(spec)):
        found = _weights.find_cached(spec)
        if found is None:
            raise _weights.missing_weights_error(spec, hint)
        _weights.verify_sha256(found, spec.weights_sha256, model=spec.name)
        return spec.replace(weights=str(found))
    return spec


def wrap(
    module: Any,
    *,
    bands: Sequence[str | Band],
    chip_size: int,
    stride: int,
    embedding_dim: int,
    output: str = "patch",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    prefix_tokens: int = 0,
    overlap: int | None = None,
    name: str | None = None,
    **extra: Any,
) -> ModelSpec:
    """Describe your own ``torch.nn.Module`` so the engine can run it.

    The module stays in this process (it is never put into a dask graph).
    Threads of the local scheduler use it directly; for dask worker processes
    give a :class:`ModelSpec` with an importable ``builder`` instead.

    Parameters
    ----------
    module
        Takes ``(B, len(bands), chip_size, chip_size)`` float32 and returns
        ``(B, D, chip/stride, chip/stride)`` (``output="patch"``),
        ``(B, prefix + N, D)`` (``"tokens"``) or ``(B, D)`` (``"vector"``).
    bands, chip_size, stride, embedding_dim, output, mean, std, scale, offset, prefix_tokens, overlap
        See :class:`ModelSpec`.
    name
        Label for provenance attributes.

    Returns
    -------
    ModelSpec
    """
    key = f"local-{uuid.uuid4().hex}"
    from .. import runtime

    runtime.register_local_module(key, module)
    return ModelSpec(
        name=name or type(module).__name__,
        bands=tuple(bands),
        chip_size=int(chip_size),
        stride=int(stride),
        embedding_dim=int(embedding_dim),
        output=output,  # type: ignore[arg-type]
        mean=None if mean is None else tuple(mean),
        std=None if std is None else tuple(std),
        scale=scale,
        offset=offset,
        prefix_tokens=prefix_tokens,
        overlap=overlap,
        _local_key=key,
        **extra,
    )


def load_model(model: Any, *, weights: str | Path | None = None, pretrained: bool = True, device: str = "cpu"):
    """Build (or fetch from the per-process cache) the torch module for a model."""
    from .. import runtime

    spec = resolve_model(model, weights=weights, pretrained=pretrained)
    return runtime.get_model(spec, runtime.resolve_device(device))


# ---------------------------------------------------------------------------------------
# Built-in models
# ---------------------------------------------------------------------------------------
_SSL4EO_HINT = (
    "Get the SSL4EO-S12 {what} weights (CC-BY-4.0; torchgeo's {enum}, file {file}) and put the file anywhere local."
)

for _arch, _dim, _enum, _file in (
    ("resnet18", 512, "ResNet18_Weights.SENTINEL2_ALL_MOCO", "resnet18_sentinel2_all_moco-59bfdff9.pth"),
    ("resnet50", 2048, "ResNet50_Weights.SENTINEL2_ALL_MOCO", "resnet50_sentinel2_all_moco-df8b932e.pth"),
):
    register(
        ModelSpec(
            name=f"ssl4eo-s12-{_arch}",
            bands=SENTINEL2,
            chip_size=224,
            stride=32,
            embedding_dim=_dim,
            output="patch",
            scale=1e-4,
            builder="xeofm.models.builders:timm_feature_map",
            builder_kwargs={"arch": _arch, "in_chans": 13},
            overlap=64,
            gsd=10.0,
            dtype="uint16",
            licence="CC-BY-4.0",
            citation="Wang et al. 2023, SSL4EO-S12, IEEE GRSM",
            description=f"SSL4EO-S12 MoCo-v2 {_arch} on Sentinel-2 L1C, 13 bands, reflectance / 10000",
        ),
        weights_hint=_SSL4EO_HINT.format(what=_arch, enum=_enum, file=_file),
    )

register(
    ModelSpec(
        name="ssl4eo-s12-vit-small16",
        bands=SENTINEL2,
        chip_size=224,
        stride=16,
        embedding_dim=384,
        output="tokens",
        prefix_tokens=1,
        scale=1e-4,
        builder="xeofm.models.builders:timm_tokens",
        builder_kwargs={"arch": "vit_small_patch16_224", "in_chans": 13},
        overlap=64,
        gsd=10.0,
        dtype="uint16",
        licence="CC-BY-4.0",
        citation="Wang et al. 2023, SSL4EO-S12, IEEE GRSM",
        description="SSL4EO-S12 ViT-S/16 on Sentinel-2 L1C, 13 bands, reflectance / 10000",
    ),
    weights_hint=_SSL4EO_HINT.format(
        what="ViT-S/16", enum="ViTSmall16_Weights.SENTINEL2_ALL_MOCO", file="vit_small_patch16_224_sentinel2_all_moco-67c9032d.pth"
    ),
)

# L2A variants: the same L1C-trained weights fed with L2A surface reflectance (12 bands). B10
# (cirrus, absent from L2A) is fed at its SSL4EO-S12 L1C training mean (22 DN). Data of processing
# baseline >= 04.00 must be harmonised first (xeofm.harmonize_s2_l2a); the engine warns otherwise.
_B10_FILL = 22.0 * 1e-4
for _name in ("ssl4eo-s12-resnet18", "ssl4eo-s12-resnet50", "ssl4eo-s12-vit-small16"):
    _base, _hint = _REGISTRY[_name]
    register(
        _base.replace(
            name=f"{_name}-l2a",
            bands=SENTINEL2_L2A,
            builder="xeofm.models.builders:with_constant_band",
            builder_kwargs={"builder": _base.builder, "index": 10, "value": _B10_FILL, **dict(_base.builder_kwargs)},
            metadata={**dict(_base.metadata), "radiometry": "s2-l2a-harmonized", "l1c_model": _name},
            description=_base.description.replace("on Sentinel-2 L1C, 13 bands", "L1C weights on Sentinel-2 L2A, 12 bands (B10 fed at its mean)"),
        ),
        weights_hint=_hint,
    )

from .demo import specs as _demo_specs  # noqa: E402

for _spec in _demo_specs():  # the small demo models fitted on the shipped samples
    register(_spec)

from . import zoo  # noqa: E402,F401  (registers the model zoo)
from . import weights  # noqa: E402,F401
from .clip import encode_text  # noqa: E402
from .heads import segmenter  # noqa: E402
