#!/usr/bin/env python
"""Fit the data-driven stellar spectral model used by ``stxcat simulate`` from the MILES library.

What it does
------------
1. Gets the MILES stellar library (v9.1; Sanchez-Blazquez et al. 2006, MNRAS 371, 703;
   Falcon-Barroso et al. 2011, A&A 532, A95) from the PyPI wheel ``sdss-mangadap`` (it ships the
   985 spectra as FITS files under ``mangadap/data/spectral_templates/miles/`` and the labels of
   Cenarro et al. 2007 in ``MILES_params.db``). The wheel is fetched with
   ``pip download --no-deps`` into a temporary directory (or given with ``--wheel``) and read in
   place with :mod:`zipfile`; nothing is extracted into the repository.
2. Converts the air wavelengths (3540.5 + 0.9 i A, 4300 pixels, FWHM 2.5 A) to vacuum.
3. Splits each spectrum into a smooth pseudo-continuum (degree-``--cont-degree`` Legendre
   polynomial in log-flux, fitted to the upper envelope by asymmetric clipping, normalised to 1 at
   5500 A vacuum) and the continuum-normalised log-flux.
4. Fits, as The Cannon does (Ness et al. 2015, ApJ 808, 16), a cubic polynomial in the scaled
   labels (Teff, logg, [Fe/H]) per pixel to the normalised log-flux, and a cubic polynomial per
   Legendre coefficient to the continuum; both by ridge-regularised least squares with one round
   of rejection of stars that the first fit cannot describe (bad labels, strong reddening).
5. Holds out the project's evaluation stars (MILES id divisible by 5, ``catalog_tool.sim.library``:
   never used to fit anything that ships), fits on the rest and measures how well the stored model
   reproduces the held-out stars. The stored model is this training-set fit, so the held-out
   statistics and the few held-out spectra kept in the file are honest for it.
6. Writes ``catalog_tool/data/miles_model.npz`` (float32 coefficients; readable with
   ``np.load(..., allow_pickle=False)``) with the wavelength grid, label scalings, domain,
   held-out statistics and provenance (JSON string in ``meta_json``).

Usage::

    python scripts/fit_miles_model.py                       # downloads the wheel to a temp dir
    python scripts/fit_miles_model.py --wheel path/to/sdss_mangadap-4.5.0-py3-none-any.whl

Runs in about a minute on one core.
"""

from __future__ import annotations

import argparse
import datetime
import json
import pathlib
import sys
import tempfile

import numpy as np
from scipy.ndimage import uniform_filter1d

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from catalog_tool.sim.library import (  # noqa: E402
    HELDOUT_RULE, assert_no_heldout, fetch_wheel, is_heldout, read_miles)

LABELS = ("TEFF", "LOGG", "FEH")
TEFF_RANGE = (3800.0, 7500.0)
NORM_WAVE = 5500.0  # vacuum A where every continuum is set to 1


def fit_continuum(lnf: np.ndarray, good: np.ndarray, x: np.ndarray, degree: int) -> np.ndarray:
    """Upper-envelope Legendre fit of log-flux per star; returns coefficients (n, degree+1).

    Pixels more than 0.5 sigma below the current fit are dropped at each iteration (absorption
    lines), so the polynomial settles on the pseudo-continuum; a loop over stars is fine here
    (offline, ~800 stars).
    """
    basis = np.polynomial.legendre.legvander(x, degree)
    coefs = np.empty((lnf.shape[0], degree + 1))
    for i in range(lnf.shape[0]):
        use = good[i].copy()
        for _ in range(12):
            c, *_ = np.linalg.lstsq(basis[use], lnf[i, use], rcond=None)
            resid = lnf[i] - basis @ c
            sig = np.std(resid[use])
            use = good[i] & (resid > -0.5 * sig)
        coefs[i] = c
    return coefs


def design(labels: np.ndarray, offset: np.ndarray, scale: np.ndarray, exps: np.ndarray) -> np.ndarray:
    z = (labels - offset) / scale
    return np.prod(z[:, None, :] ** exps[None, :, :], axis=2)


def ridge_fit(A: np.ndarray, Y: np.ndarray, W: np.ndarray, lam: float) -> np.ndarray:
    """Weighted ridge least squares, one independent fit per column of Y (per pixel)."""
    # Normal equations per pixel, batched: (npix, k, k); W is the 0/1 pixel mask per star.
    AtWA = np.einsum("sk,sp,sl->pkl", A, W, A) + lam * np.eye(A.shape[1])[None]
    AtWy = np.einsum("sk,sp,sp->pk", A, W, Y)
    return np.linalg.solve(AtWA, AtWy[..., None])[..., 0].T  # (k, npix)


