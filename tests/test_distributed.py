"""Jobs on a dask LocalCluster with worker processes: same results, model built per worker, killed workers."""

from __future__ import annotations

import io
import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest

from xeofm.io import DONE_DIR, open_embeddings, to_zarr

from ._scale_models import tiny_spec
from .conftest import make_cube

distributed = pytest.importorskip("distributed")
torch = pytest.importorskip("torch")



def _cube():
    return make_cube(120, 152, nt=2)


@pytest.fixture(scope="module")
def client():
    """Two single-threaded worker processes, each offering one 'GPU' resource."""
    from distributed import Client, LocalCluster

    with LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, resources={"GPU": 1},
        death_timeout=30,
    ) as cluster, Client(cluster, timeout="30s") as c:
        yield c


@pytest.fixture(scope="module")
def local_ref():
    """The same embeddings computed by the local threaded scheduler."""
    emb = _cube().eofm.embed(tiny_spec("dist-tiny"), block_size=48, device="cpu")
    return emb.compute(scheduler="threads")


def _run_with_timeout(fn, timeout: float):
    out: dict = {}

    def target():
        try:
            out["value"] = fn()
        except BaseException as exc:  # noqa: BLE001
            out["error"] = exc

    th = threading.Thread(target=target, daemon=True)
    th.start()
    th.join(timeout)
    if th.is_alive():
        pytest.fail(f"the job did not finish within {timeout} s")
    if "error" in out:
        raise out["error"]
    return out["value"]


class _NoModules(pickle.Pickler):
    """Pickles a graph, failing on any torch module or tensor inside it."""

    def reducer_override(self, obj):
        if isinstance(obj, (torch.nn.Module, torch.Tensor)):
            raise AssertionError(f"the graph holds a {type(obj).__name__}")
        return NotImplemented


def test_graph_carries_specs_not_models(tmp_path):
    import cloudpickle

    from tests.conftest import TinyEncoder
    import xeofm

    wrapped = xeofm.wrap(TinyEncoder(), bands=["red", "green", "blue"], chip_size=32, stride=8, embedding_dim=6)
    for spec in (tiny_spec("dist-tiny"), wrapped):
        emb = _cube().eofm.embed(spec, block_size=48, device="cpu")
        xeofm.runtime.get_model(spec, "cpu")  # a built model in this process must not leak into the graph
        job = to_zarr(emb, tmp_path / f"{spec.name}.zarr", compute=False)
        keys = [(job.status.name, *idx) for idx in job.todo]
        graph = dict(job._graph_for(keys))
        buf = io.BytesIO()
        _NoModules(buf, protocol=5).dump(cloudpickle.loads(cloudpickle.dumps(graph)))
        per_task = len(buf.getvalue()) / len(graph)
        assert per_task < 20_000, f"{per_task:.0f} bytes per task"


def test_cluster_results_equal_local_model_built_once_per_worker(client, local_ref, tmp_path):
    spec = tiny_spec("dist-tiny")
    emb = _cube().eofm.embed(spec, block_size=48, device="cpu")
    seen = []
    job = _run_with_timeout(
        lambda: to_zarr(emb, tmp_path / "d.zarr", resources={"GPU": 1}, progress=lambda d, t: seen.append(d)), 90
    )
    assert job.complete and seen[-1] == job.regions_total
    out = open_embeddings(tmp_path / "d.zarr")
    np.testing.assert_allclose(out.values, local_ref.values, rtol=0, atol=1e-6)
    assert np.array_equal(np.isnan(out.values), np.isnan(local_ref.values))
    assert out.rio.crs == local_ref.rio.crs
    # every worker that ran tasks built the model once, and only its own copy (never shipped)
    builds = client.run(lambda: __import__("tests._scale_models", fromlist=["BUILDS"]).BUILDS)
    cached = client.run(lambda: __import__("xeofm.runtime", fromlist=["x"]).cached_models())
    assert sum(builds.values()) >= 1 and max(builds.values()) == 1
    assert all(v in ([], [(spec.hash, "cpu")]) for v in cached.values())
    # the model-running tasks asked for the GPU resource

    def restrictions(dask_scheduler):
        return [ts.resource_restrictions for ts in dask_scheduler.tasks.values() if "xeofm-write" in str(ts.key)]

    job2 = to_zarr(emb, tmp_path / "d2.zarr", resources={"GPU": 1}, compute=False)
    keys = [(job2.status.name, *idx) for idx in job2.todo[:3]]
    futures = client.get(job2._graph_for(keys), keys, sync=False)
    distributed.wait(futures, timeout=60)  # held futures keep their task states on the scheduler
    seen_restr = client.run_on_scheduler(restrictions)
    del futures
    assert len(seen_restr) == 3 and all(r == {"GPU": 1} for r in seen_restr)


