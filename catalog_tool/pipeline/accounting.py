"""The invariant of a run: every target of every input file is in the VAC once, or its file is in ERRORS.

The plan records each file's FIBERMAP rows as discovery counted them (``nspec``); each done marker
records, per file its partition annotated, the rows it read and the targets among them (sky and
unassigned fibres get no row, by design), and the files that failed. :func:`expected_rows` turns
these into what the merge must find in the part files (rows per ``SOURCE``), and
:func:`catalog_tool.vac.write.merge_parts` refuses to write a VAC that does not match it. So a file
can only end in one of two ways: all its targets in the VAC, each once (flagged when not
estimated), or the file in the ``ERRORS`` table, which makes ``annotate`` exit with status 3.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from catalog_tool.vac.datamodel import source_name
from catalog_tool.vac.write import LostRowsError

__all__ = ["expected_rows"]


def expected_rows(plan: dict, infos: Sequence[dict]) -> dict[str, tuple[int, int]]:
    """What the merge must find: ``{SOURCE: (rows, files of that name)}`` over the plan's files.

    Parameters
    ----------
    plan : dict
        The run's plan (``partitions`` with their ``files``, each with ``path`` and ``nspec``).
    infos : sequence of dict
        The done marker of each partition, in plan order.

    Raises
    ------
    LostRowsError
        A file that neither failed nor has a ledger entry (silently dropped), or whose ledger
        disagrees with the plan's FIBERMAP row count.
    """
    failed = {os.fspath(e[0]) for info in infos for e in info["errors"]}
    expected: dict[str, tuple[int, int]] = {}
    wrong = []
    for part, info in zip(plan["partitions"], infos):
        ledger = info.get("files", {})
        for f in part["files"]:
            path = os.fspath(f["path"])
            name = source_name(path)
            rows, nfiles = expected.get(name, (0, 0))
            entry = ledger.get(path)
            if path in failed:
                pass  # in ERRORS: no rows
            elif entry is None:
                wrong.append(f"{path}: neither annotated nor listed as failed")
            elif int(entry["fibermap"]) != int(f["nspec"]):
                wrong.append(f"{path}: {entry['fibermap']} FIBERMAP rows read, {f['nspec']} planned")
            else:
                rows += int(entry["targets"])
            expected[name] = (rows, nfiles + 1)
    if wrong:
        raise LostRowsError("refusing to write the VAC: " + "; ".join(wrong[:3])
                            + ("; ..." if len(wrong) > 3 else "")
                            + " (an stxcat bug: please report it with the work dir's stxcat.log)")
    return expected
