"""SatlasPretrain Swin-v2 backbones and the DINOv3 SAT-493M ViT-L/16.

SatlasPretrain (Allen Institute for AI, ODC-BY)
    torchvision ``swin_v2_b`` / ``swin_v2_t`` whose first convolution takes the
    sensor's band count (``Conv2d(C, width, 4, stride=4)``, as in
    ``satlaspretrain_models``). :func:`build_satlas_swin` keeps torchvision's
    module names (``features.0.0.weight``...), so a torchvision-layout state dict
    loads as it is; :func:`remap_satlas` turns the authors' checkpoints
    (``backbone.backbone.features...`` for single-image models,
    ``backbone.backbone.backbone.features...`` for multi-image ones, plus
    ``intermediates.0.fpn...`` and heads) into that layout. The module returns
    one stage of the feature pyramid as ``(B, D, H/s, W/s)``: by default the
    last stage (stride 32), or, with ``fpn=True``, a level of the authors' FPN
    (128 channels).

DINOv3 SAT-493M (Meta, DINOv3 License)
    timm's ``vit_large_patch16_dinov3_qkvb`` (RoPE, one class token, four
    register tokens, LayerScale). The registered spec returns the final
    normalised tokens ``(B, 5 + N, 1024)``. :func:`remap_dinov3` accepts Meta's
    release (``dinov3_vitl16_pretrain_sat493m-*.pth``) as well as timm's
    safetensors (with or without query/value biases).

Nothing here imports torch until a model is built.
"""

from __future__ import annotations

from typing import Any

from ..bands import RGB, SENTINEL2, Band
from ..errors import WeightsError
from ..spec import ModelSpec
from . import register

__all__ = [
    "build_satlas_swin",
    "remap_satlas",
    "remap_satlas_fpn",
    "remap_dinov3",
    "satlas_variant",
    "TCI",
    "SATLAS_S2_MS",
    "LANDSAT_L1",
    "DINOV3_SAT_MEAN",
    "DINOV3_SAT_STD",
]

# ---------------------------------------------------------------------------------------
# Band tables
# ---------------------------------------------------------------------------------------
#: Sentinel-2 true-colour image (TCI): 8-bit red, green, blue made by ESA from B04, B03, B02.
TCI: tuple[Band, ...] = (
    Band("TCI_R", "red", 0.665, ("tci_red",)),
    Band("TCI_G", "green", 0.560, ("tci_green",)),
    Band("TCI_B", "blue", 0.490, ("tci_blue",)),
)

_S2 = {b.id: b for b in SENTINEL2}
#: Satlas' nine-band Sentinel-2 input: TCI (8 bit) then L1C B05, B06, B07, B08, B11, B12 (16 bit).
SATLAS_S2_MS: tuple[Band, ...] = TCI + tuple(_S2[i] for i in ("B05", "B06", "B07", "B08", "B11", "B12"))

#: Landsat 8/9 OLI + TIRS, bands 1-11 (Level-1 digital numbers), as Satlas' Landsat models take them.
LANDSAT_L1: tuple[Band, ...] = (
    Band("B1", "coastal", 0.443),
    Band("B2", "blue", 0.482),
    Band("B3", "green", 0.561),
    Band("B4", "red", 0.655),
    Band("B5", "nir08", 0.865),
    Band("B6", "swir16", 1.609),
    Band("B7", "swir22", 2.201),
    Band("B8", "pan", 0.590),
    Band("B9", "cirrus", 1.373),
    Band("B10", "lwir11", 10.895),
    Band("B11", "lwir12", 12.005),
)

_SATLAS_WIDTH = {"swin_v2_b": 128, "swin_v2_t": 96}
_LEVEL_STRIDE = {1: 4, 2: 8, 3: 16, 4: 32}
_FPN_CHANNELS = 128