def test_worker_killed_mid_job_output_identical(client, local_ref, tmp_path):
    spec = tiny_spec("dist-slow").replace(builder_kwargs=(("delay", 0.1), ("dim", 6), ("in_chans", 3), ("patch", 8)))
    emb = _cube().eofm.embed(spec, block_size=48, device="cpu")
    ref_job = _run_with_timeout(lambda: to_zarr(emb, tmp_path / "ref.zarr"), 90)  # uninterrupted, on the cluster
    assert ref_job.complete
    store = tmp_path / "kill.zarr"
    job = to_zarr(emb, store, compute=False)
    pids = client.run(os.getpid)
    result: dict = {}

    def run():
        try:  # small batches: the next one is submitted while the current one runs
            result["job"] = job.compute(regions_per_submit=6)
        except BaseException as exc:  # noqa: BLE001
            result["error"] = exc

    th = threading.Thread(target=run, daemon=True)
    th.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (store / DONE_DIR).exists():
        time.sleep(0.02)
    while time.monotonic() < deadline and len(list((store / DONE_DIR).iterdir())) < 2:
        time.sleep(0.02)
    victim = sorted(pids.values())[0]
    n_at_kill = len(list((store / DONE_DIR).iterdir()))
    os.kill(victim, signal.SIGKILL)
    th.join(90)
    assert not th.is_alive(), "the job did not finish after a worker was killed"
    if "error" in result:
        raise result["error"]
    assert job.complete
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # the worker really died
    # killed half-way; every region is written in the end, by the surviving or the restarted worker
    assert 2 <= n_at_kill < job.regions_total == ref_job.regions_total
    assert len(list((store / DONE_DIR).iterdir())) == job.regions_total
    a = open_embeddings(store, mask_and_scale=False).values
    b = open_embeddings(tmp_path / "ref.zarr", mask_and_scale=False).values
    assert a.tobytes() == b.tobytes()
    np.testing.assert_allclose(a, local_ref.values, rtol=0, atol=1e-6)


def test_cli_runs_on_an_existing_cluster(client, tmp_path, capsys):
    """``xeofm embed --scheduler ADDRESS`` connects to a running scheduler (it never starts one)."""
    from xeofm import data as xd
    from xeofm.cli import main

    addr = client.scheduler.address
    store = tmp_path / "cli.zarr"
    argv = ["embed", "--stac", str(xd.catalog_path()), "--collections", "rgbn", "--bands", "red", "green", "blue", "nir",
            "--model", "xeofm-demo-patchpca-rgbn", "--out", str(store), "--device", "cpu", "--scheduler", addr,
            "--resources", "GPU=1"]
    rc = _run_with_timeout(lambda: main(argv), 90)
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "wrote 4 of 4 regions" in out and "100% 4/4 regions" in err
    ref = xd.sample_cube("rgbn").eofm.embed("xeofm-demo-patchpca-rgbn", device="cpu").compute()
    np.testing.assert_allclose(open_embeddings(store).values, ref.values, rtol=0, atol=1e-5)
    rc = main([*argv[:-4], "--scheduler", "tcp://127.0.0.1:9", "--connect-timeout", "1", "--overwrite"])
    _, err = capsys.readouterr()
    assert rc == 2 and "cannot connect to the dask scheduler" in err
