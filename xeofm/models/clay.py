"""Clay v1.5 (Clay Foundation): a wavelength-aware MAE ViT for any sensor, with GSD, date and place.

The encoder is the authors' ``Encoder`` of ``claymodel`` 1.5 (``src/model.py``):

* a DOFA-style *dynamic embedding*: each band's centre wavelength (µm, as in the
  authors' ``configs/metadata.yaml``) is sin-cos encoded (128 channels), passed
  through a residual MLP and a one-layer transformer with 128 latent tokens, and
  turned into that band's slice of an 8x8 patch-embedding kernel (scaled by 0.02)
  plus a bias;
* a fixed 2-D sin-cos position code over ``D - 8`` channels whose frequencies are
  multiplied by the GSD (metres), and 8 metadata channels: the date
  ``(sin, cos)`` of the ISO week (``week * 2 pi / 52``) and of the hour
  (``hour * 2 pi / 24``), and ``(sin, cos)`` of latitude and of longitude;
* a class token, then a pre-norm transformer (``lucidrains`` ``vit-pytorch``
  layout: bias-free ``to_qkv``/``to_out``, ``FeedForward`` ``net``) and a final
  LayerNorm.

Module and parameter names are the authors', so the encoder part of
``clay-v1.5.ckpt`` (a Lightning checkpoint: ``state_dict`` with
``model.encoder.*``, plus the teacher, the decoder and the projection head)
loads after :func:`remap_checkpoint`.

``forward(x, wavelengths, gsd=None, time=None, latlon=None)`` takes the
engine's auxiliary inputs (``time`` ``(B, T, 2)`` year and day of year,
``latlon`` ``(B, 2)`` degrees) and converts them with the formulas of the
authors' embedding tutorials; ``(B, 4)`` tensors are taken as already
encoded. Missing time or place is encoded as zeros, the authors' "unknown"
convention (``claymodel.api.embed``). It returns the normalised tokens
``(B, 1 + (H/8)(W/8), D)``, class token first, with no masking (the authors'
inference setting ``mask_ratio=0``, ``shuffle=False``).
"""

from __future__ import annotations

import datetime as _dt
import math
from functools import lru_cache
from typing import Any, Sequence

from ..bands import SENTINEL2, Band
from ..spec import ModelSpec
from . import register

__all__ = [
    "build_clay",
    "remap_checkpoint",
    "for_bands",
    "encode_time",
    "encode_latlon",
    "S2_BANDS",
    "S2_MEAN",
    "S2_STD",
    "S2_WAVELENGTHS",
]

# ---------------------------------------------------------------------------------------
# Sentinel-2 L2A as in the authors' configs/metadata.yaml ("sentinel-2-l2a")
# ---------------------------------------------------------------------------------------
_S2 = {b.id: b for b in SENTINEL2}
_S2_IDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
#: Clay's centre wavelengths (µm) for blue, green, red, rededge1-3, nir, nir08, swir16, swir22.
S2_WAVELENGTHS = (0.493, 0.56, 0.665, 0.704, 0.74, 0.783, 0.842, 0.865, 1.61, 2.19)
#: The ten bands in Clay's order, carrying Clay's wavelengths (they differ slightly from
#: xeofm's band table, e.g. B02 0.493 vs 0.490 µm; the model must get the values it was trained with).
S2_BANDS: tuple[Band, ...] = tuple(
    Band(_S2[i].id, _S2[i].common_name, w, _S2[i].aliases) for i, w in zip(_S2_IDS, S2_WAVELENGTHS)
)
#: Clay's z-score statistics for Sentinel-2 L2A surface reflectance x 10^4.
S2_MEAN = (1105.0, 1355.0, 1552.0, 1887.0, 2422.0, 2630.0, 2743.0, 2785.0, 2388.0, 1835.0)
S2_STD = (1809.0, 1757.0, 1888.0, 1870.0, 1732.0, 1697.0, 1742.0, 1648.0, 1470.0, 1379.0)
_S2_GSD = 10.0


