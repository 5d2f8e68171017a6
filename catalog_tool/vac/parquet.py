"""The VAC as one Apache Parquet file: the FITS data model as an Arrow schema, written streaming.

Same columns, in the same order and types as ``STELLAR_PARAMS`` (:mod:`catalog_tool.vac.datamodel`):
``i8``/``i4`` -> int64/int32, ``f4``/``f8`` -> float32/float64, FITS logical -> bool, fixed-width
ASCII -> UTF-8 string (trailing blanks removed, as FITS readers do). Where the metadata lives:

* each field's metadata: ``unit``, ``ucd``, ``description`` (the FITS ``TUNIT``/``TUCDn``/``TCOMMn``)
  and, for the integer columns that have one, ``fits_tnull``;
* the schema metadata: ``stxcat.provenance`` (JSON: stxcat version, data-model version, model
  name and sha256, command line, input, date, flag thresholds, the flag bits by name and
  ``BADMASK``, the HEALPix convention, the extra cards), ``stxcat.errors`` (JSON list of
  ``[file, reason]``: the FITS ``ERRORS`` table; present even when empty) and the IVOA VOParquet
  keys (``IVOA.VOTable-Parquet.version``/``.content``: a data-less VOTable with every column's
  unit, UCD and description, which TOPCAT and the VO tools read), and astropy's
  ``table::len::NAME`` (the FITS width of each text column).

Missing values, decided per kind:

* floats keep **NaN** (not estimated), exactly as in FITS: NaN is the value the science columns
  carry and every reader (numpy, pandas, LSDB) treats it as missing;
* the integer columns with a FITS ``TNULL`` (``ZWARN``, ``COADD_FIBERSTATUS``, ``SOURCE_ROW``) are
  Arrow **null** where FITS stores the ``TNULL`` value: Parquet has real nulls, so the sentinel is
  not needed (``fits_tnull`` in the field metadata says what it was, and :func:`read_parquet`
  turns nulls back into it);
* text stays an empty string where FITS is blank ("none", e.g. ``SPECTYPE`` for LAMOST), booleans
  are never null.

pyarrow is an optional dependency (``pip install "stxcat[hats]"``); nothing here is imported by
``import catalog_tool`` or by the FITS path.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from catalog_tool.errors import StxcatError
from catalog_tool.io.fitsutil import get_hdu, open_fits
from catalog_tool.vac import datamodel as dm
from catalog_tool.vac import flags as fl
from catalog_tool.vac import write as w

__all__ = [
    "MissingExtraError",
    "NotAVacError",
    "ExportResult",
    "require_extra",
    "arrow_schema",
    "provenance_dict",
    "provenance_from_dict",
    "iter_fits_chunks",
    "write_parquet",
    "export_parquet",
    "read_parquet",
    "read_parquet_provenance",
    "read_parquet_errors",
]

#: Schema metadata keys.
PROVENANCE_KEY = b"stxcat.provenance"
ERRORS_KEY = b"stxcat.errors"
VOPARQUET_VERSION_KEY = b"IVOA.VOTable-Parquet.version"
VOPARQUET_CONTENT_KEY = b"IVOA.VOTable-Parquet.content"

#: Rows per Parquet row group (and per chunk read from the FITS VAC): ~25 MB of table.
DEFAULT_ROW_GROUP_ROWS = 100_000

_EXTRA_PACKAGES = "pip install 'stxcat[hats]'"


class MissingExtraError(StxcatError, ImportError):
    """An optional package of the ``hats`` extra (pyarrow, hats, hats-import, lsdb) is not installed."""


class NotAVacError(StxcatError):
    """The file given as a VAC is not one (no STELLAR_PARAMS table in the data model)."""


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote."""

    path: str
    format: str
    nrows: int
    nerrors: int
    partitions: int = 1
    extras_left_out: tuple = ()


