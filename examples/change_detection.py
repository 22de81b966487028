"""Change detection with embeddings, step by step, on the shipped RGBN series.

Run it as a script (headless) or cell by cell (``# %%``) in an editor::

    python examples/change_detection.py [OUT_DIR]

Pictures, HTML plots and tables go to ``OUT_DIR`` (or ``$XEOFM_EXAMPLES_OUT``,
default ``out/examples/``). The PNGs in ``docs/images/change_*.png`` are the
ones this script writes.

The four dates of the ``rgbn`` sample are byte-identical copies of one image
(see ``xeofm/data/samples/README.md``), so there is no real change to find. The
script first checks that the change maps of the real series are exactly zero,
then pastes two known, synthetic changes into the later dates (blocks of
pixels copied from elsewhere in the same scene) and shows how well they are
found, against that known truth.
"""

# %% Set-up
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import dask
import numpy as np
import xarray as xr

import xeofm
from xeofm import ops, viz
from xeofm.labels import as_label_cube

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("XEOFM_EXAMPLES_OUT", "out/examples"))
OUT.mkdir(parents=True, exist_ok=True)
MODEL = "xeofm-demo-patchpca-rgbn"  # 8 x 8 px patch encoder fitted on this sample (16-D)
t_start = time.perf_counter()

# %% The series: 4 dates, red/green/blue/nir, 5 m, UTM 18N (lazy)
cube = xeofm.data.sample_cube("rgbn")
dates = [str(d)[:10] for d in cube.time.values]
print(f"cube {dict(cube.sizes)} {cube.dtype}, {cube.rio.crs}, dates {dates}")

# %% Sanity check: identical dates give exactly zero change
emb_real = cube.eofm.embed(MODEL)  # lazy (time, embedding, y, x), one vector per 8 x 8 px patch
real_max = float(ops.change(emb_real, reference="first").max())
print(f"largest change in the real series: {real_max}")
assert real_max == 0.0

# %% Paste two synthetic changes into the later dates (known truth)
# A: from 2016-05-17 on, a built-up block gets the pixels of a vegetated area;
# C: on 2017-02-03, a block of the bright river bed gets built-up pixels.
# Both are aligned to the model's 8-pixel patches, so the truth is exact at patch level.
A, A_SRC = (slice(96, 144), slice(40, 88)), (slice(40, 88), slice(200, 248))
C, C_SRC = (slice(152, 200), slice(184, 232)), (slice(16, 64), slice(24, 72))
px = cube.values.copy()
for t in (2, 3):
    px[t][:, A[0], A[1]] = px[0][:, A_SRC[0], A_SRC[1]]
px[3][:, C[0], C[1]] = px[0][:, C_SRC[0], C_SRC[1]]
changed = cube.copy(data=px).chunk({"time": 1})

truth = np.zeros((4, 32, 32), dtype=bool)  # changed patches per date, relative to the previous date
truth[2, 12:18, 5:11] = True
truth[3, 19:25, 23:29] = True

# %% Embed and compare dates (all lazy until dask.compute)
emb = changed.eofm.embed(MODEL)
vs_previous = ops.change(emb)  # each date against the one before
vs_first = ops.change(emb, reference="first")  # each date against 2016-01-01
vs_window = ops.change(emb, reference={"window": 2})  # against the mean of the 2 dates before
mask = ops.threshold(vs_previous, "otsu")  # automatic threshold from a sample
mask_mad = ops.threshold(vs_previous, "mad", k=3)
t0 = time.perf_counter()
vs_previous, vs_first, vs_window, mask, mask_mad = dask.compute(vs_previous, vs_first, vs_window, mask, mask_mad)
print(f"embedded 4 dates and compared them in {time.perf_counter() - t0:.2f} s (one pass)")
print(f"Otsu threshold {float(mask.threshold):.4f}, MAD threshold {float(mask_mad.threshold):.4f}")


# %% Plain xarray keeps working on the embeddings (still lazy: nothing runs until .compute())
yearly = ops.change(emb.resample(time="1YS").mean())  # 2016 mean (3 dates) vs 2017
smoothed = ops.change(emb.rolling(time=2).mean().isel(time=slice(1, None)))
seasons = ops.change(emb.groupby("time.season").mean(), dim="season", reference="first")
speed_up = vs_previous.diff("time")  # computed already: is change accelerating?
yearly, smoothed, seasons = dask.compute(yearly, smoothed, seasons)
print(
    f"2016->2017 change of annual means: max {float(yearly.max()):.3f}; rolling-mean change max "
    f"{float(smoothed.max()):.3f}; seasons {list(seasons.season.values)}; diff of change max {float(speed_up.max()):.3f}"
)


# %% Score the change masks against the known truth
def score(pred: np.ndarray, true: np.ndarray) -> dict:
    tp = int((pred & true).sum())
    return {
        "precision": tp / max(int(pred.sum()), 1),
        "recall": tp / max(int(true.sum()), 1),
        "changed_patches_found": int(pred.sum()),
        "changed_patches_true": int(true.sum()),
    }


scores = {
    "otsu": score(mask.values, truth[1:]),
    "mad": score(mask_mad.values, truth[1:]),
}
for k, v in scores.items():
    print(f"{k:>5}: precision {v['precision']:.3f}, recall {v['recall']:.3f} ({v['changed_patches_found']} patches)")

# %% A simple label cube from spectral rules (NDVI and brightness), lazily
red, green, blue, nir = (changed.sel(band=b).astype("float32") for b in ("red", "green", "blue", "nir"))
ndvi = (nir - red) / (nir + red).where(nir + red > 0)
bright = (red + green + blue) / 3
CLASSES = ["water", "vegetation", "bare", "built"]
ids = xr.where(ndvi > 0.1, 1, xr.where(nir < 60, 0, xr.where(bright > 190, 2, 3)))
labels = as_label_cube(ids.where(ndvi.notnull(), 255), CLASSES)
labels = labels.rio.write_crs(cube.rio.crs)  # xr.where drops the attributes of spatial_ref: set the CRS again

