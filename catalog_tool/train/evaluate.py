"""Metrics of predicted against reference labels, and calibration of the uncertainties.

Definitions (residual r = predicted - reference, over stars where both are finite):

* ``bias``    mean of r
* ``scatter`` robust standard deviation, 1.4826 x median(|r - median(r)|) (the MAD scaled to
  equal sigma for a Gaussian)
* ``mae``     mean of |r|
* ``r2``      1 - sum(r**2) / sum((ref - mean(ref))**2)
* ``n``       stars used; ``n_missing`` stars skipped because a value was NaN (never silently)

Metrics are given overall and split at reference [Fe/H] = -1 (the paper's metal-poor /
metal-rich regimes). Calibration: z = r / error per S/N bin; a calibrated error has a robust
spread of z near 1.
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAD_TO_SIGMA", "FEH_SPLIT", "SNR_EDGES", "robust_scatter", "fit_error_floor", "regression_metrics",
           "metrics_table",
           "calibration_table", "format_markdown"]

#: Factor turning a median absolute deviation into a Gaussian-equivalent standard deviation.
MAD_TO_SIGMA = 1.4826
#: The [Fe/H] boundary between the metal-poor and metal-rich regimes.
FEH_SPLIT = -1.0
#: Default S/N bin edges of the calibration table.
SNR_EDGES = (0.0, 10.0, 20.0, 40.0, 80.0, np.inf)


def robust_scatter(r: np.ndarray) -> float:
    """1.4826 x MAD of the finite values of ``r`` (NaN when there are none)."""
    r = np.asarray(r, float)
    r = r[np.isfinite(r)]
    if r.size == 0:
        return float("nan")
    return float(MAD_TO_SIGMA * np.median(np.abs(r - np.median(r))))


def fit_error_floor(*, pred: np.ndarray, true: np.ndarray, err: np.ndarray) -> float:
    """The systematic term f >= 0 for which (pred - true) / sqrt(err**2 + f**2) has unit robust scatter.

    0 when the given errors are already large enough (scatter <= 1) or nothing is finite. Solved by
    bisection (the scatter falls monotonically as f grows).
    """
    pred, true, err = (np.asarray(a, float) for a in (pred, true, err))
    ok = np.isfinite(pred) & np.isfinite(true) & np.isfinite(err) & (err >= 0)
    r, e = pred[ok] - true[ok], err[ok]
    if r.size < 2 or robust_scatter(r / np.maximum(e, 1e-300)) <= 1.0:
        return 0.0
    lo, hi = 0.0, max(10.0 * robust_scatter(r), 1e-12)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if robust_scatter(r / np.sqrt(e ** 2 + mid ** 2)) > 1.0:
            lo = mid
        else:
            hi = mid
    return float(hi)


def regression_metrics(*, pred: np.ndarray, true: np.ndarray) -> dict:
    """bias, scatter, mae, r2, n, n_missing of one label (1-D arrays of equal length)."""
    pred, true = np.asarray(pred, float), np.asarray(true, float)
    ok = np.isfinite(pred) & np.isfinite(true)
    r = pred[ok] - true[ok]
    out = {"n": int(ok.sum()), "n_missing": int((~ok).sum())}
    if r.size == 0:
        return {**out, "bias": np.nan, "scatter": np.nan, "mae": np.nan, "r2": np.nan}
    ss_tot = float(np.sum((true[ok] - true[ok].mean()) ** 2))
    return {**out, "bias": float(r.mean()), "scatter": robust_scatter(r), "mae": float(np.abs(r).mean()),
            "r2": float(1.0 - np.sum(r**2) / ss_tot) if ss_tot > 0 else np.nan}


def metrics_table(*, pred: np.ndarray, true: np.ndarray, label_names: list[str], feh_ref: np.ndarray | None = None,
                  split: float = FEH_SPLIT) -> list[dict]:
    """Metrics per label, overall and (when ``feh_ref`` is given) for [Fe/H] < split and >= split.

    Parameters
    ----------
    pred, true : ndarray (N, L)
        Predicted and reference labels, columns in ``label_names`` order.
    feh_ref : ndarray (N,), optional
        Reference [Fe/H] used for the split (stars with NaN there appear only in "all").
    """
    pred, true = np.atleast_2d(pred), np.atleast_2d(true)
    subsets = [("all", np.ones(pred.shape[0], bool))]
    if feh_ref is not None:
        f = np.asarray(feh_ref, float)
        subsets += [(f"[Fe/H] < {split:g}", f < split), (f"[Fe/H] >= {split:g}", f >= split)]
    rows = []
    for j, name in enumerate(label_names):
        for subset, sel in subsets:
            rows.append({"label": name, "subset": subset,
                         **regression_metrics(pred=pred[sel, j], true=true[sel, j])})
    return rows


def calibration_table(*, pred: np.ndarray, true: np.ndarray, err: np.ndarray, snr: np.ndarray,
                      label_names: list[str], snr_edges=SNR_EDGES) -> list[dict]:
    """Spread of z = (pred - true) / err per label and S/N bin.

    Returns rows with ``label``, ``snr_lo``, ``snr_hi``, ``n``, ``z_scatter`` (1.4826 x MAD),
    ``z_std`` (plain standard deviation) and ``median_err``.
    """
    pred, true, err = np.atleast_2d(pred), np.atleast_2d(true), np.atleast_2d(err)
    snr = np.asarray(snr, float)
    rows = []
    for j, name in enumerate(label_names):
        z = (pred[:, j] - true[:, j]) / err[:, j]
        for lo, hi in zip(snr_edges[:-1], snr_edges[1:]):
            sel = (snr >= lo) & (snr < hi) & np.isfinite(z) & (err[:, j] > 0)
            zz = z[sel]
            rows.append({"label": name, "snr_lo": float(lo), "snr_hi": float(hi), "n": int(sel.sum()),
                         "z_scatter": robust_scatter(zz), "z_std": float(zz.std()) if zz.size > 1 else np.nan,
                         "median_err": float(np.median(err[sel, j])) if zz.size else np.nan})
    return rows


def format_markdown(rows: list[dict], *, columns: list[str] | None = None, digits: int = 3) -> str:
    """A Markdown table of ``rows`` (floats with ``digits`` significant digits)."""
    if not rows:
        return ""
    columns = columns or list(rows[0])

    def fmt(v):
        if isinstance(v, (float, np.floating)):
            return ("inf" if v > 0 else "-inf") if np.isinf(v) else "nan" if np.isnan(v) else f"{v:.{digits}g}"
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"