def fit_model(labels, y, good, ccoef, exps, lam, reject_factor=4.0):
    offset = np.median(labels, axis=0)
    scale = np.std(labels, axis=0)
    A = design(labels, offset, scale, exps)
    W = good.astype(np.float64)
    theta = ridge_fit(A, y, W, lam)
    rms = np.sqrt(np.sum(W * (y - A @ theta) ** 2, axis=1) / np.maximum(W.sum(axis=1), 1))
    keep = rms < reject_factor * np.median(rms)
    theta = ridge_fit(A[keep], y[keep], W[keep], lam)
    # Continuum: same polynomial, one fit per Legendre coefficient, with its own rejection
    # (reddened or badly flux-calibrated stars have a wrong slope but fine lines).
    ones = np.ones_like(ccoef)
    tc = ridge_fit(A[keep], ccoef[keep], ones[keep], lam)
    cres = np.abs(ccoef[:, 1] - A @ tc[:, 1])
    ckeep = keep & (cres < 3.0 * 1.4826 * np.median(cres[keep]))
    tc = ridge_fit(A[ckeep], ccoef[ckeep], ones[ckeep], lam)
    return dict(offset=offset, scale=scale, theta=theta, theta_cont=tc,
                rejected=~keep, cont_rejected=~ckeep)


