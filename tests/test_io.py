"""Streaming, resumable zarr writes: template, regions, manifest, resume, refusals, faults."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xeofm
from xeofm.errors import (
    IncompleteStoreError,
    InputError,
    StoreConflictError,
    StoreMismatchError,
    StoreWriteError,
)
from xeofm.io import (
    DONE_DIR,
    MANIFEST_ATTR,
    RegionWriter,
    open_embeddings,
    read_manifest,
    store_progress,
    to_zarr,
)

from ._scale_models import tiny_spec as builder_spec
from .conftest import CountingScheduler, PatchLinear, make_cube

pytest.importorskip("zarr")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def spec():
    """A model every process can build (importable builder): same spec hash everywhere."""
    return builder_spec("io-tiny")


@pytest.fixture(scope="module")
def emb(spec):
    cube = make_cube(120, 152, nt=2)
    cube[0, :, :30, :40] = 0  # a nodata corner: NaN embeddings there
    cube = cube.assign_attrs(nodata=0)
    return cube.eofm.embed(spec, block_size=48, device="cpu")


@pytest.fixture(scope="module")
def ref(emb):
    return emb.compute()


def _chunk_files(store: Path, var: str = "embeddings") -> dict[str, bytes]:
    root = store / var / "c"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_round_trip_values_crs_and_provenance(emb, ref, tmp_path):
    job = to_zarr(emb, tmp_path / "e.zarr")
    assert job.complete and job.regions_written == job.regions_total == len(emb.data.to_delayed().ravel())
    out = open_embeddings(tmp_path / "e.zarr")
    assert out.dims == emb.dims and out.dtype == np.float32
    assert np.array_equal(out.values, ref.values, equal_nan=True)
    assert np.isnan(ref.values[0, :, 0, 0]).all() and np.isfinite(ref.values[1]).all()
    # CRS, transform and provenance survive a plain xarray open too
    plain = xr.open_zarr(tmp_path / "e.zarr", decode_coords="all")["embeddings"]
    assert plain.rio.crs == emb.rio.crs
    assert tuple(plain.rio.transform()) == pytest.approx(tuple(emb.rio.transform()))
    for k in ("xeofm:model", "xeofm:spec_hash", "xeofm:overlap", "xeofm:bands"):
        assert plain.attrs[k] == emb.attrs[k]
    man = json.loads(out.attrs[MANIFEST_ATTR])
    assert man["model"] == "io-tiny" and man["spec_hash"] == emb.attrs["xeofm:spec_hash"]
    assert man["parameters"]["xeofm:overlap"] == emb.attrs["xeofm:overlap"]
    np.testing.assert_array_equal(out["time"].values, emb["time"].values)


def test_template_first_then_regions_aligned_to_chunks(emb, ref, tmp_path):
    store = tmp_path / "t.zarr"
    with __import__("dask").config.set(scheduler=CountingScheduler(0)):  # writing the template computes nothing
        job = to_zarr(emb, store, compute=False)
    assert (store / "zarr.json").exists() and read_manifest(store)["key"] == job.key
    assert _chunk_files(store) == {} and not (store / DONE_DIR).exists()
    with pytest.raises(IncompleteStoreError, match=r"0 of \d+ zarr chunks.*resume=True"):
        open_embeddings(store)
    # zarr chunks divide every region boundary: no chunk is shared by two regions
    zc = job.manifest["zarr_chunks"]
    for c, z in zip(emb.chunks, zc):
        assert all(int(b) % z == 0 for b in np.cumsum(c)[:-1])
    seen = []
    job.compute(progress=lambda done, total: seen.append((done, total)))
    assert [d for d, _ in seen] == list(range(1, job.regions_total + 1))
    assert {t for _, t in seen} == {job.regions_total}
    assert store_progress(store)["complete"]
    assert np.array_equal(open_embeddings(store).values, ref.values, equal_nan=True)


def test_batches_are_compact_tiles_and_give_the_same_store(emb, ref, tmp_path):
    from xeofm.io import _tile_batches

    todo = [(t, 0, y, x) for t in range(2) for y in range(7) for x in range(9)]
    batches = _tile_batches(todo, 9)
    assert sorted(i for b in batches for i in b) == sorted(todo)
    for b in batches:
        assert len(b) <= 9 and len({i[0] for i in b}) == 1  # one time step per batch
        assert max(i[2] for i in b) - min(i[2] for i in b) < 3 + 3  # compact along y and x
        assert max(i[3] for i in b) - min(i[3] for i in b) < 3 + 3
    assert _tile_batches(todo, 1000) == [todo] and _tile_batches([], 4) == []
    seen = []
    job = to_zarr(emb, tmp_path / "b.zarr", regions_per_submit=4, progress=lambda d, t: seen.append(d))
    assert seen == list(range(1, job.regions_total + 1))
    full = to_zarr(emb, tmp_path / "one.zarr")
    assert _chunk_files(tmp_path / "b.zarr") == _chunk_files(tmp_path / "one.zarr")
    assert full.complete and job.complete


def test_resume_skips_done_regions_and_rechunked_jobs_align(emb, ref, tmp_path):
    store = tmp_path / "r.zarr"
    to_zarr(emb, store)
    done = sorted((store / DONE_DIR).iterdir())
    for f in done[::3]:
        f.unlink()
    (store / "_xeofm" / "complete.json").unlink()
    job = to_zarr(emb, store, resume=True)
    assert job.regions_written == len(done[::3]) and job.regions_done_before == job.regions_total - len(done[::3])
    assert np.array_equal(open_embeddings(store).values, ref.values, equal_nan=True)
    # a resumed job with another block size still writes whole zarr chunks (its blocks are realigned)
    for f in sorted((store / DONE_DIR).iterdir())[::2]:
        f.unlink()
    emb2 = emb.chunk({"y": 5, "x": 7})
    job2 = to_zarr(emb2, store, resume=True)
    assert 0 < job2.regions_written < job2.regions_total
    np.testing.assert_allclose(open_embeddings(store).values, ref.values, rtol=0, atol=1e-6)


KILL_CHILD = r"""
import sys
sys.path.insert(0, {root!r})
from tests._scale_models import tiny_spec
from tests.conftest import make_cube
from xeofm.io import to_zarr
cube = make_cube(120, 152, nt=2)
cube[0, :, :30, :40] = 0
cube = cube.assign_attrs(nodata=0)
emb = cube.eofm.embed(tiny_spec("io-tiny"), block_size=48, device="cpu")
to_zarr(emb, sys.argv[1])
print("finished")
"""


def test_sigkill_mid_job_then_resume_is_byte_identical(emb, ref, tmp_path):
    store = tmp_path / "killed.zarr"
    env = dict(os.environ, XEOFM_TEST_DELAY="0.08", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", KILL_CHILD.format(root=str(ROOT)), str(store)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            d = store / DONE_DIR
            if d.exists() and len([p for p in d.iterdir() if not p.name.endswith(".partial")]) >= 3:
                break
            if proc.poll() is not None:
                pytest.fail(f"the child ended before it was killed: {proc.stderr.read().decode()[-2000:]}")
            time.sleep(0.02)
        else:
            pytest.fail("the child wrote no regions within 60 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    prog = store_progress(store)
    assert 3 <= prog["chunks_done"] < prog["chunks_total"] and not prog["complete"]
    with pytest.raises(IncompleteStoreError):
        open_embeddings(store)
    # the same call with resume=True finishes the job, skipping what the killed process wrote
    job = to_zarr(emb, store, resume=True)
    assert job.regions_done_before >= 3 and job.regions_written > 0 and job.complete
    full = to_zarr(emb, tmp_path / "full.zarr")
    assert full.regions_written == full.regions_total
    a = open_embeddings(store, mask_and_scale=False).values
    b = open_embeddings(tmp_path / "full.zarr", mask_and_scale=False).values
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
    assert np.array_equal(a, ref.values, equal_nan=True)
    assert _chunk_files(store) == _chunk_files(tmp_path / "full.zarr")  # the stored chunk files, byte for byte
    assert not list(store.rglob("*.partial"))


def test_int8_and_float16_storage(emb, ref, tmp_path):
    job = to_zarr(emb, tmp_path / "q8.zarr", dtype="int8")
    q = job.manifest["quantisation"]
    scale, offset = q["scale_factor"], q["add_offset"]
    raw = open_embeddings(tmp_path / "q8.zarr", mask_and_scale=False)
    assert raw.dtype == np.int8 and raw.attrs["scale_factor"] == pytest.approx(scale)
    codes = raw.values
    nan = np.isnan(ref.values)
    assert nan.any() and (codes[nan] == -128).all() and (codes[~nan] >= -127).all()
    dec = open_embeddings(tmp_path / "q8.zarr")
    assert dec.dtype == np.float32
    assert np.array_equal(np.isnan(dec.values), nan)
    assert np.nanmax(np.abs(dec.values - ref.values)) <= scale / 2 * 1.001 + 1e-6
    # the estimated range covers the data with a margin, so nothing saturates here
    assert offset - 127 * scale < np.nanmin(ref.values) and np.nanmax(ref.values) < offset + 127 * scale
    # an explicit range: values outside saturate to the end codes
    to_zarr(emb, tmp_path / "q8b.zarr", dtype="int8", int8_range=(-0.1, 0.1))
    sat = open_embeddings(tmp_path / "q8b.zarr").values
    assert np.nanmax(sat) == pytest.approx(0.1, abs=1e-3) and np.nanmax(ref.values) > 0.1
    to_zarr(emb, tmp_path / "f16.zarr", dtype="float16")
    h = open_embeddings(tmp_path / "f16.zarr")
    assert h.dtype == np.float16
    np.testing.assert_allclose(h.values.astype(np.float32), ref.values, rtol=1e-3, atol=1e-4)
    assert np.array_equal(np.isnan(h.values), nan)
    # about 4x and 2x smaller on disk than float32
    size = {k: sum(len(v) for v in _chunk_files(tmp_path / f"{k}.zarr").values()) for k in ("q8", "f16")}
    to_zarr(emb, tmp_path / "f32.zarr")
    size["f32"] = sum(len(v) for v in _chunk_files(tmp_path / "f32.zarr").values())
    assert size["q8"] < size["f16"] < size["f32"]
    with pytest.raises(InputError, match="quantises floating point"):
        to_zarr(emb.astype("int16"), tmp_path / "bad.zarr", dtype="int8")
    with pytest.raises(InputError, match="lo < hi"):
        to_zarr(emb, tmp_path / "bad2.zarr", dtype="int8", int8_range=(1.0, -1.0))


def test_int8_resume_reuses_the_stored_quantisation(emb, tmp_path):
    store = tmp_path / "q.zarr"
    first = to_zarr(emb, store, dtype="int8")
    before = open_embeddings(store, mask_and_scale=False).values
    for f in sorted((store / DONE_DIR).iterdir())[1::2]:
        f.unlink()
    again = to_zarr(emb, store, dtype="int8", resume=True)
    assert again.manifest["quantisation"] == first.manifest["quantisation"] and again.regions_written > 0
    assert open_embeddings(store, mask_and_scale=False).values.tobytes() == before.tobytes()


def test_refuses_other_models_parameters_and_foreign_stores(emb, spec, tmp_path):
    store = tmp_path / "s.zarr"
    to_zarr(emb, store)
    cube = make_cube(120, 152, nt=2)
    # same job without resume/overwrite
    with pytest.raises(StoreConflictError, match="already holds this job.*resume=True.*overwrite=True"):
        to_zarr(emb, store)
    # another model
    other = xeofm.wrap(PatchLinear(dim=6), bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=6,
                       name="other-model")
    with pytest.raises(StoreMismatchError, match="model 'io-tiny' \\(store\\) vs 'other-model'.*overwrite=True"):
        to_zarr(cube.eofm.embed(other, block_size=48, device="cpu"), store, resume=True)
    # same model, other parameters / area / storage
    with pytest.raises(StoreMismatchError, match="overlap 8 \\(store\\) vs 0"):
        to_zarr(cube.eofm.embed(spec, block_size=48, device="cpu", overlap=0), store, resume=True)
    with pytest.raises(StoreMismatchError, match="shape"):
        to_zarr(cube.isel(x=slice(0, 100)).eofm.embed(spec, block_size=48, device="cpu"), store, resume=True)
    with pytest.raises(StoreMismatchError, match="storage"):
        to_zarr(emb, store, resume=True, dtype="float16")
    assert read_manifest(store)["model"] == "io-tiny"  # nothing was touched
    # overwrite replaces the store with the other model's output
    job = to_zarr(cube.eofm.embed(other, block_size=48, device="cpu"), store, overwrite=True)
    assert job.complete and read_manifest(store)["model"] == "other-model"
    assert open_embeddings(store).attrs["xeofm:model"] == "other-model"
    # a zarr store not written by xeofm
    foreign = tmp_path / "foreign.zarr"
    xr.Dataset({"a": ("x", np.arange(3.0))}).to_zarr(foreign)
    with pytest.raises(StoreMismatchError, match="not written by xeofm.to_zarr"):
        to_zarr(emb, foreign, resume=True)
    to_zarr(emb, foreign, overwrite=True)
    assert read_manifest(foreign)["model"] == "io-tiny"
    # a folder that is not a zarr store is never deleted
    precious = tmp_path / "home"
    precious.mkdir()
    (precious / "thesis.txt").write_text("do not delete")
    with pytest.raises(StoreConflictError, match="not a zarr store"):
        to_zarr(emb, precious, overwrite=True)
    assert (precious / "thesis.txt").read_text() == "do not delete"


def test_disk_full_mid_write_is_a_clear_error_and_resumable(emb, ref, tmp_path, monkeypatch):
    store = tmp_path / "full.zarr"
    real_write = RegionWriter.write
    calls = {"n": 0}

    def flaky(self, block, loc):
        calls["n"] += 1
        if calls["n"] > 4:
            raise OSError(errno.ENOSPC, "No space left on device", str(store))
        return real_write(self, block, loc)

    monkeypatch.setattr(RegionWriter, "write", flaky)
    with pytest.raises(StoreWriteError) as exc:
        to_zarr(emb, store, scheduler="synchronous")
    msg = str(exc.value)
    assert "disk is full" in msg and "resume=True" in msg and "of" in msg and "\n" not in msg
    assert exc.value.errno == errno.ENOSPC and isinstance(exc.value, OSError)
    assert 4 <= store_progress(store)["chunks_done"] < store_progress(store)["chunks_total"]
    monkeypatch.setattr(RegionWriter, "write", real_write)
    job = to_zarr(emb, store, resume=True)
    assert job.regions_done_before >= 4 and job.complete
    assert np.array_equal(open_embeddings(store).values, ref.values, equal_nan=True)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_is_a_clear_error(emb, ref, tmp_path):
    store = tmp_path / "ro.zarr"
    job = to_zarr(emb, store, compute=False)
    chunk_dir = store / "embeddings"
    os.chmod(chunk_dir, 0o555)
    try:
        with pytest.raises(StoreWriteError, match="permission denied.*resume=True"):
            job.compute()
    finally:
        os.chmod(chunk_dir, 0o755)
    to_zarr(emb, store, resume=True)
    assert np.array_equal(open_embeddings(store).values, ref.values, equal_nan=True)


def test_bad_arguments(emb, tmp_path):
    with pytest.raises(InputError, match="DataArray"):
        to_zarr(np.zeros(3), tmp_path / "a.zarr")
    with pytest.raises(InputError, match="dtype must be"):
        to_zarr(emb, tmp_path / "a.zarr", dtype="float64")
    with pytest.raises(InputError, match="do not divide"):
        to_zarr(emb, tmp_path / "a.zarr", chunks={"y": 5})
    with pytest.raises(InputError, match="int8_range is only used"):
        to_zarr(emb, tmp_path / "a.zarr", int8_range=(0, 1))
    ds = xr.Dataset({"a": emb, "b": emb})
    with pytest.raises(InputError, match="2 variables"):
        to_zarr(ds, tmp_path / "a.zarr")
    # explicit zarr chunks that divide the blocks are used
    job = to_zarr(emb, tmp_path / "c.zarr", chunks={"y": 3, "x": 2})
    assert job.manifest["zarr_chunks"][-2:] == [3, 2]


def test_fsspec_url_store(emb, ref):
    """URL stores go through fsspec (here its in-memory file system): writes, markers, resume, refusal."""
    fsspec = pytest.importorskip("fsspec")
    url = "memory://xeofm-test-bucket/e.zarr"
    fs = fsspec.filesystem("memory")
    try:
        job = to_zarr(emb, url)
        assert job.complete and store_progress(url)["complete"]
        out = open_embeddings(url)
        assert np.array_equal(out.values, ref.values, equal_nan=True) and out.rio.crs == emb.rio.crs
        markers = fs.ls("/xeofm-test-bucket/e.zarr/_xeofm/done", detail=False)
        assert len(markers) == job.regions_total
        for m in markers[::2]:
            fs.rm(m)
        again = to_zarr(emb, url, resume=True)
        assert again.regions_written == len(markers[::2]) and again.complete
        with pytest.raises(StoreConflictError):
            to_zarr(emb, url)
    finally:
        if fs.exists("/xeofm-test-bucket"):
            fs.rm("/xeofm-test-bucket", recursive=True)


def test_label_cube_keeps_its_dtype_nodata_and_classes(tmp_path):
    """A label cube (uint8, nodata 255 as _FillValue, class names) goes through to_zarr unchanged."""
    import xeofm

    cube = xeofm.data.sample_cube("rgbn").isel(time=slice(0, 2)).astype("float32")
    cube[0, :, :20, :30] = np.nan  # a nodata corner: label 255
    labels = cube.eofm.segment("xeofm-demo-landcover", block_size=128)
    job = to_zarr(labels, tmp_path / "labels.zarr")
    assert job.complete
    back = open_embeddings(tmp_path / "labels.zarr", mask_and_scale=False)
    ref = labels.values
    assert back.dtype == np.uint8 and (ref == 255).any()
    assert np.array_equal(back.values, ref)
    assert back.attrs["xeofm:classes"] == labels.attrs["xeofm:classes"]
    assert back.encoding.get("_FillValue") == 255 or back.attrs.get("_FillValue") == 255
    masked = open_embeddings(tmp_path / "labels.zarr")  # CF decoding: nodata -> NaN
    assert np.isnan(masked.values[0, :20, :30]).all()


def test_a_store_is_written_by_one_job_at_a_time(emb, ref, tmp_path):
    """A live job's lock refuses a second writer (same host or another); a dead job's lock is taken over."""
    import socket

    from xeofm.errors import StoreConflictError
    from xeofm.io import LOCK_FILE

    store = tmp_path / "locked.zarr"
    job = to_zarr(emb, store, compute=False)  # template written, nothing computed
    lock = store / LOCK_FILE
    lock.parent.mkdir(parents=True, exist_ok=True)
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid, "started": "now"}))
        with pytest.raises(StoreConflictError, match=f"pid {other.pid}"):
            job.compute()
        with pytest.raises(StoreConflictError, match="being written by another job"):
            to_zarr(emb, store, overwrite=True)  # never deletes a store under a live job
        assert store_progress(store)["chunks_done"] == 0
    finally:
        other.kill()
        other.wait()
    # the holder died without cleaning up: its lock is stale and the job goes on
    job = to_zarr(emb, store, resume=True)
    assert job.complete and not lock.exists()
    assert np.array_equal(open_embeddings(store).values, ref.values, equal_nan=True)
    # a lock from another machine cannot be checked: refused until it is removed
    lock.write_text(json.dumps({"host": "another-host.example", "pid": 1, "started": "earlier"}))
    with pytest.raises(StoreConflictError, match="another-host.example"):
        to_zarr(emb, store, overwrite=True)
    lock.unlink()
    assert to_zarr(emb, store, overwrite=True).complete