# ---------------------------------------------------------------------------------------
# SatlasPretrain Swin-v2
# ---------------------------------------------------------------------------------------
def build_satlas_swin(
    arch: str = "swin_v2_b",
    in_chans: int = 3,
    level: int = 4,
    fpn: bool = False,
    clip: bool = False,
):
    """A Satlas Swin-v2 backbone returning one pyramid level ``(B, D, H/s, W/s)``.

    Parameters
    ----------
    arch
        ``"swin_v2_b"`` (stage widths 128/256/512/1024) or ``"swin_v2_t"`` (96/.../768).
    in_chans
        Input bands (3 for RGB/TCI, 9 for Sentinel-2 multispectral, 11 for Landsat).
    level
        Pyramid level returned: 1, 2, 3 or 4 (strides 4, 8, 16, 32).
    fpn
        Pass the four stages through Satlas' feature pyramid network
        (torchvision ``FeaturePyramidNetwork``, 128 channels) before picking the level.
    clip
        Clamp the normalised input to [0, 1] first (Satlas' multispectral and
        Landsat recipes clip after scaling).

    The module also takes ``(B, C, T, H, W)``: each of the ``T`` images goes
    through the backbone and the stage features are max-pooled over ``T``
    (Satlas' multi-image aggregation), before the FPN.
    """
    import torch
    import torchvision
    from torch import nn

    if arch not in _SATLAS_WIDTH:
        raise ValueError(f"arch must be one of {sorted(_SATLAS_WIDTH)}, got {arch!r}")
    if level not in _LEVEL_STRIDE:
        raise ValueError(f"level must be 1, 2, 3 or 4, got {level!r}")
    swin = getattr(torchvision.models, arch)(weights=None)
    width = _SATLAS_WIDTH[arch]
    swin.features[0][0] = nn.Conv2d(int(in_chans), width, kernel_size=(4, 4), stride=(4, 4))

    class SatlasSwin(nn.Module):
        """torchvision Swin-v2 ``features`` (and optionally Satlas' FPN) returning one level."""

        def __init__(self):
            super().__init__()
            self.features = swin.features
            self.level = int(level)
            self.clip = bool(clip)
            self.fpn = (
                torchvision.ops.FeaturePyramidNetwork([width, 2 * width, 4 * width, 8 * width], _FPN_CHANNELS)
                if fpn
                else None
            )

        def stages(self, x):
            """The four stage outputs (strides 4, 8, 16, 32) as NCHW maps."""
            need = 4 if self.fpn is not None else self.level
            out = []
            for i, layer in enumerate(self.features):
                x = layer(x)
                if i % 2 == 1:  # after stage blocks 1, 3, 5, 7 (0 is the patch embedding, evens merge)
                    out.append(x.permute(0, 3, 1, 2))
                    if len(out) == need:
                        break
            return out

        def forward(self, x):
            if self.clip:
                x = x.clamp(0.0, 1.0)
            frames = x.unbind(2) if x.ndim == 5 else (x,)
            feats = None
            for f in frames:
                cur = self.stages(f)
                feats = cur if feats is None else [torch.maximum(a, b) for a, b in zip(feats, cur)]
            if self.fpn is not None:
                from collections import OrderedDict

                feats = list(self.fpn(OrderedDict((f"feat{i}", t) for i, t in enumerate(feats))).values())
            return feats[self.level - 1].contiguous()

    return SatlasSwin()


def _satlas_backbone(sd: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """Backbone keys of a Satlas (or torchvision-layout) state dict, with the prefix that held them."""
    anchor = "features.0.0.weight"
    hits = [k for k in sd if k == anchor or k.endswith("." + anchor)]
    if not hits:
        raise WeightsError(
            "no Swin-v2 backbone in this checkpoint (no key ending in 'features.0.0.weight'); "
            "expected a SatlasPretrain checkpoint (keys 'backbone.backbone.features...') or a "
            "torchvision-layout Swin-v2 state dict"
        )
    prefix = min(hits, key=len)[: -len(anchor)]
    out = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix + "features.")}
    return out, prefix


def remap_satlas(sd: dict[str, Any]) -> dict[str, Any]:
    """SatlasPretrain checkpoint -> :func:`build_satlas_swin` keys (backbone only).

    ``backbone.backbone.features.*`` (single image), ``backbone.backbone.backbone.features.*``
    (multi image) and plain torchvision ``features.*`` (torchgeo's copies) all become
    ``features.*``. The FPN (``intermediates.0.fpn.*``), heads and torchvision's
    ``norm``/``head`` are dropped.
    """
    out, _ = _satlas_backbone(sd)
    return out


