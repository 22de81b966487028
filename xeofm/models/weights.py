"""Pretrained weights, offline: finding files, checksums and the authors' key layouts.

xeofm never downloads weights. A registered model gets its file from, in order:

1. ``weights="path"`` given by the caller (or ``spec.weights``);
2. ``$XEOFM_WEIGHTS_DIR/<spec.weights_file>``;
3. the Hugging Face hub cache, when it already holds the file
   (``spec.metadata`` ``hf_repo`` / ``hf_file`` / optional ``hf_revision``; looked up
   with ``huggingface_hub.try_to_load_from_cache``, which never touches the network);
4. the torch hub cache, ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch_hub_file``),
   where torchgeo keeps its downloads.

Otherwise :func:`missing_weights_error` says which file to get, where from, and
where to put it.

A checkpoint in the authors' layout (prefixes such as ``encoder.``, decoder and
head weights, nested sub-dictionaries) is turned into the module's layout by the
spec's ``remap`` hook: ``spec.metadata["remap"] = "package.module:function"``, a
function ``state_dict -> state_dict``. The helpers below (:func:`strip_prefixes`,
:func:`drop_keys`, :func:`flatten`) cover the usual cases.

Nothing here imports torch at import time.
"""

from __future__ import annotations

import hashlib
import importlib
import os
import threading
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

from ..errors import SpecError, WeightsError

if TYPE_CHECKING:  # pragma: no cover
    from ..spec import ModelSpec

__all__ = [
    "sha256_of",
    "verify_sha256",
    "remap_for",
    "find_cached",
    "missing_weights_error",
    "strip_prefixes",
    "drop_keys",
    "flatten",
    "warn_gsd",
    "check_bands",
]

_DIGESTS: dict[tuple[str, int, int], str] = {}
_DIGEST_LOCK = threading.Lock()


# ---------------------------------------------------------------------------------------
# Checksums
# ---------------------------------------------------------------------------------------
def sha256_of(path: str | Path) -> str:
    """SHA-256 hex digest of a file, computed once per process for an unchanged file."""
    p = Path(path).expanduser().resolve()
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    with _DIGEST_LOCK:
        cached = _DIGESTS.get(key)
    if cached is not None:
        return cached
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    with _DIGEST_LOCK:
        _DIGESTS[key] = digest
    return digest


def verify_sha256(path: str | Path, expected: str | None, *, model: str | None = None) -> None:
    """Raise :class:`WeightsError` unless the file's SHA-256 digest matches ``expected``.

    ``expected`` may be the full 64-digit digest or a prefix of at least 8 hex
    digits (the torch hub file-name convention ``name-<first 8 digits>.pth``).
    ``None`` skips the check.
    """
    if not expected:
        return
    exp = expected.strip().lower()
    if len(exp) < 8 or any(c not in "0123456789abcdef" for c in exp):
        raise SpecError(f"weights_sha256 {expected!r} is not a hex SHA-256 digest (or a prefix of 8+ digits)")
    found = sha256_of(path)
    if not found.startswith(exp):
        who = f" for model {model!r}" if model else ""
        raise WeightsError(
            f"weight file {str(path)!r} has SHA-256 {found}, but {exp} was expected{who}. The file is "
            "corrupt, truncated, or a different release; get the file again, or pass a spec with "
            "weights_sha256=None if you trust this file."
        )


# ---------------------------------------------------------------------------------------
# Remapping the authors' checkpoint layouts
# ---------------------------------------------------------------------------------------
def _import(target: str, what: str) -> Callable:
    mod, _, fn = target.partition(":")
    if not fn:
        raise SpecError(f"{what} {target!r} must look like 'package.module:function'")
    try:
        return getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as exc:
        raise SpecError(f"cannot import {what} {target!r}: {exc}") from exc


def remap_for(spec: "ModelSpec") -> Callable[[dict], dict] | None:
    """The spec's checkpoint remapping function (``metadata["remap"]``), or ``None``."""
    target = dict(spec.metadata).get("remap")
    return _import(target, "remap hook") if target else None


def flatten(state_dict: Mapping[str, Any], sep: str = ".") -> dict[str, Any]:
    """Flatten nested dictionaries of tensors: ``{"a": {"b": t}}`` -> ``{"a.b": t}``."""
    out: dict[str, Any] = {}
    for k, v in state_dict.items():
        if isinstance(v, Mapping):
            for kk, vv in flatten(v, sep).items():
                out[f"{k}{sep}{kk}"] = vv
        else:
            out[str(k)] = v
    return out


def strip_prefixes(state_dict: Mapping[str, Any], prefixes: Sequence[str]) -> dict[str, Any]:
    """Remove any of ``prefixes`` from the start of every key, repeatedly (``model.encoder.x`` -> ``x``)."""
    out: dict[str, Any] = {}
    for k, v in state_dict.items():
        changed = True
        while changed:
            changed = False
            for p in prefixes:
                if k.startswith(p):
                    k = k[len(p):]
                    changed = True
        if k in out:
            raise WeightsError(f"two checkpoint keys map to {k!r} once prefixes {list(prefixes)} are removed")
        out[k] = v
    return out


def drop_keys(
    state_dict: Mapping[str, Any],
    *,
    prefixes: Iterable[str] = (),
    contains: Iterable[str] = (),
    exact: Iterable[str] = (),
) -> dict[str, Any]:
    """Drop keys that start with, contain, or equal any of the given strings."""
    prefixes, contains, exact = tuple(prefixes), tuple(contains), set(exact)
    return {
        k: v
        for k, v in state_dict.items()
        if not (k in exact or k.startswith(prefixes) or any(c in k for c in contains))
    }


