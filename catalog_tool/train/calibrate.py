"""``stxcat calibrate``: fit a bundle's zero points, trends and error floors on a labelled overlap.

A survey team has stars in common with APOGEE or GALAH. :func:`run_calibrate` predicts them with
a bundle (its raw network values), fits per label the relation

    predicted - reference = P(reference),   P a polynomial of degree ``trend`` (0: a zero point)

robustly (:func:`fit_trend`, Huber IRLS), then the systematic error floor that gives the
calibrated pulls unit robust scatter (:func:`catalog_tool.train.evaluate.fit_error_floor`, with
the reference labels' own errors added in quadrature so that they are not counted as ours), and
writes a new bundle: the same weights (copied byte for byte: same sha256), a manifest with a
``calibration`` entry and the new ``uncertainty.floor``. Inference inverts the relation
(:mod:`catalog_tool.models.calibration`, which also says why the fit is in the reference label).

Policy: an overlap needs at least ``max(20, 10 x (trend + 1))`` stars with a finite reference
label and prediction for every label calibrated (:func:`min_stars`); a bundle already calibrated is
refused unless ``replace`` is given, and then the new fit starts again from the raw network values
(calibrations never chain).
"""

from __future__ import annotations

import datetime as _dt
import os
import pathlib
import shutil
import time
from dataclasses import dataclass

import numpy as np

from catalog_tool import __version__
from catalog_tool.errors import ConfigError
from catalog_tool.models import calibration as cal
from catalog_tool.train.evaluate import fit_error_floor, robust_scatter

__all__ = ["MIN_OVERLAP", "STARS_PER_COEFFICIENT", "HUBER_K", "min_stars", "fit_trend", "calibrate_label",
           "CalibrationOutcome", "run_calibrate", "format_calibration"]

#: The smallest overlap that is ever fitted, and the stars needed per fitted coefficient.
MIN_OVERLAP = 20
STARS_PER_COEFFICIENT = 10
#: Huber's tuning constant (95% efficiency for Gaussian residuals), in units of the robust sigma.
HUBER_K = 1.345


def min_stars(trend: int) -> int:
    """Stars (finite reference label and prediction) a label needs for a trend of this degree."""
    return max(MIN_OVERLAP, STARS_PER_COEFFICIENT * (int(trend) + 1))


def fit_trend(*, pred: np.ndarray, ref: np.ndarray, degree: int, pivot: float | None = None,
              max_iter: int = 100) -> dict:
    """Robust polynomial fit of ``pred - ref`` as a function of ``ref`` (Huber IRLS).

    Parameters
    ----------
    pred, ref : ndarray (n,)
        Predicted and reference values of one label, all finite.
    degree : int
        0 (zero point), 1 or 2.
    pivot : float, optional
        Centre of the polynomial (default: the median reference value), so that ``coef[0]`` is the
        offset there and the coefficients are nearly uncorrelated.

    Returns
    -------
    dict
        ``coef``, ``coef_err`` (Huber's asymptotic standard errors), ``pivot``, ``domain`` ([min,
        max] of ``ref``), ``n``, ``n_downweighted`` (stars with Huber weight < 1) and ``scale``
        (robust sigma of the final residuals).
    """
    pred, ref = np.asarray(pred, np.float64), np.asarray(ref, np.float64)
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(ref))) or pred.shape != ref.shape:
        raise ConfigError("fit_trend needs finite pred and ref of one shape")
    if not 0 <= degree <= cal.MAX_DEGREE:
        raise ConfigError(f"--trend must be 0..{cal.MAX_DEGREE}, got {degree}")
    n, p = len(ref), degree + 1
    pivot = float(np.median(ref)) if pivot is None else float(pivot)
    x = np.vander(ref - pivot, p, increasing=True)
    y = pred - ref
    coef = np.linalg.lstsq(x, y, rcond=None)[0] if degree else np.array([np.median(y)])
    w = np.ones(n)
    scale = 0.0
    for _ in range(max_iter):
        r = y - x @ coef
        scale = robust_scatter(r)
        if not scale > 0:
            break
        a = np.abs(r) / (HUBER_K * scale)
        w = np.where(a > 1.0, 1.0 / np.maximum(a, 1e-300), 1.0)
        sw = np.sqrt(w)
        new = np.linalg.lstsq(x * sw[:, None], y * sw, rcond=None)[0]
        done = np.all(np.abs(new - coef) <= 1e-12 * (1.0 + np.abs(coef)))
        coef = new
        if done:
            break
    r = y - x @ coef
    scale = robust_scatter(r)
    if scale > 0:
        z = r / scale
        psi, dpsi = np.clip(z, -HUBER_K, HUBER_K), (np.abs(z) < HUBER_K).astype(float)
        factor = np.mean(psi ** 2) / max(np.mean(dpsi), 1e-12) ** 2 * n / max(n - p, 1)
        cov = scale ** 2 * factor * np.linalg.pinv(x.T @ x)
    else:
        cov = np.zeros((p, p))
    return {"coef": [float(c) for c in coef], "coef_err": [float(np.sqrt(max(cov[k, k], 0.0))) for k in range(p)],
            "pivot": pivot, "domain": [float(ref.min()), float(ref.max())], "n": int(n),
            "n_downweighted": int((w < 1).sum()), "scale": float(scale)}


