"""The VAC as a HATS catalogue (HEALPix-partitioned Parquet) for LSDB, written with hats-import.

:func:`export_hats` streams the FITS VAC into one staging Parquet file (the schema of
:mod:`catalog_tool.vac.parquet`: units, UCDs and descriptions in the field metadata, provenance in
the schema metadata) and hands it to hats-import's catalogue pipeline, which partitions the rows
by HEALPix from ``TARGET_RA``/``TARGET_DEC`` (adaptive orders, at most ``pixel_threshold`` rows a
partition), adds the ``_healpix_29`` spatial index and writes the standard layout::

    OUT/
      hats.properties, properties     catalogue properties; the stxcat provenance as stxcat_* keys
      partition_info.csv, skymap.fits, point_map.fits
      dataset/_common_metadata         the Arrow schema: field metadata, stxcat.provenance, VOParquet
      dataset/_metadata
      dataset/Norder=k/Dir=d/Npix=n.parquet
      errors.parquet                   the VAC's ERRORS table (FILE, REASON; zero rows when none)

The ERRORS table is a sidecar file rather than schema metadata because the schema is copied
into every partition file. Everything is built in a temporary folder beside ``OUT`` and renamed
into place at the end, so a failed export never leaves a partial catalogue under the real name.

hats-import runs on a Dask distributed client; this module starts its own, in-process (threads,
no worker processes, no dashboard, no network), and closes it. Memory: one chunk of the VAC while
staging, then hats-import's own bound (one destination partition, at most ``pixel_threshold``
rows, in the reduce step).

The ``hats`` extra (pyarrow, hats, hats-import, lsdb) is optional: nothing here is imported by the
FITS path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile

from catalog_tool import __version__
from catalog_tool.errors import StxcatError
from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import parquet as pqvac
from catalog_tool.vac import write as w

__all__ = ["export_hats", "read_hats_errors", "DEFAULT_PIXEL_THRESHOLD", "ERRORS_FILE"]

#: Most rows in one HATS partition (hats-import's default): ~220 MB of rows in memory.
DEFAULT_PIXEL_THRESHOLD = 1_000_000
#: Highest HEALPix order of a partition: order 7 pixels are 0.46 deg across (0.21 deg2), so a
#: partition is finer only where a VAC has over pixel_threshold rows in 0.2 deg2 (no survey does).
#: hats-import's default, 10, costs a fixed ~7 s of histogram sums over 12.6M pixels per export.
HIGHEST_ORDER = 7
#: The ERRORS table, beside hats.properties.
ERRORS_FILE = "errors.parquet"
#: Rows within a partition are sorted by _healpix_29, then by these (a deterministic order).
SORT_COLUMNS = "TARGETID,SURVEY,PROGRAM"


def _properties(prov: w.Provenance, nerrors: int) -> dict:
    """hats.properties entries recording where the catalogue came from."""
    d = pqvac.provenance_dict(prov)
    return {
        "hats_creator": f"stxcat {__version__}",
        "obs_description": f"stxcat stellar-parameter VAC ({dm.EXTNAME}, data model {dm.DATAMODEL_VERSION})",
        "stxcat_version": d["stxcat_version"],
        "stxcat_datamodel_version": d["datamodel_version"],
        "stxcat_model": d["model_name"],
        "stxcat_model_sha256": d["model_sha256"],
        "stxcat_command": d["command"],
        "stxcat_input": d["input"],
        "stxcat_date": d["date"],
        "stxcat_errors": str(nerrors),
    }


def _artifact_name(out: str) -> str:
    """The catalogue name hats-import accepts (letters, digits, ``._-``), from OUT's base name."""
    name = re.sub(r"[^A-Za-z0-9._-]", "_", os.path.basename(out)) or "stxcat_vac"
    return name.lstrip(".") or "stxcat_vac"


def _write_errors(path: str, errors) -> None:
    pa = pqvac.require_extra("pyarrow")
    import pyarrow.parquet as pq

    table = pa.table({"FILE": pa.array([str(f) for f, _ in errors], pa.string()),
                      "REASON": pa.array([str(r) for _, r in errors], pa.string())})
    schema = table.schema
    for i, (name, ucd, desc) in enumerate(w._ERRORS_COLUMNS):
        schema = schema.set(i, schema.field(name).with_metadata({b"ucd": ucd.encode(),
                                                                   b"description": desc.encode()}))
    pq.write_table(table.cast(schema), path)


def read_hats_errors(catalog_dir: str | os.PathLike) -> list[tuple[str, str]]:
    """The ERRORS table of a HATS VAC as ``[(file, reason)]``."""
    pq = pqvac.require_extra("pyarrow.parquet")
    path = os.path.join(os.fspath(catalog_dir), ERRORS_FILE)
    if not os.path.exists(path):
        raise pqvac.NotAVacError(f"{catalog_dir}: no {ERRORS_FILE} (not a HATS VAC written by stxcat)")
    t = pq.read_table(path)
    return list(zip(t.column("FILE").to_pylist(), t.column("REASON").to_pylist()))