def remap_satlas_fpn(sd: dict[str, Any]) -> dict[str, Any]:
    """Like :func:`remap_satlas`, keeping Satlas' FPN: ``intermediates.0.fpn.*`` -> ``fpn.*``."""
    out, _ = _satlas_backbone(sd)
    fpn_prefix = "intermediates.0.fpn."
    fpn = {k[len("intermediates.0."):]: v for k, v in sd.items() if k.startswith(fpn_prefix)}
    if not fpn:
        fpn = {k: v for k, v in sd.items() if k.startswith("fpn.")}
    if not fpn:
        raise WeightsError(
            "this checkpoint has no FPN weights ('intermediates.0.fpn.*'); use the backbone-only "
            "spec (fpn=False), or the authors' full checkpoint (allenai/satlas-pretrain), which holds the FPN"
        )
    out.update(fpn)
    return out


_SATLAS_CITATION = (
    "Bastani et al. 2023, SatlasPretrain: A Large-Scale Dataset for Remote Sensing Image Understanding, ICCV"
)
_SATLAS_HINT = (
    "Get {file} (ODC-BY) from https://huggingface.co/allenai/satlas-pretrain (the authors' full checkpoint), "
    "or torchgeo's backbone copy {hub} from https://hf.co/torchgeo/satlas (put it in $TORCH_HOME/hub/checkpoints)."
)


# parameters of build_satlas_swin (torchvision features, no FPN), by arch and band count
_SATLAS_PARAMS = {("swin_v2_b", 3): 86_903_800, ("swin_v2_b", 9): 86_916_088, ("swin_v2_b", 11): 86_920_184,
                  ("swin_v2_t", 3): 27_581_034, ("swin_v2_t", 9): 27_590_250}


def _satlas(name, arch, file, hub, bands, *, desc, gsd=None, dtype="uint8", scale=1.0, mean=None, std=None, clip=False):
    width = _SATLAS_WIDTH[arch]
    spec = ModelSpec(
        name=name,
        bands=bands,
        chip_size=256,
        stride=32,
        embedding_dim=8 * width,
        output="patch",
        scale=scale,
        mean=mean,
        std=std,
        builder="xeofm.models.rgb:build_satlas_swin",
        builder_kwargs={"arch": arch, "in_chans": len(bands), "level": 4, "fpn": False, "clip": clip},
        overlap=64,
        gsd=gsd,
        weights_file=file,
        metadata={
            "remap": "xeofm.models.rgb:remap_satlas",
            "hf_repo": "allenai/satlas-pretrain",
            "hf_file": file,
            "torch_hub_file": hub,
            "weights_url": f"https://huggingface.co/allenai/satlas-pretrain/resolve/main/{file}",
            "family": "satlas",
            "total_parameters": _SATLAS_PARAMS[(arch, len(bands))],
        },
        dtype=dtype,
        licence="ODC-BY-1.0",
        citation=_SATLAS_CITATION,
        description=desc,
    )
    register(spec, weights_hint=_SATLAS_HINT.format(file=file, hub=hub))


_TCI_DESC = "8-bit Sentinel-2 TCI (true colour, 0-255) divided by 255"
_MS_DESC = (
    "Sentinel-2 TCI red/green/blue (8 bit, / 255) then L1C B05, B06, B07, B08, B11, B12 (DN, / 8160), clipped to [0, 1]"
)
_S2_MS_STD = (255.0, 255.0, 255.0) + (8160.0,) * 6

