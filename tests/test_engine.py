"""Core properties of embed(): laziness, chunk/batch invariance, coverage, geography, nodata."""

from __future__ import annotations

import pickle

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xeofm
from xeofm.grid import AxisGrid

from .conftest import Counting, CountingScheduler, PatchLinear, TinyEncoder, make_cube

torch = pytest.importorskip("torch")

MODES = ["patch", "pixel", "chip"]


# ----------------------------------------------------------------------------- laziness
@pytest.mark.parametrize("output", MODES)
def test_embed_is_lazy_and_graph_holds_no_model(cube, tiny_spec, output):
    with dask.config.set(scheduler=CountingScheduler(0)):
        emb = cube.chunk({"x": 50}).eofm.embed(tiny_spec, output=output)
        emb.eofm  # accessor access computes nothing either
    assert isinstance(emb.data, dask.array.Array)
    graph = dict(emb.data.__dask_graph__())
    blob = pickle.dumps(graph)
    assert b"TinyEncoder" not in blob  # the spec travels, never the module
    assert len(blob) < 2_000_000


def test_embed_numpy_input_is_lazy(tiny_spec):
    c = make_cube(ny=40, nx=40)
    emb = xeofm.embed(c, tiny_spec)
    assert isinstance(emb.data, dask.array.Array)


# ------------------------------------------------------------------ chunk/batch invariance
@st.composite
def layouts(draw):
    ny = draw(st.integers(20, 120))
    nx = draw(st.integers(20, 120))
    cy = draw(st.integers(7, 130))
    cx = draw(st.integers(7, 130))
    block = draw(st.sampled_from([32, 40, 64, 96, 256]))
    batch = draw(st.integers(1, 9))
    overlap = draw(st.sampled_from([0, 8, 16, 24]))
    return ny, nx, cy, cx, block, batch, overlap


