"""A bundle's calibration against reference labels: validation, application, VAC cards (numpy only).

``stxcat calibrate`` (:mod:`catalog_tool.train.calibrate`) fits, per label, how the bundle's
predictions v depart from reference labels t (e.g. APOGEE) on a labelled overlap:

    v = t + P(t),    P(t) = c0 + c1 (t - pivot) + c2 (t - pivot)**2     (degree 0, 1 or 2)

and stores it in the manifest's ``calibration`` entry. Fitting in the *reference* label rather than
in the prediction avoids regression dilution: predictions are the noisy quantity, and regressing
their residuals on them would find a spurious trend (about sigma**2 / spread**2) and shrink
calibrated values towards the overlap's mean. At inference the relation is inverted: the
calibrated value is the t with t + P(t) = v, with P held at its end values outside the fitted
``domain`` (reference-label range of the overlap), so a trend is never extrapolated. Errors scale
by 1 / (1 + P'(t)), the local slope of the inverse. A calibration must keep 1 + P' >=
:data:`MIN_RESPONSE` over its domain (predictions must rise with the label), otherwise it is refused.

The manifest entry (version 1; docs/models.md)::

    "calibration": {"version": 1, "date": ..., "stxcat_version": ..., "command": ...,
                    "table": {"name", "sha256", "preset", "columns", "where", ...},
                    "n_spectra": N, "parent": {"name", "manifest_sha256"},
                    "labels": {"FEH": {"degree": 1, "coef": [c0, c1], "coef_err": [...], "pivot": x0,
                                       "domain": [lo, hi], "domain_predicted": [g(lo), g(hi)], "n": n,
                                       "before": {...}, "after": {...}, "floor": f, "floor_before": f0}}}
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from catalog_tool.errors import BundleError

__all__ = ["CALIBRATION_VERSION", "MAX_DEGREE", "MIN_RESPONSE", "check_calibration", "is_calibrated",
           "correction", "response", "forward", "invert", "apply_calibration", "manifest_sha256", "vac_cards"]

CALIBRATION_VERSION = 1
#: Highest polynomial degree of a trend.
MAX_DEGREE = 2
#: Smallest allowed d(prediction)/d(reference) over the fitted domain (1 + P'); below it the inverse
#: would amplify errors more than five-fold, or not exist.
MIN_RESPONSE = 0.2


def manifest_sha256(manifest: dict) -> str:
    """sha256 of a manifest as canonical JSON (sorted keys, no spaces): the identity of a bundle
    beyond its weights (a calibrated bundle has its parent's weights but not its manifest)."""
    return hashlib.sha256(json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def is_calibrated(manifest: dict) -> bool:
    return isinstance(manifest.get("calibration"), dict)


def _poly(coef, pivot, t):
    u = t - pivot
    return sum(c * u ** k for k, c in enumerate(coef))


def _dpoly(coef, pivot, t):
    u = t - pivot
    return sum(k * c * u ** (k - 1) for k, c in enumerate(coef) if k)


def correction(entry: dict, t):
    """P(t) with t clamped to the entry's domain (the bias of the prediction at reference value t)."""
    lo, hi = entry["domain"]
    return _poly(entry["coef"], entry["pivot"], np.clip(t, lo, hi))


def response(entry: dict, t):
    """d(prediction)/d(reference) at t: 1 + P'(t) inside the domain, 1 outside."""
    lo, hi = entry["domain"]
    t = np.asarray(t, float)
    inside = (t >= lo) & (t <= hi)
    return np.where(inside, 1.0 + _dpoly(entry["coef"], entry["pivot"], np.clip(t, lo, hi)), 1.0)


def forward(entry: dict, t):
    """The prediction a star of reference label t gets: t + P(clamp(t))."""
    t = np.asarray(t, float)
    return t + correction(entry, t)


def invert(entry: dict, v) -> np.ndarray:
    """Calibrated values: the t with forward(t) = v (NaN stays NaN), float64."""
    v = np.asarray(v, np.float64)
    coef, pivot = entry["coef"], entry["pivot"]
    lo, hi = (float(x) for x in entry["domain"])
    if len(coef) == 1:
        return v - coef[0]
    g_lo, g_hi = float(forward(entry, lo)), float(forward(entry, hi))
    t = np.where(v <= g_lo, v - (g_lo - lo), v - (g_hi - hi))  # outside: P held at its end value
    inside = (v > g_lo) & (v < g_hi)
    if len(coef) == 2:
        t[inside] = pivot + (v[inside] - coef[0] - pivot) / (1.0 + coef[1])
        return t
    # higher degree: g is increasing on [lo, hi] (checked), so bisection finds the one root
    a = np.full(int(inside.sum()), lo)
    b = np.full_like(a, hi)
    target = v[inside]
    for _ in range(64):
        mid = 0.5 * (a + b)
        low = forward(entry, mid) < target
        a, b = np.where(low, mid, a), np.where(low, b, mid)
        if np.all(b - a <= 1e-12 * max(1.0, abs(hi - lo))):
            break
    t[inside] = 0.5 * (a + b)
    return t


def apply_calibration(manifest: dict, label_names: list[str], values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated ``values`` (N, L) and the factor (N, L) by which their errors scale.

    Labels the calibration does not cover are returned unchanged (factor 1).
    """
    out = np.array(values, dtype=np.float64, copy=True)
    scale = np.ones_like(out)
    labels = manifest.get("calibration", {}).get("labels", {})
    for j, name in enumerate(label_names):
        entry = labels.get(name)
        if entry is None:
            continue
        out[:, j] = invert(entry, out[:, j])
        with np.errstate(invalid="ignore"):
            scale[:, j] = 1.0 / response(entry, out[:, j])
    return out, scale


def _finite_list(x, n: int | None, what: str) -> list[float]:
    if not isinstance(x, list) or (n is not None and len(x) != n):
        raise ValueError(f"{what} must be a list of {n if n is not None else 'some'} numbers, got {x!r}")
    if not all(isinstance(c, (int, float)) and not isinstance(c, bool) and math.isfinite(c) for c in x):
        raise ValueError(f"{what} must hold finite numbers, got {x!r}")
    return [float(c) for c in x]


def _check_label(name: str, e) -> None:
    if not isinstance(e, dict):
        raise ValueError("must be an object")
    degree = e.get("degree")
    if not isinstance(degree, int) or isinstance(degree, bool) or not 0 <= degree <= MAX_DEGREE:
        raise ValueError(f"degree must be an integer 0..{MAX_DEGREE}, got {degree!r}")
    _finite_list(e.get("coef"), degree + 1, "coef")
    lo, hi = _finite_list(e.get("domain"), 2, "domain")
    if not lo <= hi or (degree > 0 and not lo < hi):
        raise ValueError(f"domain must be [low, high] with low < high, got {[lo, hi]}")
    pivot = e.get("pivot")
    if not isinstance(pivot, (int, float)) or isinstance(pivot, bool) or not math.isfinite(pivot):
        raise ValueError(f"pivot must be a finite number, got {pivot!r}")
    n = e.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n (stars fitted) must be a positive integer, got {n!r}")
    floor = e.get("floor", 0.0)
    if not isinstance(floor, (int, float)) or isinstance(floor, bool) or not (math.isfinite(floor) and floor >= 0):
        raise ValueError(f"floor must be a finite number >= 0, got {floor!r}")
    if degree:
        slopes = [1.0 + _dpoly(e["coef"], pivot, t) for t in (lo, hi)]  # P' is linear: ends bound it
        if min(slopes) < MIN_RESPONSE:
            raise ValueError(f"predictions must rise with the label over the domain {[lo, hi]}: "
                             f"1 + P' falls to {min(slopes):.3g} (< {MIN_RESPONSE})")


def check_calibration(manifest: dict, where: str = "bundle") -> None:
    """Raise :class:`BundleError` unless the manifest's ``calibration`` entry (if any) is well formed."""
    if "calibration" not in manifest:
        return
    cal = manifest["calibration"]
    if not isinstance(cal, dict):
        raise BundleError(f"{where}: entry 'calibration' must be an object, got {type(cal).__name__}")
    if cal.get("version") != CALIBRATION_VERSION:
        raise BundleError(f"{where}: calibration version {cal.get('version')!r} is not one this stxcat reads "
                          f"({CALIBRATION_VERSION})")
    labels = cal.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise BundleError(f"{where}: calibration lists no labels")
    known = [d.get("name") for d in manifest.get("labels", []) if isinstance(d, dict)]
    unknown = sorted(set(labels) - set(known))
    if unknown:
        raise BundleError(f"{where}: calibration of {', '.join(unknown)}, which the bundle does not predict "
                          f"(labels: {', '.join(map(str, known))})")
    for name, entry in labels.items():
        try:
            _check_label(name, entry)
        except ValueError as exc:
            raise BundleError(f"{where}: calibration of {name} is malformed: {exc}") from None
    table = cal.get("table")
    if not isinstance(table, dict) or not isinstance(table.get("sha256"), str) or len(table["sha256"]) != 64:
        raise BundleError(f"{where}: calibration does not record its label table (name and sha256)")
    floors = manifest.get("uncertainty", {}).get("floor", {}) if isinstance(manifest.get("uncertainty"), dict) else None
    if not isinstance(floors, dict):
        raise BundleError(f"{where}: a calibrated bundle needs an 'uncertainty.floor' object")


def vac_cards(manifest: dict) -> tuple:
    """VAC provenance cards ``(KEY, value, comment)`` saying whether and how values were calibrated."""
    cards = [("MANIFSHA", manifest_sha256(manifest), "sha256 of the model manifest (canonical JSON)"),
             ("CALIB", is_calibrated(manifest), "values calibrated against reference labels")]
    if not is_calibrated(manifest):
        return tuple(cards)
    cal = manifest["calibration"]
    compact = {name: {k: e[k] for k in ("degree", "coef", "pivot", "domain", "n", "floor") if k in e}
               for name, e in cal["labels"].items()}
    cards += [
        ("CALIBN", int(cal.get("n_spectra", 0)), "spectra in the calibration overlap"),
        ("CALIBLBL", ",".join(cal["labels"]), "labels calibrated"),
        ("CALIBTAB", str(cal["table"].get("name", "")), "reference label table"),
        ("CALIBSHA", cal["table"]["sha256"], "sha256 of the reference label table"),
        ("CALIBDAT", str(cal.get("date", "")), "UTC date of the calibration"),
        ("CALIBJS", json.dumps(compact, separators=(",", ":")), "calibration per label (JSON)"),
    ]
    return tuple(cards)
