"""Segmentation heads on zoo backbones: UPerNet over a timm CNN's feature pyramid.

:func:`segmenter` turns an encoder of the zoo (e.g. ``"ssl4eo-s12-resnet50"``) into a
segmentation spec: the backbone's bands, normalisation and weights layout, plus a
UPerNet decoder (pyramid pooling on the deepest features, a top-down feature
pyramid, fusion at stride 4) that returns per-class logits ``(B, K, H/4, W/4)``.
:func:`xeofm.segment` then blends those logits across chip overlaps before the
argmax, so class boundaries never follow chip edges.

Weights
-------
* ``weights=`` a checkpoint of the whole segmenter (keys ``backbone.*`` and
  ``head.*``, e.g. after fine-tuning; safetensors or torch).
* ``backbone_weights=`` the backbone's own pretrained file (the same file as for
  ``embed``): the backbone starts from it and the head from seeded random
  weights — the starting point for fine-tuning, not a usable classifier.

>>> from xeofm.models.heads import segmenter
>>> spec = segmenter("ssl4eo-s12-resnet18", ["water", "forest", "crop"])  # doctest: +SKIP
>>> labels = cube.eofm.segment(spec, weights="my-finetuned.safetensors")   # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Sequence

from ..errors import SpecError
from ..spec import ModelSpec

__all__ = ["segmenter", "build_timm_upernet", "UPerNetHead"]

_POOL_SCALES = (1, 2, 3, 6)


def _upernet_head_class():
    import torch
    import torch.nn.functional as F
    from torch import nn

    def cbr(cin: int, cout: int, k: int) -> nn.Sequential:
        return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())

    class UPerNetHead(nn.Module):
        """UPerNet decoder (Xiao et al. 2018): PPM on the last level, FPN, fusion, 1x1 classifier.

        Takes a list of feature maps at strides 4, 8, 16, 32 (finest first) and
        returns logits at the finest map's resolution.
        """

        def __init__(self, in_channels: Sequence[int], num_classes: int, channels: int = 256) -> None:
            super().__init__()
            self.ppm = nn.ModuleList(
                [nn.Sequential(nn.AdaptiveAvgPool2d(s), cbr(in_channels[-1], channels, 1)) for s in _POOL_SCALES]
            )
            self.bottleneck = cbr(in_channels[-1] + len(_POOL_SCALES) * channels, channels, 3)
            self.lateral = nn.ModuleList([cbr(c, channels, 1) for c in in_channels[:-1]])
            self.fpn = nn.ModuleList([cbr(channels, channels, 3) for _ in in_channels[:-1]])
            self.fuse = cbr(len(in_channels) * channels, channels, 3)
            self.classifier = nn.Conv2d(channels, num_classes, 1)

        def forward(self, feats: Sequence[Any]) -> Any:
            top = feats[-1]
            size = top.shape[-2:]
            pooled = [F.interpolate(p(top), size=size, mode="bilinear", align_corners=False) for p in self.ppm]
            lat = [conv(f) for conv, f in zip(self.lateral, feats[:-1])]
            lat.append(self.bottleneck(torch.cat([top, *pooled], dim=1)))
            for i in range(len(lat) - 1, 0, -1):  # top-down pathway
                lat[i - 1] = lat[i - 1] + F.interpolate(lat[i], size=lat[i - 1].shape[-2:], mode="bilinear", align_corners=False)
            outs = [conv(x) for conv, x in zip(self.fpn, lat[:-1])] + [lat[-1]]
            size0 = outs[0].shape[-2:]
            outs = [outs[0]] + [F.interpolate(o, size=size0, mode="bilinear", align_corners=False) for o in outs[1:]]
            return self.classifier(self.fuse(torch.cat(outs, dim=1)))

    return UPerNetHead


def __getattr__(name: str) -> Any:  # UPerNetHead without importing torch at module import
    if name == "UPerNetHead":
        return _upernet_head_class()
    raise AttributeError(name)


def build_timm_upernet(
    arch: str, in_chans: int, num_classes: int, channels: int = 256, backbone_weights: str | None = None
):
    """A timm CNN backbone (features at strides 4-32) with a UPerNet head; forward returns logits at stride 4.

    The backbone's parameter names are timm's own (``backbone.conv1.weight``...),
    so a timm-format backbone checkpoint loads into it (``backbone_weights``).
    """
    import timm
    import torch
    from torch import nn

    class Segmenter(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = timm.create_model(
                arch, pretrained=False, in_chans=in_chans, features_only=True, out_indices=(1, 2, 3, 4)
            )
            chans = self.backbone.feature_info.channels()
            self.head = _upernet_head_class()(chans, num_classes, channels)

        def forward(self, x: Any) -> Any:
            return self.head(self.backbone(x))

    torch.manual_seed(0)
    model = Segmenter()
    if backbone_weights:
        from ..runtime import load_state_dict

        sd = load_state_dict(backbone_weights)
        own = model.backbone.state_dict()
        sd = {k: v for k, v in sd.items() if k in own}  # drop the classifier (fc/head) and the unused stem parts
        missing = sorted(set(own) - set(sd))
        if missing:
            raise SpecError(
                f"backbone weights {backbone_weights!r} lack {len(missing)} of the backbone's tensors "
                f"(e.g. {missing[:3]}); is it a timm-format {arch} checkpoint with {in_chans} input bands?"
            )
        model.backbone.load_state_dict(sd)
    return model


def segmenter(
    backbone: str | ModelSpec,
    classes: Sequence[str],
    *,
    colors: Sequence[str] | None = None,
    channels: int = 256,
    backbone_weights: str | None = None,
    name: str | None = None,
) -> ModelSpec:
    """A segmentation spec: a zoo CNN encoder plus a UPerNet decoder.

    Parameters
    ----------
    backbone
        A registered timm-CNN encoder (``"ssl4eo-s12-resnet18"``, ``-resnet50`` and
        their ``-l2a`` variants) or its spec; its bands and normalisation are kept.
    classes
        Class names, in the order of the head's output channels.
    colors
        One colour per class (hex), for plots.
    channels
        Width of the decoder.
    backbone_weights
        The backbone's pretrained file: the backbone starts from it (the head is
        random). For a fine-tuned model pass the whole checkpoint as ``weights=``
        to :func:`xeofm.segment` instead.
    name
        Name of the new spec (default ``"<backbone>-upernet-<K>"``).

    Returns
    -------
    ModelSpec
        Logits at stride 4 over the backbone's chip; use with :func:`xeofm.segment`.
    """
    from . import get_spec

    base = get_spec(backbone) if isinstance(backbone, str) else backbone
    kw = dict(base.builder_kwargs)
    if base.builder == "xeofm.models.builders:with_constant_band":
        raise SpecError(
            f"{base.name!r} inserts a constant band inside its module; build the segmenter on "
            f"{dict(base.metadata).get('l1c_model', 'the L1C model')!r} and pass a 13-band cube"
        )
    if base.builder != "xeofm.models.builders:timm_feature_map":
        raise SpecError(
            f"segmenter() builds UPerNet on timm CNN encoders (e.g. 'ssl4eo-s12-resnet50'); {base.name!r} "
            f"is built by {base.builder!r}. Wrap your own segmentation module with xeofm.wrap(..., "
            "metadata={'classes': [...]}) instead."
        )
    classes = [str(c) for c in classes]
    if len(classes) < 2:
        raise SpecError("a segmenter needs at least two classes")
    if len(set(classes)) != len(classes):
        raise SpecError(f"class names must be unique, got {classes}")
    if colors is not None and len(colors) != len(classes):
        raise SpecError(f"{len(colors)} colours for {len(classes)} classes")
    meta: dict[str, Any] = {
        "classes": classes,
        "head": "upernet",
        "backbone": base.name,
        # the head is trained by the user (e.g. with TerraTorch or plain torch): never run it untrained
        "weights_hint": (
            "This segmenter's decoder is untrained: pass the fine-tuned checkpoint of the whole model "
            "(keys backbone.* and head.*) as weights=..."
        ),
    }
    if colors is not None:
        meta["colors"] = [str(c) for c in colors]
    builder_kwargs: dict[str, Any] = {
        "arch": kw["arch"], "in_chans": kw.get("in_chans", len(base.bands)), "num_classes": len(classes),
        "channels": int(channels),
    }
    if backbone_weights is not None:
        builder_kwargs["backbone_weights"] = str(backbone_weights)
    return base.replace(
        name=name or f"{base.name}-upernet-{len(classes)}",
        builder="xeofm.models.heads:build_timm_upernet",
        builder_kwargs=builder_kwargs,
        stride=4,
        embedding_dim=len(classes),
        output="patch",
        prefix_tokens=0,
        weights=None,
        weights_file=None,
        weights_sha256=None,
        metadata=meta,
        description=f"UPerNet ({len(classes)} classes) on {base.name}",
    )
