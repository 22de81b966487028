"""Importable builders for the registered models (used inside worker processes)."""

from __future__ import annotations

from typing import Any


def _timm(arch: str, in_chans: int, **kw: Any):
    try:
        import timm
    except ImportError as exc:  # pragma: no cover
        raise ImportError("this model needs timm: pip install 'xeofm[models]'") from exc
    return timm.create_model(arch, pretrained=False, in_chans=in_chans, num_classes=0, **kw)


def timm_feature_map(arch: str, in_chans: int, **kw: Any):
    """A timm CNN whose ``forward`` returns the last feature map ``(B, D, H/32, W/32)``.

    State-dict keys are timm's own, so the authors' timm-format checkpoints load as they are.
    """
    model = _timm(arch, in_chans, global_pool="", **kw)
    model.forward = model.forward_features  # instance attribute: keys and modules unchanged
    return model


def timm_tokens(arch: str, in_chans: int, **kw: Any):
    """A timm ViT whose ``forward`` returns normalised tokens ``(B, prefix + N, D)``."""
    model = _timm(arch, in_chans, **kw)
    model.forward = model.forward_features
    return model


def with_constant_band(builder: str, index: int, value: float, **kw: Any):
    """Build ``builder(**kw)`` and insert a constant input channel at ``index`` before it runs.

    For weights trained with a band the user's product lacks (Sentinel-2 L2A has no
    B10 cirrus band, the SSL4EO-S12 weights were trained on 13-band L1C): the band
    is fed at ``value`` (in normalised units, e.g. its training mean). The module and
    its state-dict keys are unchanged, so the authors' checkpoints load as they are.
    """
    import importlib

    mod, _, fn = builder.partition(":")
    model = getattr(importlib.import_module(mod), fn)(**kw)

    def insert(_module, args, kwargs):
        x = args[0]
        fill = x.new_full((x.shape[0], 1, *x.shape[2:]), float(value))
        return (torch_cat((x[:, :index], fill, x[:, index:]), 1), *args[1:]), kwargs

    model.register_forward_pre_hook(insert, with_kwargs=True)
    return model


def torch_cat(tensors, dim: int):
    import torch

    return torch.cat(tensors, dim=dim)
