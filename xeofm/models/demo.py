"""Small demonstration models fitted on the sample imagery shipped with xeofm.

These are *not* foundation models and know nothing beyond the two sample
scenes. They exist so the demo, the examples and the tests run with real,
meaningful weights on a machine that cannot download anything.

``xeofm-demo-patchpca`` / ``xeofm-demo-patchpca-rgbn``
    A single strided convolution whose 16 filters are the leading principal
    components of standardised 8x8-pixel patches of the Landsat 8 sample (RGB)
    or of the RGBN sample (red, green, blue, NIR). A patch's embedding is its
    PCA score vector.

``xeofm-demo-landcover``
    A four-layer CNN (about 6k parameters) on RGBN that maps pixels to
    ``water``, ``vegetation``, ``bare`` and ``built``. It was trained on weak
    labels computed from spectral indices of the RGBN sample
    (:func:`weak_labels`) and scored on spatially held-out blocks of that scene;
    the numbers are in ``weights/demo-landcover-rgbn.json`` and the docs. It
    reproduces the index rules with a little spatial context; it has not been
    validated against ground truth.

Refit them with ``python -m xeofm.models.demo`` (writes ``weights/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..bands import RGB, RGBN

WEIGHTS_DIR = Path(__file__).parent / "weights"
PATCH = 8
DIM = 16
LANDCOVER_CLASSES = ("water", "vegetation", "bare", "built")
LANDCOVER_COLORS = ("#419bdf", "#397d49", "#d8c9a6", "#c4281b")

ENCODERS: dict[str, dict[str, Any]] = {
    "xeofm-demo-patchpca": {"sample": "landsat", "bands": RGB, "gsd": 30.0, "stem": "demo-patchpca-landsat-rgb"},
    "xeofm-demo-patchpca-rgbn": {"sample": "rgbn", "bands": RGBN, "gsd": 5.0, "stem": "demo-patchpca-rgbn"},
}
LANDCOVER_STEM = "demo-landcover-rgbn"


def _meta(stem: str) -> dict[str, Any] | None:
    f = WEIGHTS_DIR / f"{stem}.json"
    return json.loads(f.read_text()) if f.is_file() else None


def build_patch_encoder(in_chans: int = 3, **_: Any):
    """Untrained patch encoder: ``Conv2d(in_chans, 16, 8, stride=8)``."""
    import torch

    return torch.nn.Conv2d(in_chans, DIM, kernel_size=PATCH, stride=PATCH, bias=True)


def build_landcover(**_: Any):
    """Untrained landcover CNN: RGBN in, 4 class logits per pixel out (receptive field 9 px)."""
    import torch

    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(4, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=2, dilation=2),
        nn.ReLU(),
        nn.Conv2d(16, len(LANDCOVER_CLASSES), 1),
    )


def specs() -> list:
    """Specs of the demo models whose weight files are present."""
    from ..spec import ModelSpec

    out = []
    for name, cfg in ENCODERS.items():
        meta = _meta(cfg["stem"])
        if meta is None:
            continue
        out.append(
            ModelSpec(
                name=name,
                bands=cfg["bands"],
                chip_size=64,
                stride=PATCH,
                embedding_dim=DIM,
                output="patch",
                mean=tuple(meta["mean"]),
                std=tuple(meta["std"]),
                builder="xeofm.models.demo:build_patch_encoder",
                builder_kwargs={"in_chans": len(cfg["bands"])},
                weights=str(WEIGHTS_DIR / f"{cfg['stem']}.safetensors"),
                overlap=16,
                gsd=cfg["gsd"],
                licence="Apache-2.0 (fitted on MIT-licensed sample data)",
                description=(
                    f"Demonstration only: linear 8x8 patch encoder whose 16 filters are the principal "
                    f"components of standardised patches of the '{cfg['sample']}' sample"
                ),
            )
        )
    meta = _meta(LANDCOVER_STEM)
    if meta is not None:
        out.append(
            ModelSpec(
                name="xeofm-demo-landcover",
                bands=RGBN,
                chip_size=64,
                stride=1,
                embedding_dim=len(LANDCOVER_CLASSES),
                output="patch",
                mean=tuple(meta["mean"]),
                std=tuple(meta["std"]),
                builder="xeofm.models.demo:build_landcover",
                weights=str(WEIGHTS_DIR / f"{LANDCOVER_STEM}.safetensors"),
                overlap=16,
                gsd=5.0,
                metadata={"classes": LANDCOVER_CLASSES, "colors": LANDCOVER_COLORS, "task": "segmentation"},
                licence="Apache-2.0 (trained on MIT-licensed sample data)",
                description=(
                    "Demonstration only: small CNN trained on index-based weak labels of the RGBN sample "
                    "(water, vegetation, bare, built); not a land-cover product"
                ),
            )
        )
    return out


# ----------------------------------------------------------------------------- fitting
def _load_sample(name: str, bands) -> tuple[np.ndarray, np.ndarray]:
    from ..data import sample_cube

    cube = sample_cube(name, chunks=None)
    if "time" in cube.dims:
        cube = cube.isel(time=0)
    cube = cube.sel(band=[b.id for b in bands])
    a = cube.values.astype(np.float64)
    valid = np.isfinite(a).all(0)
    nodata = cube.rio.nodata
    if nodata is not None:
        valid &= (a != nodata).all(0)
    return a, valid


def fit_patch_encoder(name: str, n_patches: int = 20000, seed: int = 0) -> dict[str, Any]:
    """Fit one PCA patch encoder and write its weights and statistics."""
    import torch
    from safetensors.torch import save_file

    cfg = ENCODERS[name]
    a, valid = _load_sample(cfg["sample"], cfg["bands"])
    nb = a.shape[0]
    mean = np.array([a[b][valid].mean() for b in range(nb)])
    std = np.array([a[b][valid].std() for b in range(nb)])
    z = (a - mean[:, None, None]) / std[:, None, None]
    rng = np.random.default_rng(seed)
    H, W = valid.shape
    patches = []
    while len(patches) < n_patches:
        i, j = rng.integers(0, H - PATCH), rng.integers(0, W - PATCH)
        if valid[i : i + PATCH, j : j + PATCH].all():
            patches.append(z[:, i : i + PATCH, j : j + PATCH].ravel())
    X = np.stack(patches)
    mu = X.mean(0)
    _, s, vt = np.linalg.svd(X - mu, full_matrices=False)
    comps = vt[:DIM]
    weight = torch.tensor(comps.reshape(DIM, nb, PATCH, PATCH), dtype=torch.float32)
    bias = torch.tensor(-(comps @ mu), dtype=torch.float32)
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    save_file({"weight": weight, "bias": bias}, str(WEIGHTS_DIR / f"{cfg['stem']}.safetensors"))
    meta = {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "explained_variance": float((s[:DIM] ** 2).sum() / (s**2).sum()),
        "n_patches": n_patches,
        "seed": seed,
        "source": f"xeofm.data.sample_cube({cfg['sample']!r}), bands {[b.id for b in cfg['bands']]}",
    }
    (WEIGHTS_DIR / f"{cfg['stem']}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def weak_labels(rgbn: np.ndarray) -> np.ndarray:
    """Index-based weak labels for an 8-bit RGBN array ``(4, H, W)``.

    Rules, applied in order (later rules win):

    * ``built`` (3): everything not matched below;
    * ``bare`` (2): bright and not green: mean(R, G, B) above the scene's 80th
      percentile and NDVI < 0.05;
    * ``vegetation`` (1): NDVI > 0.12;
    * ``water`` (0): dark in the NIR (below its 3rd percentile) with NDVI < 0.

    Returns ``uint8`` labels, 255 where a band is invalid.
    """
    r, g, b, n = (rgbn[i].astype(np.float64) for i in range(4))
    ndvi = (n - r) / np.maximum(n + r, 1e-6)
    bright = (r + g + b) / 3
    lab = np.full(r.shape, 3, np.uint8)
    lab[(bright > np.nanpercentile(bright, 80)) & (ndvi < 0.05)] = 2
    lab[ndvi > 0.12] = 1
    lab[(n < np.nanpercentile(n, 3)) & (ndvi < 0)] = 0
    lab[~np.isfinite(rgbn).all(0)] = 255
    return lab


def fit_landcover(steps: int = 600, seed: int = 0, block: int = 64) -> dict[str, Any]:
    """Train the demo landcover CNN on weak labels; hold out every 4th block of a 64 px checkerboard."""
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    a, valid = _load_sample("rgbn", RGBN)
    lab = weak_labels(a)
    lab[~valid] = 255
    mean = np.array([a[i][valid].mean() for i in range(4)])
    std = np.array([a[i][valid].std() for i in range(4)])
    z = ((a - mean[:, None, None]) / std[:, None, None]).astype(np.float32)
    H, W = lab.shape
    bi, bj = np.meshgrid(np.arange(H) // block, np.arange(W) // block, indexing="ij")
    test = ((bi + bj) % 4) == 0
    train_lab = np.where(test, 255, lab).astype(np.int64)
    train_lab[train_lab == 255] = -100  # ignored by the loss
    model = build_landcover()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    counts = np.bincount(lab[~test & (lab < 255)], minlength=4).astype(np.float64)
    cw = torch.tensor(counts.sum() / np.maximum(counts, 1) / 4, dtype=torch.float32)
    zt, lt = torch.from_numpy(z), torch.from_numpy(train_lab)
    C = 64
    for step in range(steps):
        ii = rng.integers(0, H - C, 16)
        jj = rng.integers(0, W - C, 16)
        xb = torch.stack([zt[:, i : i + C, j : j + C] for i, j in zip(ii, jj)])
        yb = torch.stack([lt[i : i + C, j : j + C] for i, j in zip(ii, jj)])
        loss = torch.nn.functional.cross_entropy(model(xb), yb, weight=cw, ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(zt[None])[0].argmax(0).numpy()
    ok = test & (lab < 255)
    cm = np.zeros((4, 4), int)
    np.add.at(cm, (lab[ok], pred[ok]), 1)
    acc = float(np.trace(cm) / cm.sum())
    per = {
        c: {
            "precision": float(cm[k, k] / cm[:, k].sum()) if cm[:, k].sum() else None,
            "recall": float(cm[k, k] / cm[k].sum()) if cm[k].sum() else None,
            "support": int(cm[k].sum()),
        }
        for k, c in enumerate(LANDCOVER_CLASSES)
    }
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(WEIGHTS_DIR / f"{LANDCOVER_STEM}.safetensors"))
    meta = {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "classes": list(LANDCOVER_CLASSES),
        "held_out": "every 4th 64x64 block of a checkerboard over the RGBN sample ((i + j) % 4 == 0)",
        "reference": "index-based weak labels (xeofm.models.demo.weak_labels), not ground truth",
        "heldout_pixel_agreement": acc,
        "confusion_matrix_rows_truth": cm.tolist(),
        "per_class": per,
        "steps": steps,
        "seed": seed,
        "parameters": int(sum(p.numel() for p in model.parameters())),
    }
    (WEIGHTS_DIR / f"{LANDCOVER_STEM}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def main() -> None:  # pragma: no cover
    for name in ENCODERS:
        print(name, json.dumps(fit_patch_encoder(name), indent=2))
    print("xeofm-demo-landcover", json.dumps(fit_landcover(), indent=2))


if __name__ == "__main__":  # pragma: no cover
    main()