def _stats(resid: np.ndarray, err: np.ndarray) -> dict:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = resid / err
    return {"bias": float(np.mean(resid)), "median": float(np.median(resid)),
            "robust_sigma": robust_scatter(resid), "z_robust_sigma": robust_scatter(z[np.isfinite(z)])}


def calibrate_label(*, pred: np.ndarray, ref: np.ndarray, err: np.ndarray, ref_err: np.ndarray | None,
                    degree: int, floor_before: float = 0.0, name: str = "label") -> dict:
    """Fit one label's calibration entry (see :mod:`catalog_tool.models.calibration`).

    Parameters
    ----------
    pred : ndarray (n,)
        Raw predictions of the overlap stars.
    ref, ref_err : ndarray (n,)
        Reference labels and their errors (NaN or None: unknown, taken as 0).
    err : ndarray (n,)
        The bundle's statistical errors of ``pred`` without any floor: sqrt(ensemble_std**2 +
        noise_std**2).
    degree : int
    floor_before : float
        The bundle's floor for this label (recorded; used for the "before" pulls).

    Returns
    -------
    dict
        The manifest entry: the fit (:func:`fit_trend`), ``degree``, ``domain_predicted``,
        ``floor``, ``floor_before`` and residual statistics ``before`` and ``after`` (bias = mean,
        median, robust sigma of calibrated - reference, and the robust sigma of the pulls with the
        errors the VAC carries combined with the reference errors).
    """
    pred, ref, err = (np.asarray(a, np.float64) for a in (pred, ref, err))
    ref_err = np.zeros_like(ref) if ref_err is None else np.nan_to_num(np.asarray(ref_err, np.float64), nan=0.0)
    ok = np.isfinite(pred) & np.isfinite(ref) & np.isfinite(err)
    pred, ref, err, ref_err = pred[ok], ref[ok], err[ok], ref_err[ok]
    entry = {"degree": int(degree), **fit_trend(pred=pred, ref=ref, degree=degree)}
    if degree:
        slopes = cal.response(entry, np.array(entry["domain"]))
        if np.min(slopes) < cal.MIN_RESPONSE:
            raise ConfigError(f"cannot calibrate {name}: predictions barely follow the reference labels over "
                              f"{entry['domain'][0]:.4g}..{entry['domain'][1]:.4g} (fitted d(predicted)/d(reference) "
                              f"{np.min(slopes):.2g} < {cal.MIN_RESPONSE}); use --trend 0 or check the match")
    entry["domain_predicted"] = [float(cal.forward(entry, t)) for t in entry["domain"]]
    fixed = cal.invert(entry, pred)
    err_fixed = err / cal.response(entry, fixed)
    floor = fit_error_floor(pred=fixed, true=ref, err=np.sqrt(err_fixed ** 2 + ref_err ** 2))
    entry["floor"], entry["floor_before"] = float(floor), float(floor_before)
    entry["before"] = _stats(pred - ref, np.sqrt(err ** 2 + floor_before ** 2 + ref_err ** 2))
    entry["after"] = _stats(fixed - ref, np.sqrt(err_fixed ** 2 + floor ** 2 + ref_err ** 2))
    return entry


