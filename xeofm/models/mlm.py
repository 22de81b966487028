"""Model specs as STAC items with the Machine Learning Model (MLM) extension.

:func:`spec_to_stac` describes a :class:`~xeofm.ModelSpec` as a STAC Item that
MLM-aware tools understand (``mlm:name``, ``mlm:architecture``, ``mlm:tasks``,
``mlm:framework``, ``mlm:input`` with bands, tensor shape, dimension order and
``value_scaling``, ``mlm:output``, a weights asset with ``mlm:artifact_type`` and
``file:checksum``). What MLM cannot express (output stride and kind, prefix
tokens, time frames, auxiliary inputs, the builder, the text tower, the exact
normalisation parameters, checkpoint remapping...) goes into ``xeofm:*``
properties, so :func:`spec_from_stac` gives back an equal spec (same ``hash``).

:func:`spec_from_stac` also reads MLM items written by hand or by other tools:
the builder comes from ``xeofm:builder`` or from a source-code asset's
``mlm:entrypoint``; the normalisation from ``value_scaling`` (``z-score``,
``min-max``, ``scale``, ``offset``) or the older ``norm_type``/``statistics``;
stride and output kind from the output's ``result`` shape. Missing required
fields raise :class:`~xeofm.SpecError` naming them::

    item = pystac.Item.from_file("my-model.json")
    xeofm.register(spec_from_stac(item))

Targets MLM v1.4.0 (the version pystac's extension reads). JSON-schema
validation needs the MLM schema and the schemas it references (raster,
processing, classification, STAC item), which are not shipped with pystac;
:func:`check_item` checks the MLM requirements xeofm relies on offline.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Mapping

from ..bands import Band
from ..errors import SpecError
from ..spec import ModelSpec

__all__ = ["spec_to_stac", "spec_from_stac", "check_item", "MLM_SCHEMA", "MLM_TASKS"]

MLM_SCHEMA = "https://stac-extensions.github.io/mlm/v1.4.0/schema.json"
FILE_SCHEMA = "https://stac-extensions.github.io/file/v2.1.0/schema.json"
EO_SCHEMA = "https://stac-extensions.github.io/eo/v2.0.0/schema.json"
SCI_SCHEMA = "https://stac-extensions.github.io/scientific/v1.0.0/schema.json"
CLASSIFICATION_SCHEMA = "https://stac-extensions.github.io/classification/v2.0.0/schema.json"

#: The ``mlm:tasks`` values the MLM JSON schema accepts.
MLM_TASKS = (
    "regression", "classification", "scene-classification", "detection", "object-detection",
    "segmentation", "semantic-segmentation", "instance-segmentation", "panoptic-segmentation",
    "similarity-search", "generative", "image-captioning", "super-resolution",
)
_NAME_RE = re.compile(r"^[a-zA-Z][a-zA-Z0-9_.-]+[a-zA-Z0-9]$")
_DIM_RE = re.compile(r"^[a-z-_]+$")
_HYPER_RE = re.compile(r"^[0-9a-zA-Z_.-]+$")
_SPDX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.+-]*$")
_GLOBAL = {"type": "Polygon", "coordinates": [[[-180, -90], [180, -90], [180, 90], [-180, 90], [-180, -90]]]}


# ---------------------------------------------------------------------------------------
# Spec -> item
# ---------------------------------------------------------------------------------------
def _jsonable(value: Any, where: str) -> Any:
    """``value`` with tuples as lists; refuses what JSON cannot hold."""
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, where) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SpecError(f"{where} is {value!r}, which JSON (and so STAC) cannot hold")
        return value
    raise SpecError(f"{where} holds a {type(value).__name__} ({value!r}); only JSON values can go into a STAC item")


def _architecture(spec: ModelSpec) -> str:
    kw = dict(spec.builder_kwargs)
    meta = dict(spec.metadata)
    if meta.get("architecture"):
        return str(meta["architecture"])
    arch = kw.get("arch")
    if arch is None:
        fn = (spec.builder or "").rpartition(":")[2]
        return fn.removeprefix("build_").replace("_", " ").strip() or "custom"
    a = str(arch).lower()
    family = (
        "Swin Transformer V2" if a.startswith("swin_v2") else
        "Swin Transformer" if a.startswith("swin") else
        "Vision Transformer" if a.startswith("vit") else
        "ResNet" if a.startswith(("resnet", "rn")) else
        None
    )
    return f"{family} ({arch})" if family else str(arch)


def _tasks(spec: ModelSpec) -> tuple[list[str], str]:
    meta = dict(spec.metadata)
    task = str(meta.get("task", "embedding"))
    if task == "segmentation":
        return ["semantic-segmentation"], "segmentation"
    if task == "classification":
        return ["classification"], "classification"
    if meta.get("text_tower"):
        return ["similarity-search", "scene-classification"], "embedding+zero-shot"
    return ["similarity-search"], "embedding"


def _value_scaling(spec: ModelSpec) -> list[dict[str, Any]] | None:
    """``((raw + offset) * scale - mean) / std`` as one MLM z-score per band (mean', std' in raw units)."""
    n = len(spec.bands)
    mean = spec.mean or (0.0,) * n
    std = spec.std or (1.0,) * n
    if spec.scale == 1 and spec.offset == 0 and spec.mean is None and spec.std is None:
        return None
    if spec.scale == 0:
        return None
    return [
        {"type": "z-score", "mean": m / spec.scale - spec.offset, "stddev": s / spec.scale}
        for m, s in zip(mean, std)
    ]


def _band_objects(spec: ModelSpec) -> list[dict[str, Any]]:
    out = []
    for b in spec.bands:
        o: dict[str, Any] = {"name": b.id}
        if b.common_name:
            o["eo:common_name"] = b.common_name
        if b.wavelength is not None:
            o["eo:center_wavelength"] = b.wavelength
        if b.aliases:
            o["xeofm:aliases"] = list(b.aliases)
        out.append(o)
    return out


def _result(spec: ModelSpec) -> dict[str, Any]:
    t = spec.tokens_per_side
    if spec.output == "patch":
        return {"shape": [-1, spec.embedding_dim, t, t], "dim_order": ["batch", "embedding", "height", "width"]}
    if spec.output == "tokens":
        n = spec.prefix_tokens + spec.time_frames * t * t
        return {"shape": [-1, n, spec.embedding_dim], "dim_order": ["batch", "token", "embedding"]}
    return {"shape": [-1, spec.embedding_dim], "dim_order": ["batch", "embedding"]}


def _artifact_type(path: str) -> str:
    return "safetensors.torch.save_file" if str(path).endswith(".safetensors") else "torch.save"


def _total_parameters(spec: ModelSpec) -> int:
    """Parameters of the spec's module, counted on torch's meta device (no memory, no weights)."""
    import torch

    from ..runtime import _import_builder

    fn = _import_builder(spec.builder)  # type: ignore[arg-type]
    try:
        with torch.device("meta"):
            module = fn(**dict(spec.builder_kwargs))
    except Exception as exc:
        raise SpecError(
            f"cannot count the parameters of {spec.name!r} without building it ({type(exc).__name__}: {exc}); "
            "pass total_parameters=<number>"
        ) from exc
    return int(sum(p.numel() for p in module.parameters()))


def spec_to_stac(
    spec: ModelSpec,
    *,
    item_id: str | None = None,
    total_parameters: int | bool | None = None,
    geometry: dict | None = None,
    bbox: list[float] | None = None,
    start_datetime: str = "1970-01-01T00:00:00Z",
    end_datetime: str = "2100-01-01T00:00:00Z",
):
    """Describe a spec as a STAC Item with the MLM extension.

    Parameters
    ----------
    spec
        A spec with an importable ``builder`` (``xeofm.wrap`` modules cannot be described).
    item_id
        Item id (default: ``spec.name``).
    total_parameters
        ``mlm:total_parameters``: a number, ``True`` to count them (the module is
        built on torch's meta device: no memory, no weights), or ``None`` to use
        ``spec.metadata["total_parameters"]`` when present.
    geometry, bbox, start_datetime, end_datetime
        The model's spatial and temporal domain (default: the whole globe, no
        particular period).

    Returns
    -------
    pystac.Item
    """
    import pystac

    if spec._local_key is not None or not spec.builder:
        raise SpecError(
            f"spec {spec.name!r} wraps a module object (xeofm.wrap); give it an importable "
            "builder='package.module:function' to describe it as a STAC item"
        )
    if not _NAME_RE.match(spec.name):
        raise SpecError(
            f"model name {spec.name!r} is not a valid mlm:name (letters, digits, '_', '.', '-'; "
            "starting with a letter, ending with a letter or digit)"
        )
    meta = dict(spec.metadata)
    tasks, xtask = _tasks(spec)
    n = len(spec.bands)
    shape: list[int] = [-1, n, spec.chip_size, spec.chip_size]
    dims = ["batch", "bands", "height", "width"]
    if spec.time_frames > 1:
        shape.insert(2, spec.time_frames)
        dims.insert(2, "time")
    inp: dict[str, Any] = {
        "name": "image",
        "bands": [b.id for b in spec.bands],
        "input": {"shape": shape, "dim_order": dims, "data_type": "float32"},
        "value_scaling": _value_scaling(spec),
        "resize_type": None,
    }
    out: dict[str, Any] = {
        "name": "embeddings" if xtask.startswith("embedding") else xtask,
        "tasks": tasks,
        "result": {**_result(spec), "data_type": "float32"},
    }
    classes = meta.get("classes")
    if classes:
        colors = list(meta.get("colors") or [])
        out["classification:classes"] = [{"value": i, "name": str(c)} for i, c in enumerate(classes)]
        for i, color in enumerate(colors[: len(classes)]):
            out["classification:classes"][i]["color_hint"] = str(color).lstrip("#").upper()
    hyper = {
        "chip_size": spec.chip_size,
        "stride": spec.stride,
        "embedding_dim": spec.embedding_dim,
        "prefix_tokens": spec.prefix_tokens,
        "time_frames": spec.time_frames,
    }
    for k, v in spec.builder_kwargs:
        if _HYPER_RE.match(f"builder.{k}") and isinstance(v, (bool, int, float, str)):
            hyper[f"builder.{k}"] = v
    props: dict[str, Any] = {
        "start_datetime": start_datetime,
        "end_datetime": end_datetime,
        "mlm:name": spec.name,
        "mlm:architecture": _architecture(spec),
        "mlm:tasks": tasks,
        "mlm:framework": "pytorch",
        "mlm:input": [inp],
        "mlm:output": [out],
        "mlm:hyperparameters": _jsonable(hyper, "hyperparameters"),
        "bands": _band_objects(spec),
        # xeofm's own fields: everything MLM cannot say, exactly
        "xeofm:output": spec.output,
        "xeofm:chip_size": spec.chip_size,
        "xeofm:stride": spec.stride,
        "xeofm:embedding_dim": spec.embedding_dim,
        "xeofm:prefix_tokens": spec.prefix_tokens,
        "xeofm:time_frames": spec.time_frames,
        "xeofm:aux": list(spec.aux),
        "xeofm:builder": spec.builder,
        "xeofm:builder_kwargs": _jsonable(dict(spec.builder_kwargs), "builder_kwargs"),
        "xeofm:normalisation": _jsonable(
            {"scale": spec.scale, "offset": spec.offset, "mean": spec.mean, "std": spec.std}, "normalisation"
        ),
        "xeofm:overlap": spec.overlap,
        "xeofm:dtype": spec.dtype,
        "xeofm:weights": spec.weights,
        "xeofm:weights_file": spec.weights_file,
        "xeofm:weights_sha256": spec.weights_sha256,
        "xeofm:metadata": _jsonable(meta, "metadata"),
        "xeofm:text_tower": meta.get("text_tower"),
        "xeofm:task": xtask,
    }
    try:
        from importlib.metadata import version

        props["mlm:framework_version"] = version("torch")
    except Exception:  # pragma: no cover
        pass
    if spec.gsd is not None:
        props["gsd"] = spec.gsd
    if spec.licence:
        props["license"] = spec.licence if _SPDX_RE.match(spec.licence) else "other"
        props["xeofm:licence"] = spec.licence
    if spec.description:
        props["description"] = spec.description
    if spec.citation:
        props["sci:citation"] = spec.citation
    pretrained = bool(spec.weights or spec.weights_file or meta.get("hf_repo") or meta.get("torch_hub_file"))
    props["mlm:pretrained"] = pretrained
    if not pretrained:
        props["mlm:pretrained_source"] = None
    if total_parameters is True:
        props["mlm:total_parameters"] = _total_parameters(spec)
    elif total_parameters:
        props["mlm:total_parameters"] = int(total_parameters)
    elif meta.get("total_parameters"):
        props["mlm:total_parameters"] = int(meta["total_parameters"])

    exts = [MLM_SCHEMA, FILE_SCHEMA, EO_SCHEMA]
    if spec.citation:
        exts.append(SCI_SCHEMA)
    if classes:
        exts.append(CLASSIFICATION_SCHEMA)
    item = pystac.Item(
        id=item_id or spec.name,
        geometry=geometry or _GLOBAL,
        bbox=bbox or [-180.0, -90.0, 180.0, 90.0],
        datetime=None,
        properties=_jsonable(props, "properties"),
        stac_extensions=exts,
    )
    href = spec.weights or meta.get("weights_url") or (
        f"https://huggingface.co/{meta['hf_repo']}/resolve/main/{meta.get('hf_file') or spec.weights_file}"
        if meta.get("hf_repo") else None
    ) or spec.weights_file
    if href:
        extra: dict[str, Any] = {
            "mlm:artifact_type": _artifact_type(str(spec.weights_file or href)),
            "bands": _band_objects(spec),
        }
        sha = (spec.weights_sha256 or "").lower()
        if len(sha) == 64:
            extra["file:checksum"] = "1220" + sha  # multihash: sha2-256, 32 bytes
        item.add_asset("weights", pystac.Asset(
            href=str(href), title=spec.weights_file or Path(str(href)).name,
            media_type="application/octet-stream; application=pytorch",
            roles=["mlm:model", "mlm:weights", "data"], extra_fields=extra,
        ))
    else:  # random-weight architectures: the model is its code
        item.add_asset("model", pystac.Asset(
            href=_code_href(spec.builder), title=spec.builder, media_type="text/x-python",
            roles=["mlm:model", "code"],
            extra_fields={"mlm:artifact_type": "python", "mlm:entrypoint": spec.builder, "bands": _band_objects(spec)},
        ))
    item.add_asset("source_code", pystac.Asset(
        href=_code_href(spec.builder), title=f"builder {spec.builder}", media_type="text/x-python",
        roles=["mlm:source_code", "code"], extra_fields={"mlm:entrypoint": spec.builder},
    ))
    return item


def _code_href(builder: str) -> str:
    pkg = builder.split(".", 1)[0].split(":", 1)[0]
    return f"https://pypi.org/project/{pkg}/"


# ---------------------------------------------------------------------------------------
# Item -> spec
# ---------------------------------------------------------------------------------------
def _as_dict(item: Any) -> dict[str, Any]:
    if isinstance(item, Mapping):
        return dict(item)
    if isinstance(item, (str, Path)):
        p = Path(item).expanduser()
        if not p.is_file():
            raise SpecError(f"STAC item file {str(p)!r} does not exist")
        return json.loads(p.read_text())
    if hasattr(item, "to_dict"):
        return item.to_dict(include_self_link=False, transform_hrefs=False)
    raise SpecError(f"expected a pystac.Item, a dict or a path to an item JSON file, got {type(item).__name__}")


def _model_assets(d: dict[str, Any]) -> list[dict[str, Any]]:
    return [a for a in (d.get("assets") or {}).values() if "mlm:model" in (a.get("roles") or [])]


def _entrypoint(d: dict[str, Any]) -> str | None:
    for a in (d.get("assets") or {}).values():
        ep = a.get("mlm:entrypoint")
        if ep and ":" in str(ep):
            return str(ep)
    return None


def check_item(item: Any) -> list[str]:
    """MLM requirements xeofm relies on that the item misses (empty when fine).

    Checks the required fields (``mlm:name``, ``mlm:architecture``, ``mlm:tasks``,
    ``mlm:input[]`` with ``name``/``bands``/``input{shape, dim_order, data_type}``,
    ``mlm:output[]`` with ``name``/``tasks``/``result{...}``, an asset with the
    ``mlm:model`` role), the task enum, name and dimension-name patterns,
    ``mlm:hyperparameters`` keys and the MLM schema in ``stac_extensions``.
    """
    d = _as_dict(item)
    props = d.get("properties") or {}
    problems: list[str] = []
    if not any("stac-extensions.github.io/mlm/" in str(e) for e in d.get("stac_extensions") or []):
        problems.append("stac_extensions lacks the MLM schema URI")
    for key in ("mlm:name", "mlm:architecture", "mlm:tasks", "mlm:input", "mlm:output"):
        if props.get(key) in (None, "", []):
            problems.append(f"properties.{key} is missing")
    name = props.get("mlm:name")
    if name and not _NAME_RE.match(str(name)):
        problems.append(f"mlm:name {name!r} does not match {_NAME_RE.pattern}")
    outputs = [o for o in props.get("mlm:output") or [] if isinstance(o, Mapping)]
    task_lists = [("mlm:tasks", props.get("mlm:tasks"))]
    task_lists += [(f"mlm:output[{i}].tasks", o.get("tasks")) for i, o in enumerate(outputs)]
    for where, tasks in task_lists:
        bad = [t for t in tasks or [] if t not in MLM_TASKS]
        if bad:
            problems.append(f"{where} has values outside the MLM task enum: {bad} (allowed: {list(MLM_TASKS)})")
    for i, inp in enumerate(props.get("mlm:input") or []):
        if not isinstance(inp, Mapping):
            problems.append(f"mlm:input[{i}] is not an object")
            continue
        for key in ("name", "bands", "input"):
            if key not in inp:
                problems.append(f"mlm:input[{i}].{key} is missing")
        problems += _check_structure(inp.get("input"), f"mlm:input[{i}].input")
    for i, out in enumerate(props.get("mlm:output") or []):
        if not isinstance(out, Mapping):
            problems.append(f"mlm:output[{i}] is not an object")
            continue
        for key in ("name", "tasks", "result"):
            if key not in out:
                problems.append(f"mlm:output[{i}].{key} is missing")
        problems += _check_structure(out.get("result"), f"mlm:output[{i}].result")
    hyper = props.get("mlm:hyperparameters")
    if hyper is not None:
        if not isinstance(hyper, Mapping) or not hyper:
            problems.append("mlm:hyperparameters must be a non-empty object")
        else:
            bad = [k for k in hyper if not _HYPER_RE.match(str(k))]
            if bad:
                problems.append(f"mlm:hyperparameters keys {bad} do not match {_HYPER_RE.pattern}")
    if not _model_assets(d):
        problems.append("no asset has the 'mlm:model' role")
    return problems


def _check_structure(s: Any, where: str) -> list[str]:
    if s is None:
        return []
    if not isinstance(s, Mapping):
        return [f"{where} is not an object"]
    out = [f"{where}.{k} is missing" for k in ("shape", "dim_order", "data_type") if k not in s]
    shape, dims = s.get("shape"), s.get("dim_order")
    if shape is not None and dims is not None and len(shape) != len(dims):
        out.append(f"{where}: shape {shape} and dim_order {dims} differ in length")
    bad = [x for x in dims or [] if not _DIM_RE.match(str(x))]
    if bad:
        out.append(f"{where}.dim_order names {bad} do not match {_DIM_RE.pattern}")
    return out


def _normalisation_from_mlm(inp: Mapping[str, Any], n: int, name: str) -> dict[str, Any]:
    """scale/offset/mean/std from MLM ``value_scaling`` (or legacy ``norm_type`` + ``statistics``)."""
    vs = inp.get("value_scaling")
    if vs is None and inp.get("norm_type"):
        if inp["norm_type"] != "z-score":
            raise SpecError(f"MLM item {name!r}: norm_type {inp['norm_type']!r} is not supported; use value_scaling")
        stats = inp.get("statistics") or []
        vs = [{"type": "z-score", "mean": s.get("mean"), "stddev": s.get("stddev")} for s in stats]
    if not vs:
        return {"scale": 1.0, "offset": 0.0, "mean": None, "std": None}
    if isinstance(vs, Mapping):
        vs = [vs]
    if len(vs) == 1:
        vs = list(vs) * n
    if len(vs) != n:
        raise SpecError(f"MLM item {name!r}: value_scaling has {len(vs)} entries for {n} bands (give 1 or {n})")
    types = {v.get("type") for v in vs}
    if len(types) != 1:
        raise SpecError(f"MLM item {name!r}: mixed value_scaling types {sorted(map(str, types))} are not supported")
    (kind,) = types
    if kind not in ("z-score", "min-max", "scale", "offset"):
        raise SpecError(
            f"MLM item {name!r}: value_scaling type {kind!r} cannot be expressed as xeofm's "
            "((raw + offset) * scale - mean) / std; supported: z-score, min-max, scale, offset "
            "(put clipping inside the model's module)"
        )
    try:
        if kind == "z-score":
            return {"scale": 1.0, "offset": 0.0, "mean": [float(v["mean"]) for v in vs],
                    "std": [float(v["stddev"]) for v in vs]}
        if kind == "min-max":
            return {"scale": 1.0, "offset": 0.0, "mean": [float(v["minimum"]) for v in vs],
                    "std": [float(v["maximum"]) - float(v["minimum"]) for v in vs]}
        values = {float(v["value"]) for v in vs}
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"MLM item {name!r}: value_scaling {kind!r} entry lacks a field ({exc})") from None
    if len(values) != 1:
        raise SpecError(f"MLM item {name!r}: per-band {kind!r} values are not supported; use z-score")
    (value,) = values
    if kind == "scale":  # x / value
        return {"scale": 1.0 / value, "offset": 0.0, "mean": None, "std": None}
    return {"scale": 1.0, "offset": -value, "mean": None, "std": None}  # offset: x - value


def _bands_from_item(d: dict[str, Any], names: list[Any]) -> list[Band]:
    table: dict[str, dict[str, Any]] = {}
    sources = [d.get("properties", {}).get("bands"), d.get("properties", {}).get("eo:bands")]
    for a in _model_assets(d):
        sources += [a.get("bands"), a.get("eo:bands"), a.get("raster:bands")]
    for src in sources:
        for b in src or []:
            if isinstance(b, Mapping) and b.get("name") and str(b["name"]) not in table:
                table[str(b["name"])] = dict(b)
    out = []
    for n in names:
        if isinstance(n, Mapping):
            n = n.get("name")
        info = table.get(str(n), {})
        cn = info.get("eo:common_name", info.get("common_name"))
        wl = info.get("eo:center_wavelength", info.get("center_wavelength"))
        out.append(Band(str(n), cn, None if wl is None else float(wl), tuple(info.get("xeofm:aliases") or ())))
    return out


def _axis(struct: Mapping[str, Any], *names: str) -> int | None:
    dims = list(struct.get("dim_order") or [])
    shape = list(struct.get("shape") or [])
    for n in names:
        if n in dims:
            v = shape[dims.index(n)]
            return None if v is None or int(v) < 0 else int(v)
    return None


def spec_from_stac(item: Any) -> ModelSpec:
    """A :class:`~xeofm.ModelSpec` from a STAC MLM item (a ``pystac.Item``, its dict, or a JSON file path).

    Items written by :func:`spec_to_stac` give back the same spec (same ``hash``).
    Other MLM items need a builder: ``xeofm:builder`` or an asset with
    ``mlm:entrypoint: "package.module:function"`` returning the torch module;
    its keyword arguments come from ``xeofm:builder_kwargs`` (default none).

    Raises
    ------
    SpecError
        Naming every missing or unusable field.
    """
    d = _as_dict(item)
    props = d.get("properties") or {}
    name = props.get("mlm:name") or d.get("id") or "?"
    problems = check_item(d)
    builder = props.get("xeofm:builder") or _entrypoint(d)
    if not builder:
        problems.append(
            "no builder: give properties.xeofm:builder or an asset with mlm:entrypoint 'package.module:function'"
        )
    inp = (props.get("mlm:input") or [None])[0]
    out = (props.get("mlm:output") or [None])[0]
    if isinstance(inp, Mapping) and isinstance(inp.get("input"), Mapping):
        chip = props.get("xeofm:chip_size") or _axis(inp["input"], "height", "width")
        if not chip:
            problems.append("mlm:input[0].input.shape gives no fixed height/width (and no xeofm:chip_size)")
    else:
        chip = None
    kind = props.get("xeofm:output")
    dim = props.get("xeofm:embedding_dim")
    res = out.get("result") if isinstance(out, Mapping) else None
    if isinstance(res, Mapping):
        dims = list(res.get("dim_order") or [])
        if kind is None:
            if "token" in dims:
                kind = "tokens"
            elif "height" in dims and "width" in dims:
                kind = "patch"
            elif len(dims) == 2:
                kind = "vector"
            else:
                problems.append(
                    f"cannot tell the output kind from mlm:output[0].result.dim_order {dims} (give xeofm:output)"
                )
        if dim is None:
            dim = _axis(res, "embedding", "channel", "channels", "feature", "features")
            if dim is None:
                problems.append("mlm:output[0].result gives no fixed 'embedding' size (and no xeofm:embedding_dim)")
    if problems:
        raise SpecError(f"STAC item for model {name!r} cannot be used: " + "; ".join(problems))

    stride = props.get("xeofm:stride")
    if stride is None:
        if kind == "patch":
            h = _axis(res, "height")  # type: ignore[arg-type]
            stride = chip // h if h else None
        elif kind == "vector":
            stride = chip
        else:
            stride = (props.get("mlm:hyperparameters") or {}).get("patch_size")
        if not stride:
            raise SpecError(
                f"STAC item for model {name!r}: the output stride is unknown; give properties.xeofm:stride "
                "(or mlm:hyperparameters.patch_size for token outputs)"
            )
    frames = props.get("xeofm:time_frames") or _axis(inp["input"], "time") or 1
    prefix = props.get("xeofm:prefix_tokens")
    if prefix is None:
        prefix = 0
        if kind == "tokens":
            ntok = _axis(res, "token")  # type: ignore[arg-type]
            if ntok:
                prefix = max(0, ntok - frames * (chip // int(stride)) ** 2)
    bands = _bands_from_item(d, list(inp.get("bands") or []))
    norm = props.get("xeofm:normalisation") or _normalisation_from_mlm(inp, len(bands), str(name))

    assets = _model_assets(d)
    weights_asset = next((a for a in assets if "mlm:weights" in (a.get("roles") or [])), None) or (
        assets[0] if assets and "code" not in (assets[0].get("roles") or []) else None
    )
    meta = dict(props.get("xeofm:metadata") or {})
    if "xeofm:weights" in props:
        weights = props["xeofm:weights"]
        weights_file = props.get("xeofm:weights_file")
        sha = props.get("xeofm:weights_sha256")
    else:
        weights, weights_file, sha = None, None, None
        if weights_asset is not None:
            href = str(weights_asset.get("href", ""))
            local = href[len("file://"):] if href.startswith("file://") else href
            if "://" not in local and Path(local).expanduser().is_file():
                weights = str(Path(local).expanduser().resolve())
            elif href:
                meta.setdefault("weights_url", href)
            weights_file = Path(local).name or None
            chk = str(weights_asset.get("file:checksum") or "")
            if chk.startswith("1220") and len(chk) == 68:
                sha = chk[4:]
    kwargs: dict[str, Any] = dict(
        name=str(name),
        bands=tuple(bands),
        chip_size=int(chip),  # type: ignore[arg-type]
        stride=int(stride),
        embedding_dim=int(dim),  # type: ignore[arg-type]
        output=kind,
        mean=None if norm.get("mean") is None else tuple(norm["mean"]),
        std=None if norm.get("std") is None else tuple(norm["std"]),
        scale=norm.get("scale", 1.0),
        offset=norm.get("offset", 0.0),
        prefix_tokens=int(prefix),
        builder=str(builder),
        builder_kwargs=tuple(sorted(dict(props.get("xeofm:builder_kwargs") or {}).items())),
        weights=weights,
        overlap=props.get("xeofm:overlap"),
        gsd=props.get("gsd"),
        time_frames=int(frames),
        aux=tuple(props.get("xeofm:aux") or ()),
        weights_file=weights_file,
        weights_sha256=sha,
        metadata=tuple(sorted(meta.items())),
        dtype=props.get("xeofm:dtype"),
        licence=props.get("xeofm:licence") or props.get("license"),
        citation=props.get("sci:citation"),
        description=props.get("description"),
    )
    try:
        return ModelSpec(**kwargs)
    except SpecError as exc:
        raise SpecError(f"STAC item for model {name!r} describes an inconsistent spec: {exc}") from exc
