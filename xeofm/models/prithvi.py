"""Prithvi-EO-2.0 (IBM / NASA): multi-temporal ViT encoders on six HLS bands.

The encoder is a ViT over a 3-D patch embedding (``Conv3d`` with kernel
``(1, p, p)``, one token per patch per frame) with a fixed 3-D sin-cos
positional embedding and a class token. The ``-tl`` variants add the
acquisition date (year, day of year) and the chip-centre latitude/longitude as
sin-cos encodings scaled by learned factors.

Module and parameter names follow the authors' ``PrithviViT`` (the ``encoder``
of ``PrithviMAE`` in ``prithvi_mae.py`` on the Hugging Face model pages and in
terratorch), so the released checkpoints (``Prithvi_EO_V2_300M.pt``...) load
after :func:`remap_checkpoint` drops the decoder and the ``encoder.`` prefix.

``forward(x, time=None, latlon=None)`` takes ``(B, 6, T, H, W)`` (or
``(B, 6, H, W)`` for one frame) and returns the final normalised tokens
``(B, 1 + T * (H/p) * (W/p), D)``, class token first; xeofm averages the patch
tokens over the ``T`` frames.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from ..bands import HLS
from ..spec import ModelSpec
from . import register

__all__ = ["build_prithvi", "remap_checkpoint", "sincos_1d", "sincos_3d", "MEAN", "STD"]

#: Prithvi-EO-2.0 normalisation of HLS surface reflectance x 10^4 (terratorch
#: ``PRITHVI_V2_MEAN``/``PRITHVI_V2_STD``; the Hugging Face ``config.json``).
MEAN = (1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0)
STD = (2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0)


# ---------------------------------------------------------------------------------------
# Sin-cos tables (torch, float64 then float32 like the reference's NumPy tables)
# ---------------------------------------------------------------------------------------
def sincos_1d(dim: int, pos: Any) -> Any:
    """``[sin(pos * w_k), cos(pos * w_k)]`` with ``w_k = 10000^(-2k/dim)``, ``k < dim/2``: ``(M, dim)``."""
    import torch

    if dim % 2:
        raise ValueError(f"sin-cos embedding dimension must be even, got {dim}")
    pos = torch.as_tensor(pos)
    omega = torch.arange(dim // 2, dtype=pos.dtype, device=pos.device) / (dim / 2.0)
    omega = 1.0 / 10000**omega
    out = pos.reshape(-1)[:, None] * omega[None, :]
    return torch.cat([torch.sin(out), torch.cos(out)], dim=1)


def sincos_3d(dim: int, grid: tuple[int, int, int], cls_token: bool = True) -> Any:
    """3-D table ``(1, [1 +] t*h*w, dim)``: channels 6/16 width, 6/16 height, 4/16 time; zeros for the class token."""
    import torch

    if dim % 16:
        raise ValueError(f"Prithvi's 3-D sin-cos embedding needs a dimension divisible by 16, got {dim}")
    t, h, w = grid
    f64 = dict(dtype=torch.float64)
    w_emb = sincos_1d(dim // 16 * 6, torch.arange(w, **f64))
    h_emb = sincos_1d(dim // 16 * 6, torch.arange(h, **f64))
    t_emb = sincos_1d(dim // 16 * 4, torch.arange(t, **f64))
    w_emb = w_emb.repeat(t * h, 1)  # token (ti, hi, wi) -> w row wi
    h_emb = h_emb.repeat_interleave(w, dim=0).repeat(t, 1)
    t_emb = t_emb.repeat_interleave(h * w, dim=0)
    table = torch.cat([w_emb, h_emb, t_emb], dim=1)
    if cls_token:
        table = torch.cat([torch.zeros(1, dim, **f64), table], dim=0)
    return table.float().unsqueeze(0)


# ---------------------------------------------------------------------------------------
# Modules (defined on first use: torch is imported only when a model is built)
# ---------------------------------------------------------------------------------------
@lru_cache(maxsize=None)
def _classes():
    import torch
    from torch import nn

    try:
        from timm.models.vision_transformer import Block
    except ImportError as exc:  # pragma: no cover
        raise ImportError("Prithvi needs timm: pip install 'xeofm[models]'") from exc

    class PatchEmbed(nn.Module):
        """``Conv3d`` patch embedding: ``(B, C, T, H, W)`` -> ``(B, T*h*w, D)`` in (t, h, w) order."""

        def __init__(self, in_chans: int, embed_dim: int, patch_size: tuple[int, int, int]):
            super().__init__()
            self.patch_size = patch_size
            self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

        def forward(self, x):
            return self.proj(x).flatten(2).transpose(1, 2)

    class TemporalEncoder(nn.Module):
        """Year (first half of the channels) and day of year (second half), sin-cos, times a scale."""

        def __init__(self, embed_dim: int, trainable_scale: bool):
            super().__init__()
            self.year_dim = embed_dim // 2
            self.doy_dim = embed_dim - self.year_dim
            if trainable_scale:
                self.scale = nn.Parameter(torch.full((1,), 0.1))
            else:
                self.register_buffer("scale", torch.ones(1))

        def forward(self, time, tokens_per_frame: int):
            b, t = time.shape[:2]
            year = sincos_1d(self.year_dim, time[:, :, 0].float()).reshape(b, t, -1)
            doy = sincos_1d(self.doy_dim, time[:, :, 1].float()).reshape(b, t, -1)
            emb = self.scale * torch.cat([year, doy], dim=-1)
            return torch.repeat_interleave(emb, tokens_per_frame, dim=1)

    class LocationEncoder(nn.Module):
        """Latitude (first half) and longitude (second half), sin-cos, times a scale."""

        def __init__(self, embed_dim: int, trainable_scale: bool):
            super().__init__()
            self.lat_dim = embed_dim // 2
            self.lon_dim = embed_dim - self.lat_dim
            if trainable_scale:
                self.scale = nn.Parameter(torch.full((1,), 0.1))
            else:
                self.register_buffer("scale", torch.ones(1))

        def forward(self, latlon):
            b = latlon.shape[0]
            lat = sincos_1d(self.lat_dim, latlon[:, 0].float()).reshape(b, 1, -1)
            lon = sincos_1d(self.lon_dim, latlon[:, 1].float()).reshape(b, 1, -1)
            return self.scale * torch.cat([lat, lon], dim=-1)

    class PrithviEncoder(nn.Module):
        """Prithvi-EO ViT encoder returning its final normalised tokens."""

        def __init__(
            self,
            img_size: int = 224,
            patch_size: int = 16,
            num_frames: int = 4,
            in_chans: int = 6,
            embed_dim: int = 1024,
            depth: int = 24,
            num_heads: int = 16,
            mlp_ratio: float = 4.0,
            coords_encoding: tuple[str, ...] = (),
            coords_scale_learn: bool = False,
        ):
            super().__init__()
            self.embed_dim = embed_dim
            self.num_frames = num_frames
            self.patch_size = (1, patch_size, patch_size)
            self.grid_size = (num_frames, img_size // patch_size, img_size // patch_size)
            self.patch_embed = PatchEmbed(in_chans, embed_dim, self.patch_size)
            self.temporal_encoding = "time" in coords_encoding
            self.location_encoding = "location" in coords_encoding
            if self.temporal_encoding:
                self.temporal_embed_enc = TemporalEncoder(embed_dim, coords_scale_learn)
            if self.location_encoding:
                self.location_embed_enc = LocationEncoder(embed_dim, coords_scale_learn)
            self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
            # fixed table: recomputed here, not read from checkpoints (they may be for another T)
            self.register_buffer("pos_embed", sincos_3d(embed_dim, self.grid_size), persistent=False)
            self.blocks = nn.ModuleList(
                [Block(embed_dim, num_heads, mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
            )
            self.norm = nn.LayerNorm(embed_dim)
            self._init_weights()

        def _init_weights(self):
            w = self.patch_embed.proj.weight.data
            nn.init.xavier_uniform_(w.view(w.shape[0], -1))
            nn.init.normal_(self.cls_token, std=0.02)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    if m.bias is not None:
                        nn.init.zeros_(m.bias)
                elif isinstance(m, nn.LayerNorm):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

        def positions(self, t: int, h: int, w: int):
            """Positional table for a ``t x h x w`` token grid, as the reference derives it.

            Another number of frames recomputes the table; another image size
            interpolates the spatial part bicubically (``align_corners=True``).
            """
            if (t, h, w) == tuple(self.grid_size):
                return self.pos_embed
            if t != self.grid_size[0]:
                grid = (t, *self.grid_size[1:])
                table = sincos_3d(self.embed_dim, grid).to(self.pos_embed.device)
            else:
                grid, table = self.grid_size, self.pos_embed
            if (h, w) == tuple(grid[1:]):
                return table
            cls, patch = table[:, :1], table[:, 1:]
            patch = patch.reshape(*grid, self.embed_dim).permute(0, 3, 1, 2)
            patch = nn.functional.interpolate(patch, size=(h, w), mode="bicubic", align_corners=True)
            patch = patch.permute(0, 2, 3, 1).reshape(1, -1, self.embed_dim)
            return torch.cat([cls, patch], dim=1)

        def forward(self, x, time=None, latlon=None):
            if x.ndim == 4:  # one frame
                x = x.unsqueeze(2)
            b, _, t, hh, ww = x.shape
            x = self.patch_embed(x)
            pos = self.positions(t, hh // self.patch_size[1], ww // self.patch_size[2])
            x = x + pos[:, 1:]
            if self.temporal_encoding and time is not None:
                if time.shape[1] != t:
                    raise ValueError(f"time has {time.shape[1]} frames but the input has {t}")
                x = x + self.temporal_embed_enc(time, x.shape[1] // t)
            if self.location_encoding and latlon is not None:
                x = x + self.location_embed_enc(latlon)
            cls = (self.cls_token + pos[:, :1]).expand(b, -1, -1)
            x = torch.cat([cls, x], dim=1)
            for blk in self.blocks:
                x = blk(x)
            return self.norm(x)

    return PrithviEncoder


def build_prithvi(**kwargs: Any):
    """Build a Prithvi-EO encoder (keyword arguments as ``PrithviViT``'s; see :data:`VARIANTS`)."""
    kwargs = dict(kwargs)
    if "coords_encoding" in kwargs:
        kwargs["coords_encoding"] = tuple(kwargs["coords_encoding"])
    return _classes()(**kwargs)


def remap_checkpoint(state_dict: dict) -> dict:
    """Authors' ``PrithviMAE`` checkpoint -> :func:`build_prithvi` keys.

    Drops the decoder (``decoder.*``, ``*_dec*``, ``mask_token``) and the stored
    ``pos_embed`` (a fixed table, recomputed), removes the ``encoder.`` /
    ``model.`` / ``backbone.`` / ``_timm_module.`` prefixes, and keeps
    everything else for the strict key check.
    """
    from .weights import drop_keys, strip_prefixes

    sd = {k.replace("_timm_module.", ""): v for k, v in state_dict.items()}
    sd = strip_prefixes(sd, ("module.", "model.", "backbone."))
    sd = drop_keys(sd, prefixes=("decoder.", "decoder_"), contains=("_dec.",), exact=("mask_token",))
    sd = strip_prefixes(sd, ("encoder.",))
    return drop_keys(sd, exact=("pos_embed",))


# ---------------------------------------------------------------------------------------
# Registered specs
# ---------------------------------------------------------------------------------------
_CITATION = (
    "Szwarcman et al. 2024, Prithvi-EO-2.0: A Versatile Multi-Temporal Foundation Model for Earth "
    "Observation Applications, arXiv:2412.02732"
)

#: name -> (embed_dim, depth, num_heads, patch, frames, TL, Hugging Face repo, file)
VARIANTS: dict[str, tuple[int, int, int, int, int, bool, str, str]] = {
    "prithvi-eo-2.0-300m": (1024, 24, 16, 16, 4, False, "Prithvi-EO-2.0-300M", "Prithvi_EO_V2_300M.pt"),
    "prithvi-eo-2.0-300m-tl": (1024, 24, 16, 16, 4, True, "Prithvi-EO-2.0-300M-TL", "Prithvi_EO_V2_300M_TL.pt"),
    "prithvi-eo-2.0-600m": (1280, 32, 16, 14, 4, False, "Prithvi-EO-2.0-600M", "Prithvi_EO_V2_600M.pt"),
    "prithvi-eo-2.0-600m-tl": (1280, 32, 16, 14, 4, True, "Prithvi-EO-2.0-600M-TL", "Prithvi_EO_V2_600M_TL.pt"),
    "prithvi-eo-2.0-100m-tl": (768, 12, 12, 16, 4, True, "Prithvi-EO-2.0-100M-TL", "Prithvi_EO_V2_100M_TL.pt"),
    "prithvi-eo-2.0-tiny-tl": (192, 12, 3, 16, 1, True, "Prithvi-EO-2.0-tiny-TL", "Prithvi_EO_V2_tiny_TL.pt"),
}


def _specs() -> list[tuple[ModelSpec, str]]:
    out = []
    for name, (dim, depth, heads, patch, frames, tl, repo, fname) in VARIANTS.items():
        hf_repo = f"ibm-nasa-geospatial/{repo}"
        kwargs: dict[str, Any] = dict(
            img_size=224, patch_size=patch, num_frames=frames, in_chans=6, embed_dim=dim, depth=depth,
            num_heads=heads,
        )
        if tl:
            kwargs.update(coords_encoding=("time", "location"), coords_scale_learn=True)
        what = "with date and location encoders" if tl else "without date/location inputs"
        spec = ModelSpec(
            name=name,
            bands=HLS,
            chip_size=224,
            stride=patch,
            embedding_dim=dim,
            output="tokens",
            prefix_tokens=1,
            mean=MEAN,
            std=STD,
            builder="xeofm.models.prithvi:build_prithvi",
            builder_kwargs=kwargs,
            overlap=4 * patch,
            gsd=30.0,
            time_frames=frames,
            aux=("time", "latlon") if tl else (),
            weights_file=fname,
            metadata={
                "remap": "xeofm.models.prithvi:remap_checkpoint",
                "hf_repo": hf_repo,
                "hf_file": fname,
                "family": "prithvi",
            },
            dtype="int16",
            licence="Apache-2.0",
            citation=_CITATION,
            description=(
                f"Prithvi-EO-2.0 ViT ({dim}-d, depth {depth}, patch {patch}) on {frames} HLS frame(s), "
                f"{what}; HLS L30/S30 surface reflectance x 10^4, z-scored"
            ),
        )
        hint = (
            f"Get {fname} (Apache-2.0) from https://huggingface.co/{hf_repo}; "
            f"`hf download {hf_repo} {fname}` (huggingface_hub) puts it in the Hugging Face cache, where "
            "xeofm finds it offline."
        )
        out.append((spec, hint))
    return out


for _spec, _hint in _specs():
    register(_spec, weights_hint=_hint)
