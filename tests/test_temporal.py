"""Multi-date models (sliding time windows) and auxiliary inputs (dates, lat/lon, wavelengths, GSD)."""

from __future__ import annotations

import numpy as np
import pytest

import xeofm
from xeofm.errors import InputError, MissingDimensionError

from .conftest import make_cube

torch = pytest.importorskip("torch")


class TemporalTokens(torch.nn.Module):
    """(B, C, T, H, W) -> (B, 1 + T*N, D) tokens; records the auxiliary inputs it gets."""

    def __init__(self, c=3, d=4, p=8):
        super().__init__()
        self.proj = torch.nn.Conv3d(c, d, (1, p, p), stride=(1, p, p))
        self.seen: list[dict] = []

    def forward(self, x, time=None, latlon=None, wavelengths=None, gsd=None):
        self.seen.append({"time": time, "latlon": latlon, "wavelengths": wavelengths, "gsd": gsd, "shape": tuple(x.shape)})
        y = self.proj(x)  # (B, D, T, h, w)
        b, d, t, h, w = y.shape
        tok = y.permute(0, 2, 3, 4, 1).reshape(b, t * h * w, d)
        cls = tok.mean(dim=1, keepdim=True)
        return torch.cat([cls, tok], dim=1)


@pytest.fixture
def temporal():
    torch.manual_seed(0)
    mod = TemporalTokens()
    spec = xeofm.wrap(
        mod, bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=4, output="tokens",
        prefix_tokens=1, time_frames=2, aux=("time", "latlon", "wavelengths", "gsd"), name="temporal",
    )
    return mod, spec


def test_windows_slide_along_time(temporal):
    mod, spec = temporal
    cube = make_cube(32, 32, nt=4)
    emb = cube.eofm.embed(spec).compute()
    assert emb.dims == ("time", "embedding", "y", "x")
    np.testing.assert_array_equal(emb.time.values, cube.time.values[1:])  # window end dates
    assert emb.attrs["xeofm:time_frames"] == 2
    # window k = frames k, k+1; compare with a direct call (tokens averaged over the 2 frames)
    x = torch.tensor(cube.values.astype("float32")).permute(1, 0, 2, 3)[None]  # (1, C, T, H, W)
    with torch.no_grad():
        for k in range(3):
            tok = mod(x[:, :, k : k + 2])[0, 1:].reshape(2, 4, 4, 4).mean(0).permute(2, 0, 1).numpy()
            np.testing.assert_allclose(emb.values[k], tok, rtol=1e-5, atol=1e-5)


def test_auxiliary_inputs_are_right(temporal):
    from pyproj import Transformer

    mod, spec = temporal
    cube = make_cube(32, 32, nt=3)
    mod.seen.clear()
    cube.eofm.embed(spec).compute()
    first = mod.seen[0]
    assert first["shape"][1:] == (3, 2, 32, 32)
    t = first["time"].numpy()
    assert t.shape == (first["shape"][0], 2, 2)
    dates = cube.time.to_index()
    assert (t[0, 0] == [dates[0].year, dates[0].day_of_year]).all()
    assert (t[0, 1] == [dates[1].year, dates[1].day_of_year]).all()
    lon, lat = Transformer.from_crs("EPSG:32633", "EPSG:4326", always_xy=True).transform(400_000 + 16 * 30, 5_000_000 - 16 * 30)
    np.testing.assert_allclose(first["latlon"].numpy()[0], [lat, lon], rtol=1e-6)
    np.testing.assert_allclose(first["wavelengths"].numpy(), [0.665, 0.560, 0.490], rtol=1e-6)
    assert first["gsd"] == pytest.approx(30.0)


def test_temporal_result_independent_of_chunks(temporal):
    _, spec = temporal
    cube = make_cube(70, 90, nt=5)
    ref = cube.eofm.embed(spec, block_size=512).values
    got = cube.chunk({"time": 1, "x": 33, "y": 17}).eofm.embed(spec, block_size=40, batch_size=3).values
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_wrong_number_of_frames(temporal):
    _, spec = temporal
    with pytest.raises(InputError, match="windows of 2 time steps.*has 1"):
        make_cube(32, 32, nt=1).eofm.embed(spec)
    with pytest.raises(MissingDimensionError, match="takes 2 time steps"):
        make_cube(32, 32).eofm.embed(spec)


def test_nodata_in_one_frame_keeps_window_valid(temporal):
    _, spec = temporal
    cube = make_cube(32, 32, nt=3).astype("float32")
    cube[0, :, :8, :] = np.nan  # first date partly missing
    emb = cube.eofm.embed(spec).values
    assert np.isfinite(emb).all()  # the second frame of window 0 is valid everywhere
    cube[0:2, :, :8, :] = np.nan
    emb = cube.eofm.embed(spec).values
    assert np.isnan(emb[0, :, 0]).all() and np.isfinite(emb[1]).all()