def _run_import(args, *, threads: int, dask_dir: str) -> None:
    """hats-import's catalogue pipeline on a local in-process Dask client, closed afterwards."""
    from distributed import Client
    from hats_import.pipeline import pipeline_with_client

    with Client(processes=False, n_workers=1, threads_per_worker=threads, dashboard_address=None,
                local_directory=dask_dir) as client:
        pipeline_with_client(args, client)


def _replace_dir(new: str, out: str, trash_dir: str) -> None:
    """Put folder ``new`` at ``out``; an existing ``out`` is moved into ``trash_dir`` first."""
    if os.path.lexists(out):
        os.replace(out, os.path.join(trash_dir, "previous"))
    os.replace(new, out)


def export_hats(vac: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                progress: bool = False, pixel_threshold: int = DEFAULT_PIXEL_THRESHOLD,
                highest_order: int = HIGHEST_ORDER, threads: int | None = None,
                chunk_rows: int = pqvac.DEFAULT_ROW_GROUP_ROWS) -> pqvac.ExportResult:
    """Write the FITS VAC ``vac`` as a HATS catalogue in the folder ``out`` (with hats-import).

    Parameters
    ----------
    vac : path
        A VAC FITS file (``stxcat annotate`` output).
    out : path
        Catalogue folder to create; refused if it exists unless ``overwrite``.
    overwrite : bool
    progress : bool
        hats-import's progress bars (on stderr).
    pixel_threshold : int
        Most rows in one partition.
    highest_order : int
        Highest HEALPix order of a partition.
    threads : int, optional
        Threads of the local Dask worker; default min(2, CPUs).
    chunk_rows : int
        Rows read from the FITS VAC (and Parquet row group size) at a time.

    Raises
    ------
    NotAVacError, OutputExistsError, MissingExtraError, StxcatError (hats-import failed)
    """
    pqvac.require_extra("pyarrow", "hats", "hats_import", "distributed")
    from hats.io.parquet_metadata import write_voparquet_in_common_metadata
    from hats_import.catalog.arguments import ImportArguments
    from hats_import.catalog.file_readers.parquet import ParquetPyarrowReader

    vac, out = os.fspath(vac), os.path.abspath(os.fspath(out)).rstrip(os.sep)
    prov, errors, nrows, extras = pqvac.open_vac(vac)
    if os.path.lexists(out) and not overwrite:
        raise w.OutputExistsError(f"{out}: exists (pass --overwrite to replace it)")
    if nrows == 0:
        raise StxcatError(f"{vac}: the VAC has no rows; a HATS catalogue cannot be empty")
    threads = threads or min(2, os.cpu_count() or 1)
    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(out)}.", suffix=".tmp")
    try:
        staging = os.path.join(tmp, "staging", "vac.parquet")
        # no VOParquet XML and no errors in the staging schema: hats-import copies it into every
        # partition, which gain _healpix_29 and the hive columns (the XML is written for the final
        # schema below) and would repeat the errors in each file
        pqvac.write_parquet(staging, pqvac.iter_fits_chunks(vac, chunk_rows=chunk_rows), provenance=prov,
                            errors=None, voparquet=False)
        name = _artifact_name(out)
        args = ImportArguments(
            output_path=tmp, output_artifact_name=name, input_file_list=[staging],
            file_reader=ParquetPyarrowReader(iterate_by_row_groups=True),
            ra_column="TARGET_RA", dec_column="TARGET_DEC", sort_columns=SORT_COLUMNS,
            use_schema_file=staging, pixel_threshold=pixel_threshold, highest_healpix_order=highest_order,
            expected_total_rows=nrows, addl_hats_properties=_properties(prov, len(errors)),
            tmp_dir=os.path.join(tmp, "intermediate"), resume=False,
            progress_bar=progress, simple_progress_bar=True)
        try:
            _run_import(args, threads=threads, dask_dir=os.path.join(tmp, "dask"))
        except Exception as exc:  # hats-import's own errors: one line, the cause kept for debugging
            raise StxcatError(f"hats-import failed on {vac}: {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from exc
        catalog = os.path.join(tmp, name)
        write_voparquet_in_common_metadata(
            catalog,
            field_units={c.name: c.unit for c in dm.COLUMNS if c.unit},
            field_ucds={c.name: c.ucd for c in dm.COLUMNS},
            field_descriptions={c.name: c.description for c in dm.COLUMNS})
        _write_errors(os.path.join(catalog, ERRORS_FILE), errors)
        _replace_dir(catalog, out, tmp)
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(tmp)
    npart = sum(1 for _ in _partition_files(out))
    return pqvac.ExportResult(out, "hats", nrows, len(errors), partitions=npart,
                              extras_left_out=tuple(extras))


def _partition_files(catalog_dir: str):
    data = os.path.join(catalog_dir, "dataset")
    for root, _, files in os.walk(data):
        for f in files:
            if f.startswith("Npix=") and f.endswith(".parquet"):
                yield os.path.join(root, f)
