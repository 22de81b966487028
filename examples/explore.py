"""Exploring a scene through its embeddings: false colour, similarity, search.

Run it as a script (headless) or cell by cell (``# %%``) in an editor::

    python examples/explore.py [OUT_DIR]

Pictures, HTML plots and tables go to ``OUT_DIR`` (or ``$XEOFM_EXAMPLES_OUT``,
default ``out/examples/``). The PNGs in ``docs/images/explore_*.png`` are the
ones this script writes.

The scene is the shipped Landsat 8 sample (path 224 row 78, 2020-05-18,
blue/green/red, 30 m): farmland, forest, the west arm of the Itaipu reservoir
and part of Foz do Iguaçu. The model is ``xeofm-demo-patchpca``, a 16-D
linear encoder of 8 x 8 pixel patches fitted on this scene: a demonstration
model, not a foundation model, so "similar" here means "similar 240 m patch
of colour and texture".
"""

# %% Set-up
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import xeofm
from xeofm import ops, viz
from xeofm.errors import InputError

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("XEOFM_EXAMPLES_OUT", "out/examples"))
OUT.mkdir(parents=True, exist_ok=True)
MODEL = "xeofm-demo-patchpca"
t_start = time.perf_counter()

# %% Embed the scene (lazy), then keep the small result in memory for exploring
cube = xeofm.data.sample_cube("landsat")  # (band, y, x) uint16, nodata 0
emb = cube.eofm.embed(MODEL)  # lazy (embedding, y, x): one 16-D vector per 240 m patch
emb = emb.persist()  # 1 MB here; for a large cube write it to zarr and open that instead
print(f"embeddings {dict(emb.sizes)}, {emb.rio.crs}, model {emb.attrs['xeofm:model']}")

# %% Embeddings as colour: three principal components as RGB
fit = ops.fit_pca(emb, n=3, sample=20_000)
print("PCA variance explained:", np.round(fit.explained_variance_ratio, 3), f"(fitted on {fit.n_samples} patches)")
pc = ops.robust_stretch(ops.pca(emb, fit=fit), "component").compute()

# %% "Click" a point: the labelled water point of the sample, given in longitude/latitude
import geopandas as gpd  # noqa: E402
from pyproj import Transformer  # noqa: E402

points = gpd.read_file(xeofm.data.SAMPLES_DIR / "labels_points.geojson")
polygons = gpd.read_file(xeofm.data.SAMPLES_DIR / "labels_polygons.geojson")
water = points.loc[points.name == "water"].geometry.iloc[0]
lon, lat = water.x, water.y
sim_water = ops.similarity(emb, x=lon, y=lat, crs="EPSG:4326").compute()
print(f"clicked lon={lon:.5f}, lat={lat:.5f}: {sim_water.attrs['xeofm:query']}")

# %% The 10 most similar places, at least 1.5 km apart (blockwise top-k)
top_water = ops.search(emb, (lon, lat), k=10, crs="EPSG:4326", min_distance=1500)
print(top_water.round({"lon": 5, "lat": 5, "score": 3}).to_string())
top_water.to_csv(OUT / "explore_top_water.csv")

# %% Query by a polygon: the mean embedding of the sample's "tree" polygon
tree = polygons.loc[polygons.name == "tree"]  # a GeoDataFrame in EPSG:4326
sim_tree = ops.similarity(emb, geometry=tree).compute()
top_tree = ops.search(emb, tree, k=10, min_distance=1500)
print(sim_tree.attrs["xeofm:query"])
print(top_tree.round({"lon": 5, "lat": 5, "score": 3}).to_string())
top_tree.to_csv(OUT / "explore_top_tree.csv")

# %% Are the queries out of the scene refused? (a point in the Atlantic)
try:
    ops.similarity(emb, x=-40.0, y=-25.0, crs="EPSG:4326")
except InputError as e:
    print("refused:", str(e)[:90], "...")

# %% Pictures (matplotlib, for the docs)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def save_png(fig, path: Path) -> None:
    """Save a figure as a small palette PNG."""
    fig.savefig(path, dpi=64)
    plt.close(fig)
    try:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=160, dither=Image.Dither.NONE).save(path, optimize=True)
    except ImportError:  # pragma: no cover - keep matplotlib's PNG
        pass