for _arch, _tag in (("swin_v2_b", "swinb"), ("swin_v2_t", "swint")):
    _sfx = {"swinb": "fe22a12c", "swint": "bc68e396"}[_tag]
    _rfx = {"swinb": "156a98d5", "swint": "0c1a96e0"}[_tag]
    _satlas(
        f"satlas-{_tag}-s2-rgb", _arch, f"sentinel2_{_tag}_si_rgb.pth", f"sentinel2_{_tag}_si_rgb-{_rfx}.pth", TCI,
        scale=1 / 255, gsd=10.0,
        desc=f"SatlasPretrain {_arch} single-image Sentinel-2 RGB; input: {_TCI_DESC}; last stage, stride 32",
    )
    _satlas(
        f"satlas-{_tag}-s2-ms", _arch, f"sentinel2_{_tag}_si_ms.pth", f"sentinel2_{_tag}_si_ms-{_sfx}.pth",
        SATLAS_S2_MS, mean=(0.0,) * 9, std=_S2_MS_STD, clip=True, gsd=10.0, dtype="uint16",
        desc=f"SatlasPretrain {_arch} single-image Sentinel-2 multispectral; input: {_MS_DESC}; last stage, stride 32",
    )

_satlas(
    "satlas-swinb-aerial", "swin_v2_b", "aerial_swinb_si.pth", "aerial_swinb_si-e4169eb1.pth", RGB,
    scale=1 / 255,
    desc="SatlasPretrain swin_v2_b single-image aerial (NAIP-like 0.5-2 m RGB, 0-255, / 255); last stage, stride 32",
)
_satlas(
    "satlas-swinb-landsat", "swin_v2_b", "landsat_swinb_si.pth", "landsat_swinb_si-4af978f6.pth", LANDSAT_L1,
    mean=(4000.0,) * 11, std=(16320.0,) * 11, clip=True, gsd=30.0, dtype="uint16",
    desc="SatlasPretrain swin_v2_b single-image Landsat 8/9 bands 1-11 (Level-1 DN - 4000) / 16320, clipped to [0, 1]",
)


def satlas_variant(
    model: str | ModelSpec,
    *,
    level: int = 4,
    fpn: bool = False,
    frames: int = 1,
    name: str | None = None,
) -> ModelSpec:
    """Another output of a registered Satlas model: a pyramid level, the FPN, or multi-image input.

    Parameters
    ----------
    model
        A registered Satlas name (``"satlas-swinb-s2-ms"``...) or its spec.
    level
        1-4: stride 4, 8, 16 or 32.
    fpn
        Return the FPN's level (128 channels) instead of the raw stage. Needs the
        authors' full checkpoint (torchgeo's copies hold the backbone only).
    frames
        Number of images max-pooled together (Satlas' multi-image ``*_mi_*``
        checkpoints); the engine then slides a window of ``frames`` dates along ``time``.
    name
        Name of the new spec (default: derived from the options).

    Returns
    -------
    ModelSpec
        Not registered; pass it to ``embed`` (with ``weights=``) or ``xeofm.register`` it.
    """
    from . import get_spec

    base = get_spec(model) if isinstance(model, str) else model
    kw = dict(base.builder_kwargs)
    width = _SATLAS_WIDTH[kw["arch"]]
    kw.update(level=int(level), fpn=bool(fpn))
    stride = _LEVEL_STRIDE[int(level)]
    dim = _FPN_CHANNELS if fpn else width * 2 ** (int(level) - 1)
    meta = dict(base.metadata)
    meta["remap"] = "xeofm.models.rgb:remap_satlas_fpn" if fpn else "xeofm.models.rgb:remap_satlas"
    if fpn:
        meta.pop("total_parameters", None)
    if frames > 1 or fpn:  # torchgeo's copies are single-image backbones without the FPN
        meta.pop("torch_hub_file", None)
    wfile = base.weights_file
    if frames > 1 and wfile:
        wfile = wfile.replace("_si_", "_mi_")
        meta["hf_file"] = wfile
        meta["weights_url"] = f"https://huggingface.co/allenai/satlas-pretrain/resolve/main/{wfile}"
    suffix = "".join(
        [f"-l{level}" if level != 4 else "", "-fpn" if fpn else "", f"-mi{frames}" if frames > 1 else ""]
    )
    return base.replace(
        name=name or base.name + suffix,
        stride=stride,
        embedding_dim=dim,
        builder_kwargs=tuple(sorted(kw.items())),
        metadata=tuple(sorted(meta.items())),
        time_frames=int(frames),
        weights_file=wfile,
        overlap=min(base.default_overlap(), base.chip_size - stride) // stride * stride,
    )


