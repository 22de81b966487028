"""The ``xeofm`` command: models, plan, embed (STAC, raster, zarr inputs), exit codes and messages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xeofm import data as xd
from xeofm.cli import main
from xeofm.io import DONE_DIR, open_embeddings, read_manifest, to_zarr
from xeofm.stac import load_stac

pytest.importorskip("odc.stac")
ROOT = Path(__file__).resolve().parents[1]
MODEL = "xeofm-demo-patchpca-rgbn"
CAT = str(xd.catalog_path())
STAC_ARGS = ["--stac", CAT, "--collections", "rgbn", "--bands", "red", "green", "blue", "nir", "--model", MODEL]


def run(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_models_lists_the_registry(capsys):
    rc, out, err = run(capsys, "models")
    assert rc == 0 and MODEL in out and "ssl4eo-s12-resnet18" in out
    rc, out, _ = run(capsys, "models", "--json")
    rows = json.loads(out)
    row = next(r for r in rows if r["name"] == MODEL)
    assert row["bands"] == 4 and row["stride"] == 8 and row["embedding_dim"] == 16


def test_embed_from_stac_equals_the_python_api(capsys, tmp_path):
    out_store = tmp_path / "emb.zarr"
    rc, out, err = run(capsys, "embed", *STAC_ARGS, "--out", out_store, "--device", "cpu")
    assert rc == 0, err
    assert f"wrote 4 of 4 regions of {MODEL}" in out
    assert "100% 4/4 regions" in err  # the progress bar
    got = open_embeddings(out_store)
    ref = load_stac(CAT, ["red", "green", "blue", "nir"], collections="rgbn").eofm.embed(MODEL, device="cpu")
    assert np.array_equal(got.values, ref.values, equal_nan=True)
    assert got.rio.crs == ref.rio.crs and got.attrs["xeofm:model"] == MODEL
    # the same command again: refused with a hint, then resumed (nothing to do) and overwritten
    rc, out, err = run(capsys, "embed", *STAC_ARGS, "--out", out_store, "--quiet")
    assert rc == 2 and err.startswith("xeofm: error:") and "--resume" in err and err.count("\n") == 1
    for f in sorted((out_store / DONE_DIR).iterdir())[:2]:
        f.unlink()
    rc, out, err = run(capsys, "embed", *STAC_ARGS, "--out", out_store, "--resume", "--quiet")
    assert rc == 0 and "wrote 2 of 4 regions, 2 already done" in out and err == ""
    assert np.array_equal(open_embeddings(out_store).values, ref.values, equal_nan=True)
    # another model into the same store is refused; --overwrite replaces it
    other = ["--stac", CAT, "--collections", "landsat8", "--bands", "red", "green", "blue",
             "--model", "xeofm-demo-patchpca", "--datetime", "2020-05-18", "--max-items", "1"]
    rc, out, err = run(capsys, "embed", *other, "--out", out_store, "--resume", "--quiet")
    assert rc == 2 and "another job" in err and MODEL in err and "--overwrite" in err
    rc, out, err = run(capsys, "embed", *other, "--out", out_store, "--overwrite", "--quiet", "--dtype", "int8")
    assert rc == 0, err
    man = read_manifest(out_store)
    assert man["model"] == "xeofm-demo-patchpca" and man["storage"]["dtype"] == "int8"


def test_dry_run_and_plan_write_nothing(capsys, tmp_path):
    store = tmp_path / "never.zarr"
    rc, out, err = run(capsys, "embed", *STAC_ARGS, "--out", store, "--dry-run", "--chips-per-second", "50",
                       "--price", "2.5")
    assert rc == 0 and "Plan" in out and "chips" in out and "dry run" in out and "Estimate" in out
    assert not store.exists()
    rc, out, err = run(capsys, "plan", *STAC_ARGS, "--json", "--chips-per-second", "100", "--devices", "2")
    assert rc == 0
    d = json.loads(out)
    assert d["plan"]["model"] == MODEL and d["plan"]["chips_total"] > 0
    est = d["estimate"]
    assert est["device_hours"] == pytest.approx(d["plan"]["chips_total"] / 100 / 3600)
    assert est["wall_hours"] == pytest.approx(est["device_hours"] / 2)
    rc, out, err = run(capsys, "plan", *STAC_ARGS, "--tflops", "100")
    assert rc == 0 and "effective TFLOP/s" in out


def test_raster_and_zarr_inputs(capsys, tmp_path):
    tif = xd.sample_paths("rgbn")[0]
    rc, out, err = run(capsys, "embed", tif, "--bands", "red", "green", "blue", "nir", "--model", MODEL,
                       "--out", tmp_path / "r.zarr", "--quiet")
    assert rc == 0, err
    ref = xd.sample_cube("rgbn").isel(time=0).eofm.embed(MODEL, device="cpu")
    assert np.array_equal(open_embeddings(tmp_path / "r.zarr").values, ref.values, equal_nan=True)
    rc, out, err = run(capsys, "embed", tif, "--bands", "red", "green", "--model", MODEL, "--out", tmp_path / "x.zarr")
    assert rc == 2 and "has 4 bands" in err
    # band names come from the file's band descriptions when it has them...
    rc, out, err = run(capsys, "embed", tif, "--model", MODEL, "--out", tmp_path / "d.zarr", "--quiet")
    assert rc == 0, err
    # ...and must be given for unnamed bands
    import rasterio

    with rasterio.open(tif) as src:
        profile, arr = src.profile, src.read()
    with rasterio.open(tmp_path / "plain.tif", "w", **profile) as dst:
        dst.write(arr)
    rc, out, err = run(capsys, "embed", tmp_path / "plain.tif", "--model", MODEL, "--out", tmp_path / "x.zarr")
    assert rc == 2 and "unnamed bands" in err and "--bands" in err
    # a zarr cube as input
    cube_store = tmp_path / "cube.zarr"
    xd.sample_cube("rgbn").isel(time=slice(0, 2)).to_dataset(name="cube").to_zarr(cube_store)
    rc, out, err = run(capsys, "plan", cube_store, "--model", MODEL)
    assert rc == 0 and "'time': 2" in out


def test_bad_input_exit_codes_and_one_line_messages(capsys, tmp_path):
    cases = [
        (["embed", "--stac", tmp_path / "missing.json", "--bands", "red", "--model", MODEL, "--out", tmp_path / "o.zarr"],
         "does not exist"),
        (["embed", *STAC_ARGS[:-2], "--model", "no-such-model", "--out", tmp_path / "o.zarr"], "unknown model"),
        (["embed", "--stac", CAT, "--bands", "red", "green", "blue", "--model", MODEL, "--out",
          tmp_path / "o.zarr"], "different CRSs"),
        (["embed", "--stac", CAT, "--collections", "rgbn", "--bands", "red", "green", "blue", "--model", MODEL,
          "--out", tmp_path / "o.zarr"], "lacks bands"),
        (["embed", *STAC_ARGS, "--bbox", "0", "0", "1", "1", "--out", tmp_path / "o.zarr"], "no items matching"),
        (["embed", *STAC_ARGS, "--device", "cuda:7", "--out", tmp_path / "o.zarr"], "cuda"),
        (["plan", "--model", MODEL], "no input"),
    ]
    for argv, needle in cases:
        rc, out, err = run(capsys, *argv)
        assert rc == 2, (argv, err)
        assert err.startswith("xeofm: error:") and needle in err and err.count("\n") == 1, err
        assert not (tmp_path / "o.zarr").exists()
    rc, out, err = run(capsys, "embed", "--model", MODEL)  # argparse usage error
    assert rc == 2 and "--out" in err
    rc, out, err = run(capsys, "--version")
    assert rc == 0 and "xeofm" in out


def test_write_failure_exit_code_1_and_console_script(tmp_path):
    """A real process: the console entry point, a store that cannot be written (exit 1), then a resume."""
    store = tmp_path / "e.zarr"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, "-m", "xeofm.cli", "embed", *STAC_ARGS, "--out", str(store), "--quiet"]
    blocker = tmp_path / "blocker"
    # the store's done-marker folder is a file: writing any region's marker fails with an OSError
    cube = load_stac(CAT, ["red", "green", "blue", "nir"], collections="rgbn")
    to_zarr(cube.eofm.embed(MODEL, device="cpu"), store, compute=False)
    (store / "_xeofm").rename(blocker)
    (store / "_xeofm").mkdir()
    (store / "_xeofm" / "done").write_text("not a folder")
    (store / "_xeofm" / "manifest.json").write_bytes((blocker / "manifest.json").read_bytes())
    r = subprocess.run([*base, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.startswith("xeofm: failed:") and "resume=True" in r.stderr and r.stderr.count("\n") == 1
    (store / "_xeofm" / "done").unlink()
    r = subprocess.run([*base, "--resume"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 4 of 4 regions" in r.stdout
    assert open_embeddings(store).sizes["time"] == 4
