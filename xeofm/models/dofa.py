"""DOFA (Dynamic One-For-All): one ViT for any set of bands, conditioned on their wavelengths.

A small transformer turns the bands' centre wavelengths into the kernel and bias
of the patch embedding, so the same weights take Sentinel-2, Sentinel-1,
Landsat, NAIP or hyperspectral bands. The engine passes the wavelengths of the
spec's bands (``aux=("wavelengths",)``, micrometres), so another band subset is
just another spec: ``get_spec("dofa-base").replace(bands=..., mean=..., std=...)``
or :func:`for_bands`.

Module and parameter names follow torchgeo's ``DOFA``
(``dofa_base_patch16_224`` / ``dofa_large_patch16_224``), so torchgeo's weight
files (``dofa_base_patch16_224-a0275954.pth``...) and its state dicts load as
they are; the pooling norm and classification head (``fc_norm``, ``head``) and
the pretraining leftovers of the authors' original files (``norm``,
``mask_token``, ``projector``) are dropped by :func:`remap_checkpoint`.

``forward(x, wavelengths)`` returns the tokens after the last block,
``(B, 1 + (H/16)(W/16), D)``, class token first. No final norm is applied: the
released encoder weights do not include one that the pooled outputs use.
torchgeo's pooled ``forward_features`` is ``LayerNorm(mean of these patch
tokens)`` with ``fc_norm`` at its initial (identity) affine values.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

from ..bands import SENTINEL2, Band
from ..spec import ModelSpec
from . import register

__all__ = ["build_dofa", "remap_checkpoint", "for_bands", "S2_BANDS", "S2_MEAN", "S2_STD"]

_S2 = {b.id: b for b in SENTINEL2}
#: The upstream Sentinel-2 demo order: B04, B03, B02, B05, B06, B07, B08, B11, B12.
S2_BANDS: tuple[Band, ...] = tuple(_S2[i] for i in ("B04", "B03", "B02", "B05", "B06", "B07", "B08", "B11", "B12"))

# Upstream statistics, in the 8-bit units of the SatlasPretrain Sentinel-2 images DOFA
# was pretrained on (README of zhu-xlab/DOFA; model-zoo notes).
_S2_MEAN_8BIT = (114.1099739, 114.81779093, 126.63977424, 84.33539309, 97.84789168, 103.94461911,
                 101.435633, 72.32804172, 56.66528851)
_S2_STD_8BIT = (77.84352553, 69.96844919, 67.42465279, 64.57022983, 61.72545487, 61.34187099,
                60.29744676, 47.88519516, 42.55886798)
# SatlasPretrain's 8-bit Sentinel-2 bands, per raw L1C digital number (reflectance x 10^4):
# B04/B03/B02 come from ESA's TCI (reflectance 0-0.2 -> 0-255, i.e. DN * 255 / 2000);
# the other bands are DN // 32 clipped to 255.
_DN_PER_8BIT = (2000 / 255,) * 3 + (32.0,) * 6
#: Upstream statistics expressed in raw Sentinel-2 DN (reflectance x 10^4), for ``scale=1``.
S2_MEAN = tuple(m * k for m, k in zip(_S2_MEAN_8BIT, _DN_PER_8BIT))
S2_STD = tuple(s * k for s, k in zip(_S2_STD_8BIT, _DN_PER_8BIT))


@lru_cache(maxsize=None)
def _classes():
    from functools import partial

    import torch
    import torch.nn.functional as F
    from torch import nn

    try:
        from timm.models.vision_transformer import Block
    except ImportError as exc:  # pragma: no cover
        raise ImportError("DOFA needs timm: pip install 'xeofm[models]'") from exc

    def wave_embedding(dim: int, pos):
        omega = torch.arange(dim // 2, dtype=torch.float32, device=pos.device) / (dim / 2.0)
        omega = 1.0 / 10000**omega
        out = pos.reshape(-1)[:, None] * omega[None, :]
        return torch.cat([torch.sin(out), torch.cos(out)], dim=1)

    class TransformerWeightGenerator(nn.Module):
        """Wavelength embeddings -> patch-embedding kernels (one per band) and a bias."""

        def __init__(self, input_dim: int, output_dim: int, embed_dim: int, num_heads: int = 4, num_layers: int = 1):
            super().__init__()
            layer = nn.TransformerEncoderLayer(
                d_model=input_dim, nhead=num_heads, activation="gelu", norm_first=False, batch_first=False,
                dropout=False,
            )
            self.transformer_encoder = nn.TransformerEncoder(layer, num_layers=num_layers, enable_nested_tensor=False)
            self.fc_weight = nn.Linear(input_dim, output_dim)
            self.fc_bias = nn.Linear(input_dim, embed_dim)
            self.wt_num = 128
            self.weight_tokens = nn.Parameter(torch.empty([self.wt_num, input_dim]))
            self.bias_token = nn.Parameter(torch.empty([1, input_dim]))
            nn.init.normal_(self.weight_tokens, std=0.02)
            nn.init.normal_(self.bias_token, std=0.02)

        def forward(self, waves):
            x = torch.cat([self.weight_tokens, waves, self.bias_token], dim=0)
            out = self.transformer_encoder(x)
            weights = self.fc_weight(out[self.wt_num : -1] + waves)
            bias = self.fc_bias(out[-1])
            return weights, bias

    class FCResLayer(nn.Module):
        def __init__(self, size: int = 128):
            super().__init__()
            self.nonlin1 = nn.ReLU(inplace=True)
            self.nonlin2 = nn.ReLU(inplace=True)
            self.w1 = nn.Linear(size, size)
            self.w2 = nn.Linear(size, size)

        def forward(self, x):
            return x + self.nonlin2(self.w2(self.nonlin1(self.w1(x))))

    class DOFAEmbedding(nn.Module):
        """Patch embedding whose kernel is generated from the bands' wavelengths."""

        def __init__(self, dynamic_embed_dim: int, kernel_size: int, embed_dim: int):
            super().__init__()
            self.dynamic_embed_dim = dynamic_embed_dim
            self.kernel_size = kernel_size
            self.embed_dim = embed_dim
            self.weight_generator = TransformerWeightGenerator(
                dynamic_embed_dim, kernel_size * kernel_size * embed_dim, embed_dim
            )
            self.scaler = 0.01
            self.fclayer = FCResLayer(dynamic_embed_dim)
            for m in (*self.weight_generator.modules(), *self.fclayer.modules()):
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    m.bias.data.fill_(0.01)

        def forward(self, x, wavelengths):
            c = wavelengths.shape[0]
            if x.shape[1] != c:
                raise ValueError(f"DOFA got {x.shape[1]} bands but {c} wavelengths")
            waves = self.fclayer(wave_embedding(self.dynamic_embed_dim, wavelengths * 1000))
            weight, bias = self.weight_generator(waves)
            k = self.kernel_size
            weight = weight.view(c, k, k, self.embed_dim).permute(3, 0, 1, 2) * self.scaler
            bias = bias.view(self.embed_dim) * self.scaler
            # padding=1 as in the released model: patches start one pixel inside the chip
            out = F.conv2d(x, weight, bias=bias, stride=k, padding=1)
            return out.flatten(2).transpose(1, 2)

    class DOFAEncoder(nn.Module):
        """DOFA ViT returning the tokens after the last block."""

        def __init__(
            self,
            img_size: int = 224,
            patch_size: int = 16,
            embed_dim: int = 768,
            depth: int = 12,
            num_heads: int = 12,
            mlp_ratio: float = 4.0,
            dynamic_embed_dim: int = 128,
        ):
            super().__init__()
            self.patch_size = patch_size
            self.patch_embed = DOFAEmbedding(dynamic_embed_dim, patch_size, embed_dim)
            n = (img_size // patch_size) ** 2
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, embed_dim), requires_grad=False)
            self.blocks = nn.ModuleList(
                [
                    Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=partial(nn.LayerNorm, eps=1e-6))
                    for _ in range(depth)
                ]
            )
            self._init_pos(img_size // patch_size)

        @torch.no_grad()
        def _init_pos(self, side: int):
            # 2-D sin-cos table (MAE layout) for weight-less builds; checkpoints carry their own
            d = self.pos_embed.shape[-1]
            coords = torch.arange(side, dtype=torch.float32, device=self.pos_embed.device)
            gy, gx = torch.meshgrid(coords, coords, indexing="ij")
            table = torch.cat([wave_embedding(d // 2, gx), wave_embedding(d // 2, gy)], dim=1)
            self.pos_embed[0, 1:] = table

        def forward(self, x, wavelengths=None):
            if wavelengths is None:
                raise ValueError("DOFA needs the bands' wavelengths (micrometres): forward(x, wavelengths=...)")
            wavelengths = torch.as_tensor(wavelengths, dtype=torch.float32, device=x.device).reshape(-1)
            x = self.patch_embed(x, wavelengths)
            if x.shape[1] + 1 != self.pos_embed.shape[1]:
                raise ValueError(
                    f"DOFA was built for {self.pos_embed.shape[1] - 1} patches, got {x.shape[1]}: "
                    "use the chip size of the spec"
                )
            x = x + self.pos_embed[:, 1:]
            cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
            x = torch.cat([cls, x], dim=1)
            for blk in self.blocks:
                x = blk(x)
            return x

    return DOFAEncoder


def build_dofa(**kwargs: Any):
    """Build a DOFA encoder (``img_size``, ``patch_size``, ``embed_dim``, ``depth``, ``num_heads``...)."""
    return _classes()(**kwargs)


def remap_checkpoint(state_dict: dict) -> dict:
    """torchgeo / upstream DOFA state dict -> :func:`build_dofa` keys (heads and pretraining parts dropped)."""
    from .weights import drop_keys, strip_prefixes

    sd = strip_prefixes(state_dict, ("module.", "model.", "backbone.", "encoder."))
    return drop_keys(
        sd,
        prefixes=("head.", "fc_norm.", "norm.", "projector.", "decoder", "mask_token"),
    )


# ---------------------------------------------------------------------------------------
# Registered specs and band subsets
# ---------------------------------------------------------------------------------------
_CITATION = (
    "Xiong et al. 2024, Neural Plasticity-Inspired Multimodal Foundation Model for Earth Observation "
    "(DOFA), arXiv:2403.15356"
)
_TORCHGEO_REVISION = "b8db318b64a90b9e085ec04ba8851233c5893666"
_VARIANTS = {
    "dofa-base": (768, 12, 12, "dofa_base_patch16_224-a0275954.pth"),
    "dofa-large": (1024, 24, 16, "dofa_large_patch16_224-0ff904d3.pth"),
}


def _spec(name: str, dim: int, depth: int, heads: int, fname: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        bands=S2_BANDS,
        chip_size=224,
        stride=16,
        embedding_dim=dim,
        output="tokens",
        prefix_tokens=1,
        mean=S2_MEAN,
        std=S2_STD,
        builder="xeofm.models.dofa:build_dofa",
        builder_kwargs={"img_size": 224, "patch_size": 16, "embed_dim": dim, "depth": depth, "num_heads": heads},
        overlap=64,
        gsd=None,  # pretrained at 0.5-30 m
        aux=("wavelengths",),
        weights_file=fname,
        metadata={
            "remap": "xeofm.models.dofa:remap_checkpoint",
            "hf_repo": "torchgeo/dofa",
            "hf_file": fname,
            "hf_revision": _TORCHGEO_REVISION,
            "torch_hub_file": fname,
            "weights_url": f"https://hf.co/torchgeo/dofa/resolve/{_TORCHGEO_REVISION}/{fname}",
            "family": "dofa",
        },
        dtype="uint16",
        licence="CC-BY-4.0",
        citation=_CITATION,
        description=(
            f"DOFA ViT-{'B' if dim == 768 else 'L'}/16 (wavelength-conditioned patch embedding), here on "
            "Sentinel-2 B04,B03,B02,B05,B06,B07,B08,B11,B12 L1C DN with the upstream 8-bit statistics "
            "converted to DN; other bands via xeofm.models.dofa.for_bands"
        ),
    )


for _name, (_dim, _depth, _heads, _fname) in _VARIANTS.items():
    register(
        _spec(_name, _dim, _depth, _heads, _fname),
        weights_hint=(
            f"Get {_fname} (CC-BY-4.0, torchgeo's DOFA weights) from "
            f"https://hf.co/torchgeo/dofa/resolve/{_TORCHGEO_REVISION}/{_fname}; a torchgeo download leaves "
            "it in $TORCH_HOME/hub/checkpoints, where xeofm finds it offline."
        ),
    )


def for_bands(
    bands: Sequence[Band | str],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    base: str = "dofa-base",
    name: str | None = None,
) -> ModelSpec:
    """A DOFA spec for any bands with known centre wavelengths.

    Parameters
    ----------
    bands
        The bands, in the order of the cube's band coordinate or any order
        (the engine reorders); each needs a wavelength (µm).
    mean, std, scale, offset
        Normalisation ``((raw + offset) * scale - mean) / std`` for these bands.
        DOFA's statistics depend on the sensor; compute them from your data if
        the sensor is not one DOFA's authors published statistics for.
    base
        ``"dofa-base"`` or ``"dofa-large"`` (the weights to use).
    """
    from . import get_spec
    from ..bands import as_bands

    spec = get_spec(base)
    bands = as_bands(bands)
    return spec.replace(
        name=name or spec.name,
        bands=bands,
        mean=None if mean is None else tuple(mean),
        std=None if std is None else tuple(std),
        scale=scale,
        offset=offset,
        description=f"{spec.name} on bands {[b.id for b in bands]}",
    )
