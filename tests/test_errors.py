"""Bad input gets a clear exception that says what was found and how to fix it."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.errors import (
    DeviceError,
    InputError,
    MissingBandsError,
    MissingDimensionError,
    SpecError,
    WeightsError,
)

from .conftest import TinyEncoder, make_cube

torch = pytest.importorskip("torch")


def test_no_band_dim_and_no_band_variables(tiny_spec):
    cube = make_cube(40, 40).isel(band=0, drop=True)
    with pytest.raises(MissingDimensionError, match="no band dimension found.*band_dim"):
        cube.eofm.embed(tiny_spec)
    with pytest.raises(InputError, match="no data variables"):
        xr.Dataset(coords={"x": [1.0, 2.0]}).eofm.embed(tiny_spec)


def test_missing_bands_are_named_with_aliases_tried(tiny_spec):
    cube = make_cube(40, 40, bands=("red", "green", "nir"))
    with pytest.raises(MissingBandsError) as exc:
        cube.eofm.embed(tiny_spec)
    msg = str(exc.value)
    assert "blue" in msg and "B04" not in msg.split("blue")[0][-5:]
    assert "tried" in msg and "Cube bands" in msg and "bands={" in msg
    assert "red (" not in msg  # present bands are not reported missing


def test_missing_bands_in_dataset(tiny_spec):
    ds = make_cube(40, 40).to_dataset(dim="band").drop_vars("green")
    with pytest.raises(MissingBandsError, match="green"):
        ds.eofm.embed(tiny_spec)


def test_no_x_y_dims(tiny_spec):
    cube = make_cube(40, 40).rename({"x": "col", "y": "row"}).drop_vars("spatial_ref")
    with pytest.raises(MissingDimensionError, match="no x dimension found|no y dimension found"):
        cube.eofm.embed(tiny_spec)
    # naming them explicitly works
    emb = cube.assign_coords(col=np.arange(40.0), row=np.arange(40.0)).eofm.embed(
        tiny_spec, x_dim="col", y_dim="row"
    )
    assert emb.dims == ("embedding", "row", "col")


def test_non_monotonic_and_irregular_coords(tiny_spec):
    cube = make_cube(40, 40)
    shuffled = cube.isel(x=np.r_[1, 0, 2:40])
    with pytest.raises(InputError, match="not monotonic.*sortby"):
        shuffled.eofm.embed(tiny_spec)
    irregular = cube.assign_coords(x=np.r_[cube.x.values[:20], cube.x.values[20:] + 7.0])
    with pytest.raises(InputError, match="not evenly spaced"):
        irregular.eofm.embed(tiny_spec)


@pytest.mark.parametrize("dtype", ["int64", "uint32", "uint64", "int32"])
def test_overflow_prone_integer_dtypes(tiny_spec, dtype):
    cube = make_cube(40, 40).astype(dtype)
    with pytest.raises(InputError, match=f"dtype {dtype}.*astype"):
        cube.eofm.embed(tiny_spec)


def test_non_numeric_dtype(tiny_spec):
    cube = make_cube(40, 40).astype(bool)
    with pytest.raises(InputError, match="dtype bool"):
        cube.eofm.embed(tiny_spec)


def test_model_output_contradicting_spec_fails_on_compute():
    torch.manual_seed(0)
    spec = xeofm.wrap(TinyEncoder(dim=6), bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=7)
    emb = make_cube(40, 40).eofm.embed(spec)  # still lazy: no error yet
    with pytest.raises(SpecError, match=r"returned shape \(.*6, 4, 4\).*implies \(.*7, 4, 4\)"):
        emb.compute()
    spec = xeofm.wrap(TinyEncoder(dim=6), bands=["red", "green", "blue"], chip_size=32, stride=4, embedding_dim=6)
    with pytest.raises(SpecError, match="stride"):
        make_cube(40, 40).eofm.embed(spec).compute()


def test_cuda_without_gpu(tiny_spec):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(DeviceError, match="no CUDA GPU.*device='auto'"):
        make_cube(40, 40).eofm.embed(tiny_spec, device="cuda")
    with pytest.raises(DeviceError):
        make_cube(40, 40).eofm.embed(tiny_spec, device="cuda:1")


def test_bare_module_is_refused_with_how_to_wrap():
    with pytest.raises(SpecError, match="xeofm.wrap"):
        make_cube(40, 40).eofm.embed(TinyEncoder())


def test_unknown_model_and_bad_options(tiny_spec):
    with pytest.raises(SpecError, match="unknown model.*registered models"):
        make_cube(40, 40).eofm.embed("no-such-model")
    with pytest.raises(InputError, match="output must be"):
        make_cube(40, 40).eofm.embed(tiny_spec, output="tokens")
    with pytest.raises(InputError, match="overlap must be"):
        make_cube(40, 40).eofm.embed(tiny_spec, overlap=32)
    with pytest.raises(InputError, match="overlap must be 0"):
        make_cube(40, 40).eofm.embed(tiny_spec, output="chip", overlap=8)


def test_spec_validation():
    with pytest.raises(SpecError, match="mean has 2 values"):
        xeofm.ModelSpec(name="x", bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=4,
                        mean=[0, 0], std=[1, 1, 1], builder="a:b")
    with pytest.raises(SpecError, match="not a multiple of stride"):
        xeofm.ModelSpec(name="x", bands=["red"], chip_size=30, stride=8, embedding_dim=4, builder="a:b")
    with pytest.raises(SpecError, match="no builder"):
        xeofm.ModelSpec(name="x", bands=["red"], chip_size=32, stride=8, embedding_dim=4)


def test_weights_needed_but_not_given():
    cube = make_cube(40, 40, bands=[b.id for b in xeofm.bands.SENTINEL2])
    with pytest.raises(WeightsError, match="resnet18_sentinel2_all_moco.*pretrained=False"):
        cube.eofm.embed("ssl4eo-s12-resnet18")
    with pytest.raises(WeightsError, match="does not exist"):
        cube.eofm.embed("ssl4eo-s12-resnet18", weights="/nonexistent/file.pth")


def test_gsd_far_from_the_models_warns():
    import warnings

    spec = xeofm.models.get_spec("xeofm-demo-patchpca")  # trained at 30 m
    with pytest.warns(UserWarning, match="pixel size \\(300 m\\) is far from the 30 m"):
        make_cube(64, 64, res=300.0).eofm.embed(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        make_cube(64, 64, res=30.0).eofm.embed(spec)