def predict(model, labels, exps):
    A = design(labels, model["offset"], model["scale"], exps)
    return A @ model["theta"], A @ model["theta_cont"]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="path of an sdss-mangadap wheel (default: pip download)")
    ap.add_argument("--out", default=str(ROOT / "catalog_tool" / "data" / "miles_model.npz"))
    ap.add_argument("--order", type=int, default=3, help="polynomial order in the labels")
    ap.add_argument("--cont-degree", type=int, default=8)
    ap.add_argument("--ridge", type=float, default=1e-3)
    ap.add_argument("--n-examples", type=int, default=8, help="held-out spectra kept in the file")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="miles_wheel_") as tmp:
        wheel = pathlib.Path(args.wheel) if args.wheel else fetch_wheel(tmp)
        lib = read_miles(wheel)  # vacuum wavelengths (Morton 2000)
        ids, labels, wave, flux = lib.ids, lib.labels, lib.wave, lib.flux
        wheel_name = wheel.name

    sel = (labels[:, 0] > TEFF_RANGE[0]) & (labels[:, 0] < TEFF_RANGE[1])
    ids, labels, flux = ids[sel], labels[sel], flux[sel]
    good = flux > 0
    lnf = np.log(np.where(good, flux, 1.0))
    lo, hi = wave[0], wave[-1]
    x = (wave - 0.5 * (lo + hi)) / (0.5 * (hi - lo))
    ccoef = fit_continuum(lnf, good, x, args.cont_degree)
    xnorm = (NORM_WAVE - 0.5 * (lo + hi)) / (0.5 * (hi - lo))
    # Each MILES spectrum has an arbitrary flux scale: remove it so the continuum is 1 at 5500 A.
    offs = np.polynomial.legendre.legval(xnorm, ccoef.T)
    ccoef[:, 0] -= offs
    basis = np.polynomial.legendre.legvander(x, args.cont_degree)
    lnc = ccoef @ basis.T
    y = np.where(good, lnf - offs[:, None] - lnc, 0.0)  # continuum-normalised log-flux

    exps = np.array([(a, b, c) for a in range(args.order + 1) for b in range(args.order + 1)
                     for c in range(args.order + 1) if a + b + c <= args.order], dtype=np.int16)
    n = len(ids)
    # The project's one held-out rule (catalog_tool.sim.library): these stars are never fitted.
    hold = is_heldout(ids)
    assert_no_heldout(ids[~hold], what="emulator fit")

    model = fit_model(labels[~hold], y[~hold], good[~hold], ccoef[~hold], exps, args.ridge)
    yp, cp = predict(model, labels[hold], exps)
    fn_true, fn_pred = np.exp(y[hold]), np.exp(yp)
    m = good[hold]
    win = (wave > 4000) & (wave < 5600)
    diff2 = np.where(m, (fn_pred - fn_true) ** 2, np.nan)
    star_rms = np.sqrt(np.nanmean(diff2, axis=1))
    star_rms_win = np.sqrt(np.nanmean(diff2[:, win], axis=1))
    # Line-scale part of the residual: remove its ~100 A running mean (continuum placement).
    resid = np.where(m, fn_pred - fn_true, 0.0)
    line_rms = np.sqrt(np.mean(np.where(m, resid - uniform_filter1d(resid, 111, axis=1), np.nan) ** 2,
                               axis=1, where=m))
    lnc_true, lnc_pred = ccoef[hold] @ basis.T, cp @ basis.T
    cont_rms = np.sqrt(np.mean((lnc_pred - lnc_true) ** 2, axis=1))
    i45, i65 = np.searchsorted(wave, 4500.0), np.searchsorted(wave, 6500.0)
    color_err = -2.5 / np.log(10) * ((lnc_pred[:, i45] - lnc_pred[:, i65]) -
                                     (lnc_true[:, i45] - lnc_true[:, i65]))
    full_rms = np.sqrt(np.nanmean(np.where(m, (np.exp(yp + lnc_pred - y[hold] - lnc_true) - 1) ** 2,
                                           np.nan), axis=1))
    hl = labels[hold]

    def summary(mask):
        if not mask.any():
            return None
        return {"n": int(mask.sum()),
                "norm_rms_median": float(np.median(star_rms[mask])),
                "norm_rms_pooled": float(np.sqrt(np.nanmean(diff2[mask]))),
                "norm_rms_4000_5600_median": float(np.median(star_rms_win[mask])),
                "norm_line_rms_median": float(np.median(line_rms[mask])),
                "cont_lnrms_median": float(np.median(cont_rms[mask])),
                "color_4500_6500_mag_rms": float(np.sqrt(np.mean(color_err[mask] ** 2))),
                "full_flux_rms_median": float(np.median(full_rms[mask]))}

    feh = hl[:, 2]
    stats = {"all": summary(np.ones(len(hl), bool)),
             "feh_ge_-1": summary(feh >= -1), "feh_-1.5_-1": summary((feh < -1) & (feh >= -1.5)),
             "feh_-2.5_-1.5": summary((feh < -1.5) & (feh >= -2.5)),
             "giants_logg_lt_3.5": summary(hl[:, 1] < 3.5), "dwarfs_logg_ge_3.5": summary(hl[:, 1] >= 3.5),
             "teff_lt_5000": summary(hl[:, 0] < 5000), "teff_ge_6000": summary(hl[:, 0] >= 6000)}

    # A few held-out stars, spread in the labels, kept to test the stored model against real data.
    hidx = np.nonzero(hold)[0]
    order = np.argsort(labels[hidx, 0])
    pick = hidx[order[np.linspace(0, len(order) - 1, args.n_examples).round().astype(int)]]
    train_labels = labels[~hold][~model["rejected"]]
    meta = {
        "format": "stxcat-miles-model-1",
        "library": "MILES stellar library v9.1 (Sanchez-Blazquez et al. 2006; Falcon-Barroso et al. 2011)",
        "labels_source": "Cenarro et al. 2007 via MILES_params.db in " + wheel_name,
        "wheel": wheel_name,
        "script": "scripts/fit_miles_model.py",
        "fit_date": datetime.date.today().isoformat(),
        "args": {k: v for k, v in vars(args).items() if k not in ("wheel", "out")},
        "air_to_vacuum": "Morton (2000) / VALD3 inverse formula",
        "resolution_fwhm_A": 2.5,
        "n_stars_in_teff_range": int(n),
        "n_train": int((~hold).sum()), "n_holdout": int(hold.sum()), "holdout_rule": HELDOUT_RULE,
        "rejected_train_ids": [int(i) for i in ids[~hold][model["rejected"]]],
        "cont_rejected_train_ids": [int(i) for i in ids[~hold][model["cont_rejected"]]],
        "train_label_min": train_labels.min(axis=0).tolist(),
        "train_label_max": train_labels.max(axis=0).tolist(),
        "holdout": stats,
        "example_ids": [int(i) for i in ids[pick]],
    }
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        wave=wave,
        exponents=exps,
        label_names=np.array(LABELS),
        label_offset=model["offset"],
        label_scale=model["scale"],
        theta_norm=model["theta"].astype(np.float32),
        theta_cont=model["theta_cont"],
        cont_wave_range=np.array([lo, hi]),
        example_labels=labels[pick],
        example_lnorm=np.where(good[pick], y[pick], np.nan).astype(np.float32),
        example_cont_coef=ccoef[pick],
        meta_json=np.array(json.dumps(meta)),
    )
    print(json.dumps(stats, indent=1))
    print(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB); rejected {model['rejected'].sum()} "
          f"stars (lines), {model['cont_rejected'].sum()} (continuum)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