# ---------------------------------------------------------------------------------------
# Finding files offline
# ---------------------------------------------------------------------------------------
def _hf_cache_dir() -> str | None:
    """The hub cache directory from the environment, read at call time (``None``: library default)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return os.path.expanduser(os.environ[var])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return None


def _torch_hub_dir() -> Path:
    """``torch.hub.get_dir()`` without importing torch."""
    home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.join("~", ".cache")), "torch"
    )
    return Path(os.path.expanduser(home)) / "hub"


def _places(spec: "ModelSpec") -> list[tuple[str, Callable[[], Path | None]]]:
    """(description, lookup) for every offline place a spec's file may be in."""
    meta = dict(spec.metadata)
    places: list[tuple[str, Callable[[], Path | None]]] = []
    if spec.weights_file:
        wdir = os.environ.get("XEOFM_WEIGHTS_DIR")

        def in_weights_dir() -> Path | None:
            if not wdir:
                return None
            p = Path(os.path.expanduser(wdir)) / spec.weights_file  # type: ignore[operator]
            return p if p.is_file() else None

        places.append((f"$XEOFM_WEIGHTS_DIR/{spec.weights_file} ({wdir or 'unset'})", in_weights_dir))
    repo, fname = meta.get("hf_repo"), meta.get("hf_file") or spec.weights_file
    if repo and fname:
        revision = meta.get("hf_revision")

        def in_hf_cache() -> Path | None:
            try:
                from huggingface_hub import try_to_load_from_cache
            except ImportError:
                return None
            for rev in (None, revision) if revision else (None,):
                try:
                    hit = try_to_load_from_cache(repo, fname, cache_dir=_hf_cache_dir(), revision=rev)
                except Exception:  # malformed cache entries: treat as absent
                    hit = None
                if isinstance(hit, str) and os.path.isfile(hit):
                    return Path(hit)
            return None

        where = _hf_cache_dir() or "~/.cache/huggingface/hub"
        places.append((f"Hugging Face cache {where} ({repo}/{fname})", in_hf_cache))
    hub_file = meta.get("torch_hub_file")
    if hub_file:

        def in_torch_hub() -> Path | None:
            p = _torch_hub_dir() / "checkpoints" / hub_file
            return p if p.is_file() else None

        places.append((f"torch hub cache {_torch_hub_dir() / 'checkpoints' / hub_file}", in_torch_hub))
    return places


def find_cached(spec: "ModelSpec") -> Path | None:
    """The spec's weight file if one of the offline places already holds it, else ``None``."""
    for _, lookup in _places(spec):
        hit = lookup()
        if hit is not None:
            return hit
    return None


def needs_weights(spec: "ModelSpec") -> bool:
    """Whether a spec describes a pretrained model whose weights are not shipped."""
    meta = dict(spec.metadata)
    return bool(spec.weights_file or meta.get("hf_repo") or meta.get("torch_hub_file") or meta.get("weights_hint"))


def missing_weights_error(spec: "ModelSpec", hint: str | None = None) -> WeightsError:
    """The error raised when a pretrained model's file is nowhere to be found."""
    meta = dict(spec.metadata)
    parts = [f"model {spec.name!r} needs its pretrained weights, which xeofm never downloads."]
    hint = hint or meta.get("weights_hint")
    if hint:
        parts.append(hint)
    elif spec.weights_file:
        src = meta.get("weights_url") or (f"https://huggingface.co/{meta['hf_repo']}" if meta.get("hf_repo") else None)
        parts.append(f"Get {spec.weights_file}" + (f" from {src}." if src else "."))
    places = _places(spec)
    if places:
        parts.append("Looked in: " + "; ".join(desc for desc, _ in places) + ".")
    parts.append(
        "Then pass weights='path/to/file' (or put the file in one of those places). "
        "For tests, pretrained=False builds random weights."
    )
    return WeightsError(" ".join(parts))


# ---------------------------------------------------------------------------------------
# Input checks used by the engine
# ---------------------------------------------------------------------------------------
def warn_gsd(spec: "ModelSpec", gsd: float | None, *, stacklevel: int = 3) -> bool:
    """Warn when the cube's pixel size is far (beyond a factor of 2) from the model's training GSD.

    Models that take the GSD as an input (``"gsd"`` in ``spec.aux``) and specs
    without a ``gsd`` are never warned about. Returns whether it warned.
    """
    if not spec.gsd or gsd is None or not gsd > 0 or "gsd" in spec.aux:
        return False
    if 0.5 <= gsd / spec.gsd <= 2.0:
        return False
    warnings.warn(
        f"the cube's pixel size ({gsd:.3g} m) is far from the {spec.gsd:g} m model {spec.name!r} was "
        f"trained at; features may be off. Resample the cube (e.g. cube.odc.reproject(..., resolution="
        f"{spec.gsd:g})) if the model does not take the GSD as an input.",
        UserWarning,
        stacklevel=stacklevel,
    )
    return True


def check_bands(spec: "ModelSpec", available: Sequence[object], mapping: Mapping[str, str] | None = None) -> None:
    """Run the spec's own band check (``metadata["check_bands"]``), if it has one.

    The hook is called as ``hook(spec, available, mapping)`` before the generic
    band matching, and raises :class:`~xeofm.MissingBandsError` with a
    model-specific message (e.g. which single-sensor variant to use).
    """
    target = dict(spec.metadata).get("check_bands")
    if target:
        _import(target, "band check")(spec, list(available), mapping)