# ---------------------------------------------------------------------------------------
# DINOv3 SAT-493M
# ---------------------------------------------------------------------------------------
#: SAT-493M normalisation after dividing 8-bit RGB by 255 (DINOv3 README; timm ``.sat493m`` cfg).
DINOV3_SAT_MEAN = (0.430, 0.411, 0.296)
DINOV3_SAT_STD = (0.213, 0.156, 0.143)

_META_DROP_SUFFIXES = (".periods", ".bias_mask")


def remap_dinov3(sd: dict[str, Any]) -> dict[str, Any]:
    """DINOv3 checkpoint (Meta's release or timm's) -> timm ``*_dinov3_qkvb`` keys.

    Meta's layout (``storage_tokens``, ``blocks.N.ls1.gamma``, ``blocks.N.attn.qkv.bias``
    with a masked key part) is renamed to timm's (``reg_token``, ``gamma_1``,
    ``attn.q_bias`` / ``attn.v_bias``; the key bias is fixed at zero). The RoPE
    period buffers, the masked-token embedding and pretraining-only heads are
    dropped. timm files without query/value biases get zero biases, which is
    the same model.
    """
    import torch

    meta_layout = "storage_tokens" in sd or any(".ls1.gamma" in k for k in sd)
    out: dict[str, Any] = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k.endswith(_META_DROP_SUFFIXES) or k == "mask_token" or k.startswith(("rope_embed.", "rope.")):
            continue
        if k.startswith(("local_cls_norm", "projectors.", "head.", "dino_head", "ibot_head")):
            continue
        if meta_layout:
            if k.endswith("attn.qkv.bias"):
                q, _, vb = v.chunk(3, dim=-1)
                out[k.replace("qkv.bias", "q_bias")] = q
                out[k.replace("qkv.bias", "v_bias")] = vb
                continue
            if k == "storage_tokens":
                k = "reg_token"
            k = k.replace(".ls1.gamma", ".gamma_1").replace(".ls2.gamma", ".gamma_2")
        out[k] = v
    for k in [k for k in out if k.endswith(".attn.qkv.weight")]:
        base = k[: -len("qkv.weight")]
        n = out[k].shape[0] // 3
        for b in ("q_bias", "v_bias"):
            if base + b not in out:
                out[base + b] = torch.zeros(n, dtype=out[k].dtype)
    return out


register(
    ModelSpec(
        name="dinov3-vitl16-sat493m",
        bands=RGB,
        chip_size=256,
        stride=16,
        embedding_dim=1024,
        output="tokens",
        prefix_tokens=5,
        scale=1 / 255,
        mean=DINOV3_SAT_MEAN,
        std=DINOV3_SAT_STD,
        builder="xeofm.models.builders:timm_tokens",
        builder_kwargs={"arch": "vit_large_patch16_dinov3_qkvb", "in_chans": 3},
        overlap=64,
        gsd=0.6,
        weights_file="dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth",
        metadata={
            "remap": "xeofm.models.rgb:remap_dinov3",
            "hf_repo": "timm/vit_large_patch16_dinov3.sat493m",
            "hf_file": "model.safetensors",
            "torch_hub_file": "dinov3_vitl16_pretrain_sat493m-eadcf0ff.pth",
            "family": "dinov3",
            "total_parameters": 303_128_576,
        },
        dtype="uint8",
        licence="DINOv3 License (custom, gated; not OSI)",
        citation="Simeoni et al. 2025, DINOv3, arXiv:2508.10104",
        description=(
            "DINOv3 ViT-L/16 distilled on SAT-493M (Maxar RGB, ~0.6 m); 8-bit RGB / 255 then "
            "mean (0.430, 0.411, 0.296), std (0.213, 0.156, 0.143); tokens: 1 class + 4 registers + patches"
        ),
    ),
    weights_hint=(
        "The DINOv3 weights are under Meta's DINOv3 License and gated: request access, then get "
        "dinov3_vitl16_pretrain_sat493m-*.pth (Meta's release, facebook/dinov3-vitl16-pretrain-sat493m) or "
        "timm's model.safetensors (hf.co/timm/vit_large_patch16_dinov3.sat493m); both layouts load."
    ),
)