def require_extra(*modules: str):
    """Import ``modules`` (the first is returned); one clear line naming the pip command if missing.

    Raises
    ------
    MissingExtraError
    """
    loaded = []
    for name in modules:
        try:
            loaded.append(importlib.import_module(name))
        except ImportError as exc:
            missing = getattr(exc, "name", None) or name
            raise MissingExtraError(f"Parquet and HATS output need the optional packages of the 'hats' "
                                    f"extra ({missing} is not installed): {_EXTRA_PACKAGES}") from None
    return loaded[0]


# ---------------------------------------------------------------------------------------------
# schema and provenance

def _arrow_type(pa, c: dm.Column):
    if c.kind == "S":
        return pa.string()
    return {"i8": pa.int64(), "i4": pa.int32(), "f4": pa.float32(), "f8": pa.float64(),
            "?": pa.bool_()}[c.dtype]


def field_metadata(c: dm.Column) -> dict[bytes, bytes]:
    """Arrow field metadata of one column: unit, UCD, description (and ``fits_tnull``)."""
    meta = {b"unit": c.unit.encode(), b"ucd": c.ucd.encode(), b"description": c.description.encode()}
    if c.null is not None:
        meta[b"fits_tnull"] = str(c.null).encode()
    return meta


def provenance_dict(prov: w.Provenance) -> dict:
    """Everything the FITS header says about a VAC, as JSON-ready values."""
    prov = prov.resolved()
    return {
        "stxcat_version": prov.stxcat_version,
        "datamodel_version": dm.DATAMODEL_VERSION,
        "table": dm.EXTNAME,
        "model_name": prov.model_name,
        "model_sha256": prov.model_sha256,
        "command": prov.command,
        "input": prov.input_release,
        "date": prov.date,
        "healpix_nside": dm.HEALPIX_NSIDE,
        "healpix_nested": True,
        "flag_thresholds": prov.thresholds.to_dict(),
        "flag_bits": {f.name: {"bit": f.bit, "bad": f.bad, "description": f.short} for f in fl.FLAG_BITS},
        "badmask": fl.BAD_MASK,
        "extra": [[k, v, c] for k, v, c in prov.extra],
    }


def provenance_from_dict(d: dict) -> w.Provenance:
    """The :class:`~catalog_tool.vac.write.Provenance` of :func:`provenance_dict` output."""
    return w.Provenance(model_name=d["model_name"], model_sha256=d["model_sha256"], command=d["command"],
                        input_release=d["input"], date=d["date"], stxcat_version=d["stxcat_version"],
                        thresholds=fl.FlagThresholds.from_dict(d["flag_thresholds"]),
                        extra=tuple(tuple(e) for e in d.get("extra", ())))


def votable_xml() -> str:
    """A data-less VOTable describing every column: the metadata of the IVOA VOParquet convention.

    As astropy's ``write_parquet_votable`` writes it: FIELDs with unit, UCD and description, and a
    ``<PARQUET type="Parquet-local-XML"/>`` element where the DATA would be.
    """
    import io
    import xml.etree.ElementTree as ET

    from astropy.io.votable.tree import VOTableFile
    from astropy.table import Table

    t = Table(names=dm.names(), dtype=[c.dtype for c in dm.COLUMNS])
    for c in dm.COLUMNS:
        t[c.name].unit = c.unit or None
        t[c.name].description = c.description
    vot = VOTableFile.from_table(t)
    for field, c in zip(vot.get_first_table().fields, dm.COLUMNS):
        field.ucd = c.ucd
    buf = io.BytesIO()
    vot.to_xml(buf)
    ns = "{http://www.ivoa.net/xml/VOTable/v1.3}"
    ET.register_namespace("", ns.strip("{}"))
    root = ET.fromstring(buf.getvalue())
    table = root.find(f"{ns}RESOURCE").find(f"{ns}TABLE")
    data = table.find(f"{ns}DATA")
    if data is not None:
        table.remove(data)
    ET.SubElement(table, f"{ns}PARQUET", type="Parquet-local-XML")
    return ET.tostring(root, encoding="unicode", xml_declaration=True)


