"""Spectral bands: canonical ids, common names, aliases and matching.

A model names the bands it needs with :class:`Band` objects. A cube names its
bands however its loader did (``B04``, ``B4``, ``red``, ``SR_B4``...). Bands are
matched, in this order, by an explicit user mapping, by the model's band id
(``B4`` and ``B04`` are the same id), by the band's aliases, and finally by the
STAC ``eo:common_name`` and its usual synonyms (``swir16``/``swir1``).

Ids are sensor specific (Landsat 8 ``B5`` is NIR, Sentinel-2 ``B05`` is red
edge); common names are not. Cubes that mix sensors should use common names, or
pass ``bands={"B04": "my_red"}`` explicitly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from .errors import MissingBandsError

__all__ = [
    "Band",
    "SENTINEL2",
    "SENTINEL2_L2A",
    "S2_L2A_OFFSET_DATE",
    "harmonize_s2_l2a",
    "HLS", "RGB", "RGBN", "LANDSAT_OLI", "resolve_bands", "normalize_name"]


# Synonyms of STAC eo:common_name values seen in loaders and model cards.
_COMMON_SYNONYMS: dict[str, tuple[str, ...]] = {
    "coastal": ("coastal", "coastal_aerosol", "aerosol", "ca"),
    "blue": ("blue",),
    "green": ("green",),
    "red": ("red",),
    "yellow": ("yellow",),
    "rededge1": ("rededge1", "rededge_1", "red_edge_1", "re1", "rededge"),
    "rededge2": ("rededge2", "rededge_2", "red_edge_2", "re2"),
    "rededge3": ("rededge3", "rededge_3", "red_edge_3", "re3"),
    "nir": ("nir", "nir_broad", "nir08broad"),
    "nir08": ("nir08", "nir_narrow", "nirnarrow", "rededge4", "nir_08"),
    "nir09": ("nir09", "water_vapor", "watervapor", "wv"),
    "cirrus": ("cirrus",),
    "swir16": ("swir16", "swir1", "swir_1", "swir_16"),
    "swir22": ("swir22", "swir2", "swir_2", "swir_22"),
    "pan": ("pan", "panchromatic"),
    "lwir11": ("lwir11", "lwir", "tir1", "thermal"),
    "lwir12": ("lwir12", "tir2"),
    "vv": ("vv",),
    "vh": ("vh",),
}

_BAND_ID = re.compile(r"^(?:sr_|toa_)?b(?:and)?0*(\d+)(a?)$")


def normalize_name(name: object) -> str:
    """Return a comparison key for a band name.

    Case, separators and zero padding of band numbers are ignored:
    ``"B04"``, ``"b4"``, ``"band_4"`` and ``"SR_B4"`` all give ``"b4"``.
    """
    s = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    compact = s.replace("_", "")
    m = _BAND_ID.match(compact) or _BAND_ID.match(s)
    if m:
        return f"b{int(m.group(1))}{m.group(2)}"
    return compact


@dataclass(frozen=True)
class Band:
    """One input band a model expects.

    Parameters
    ----------
    id
        Canonical id for the sensor, e.g. ``"B04"``.
    common_name
        STAC ``eo:common_name`` (``"red"``, ``"nir08"``, ``"swir16"``...).
    wavelength
        Centre wavelength in micrometres (used by wavelength-conditioned models).
    aliases
        Extra accepted names.
    """

    id: str
    common_name: str | None = None
    wavelength: float | None = None
    aliases: tuple[str, ...] = field(default_factory=tuple)

    def candidates(self) -> list[str]:
        """Names this band may carry in a cube, most specific first."""
        names = [self.id, *self.aliases]
        if self.common_name:
            names += list(_COMMON_SYNONYMS.get(self.common_name, (self.common_name,)))
        seen: list[str] = []
        for n in names:
            if n not in seen:
                seen.append(n)
        return seen


def _b(id, cn, wl, *aliases):  # compact table builder
    return Band(id, cn, wl, tuple(aliases))


#: Sentinel-2 MSI, all 13 bands in L1C order.
SENTINEL2: tuple[Band, ...] = (
    _b("B01", "coastal", 0.443),
    _b("B02", "blue", 0.490),
    _b("B03", "green", 0.560),
    _b("B04", "red", 0.665),
    _b("B05", "rededge1", 0.705),
    _b("B06", "rededge2", 0.740),
    _b("B07", "rededge3", 0.783),
    _b("B08", "nir", 0.842),
    _b("B8A", "nir08", 0.865),
    _b("B09", "nir09", 0.945),
    _b("B10", "cirrus", 1.375),
    _b("B11", "swir16", 1.610),
    _b("B12", "swir22", 2.190),
)

#: Sentinel-2 L2A surface reflectance: the L1C bands without B10 (cirrus), 12 bands.
SENTINEL2_L2A: tuple[Band, ...] = tuple(b for b in SENTINEL2 if b.id != "B10")

#: First acquisition date processed with baseline 04.00, which adds 1000 DN to L2A (BOA_ADD_OFFSET = -1000).
S2_L2A_OFFSET_DATE = "2022-01-25"


def harmonize_s2_l2a(
    cube: Any,
    *,
    time_dim: str = "time",
    baseline: Any = None,
    offset: float = 1000.0,
    nodata: float | None = 0,
) -> Any:
    """Remove the +1000 DN offset from Sentinel-2 L2A scenes of processing baseline ≥ 04.00, lazily.

    Since 2022-01-25 ESA's L2A products store ``reflectance * 10000 + 1000``
    (``BOA_ADD_OFFSET = -1000``); models trained on older L2A or on L1C expect
    the old scale. This subtracts ``offset`` from the dates that carry it and
    clips at 0, like Microsoft Planetary Computer's harmonisation recipe.

    Parameters
    ----------
    cube
        DataArray or Dataset of L2A digital numbers with a ``time_dim``.
    time_dim
        The time dim (its values are the acquisition dates).
    baseline
        Processing baselines per date (sequence of strings/floats such as
        ``"05.09"``); default: the ``s2:processing_baseline`` coordinate on
        ``time_dim`` when there is one (odc-stac / stackstac carry it), else
        the acquisition date (≥ :data:`S2_L2A_OFFSET_DATE` means offset).
    offset
        DN to subtract where the offset applies.
    nodata
        Value left untouched (0 is L2A's nodata); NaN is always kept.

    Returns
    -------
    Same type as ``cube``, float32 where it was integer, with attribute
    ``xeofm:s2_harmonized = 1`` on each harmonised array. Already harmonised
    input (that attribute set) is returned unchanged.
    """
    import numpy as np
    import xarray as xr

    from .errors import InputError, MissingDimensionError

    if isinstance(cube, xr.Dataset):
        out = cube.copy()
        for v in cube.data_vars:
            if time_dim in cube[v].dims:
                out[v] = harmonize_s2_l2a(cube[v], time_dim=time_dim, baseline=baseline, offset=offset, nodata=nodata)
        return out
    if not isinstance(cube, xr.DataArray):
        raise InputError(f"expected an xarray DataArray or Dataset, got {type(cube).__name__}")
    if cube.attrs.get("xeofm:s2_harmonized"):
        return cube
    if time_dim not in cube.dims:
        raise MissingDimensionError(
            f"harmonize_s2_l2a needs the acquisition dates: no {time_dim!r} dim in {list(cube.dims)} "
            "(expand_dims a time coordinate, or pass time_dim=...)"
        )
    if baseline is None and "s2:processing_baseline" in cube.coords:
        baseline = cube.coords["s2:processing_baseline"].values
    if baseline is not None:
        vals = np.asarray(baseline).reshape(-1)
        if vals.size != cube.sizes[time_dim]:
            raise InputError(f"{vals.size} processing baselines for {cube.sizes[time_dim]} dates along {time_dim!r}")
        applies = np.array([float(v) >= 4.0 for v in vals])
    else:
        if time_dim not in cube.coords or not np.issubdtype(cube[time_dim].dtype, np.datetime64):
            raise InputError(
                f"harmonize_s2_l2a needs datetime coordinates on {time_dim!r} or baseline=[...] per date"
            )
        applies = cube[time_dim].values >= np.datetime64(S2_L2A_OFFSET_DATE)
    flag = xr.DataArray(applies, dims=[time_dim], coords={time_dim: cube[time_dim]})
    x = cube.astype("float32") if not np.issubdtype(cube.dtype, np.floating) else cube
    shifted = (x - np.float32(offset)).clip(min=0)
    keep = ~flag
    if nodata is not None:
        keep = keep | (x == nodata)
    out = x.where(keep, shifted)
    out.attrs = {**cube.attrs, "xeofm:s2_harmonized": 1}
    out.encoding = dict(cube.encoding)
    return out.transpose(*cube.dims)


#: Landsat 8/9 OLI reflective bands.
LANDSAT_OLI: tuple[Band, ...] = (
    _b("B1", "coastal", 0.443),
    _b("B2", "blue", 0.482),
    _b("B3", "green", 0.561),
    _b("B4", "red", 0.655),
    _b("B5", "nir08", 0.865),
    _b("B6", "swir16", 1.609),
    _b("B7", "swir22", 2.201),
)

#: The six HLS bands used by Prithvi (blue, green, red, narrow NIR, SWIR 1, SWIR 2).
HLS: tuple[Band, ...] = (
    _b("blue", "blue", 0.490, "B02"),
    _b("green", "green", 0.560, "B03"),
    _b("red", "red", 0.665, "B04"),
    _b("nir08", "nir08", 0.865, "B8A", "nir"),
    _b("swir16", "swir16", 1.610, "B11"),
    _b("swir22", "swir22", 2.190, "B12"),
)

#: Plain RGB in red, green, blue order.
RGB: tuple[Band, ...] = (
    _b("red", "red", 0.665),
    _b("green", "green", 0.560),
    _b("blue", "blue", 0.490),
)

#: RGB plus near infrared.
RGBN: tuple[Band, ...] = RGB + (_b("nir", "nir", 0.842, "nir08"),)


def resolve_bands(
    available: Sequence[object],
    required: Sequence[Band],
    mapping: Mapping[str, str] | None = None,
) -> list[object]:
    """Pick, for each required band, the matching name among ``available``.

    Parameters
    ----------
    available
        Band names present in the cube (values of the band coordinate, or
        Dataset variable names).
    required
        The model's bands, in the order the model needs them.
    mapping
        Optional explicit ``{model band id or common name: cube band name}``.

    Returns
    -------
    list
        Cube band names in model order.

    Raises
    ------
    MissingBandsError
        Naming every missing band and the names tried for it.
    """
    mapping = dict(mapping or {})
    keyed: dict[str, object] = {}
    for a in available:
        keyed.setdefault(normalize_name(a), a)
    chosen: list[object] = []
    missing: list[str] = []
    for band in required:
        explicit = None
        for key in (band.id, band.common_name):
            if key is not None and key in mapping:
                explicit = mapping[key]
        if explicit is not None:
            if explicit not in list(available):
                raise MissingBandsError(
                    f"bands mapping sends model band {band.id!r} to {explicit!r}, "
                    f"which is not in the cube (cube bands: {list(available)})"
                )
            chosen.append(explicit)
            continue
        hit = None
        for cand in band.candidates():
            k = normalize_name(cand)
            if k in keyed:
                hit = keyed[k]
                break
        if hit is None:
            missing.append(f"{band.id} (tried {', '.join(band.candidates())})")
        else:
            chosen.append(hit)
    if missing:
        raise MissingBandsError(
            "the cube lacks bands the model needs: "
            + "; ".join(missing)
            + f". Cube bands: {[str(a) for a in available]}. Rename them, or pass "
            "bands={'<model band>': '<cube band>'} to map them explicitly."
        )
    if len(set(map(str, chosen))) != len(chosen):
        raise MissingBandsError(
            f"two model bands matched the same cube band ({[str(c) for c in chosen]}); "
            "pass bands={...} to map them explicitly"
        )
    return chosen


def as_bands(bands: Iterable[Band | str]) -> tuple[Band, ...]:
    """Coerce names or :class:`Band` objects to a tuple of bands.

    Known names (Sentinel-2 ids, common names) get their wavelengths.
    """
    table: dict[str, Band] = {}
    for b in SENTINEL2:
        table.setdefault(normalize_name(b.id), b)
    for b in SENTINEL2 + RGBN + HLS:
        if b.common_name:
            table.setdefault(normalize_name(b.common_name), Band(b.common_name, b.common_name, b.wavelength, (b.id,) if b in SENTINEL2 else ()))
    out = []
    for b in bands:
        if isinstance(b, Band):
            out.append(b)
        else:
            known = table.get(normalize_name(b))
            if known is not None and normalize_name(known.id) == normalize_name(b):
                out.append(known)
            else:
                out.append(Band(str(b), None, None))
    return tuple(out)
