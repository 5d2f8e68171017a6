"""The run plan: partitions of HEALPix pixels, in NESTED order, as plain JSON-able data.

The plan is what a work directory remembers and what ``--resume`` compares: the partitions, a
fingerprint of the input files (path, size, modification time) and the model's identity.
"""

from __future__ import annotations

import hashlib
import json
import os

from catalog_tool.io import release

__all__ = ["make_plan", "discover"]


def _file_record(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def _file_dict(e) -> dict:
    d = {"path": e.path, "kind": e.kind, "survey": e.survey, "program": e.program,
         "healpix": int(e.healpix), "nspec": int(e.nspec)}
    if getattr(e, "row", None) is not None:  # a catalogue row whose file is missing: a flagged VAC row
        d.update(missing=True, obsid=int(e.obsid), ra=float(e.ra), dec=float(e.dec), catalog_row=int(e.row))
    return d


def discover(inputs, catalog: str | None = None) -> tuple["release.ReleaseIndex", list]:
    """The index of ``inputs`` and the entries to plan: its files, plus with a LAMOST ``catalog``
    the rows whose file is missing (:class:`~catalog_tool.io.lamost_catalog.MissingEntry`)."""
    if catalog:
        from catalog_tool.io.lamost_catalog import discover_with_catalog

        idx = discover_with_catalog(inputs, catalog)
        return idx, idx.entries + idx.missing
    idx = release.discover(inputs)
    return idx, idx.entries


def make_plan(inputs, *, partition_size: int, model_name: str, model_sha256: str, settings: dict,
              catalog: str | None = None) -> tuple[dict, "release.ReleaseIndex"]:
    """Discover ``inputs`` and group them into partitions.

    With ``catalog`` (a LAMOST survey catalogue) the files are planned from the catalogue's rows
    without opening any (:func:`catalog_tool.io.lamost_catalog.discover_with_catalog`): rows whose
    file is missing are planned too (``missing: true`` file records, flagged rows in the VAC), and
    the fingerprint is that of the catalogue file and the planned paths (no file is ``stat``-ed).

    Returns
    -------
    plan : dict
        ``partitions`` (list of {index, pixels, files, nspec}), ``skipped`` (list of
        [path, reason]), ``fingerprint``, ``model`` and ``settings``; ``catalog`` when planned
        from one (its path, rows, found, missing and the unlisted files).
    index : ReleaseIndex
        The discovered files (for the log and the summary).
    """
    idx, planned = discover(inputs, catalog)
    parts = release.partition(planned, target_spectra=partition_size)
    partitions = [
        {"index": i, "pixels": [int(p) for p in part.pixels], "files": [_file_dict(e) for e in part.files],
         "nspec": int(part.nspec)}
        for i, part in enumerate(parts)
    ]
    if catalog:
        paths = hashlib.sha256("\n".join(f["path"] for p in partitions for f in p["files"]).encode()).hexdigest()
        records = [_file_record(idx.catalog), [len(p["files"]) for p in partitions], paths]
    else:
        records = [_file_record(f["path"]) for p in partitions for f in p["files"]]
    fingerprint = hashlib.sha256(json.dumps([records, partition_size]).encode()).hexdigest()
    plan = {
        "partitions": partitions,
        "skipped": [[os.fspath(p), r] for p, r in idx.skipped],
        "fingerprint": fingerprint,
        "model": {"name": model_name, "sha256": model_sha256},
        "settings": settings,
    }
    if catalog:
        plan["catalog"] = idx.summary()
    return plan, idx