xs, ys = cube.x.values, cube.y.values
extent = [xs[0] - 15, xs[-1] + 15, ys[-1] - 15, ys[0] + 15]
rgb = cube.sel(band=["red", "green", "blue"]).transpose("y", "x", "band").values.astype(float)
rgb[rgb == 0] = np.nan
lo, hi = np.nanpercentile(rgb, [2, 98], axis=(0, 1))
rgb = np.nan_to_num(np.clip((rgb - lo) / (hi - lo), 0, 1), nan=1.0)
pc_img = np.nan_to_num(pc.transpose("y", "x", "component").values, nan=1.0)
tree_utm = tree.to_crs(cube.rio.crs)

fig, axes = plt.subplots(1, 2, figsize=(13, 6.6), layout="constrained")
axes[0].imshow(rgb, extent=extent)
axes[0].set_title("Landsat 8, 2020-05-18 (red/green/blue)")
axes[1].imshow(pc_img, extent=extent, interpolation="nearest")
r = fit.explained_variance_ratio
axes[1].set_title(f"embeddings as colour: 3 principal components ({100 * r.sum():.0f}% of the variance)")
for ax in axes:
    ax.set_xlabel(f"x ({cube.rio.crs}, m)")
axes[0].set_ylabel(f"y ({cube.rio.crs}, m)")
save_png(fig, OUT / "explore_pca.png")

fig, axes = plt.subplots(1, 2, figsize=(13, 6.6), layout="constrained")
wx, wy = Transformer.from_crs("EPSG:4326", cube.rio.crs.to_wkt(), always_xy=True).transform(lon, lat)
for ax, sim, top, what in ((axes[0], sim_water, top_water, "the water point"), (axes[1], sim_tree, top_tree, "the tree polygon")):
    im = ax.imshow(sim.values, extent=extent, cmap="viridis", vmin=-1, vmax=1, interpolation="nearest")
    ax.scatter(top.x[1:], top.y[1:], s=60, facecolors="none", edgecolors="red", linewidths=1.5, label="top 10 (1.5 km apart)")
    ax.scatter(top.x[:1], top.y[:1], s=90, marker="x", color="red", label="best match")
    ax.set_title(f"cosine similarity to {what}")
    ax.set_xlabel(f"x ({cube.rio.crs}, m)")
axes[0].scatter([wx], [wy], s=140, marker="*", color="white", edgecolors="k", label="clicked point")
tree_utm.boundary.plot(ax=axes[1], color="white", linewidth=1.5)
axes[0].set_ylabel(f"y ({cube.rio.crs}, m)")
axes[1].set_ylabel("")
for ax in axes:
    ax.legend(loc="upper right", fontsize=8)
fig.colorbar(im, ax=axes, fraction=0.03, label="cosine similarity")
save_png(fig, OUT / "explore_similarity.png")

# %% Interactive plots, saved as self-contained HTML
viz.save_html(viz.plot_rgb(cube), OUT / "explore_rgb.html")
viz.save_html(viz.plot_pca(emb, fit=fit), OUT / "explore_pca.html")
viz.save_html(viz.plot_similarity(sim_water), OUT / "explore_similarity.html")


# %% In a notebook: tap anywhere on the false-colour map to see what looks alike
def similarity_explorer(emb, fit):
    """False colour on the left; similarity to the last tapped place on the right."""
    import holoviews as hv

    base = viz.plot_pca(emb, fit=fit, width=420)
    x0, y0 = float(emb.x.mean()), float(emb.y.mean())
    tap = hv.streams.Tap(source=base, x=x0, y=y0)

    def at(x, y):
        try:
            s = ops.similarity(emb, x=x, y=y).compute()
        except InputError:  # tapped outside the scene
            s = ops.similarity(emb, x=x0, y=y0).compute()
        return viz.plot_similarity(s, rasterize=False, clim=(-1, 1), width=420)

    return base + hv.DynamicMap(at, streams=[tap])


explorer = similarity_explorer(emb, fit)
explorer[1].event(x=float(wx), y=float(wy))  # what a tap on the water point does
viz.save_html(explorer, OUT / "explore_tap.html")  # static copy: taps need a live notebook

# %% Summary
summary = {
    "model": MODEL,
    "embeddings": {k: int(v) for k, v in emb.sizes.items()},
    "pca_variance_explained": [round(float(v), 4) for v in fit.explained_variance_ratio],
    "query_water": {"lon": lon, "lat": lat, "top1_score": float(top_water.score.iloc[0])},
    "query_tree": sim_tree.attrs["xeofm:query"],
    "seconds": round(time.perf_counter() - t_start, 2),
}
(OUT / "explore_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
