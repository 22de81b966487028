"""The shipped demonstration encoder: a linear patch embedding fitted by PCA.

``xeofm-demo-patchpca`` is *not* a foundation model. It is a single strided
convolution whose filters are the leading principal components of
8x8-pixel RGB patches of the Landsat 8 sample scene shipped with xeofm, after
per-band standardisation. Its embedding of a patch is the patch's PCA score
vector. It exists so the demo and tests run with real, meaningful weights on a
machine that cannot download anything; it has no knowledge beyond that scene.

Refit it with ``python -m xeofm.models.demo`` (writes the files in
``xeofm/models/weights/``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..bands import RGB

WEIGHTS_DIR = Path(__file__).parent / "weights"
STEM = "demo-patchpca-landsat-rgb"
PATCH = 8
DIM = 16
CHIP = 64

_meta_file = WEIGHTS_DIR / f"{STEM}.json"
_meta: dict[str, Any] = json.loads(_meta_file.read_text()) if _meta_file.is_file() else {}

DEMO_SPEC_KWARGS: dict[str, Any] = dict(
    name="xeofm-demo-patchpca",
    bands=RGB,
    chip_size=CHIP,
    stride=PATCH,
    embedding_dim=DIM,
    output="patch",
    mean=tuple(_meta.get("mean", (0.0, 0.0, 0.0))),
    std=tuple(_meta.get("std", (1.0, 1.0, 1.0))),
    builder="xeofm.models.demo:build",
    builder_kwargs={},
    overlap=16,
    gsd=30.0,
    dtype="uint16",
    licence="Apache-2.0 (fitted on MIT-licensed sample data)",
    description=(
        "Demonstration only: linear 8x8 patch encoder whose filters are the top-16 principal "
        "components of standardised RGB patches of the shipped Landsat 8 sample"
    ),
)


def build(**_: Any):
    """Build the (untrained) patch encoder module: ``Conv2d(3, 16, 8, stride=8)``."""
    import torch

    return torch.nn.Conv2d(len(RGB), DIM, kernel_size=PATCH, stride=PATCH, bias=True)


def fit(n_patches: int = 20000, seed: int = 0) -> dict[str, Any]:
    """Fit the PCA filters on the Landsat sample and write weights + statistics."""
    import numpy as np
    import torch
    from safetensors.torch import save_file

    from ..data import sample_cube

    cube = sample_cube("landsat", chunks=None).sel(band=["red", "green", "blue"])
    a = cube.values.astype(np.float64)  # (3, H, W)
    nodata = cube.rio.nodata
    valid = np.isfinite(a).all(0)
    if nodata is not None:
        valid &= (a != nodata).all(0)
    mean = np.array([a[b][valid].mean() for b in range(3)])
    std = np.array([a[b][valid].std() for b in range(3)])
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
    explained = (s[:DIM] ** 2).sum() / (s**2).sum()
    weight = torch.tensor(comps.reshape(DIM, 3, PATCH, PATCH), dtype=torch.float32)
    bias = torch.tensor(-(comps @ mu), dtype=torch.float32)
    WEIGHTS_DIR.mkdir(parents=True, exist_ok=True)
    save_file({"weight": weight, "bias": bias}, str(WEIGHTS_DIR / f"{STEM}.safetensors"))
    meta = {
        "mean": mean.tolist(),
        "std": std.tolist(),
        "explained_variance": float(explained),
        "n_patches": n_patches,
        "seed": seed,
        "source": "xeofm.data.sample_cube('landsat'), bands red/green/blue",
    }
    (WEIGHTS_DIR / f"{STEM}.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


if __name__ == "__main__":  # pragma: no cover
    print(json.dumps(fit(), indent=2))