@dataclass
class CalibrationOutcome:
    """What :func:`run_calibrate` wrote and measured."""

    bundle: object            # the new, loaded Bundle
    calibration: dict         # its manifest's calibration entry
    n_spectra: int
    failures: list
    label_summary: str
    seconds: float


def _write_bundle(src: pathlib.Path, out: pathlib.Path, manifest: dict, *, overwrite: bool) -> None:
    """Copy bundle folder ``src`` to ``out`` with a new manifest; atomic (tmp folder, then rename)."""
    import json

    from catalog_tool.models.bundle import MANIFEST_NAME

    tmp = out.parent / f".{out.name}.calibrate-tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(src, tmp, ignore=shutil.ignore_patterns("*.tmp"))
    (tmp / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
    old = out.parent / f".{out.name}.calibrate-old"
    if out.exists():
        if not overwrite:
            raise ConfigError(f"{out} already exists; choose another -o or pass --overwrite")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)


def run_calibrate(bundle_ref, inputs, *, labels_path, out, label_options=None, names: list[str] | None = None,
                  trend: int = 0, replace: bool = False, overwrite: bool = False, device: str = "auto",
                  batch_size: int = 1024, cache=None, command: str = "stxcat calibrate") -> CalibrationOutcome:
    """Calibrate bundle ``bundle_ref`` on the labelled overlap of ``inputs`` and ``labels_path``; write ``out``.

    Raises
    ------
    ConfigError
        An already calibrated bundle without ``replace``; ``out`` being the bundle itself, or
        holding something without ``overwrite``; no label to calibrate; an overlap too small for
        some label (one line naming each such label and its count); a fit whose predictions do
        not rise with the reference label.
    """
    from catalog_tool.models.bundle import find_bundle, load_bundle
    from catalog_tool.models.infer import predict
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.data import load_labelled
    from catalog_tool.train.labels import LabelOptions, available_labels, file_sha256

    t0 = time.perf_counter()
    label_options = label_options or LabelOptions()
    if not 0 <= int(trend) <= cal.MAX_DEGREE:
        raise ConfigError(f"--trend must be 0..{cal.MAX_DEGREE}, got {trend}")
    bundle = load_bundle(bundle_ref)
    src = find_bundle(bundle_ref).resolve()
    out = pathlib.Path(out)
    if out.resolve() == src:
        raise ConfigError(f"-o {out} is the bundle being calibrated; write the calibrated bundle to a new folder")
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} already exists; choose another -o or pass --overwrite")
    if cal.is_calibrated(bundle.manifest) and not replace:
        c = bundle.manifest["calibration"]
        raise ConfigError(f"bundle {bundle.name} is already calibrated (against {c['table'].get('name')}, "
                          f"{c.get('date')}); pass --replace to fit a new calibration from its raw predictions")
    if names:
        unknown = [n for n in names if n not in bundle.label_names]
        if unknown:
            raise ConfigError(f"bundle {bundle.name} does not predict {', '.join(unknown)} "
                              f"(labels: {', '.join(bundle.label_names)})")
        names = list(names)
    else:
        names = available_labels(os.fspath(labels_path), bundle.label_names, label_options)
        if not names:
            raise ConfigError(f"label table {labels_path} has none of the bundle's labels {bundle.label_names} "
                              "(name columns with --label-column or --label-preset)")
    ls, failures = load_labelled(list(inputs), labels_path=os.fspath(labels_path), names=names,
                                 grid=ModelGrid.from_dict(bundle.grid),
                                 settings=PreprocessSettings.from_dict(bundle.preprocess), cache=cache,
                                 options=label_options)
    pred = predict(bundle, flux=ls.flux, ivar=ls.ivar, device=device, batch_size=batch_size, calibrated=False)
    need = min_stars(trend)
    counts = {}
    for n in names:
        j = bundle.label_names.index(n)
        counts[n] = int((np.isfinite(pred.values[:, j]) & np.isfinite(ls.labels[n])).sum())
    short = [f"{n} ({c} stars)" for n, c in counts.items() if c < need]
    if short:
        raise ConfigError(f"overlap too small to calibrate {', '.join(short)}: --trend {trend} needs at least "
                          f"{need} stars with a reference label and a prediction per label "
                          f"(max({MIN_OVERLAP}, {STARS_PER_COEFFICIENT} x {trend + 1} coefficients))")
    floors = dict(bundle.manifest.get("uncertainty", {}).get("floor", {}))
    parent = {"name": bundle.name, "manifest_sha256": cal.manifest_sha256(bundle.manifest)}
    if cal.is_calibrated(bundle.manifest):  # --replace: back to the uncalibrated bundle's floors and identity
        prev = bundle.manifest["calibration"]
        floors.update({n: e.get("floor_before", 0.0) for n, e in prev["labels"].items()})
        parent = prev.get("parent", parent)
    base_err = np.sqrt(pred.ensemble_std.astype(np.float64) ** 2 + pred.noise_std.astype(np.float64) ** 2)
    entries = {}
    for n in names:
        j = bundle.label_names.index(n)
        entries[n] = calibrate_label(pred=pred.values[:, j], ref=ls.labels[n], err=base_err[:, j],
                                     ref_err=ls.errors.get(n), degree=int(trend),
                                     floor_before=float(floors.get(n, 0.0)), name=n)
    r = ls.table_report
    manifest = {k: v for k, v in bundle.manifest.items() if k != "calibration"}
    manifest["name"] = out.name
    manifest["calibration"] = {
        "version": cal.CALIBRATION_VERSION,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "stxcat_version": __version__, "command": command,
        "method": f"Huber IRLS fit of predicted - reference as a degree-{trend} polynomial in the reference "
                  "label; inverted at inference, held constant outside its domain",
        "table": {"name": os.path.basename(os.fspath(labels_path)), "sha256": file_sha256(os.fspath(labels_path)),
                  "preset": label_options.preset, "columns": r.get("columns", {}), "where": label_options.where,
                  "rows": r.get("rows"), "kept": r.get("kept"), "duplicates": r.get("duplicates")},
        "inputs": [os.fspath(p) for p in inputs], "n_spectra": len(ls),
        "parent": parent,
        "labels": entries,
    }
    unc = dict(manifest.get("uncertainty", {}))
    unc["floor"] = {**floors, **{n: e["floor"] for n, e in entries.items()}}
    unc["fitted_on"] = (f"{', '.join(names)}: calibration overlap of {len(ls)} spectra "
                        f"({manifest['calibration']['table']['name']})"
                        + (f"; others: {unc['fitted_on']}" if unc.get("fitted_on") and set(floors) - set(names) else ""))
    manifest["uncertainty"] = unc
    cal.check_calibration(manifest, "calibrated manifest")  # what load_bundle will check
    _write_bundle(src, out, manifest, overwrite=overwrite)
    new = load_bundle(out)
    return CalibrationOutcome(bundle=new, calibration=new.manifest["calibration"], n_spectra=len(ls),
                              failures=failures, label_summary=ls.summary(), seconds=time.perf_counter() - t0)


