"""Remote-sensing CLIP models (RemoteCLIP, SkyCLIP, GeoRSCLIP) through open_clip.

All three fine-tune OpenAI/OpenCLIP architectures on remote-sensing image-text
pairs and publish open_clip state dicts, so one builder serves them all:
:func:`build_clip` creates ``open_clip.create_model(arch, pretrained=None)``
(never a hub download) and replaces its ``forward`` by the image tower, keeping
open_clip's parameter names (``visual.*``, ``transformer.*``, ``token_embedding``...).
The whole checkpoint therefore loads into one module, and the text tower
(:func:`encode_text`) uses the same file as the image tower.

Image outputs (input: 8-bit RGB / 255, then OpenAI's CLIP mean/std, 224 px):

* ``"vector"``: the pooled, projected image embedding, L2-normalised ``(B, D)``;
  use it with ``output="chip"``. It lives in the text embedding space, so
  ``emb · encode_text(...)`` is the CLIP cosine similarity (zero-shot).
* ``"tokens"`` (ViTs only): the class token followed by the patch tokens, each
  passed through the final LayerNorm and the image projection and L2-normalised
  ``(B, 1 + N, D)``. They share the text space, which gives dense similarity
  maps, but CLIP was trained on the pooled token only: patch tokens are weak,
  noisy dense features (expect blobby maps, not segmentation quality).

Nothing here imports torch or open_clip until a model is built.
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from ..bands import RGB
from ..errors import SpecError, WeightsError
from ..spec import ModelSpec
from . import register

__all__ = [
    "build_clip",
    "encode_text",
    "remap_checkpoint",
    "text_models",
    "CLIP_MEAN",
    "CLIP_STD",
    "DEFAULT_TEMPLATES",
]

#: OpenAI CLIP normalisation (after dividing 8-bit values by 255).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Prompt templates averaged by :func:`encode_text` (SkyScript's two plus an aerial one).
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "a satellite photo of {}.",
    "a satellite image of {}.",
    "an aerial image of {}.",
)


def _open_clip():
    try:
        import open_clip
    except ImportError as exc:  # pragma: no cover
        raise ImportError("CLIP models need open_clip: pip install 'xeofm[clip]' (open_clip_torch)") from exc
    return open_clip


def _image_forward(model, output: str, x):
    import torch.nn.functional as F

    if output == "vector":
        return F.normalize(model.encode_image(x), dim=-1)
    pooled, tokens = model.visual(x)  # output_tokens=True was set at build time
    proj = model.visual.proj
    if proj is not None:
        tokens = tokens @ proj
    import torch

    return F.normalize(torch.cat([pooled[:, None], tokens], dim=1), dim=-1)


def build_clip(arch: str, output: str = "vector", quick_gelu: bool = False):
    """An open_clip CLIP model whose ``forward`` is the image tower.

    Parameters
    ----------
    arch
        open_clip architecture name (``"RN50"``, ``"ViT-B-32"``, ``"ViT-L-14"``...).
    output
        ``"vector"`` (pooled embedding) or ``"tokens"`` (class + patch tokens; ViTs only).
    quick_gelu
        Use OpenAI's QuickGELU activation, as models fine-tuned from OpenAI's
        weights were trained with (open_clip's ``-quickgelu`` configs).

    ``encode_image`` and ``encode_text`` stay available on the returned module.
    """
    open_clip = _open_clip()
    if output not in ("vector", "tokens"):
        raise ValueError(f"output must be 'vector' or 'tokens', got {output!r}")
    import logging

    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)  # open_clip warns that no pretrained weights were loaded: by design here
    try:
        model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=bool(quick_gelu))
    finally:
        logging.disable(previous)
    if output == "tokens":
        if not hasattr(model.visual, "output_tokens"):
            raise SpecError(f"open_clip {arch!r} has no patch tokens (a CNN image tower); use output='vector'")
        model.visual.output_tokens = True
    model.forward = functools.partial(_image_forward, model, output)
    model.xeofm_arch = arch
    return model


_OPENAI_EXTRAS = ("input_resolution", "context_length", "vocab_size")


def remap_checkpoint(sd: dict[str, Any]) -> dict[str, Any]:
    """An open_clip checkpoint as published -> the module's keys.

    Handles plain state dicts (RemoteCLIP, GeoRSCLIP), open_clip training
    checkpoints (``{"state_dict": {"module.visual...": ...}, "epoch": ...}``, as in
    the SkyCLIP zips; the runtime already unwraps ``state_dict``) and OpenAI-style
    dicts carrying ``input_resolution``/``context_length``/``vocab_size``.
    """
    out = {}
    for k, v in sd.items():
        if k.startswith("module."):
            k = k[len("module."):]
        if k in _OPENAI_EXTRAS:
            continue
        out[k] = v
    if not any(k.startswith("visual.") for k in out):
        raise WeightsError(
            "no CLIP image tower in this checkpoint (no 'visual.*' keys); expected an open_clip state dict"
        )
    return out


# ---------------------------------------------------------------------------------------
# Text tower
# ---------------------------------------------------------------------------------------
def text_models() -> list[str]:
    """Registered models that have a text tower (zero-shot prompts)."""
    from . import _REGISTRY

    return sorted(n for n, (s, _) in _REGISTRY.items() if dict(s.metadata).get("text_tower"))


def encode_text(
    model: str | ModelSpec,
    texts: str | Sequence[str],
    *,
    weights: str | None = None,
    pretrained: bool = True,
    templates: Sequence[str] | None = None,
    device: str = "cpu",
):
    """Embed text prompts in a CLIP model's joint space.

    Parameters
    ----------
    model
        A registered CLIP model name (``"remoteclip-vit-b-32"``...) or its spec.
        The ``-tokens`` variants share the space of their ``vector`` sibling.
    texts
        One class name / phrase, or a list of them.
    weights
        The model's checkpoint (the same file as for the images: open_clip files
        hold both towers). Default: found as for ``embed`` (``$XEOFM_WEIGHTS_DIR``,
        Hugging Face cache).
    pretrained
        ``False`` uses the seeded random weights (tests).
    templates
        Prompt templates with one ``{}``; each text is put into every template,
        the embeddings are L2-normalised, averaged and normalised again. Default
        :data:`DEFAULT_TEMPLATES`. Pass ``["{}"]`` to embed the texts as given.
    device
        Torch device for the text tower.

    Returns
    -------
    numpy.ndarray
        ``(n_texts, D)`` float32, unit length rows.

    Raises
    ------
    SpecError
        If the model has no text tower, or a template lacks ``{}``.
    WeightsError
        If pretrained weights are needed and not found.
    """
    import numpy as np

    from .. import runtime
    from . import get_spec, resolve_model

    spec = get_spec(model) if isinstance(model, str) else model
    if not isinstance(spec, ModelSpec):
        raise SpecError(f"model must be a registered name or a ModelSpec, got {type(model).__name__}")
    if dict(spec.metadata).get("text_tower") != "open_clip":
        raise SpecError(
            f"model {spec.name!r} has no text tower, so it cannot embed text prompts. "
            f"Models with one: {text_models()}"
        )
    if isinstance(texts, str):
        texts = [texts]
    texts = [str(t) for t in texts]
    if not texts:
        raise SpecError("encode_text needs at least one text")
    templates = tuple(DEFAULT_TEMPLATES if templates is None else templates)
    if not templates or any("{}" not in t for t in templates):
        raise SpecError(f"every prompt template needs one '{{}}' for the text, got {list(templates)}")
    spec = resolve_model(spec, weights=weights, pretrained=pretrained)
    dev = runtime.resolve_device(device)
    module = runtime.get_model(spec, dev)
    arch = dict(spec.builder_kwargs)["arch"]
    tokenizer = _open_clip().get_tokenizer(arch)
    import torch
    import torch.nn.functional as F

    prompts = [t.format(text) for text in texts for t in templates]
    tokens = tokenizer(prompts).to(dev)
    with runtime.run_lock(spec, dev), torch.inference_mode():
        emb = F.normalize(module.encode_text(tokens).float(), dim=-1)
    emb = emb.reshape(len(texts), len(templates), -1).mean(dim=1)
    emb = F.normalize(emb, dim=-1)
    return np.ascontiguousarray(emb.cpu().numpy(), dtype=np.float32)


# ---------------------------------------------------------------------------------------
# Registered models
# ---------------------------------------------------------------------------------------
_ARCH = {  # arch: (embedding dim, patch size or None for CNNs, parameters of both towers)
    "RN50": (1024, None, 102_007_137),
    "ViT-B-32": (512, 32, 151_277_313),
    "ViT-L-14": (768, 14, 427_616_513),
}
_FAMILY = {
    "remoteclip": dict(
        label="RemoteCLIP",
        licence="not stated (no licence file in the repository or on the Hugging Face page)",
        citation="Liu et al. 2024, RemoteCLIP: A Vision Language Foundation Model for Remote Sensing, IEEE TGRS",
        hf_repo="chendelong/RemoteCLIP",
    ),
    "skyclip": dict(
        label="SkyCLIP (SkyScript)",
        licence="MIT (code repository; no separate weights licence)",
        citation=(
            "Wang et al. 2024, SkyScript: A Large and Semantically Diverse Vision-Language Dataset for "
            "Remote Sensing, AAAI"
        ),
        hf_repo=None,
    ),
    "georsclip": dict(
        label="GeoRSCLIP (RS5M)",
        licence="CC (Hugging Face tag 'cc', variant unspecified)",
        citation=(
            "Zhang et al. 2024, RS5M and GeoRSCLIP: A Large Scale Vision-Language Dataset and a Large "
            "Vision-Language Model for Remote Sensing, IEEE TGRS"
        ),
        hf_repo="Zilun/GeoRSCLIP",
    ),
}
# (family, arch, weight file, where, quick_gelu)
_MODELS = (
    ("remoteclip", "RN50", "RemoteCLIP-RN50.pt", "RemoteCLIP-RN50.pt", True),
    ("remoteclip", "ViT-B-32", "RemoteCLIP-ViT-B-32.pt", "RemoteCLIP-ViT-B-32.pt", True),
    ("remoteclip", "ViT-L-14", "RemoteCLIP-ViT-L-14.pt", "RemoteCLIP-ViT-L-14.pt", True),
    ("skyclip", "ViT-B-32", "SkyCLIP_ViT_B32_top50pct.pt", "SkyCLIP_ViT_B32_top50pct.zip", False),
    ("skyclip", "ViT-L-14", "SkyCLIP_ViT_L14_top30pct.pt", "SkyCLIP_ViT_L14_top30pct.zip", True),
    ("georsclip", "ViT-B-32", "RS5M_ViT-B-32.pt", "ckpt/RS5M_ViT-B-32.pt", True),
    ("georsclip", "ViT-L-14", "RS5M_ViT-L-14.pt", "ckpt/RS5M_ViT-L-14.pt", True),
)
_SKYCLIP_URL = "https://opendatasharing.s3.us-west-2.amazonaws.com/SkyScript/ckpt/"


def _hint(family: str, file: str, where: str) -> str:
    if family == "skyclip":
        return (
            f"Get {where} (MIT) from {_SKYCLIP_URL}{where} (SkyScript README), unzip it and pass the checkpoint "
            f"inside as weights=..., or save it as $XEOFM_WEIGHTS_DIR/{file}."
        )
    repo = _FAMILY[family]["hf_repo"]
    lic = "no licence stated" if family == "remoteclip" else _FAMILY[family]["licence"]
    return f"Get {where} from https://huggingface.co/{repo} ({lic}); the same file serves images and text."


for _family, _arch, _file, _where, _qg in _MODELS:
    _dim, _patch, _nparam = _ARCH[_arch]
    _fam = _FAMILY[_family]
    _meta: dict[str, Any] = {
        "remap": "xeofm.models.clip:remap_checkpoint",
        "text_tower": "open_clip",
        "text_templates": list(DEFAULT_TEMPLATES),
        "family": _family,
        "total_parameters": _nparam,
    }
    if _fam["hf_repo"]:
        _meta.update(hf_repo=_fam["hf_repo"], hf_file=_where,
                     weights_url=f"https://huggingface.co/{_fam['hf_repo']}/resolve/main/{_where}")
    else:
        _meta["weights_url"] = _SKYCLIP_URL + _where
    _base = _family + "-" + _arch.lower()
    for _output in ("vector", "tokens") if _patch else ("vector",):
        register(
            ModelSpec(
                name=_base if _output == "vector" else _base + "-tokens",
                bands=RGB,
                chip_size=224,
                stride=_patch or 32,
                embedding_dim=_dim,
                output=_output,
                prefix_tokens=1 if _output == "tokens" else 0,
                scale=1 / 255,
                mean=CLIP_MEAN,
                std=CLIP_STD,
                builder="xeofm.models.clip:build_clip",
                builder_kwargs={"arch": _arch, "output": _output, "quick_gelu": _qg},
                weights_file=_file,
                metadata=_meta,
                dtype="uint8",
                licence=_fam["licence"],
                citation=_fam["citation"],
                description=(
                    f"{_fam['label']} {_arch} image tower, 8-bit RGB / 255 then CLIP mean/std, 224 px; "
                    + ("pooled embedding, L2-normalised (use output='chip')" if _output == "vector"
                       else "class + patch tokens projected into the text space, L2-normalised (weak dense features)")
                ),
            ),
            weights_hint=_hint(_family, _file, _where),
        )
