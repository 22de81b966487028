"""CROMA: contrastive radar-optical masked autoencoders (Sentinel-1 + Sentinel-2).

Two ViT encoders with 2-D ALiBi attention biases (patch 8, 16 heads): one for
Sentinel-1 (VV, VH; half the depth) and one for Sentinel-2 (12 L1C bands, B10
left out), and a cross-attention encoder that reads the radar tokens against
the optical ones. xeofm registers the joint model (``croma-base``,
``croma-large``: both sensors from one cube or Dataset) and the single-sensor
encoders (``-s1``, ``-s2``). The module takes the spec's bands concatenated
(S1 first, then S2) and splits them.

Module and parameter names follow torchgeo's ``CROMA`` (``croma_base`` /
``croma_large``); the released files (``CROMA_base.pt``, torchgeo's
``CROMA_base-0238d814.pt``) are dictionaries of sub-state-dicts (``s1_encoder``,
``s1_GAP_FFN``, ``s2_encoder``, ``s2_GAP_FFN``, ``joint_encoder``) that the
``remap_*`` hooks flatten and select.

Normalisation. Upstream scales each band to ``[0, 1]`` by
``(x - (m - 2s)) / 4s`` and clips, with ``m``, ``s`` the band's mean and
standard deviation computed *on the user's data*. Statistics computed per
batch would make results depend on chunking, so xeofm uses fixed statistics:
by default those of SSL4EO-S12 (CROMA's pretraining data: S2 L1C digital
numbers, S1 GRD backscatter in dB), folded into the spec's ``mean``/``std``,
with the clip done by the module. :func:`with_stats` / :func:`stats_from`
put statistics of your own data into a spec, as upstream does.

``forward(x)`` returns the patch tokens ``(B, (H/8)(W/8), D)`` (no class token)
of the joint encoder, or of the single sensor's encoder.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any, Mapping, Sequence

from ..bands import SENTINEL2, Band
from ..errors import MissingBandsError
from ..spec import ModelSpec
from . import register

__all__ = [
    "build_croma",
    "remap_joint",
    "remap_s1",
    "remap_s2",
    "alibi_2d",
    "with_stats",
    "stats_from",
    "check_sensors",
    "S1_BANDS",
    "S2_BANDS",
]

#: Sentinel-1 GRD backscatter, dB.
S1_BANDS: tuple[Band, ...] = (Band("VV", "vv", None, ("vv", "VV_dB")), Band("VH", "vh", None, ("vh", "VH_dB")))
#: Sentinel-2 L1C without the cirrus band B10, in L1C order.
S2_BANDS: tuple[Band, ...] = tuple(b for b in SENTINEL2 if b.id != "B10")

# SSL4EO-S12 statistics (zhu-xlab/SSL4EO-S12, ssl4eo_dataset.py: S1 GRD dB; S2 L1C "S2C" without B10).
SSL4EO_S1_MEAN = (-12.54847273, -20.19237134)
SSL4EO_S1_STD = (5.25697717, 5.91150917)
SSL4EO_S2_MEAN = (1605.57504906, 1390.78157673, 1314.8729939, 1363.52445545, 1549.44374991, 2091.74883118,
                  2371.7172463, 2299.90463006, 2560.29504086, 830.06605044, 2177.07172323, 1524.06546312)
SSL4EO_S2_STD = (786.78685367, 850.34818441, 875.06484736, 1138.84957046, 1122.17775652, 1161.59187054,
                 1274.39184232, 1248.42891965, 1345.52684884, 577.31607053, 1336.09932639, 1136.53823676)


def alibi_2d(num_heads: int, side: int) -> Any:
    """2-D ALiBi bias ``(1, heads, side², side²)``: ``-slope_h * euclidean distance`` between patches."""
    import torch

    if not math.log2(num_heads).is_integer():
        raise ValueError(f"CROMA's ALiBi slopes need a power-of-two number of heads, got {num_heads}")
    start = 2 ** (-(2 ** -(math.log2(num_heads) - 3)))
    slopes = torch.tensor([start * start**i for i in range(num_heads)], dtype=torch.float32)
    ij = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij"), -1).reshape(-1, 2)
    diff = (ij[:, None, :] - ij[None, :, :]).to(torch.float64)
    dist = diff.pow(2).sum(-1).sqrt().to(torch.float32)
    return (-dist[None] * slopes[:, None, None]).unsqueeze(0)


@lru_cache(maxsize=None)
def _classes():
    import torch
    from torch import nn

    def split_heads(t, h):
        b, n, _ = t.shape
        return t.reshape(b, n, h, -1).transpose(1, 2)

    def merge_heads(t):
        b, h, n, d = t.shape
        return t.transpose(1, 2).reshape(b, n, h * d)

    class FFN(nn.Module):
        def __init__(self, dim: int, mult: int = 4):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(), nn.Dropout(0.0), nn.Linear(dim * mult, dim))
            self.input_norm = nn.LayerNorm(dim)

        def forward(self, x):
            return self.net(self.input_norm(x))

    class Attention(nn.Module):
        def __init__(self, dim: int, num_heads: int):
            super().__init__()
            self.num_heads = num_heads
            self.scale = (dim // num_heads) ** -0.5
            self.to_qkv = nn.Linear(dim, dim * 3, bias=False)
            self.to_out = nn.Linear(dim, dim)
            self.input_norm = nn.LayerNorm(dim)

        def forward(self, x, bias):
            x = self.input_norm(x)
            q, k, v = (split_heads(t, self.num_heads) for t in self.to_qkv(x).chunk(3, dim=-1))
            attn = (torch.einsum("bhid,bhjd->bhij", q, k) * self.scale + bias).softmax(dim=-1)
            return self.to_out(merge_heads(torch.einsum("bhij,bhjd->bhid", attn, v)))

    class CrossAttention(nn.Module):
        def __init__(self, dim: int, num_heads: int):
            super().__init__()
            self.num_heads = num_heads
            self.scale = (dim // num_heads) ** -0.5
            self.to_q = nn.Linear(dim, dim, bias=False)
            self.to_k = nn.Linear(dim, dim, bias=False)
            self.to_v = nn.Linear(dim, dim, bias=False)
            self.to_out = nn.Linear(dim, dim)
            self.input_norm = nn.LayerNorm(dim)

        def forward(self, x, context, bias):
            x = self.input_norm(x)
            context = self.input_norm(context)
            q = split_heads(self.to_q(x), self.num_heads)
            k = split_heads(self.to_k(context), self.num_heads)
            v = split_heads(self.to_v(context), self.num_heads)
            attn = (torch.einsum("bhid,bhjd->bhij", q, k) * self.scale + bias).softmax(dim=-1)
            return self.to_out(merge_heads(torch.einsum("bhij,bhjd->bhid", attn, v)))

    class BaseTransformer(nn.Module):
        def __init__(self, dim: int, depth: int, num_heads: int):
            super().__init__()
            self.layers = nn.ModuleList(
                [nn.ModuleList([Attention(dim, num_heads), FFN(dim)]) for _ in range(depth)]
            )
            self.norm_out = nn.LayerNorm(dim)

        def forward(self, x, bias):
            for attn, ffn in self.layers:
                x = attn(x, bias) + x
                x = ffn(x) + x
            return self.norm_out(x)

    class BaseTransformerCrossAttn(nn.Module):
        def __init__(self, dim: int, depth: int, num_heads: int):
            super().__init__()
            self.layers = nn.ModuleList(
                [
                    nn.ModuleList([Attention(dim, num_heads), CrossAttention(dim, num_heads), FFN(dim)])
                    for _ in range(depth)
                ]
            )
            self.norm_out = nn.LayerNorm(dim)

        def forward(self, x, context, bias):
            for attn, cross, ffn in self.layers:
                x = attn(x, bias) + x
                x = cross(x, context, bias) + x
                x = ffn(x) + x
            return self.norm_out(x)

    class ViT(nn.Module):
        def __init__(self, dim: int, depth: int, in_channels: int, patch_size: int = 8, num_heads: int = 16):
            super().__init__()
            self.patch_size = patch_size
            self.linear_input = nn.Linear(patch_size * patch_size * in_channels, dim)
            self.transformer = BaseTransformer(dim, depth, num_heads)

        def forward(self, imgs, bias):
            b, c, h, w = imgs.shape
            p = self.patch_size
            x = imgs.reshape(b, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(b, (h // p) * (w // p), c * p * p)
            return self.transformer(self.linear_input(x), bias)

    def gap_ffn(dim: int):
        return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    class CROMAEncoder(nn.Module):
        """CROMA for ``modalities`` ``("sar", "optical")``, ``("sar",)`` or ``("optical",)``."""

        def __init__(
            self,
            modalities: Sequence[str] = ("sar", "optical"),
            encoder_dim: int = 768,
            encoder_depth: int = 12,
            num_heads: int = 16,
            patch_size: int = 8,
            image_size: int = 120,
            clip_input: bool = True,
        ):
            super().__init__()
            self.modalities = tuple(modalities)
            bad = set(self.modalities) - {"sar", "optical"}
            if bad or not self.modalities:
                raise ValueError(f"CROMA modalities must be 'sar' and/or 'optical', got {modalities}")
            if image_size % patch_size:
                raise ValueError(f"CROMA image_size must be a multiple of {patch_size}")
            self.patch_size = patch_size
            self.clip_input = clip_input
            self.num_heads = num_heads
            self.register_buffer("attn_bias", alibi_2d(num_heads, image_size // patch_size), persistent=False)
            if "sar" in self.modalities:
                self.s1_encoder = ViT(encoder_dim, encoder_depth // 2, 2, patch_size, 16)
                self.s1_GAP_FFN = gap_ffn(encoder_dim)
            if "optical" in self.modalities:
                self.s2_encoder = ViT(encoder_dim, encoder_depth, 12, patch_size, 16)
                self.s2_GAP_FFN = gap_ffn(encoder_dim)
            if set(self.modalities) == {"sar", "optical"}:
                self.joint_encoder = BaseTransformerCrossAttn(encoder_dim, encoder_depth // 2, num_heads)

        def _bias(self, h: int, w: int):
            if h != w:
                raise ValueError(f"CROMA takes square chips, got {h} x {w}")
            side = h // self.patch_size
            if side * side == self.attn_bias.shape[-1]:
                return self.attn_bias
            return alibi_2d(self.num_heads, side).to(self.attn_bias.device)

        def encode(self, x):
            """All outputs: ``{sar,optical,joint}_encodings`` and the pooled ``*_GAP`` vectors."""
            n_sar = 2 if "sar" in self.modalities else 0
            want = n_sar + (12 if "optical" in self.modalities else 0)
            if x.shape[1] != want:
                raise ValueError(f"CROMA {self.modalities} takes {want} bands, got {x.shape[1]}")
            if self.clip_input:
                x = x.clamp(0.0, 1.0)
            bias = self._bias(x.shape[-2], x.shape[-1])
            out = {}
            if n_sar:
                s = self.s1_encoder(x[:, :n_sar], bias)
                out["sar_encodings"], out["sar_GAP"] = s, self.s1_GAP_FFN(s.mean(dim=1))
            if "optical" in self.modalities:
                o = self.s2_encoder(x[:, n_sar:], bias)
                out["optical_encodings"], out["optical_GAP"] = o, self.s2_GAP_FFN(o.mean(dim=1))
            if n_sar and "optical" in self.modalities:
                j = self.joint_encoder(out["sar_encodings"], out["optical_encodings"], bias)
                out["joint_encodings"], out["joint_GAP"] = j, j.mean(dim=1)
            return out

        def forward(self, x):
            out = self.encode(x)
            for key in ("joint_encodings", "optical_encodings", "sar_encodings"):
                if key in out:
                    return out[key]
            raise AssertionError("unreachable")

    return CROMAEncoder


def build_croma(**kwargs: Any):
    """Build a CROMA encoder (``modalities``, ``encoder_dim``, ``encoder_depth``, ``image_size``...)."""
    kwargs = dict(kwargs)
    if "modalities" in kwargs:
        kwargs["modalities"] = tuple(kwargs["modalities"])
    return _classes()(**kwargs)


def _remap(state_dict: Mapping[str, Any], keep: tuple[str, ...]) -> dict:
    from .weights import drop_keys, flatten, strip_prefixes

    sd = flatten(state_dict)
    sd = strip_prefixes(sd, ("module.", "model.", "backbone."))
    sd = drop_keys(sd, exact=("attn_bias",))
    return {k: v for k, v in sd.items() if k.split(".", 1)[0] in keep}


def remap_joint(state_dict: Mapping[str, Any]) -> dict:
    """CROMA file (nested or flat) -> keys of the joint S1+S2 model."""
    return _remap(state_dict, ("s1_encoder", "s1_GAP_FFN", "s2_encoder", "s2_GAP_FFN", "joint_encoder"))


def remap_s1(state_dict: Mapping[str, Any]) -> dict:
    """CROMA file -> keys of the Sentinel-1 encoder (the rest of the file is not used)."""
    return _remap(state_dict, ("s1_encoder", "s1_GAP_FFN"))


def remap_s2(state_dict: Mapping[str, Any]) -> dict:
    """CROMA file -> keys of the Sentinel-2 encoder (the rest of the file is not used)."""
    return _remap(state_dict, ("s2_encoder", "s2_GAP_FFN"))


# ---------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------
def _fold(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """(m, s) per band -> spec (mean, std) mapping ``m - 2s`` to 0 and ``m + 2s`` to 1."""
    if len(mean) != len(std):
        raise ValueError("mean and std need one value per band")
    return tuple(float(m) - 2 * float(s) for m, s in zip(mean, std)), tuple(4 * float(s) for s in std)


def with_stats(spec: ModelSpec | str, mean: Sequence[float], std: Sequence[float]) -> ModelSpec:
    """A CROMA spec normalising with your per-band statistics (band order of ``spec.bands``).

    ``mean``/``std`` are those of the raw data (after the spec's ``offset`` and
    ``scale``); each band is mapped by ``(x - (m - 2s)) / 4s`` and clipped to
    ``[0, 1]``, as upstream does.
    """
    from . import get_spec

    if isinstance(spec, str):
        spec = get_spec(spec)
    if len(mean) != len(spec.bands) or len(std) != len(spec.bands):
        raise ValueError(f"{spec.name} has {len(spec.bands)} bands {spec.band_ids}; give one mean and std per band")
    m, s = _fold(mean, std)
    return spec.replace(mean=m, std=s)


def stats_from(cube: Any, spec: ModelSpec | str, *, bands: Mapping[str, str] | None = None) -> ModelSpec:
    """:func:`with_stats` with the mean and standard deviation of each band of ``cube``.

    ``cube`` is a ``(..., band, y, x)`` DataArray or a Dataset with one variable
    per band; NaN and the cube's nodata value are left out. This computes the
    statistics (one pass over the data).
    """
    import numpy as np
    import xarray as xr

    from . import get_spec
    from ..bands import resolve_bands

    if isinstance(spec, str):
        spec = get_spec(spec)
    if isinstance(cube, xr.Dataset):
        names = resolve_bands(list(cube.data_vars), spec.bands, bands)
        arrays = [cube[n] for n in names]
    else:
        bdim = next((d for d in ("band", "bands", "channel", "variable") if d in cube.dims), None)
        if bdim is None:
            raise ValueError("the cube needs a band dimension")
        names = resolve_bands(list(cube[bdim].values), spec.bands, bands)
        arrays = [cube.sel({bdim: n}) for n in names]
    mean, std = [], []
    for a in arrays:
        v = a.astype("float64")
        nd = a.attrs.get("nodata", a.attrs.get("_FillValue", a.encoding.get("_FillValue")))
        if nd is not None:
            v = v.where(v != float(np.asarray(nd).ravel()[0]))
        v = (v + spec.offset) * spec.scale
        mean.append(float(v.mean(skipna=True)))
        std.append(float(v.std(skipna=True)))
    return with_stats(spec, mean, std)


# ---------------------------------------------------------------------------------------
# Registered specs
# ---------------------------------------------------------------------------------------
_CITATION = (
    "Fuller, Millard, Green 2023, CROMA: Remote Sensing Representations with Contrastive Radar-Optical "
    "Masked Autoencoders, NeurIPS 2023 (arXiv:2311.00566)"
)
_FILES = {
    "base": (768, 12, "CROMA_base-0238d814.pt", "387883f08af79d777167519c57cd826eda89a16f"),
    "large": (1024, 24, "CROMA_large-921e69ad.pt", "92cb1a0f4e34c6c01558baf070197c01255382f6"),
}
_VARIANT_SUFFIX = {("sar", "optical"): "", ("optical",): "-s2", ("sar",): "-s1"}


def check_sensors(spec: ModelSpec, available: Sequence[object], mapping: Mapping[str, str] | None = None) -> None:
    """Refuse a joint S1+S2 model when one sensor is missing, naming the single-sensor model to use."""
    from ..bands import resolve_bands

    if len(spec.bands) != len(S1_BANDS) + len(S2_BANDS):
        return

    def has(bands: Sequence[Band]) -> bool:
        try:
            resolve_bands(available, bands, mapping)
            return True
        except MissingBandsError:
            return False

    s1, s2 = has(spec.bands[:2]), has(spec.bands[2:])
    if s1 and s2:
        return
    size = dict(spec.metadata).get("size", "base")
    if s2 and not s1:
        raise MissingBandsError(
            f"model {spec.name!r} encodes Sentinel-1 and Sentinel-2 together, but the cube has no "
            f"Sentinel-1 VV/VH bands (cube bands: {[str(a) for a in available]}). Use 'croma-{size}-s2' for "
            "Sentinel-2 alone, or add VV and VH (dB) to the cube."
        )
    if s1 and not s2:
        raise MissingBandsError(
            f"model {spec.name!r} encodes Sentinel-1 and Sentinel-2 together, but the cube lacks the "
            f"Sentinel-2 bands (cube bands: {[str(a) for a in available]}). Use 'croma-{size}-s1' for "
            "Sentinel-1 alone, or add the 12 Sentinel-2 L1C bands (B01-B12 without B10)."
        )


def _specs() -> list[tuple[ModelSpec, str]]:
    out = []
    for size, (dim, depth, fname, rev) in _FILES.items():
        for mods, suffix in _VARIANT_SUFFIX.items():
            bands = (S1_BANDS if "sar" in mods else ()) + (S2_BANDS if "optical" in mods else ())
            mean = (SSL4EO_S1_MEAN if "sar" in mods else ()) + (SSL4EO_S2_MEAN if "optical" in mods else ())
            std = (SSL4EO_S1_STD if "sar" in mods else ()) + (SSL4EO_S2_STD if "optical" in mods else ())
            m, s = _fold(mean, std)
            remap = {"": "remap_joint", "-s2": "remap_s2", "-s1": "remap_s1"}[suffix]
            meta: dict[str, Any] = {
                "remap": f"xeofm.models.croma:{remap}",
                "hf_repo": "torchgeo/croma",
                "hf_file": fname,
                "hf_revision": rev,
                "torch_hub_file": fname,
                "weights_url": f"https://hf.co/torchgeo/croma/resolve/{rev}/{fname}",
                "family": "croma",
                "size": size,
                "normalisation": "SSL4EO-S12 mean +/- 2 std -> [0, 1], clipped (xeofm.models.croma.with_stats)",
            }
            if suffix == "":
                meta["check_bands"] = "xeofm.models.croma:check_sensors"
            what = {"": "Sentinel-1 + Sentinel-2 joint", "-s2": "Sentinel-2", "-s1": "Sentinel-1"}[suffix]
            spec = ModelSpec(
                name=f"croma-{size}{suffix}",
                bands=bands,
                chip_size=120,
                stride=8,
                embedding_dim=dim,
                output="tokens",
                prefix_tokens=0,
                mean=m,
                std=s,
                builder="xeofm.models.croma:build_croma",
                builder_kwargs={
                    "modalities": mods, "encoder_dim": dim, "encoder_depth": depth, "num_heads": 16,
                    "patch_size": 8, "image_size": 120,
                },
                overlap=32,
                gsd=10.0,
                weights_file=fname,
                metadata=meta,
                licence="CC-BY-4.0",
                citation=_CITATION,
                description=(
                    f"CROMA-{size} {what} encoder; S1 GRD VV,VH in dB and/or S2 L1C DN (12 bands, no B10), "
                    "scaled to [0, 1] with SSL4EO-S12 statistics (mean +/- 2 std) and clipped"
                ),
            )
            hint = (
                f"Get {fname} (CC-BY-4.0; torchgeo's copy of the authors' CROMA_{size}.pt, which also works) "
                f"from https://hf.co/torchgeo/croma/resolve/{rev}/{fname}; a torchgeo download leaves it in "
                "$TORCH_HOME/hub/checkpoints, where xeofm finds it offline. One file serves the joint, -s1 and "
                "-s2 models."
            )
            out.append((spec, hint))
    return out


for _spec, _hint in _specs():
    register(_spec, weights_hint=_hint)
