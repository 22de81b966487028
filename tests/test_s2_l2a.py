"""Sentinel-2 L2A: the L2A model variants and the processing-baseline 04.00 offset."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.bands import SENTINEL2, SENTINEL2_L2A
from xeofm.errors import InputError, MissingDimensionError

from .conftest import make_cube

torch = pytest.importorskip("torch")
timm = pytest.importorskip("timm")

L1C = [b.id for b in SENTINEL2]
L2A = [b.id for b in SENTINEL2_L2A]


def _dates(*days):
    return np.array(days, dtype="datetime64[ns]")


def test_l2a_bands_are_l1c_without_cirrus():
    assert L2A == [b for b in L1C if b != "B10"] and len(L2A) == 12
    for name in ("ssl4eo-s12-resnet18-l2a", "ssl4eo-s12-resnet50-l2a", "ssl4eo-s12-vit-small16-l2a"):
        spec = xeofm.models.get_spec(name)
        assert spec.band_ids == L2A
        assert spec.embedding_dim == xeofm.models.get_spec(name[:-4]).embedding_dim


def test_l2a_variant_loads_the_l1c_checkpoint_and_equals_it_with_b10_at_its_mean(tmp_path):
    """The L2A variant is the L1C network with B10 fed at 22 DN: same checkpoint, same output."""
    torch.manual_seed(3)
    ref = timm.create_model("resnet18", pretrained=False, in_chans=13, num_classes=0, global_pool="")
    path = tmp_path / "resnet18_sentinel2_all_moco.pth"
    torch.save(ref.state_dict(), path)
    cube13 = make_cube(ny=96, nx=80, bands=L1C, res=10.0, seed=4)
    cube13.loc[{"band": "B10"}] = 22
    cube12 = cube13.sel(band=L2A)
    a = cube13.eofm.embed("ssl4eo-s12-resnet18", weights=path).values
    b = cube12.eofm.embed("ssl4eo-s12-resnet18-l2a", weights=path).values
    assert np.isfinite(a).all() and a.std() > 0
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # and B10 matters: another value gives another embedding
    cube13.loc[{"band": "B10"}] = 3000
    c = cube13.eofm.embed("ssl4eo-s12-resnet18", weights=path).values
    assert np.abs(c - a).max() > 1e-3


def test_l2a_variant_refuses_a_cube_missing_l2a_bands():
    cube = make_cube(ny=40, nx=40, bands=L2A[:-1], res=10.0)
    with pytest.raises(xeofm.MissingBandsError, match="B12"):
        cube.eofm.embed("ssl4eo-s12-resnet18-l2a", pretrained=False)


def _l2a_series():
    data = np.full((3, 2, 4, 4), 1500, dtype="uint16")
    data[:, :, 0, 0] = 0  # nodata
    data[:, :, 0, 1] = 700  # dark pixel: clipped at 0 after the offset
    return xr.DataArray(
        data,
        dims=("time", "band", "y", "x"),
        coords={"time": _dates("2021-06-01", "2022-01-24", "2022-01-25"), "band": ["B04", "B08"],
                "y": np.arange(4.0), "x": np.arange(4.0)},
    )


def test_harmonize_by_date():
    cube = _l2a_series().chunk({"time": 1})
    out = xeofm.harmonize_s2_l2a(cube)
    assert out.chunks is not None  # lazy
    v = out.values
    assert (v[:2] == cube.values[:2]).all()  # before baseline 04.00: untouched
    assert v[2, 0, 1, 1] == 500 and v[2, 0, 0, 1] == 0  # shifted, clipped
    assert v[2, 0, 0, 0] == 0  # nodata untouched
    assert out.attrs["xeofm:s2_harmonized"] == 1
    assert xeofm.harmonize_s2_l2a(out) is out  # idempotent


def test_harmonize_by_processing_baseline_coord():
    cube = _l2a_series().assign_coords({"s2:processing_baseline": ("time", ["05.00", "03.01", "02.14"])})
    v = xeofm.harmonize_s2_l2a(cube).values
    assert v[0, 0, 1, 1] == 500 and v[1, 0, 1, 1] == 1500 and v[2, 0, 1, 1] == 1500


def test_harmonize_dataset_and_errors():
    ds = _l2a_series().to_dataset(dim="band")
    out = xeofm.harmonize_s2_l2a(ds)
    assert float(out["B08"][2, 1, 1]) == 500 and float(out["B08"][0, 1, 1]) == 1500
    with pytest.raises(MissingDimensionError, match="time"):
        xeofm.harmonize_s2_l2a(_l2a_series().isel(time=0))
    with pytest.raises(InputError, match="2 processing baselines for 3 dates"):
        xeofm.harmonize_s2_l2a(_l2a_series(), baseline=["04.00", "05.00"])


def test_engine_warns_about_unharmonised_late_l2a_dates():
    cube = make_cube(ny=40, nx=40, nt=2, bands=L2A, res=10.0)
    late = cube.assign_coords(time=_dates("2021-12-01", "2023-05-01"))
    with pytest.warns(UserWarning, match="harmonize_s2_l2a"):
        late.eofm.embed("ssl4eo-s12-resnet18-l2a", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xeofm.harmonize_s2_l2a(late).eofm.embed("ssl4eo-s12-resnet18-l2a", pretrained=False)
        cube.eofm.embed("ssl4eo-s12-resnet18-l2a", pretrained=False)  # all dates before the change