def arrow_schema(provenance: w.Provenance | None = None, errors: Sequence[tuple[str, str]] | None = None,
                 *, voparquet: bool = True):
    """The Arrow schema of the VAC: field metadata per column, provenance and errors in the schema's.

    ``provenance`` None leaves out the table-level metadata; ``errors`` None leaves out
    ``stxcat.errors`` (the HATS writer keeps it in a sidecar file instead).
    """
    pa = require_extra("pyarrow")
    fields = [pa.field(c.name, _arrow_type(pa, c), nullable=c.null is not None, metadata=field_metadata(c))
              for c in dm.COLUMNS]
    meta = {}
    if provenance is not None:
        meta[PROVENANCE_KEY] = json.dumps(provenance_dict(provenance)).encode()
    if errors is not None:
        meta[ERRORS_KEY] = json.dumps([[str(f), str(r)] for f, r in errors]).encode()
    for c in dm.COLUMNS:  # astropy's reader makes fixed-width text columns of these widths
        if c.kind == "S":
            meta[f"table::len::{c.name}".encode()] = str(c.np_dtype.itemsize).encode()
    if voparquet:
        meta[VOPARQUET_VERSION_KEY] = b"1.0"
        meta[VOPARQUET_CONTENT_KEY] = votable_xml().encode()
    return pa.schema(fields, metadata=meta or None)


def to_record_batch(rows: np.ndarray, schema):
    """A chunk of rows in the model's dtype as an Arrow record batch of ``schema``."""
    pa = require_extra("pyarrow")
    import pyarrow.compute as pc

    arrays = []
    for c in dm.COLUMNS:
        values = np.ascontiguousarray(rows[c.name])
        if c.kind == "S":
            # numpy drops the NUL padding; FITS blanks at the end carry no meaning
            arr = pc.utf8_rtrim(pa.array(values, type=pa.binary()).cast(pa.string()), characters=" ")
        elif c.null is not None:
            arr = pa.array(values, mask=values == c.null)
        else:
            arr = pa.array(values)
        arrays.append(arr)
    return pa.RecordBatch.from_arrays(arrays, schema=schema)


# ---------------------------------------------------------------------------------------------
# reading the FITS VAC

def open_vac(path: str | os.PathLike) -> tuple[w.Provenance, list[tuple[str, str]], int, list[str]]:
    """Provenance, errors, row count and extra-HDU names of a FITS VAC; :class:`NotAVacError` if not one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise NotAVacError(f"{path}: not a file (expected a VAC FITS file written by stxcat annotate)")
    try:
        with open_fits(path) as fits:
            hdu = get_hdu(fits, dm.EXTNAME, path)
            if tuple(hdu.get_colnames()) != dm.names():
                raise NotAVacError(f"{path}: its {dm.EXTNAME} table does not have the VAC data model's "
                                   f"columns (data model version {dm.DATAMODEL_VERSION})")
            prov = w.Provenance.from_header(fits[0].read_header())
            errors = w._errors_of(fits)
            extras = w._extra_names(fits)
            nrows = hdu.get_nrows()
    except NotAVacError:
        raise
    except StxcatError as exc:
        raise NotAVacError(f"not a VAC: {exc}") from None
    return prov, errors, nrows, extras


def iter_fits_chunks(path: str | os.PathLike, *, chunk_rows: int = DEFAULT_ROW_GROUP_ROWS) -> Iterator[np.ndarray]:
    """The ``STELLAR_PARAMS`` rows of a FITS VAC, ``chunk_rows`` at a time, in the model's dtype."""
    path = os.fspath(path)
    with open_fits(path) as fits:
        hdu = get_hdu(fits, dm.EXTNAME, path)
        n = hdu.get_nrows()
        for start in range(0, n, chunk_rows):
            yield w._conform(hdu[start:min(start + chunk_rows, n)])


# ---------------------------------------------------------------------------------------------
# writing

