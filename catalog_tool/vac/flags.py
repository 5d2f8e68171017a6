"""Quality flags of the VAC: the named bits of ``FLAGS`` and how they are composed.

``FLAGS`` is an int64 bitmask; each bit says one thing about a row. ``FLAG_BAD`` is True when any
bit of :data:`BAD_MASK` is set: those bits make the stellar parameters unusable (absent, or computed
from data or a model state that cannot be trusted). The other bits are warnings: the values are there
and their uncertainties should already reflect the problem, but a careful user may cut on them.

Bits are never renumbered: a bit once published keeps its number and meaning; new bits take the next
free number. A bit that is no longer set is *retired*, not removed: it stays in the table (so VACs
that carry it still decode, and its number is never given to another meaning). The definitions travel with every VAC as header cards ``FLAGBn`` (see
:func:`header_cards`) and are rendered into ``docs/vac.md``.

Composition (:func:`compute_flags`) is a pure, vectorised function of per-row diagnostics; the
thresholds live in the frozen :class:`FlagThresholds` so a run records exactly what it used.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

__all__ = [
    "FlagBit",
    "FLAG_BITS",
    "BAD_MASK",
    "FlagThresholds",
    "DEFAULT_THRESHOLDS",
    "compute_flags",
    "flag_bad",
    "flag_names",
    "in_domain",
    "header_cards",
    "render_markdown",
]


@dataclass(frozen=True)
class FlagBit:
    """One named bit of ``FLAGS``.

    Parameters
    ----------
    bit : int
        Bit number (0 = least significant); the bit's value is ``1 << bit``.
    name : str
        Upper-case name, at most 18 characters (it goes into a FITS header card with a comment).
    bad : bool
        True when the bit makes the row's stellar parameters unusable (part of ``FLAG_BAD``).
    short : str
        At most 40 characters, the comment of the bit's header card.
    description : str
        One line for the docs.
    retired : bool
        True for a bit that stxcat no longer sets (kept so that its number is never reused).
    """

    bit: int
    name: str
    bad: bool
    short: str
    description: str
    retired: bool = False

    @property
    def value(self) -> int:
        return 1 << self.bit


#: Every flag bit, in bit order. Never renumber: append new bits at the end.
FLAG_BITS: tuple[FlagBit, ...] = (
    FlagBit(0, "NOT_STAR", True, "not a star: not estimated",
            "not selected as a star (redrock SPECTYPE, MWS target, LAMOST CLASS): no estimate"),
    FlagBit(1, "LOW_SNR", False, "median S/N below min_snr",
            "median S/N per pixel below `FlagThresholds.min_snr` (or NaN)"),
    FlagBit(2, "BAD_PIXELS", True, "too many masked pixels",
            "fraction of masked pixels on the model grid above `FlagThresholds.max_bad_frac`"),
    FlagBit(3, "NOT_COVERED", True, "model window not covered",
            "the spectrum does not cover the model's wavelength window"),
    FlagBit(4, "CONT_FAIL", True, "continuum normalisation failed",
            "continuum normalisation failed"),
    FlagBit(5, "INPUT_OUT_OF_DOMAIN", False, "retired: never set",
            "retired, never set: model bundles record no input domain to test against (the "
            "prediction's domain is `PRED_OUT_OF_DOMAIN`)", retired=True),
    FlagBit(6, "PRED_OUT_OF_DOMAIN", True, "prediction outside training domain",
            "a predicted label lies outside the training domain (extrapolation)"),
    FlagBit(7, "ENSEMBLE_DISAGREE", True, "ensemble members disagree",
            "ensemble spread of a label above `FlagThresholds.max_ensemble_std`"),
    FlagBit(8, "ZWARN", False, "redrock ZWARN non-zero",
            "redrock ZWARN is non-zero (DESI): the redshift, hence the rest frame, may be wrong"),
    FlagBit(9, "BAD_FIBERSTATUS", True, "COADD_FIBERSTATUS non-zero",
            "COADD_FIBERSTATUS is non-zero (DESI): a fibre or amplifier problem"),
    FlagBit(10, "READ_FAILED", True, "retired: never set",
            "retired, never set: a file that cannot be read gives no rows and is listed in the "
            "`ERRORS` table (exit status 3)", retired=True),
    FlagBit(11, "NOT_ESTIMATED", True, "star without an estimate",
            "a star with no (finite) estimate: preprocessing found no usable pixels, the model needs "
            "a rest frame and the redshift is unknown, or the network gave a non-finite value"),
    FlagBit(12, "NO_REDROCK", False, "no redrock row: Z, SPECTYPE empty",
            "DESI target without a redrock row (redrock file missing or unreadable, or the TARGETID "
            "not in it): `Z` and `SPECTYPE` are empty and a Milky Way Survey target counts as a star"),
    FlagBit(13, "BAD_COORDS", False, "TARGET_RA/DEC invalid: HEALPIX -1",
            "`TARGET_RA`/`TARGET_DEC` not finite, or Dec outside -90 to 90: `HEALPIX` is -1 (the "
            "spectrum, hence the estimate, is not affected)"),
    FlagBit(14, "DUPLICATE_ID", True, "TARGETID repeated within its file",
            "the TARGETID is on more than one target row of the same input file (a damaged "
            "FIBERMAP): which spectrum is the target's cannot be told"),
    FlagBit(15, "FILE_MISSING", True, "catalogue row without its file",
            "a row of the LAMOST catalogue given with `--catalog` whose spectrum file is not under the "
            "inputs: OBSID and position from the catalogue, no spectrum, no estimate"),
)

_BY_NAME = {f.name: f for f in FLAG_BITS}

#: Bits that make a row's values unusable; ``FLAG_BAD = (FLAGS & BAD_MASK) != 0``.
BAD_MASK: int = sum(f.value for f in FLAG_BITS if f.bad)


def _bit(name: str) -> np.int64:
    return np.int64(_BY_NAME[name].value)


@dataclass(frozen=True)
class FlagThresholds:
    """Thresholds used to turn diagnostics into flag bits (recorded in the VAC header).

    Parameters
    ----------
    min_snr : float
        ``LOW_SNR`` below this median S/N per pixel of the spectrum on the model grid. Default 10:
        below it the [Fe/H] scatter of the method grows quickly, but values are still reported
        (a warning, not a bad bit).
    max_bad_frac : float
        ``BAD_PIXELS`` above this fraction of masked (zero-ivar) pixels on the model grid. Default 0.3.
    max_ensemble_std : tuple of (str, float)
        ``ENSEMBLE_DISAGREE`` when the ensemble's standard deviation of a label exceeds its limit,
        in the label's unit. Defaults: FEH 0.25 dex, ALPHAFE 0.1 dex, TEFF 250 K, LOGG 0.4 dex.
        Labels not listed are never checked.
    zwarn_mask : int
        ZWARN bits that set ``ZWARN``; default: all bits.
    fiberstatus_mask : int
        COADD_FIBERSTATUS bits that set ``BAD_FIBERSTATUS``; default: all bits.
    """

    min_snr: float = 10.0
    max_bad_frac: float = 0.3
    max_ensemble_std: tuple[tuple[str, float], ...] = (
        ("FEH", 0.25), ("ALPHAFE", 0.1), ("TEFF", 250.0), ("LOGG", 0.4))
    zwarn_mask: int = -1
    fiberstatus_mask: int = -1

    def to_dict(self) -> dict:
        """Plain-JSON form (for manifests and headers)."""
        d = dataclasses.asdict(self)
        d["max_ensemble_std"] = {k: v for k, v in self.max_ensemble_std}
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "FlagThresholds":
        d = dict(d)
        if isinstance(d.get("max_ensemble_std"), dict):
            d["max_ensemble_std"] = tuple((str(k), float(v)) for k, v in d["max_ensemble_std"].items())
        return cls(**d)


#: The default thresholds: the only ``FlagThresholds()`` in the package. A run chooses its
#: thresholds once (``pipeline.partition.run_settings``, recorded in the plan and in ``FLAGTHR``)
#: and everything downstream reads them back from there.
DEFAULT_THRESHOLDS = FlagThresholds()


def in_domain(*, values: np.ndarray, lo, hi) -> np.ndarray:
    """True for rows whose finite values all lie inside ``[lo, hi]``, per column.

    Parameters
    ----------
    values : ndarray, shape (N, L) or (N,)
        Predicted labels (or any per-row inputs) in their physical units.
    lo, hi : array_like, shape (L,) or scalar
        Domain limits per column (e.g. the bundle manifest's ``labels[i]["domain"]``).

    Returns
    -------
    ndarray of bool, shape (N,)
        NaN values are ignored: a row with nothing estimated is "in the domain" here; whether it
        was estimated at all is other bits' business.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim == 1:
        v = v[:, None]
    outside = (v < np.asarray(lo, dtype=np.float64)) | (v > np.asarray(hi, dtype=np.float64))
    return ~outside.any(axis=1)


def _column(x, n: int, dtype, default) -> np.ndarray:
    """``x`` as a length-n array, or ``default`` everywhere when ``x`` is None."""
    if x is None:
        return np.full(n, default, dtype=dtype)
    a = np.asarray(x)
    if a.ndim == 0:
        return np.full(n, a, dtype=dtype)
    if a.shape[0] != n:
        raise ValueError(f"flag input has {a.shape[0]} rows, expected {n}")
    return a.astype(dtype, copy=False)


def compute_flags(
    *,
    is_star,
    snr=None,
    bad_frac=None,
    covered=None,
    cont_ok=None,
    pred_in_domain=None,
    ensemble_std=None,
    label_names=None,
    estimated=None,
    zwarn=None,
    fiberstatus=None,
    redrock_found=None,
    coords_ok=None,
    unique_id=None,
    file_found=None,
    thresholds: FlagThresholds = DEFAULT_THRESHOLDS,
) -> np.ndarray:
    """Compose the ``FLAGS`` bitmask of N rows from their diagnostics.

    Every argument is a length-N array (or a scalar broadcast to N rows); ``None`` means "not
    known for this survey" and never sets its bit. Quality bits (S/N, pixels, coverage, continuum,
    domain, ensemble, estimate) are only set on *processed* rows (``is_star``): on the others the
    diagnostics are meaningless and ``NOT_STAR`` already says why there is no value. Row bits
    (ZWARN, fibre status, redrock, coordinates, duplicate id) are set on every row.
    Retired bits (:attr:`FlagBit.retired`) are never set.

    Parameters
    ----------
    is_star : array of bool, shape (N,)
        Selected for estimation (a star); False sets ``NOT_STAR``.
    snr : array of float, optional
        Median S/N per pixel; ``LOW_SNR`` when below ``thresholds.min_snr`` or NaN.
    bad_frac : array of float, optional
        Fraction of masked pixels on the model grid; ``BAD_PIXELS`` when above the threshold or NaN.
    covered : array of bool, optional
        False sets ``NOT_COVERED``.
    cont_ok : array of bool, optional
        False sets ``CONT_FAIL``.
    pred_in_domain : array of bool, optional
        False sets ``PRED_OUT_OF_DOMAIN`` (see :func:`in_domain`).
    ensemble_std : array of float, shape (N, L), optional
        Ensemble spread per label; needs ``label_names``. Above the label's
        ``thresholds.max_ensemble_std`` sets ``ENSEMBLE_DISAGREE``; NaN never does.
    label_names : sequence of str, optional
        Names of the L columns of ``ensemble_std``.
    estimated : array of bool, optional
        False on a processed row sets ``NOT_ESTIMATED`` (no finite value was produced).
    zwarn : array of int, optional
        redrock ZWARN; negative = null (no redrock), never flagged.
    fiberstatus : array of int, optional
        COADD_FIBERSTATUS; negative = null, never flagged.
    redrock_found : array of bool, optional
        DESI: False where the target has no redrock row; sets ``NO_REDROCK``.
    coords_ok : array of bool, optional
        False where TARGET_RA/TARGET_DEC are not valid; sets ``BAD_COORDS``.
    unique_id : array of bool, optional
        False where the TARGETID is on another target row of the same file; sets ``DUPLICATE_ID``.
    file_found : array of bool, optional
        False for a catalogue row whose file is missing: sets ``FILE_MISSING`` instead of
        ``NOT_STAR`` and no quality bit (nothing was processed); row bits still apply.
    thresholds : FlagThresholds

    Returns
    -------
    ndarray of int64, shape (N,)
    """
    is_star = np.asarray(is_star, dtype=bool)
    n = is_star.shape[0]
    flags = np.zeros(n, dtype=np.int64)
    found = _column(file_found, n, bool, True)
    processed = is_star & found
    flags |= np.where(~is_star & found, _bit("NOT_STAR"), 0)
    flags |= np.where(~found, _bit("FILE_MISSING"), 0)

    def set_where(cond, name):
        nonlocal flags
        flags |= np.where(processed & cond, _bit(name), 0)

    def set_row(cond, name):
        nonlocal flags
        flags |= np.where(cond, _bit(name), 0)

    if snr is not None:
        # "not >=" so that a NaN S/N (no usable pixel) is low too
        set_where(~(_column(snr, n, np.float64, np.nan) >= thresholds.min_snr), "LOW_SNR")
    if bad_frac is not None:
        set_where(~(_column(bad_frac, n, np.float64, np.nan) <= thresholds.max_bad_frac), "BAD_PIXELS")
    if covered is not None:
        set_where(~_column(covered, n, bool, True), "NOT_COVERED")
    if cont_ok is not None:
        set_where(~_column(cont_ok, n, bool, True), "CONT_FAIL")
    if pred_in_domain is not None:
        set_where(~_column(pred_in_domain, n, bool, True), "PRED_OUT_OF_DOMAIN")
    if ensemble_std is not None:
        std = np.asarray(ensemble_std, dtype=np.float64)
        if std.ndim != 2 or std.shape[0] != n:
            raise ValueError(f"ensemble_std must have shape (N={n}, L), not {std.shape}")
        if label_names is None or len(label_names) != std.shape[1]:
            raise ValueError("ensemble_std needs label_names, one per column")
        limits = dict(thresholds.max_ensemble_std)
        lim = np.array([limits.get(name, np.inf) for name in label_names], dtype=np.float64)
        set_where((std > lim).any(axis=1), "ENSEMBLE_DISAGREE")
    if estimated is not None:
        set_where(~_column(estimated, n, bool, True), "NOT_ESTIMATED")
    if zwarn is not None:
        z = _column(zwarn, n, np.int64, -1)
        set_row((z >= 0) & ((z & np.int64(thresholds.zwarn_mask)) != 0), "ZWARN")
    if fiberstatus is not None:
        fs = _column(fiberstatus, n, np.int64, -1)
        set_row((fs >= 0) & ((fs & np.int64(thresholds.fiberstatus_mask)) != 0), "BAD_FIBERSTATUS")
    if redrock_found is not None:
        set_row(~_column(redrock_found, n, bool, True), "NO_REDROCK")
    if coords_ok is not None:
        set_row(~_column(coords_ok, n, bool, True), "BAD_COORDS")
    if unique_id is not None:
        set_row(~_column(unique_id, n, bool, True), "DUPLICATE_ID")
    return flags


def flag_bad(flags) -> np.ndarray:
    """``FLAG_BAD``: True where any bit of :data:`BAD_MASK` is set."""
    return (np.asarray(flags, dtype=np.int64) & np.int64(BAD_MASK)) != 0


def flag_names(value: int) -> list[str]:
    """Names of the bits set in one ``FLAGS`` value (unknown bits as ``BITn``)."""
    value = int(value)
    names = [f.name for f in FLAG_BITS if value & f.value]
    known = sum(f.value for f in FLAG_BITS)
    for b in range(64):
        if value & (1 << b) and not known & (1 << b):
            names.append(f"BIT{b}")
    return names


def header_cards() -> list[dict]:
    """FITS header cards documenting the bits and ``FLAG_BAD``.

    ``FLAGBn = 'NAME'`` for bit n (FITS keywords have at most 8 characters, so ``FLAGBIT10`` cannot
    exist), the comment saying what it means and ``[bad]`` when it is part of ``FLAG_BAD``;
    ``BADMASK`` holds the integer mask of the bad bits. Returned as fitsio-style dicts
    ``{"name", "value", "comment"}``.
    """
    cards = []
    for f in FLAG_BITS:
        comment = ("[bad] " if f.bad else "") + f.short
        cards.append({"name": f"FLAGB{f.bit}", "value": f.name, "comment": comment})
    cards.append({"name": "BADMASK", "value": BAD_MASK,
                  "comment": "FLAG_BAD = (FLAGS & BADMASK) != 0"})
    return cards


def render_markdown() -> str:
    """Markdown table of the bits, for docs/vac.md."""
    lines = [
        "| Bit | Value | Name | In FLAG_BAD | Meaning |",
        "|----:|------:|------|:-----------:|---------|",
    ]
    for f in FLAG_BITS:
        lines.append(f"| {f.bit} | {f.value} | `{f.name}` | {'yes' if f.bad else 'no'} | {f.description} |")
    lines.append("")
    lines.append(f"`FLAG_BAD = (FLAGS & {BAD_MASK}) != 0`: bits "
                 + ", ".join(f"`{f.name}`" for f in FLAG_BITS if f.bad) + ".")
    d = DEFAULT_THRESHOLDS
    lines.append("")
    lines.append("Default thresholds (`catalog_tool.vac.flags.FlagThresholds`): "
                 f"`min_snr={d.min_snr}`, `max_bad_frac={d.max_bad_frac}`, `max_ensemble_std=` "
                 + ", ".join(f"{k} {v:g}" for k, v in d.max_ensemble_std)
                 + " (label units); ZWARN and COADD_FIBERSTATUS: any bit set.")
    return "\n".join(lines) + "\n"
