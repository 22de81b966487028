"""Probes: linear or kNN heads trained from a few labelled points or polygons.

:func:`fit_probe` samples an embedding cube at labelled locations (a
GeoDataFrame in any CRS), holds out part of them for an accuracy report, and
returns a :class:`Probe`. :func:`predict` applies it lazily, block by block.
A probe remembers the model and spec hash it was trained on and refuses
embeddings of any other model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np
import xarray as xr

from .errors import InputError
from .labels import default_colors, label_attrs, label_dtype

__all__ = ["Probe", "fit_probe", "predict", "sample_embeddings"]


@dataclass
class Probe:
    """A trained classification head on top of one model's embeddings.

    Attributes
    ----------
    method
        ``"linear"`` (multinomial logistic regression on standardised
        embeddings) or ``"knn"`` (cosine k-nearest neighbours of standardised embeddings).
    classes
        Class names; label value = index.
    model, spec_hash
        Provenance of the embeddings it was trained on.
    report
        Held-out accuracy, per-class precision/recall, confusion matrix and
        sample counts.
    """

    method: str
    classes: list[str]
    model: str
    spec_hash: str
    mean: np.ndarray
    scale: np.ndarray
    weight: np.ndarray | None = None  # (K, D)
    bias: np.ndarray | None = None  # (K,)
    bank: np.ndarray | None = None  # kNN: (N, D) normalised
    bank_labels: np.ndarray | None = None
    k: int = 5
    colors: list[str] = field(default_factory=list)
    report: dict[str, Any] = field(default_factory=dict)

    def scores(self, x: np.ndarray) -> np.ndarray:
        """Class scores for ``(N, D)`` embeddings (NaN rows give NaN scores)."""
        x = np.asarray(x, dtype=np.float32)
        bad = ~np.isfinite(x).all(axis=1)
        x = np.where(bad[:, None], 0, x)
        if self.method == "linear":
            z = (x - self.mean) / self.scale
            s = z @ self.weight.T + self.bias
        else:
            z = (x - self.mean) / self.scale
            z = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-12)
            sim = z @ self.bank.T
            k = min(self.k, sim.shape[1])
            idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
            votes = np.zeros((x.shape[0], len(self.classes)), np.float32)
            rows = np.arange(x.shape[0])[:, None]
            np.add.at(votes, (np.broadcast_to(rows, idx.shape), self.bank_labels[idx]), 1.0)
            s = votes / k
        s = s.astype(np.float32)
        s[bad] = np.nan
        return s

    def predict_array(self, x: np.ndarray) -> np.ndarray:
        """Class index per row (``-1`` for invalid rows)."""
        s = self.scores(x)
        out = np.argmax(np.nan_to_num(s, nan=-np.inf), axis=1)
        out[~np.isfinite(s).all(axis=1)] = -1
        return out

    def save(self, path: str | Path) -> None:
        """Write the probe as JSON (arrays as lists): no pickles."""
        d = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in self.__dict__.items()}
        Path(path).write_text(json.dumps(d))

    @classmethod
    def load(cls, path: str | Path) -> "Probe":
        """Read a probe written by :meth:`save`."""
        d = json.loads(Path(path).read_text())
        for k in ("mean", "scale", "weight", "bias", "bank", "bank_labels"):
            if d.get(k) is not None:
                d[k] = np.asarray(d[k], dtype=np.int64 if k == "bank_labels" else np.float32)
        return cls(**d)

    def __repr__(self) -> str:
        acc = self.report.get("accuracy")
        acc_s = "n/a" if acc is None else f"{acc:.3f}"
        return (
            f"Probe({self.method}, {len(self.classes)} classes, model={self.model!r}, "
            f"held-out accuracy={acc_s} on {self.report.get('n_test', 0)} samples)"
        )


def _geo_frame(labels: Any):
    try:
        import geopandas as gpd
    except ImportError as exc:  # pragma: no cover
        raise ImportError("fit_probe needs geopandas: pip install geopandas") from exc
    if isinstance(labels, (str, Path)):
        return gpd.read_file(labels)
    if not isinstance(labels, gpd.GeoDataFrame):
        raise InputError(f"labels must be a GeoDataFrame or a vector file path, got {type(labels).__name__}")
    return labels


def sample_embeddings(emb: xr.DataArray, labels: Any, column: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Embeddings under labelled points/polygons: ``(X (N, D), y (N,), class names)``.

    Points take the cell that contains them; polygons every cell whose centre
    lies inside. Geometries are reprojected to the cube's CRS. Only the blocks
    under the labels are computed.
    """
    import rioxarray  # noqa: F401

    gdf = _geo_frame(labels)
    if column not in gdf.columns:
        raise InputError(f"labels have no column {column!r}; columns: {list(gdf.columns)}")
    gdf = gdf[gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if len(gdf) == 0:
        raise InputError("the labels are empty: give at least two classes with a few samples each")
    crs = emb.rio.crs
    if crs is not None and gdf.crs is not None:
        gdf = gdf.to_crs(crs)
    elif (crs is None) != (gdf.crs is None):
        raise InputError("one of labels and embeddings has a CRS and the other has none; set both")
    extra = [d for d in emb.dims if d not in ("embedding", "y", "x")]
    if extra:
        raise InputError(
            f"sample a single date: the embeddings have extra dims {extra}; use emb.sel(...) or .mean(...) first"
        )
    xs, ys = emb.x.values, emb.y.values
    dx = (xs[-1] - xs[0]) / max(len(xs) - 1, 1) if len(xs) > 1 else float(emb.attrs.get("xeofm:cell_size", 1))
    dy = (ys[-1] - ys[0]) / max(len(ys) - 1, 1) if len(ys) > 1 else -dx
    gx, gy = np.meshgrid(xs, ys)
    cols, rows, labs = [], [], []
    names = sorted({str(v) for v in gdf[column].values})
    index = {n: i for i, n in enumerate(names)}
    import shapely

    for geom, val in zip(gdf.geometry.values, gdf[column].values):
        if geom.geom_type == "Point":
            j = int(np.floor((geom.x - (xs[0] - dx / 2)) / dx))
            i = int(np.floor((geom.y - (ys[0] - dy / 2)) / dy))
            if 0 <= i < len(ys) and 0 <= j < len(xs):
                rows.append(i)
                cols.append(j)
                labs.append(index[str(val)])
        else:
            minx, miny, maxx, maxy = geom.bounds
            jx = np.nonzero((xs >= minx) & (xs <= maxx))[0]
            iy = np.nonzero((ys >= miny) & (ys <= maxy))[0]
            if len(jx) == 0 or len(iy) == 0:
                continue
            sub_x = gx[np.ix_(iy, jx)].ravel()
            sub_y = gy[np.ix_(iy, jx)].ravel()
            inside = shapely.contains_xy(geom, sub_x, sub_y)
            ii, jj = np.meshgrid(iy, jx, indexing="ij")
            rows.extend(ii.ravel()[inside].tolist())
            cols.extend(jj.ravel()[inside].tolist())
            labs.extend([index[str(val)]] * int(inside.sum()))
    if not rows:
        raise InputError(
            "none of the labels fall inside the embedding cube (bounds "
            f"x {xs.min():.1f}..{xs.max():.1f}, y {ys.min():.1f}..{ys.max():.1f} in {crs}); check their CRS and extent"
        )
    r = xr.DataArray(np.asarray(rows), dims="sample")
    c = xr.DataArray(np.asarray(cols), dims="sample")
    X = emb.transpose(..., "embedding").isel(y=r, x=c).transpose("sample", "embedding").values
    y = np.asarray(labs)
    ok = np.isfinite(X).all(axis=1)
    return X[ok], y[ok], names


def _split(y: np.ndarray, test_size: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Stratified split: at least one training sample per class."""
    train, test = [], []
    for k in np.unique(y):
        idx = rng.permutation(np.nonzero(y == k)[0])
        n_test = int(round(len(idx) * test_size)) if len(idx) > 1 else 0
        n_test = min(n_test, len(idx) - 1)
        test.extend(idx[:n_test])
        train.extend(idx[n_test:])
    return np.asarray(sorted(train)), np.asarray(sorted(test))


def _fit_linear(X: np.ndarray, y: np.ndarray, K: int, l2: float, seed: int):
    import torch

    torch.manual_seed(seed)
    Xt = torch.tensor(X, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.long)
    lin = torch.nn.Linear(X.shape[1], K)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=200, line_search_fn="strong_wolfe")
    counts = np.bincount(y, minlength=K).astype(np.float32)
    wts = torch.tensor(counts.sum() / np.maximum(counts, 1) / K)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(lin(Xt), yt, weight=wts) + l2 * (lin.weight**2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return lin.weight.detach().numpy().astype(np.float32), lin.bias.detach().numpy().astype(np.float32)


def _report(probe: "Probe", X: np.ndarray, y: np.ndarray, n_train: int) -> dict[str, Any]:
    K = len(probe.classes)
    if len(y) == 0:
        return {"accuracy": None, "n_train": n_train, "n_test": 0, "note": "too few samples to hold any out"}
    pred = probe.predict_array(X)
    cm = np.zeros((K, K), dtype=int)
    np.add.at(cm, (y, pred), 1)
    per = {}
    for k, name in enumerate(probe.classes):
        tp = cm[k, k]
        per[name] = {
            "precision": float(tp / cm[:, k].sum()) if cm[:, k].sum() else None,
            "recall": float(tp / cm[k].sum()) if cm[k].sum() else None,
            "support": int(cm[k].sum()),
        }
    return {
        "accuracy": float(np.trace(cm) / cm.sum()),
        "n_train": n_train,
        "n_test": int(len(y)),
        "confusion_matrix": cm.tolist(),
        "per_class": per,
    }


def fit_probe(
    emb: xr.DataArray,
    labels: Any,
    column: str,
    *,
    method: Literal["linear", "knn"] = "linear",
    test_size: float = 0.3,
    k: int = 5,
    l2: float = 1e-3,
    seed: int = 0,
    colors: Sequence[str] | None = None,
) -> Probe:
    """Train a linear or kNN probe from labelled points or polygons.

    Parameters
    ----------
    emb
        ``(embedding, y, x)`` embeddings (select one date first).
    labels
        GeoDataFrame (any CRS) or vector file with point or polygon geometries.
    column
        Column holding the class of each geometry.
    method
        ``"linear"``: multinomial logistic regression (L-BFGS, class-balanced,
        L2 ``l2``) on standardised embeddings; ``"knn"``: ``k``-NN vote by cosine
        similarity of standardised embeddings.
    test_size
        Fraction of samples per class held out for the accuracy report.

    Returns
    -------
    Probe
        With ``report`` (held-out accuracy, per-class precision/recall,
        confusion matrix; rows = truth, columns = prediction).
    """
    if "xeofm:model" not in emb.attrs:
        raise InputError("fit_probe needs an embedding cube made by xeofm (it carries the model's provenance)")
    X, y, names = sample_embeddings(emb, labels, column)
    if len(names) < 2 or len(np.unique(y)) < 2:
        raise InputError(
            f"the labels hold a single class ({names}) inside the cube; a probe needs at least two classes"
        )
    label_dtype(len(names))  # refuses > 65535 classes
    rng = np.random.default_rng(seed)
    tr, te = _split(y, test_size, rng)
    mean = X[tr].mean(axis=0)
    scale = X[tr].std(axis=0) + 1e-6
    probe = Probe(
        method=method, classes=names, model=str(emb.attrs["xeofm:model"]),
        spec_hash=str(emb.attrs.get("xeofm:spec_hash", "")), mean=mean.astype(np.float32),
        scale=scale.astype(np.float32), k=k, colors=list(colors) if colors else default_colors(names),
    )
    if method == "linear":
        probe.weight, probe.bias = _fit_linear((X[tr] - mean) / scale, y[tr], len(names), l2, seed)
    elif method == "knn":
        Z = (X[tr] - mean) / scale
        Z = Z / np.maximum(np.linalg.norm(Z, axis=1, keepdims=True), 1e-12)
        probe.bank, probe.bank_labels = Z.astype(np.float32), y[tr].astype(np.int64)
    else:
        raise InputError(f"method must be 'linear' or 'knn', got {method!r}")
    probe.report = _report(probe, X[te], y[te], len(tr))
    return probe


def _predict_block(x: np.ndarray, axis: int, probe: Probe, nodata: int, dtype) -> np.ndarray:
    xm = np.moveaxis(np.asarray(x), axis, -1)
    flat = xm.reshape(-1, xm.shape[-1])
    lab = probe.predict_array(flat)
    lab = np.where(lab < 0, nodata, lab).astype(dtype)
    return lab.reshape(xm.shape[:-1])


def predict(emb: xr.DataArray, probe: Probe) -> xr.DataArray:
    """Apply a probe lazily: a label cube with the probe's class names and colours.

    Raises
    ------
    InputError
        If the embeddings come from another model or spec than the probe's.
    """
    got = (emb.attrs.get("xeofm:model"), emb.attrs.get("xeofm:spec_hash"))
    if got != (probe.model, probe.spec_hash):
        raise InputError(
            f"this probe was trained on embeddings of {probe.model!r} (spec {probe.spec_hash}), but these come "
            f"from {got[0]!r} (spec {got[1]}); embed the cube with the probe's model, or fit a new probe"
        )
    dtype, nodata = label_dtype(len(probe.classes))
    axis = emb.get_axis_num("embedding")
    data = emb.data
    if hasattr(data, "map_blocks"):
        data = data.rechunk({axis: -1})
        lab = data.map_blocks(_predict_block, axis, probe, nodata, dtype, drop_axis=axis, dtype=dtype)
    else:
        lab = _predict_block(np.asarray(data), axis, probe, nodata, dtype)
    dims = tuple(d for d in emb.dims if d != "embedding")
    coords = {k: v for k, v in emb.coords.items() if "embedding" not in v.dims}
    out = xr.DataArray(lab, dims=dims, coords=coords, name="labels")
    keep = {k: v for k, v in emb.attrs.items() if k.startswith("xeofm:")}
    out.attrs = label_attrs(probe.classes, probe.colors, nodata, {**keep, "xeofm:task": f"probe-{probe.method}"})
    if "grid_mapping" in emb.encoding:
        out.encoding["grid_mapping"] = emb.encoding["grid_mapping"]
    return out