# ---------------------------------------------------------------------------------------
# Date and place codes (the authors' tutorials: normalize_timestamp / normalize_latlon)
# ---------------------------------------------------------------------------------------
def encode_time(year: int, day_of_year: int, hour: float = 0.0) -> tuple[float, float, float, float]:
    """``(sin w, cos w, sin h, cos h)`` with ``w = ISO week * 2 pi / 52`` and ``h = hour * 2 pi / 24``."""
    date = _dt.date(int(year), 1, 1) + _dt.timedelta(days=int(day_of_year) - 1)
    week = date.isocalendar()[1] * 2 * math.pi / 52
    h = hour * 2 * math.pi / 24
    return (math.sin(week), math.cos(week), math.sin(h), math.cos(h))


def encode_latlon(lat: float, lon: float) -> tuple[float, float, float, float]:
    """``(sin lat, cos lat, sin lon, cos lon)``, angles in degrees."""
    la, lo = lat * math.pi / 180, lon * math.pi / 180
    return (math.sin(la), math.cos(la), math.sin(lo), math.cos(lo))


# ---------------------------------------------------------------------------------------
# Modules (defined on first use: torch is imported only when a model is built)
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _classes():
    import torch
    import torch.nn.functional as F
    from torch import nn

    def sincos_1d(values, dim: int, temperature: float = 10000.0):
        """Clay's ``posemb_sincos_1d``: frequencies ``temperature^-(k / (dim/2 - 1))``."""
        omega = torch.arange(dim // 2, device=values.device) / (dim // 2 - 1)
        omega = 1.0 / (temperature**omega)
        scaled = values[:, None] * omega[None, :]
        return torch.cat((scaled.sin(), scaled.cos()), dim=1).to(torch.float32)

    def sincos_2d_gsd(side: int, dim: int, gsd, device, temperature: float = 10000.0):
        """Clay's ``posemb_sincos_2d_with_gsd`` on a ``side x side`` grid: ``(side^2, dim)``.

        Frequencies ``temperature^-(2 (k / (dim/4 - 1)) / dim) * gsd``, channels
        ``[sin x, cos x, sin y, cos y]`` (the reference's formula, kept as written).
        """
        if dim % 4:
            raise ValueError(f"Clay's position code needs dim - 8 divisible by 4, got {dim}")
        y, x = torch.meshgrid(torch.arange(side, device=device), torch.arange(side, device=device), indexing="ij")
        omega = torch.arange(dim // 4, device=device) / (dim // 4 - 1)
        omega = 1.0 / (temperature ** (2 * omega / dim)) * gsd
        y = y.flatten()[:, None] * omega[None, :]
        x = x.flatten()[:, None] * omega[None, :]
        return torch.cat((x.sin(), x.cos(), y.sin(), y.cos()), dim=1).to(torch.float32)

    class FCBlock(nn.Module):
        def __init__(self, size: int):
            super().__init__()
            self.l1 = nn.Linear(size, size)
            self.l2 = nn.Linear(size, size)

        def forward(self, x):
            return x + F.gelu(self.l2(F.gelu(self.l1(x))))

    class WavesTransformer(nn.Module):
        """Latent weight tokens + wavelength tokens + bias token -> kernel slices and a bias."""

        def __init__(self, wave_dim: int, output_dim: int, num_latent_tokens: int, embed_dim: int,
                     num_heads: int = 4, num_layers: int = 1):
            super().__init__()
            self.num_latent_tokens = num_latent_tokens
            layer = nn.TransformerEncoderLayer(
                d_model=wave_dim, nhead=num_heads, activation="gelu", dropout=0, norm_first=False, batch_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, num_layers, enable_nested_tensor=False)
            self.fc_weight = nn.Linear(wave_dim, output_dim)
            self.fc_bias = nn.Linear(wave_dim, embed_dim)
            self.weight_tokens = nn.Parameter(torch.randn(num_latent_tokens, wave_dim) * 0.02)
            self.bias_token = nn.Parameter(torch.randn(1, wave_dim) * 0.02)

        def forward(self, waves):
            x = torch.cat([self.weight_tokens, waves, self.bias_token], dim=0)
            out = self.encoder(x)
            n = self.num_latent_tokens
            return self.fc_weight(out[n:-1] + x[n:-1]), self.fc_bias(out[-1])

    class DynamicEmbedding(nn.Module):
        """Patch embedding whose kernel ``(D, C, p, p)`` is generated from the C wavelengths."""

        def __init__(self, wave_dim: int, num_latent_tokens: int, patch_size: int, embed_dim: int):
            super().__init__()
            self.wave_dim = wave_dim
            self.patch_size = patch_size
            self.embed_dim = embed_dim
            self.weight_generator = WavesTransformer(wave_dim, patch_size**2 * embed_dim, num_latent_tokens, embed_dim)
            self.fclayer = FCBlock(wave_dim)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.constant_(m.bias, 0)

        def forward(self, x, waves):
            w = self.fclayer(sincos_1d(waves, self.wave_dim).to(x.device))
            weight, bias = self.weight_generator(w)
            p, c = self.patch_size, waves.shape[0]
            # rows "(cout k1 k2)" per band -> kernel (cout, cin, k1, k2)
            kernel = weight.reshape(c, self.embed_dim, p, p).transpose(0, 1)
            out = F.conv2d(x, kernel * 0.02, bias=bias, stride=p)
            return out.flatten(2).transpose(1, 2)

    class Attention(nn.Module):
        def __init__(self, dim: int, heads: int, dim_head: int):
            super().__init__()
            inner = dim_head * heads
            self.heads = heads
            self.norm = nn.LayerNorm(dim)
            self.to_qkv = nn.Linear(dim, inner * 3, bias=False)
            self.to_out = nn.Linear(inner, dim, bias=False)

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = (
                t.reshape(b, n, self.heads, -1).transpose(1, 2) for t in self.to_qkv(self.norm(x)).chunk(3, dim=-1)
            )
            x = F.scaled_dot_product_attention(q, k, v, dropout_p=0.0)
            return self.to_out(x.transpose(1, 2).reshape(b, n, -1))

    class FeedForward(nn.Module):
        def __init__(self, dim: int, hidden: int):
            super().__init__()
            self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

        def forward(self, x):
            return self.net(x)

    class Transformer(nn.Module):
        def __init__(self, dim: int, depth: int, heads: int, dim_head: int, mlp_dim: int):
            super().__init__()
            self.norm = nn.LayerNorm(dim)
            self.layers = nn.ModuleList(
                [nn.ModuleList([Attention(dim, heads, dim_head), FeedForward(dim, mlp_dim)]) for _ in range(depth)]
            )

        def forward(self, x):
            for attn, ff in self.layers:
                x = attn(x) + x
                x = ff(x) + x
            return self.norm(x)

    class ClayEncoder(nn.Module):
        """Clay v1.5 encoder (the authors' ``Encoder`` without masking) returning its normalised tokens."""

        def __init__(self, patch_size: int = 8, dim: int = 1024, depth: int = 24, heads: int = 16,
                     dim_head: int = 64, mlp_ratio: float = 4.0, gsd: float = _S2_GSD, hour: float = 0.0):
            super().__init__()
            if dim <= 8 or (dim - 8) % 4:
                raise ValueError(f"Clay needs dim - 8 divisible by 4 (8 metadata channels), got dim={dim}")
            self.patch_size = patch_size
            self.dim = dim
            self.default_gsd = float(gsd)
            self.hour = float(hour)
            self.cls_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02)
            self.patch_embedding = DynamicEmbedding(128, 128, patch_size, dim)
            self.transformer = Transformer(dim, depth, heads, dim_head, int(dim * mlp_ratio))

        # -- auxiliary inputs -> the authors' (B, 4) codes ----------------------------------
        def _time_code(self, time, b: int, device):
            if time is None:
                return torch.zeros(b, 4, device=device)
            time = torch.as_tensor(time, device=device)
            if time.shape[-1] == 4:  # already Clay's (sin/cos week, sin/cos hour)
                return time.reshape(b, 4).to(torch.float32)
            if time.ndim == 3:  # engine: (B, T, 2); T = 1 for this model
                if time.shape[1] != 1:
                    raise ValueError(f"Clay takes one date per chip, got {time.shape[1]}")
                time = time[:, 0]
            if time.shape[-1] == 3:  # engine with "time_hour": (year, day of year, hour of day)
                ydh = time.reshape(b, 3).detach().cpu().double().tolist()
                # Clay's normalize_timestamp uses the integer hour of the acquisition time
                codes = [encode_time(round(y), round(d), math.floor(h)) for y, d, h in ydh]
                return torch.tensor(codes, dtype=torch.float32, device=device)
            yd = time.reshape(b, 2).detach().cpu().tolist()
            codes = [encode_time(round(y), round(d), self.hour) for y, d in yd]
            return torch.tensor(codes, dtype=torch.float32, device=device)

        def _place_code(self, latlon, b: int, device):
            if latlon is None:
                return torch.zeros(b, 4, device=device)
            latlon = torch.as_tensor(latlon, device=device)
            if latlon.shape[-1] == 4:  # already Clay's (sin/cos lat, sin/cos lon)
                return latlon.reshape(b, 4).to(torch.float32)
            ll = latlon.reshape(b, 2).detach().cpu().double().tolist()
            codes = [encode_latlon(la, lo) for la, lo in ll]
            return torch.tensor(codes, dtype=torch.float32, device=device)

        def forward(self, x, wavelengths=None, gsd=None, time=None, latlon=None):
            if wavelengths is None:
                raise ValueError("Clay needs the bands' centre wavelengths (µm): forward(x, wavelengths=...)")
            waves = torch.as_tensor(wavelengths, dtype=torch.float32, device=x.device).reshape(-1)
            b, c, h, w = x.shape
            if c != waves.shape[0]:
                raise ValueError(f"Clay got {c} bands but {waves.shape[0]} wavelengths")
            if h != w or h % self.patch_size:
                raise ValueError(f"Clay takes square chips whose side is a multiple of {self.patch_size}, got {h}x{w}")
            gsd = self.default_gsd if gsd is None else gsd
            gsd = torch.as_tensor(gsd, dtype=torch.float32, device=x.device)
            patches = self.patch_embedding(x, waves)  # (B, L, D)
            pos = sincos_2d_gsd(h // self.patch_size, self.dim - 8, gsd, x.device)  # (L, D - 8)
            meta = torch.cat((self._time_code(time, b, x.device), self._place_code(latlon, b, x.device)), dim=1)
            enc = torch.cat((pos.expand(b, -1, -1), meta[:, None, :].expand(-1, patches.shape[1], -1)), dim=-1)
            patches = patches + enc.to(patches.dtype)
            tokens = torch.cat((self.cls_token.expand(b, -1, -1).to(patches.dtype), patches), dim=1)
            return self.transformer(tokens)

    return ClayEncoder


def build_clay(**kwargs: Any):
    """Build a Clay encoder (``patch_size``, ``dim``, ``depth``, ``heads``, ``dim_head``, ``mlp_ratio``;
    ``gsd``: the GSD used when none is passed; ``hour``: the hour of day encoded for dates without one)."""
    return _classes()(**kwargs)


def remap_checkpoint(state_dict: dict) -> dict:
    """``clay-v1.5.ckpt``'s ``state_dict`` -> :func:`build_clay` keys.

    Keeps the ``model.encoder.*`` entries (the teacher, decoder and projection
    head are dropped) and strips the prefix. A plain encoder state dict (keys
    already without it, or with ``encoder.``) passes through.
    """
    from .weights import strip_prefixes

    sd = strip_prefixes(state_dict, ("module.",))
    for prefix in ("model.encoder.", "encoder."):
        if any(k.startswith(prefix) for k in sd):
            return {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    return dict(sd)


# ---------------------------------------------------------------------------------------
# Registered spec and band subsets
# ---------------------------------------------------------------------------------------
_CITATION = (
    "Clay Foundation Model v1.5 (Clay Foundation, 2024-2025), https://github.com/Clay-foundation/model; "
    "weights https://huggingface.co/made-with-clay/Clay"
)
_HF_REPO = "made-with-clay/Clay"
_HF_FILE = "v1.5/clay-v1.5.ckpt"
_FNAME = "clay-v1.5.ckpt"

CLAY_V15 = ModelSpec(
    name="clay-v1.5",
    bands=S2_BANDS,
    chip_size=256,
    stride=8,
    embedding_dim=1024,
    output="tokens",
    prefix_tokens=1,
    mean=S2_MEAN,
    std=S2_STD,
    builder="xeofm.models.clay:build_clay",
    builder_kwargs={"patch_size": 8, "dim": 1024, "depth": 24, "heads": 16, "dim_head": 64, "mlp_ratio": 4.0,
                    "gsd": _S2_GSD},
    overlap=64,
    gsd=_S2_GSD,
    aux=("wavelengths", "gsd", "time", "latlon"),
    weights_file=_FNAME,
    metadata={
        "remap": "xeofm.models.clay:remap_checkpoint",
        "hf_repo": _HF_REPO,
        "hf_file": _HF_FILE,
        "weights_url": f"https://huggingface.co/{_HF_REPO}/resolve/main/{_HF_FILE}",
        "family": "clay",
        "time_hour": True,  # the engine passes the acquisition hour with the date
    },
    dtype="uint16",
    licence="Apache-2.0",
    citation=_CITATION,
    description=(
        "Clay v1.5 encoder (MAE ViT-L/8, 1024-d, depth 24, wavelength-conditioned patch embedding, GSD-scaled "
        "positions, ISO-week and lat/lon codes) on Sentinel-2 L2A reflectance x 10^4, 10 bands, Clay's z-score; "
        "other bands via xeofm.models.clay.for_bands"
    ),
)

register(
    CLAY_V15,
    weights_hint=(
        f"Get {_FNAME} (Apache-2.0, a Lightning checkpoint of the whole pretraining model) from "
        f"https://huggingface.co/{_HF_REPO}/resolve/main/{_HF_FILE}; `hf download {_HF_REPO} {_HF_FILE}` puts it "
        "in the Hugging Face cache, where xeofm finds it offline (or set $XEOFM_WEIGHTS_DIR)."
    ),
)


def for_bands(
    bands: Sequence[Band | str],
    *,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    gsd: float | None = None,
    name: str | None = None,
) -> ModelSpec:
    """A Clay v1.5 spec for any bands with known centre wavelengths.

    Parameters
    ----------
    bands
        Band objects (their ``wavelength``, µm, is used) or names. Names of the
        ten Sentinel-2 L2A bands Clay was trained on (``"B02"``, ``"blue"``,
        ``"nir08"``...) get Clay's wavelengths and, when ``mean``/``std`` are
        not given and all bands are among them, Clay's statistics.
    mean, std, scale, offset
        Normalisation ``((raw + offset) * scale - mean) / std`` for these bands.
    gsd
        Training GSD recorded in the spec (the model itself gets the cube's pixel size).
    """
    from ..bands import as_bands, normalize_name

    base = CLAY_V15
    by_name: dict[str, int] = {}
    for i, b in enumerate(S2_BANDS):
        by_name[normalize_name(b.id)] = i
        by_name.setdefault(normalize_name(b.common_name), i)
    picked: list[Band] = []
    idx: list[int | None] = []
    for b in bands:
        i = None if isinstance(b, Band) else by_name.get(normalize_name(b))
        idx.append(i)
        picked.append(S2_BANDS[i] if i is not None else as_bands([b])[0])
    if mean is None and std is None and all(i is not None for i in idx):
        mean = [S2_MEAN[i] for i in idx]  # type: ignore[index]
        std = [S2_STD[i] for i in idx]  # type: ignore[index]
    return base.replace(
        name=name or base.name,
        bands=tuple(picked),
        mean=None if mean is None else tuple(mean),
        std=None if std is None else tuple(std),
        scale=scale,
        offset=offset,
        gsd=base.gsd if gsd is None else gsd,
        description=f"{base.name} on bands {[b.id for b in picked]}",
    )
