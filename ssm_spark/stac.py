"""A STAC catalogue of a product: one collection, one item per committed date (pystac).

Layout, beside the product's other outputs::

    OUTPUT/stac/collection.json      the collection: extent of every item, links to them
    OUTPUT/stac/items/<date>.json    one item per committed date

An item is built from what the date's commit left in the product folder, not from the run that made
it: the date's marker (``parquet/date=<date>/_SUCCESS.json``: status, manifest id, config and
product hashes, counts and the list of every output file) and ``product.json`` (grid, region). Its
assets are every file the marker lists, with hrefs relative to the item file:

=====================  ========================================================================
asset key              file
=====================  ========================================================================
``cog_<tr>_<tc>``      the tile COGs (roles ``data``), with ``proj:shape``/``proj:transform`` of
                       the tile and ``raster:bands`` read from the file (data type, nodata, unit)
``parquet_<tr>_<tc>``  the date's Parquet files (roles ``data``), one per tile
``vrt``                the VRT mosaic of the date (roles ``data``, ``mosaic``)
``quicklook``          the PNG (roles ``overview``)
``<cgrid>_...``        likewise for each aggregated grid (``agg/<cgrid>/...``), with its own
                       ``proj:`` fields
=====================  ========================================================================

Properties: ``datetime`` is null and ``start_datetime``/``end_datetime`` span the date's UTC day
(a date's product mixes the acquisitions of that day); ``proj:epsg``, ``proj:shape`` and
``proj:transform`` are the mosaic's (the VRT's); ``ssm_spark:manifest_id``,
``ssm_spark:config_hash``, ``ssm_spark:product_hash``, ``ssm_spark:status`` and the marker's counts
(``ssm_spark:retrieved``, ``ssm_spark:pixels``, ``ssm_spark:ssm_mean``) record the provenance. The
geometry is the union of the date's tiles in lon/lat (edges densified, so the footprint of a
projected tile is not cut short).

Extensions: raster v1.1.0 (pystac's :class:`~pystac.extensions.raster.RasterExtension`) and
projection v1.1.0 (``proj:epsg``), written as fields: pystac 1.14 writes projection v2.0.0
(``proj:code``), whose JSON schema is not available to an offline validation; readers such as
odc-stac and stackstac take either.

Writes are whole or nothing (:mod:`ssm_spark.io`): items first, the collection last, so a reader
following the collection's links finds every item it names. :func:`on_commit` is the hook for the
product's commit (one date); :func:`update_catalog` (re)builds any dates and drops the items of
dates no longer committed; :func:`prune_catalog` only drops them (a folder without the data files).
On an object store the same files are published after each date's marker, the collection after
the items and stale items deleted after the collection (:mod:`ssm_spark.product.remote`).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
from pathlib import Path
from typing import Iterable, Mapping

import pystac
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension

from ssm_spark.errors import InputError
from ssm_spark.grid import Grid
from ssm_spark.io import write_json_atomic
from ssm_spark.product.commit import MARKER

log = logging.getLogger(__name__)

__all__ = ["build_item", "build_collection", "update_catalog", "prune_catalog", "on_commit", "read_product",
           "committed_dates",
           "PROJECTION_V1_1", "STAC_DIR", "MARKER"]

STAC_DIR = "stac"
#: The projection extension the items declare (see the module docstring for why not v2.0.0).
PROJECTION_V1_1 = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
PARQUET_MEDIA_TYPE = "application/vnd.apache.parquet"
_TILE_RE = re.compile(r"^(?P<grid>.+)_(?P<tr>\d+)_(?P<tc>\d+)\.(?P<ext>tif|parquet)$")
_UNITS = {"ssm": "m3/m3", "ssm_p05": "m3/m3", "ssm_p95": "m3/m3", "frac_valid": "1"}


# ------------------------------------------------------------------------------------ reading


def read_product(output: os.PathLike | str) -> dict:
    """``OUTPUT/product.json``.

    Raises
    ------
    InputError
        If the folder holds no readable ``product.json`` (not a product folder, or a run that never
        committed a date).
    """
    p = Path(output) / "product.json"
    return _read_json(p, f"{p} not found: {output} is not a product folder (made by ssm-spark produce), "
                         "or no date was committed yet")


def _marker(output: Path, date: str) -> dict:
    p = output / "parquet" / f"date={date}" / MARKER
    return _read_json(p, f"date {date} is not committed in {output}: {p} not found (an interrupted run, or a "
                         "date outside the product)")


def _read_json(p: Path, missing: str) -> dict:
    """A JSON file of the product; ``missing`` is the error when it is absent."""
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(missing) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"{p} cannot be read as JSON: {exc}") from None


def committed_dates(output: os.PathLike | str) -> list[str]:
    """The dates whose commit marker exists, sorted."""
    return sorted(p.parent.name.split("=", 1)[1] for p in (Path(output) / "parquet").glob(f"date=*/{MARKER}"))


def _grid(product: dict) -> Grid:
    g = product.get("grid")
    try:
        return Grid(**{k: g[k] for k in ("name", "crs", "x0", "y0", "cell", "n_rows", "n_cols", "tile_size")})
    except (TypeError, KeyError) as exc:
        raise InputError(f"product.json: the 'grid' entry lacks {exc} (written by another version?)") from None


def _epsg(crs: str) -> int | None:
    from pyproj import CRS

    return CRS.from_user_input(crs).to_epsg()


# ------------------------------------------------------------------------------------ an item


def _raster_bands(src) -> list[RasterBand]:
    bands = []
    for i, dtype in enumerate(src.dtypes, start=1):
        name = (src.descriptions[i - 1] or "") if src.descriptions else ""
        nodata = src.nodata
        if nodata is not None and nodata != nodata:  # NaN: the schema's "nan" string (strict JSON has no NaN)
            nodata = NoDataStrings.NAN
        unit = src.tags(i).get("units") or _UNITS.get(name)
        bands.append(RasterBand.create(nodata=nodata, data_type=DataType(dtype), unit=unit,
                                       spatial_resolution=abs(src.transform.a)))
    return bands


def _raster_fields(path: Path) -> tuple[dict, list[RasterBand], tuple[float, float, float, float]]:
    import rasterio

    try:
        with rasterio.open(path) as src:
            fields = {"proj:shape": [src.height, src.width], "proj:transform": list(src.transform)[:6]}
            return fields, _raster_bands(src), tuple(src.bounds)
    except rasterio.RasterioIOError as exc:
        raise InputError(f"{path} cannot be read ({exc}): the product changed after its commit?") from None


def _asset(item_dir: Path, path: Path, media_type: str, roles: list[str], title: str) -> pystac.Asset:
    return pystac.Asset(href=Path(os.path.relpath(path, item_dir)).as_posix(), media_type=media_type, roles=roles,
                        title=title)


def _footprint(grid: Grid, tiles: Iterable[tuple[int, int]]):
    import shapely

    polys = [grid.tile_polygon(tr, tc, lonlat=True) for tr, tc in sorted(set(tiles))]
    # simplify(0) drops the densified points on straight edges (a geographic or cylindrical grid)
    return shapely.union_all(polys).simplify(0).normalize() if polys else None


def build_item(output: os.PathLike | str, date: str, marker: Mapping | None = None,
               collection_id: str | None = None, sources: Mapping[str, str] | None = None) -> pystac.Item:
    """The STAC item of one committed date of a product (see the module docstring).

    Parameters
    ----------
    output : path-like
        The product folder.
    date : str
        ``YYYY-MM-DD``.
    marker : mapping, optional
        The date's commit marker (read from the folder when not given).
    collection_id : str, optional
        Default: :func:`collection_id` of the product.
    sources : mapping, optional
        Where an output the marker lists is read from when it is not in the folder (relative key ->
        a path GDAL opens): a product on a store, whose tiles are objects (``/vsis3/...``) when the
        item is built (:mod:`ssm_spark.product.run`). Asset links stay relative to the folder.

    Raises
    ------
    InputError
        If the date is not committed, ``product.json`` is missing, or a file the marker lists is
        missing or unreadable.
    """
    from shapely.geometry import mapping

    output = Path(output)
    product = read_product(output)
    marker = dict(marker) if marker is not None else _marker(output, date)
    grid = _grid(product)
    epsg = _epsg(grid.crs)
    item_dir = output / STAC_DIR / "items"
    day = dt.datetime.strptime(date, "%Y-%m-%d").replace(tzinfo=dt.timezone.utc)
    counts = marker.get("counts", {})
    props = {"ssm_spark:manifest_id": marker.get("manifest_id"), "ssm_spark:config_hash": marker.get("config_hash"),
             "ssm_spark:product_hash": marker.get("product_hash"), "ssm_spark:status": marker.get("status"),
             "ssm_spark:grid": grid.name, "ssm_spark:software": marker.get("software"),
             **{f"ssm_spark:{k}": counts[k] for k in ("pixels", "retrieved", "masked", "ssm_mean") if k in counts},
             "proj:epsg": epsg}
    item = pystac.Item(id=date, geometry=None, bbox=None, datetime=None, properties=props,
                       start_datetime=day, end_datetime=day + dt.timedelta(days=1, microseconds=-1),
                       collection=collection_id or collection_id_of(product))
    item.stac_extensions.append(PROJECTION_V1_1)
    tiles: list[tuple[int, int]] = []
    outputs = marker.get("outputs")
    if not isinstance(outputs, dict) or not outputs:
        raise InputError(f"the marker of {date} in {output} lists no outputs (written by another version?)")
    for rel in sorted(outputs):
        path = output / rel
        read = (sources or {}).get(rel, path)
        if rel not in (sources or {}) and not path.is_file():
            raise InputError(f"{path} is listed by the marker of {date} but missing: the product changed after "
                             "its commit (re-run produce for this date)")
        parts = Path(rel).parts
        prefix = f"{parts[1]}_" if parts[0] == "agg" else ""
        kind = parts[2] if parts[0] == "agg" else parts[0]
        m = _TILE_RE.match(path.name)
        if kind == "cog" and m:
            tr, tc = int(m["tr"]), int(m["tc"])
            key, title = f"{prefix}cog_{tr}_{tc}", f"{m['grid']} tile ({tr}, {tc}) COG"
            asset = _asset(item_dir, path, pystac.MediaType.COG, ["data"], title)
            fields, bands, _ = _raster_fields(read)
            asset.extra_fields.update(fields)
            if prefix:
                asset.extra_fields["proj:epsg"] = epsg
            else:
                tiles.append((tr, tc))
            item.add_asset(key, asset)
            RasterExtension.ext(asset, add_if_missing=True).bands = bands
        elif kind == "parquet" and m:
            if not prefix:  # a Parquet-only product (produce.cog=false) has its footprint from these
                tiles.append((int(m["tr"]), int(m["tc"])))
            key = f"{prefix}parquet_{m['tr']}_{m['tc']}"
            item.add_asset(key, _asset(item_dir, path, PARQUET_MEDIA_TYPE, ["data"],
                                       f"{m['grid']} tile ({m['tr']}, {m['tc']}) product rows"))
        elif kind == "vrt":
            asset = _asset(item_dir, path, pystac.MediaType.XML, ["data", "mosaic"], "GDAL VRT mosaic of the tile COGs")
            fields, bands, _ = _raster_fields(read)
            asset.extra_fields.update(fields)
            if prefix:
                asset.extra_fields["proj:epsg"] = epsg
            else:
                item.properties.update(fields)
            item.add_asset(f"{prefix}vrt", asset)
            RasterExtension.ext(asset, add_if_missing=True).bands = bands
        elif kind == "quicklook":
            item.add_asset(f"{prefix}quicklook", _asset(item_dir, path, pystac.MediaType.PNG, ["overview"],
                                                        "quicklook: SSM, colour bar, region outline"))
        else:
            log.warning("stac: %s (listed by the marker of %s) is of no known kind; not an asset", rel, date)
    if not tiles:
        raise InputError(f"the marker of {date} in {output} lists no tile (COG or Parquet): no footprint for the item")
    geom = _footprint(grid, sorted(set(tiles)))
    item.geometry, item.bbox = mapping(geom), list(geom.bounds)
    return item


# ------------------------------------------------------------------------------ the collection


def collection_id_of(product: Mapping) -> str:
    """``ssm-<region name>-<grid name>``, e.g. ``ssm-demo-ease2_1km``."""
    region = (product.get("region") or {}).get("name") or "region"
    grid = (product.get("grid") or {}).get("name") or "grid"
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"ssm-{region}-{grid}")


def build_collection(product: Mapping, items: list[pystac.Item]) -> pystac.Collection:
    """The collection over ``items`` (their union extent), linking to ``items/<date>.json``."""
    if not items:
        raise InputError("no committed date: a STAC collection needs at least one item")
    bboxes = [it.bbox for it in items]
    spatial = [[min(b[0] for b in bboxes), min(b[1] for b in bboxes), max(b[2] for b in bboxes),
                max(b[3] for b in bboxes)]]
    starts = [pystac.utils.str_to_datetime(it.properties["start_datetime"]) if isinstance(
        it.properties["start_datetime"], str) else it.properties["start_datetime"] for it in items]
    ends = [pystac.utils.str_to_datetime(it.properties["end_datetime"]) if isinstance(
        it.properties["end_datetime"], str) else it.properties["end_datetime"] for it in items]
    region = product.get("region") or {}
    coll = pystac.Collection(
        id=collection_id_of(product),
        description=f"{product.get('product', 'surface soil moisture')}: region {region.get('name')} "
                    f"({region.get('source', region.get('kind', ''))}), grid {product['grid']['name']}",
        extent=pystac.Extent(pystac.SpatialExtent(spatial), pystac.TemporalExtent([[min(starts), max(ends)]])),
        license="other", title=f"SSM {region.get('name')} {product['grid']['name']}",
        providers=[pystac.Provider(name=product.get("software", "ssm_spark"), roles=[pystac.ProviderRole.PROCESSOR])],
        extra_fields={"ssm_spark:manifest_id": product.get("manifest_id"),
                      "ssm_spark:config_hash": product.get("config_hash"),
                      "ssm_spark:product_hash": product.get("product_hash")})
    coll.summaries.add("proj:epsg", sorted({it.properties.get("proj:epsg") for it in items} - {None}))
    for it in sorted(items, key=lambda i: i.id):
        coll.add_link(pystac.Link(pystac.RelType.ITEM, f"./items/{it.id}.json", media_type=pystac.MediaType.GEOJSON,
                                  title=it.id))
    return coll


def _item_dict(item: pystac.Item) -> dict:
    item.clear_links()
    for rel in (pystac.RelType.COLLECTION, pystac.RelType.PARENT, pystac.RelType.ROOT):
        item.add_link(pystac.Link(rel, "../collection.json", media_type=pystac.MediaType.JSON))
    return item.to_dict(include_self_link=False, transform_hrefs=False)


def update_catalog(output: os.PathLike | str, dates: Iterable[str] | None = None,
                   markers: Mapping[str, Mapping] | None = None, sources: Mapping[str, str] | None = None) -> Path:
    """Write the items of ``dates`` (default: every committed date) and then the collection.

    Items of other committed dates are kept as they are (built when missing; one that cannot be
    built, its files not in the folder, is left out with a warning); item files of dates no longer
    committed are removed. ``markers`` (date -> commit marker) spares reading markers the
    caller holds; ``sources`` are :func:`build_item`'s, for the items of ``dates``. Each file is
    replaced atomically, items first, the collection last.

    Returns
    -------
    Path
        ``OUTPUT/stac/collection.json``.

    Raises
    ------
    InputError
        See :func:`build_item`; also when no date is committed.
    """
    output = Path(output)
    product = read_product(output)
    done = committed_dates(output)
    wanted = set(done if dates is None else dates)
    missing = sorted(wanted - set(done))
    if missing:
        raise InputError(f"dates not committed in {output}: {', '.join(missing)}")
    items_dir = output / STAC_DIR / "items"
    items, skipped = [], []
    for date in done:
        path = items_dir / f"{date}.json"
        item = None
        if date not in wanted and path.is_file():
            try:
                item = pystac.Item.from_dict(json.loads(path.read_text()), migrate=False)
            except (OSError, ValueError, KeyError) as exc:
                log.warning("stac: %s cannot be read (%s); rebuilt", path, exc)
        if item is None:
            try:
                item = build_item(output, date, (markers or {}).get(date), collection_id=collection_id_of(product),
                                  sources=sources if date in wanted else None)
            except InputError as exc:
                if date in wanted:
                    raise
                # another date, without an item and not buildable here (its files are not in this folder:
                # the working folder of a product on a store, or a damaged product): left out, said
                skipped.append(date)
                log.warning("stac: no item for %s, committed but not buildable here (%s); left out of the "
                            "collection (produce --force for that date builds it)", date, exc)
                continue
            write_json_atomic(path, _item_dict(item))
        items.append(item)
    if not items:
        raise InputError(f"no STAC item could be built in {output}: the committed dates {', '.join(skipped)} have "
                         "no item and their files are not there")
    coll = build_collection(product, items)
    target = output / STAC_DIR / "collection.json"
    write_json_atomic(target, coll.to_dict(include_self_link=False, transform_hrefs=False))
    for stale in sorted(items_dir.glob("*.json")):
        if stale.stem not in set(done):
            stale.unlink()
            log.info("stac: removed the item of %s (no longer committed)", stale.stem)
    log.info("stac: %s: %d item(s), %d (re)built", target, len(items), len(wanted))
    return target


def prune_catalog(output: os.PathLike | str) -> dict:
    """Make the catalogue match the committed dates without building an item (no data file is read).

    Items of dates whose marker is gone are removed, after the collection is rewritten over the
    remaining items (when the set of items changed, or it is missing); with no item left the
    collection is removed too. For a folder that holds the markers and the STAC files but not the
    data files: the local working folder of a product on an object store
    (:meth:`ssm_spark.product.remote.RemoteOutput.pull`).

    Returns
    -------
    dict
        ``items`` (the dates kept), ``removed`` (dates whose item was removed) and ``missing``
        (committed dates without an item, e.g. made with ``produce.stac: false``; left out).
    """
    output = Path(output)
    items_dir, target = output / STAC_DIR / "items", output / STAC_DIR / "collection.json"
    present = {p.stem: p for p in sorted(items_dir.glob("*.json"))} if items_dir.is_dir() else {}
    done = set(committed_dates(output))
    items = []
    for date in sorted(set(present) & done):
        try:
            items.append(pystac.Item.from_dict(json.loads(present[date].read_text()), migrate=False))
        except (OSError, ValueError, KeyError) as exc:
            log.warning("stac: %s cannot be read (%s); left out of the collection", present[date], exc)
    stale = sorted(set(present) - done)
    kept = [it.id for it in items]
    try:
        linked = sorted(lk["href"].rsplit("/", 1)[-1][:-5] for lk in json.loads(target.read_text()).get("links", [])
                        if lk.get("rel") == "item")
    except (OSError, ValueError):
        linked = None
    if items and linked != kept:
        write_json_atomic(target, build_collection(read_product(output), items).to_dict(
            include_self_link=False, transform_hrefs=False))
    elif not items and target.exists():
        target.unlink()
    for date in stale:
        present[date].unlink()
        log.info("stac: removed the item of %s (no longer committed)", date)
    missing = sorted(done - set(kept))
    return {"items": kept, "removed": stale, "missing": missing}


def on_commit(output: os.PathLike | str, date: str, marker: Mapping | None = None,
              sources: Mapping[str, str] | None = None) -> Path:
    """The commit hook: the date's item, then the collection (call after the date's marker is written);
    ``sources``: see :func:`build_item`."""
    return update_catalog(output, [date], {date: marker} if marker is not None else None, sources)
