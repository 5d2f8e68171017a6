"""The run plan: partitions of HEALPix pixels, in NESTED order, as plain JSON-able data.

The plan is what a work directory remembers and what ``--resume`` compares: the partitions, a
fingerprint of the input files (path, size, modification time) and the model's identity.
"""

from __future__ import annotations

import hashlib
import json
import os

from catalog_tool.io import release

__all__ = ["make_plan"]


def _file_record(path: str) -> list:
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, int(st.st_mtime)]


def make_plan(inputs, *, partition_size: int, model_name: str, model_sha256: str, settings: dict) -> tuple[dict, "release.ReleaseIndex"]:
    """Discover ``inputs`` and group them into partitions.

    Returns
    -------
    plan : dict
        ``partitions`` (list of {index, pixels, files, nspec}), ``skipped`` (list of
        [path, reason]), ``fingerprint``, ``model`` and ``settings``.
    index : ReleaseIndex
        The discovered files (for the log and the summary).
    """
    idx = release.discover(inputs)
    parts = release.partition(idx.entries, target_spectra=partition_size)
    partitions = [
        {"index": i, "pixels": [int(p) for p in part.pixels],
         "files": [{"path": e.path, "kind": e.kind, "survey": e.survey, "program": e.program,
                    "healpix": int(e.healpix), "nspec": int(e.nspec)} for e in part.files],
         "nspec": int(part.nspec)}
        for i, part in enumerate(parts)
    ]
    records = [_file_record(f["path"]) for p in partitions for f in p["files"]]
    fingerprint = hashlib.sha256(json.dumps([records, partition_size]).encode()).hexdigest()
    plan = {
        "partitions": partitions,
        "skipped": [[os.fspath(p), r] for p, r in idx.skipped],
        "fingerprint": fingerprint,
        "model": {"name": model_name, "sha256": model_sha256},
        "settings": settings,
    }
    return plan, idx
