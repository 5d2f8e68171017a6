"""Which spectra get stellar parameters: the star selection, pure numpy over a batch's metadata.

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

__all__ = ["is_target", "is_star"]


def _strip_upper(a) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind == "S":
        a = np.char.decode(a, "ascii", "replace")
    return np.char.upper(np.char.strip(a.astype(str)))


def is_target(meta: dict) -> np.ndarray:
    """True for rows that are science targets (not sky, not unassigned fibres)."""
    return _strip_upper(meta["FIBER_KIND"]) == "TARGET"


def is_star(meta: dict) -> np.ndarray:
    """True for rows to estimate (see the module docstring), for either survey."""
    n = len(meta["TARGETID"])
    survey = _strip_upper(meta["SURVEY"])
    lamost = survey == "LAMOST"
    star = np.zeros(n, bool)
    if "CLASS" in meta:
        star |= lamost & (_strip_upper(meta["CLASS"]) == "STAR")
    spectype = _strip_upper(meta["SPECTYPE"]) if "SPECTYPE" in meta else np.full(n, "")
    has_redrock = spectype != ""
    star |= ~lamost & has_redrock & (spectype == "STAR")
    if "MWS_TARGET" in meta:
        mws = np.asarray(meta["MWS_TARGET"]).astype(np.int64) != 0
        star |= ~lamost & ~has_redrock & mws
    return star & is_target(meta)