@pytest.mark.parametrize("output", MODES)
@settings(max_examples=int(__import__("os").environ.get("XEOFM_HYPOTHESIS_EXAMPLES", 12)), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(layout=layouts())
def test_result_independent_of_chunks_blocks_and_batch(tiny_spec, output, layout):
    ny, nx, cy, cx, block, batch, overlap = layout
    if output == "chip":
        overlap = 0
    cube = make_cube(ny=ny, nx=nx, nt=2, seed=ny * nx)
    ref = xeofm.embed(cube, tiny_spec, output=output, overlap=overlap, block_size=4096, batch_size=64).values
    got = xeofm.embed(
        cube.chunk({"y": cy, "x": cx, "time": 1, "band": 1}), tiny_spec, output=output,
        overlap=overlap, block_size=block, batch_size=batch,
    ).values
    assert got.shape == ref.shape
    assert not np.isnan(ref).any()
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------- coverage
@pytest.mark.parametrize("shape", [(97, 131), (32, 32), (20, 11), (1, 45), (33, 250)])
@pytest.mark.parametrize("output", MODES)
def test_every_pixel_covered(tiny_spec, shape, output):
    cube = make_cube(*shape)
    emb = cube.eofm.embed(tiny_spec, output=output, block_size=64).compute()
    cell = {"patch": 8, "pixel": 1, "chip": 32}[output]
    assert emb.sizes["y"] == -(-shape[0] // cell)
    assert emb.sizes["x"] == -(-shape[1] // cell)
    assert np.isfinite(emb.values).all()


def test_constant_image_gives_constant_output(linear_spec):
    cube = make_cube(104, 80)  # whole cells; chip steps do not divide the size
    cube[:] = 1234
    for output in ("patch", "pixel"):
        emb = cube.eofm.embed(linear_spec, output=output, overlap=16, block_size=40).values
        spread = emb.max(axis=(-2, -1)) - emb.min(axis=(-2, -1))
        assert (np.abs(spread) <= 1e-6 * np.abs(emb).max()).all(), output


def test_single_chip_equals_bare_model(tiny_spec):
    cube = make_cube(32, 32)
    emb = cube.eofm.embed(tiny_spec).values
    model = xeofm.load_model(tiny_spec)
    x = torch.tensor(cube.values.astype("float32"))[None]
    x = (x * 1e-4 - 0.5) / 0.3
    with torch.no_grad():
        ref = model(x)[0].numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)


def test_no_overlap_patch_output_equals_stitched_chips(tiny_spec):
    cube = make_cube(64, 96)
    emb = cube.eofm.embed(tiny_spec, overlap=0, block_size=32).values
    model = xeofm.load_model(tiny_spec)
    x = (torch.tensor(cube.values.astype("float32")) * 1e-4 - 0.5) / 0.3
    ref = np.zeros_like(emb)
    with torch.no_grad():
        for i in range(0, 64, 32):
            for j in range(0, 96, 32):
                ref[:, i // 8 : i // 8 + 4, j // 8 : j // 8 + 4] = model(x[None, :, i : i + 32, j : j + 32])[0].numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-5, atol=1e-6)


def test_blended_overlap_is_a_convex_mix_of_chip_outputs(tiny_spec):
    """With overlap, each cell lies between the min and max of the chips covering it."""
    cube = make_cube(56, 56)
    emb = cube.eofm.embed(tiny_spec, overlap=16).values  # step 16: chips at 0, 16, 24 (last shifted)
    model = xeofm.load_model(tiny_spec)
    x = (torch.tensor(cube.values.astype("float32")) * 1e-4 - 0.5) / 0.3
    g = AxisGrid(56, 32, 16, 8)
    lo = np.full(emb.shape, np.inf)
    hi = np.full(emb.shape, -np.inf)
    with torch.no_grad():
        for oy in g.origins():
            for ox in g.origins():
                out = model(x[None, :, oy : oy + 32, ox : ox + 32])[0].numpy()
                sl = (slice(None), slice(oy // 8, oy // 8 + 4), slice(ox // 8, ox // 8 + 4))
                lo[sl] = np.minimum(lo[sl], out)
                hi[sl] = np.maximum(hi[sl], out)
    assert (emb >= lo - 1e-5).all() and (emb <= hi + 1e-5).all()


# ------------------------------------------------------------------------- geography
def test_crs_transform_and_cell_centres(tiny_spec):
    import rioxarray  # noqa: F401

    cube = make_cube(97, 131)
    t_in = cube.rio.transform()
    for output, cell in (("patch", 8), ("chip", 32), ("pixel", 1)):
        emb = cube.eofm.embed(tiny_spec, output=output)
        assert emb.rio.crs == cube.rio.crs
        t = emb.rio.transform()
        assert t.a == pytest.approx(t_in.a * cell) and t.e == pytest.approx(t_in.e * cell)
        assert t.c == pytest.approx(t_in.c) and t.f == pytest.approx(t_in.f)
        # first cell centre sits half a cell in from the cube's corner
        assert float(emb.x[0]) == pytest.approx(t_in.c + 0.5 * cell * t_in.a)
        assert float(emb.y[0]) == pytest.approx(t_in.f + 0.5 * cell * t_in.e)
        assert emb.encoding.get("grid_mapping") == "spatial_ref"
        assert emb.attrs["xeofm:model"] == "tiny"
        assert emb.attrs["xeofm:spec_hash"] == tiny_spec.hash
        assert emb.attrs["xeofm:version"] == xeofm.__version__
    pix = cube.eofm.embed(tiny_spec, output="pixel")
    np.testing.assert_array_equal(pix.x.values, cube.x.values)
    np.testing.assert_array_equal(pix.y.values, cube.y.values)


def test_odc_geobox_of_patch_output_matches_zoom_out(tiny_spec):
    odc_xr = pytest.importorskip("odc.geo.xr")  # noqa: F841
    cube = make_cube(97, 131)
    emb = cube.eofm.embed(tiny_spec)
    gb_in = cube.odc.geobox
    gb_out = emb.odc.geobox
    expect = gb_in.zoom_out(8)
    assert gb_out.shape == expect.shape
    assert gb_out.crs == expect.crs
    assert gb_out.affine.almost_equals(expect.affine)


def test_no_crs_warns_and_keeps_coords(tiny_spec):
    cube = make_cube(40, 40, crs=None)
    with pytest.warns(UserWarning, match="no CRS"):
        emb = cube.eofm.embed(tiny_spec)
    assert emb.sizes["x"] == 5
    assert float(emb.x[0]) == pytest.approx(float(cube.x[0]) - 15 + 4 * 30)


def test_time_is_mapped_over(tiny_spec):
    cube = make_cube(50, 60, nt=3)
    emb = cube.eofm.embed(tiny_spec).compute()
    assert emb.dims == ("time", "embedding", "y", "x")
    np.testing.assert_array_equal(emb.time.values, cube.time.values)
    one = cube.isel(time=1).eofm.embed(tiny_spec).values
    np.testing.assert_allclose(emb.isel(time=1).values, one, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------- nodata
def test_nodata_masked_and_empty_chips_skipped():
    torch.manual_seed(0)
    inner = TinyEncoder()
    counter = Counting(inner)
    spec = xeofm.wrap(counter, bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=6, name="count")
    cube = make_cube(64, 128).astype("float32")
    cube[:, :, 64:] = np.nan  # right half invalid
    emb = cube.eofm.embed(spec, overlap=0).compute()
    assert counter.chips == 2 * 2  # only the valid left half was sent to the model
    assert np.isnan(emb.values[:, :, 8:]).all()
    assert np.isfinite(emb.values[:, :, :8]).all()

    pix = cube.eofm.embed(spec, output="pixel", overlap=0).values
    assert np.isnan(pix[:, :, 64:]).all() and np.isfinite(pix[:, :, :64]).all()


def test_nodata_value_from_attrs_and_partial_cells(tiny_spec):
    cube = make_cube(48, 48)
    cube = cube.rio.write_nodata(0)
    cube[:, :16, :] = 0
    cube[:, 16:20, :3] = 0  # a partially invalid cell stays valid in patch output
    emb = cube.eofm.embed(tiny_spec).values
    assert np.isnan(emb[:, :2, :]).all()
    assert np.isfinite(emb[:, 2:, :]).all()
    pix = cube.eofm.embed(tiny_spec, output="pixel").values
    assert np.isnan(pix[:, 16:20, :3]).all() and np.isfinite(pix[:, 16:20, 3:]).all()


def test_invalid_pixels_do_not_leak_values(tiny_spec):
    """Garbage under nodata must not change the result anywhere."""
    a = make_cube(64, 64).rio.write_nodata(0)
    a[:, 40:, :] = 0
    b = a.copy()
    b[:, 40:, :] = 0
    b = b.astype("float32")
    b[:, 40:, :] = np.nan
    ea = a.eofm.embed(tiny_spec).values
    eb = b.eofm.embed(tiny_spec).values
    np.testing.assert_allclose(ea, eb, rtol=1e-6, equal_nan=True)


# ---------------------------------------------------------------------------- bands
def test_band_aliases_and_reordering(tiny_spec):
    cube = make_cube(40, 40, bands=("B02", "B03", "B04", "B08"))  # blue, green, red, nir
    emb = cube.eofm.embed(tiny_spec).values
    rgb = cube.sel(band=["B04", "B03", "B02"]).assign_coords(band=["red", "green", "blue"])
    np.testing.assert_allclose(emb, rgb.eofm.embed(tiny_spec).values, rtol=1e-6)
    cube2 = cube.assign_coords(band=["b2", "B3", "band_4", "nir"])
    np.testing.assert_allclose(emb, cube2.eofm.embed(tiny_spec).values, rtol=1e-6)


def test_dataset_of_band_variables_equals_dataarray(tiny_spec):
    cube = make_cube(40, 56)
    ds = cube.to_dataset(dim="band")
    ds["SCL"] = ds["red"].astype("uint8")  # an extra variable is ignored
    np.testing.assert_allclose(ds.eofm.embed(tiny_spec).values, cube.eofm.embed(tiny_spec).values, rtol=1e-6)


def test_explicit_band_mapping(tiny_spec):
    cube = make_cube(40, 40, bands=("r", "g", "b"))
    emb = cube.eofm.embed(tiny_spec, bands={"red": "r", "green": "g", "blue": "b"})
    assert emb.shape == (6, 5, 5)


def test_chunked_band_axis_is_rechunked(tiny_spec):
    cube = make_cube(40, 40)
    a = cube.chunk({"band": 1}).eofm.embed(tiny_spec).values
    np.testing.assert_allclose(a, cube.eofm.embed(tiny_spec).values, rtol=1e-6)


# ----------------------------------------------------------------------------- plan
def test_plan_counts_the_chips_that_run():
    torch.manual_seed(0)
    counter = Counting(TinyEncoder())
    spec = xeofm.wrap(counter, bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=6)
    cube = make_cube(150, 90, nt=2)
    with dask.config.set(scheduler=CountingScheduler(0)):
        plan = cube.eofm.plan(spec, block_size=64, batch_size=3)
    assert plan.blocks == 2 * 2 * 2  # time steps x (64, 86) rows x (64, 26) columns
    counter.chips = 0  # the FLOP trace called forward once on a fake tensor
    cube.eofm.embed(spec, block_size=64, batch_size=3).compute()
    assert counter.chips == plan.chips_total
    assert plan.flops_per_chip and plan.flops_per_chip > 0
    assert plan.output_shape == {"time": 2, "embedding": 6, "y": 19, "x": 12}
    assert "chips" in repr(plan)


def test_block_size_and_batch_size_overrides(tiny_spec):
    cube = make_cube(200, 200)
    emb = cube.eofm.embed(tiny_spec, block_size=64, batch_size=2)
    # 200 px in 64 px blocks; the 8 px remainder is thinner than the halo, so it joins its neighbour
    assert emb.chunks[-1] == (8, 8, 9)
    p = cube.eofm.plan(tiny_spec, block_size=(64, 128), batch_size=2)
    assert p.block_shape[-2:] == (72, 128) and p.batch_size == 2


def test_plan_estimates_device_hours_from_its_flops():
    cube = make_cube(ny=200, nx=200, bands=("red", "green", "blue", "nir"), res=5.0)
    p = cube.eofm.plan("xeofm-demo-landcover")
    assert p.flops_total and "est. GPU-hours" in repr(p) and "assumed" in repr(p)
    est = p.estimate(chips_per_second=10.0, price_per_device_hour=2.0)
    assert est.chips == p.chips_total
    assert est.device_hours == pytest.approx(p.chips_total / 10.0 / 3600)
    assert est.cost == pytest.approx(est.device_hours * 2.0)