# %% Class areas per date and the from-to table, in km² (equal-area correct)
areas = ops.area(labels)
table = ops.transitions(labels, "2016-01-01", "2017-02-03")
print("class areas (km²):\n", areas.round(4))
print(f"transitions 2016-01-01 -> 2017-02-03 (km², {table.attrs['area_method']}):\n", table.round(4))
areas.to_csv(OUT / "change_class_areas.csv")
table.to_csv(OUT / "change_transitions.csv")
off_diagonal = float(table.values.sum() - np.trace(table.values))
print(f"area that changed class: {off_diagonal:.4f} km² (the pasted blocks cover {2 * 48 * 48 * 25 / 1e6:.4f} km²; part kept its class)")

# %% Pictures (matplotlib, for the docs)
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402


def save_png(fig, path: Path) -> None:
    """Save a figure as a small palette PNG."""
    fig.savefig(path, dpi=64)
    plt.close(fig)
    try:
        from PIL import Image

        Image.open(path).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE).save(path, optimize=True)
    except ImportError:  # pragma: no cover - keep matplotlib's PNG
        pass


def rgb_of(t: int) -> np.ndarray:
    a = changed.isel(time=t).sel(band=["red", "green", "blue"]).transpose("y", "x", "band").values.astype(float)
    lo, hi = np.percentile(a, [2, 98])
    return np.clip((a - lo) / (hi - lo), 0, 1)


def outline(ax, block, color):
    (r, c) = block
    ax.add_patch(Rectangle((c.start - 0.5, r.start - 0.5), c.stop - c.start, r.stop - r.start, fill=False, ec=color, lw=1.5))


ext = [0, 256, 256, 0]
fig, axes = plt.subplots(2, 4, figsize=(16, 8.6), layout="constrained")
for i, t in enumerate((0, 3)):
    axes[0, i].imshow(rgb_of(t))
    axes[0, i].set_title(f"RGB {dates[t]}" + (" (synthetic changes)" if t else ""))
outline(axes[0, 1], A, "yellow")
outline(axes[0, 1], C, "cyan")
for i, t in enumerate((1, 2)):  # change vs previous at 2016-05-17 and 2017-02-03
    im = axes[0, 2 + i].imshow(vs_previous.isel(time=t).values, cmap="magma", vmin=0, vmax=1, extent=ext)
    axes[0, 2 + i].set_title(f"cosine change {dates[t + 1]} vs {dates[t]}")
fig.colorbar(im, ax=axes[0, 3], fraction=0.046)
im = axes[1, 0].imshow(vs_first.isel(time=3).values, cmap="magma", vmin=0, vmax=1, extent=ext)
axes[1, 0].set_title(f"change {dates[3]} vs first date")
axes[1, 1].imshow(mask.any("time").values, cmap="gray", extent=ext)
axes[1, 1].set_title(f"Otsu mask, any date (t = {float(mask.threshold):.3f})")
cmap = ListedColormap(labels.attrs["xeofm:colors"])
for i, t in enumerate((0, 3)):
    lab = np.ma.masked_equal(labels.isel(time=t).values, 255)
    axes[1, 2 + i].imshow(lab, cmap=cmap, vmin=-0.5, vmax=len(CLASSES) - 0.5, interpolation="nearest")
    axes[1, 2 + i].set_title(f"spectral classes {dates[t]}")
handles = [Rectangle((0, 0), 1, 1, color=c) for c in labels.attrs["xeofm:colors"]]
axes[1, 3].legend(handles, CLASSES, loc="lower left", fontsize=8, framealpha=0.85)
for ax in axes.ravel():
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"{MODEL} embeddings of the RGBN sample with two pasted changes — {cube.rio.crs}, 5 m pixels, 40 m patches")
save_png(fig, OUT / "change_overview.png")

fig, ax = plt.subplots(figsize=(5.6, 4.6), layout="constrained")
m = table.values
im = ax.imshow(np.where(m > 0, m, np.nan), cmap="viridis", norm=matplotlib.colors.LogNorm())
ax.set_xticks(range(len(CLASSES)), CLASSES)
ax.set_yticks(range(len(CLASSES)), CLASSES)
ax.set_xlabel(f"to ({table.attrs['end']})")
ax.set_ylabel(f"from ({table.attrs['start']})")
for (i, j), v in np.ndenumerate(m):
    ax.text(j, i, f"{v:.3f}", ha="center", va="center", color="w" if v < np.sqrt(m.max() * m[m > 0].min()) else "k", fontsize=8)
fig.colorbar(im, ax=ax, label="km²")
ax.set_title("class transitions (km²)")
save_png(fig, OUT / "change_transitions.png")

# %% Interactive plots, saved as self-contained HTML (date sliders)
viz.save_html(viz.plot_change(vs_first), OUT / "change_vs_first.html")
viz.save_html(viz.plot_labels(labels), OUT / "change_labels.html")
viz.save_html(viz.plot_rgb(changed), OUT / "change_rgb.html")

# %% Summary
summary = {
    "model": MODEL,
    "dates": dates,
    "real_series_max_change": real_max,
    "otsu_threshold": float(mask.threshold),
    "mad_threshold": float(mask_mad.threshold),
    "scores": scores,
    "changed_class_km2": off_diagonal,
    "seconds": round(time.perf_counter() - t_start, 2),
}
(OUT / "change_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
print(json.dumps(summary, indent=2))
