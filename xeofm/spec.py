"""Model specifications: everything the engine needs to know about an encoder.

A :class:`ModelSpec` is small, immutable and picklable. It travels in dask
graphs instead of the model itself; each worker process builds the model from
the spec once and caches it (see :mod:`xeofm.runtime`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Sequence

from .bands import Band, as_bands
from .errors import SpecError

__all__ = ["ModelSpec"]

OutputKind = Literal["patch", "tokens", "vector"]


@dataclass(frozen=True)
class ModelSpec:
    """Description of an encoder and of the input it expects.

    Parameters
    ----------
    name
        Model id (registered name or a user label).
    bands
        Bands in the order the model takes them.
    chip_size
        Square input size in pixels.
    stride
        Output stride in pixels: the side of the input footprint of one output
        cell (patch size for ViTs, total downsampling for CNN feature maps).
    embedding_dim
        Channels of the model output.
    output
        What the module's ``forward`` returns: ``"patch"`` a feature map
        ``(B, D, H/stride, W/stride)``; ``"tokens"`` a token sequence
        ``(B, prefix + N, D)``; ``"vector"`` one pooled vector ``(B, D)``.
    mean, std
        Per-band normalisation applied after ``offset`` and ``scale``:
        ``x = ((raw + offset) * scale - mean) / std``.
    scale, offset
        Radiometric scaling of raw values (e.g. ``scale=1e-4`` for Sentinel-2
        reflectance stored as integers, ``offset=-1000`` for L2A since
        processing baseline 04.00).
    prefix_tokens
        Number of leading non-spatial tokens (class, register) for ``"tokens"``.
    builder
        ``"package.module:function"`` that returns the ``torch.nn.Module``;
        called with ``builder_kwargs`` (as a dict). Importable builders make a
        spec runnable in any process (dask workers included).
    builder_kwargs
        Keyword arguments for the builder, as a tuple of ``(key, value)`` pairs.
    weights
        Path to a weight file (safetensors or torch state dict), or ``None``.
    overlap
        Default chip overlap in pixels for ``"patch"``/``"pixel"`` outputs.
    gsd
        Ground sampling distance the model was trained at (metres).
    time_frames
        Number of time steps the model takes at once. With 1 the model is mapped
        over time; with ``T > 1`` the module receives ``(B, C, T, H, W)`` and the
        engine slides a window of ``T`` steps along the time axis (output time =
        last step of each window). Token outputs are then ``(B, prefix + T*N, D)``
        and are averaged over the ``T`` frames.
    aux
        Auxiliary inputs passed to ``forward`` as keyword arguments:
        ``"wavelengths"`` (``(C,)`` centre wavelengths in micrometres, from
        ``bands``), ``"gsd"`` (float, the cube's pixel size), ``"time"``
        (``(B, T, 2)`` year and day of year of each frame) and ``"latlon"``
        (``(B, 2)`` latitude and longitude of each chip centre, degrees).
    weights_file, weights_sha256
        Expected weight file name (for messages) and its SHA-256 checksum,
        verified when a file is loaded.
    metadata
        Extra ``(key, value)`` pairs (e.g. text tower, STAC MLM fields).
    dtype
        Expected input dtype of the raw data (informational).
    licence, citation, description
        Provenance shown to users and written to output attributes.
    """

    name: str
    bands: tuple[Band, ...]
    chip_size: int
    stride: int
    embedding_dim: int
    output: OutputKind = "patch"
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scale: float = 1.0
    offset: float = 0.0
    prefix_tokens: int = 0
    builder: str | None = None
    builder_kwargs: tuple[tuple[str, Any], ...] = ()
    weights: str | None = None
    overlap: int | None = None
    gsd: float | None = None
    time_frames: int = 1
    aux: tuple[str, ...] = ()
    weights_file: str | None = None
    weights_sha256: str | None = None
    metadata: tuple[tuple[str, Any], ...] = ()
    dtype: str | None = None
    licence: str | None = None
    citation: str | None = None
    description: str | None = None
    _local_key: str | None = field(default=None, repr=False, compare=True)

    def __post_init__(self) -> None:
        object.__setattr__(self, "bands", as_bands(self.bands))
        if isinstance(self.builder_kwargs, dict):
            object.__setattr__(self, "builder_kwargs", tuple(sorted(self.builder_kwargs.items())))
        if isinstance(self.metadata, dict):
            object.__setattr__(self, "metadata", tuple(sorted(self.metadata.items())))
        object.__setattr__(self, "aux", tuple(self.aux))
        unknown = set(self.aux) - {"wavelengths", "gsd", "time", "latlon"}
        if unknown:
            raise SpecError(
                f"spec {self.name!r}: unknown auxiliary inputs {sorted(unknown)}; "
                "supported: 'wavelengths', 'gsd', 'time', 'latlon'"
            )
        if "wavelengths" in self.aux and any(b.wavelength is None for b in self.bands):
            missing = [b.id for b in self.bands if b.wavelength is None]
            raise SpecError(f"spec {self.name!r} takes wavelengths but bands {missing} have none")
        if self.time_frames < 1:
            raise SpecError(f"spec {self.name!r}: time_frames must be >= 1")
        for attr in ("mean", "std"):
            v = getattr(self, attr)
            if v is not None:
                v = tuple(float(x) for x in v)
                if len(v) != len(self.bands):
                    raise SpecError(
                        f"spec {self.name!r}: {attr} has {len(v)} values but the spec lists "
                        f"{len(self.bands)} bands; give one value per band"
                    )
                object.__setattr__(self, attr, v)
        if self.std is not None and any(s == 0 for s in self.std):
            raise SpecError(f"spec {self.name!r}: std contains zeros")
        if self.output not in ("patch", "tokens", "vector"):
            raise SpecError(f"spec {self.name!r}: output must be 'patch', 'tokens' or 'vector', got {self.output!r}")
        if self.chip_size <= 0 or self.stride <= 0 or self.embedding_dim <= 0:
            raise SpecError(f"spec {self.name!r}: chip_size, stride and embedding_dim must be positive")
        if self.output != "vector" and self.chip_size % self.stride:
            raise SpecError(
                f"spec {self.name!r}: chip_size {self.chip_size} is not a multiple of stride {self.stride}"
            )
        if self.overlap is not None and not (0 <= self.overlap < self.chip_size):
            raise SpecError(f"spec {self.name!r}: overlap must be in [0, chip_size)")
        if self.builder is None and self._local_key is None:
            raise SpecError(
                f"spec {self.name!r} has no builder: give builder='package.module:function' "
                "or use xeofm.wrap(module, ...)"
            )

    # -- derived -------------------------------------------------------------
    @property
    def band_ids(self) -> list[str]:
        """Band ids in model order."""
        return [b.id for b in self.bands]

    @property
    def tokens_per_side(self) -> int:
        """Output cells along one side of a chip."""
        return self.chip_size // self.stride

    def default_overlap(self) -> int:
        """Chip overlap used when the caller gives none: the spec's, else a quarter chip."""
        if self.overlap is not None:
            return self.overlap
        q = self.chip_size // 4
        return (q // self.stride) * self.stride

    def replace(self, **changes: Any) -> "ModelSpec":
        """Return a copy with some fields changed."""
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (used for hashing and provenance attributes)."""
        d = dataclasses.asdict(self)
        d.pop("_local_key", None)
        d["bands"] = [dataclasses.asdict(b) for b in self.bands]
        d["builder_kwargs"] = dict(self.builder_kwargs)
        d["metadata"] = dict(self.metadata)
        d["aux"] = list(self.aux)
        return d

    def to_stac(self, **kwargs: Any):
        """This spec as a ``pystac.Item`` with the STAC MLM extension; see :func:`xeofm.models.mlm.spec_to_stac`."""
        from .models.mlm import spec_to_stac

        return spec_to_stac(self, **kwargs)

    @classmethod
    def from_stac(cls, item: Any) -> "ModelSpec":
        """A spec from a STAC MLM Item (object, dict or JSON path); see :func:`xeofm.models.mlm.spec_from_stac`."""
        from .models.mlm import spec_from_stac

        return spec_from_stac(item)

    @property
    def hash(self) -> str:
        """Stable short hash of everything that changes the model's numbers."""
        d = self.to_dict()
        for k in ("licence", "citation", "description"):
            d.pop(k, None)
        if self._local_key is not None:
            d["_local_key"] = self._local_key
        blob = json.dumps(d, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def check_output_shape(self, shape: Sequence[int], batch: int) -> None:
        """Raise :class:`SpecError` if a forward output contradicts the spec."""
        t = self.tokens_per_side
        d = self.embedding_dim
        if self.output == "patch":
            expected = (batch, d, t, t)
        elif self.output == "tokens":
            expected = (batch, self.prefix_tokens + self.time_frames * t * t, d)
        else:
            expected = (batch, d)
        if tuple(shape) != expected:
            raise SpecError(
                f"model {self.name!r} returned shape {tuple(shape)} for a batch of {batch} chips of "
                f"{self.chip_size}px, but its spec (output={self.output!r}, embedding_dim={d}, "
                f"stride={self.stride}, prefix_tokens={self.prefix_tokens}) implies {expected}. "
                "Fix the spec (stride/embedding_dim/output) or the module."
            )
