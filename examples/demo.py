"""The xeofm demo: sample cube -> embed -> segment -> change -> zarr + pictures.

Runs on a CPU in well under a minute, with the RGBN sample series and the
demonstration models shipped in the package (no downloads). Run it with
``bash examples/demo.sh`` (sets up ``.venv`` first) or
``python examples/demo.py --out out/demo``.

Writes ``<out>/embeddings.zarr``, ``<out>/labels.zarr`` and ``<out>/change.zarr``
with :func:`xeofm.to_zarr` (region by region, resumable; CRS and provenance
kept), ``<out>/demo.png`` (RGB, PCA of the embeddings, land-cover labels,
change) ``<out>/demo.html`` (interactive map) and ``<out>/summary.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import xarray as xr

import xeofm


def _stretch(a: np.ndarray, lo: float = 2, hi: float = 98) -> np.ndarray:
    v = a[np.isfinite(a)]
    p0, p1 = np.percentile(v, [lo, hi]) if v.size else (0, 1)
    return np.clip((a - p0) / max(p1 - p0, 1e-12), 0, 1)


def _pca_rgb(emb: np.ndarray) -> np.ndarray:
    """First three principal components of a (D, y, x) embedding, stretched to [0, 1]."""
    d, h, w = emb.shape
    X = emb.reshape(d, -1).T
    ok = np.isfinite(X).all(1)
    mu = X[ok].mean(0)
    _, _, vt = np.linalg.svd(X[ok] - mu, full_matrices=False)
    P = np.full((X.shape[0], 3), np.nan)
    P[ok] = (X[ok] - mu) @ vt[:3].T
    return np.stack([_stretch(P[:, i]) for i in range(3)], -1).reshape(h, w, 3)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="out/demo")
    p.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    cube = xeofm.data.sample_cube("rgbn")  # (time, band, y, x) uint8, lazy
    print(f"cube: {dict(cube.sizes)} {cube.dtype}, CRS {cube.rio.crs}, dates {list(cube.time.dt.strftime('%Y-%m-%d').values)}")

    encoder, segmenter = "xeofm-demo-patchpca-rgbn", "xeofm-demo-landcover"
    print(cube.eofm.plan(segmenter, device=args.device))

    emb = cube.eofm.embed(encoder, device=args.device)  # lazy (time, embedding, y, x)
    labels = cube.eofm.segment(segmenter, device=args.device)  # lazy (time, y, x) uint8
    # The four sample dates are copies of one scene, so the change is 0: the engine adds no noise
    # between identical dates (examples/change_detection.py shows change found on real differences).
    change = emb.eofm.change(dim="time", reference="first")

    # one store per grid (patch embeddings, pixel labels, patch change), written region by region;
    # re-running the demo resumes finished stores instead of recomputing them
    stores = {"embeddings": out / "embeddings.zarr", "labels": out / "labels.zarr", "change": out / "change.zarr"}
    t = time.perf_counter()
    jobs = {k: xeofm.to_zarr(v, stores[k], resume=True, overwrite=True) for k, v in
            (("embeddings", emb), ("labels", labels), ("change", change))}
    t_write = time.perf_counter() - t
    for k, job in jobs.items():
        print(f"{k}: {job.regions_written} regions written, {job.regions_done_before} already done -> {stores[k]}")

    # mask_and_scale=False keeps labels as uint8 with 255 = nodata (CF decoding would turn them to float)
    back = xr.open_zarr(stores["labels"], decode_coords="all", mask_and_scale=False)
    assert back.labels.rio.crs == cube.rio.crs, "CRS lost in the zarr round trip"

    # pictures (computed from the store: nothing is run twice)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    e0 = xeofm.open_embeddings(stores["embeddings"]).isel(time=0).values
    lab0 = back.labels.isel(time=0).values
    classes = labels.attrs["xeofm:classes"]
    colors = labels.attrs["xeofm:colors"]
    rgb = cube.isel(time=0).sel(band=["red", "green", "blue"]).transpose("y", "x", "band").values.astype(float)
    panels = 3 + (change is not None)
    fig, ax = plt.subplots(1, panels, figsize=(5 * panels, 4.4))
    ax[0].imshow(_stretch(rgb))
    ax[0].set_title("RGB, " + str(cube.time.dt.strftime("%Y-%m-%d").values[0]))
    ax[1].imshow(_pca_rgb(e0), interpolation="nearest")
    ax[1].set_title(f"{encoder}: PCA of embeddings")
    ax[2].imshow(np.ma.masked_equal(lab0, 255), cmap=ListedColormap(colors), vmin=-0.5, vmax=len(classes) - 0.5, interpolation="nearest")
    ax[2].set_title(f"{segmenter}")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors]
    ax[2].legend(handles, classes, loc="lower left", fontsize=8, framealpha=0.8)
    summary: dict = {}
    if change is not None:
        ch = xeofm.open_embeddings(stores["change"]).max("time").values
        im = ax[3].imshow(ch, cmap="magma", vmin=0, vmax=max(float(np.nanmax(ch)), 1e-6))
        ax[3].set_title("max cosine change vs first date")
        fig.colorbar(im, ax=ax[3], fraction=0.04)
        summary["max_change"] = float(np.nanmax(ch))
    for a in ax:
        a.set_xticks([])
        a.set_yticks([])
    fig.suptitle(f"xeofm demo — sample RGBN series, {cube.rio.crs}")
    fig.tight_layout()
    fig.savefig(out / "demo.png", dpi=90)

    counts = np.bincount(lab0[lab0 != 255].ravel(), minlength=len(classes))
    summary.update(
        {
            "cube": {k: int(v) for k, v in cube.sizes.items()},
            "embeddings": {k: int(v) for k, v in emb.sizes.items()},
            "labels": {k: int(v) for k, v in labels.sizes.items()},
            "class_fractions_first_date": {c: float(n / max(counts.sum(), 1)) for c, n in zip(classes, counts)},
            "seconds_total": time.perf_counter() - t0,
            "seconds_compute_and_write": t_write,
            "stores": {k: str(v) for k, v in stores.items()},
            "regions_written": sum(j.regions_written for j in jobs.values()),
            "picture": str(out / "demo.png"),
            "note": "the sample's four dates are copies of one scene: max_change 0 shows no noise between identical dates",
        }
    )
    try:  # an interactive map (labels with a date slider + change) when the [viz] extra is installed
        import holoviews  # noqa: F401
    except ImportError:
        pass
    else:
        lab = back.labels
        html = xeofm.viz.save_html(
            lab.eofm.plot(title="demo land cover") + change.compute().eofm.plot.change(title="change vs first date"),
            out / "demo.html",
            title="xeofm demo",
        )
        summary["map"] = str(html)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return summary


if __name__ == "__main__":
    main()
