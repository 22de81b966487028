"""The global chip grid and block layout.

Chips are anchored at the cube's origin (its first row and column), never at
dask chunk edges. Along one axis of ``n`` pixels, with chip size ``C``, chip
step ``S = C - overlap`` and output cell size ``u`` (the model stride, or the
chip itself for ``output="chip"``):

* the axis is padded (virtually, with invalid pixels) at its far end to
  ``n_pad = max(ceil(n / u) * u, C)``, so that every output cell is whole and
  a cube smaller than one chip still gets one chip;
* chips start at ``0, S, 2S, ...`` and one last chip is shifted inwards to end
  exactly at ``n_pad``, so the remainder at the right/bottom edge is covered
  without reading past the padded extent.

Every origin is a multiple of ``u``, so output cells of all chips line up on
one global grid. A dask block sees the chips touching its cells through a halo
of ``C - u`` pixels (``C`` for pixel output, which also needs one cell of
context for interpolation), so each output cell is computed from exactly the
same chips whatever the chunking.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

__all__ = ["AxisGrid", "blend_weights", "split_blocks"]


@dataclass(frozen=True)
class AxisGrid:
    """Chip layout along one spatial axis.

    Parameters
    ----------
    n
        Number of pixels of the cube along the axis.
    chip
        Chip size in pixels.
    step
        Distance between consecutive chip origins (``chip - overlap``).
    unit
        Output cell size in pixels; ``chip`` and ``step`` are multiples of it.
    """

    n: int
    chip: int
    step: int
    unit: int

    def __post_init__(self) -> None:
        if self.step <= 0 or self.step > self.chip:
            raise ValueError(f"chip step must be in (0, chip]; got step={self.step}, chip={self.chip}")
        if self.chip % self.unit or self.step % self.unit:
            raise ValueError("chip and step must be multiples of the output cell size")

    @property
    def n_pad(self) -> int:
        """Padded length: whole output cells, at least one chip."""
        return max(math.ceil(self.n / self.unit) * self.unit, self.chip)

    @property
    def n_cells(self) -> int:
        """Output cells covering the real (unpadded) axis."""
        return math.ceil(self.n / self.unit)

    @property
    def n_regular(self) -> int:
        """Number of chips on the regular lattice ``k * step``."""
        return (self.n_pad - self.chip) // self.step + 1

    @property
    def last_origin(self) -> int:
        """Origin of the last chip (shifted inwards to end at ``n_pad``)."""
        return self.n_pad - self.chip

    @property
    def n_chips(self) -> int:
        """Total chips along the axis."""
        return self.n_regular + (1 if (self.n_regular - 1) * self.step != self.last_origin else 0)

    def origins(self, lo: int = 0, hi: int | None = None) -> list[int]:
        """Origins of the chips that touch the pixel range ``[lo, hi)``, ascending."""
        hi = self.n_pad if hi is None else hi
        k0 = max(0, (lo - self.chip) // self.step + 1)
        k1 = min(self.n_regular - 1, (hi - 1) // self.step)
        out = [k * self.step for k in range(k0, k1 + 1)]
        last = self.last_origin
        if (self.n_regular - 1) * self.step != last and last < hi and last + self.chip > lo:
            out.append(last)
        return out


def _ramp(t: np.ndarray) -> np.ndarray:
    return np.sin(0.5 * np.pi * np.clip(t, 0.0, 1.0)) ** 2


@lru_cache(maxsize=256)
def _weights(cells: int, overlap_cells: int, left: bool, right: bool) -> np.ndarray:
    w = np.ones(cells, dtype=np.float64)
    if overlap_cells <= 0:
        return w.astype(np.float32)
    delta = overlap_cells // 4
    width = max(overlap_cells - 2 * delta, 1)
    j = np.arange(cells, dtype=np.float64)
    if left:
        w *= _ramp((j - delta + 0.5) / width)
    if right:
        w *= _ramp((cells - 1 - j - delta + 0.5) / width)
    return w.astype(np.float32)


def blend_weights(grid: AxisGrid, origin: int) -> np.ndarray:
    """1-D blending weights over the output cells of the chip at ``origin``.

    The ``delta = overlap / 4`` outermost cells on an interior side get zero
    weight (centre crop), the rest of the overlap a raised-sine ramp; on
    regular overlaps the ramps of neighbouring chips sum to one. Sides that
    lie on the scene edge get no ramp, so edge cells keep full weight.
    """
    cells = grid.chip // grid.unit
    ov = (grid.chip - grid.step) // grid.unit
    return _weights(cells, ov, origin > 0, origin + grid.chip < grid.n_pad)


def split_blocks(n: int, block: int, unit: int, min_size: int) -> tuple[int, ...]:
    """Split ``n`` pixels into chunks that are multiples of ``unit`` (all but the last).

    Chunks are about ``block`` pixels; a last chunk smaller than ``min_size`` (the
    halo depth) is merged into its neighbour so halos never span two chunks.
    """
    block = max(unit, (block // unit) * unit)
    if n <= block:
        return (n,)
    sizes = [block] * (n // block)
    rest = n - block * len(sizes)
    if rest:
        sizes.append(rest)
    if len(sizes) > 1 and sizes[-1] < max(min_size, 1):
        last = sizes.pop()
        sizes[-1] += last
    return tuple(sizes)
