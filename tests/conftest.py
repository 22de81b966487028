from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xeofm

torch = pytest.importorskip("torch")


class CountingScheduler:
    """A dask scheduler that fails once more than ``max_computes`` computes happen."""

    def __init__(self, max_computes: int = 0):
        self.total = 0
        self.max_computes = max_computes

    def __call__(self, dsk, keys, **kwargs):
        import dask

        self.total += 1
        if self.total > self.max_computes:
            raise RuntimeError(f"too many dask computations were triggered: {self.total}")
        return dask.get(dsk, keys, **kwargs)


class TinyEncoder(torch.nn.Module):
    """A small CNN with spatial context (3x3 conv) and an 8x8 patch projection."""

    def __init__(self, in_chans: int = 3, dim: int = 6, patch: int = 8):
        super().__init__()
        self.c1 = torch.nn.Conv2d(in_chans, 8, 3, padding=1)
        self.c2 = torch.nn.Conv2d(8, dim, patch, stride=patch)

    def forward(self, x):
        return self.c2(torch.tanh(self.c1(x)))


class PatchLinear(torch.nn.Module):
    """A pure patch embedding: no context, so a constant image gives a constant map."""

    def __init__(self, in_chans: int = 3, dim: int = 5, patch: int = 8):
        super().__init__()
        self.proj = torch.nn.Conv2d(in_chans, dim, patch, stride=patch)

    def forward(self, x):
        return self.proj(x)


class Counting(torch.nn.Module):
    """Wraps a module and counts the chips it sees."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.chips = 0

    def forward(self, x):
        self.chips += x.shape[0]
        return self.inner(x)


def make_cube(ny=97, nx=131, nt=None, bands=("red", "green", "blue"), dtype="uint16", seed=0, crs="EPSG:32633", res=30.0):
    import rioxarray  # noqa: F401

    rng = np.random.default_rng(seed)
    shape = (len(bands), ny, nx) if nt is None else (nt, len(bands), ny, nx)
    data = rng.integers(1, 10000, size=shape).astype(dtype)
    coords = {
        "band": list(bands),
        "y": 5_000_000.0 - res * (np.arange(ny) + 0.5),
        "x": 400_000.0 + res * (np.arange(nx) + 0.5),
    }
    dims = ("band", "y", "x")
    if nt is not None:
        coords["time"] = np.array("2020-01-01", dtype="datetime64[ns]") + np.arange(nt) * np.timedelta64(30, "D")
        dims = ("time",) + dims
    da = xr.DataArray(data, dims=dims, coords=coords, name="cube")
    if crs is not None:
        da = da.rio.write_crs(crs)
    return da


@pytest.fixture(scope="session")
def tiny_spec():
    torch.manual_seed(0)
    return xeofm.wrap(
        TinyEncoder(), bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=6,
        scale=1e-4, mean=[0.5, 0.5, 0.5], std=[0.3, 0.3, 0.3], name="tiny",
    )


@pytest.fixture(scope="session")
def linear_spec():
    torch.manual_seed(1)
    return xeofm.wrap(PatchLinear(), bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=5, name="lin")


@pytest.fixture
def cube():
    return make_cube()