def write_parquet(path: str | os.PathLike, chunks: Iterable[np.ndarray], *, provenance: w.Provenance | None,
                  errors: Sequence[tuple[str, str]] | None, overwrite: bool = False,
                  compression: str = "zstd", voparquet: bool = True) -> int:
    """Write VAC rows (chunks in the model's dtype) as one Parquet file, atomically; return the row count.

    One row group per chunk, so memory holds one chunk at a time; the file appears under its name
    only once complete (temporary name beside it, then rename).
    """
    require_extra("pyarrow")
    import pyarrow.parquet as pq

    schema = arrow_schema(provenance, errors, voparquet=voparquet)
    nrows = 0
    with w.atomic_path(path, overwrite=overwrite) as tmp:
        os.unlink(tmp)  # created anew by the writer: the umask's mode, not mkstemp's 0600
        with pq.ParquetWriter(tmp, schema, compression=compression) as writer:
            for chunk in chunks:
                if len(chunk):
                    writer.write_batch(to_record_batch(chunk, schema))
                    nrows += len(chunk)
            if nrows == 0:
                writer.write_table(schema.empty_table())
    return nrows


def export_parquet(vac: str | os.PathLike, out: str | os.PathLike, *, overwrite: bool = False,
                   chunk_rows: int = DEFAULT_ROW_GROUP_ROWS) -> ExportResult:
    """Write the FITS VAC ``vac`` as one Parquet file ``out`` (streaming, atomic).

    Raises
    ------
    NotAVacError, OutputExistsError, MissingExtraError
    """
    require_extra("pyarrow")
    prov, errors, _, extras = open_vac(vac)
    if os.path.exists(out) and not overwrite:
        raise w.OutputExistsError(f"{out}: exists (pass --overwrite to replace it)")
    n = write_parquet(out, iter_fits_chunks(vac, chunk_rows=chunk_rows), provenance=prov, errors=errors,
                      overwrite=overwrite)
    return ExportResult(os.fspath(out), "parquet", n, len(errors), extras_left_out=tuple(extras))


# ---------------------------------------------------------------------------------------------
# reading Parquet back

def _schema_meta(path) -> dict:
    pq = require_extra("pyarrow.parquet")
    return pq.read_schema(os.fspath(path)).metadata or {}


def read_parquet_provenance(path: str | os.PathLike) -> dict:
    """The ``stxcat.provenance`` dict of a Parquet VAC (or of a HATS catalogue's ``_common_metadata``)."""
    meta = _schema_meta(path)
    if PROVENANCE_KEY not in meta:
        raise NotAVacError(f"{path}: no stxcat provenance in its Parquet metadata")
    return json.loads(meta[PROVENANCE_KEY])


def read_parquet_errors(path: str | os.PathLike) -> list[tuple[str, str]]:
    """The errors table of a Parquet VAC as ``[(file, reason)]``."""
    meta = _schema_meta(path)
    if ERRORS_KEY not in meta:
        raise NotAVacError(f"{path}: no stxcat.errors in its Parquet metadata")
    return [(f, r) for f, r in json.loads(meta[ERRORS_KEY])]


def arrow_to_table(table) -> np.ndarray:
    """An Arrow table (or record batch) with the VAC columns, as rows in the model's dtype.

    Nulls of the ``TNULL`` columns become the ``TNULL`` value again; other columns are ignored.
    """
    import pyarrow.compute as pc

    out = dm.empty_table(table.num_rows)
    for c in dm.COLUMNS:
        col = table.column(c.name)
        if c.null is not None:
            col = pc.fill_null(col, c.null)
        if c.kind == "S":
            values = np.asarray(col.cast(require_extra("pyarrow").binary()).to_numpy(zero_copy_only=False),
                                dtype=c.np_dtype)
        else:
            values = col.to_numpy(zero_copy_only=False)
        out[c.name] = values
    return out


def read_parquet(path: str | os.PathLike) -> np.ndarray:
    """All rows of a Parquet VAC as a table in the model's dtype (for tests and small files)."""
    pq = require_extra("pyarrow.parquet")
    return arrow_to_table(pq.read_table(os.fspath(path), columns=list(dm.names())))