def format_calibration(calibration: dict, units: dict | None = None) -> str:
    """Lines describing a calibration entry (for the CLI and ``stxcat models``)."""
    units = units or {}
    lines = []
    for name, e in calibration["labels"].items():
        u = f" {units[name]}" if units.get(name) and units[name] != "dex" else ""
        c, ce = e["coef"], e.get("coef_err", [float("nan")] * len(e["coef"]))
        fit = f"zero point {c[0]:+.4g} +- {ce[0]:.2g}{u} at {name} = {e['pivot']:.4g}"
        if len(c) > 1:
            fit += f", slope {c[1]:+.4g} +- {ce[1]:.2g}"
        if len(c) > 2:
            fit += f", curvature {c[2]:+.3g} +- {ce[2]:.2g}"
        b, a = e["before"], e["after"]
        lines.append(f"{name}: {e['n']} stars, {fit}; bias {b['bias']:+.3g} -> {a['bias']:+.3g}, robust sigma "
                     f"{b['robust_sigma']:.3g} -> {a['robust_sigma']:.3g}, pull sigma {b['z_robust_sigma']:.3g} -> "
                     f"{a['z_robust_sigma']:.3g}, floor {e['floor_before']:.3g} -> {e['floor']:.3g}{u}; "
                     f"trend held beyond {e['domain'][0]:.4g}..{e['domain'][1]:.4g}")
    return "\n".join(lines)
