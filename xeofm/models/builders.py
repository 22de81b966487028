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
