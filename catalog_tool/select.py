"""Which spectra get stellar parameters: the star selection, pure numpy over a batch's metadata.

Each survey's reader says which of its rows are stars (``select_stars`` in
:mod:`catalog_tool.io.readers`):

DESI
    redrock ``SPECTYPE == 'STAR'``. Where redrock is absent (no companion file, or the target
    not in it), targets of the Milky Way Survey (``MWS_TARGET != 0``) are taken as stars.
    A redrock classification always wins over the targeting bit: MWS targets that redrock calls
    GALAXY or QSO are not estimated (flagged ``NOT_STAR``).
LAMOST
    pipeline ``CLASS == 'STAR'``.

Sky fibres and unassigned fibres are not targets: they get no VAC row (they are counted in the
run log). Every other row is kept; rows that are not stars are flagged, never dropped.
"""

from __future__ import annotations

import numpy as np

from catalog_tool.io.entry import text_column
from catalog_tool.io.readers import reader

__all__ = ["is_target", "is_star"]


def is_target(meta: dict) -> np.ndarray:
    """True for rows that are science targets (not sky, not unassigned fibres)."""
    return text_column(meta["FIBER_KIND"]) == "TARGET"


def is_star(meta: dict, *, kind: str) -> np.ndarray:
    """True for the target rows to estimate of a batch read by the ``kind`` reader (``"desi"``,
    ``"lamost"``; see the module docstring)."""
    return reader(kind).select_stars(meta) & is_target(meta)
