"""``stxcat export``: a FITS VAC to Parquet (one file) or HATS (a HEALPix-partitioned folder).

The format logic lives in :mod:`catalog_tool.vac.parquet` and :mod:`catalog_tool.vac.hats`; this
module only dispatches, and checks early (before an annotate run starts) that the optional
packages a format needs are installed.
"""

from __future__ import annotations

import os

from catalog_tool.errors import ConfigError

__all__ = ["EXPORT_FORMATS", "check_available", "export_vac"]

#: Formats a FITS VAC can be exported to.
EXPORT_FORMATS = ("parquet", "hats")

_NEEDS = {"parquet": ("pyarrow",), "hats": ("pyarrow", "hats", "hats_import", "distributed")}


def check_available(fmt: str) -> None:
    """Raise :class:`~catalog_tool.vac.parquet.MissingExtraError` unless ``fmt``'s packages import."""
    from catalog_tool.vac.parquet import require_extra

    if fmt == "fits":
        return
    if fmt not in _NEEDS:
        raise ConfigError(f"format must be one of fits, {', '.join(EXPORT_FORMATS)}, not {fmt!r}")
    require_extra(*_NEEDS[fmt])


def export_vac(vac: str | os.PathLike, out: str | os.PathLike, *, format: str, overwrite: bool = False,
               progress: bool = False):
    """Write the FITS VAC ``vac`` to ``out`` as ``format`` (``parquet`` or ``hats``).

    Returns
    -------
    catalog_tool.vac.parquet.ExportResult

    Raises
    ------
    NotAVacError, OutputExistsError, MissingExtraError, ConfigError
    """
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"export format must be one of {', '.join(EXPORT_FORMATS)}, not {format!r}")
    check_available(format)
    if format == "parquet":
        from catalog_tool.vac.parquet import export_parquet

        return export_parquet(vac, out, overwrite=overwrite)
    from catalog_tool.vac.hats import export_hats

    return export_hats(vac, out, overwrite=overwrite, progress=progress)
