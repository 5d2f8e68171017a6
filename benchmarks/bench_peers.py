"""The bundled networks side by side with The Cannon and two one-line baselines, on the same data.

Usage::

    pip install -e ".[peers]"          # The Cannon (annieslasso 0.2.96 on PyPI)
    python benchmarks/bench_peers.py --wheel sdss_mangadap-4.5.0-py3-none-any.whl --work DIR \
        [--bundle default] [--methods network,cannon4,cannon3,ridge,knn] [--network-training chosen|skip] \
        [--domain-check] [--json out.json]

Training data: exactly the sets the bundled model is trained on. The recipe's options, its
:class:`~catalog_tool.train.sim2real.Sim2RealConfig` and its libraries are read from
``scripts/train_default_model.py`` at run time (``build_parser``, ``recipe_config``,
``recipe_libraries``), and the sets come from :func:`catalog_tool.train.sim2real.build_sets` on the
same model grid and GASPP continuum (cached under ``--work``: reuse the folder between runs).

Evaluation sets (never trained on): the held-out MILES stars (id divisible by 5, 3800 < Teff <
7500 K, S/N 30 per B pixel) in DESI and in LAMOST format, and the simulated DESI test stars
(emulated, at drawn labels). Printed per method and label: robust scatter (1.4826 MAD) and bias,
for all stars and split at [Fe/H] = -1, and the z-score spread of the method's uncertainties where
it gives any; then each method's training time and inference speed (spectra/s), measured in this
run, with the load average.

Methods:

* ``network``: the bundle (``--bundle``), predicted with uncertainties by
  :func:`catalog_tool.models.infer.predict`. It is one model for both formats (LAMOST
  pre-training, DESI fine-tuning). Its training time is measured by re-running the recipe
  (:func:`~catalog_tool.train.sim2real.run_recipe`, the script's settings) with the fine-tuning
  method the bundle records (``--network-training chosen``; ``skip`` leaves it out).
* ``cannon4``: The Cannon (Ness et al. 2015), ``thecannon.CannonModel`` with a quadratic
  ``PolynomialVectorizer`` in (Teff, logg, [Fe/H], [alpha/Fe]), one model per format, trained on
  every training spectrum of that format (pre-training and fine-tuning sets) within
  ``--cannon-teff``. The real library stars have no [alpha/Fe]: they take the Galactic mean at
  their [Fe/H] (:func:`catalog_tool.sim.specmodel.alpha_galactic`), as the emulator's fill does.
  Uncertainties: the test step's covariance.
* ``cannon3``: the same with a quadratic model in (Teff, logg, [Fe/H]) only (no filled labels).
* ``ridge``: ridge regression of each label on the normalised flux (mean-subtracted), one per
  format; the penalty per label is picked on a validation split that keeps a star's copies together.
* ``knn``: k nearest neighbours in normalised flux (Euclidean), mean label of the neighbours; k per
  label picked on the same validation split.

For each Cannon model the benchmark also prints how far the trained model is from the spectra of
the simulated test stars at their *true* labels, beside their noise (:func:`cannon_misfit`).
``--domain-check`` adds a table where The Cannon (4 labels) and ridge are trained inside one label
box at a time (giants, dwarfs: :data:`DOMAINS`) and compared with the networks on the evaluation
stars inside the box.

Numpy and torch use ``--threads`` threads (default: the training script's).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import logging
import os
import pathlib
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABELS = ("FEH", "ALPHAFE", "TEFF", "LOGG")
METHODS = ("network", "cannon4", "cannon3", "ridge", "knn")
#: Evaluation set -> the format of the per-format models applied to it.
EVAL_SETS = {"heldout_desi": "desi", "heldout_lamost": "lamost", "sim_test": "desi"}
RIDGE_PENALTIES = tuple(10.0 ** np.arange(-4, 3))
KNN_KS = (5, 10, 20, 40)
SUBSETS = ("all", "[Fe/H] < -1", "[Fe/H] >= -1")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# --------------------------------------------------------------------------- the training set

def load_recipe_script():
    """``scripts/train_default_model.py`` as a module: the definition of the bundled model's sets."""
    spec = importlib.util.spec_from_file_location("train_default_model", ROOT / "scripts" / "train_default_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def formats(ts) -> np.ndarray:
    """``"desi"`` or ``"lamost"`` per row of a TrainingSet (LAMOST rows have SURVEY ``lamost``)."""
    return np.where(np.char.lower(ts.data.survey.astype(str)) == "lamost", "lamost", "desi")


@dataclass
class Arrays:
    """The training spectra of one format: what every per-format method is fitted to."""

    flux: np.ndarray
    ivar: np.ndarray
    labels: dict
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.flux)

    def take(self, rows) -> "Arrays":
        return Arrays(flux=self.flux[rows], ivar=self.ivar[rows], labels={k: v[rows] for k, v in self.labels.items()},
                      groups=self.groups[rows])


def training_arrays(sets: dict, fmt: str) -> Arrays:
    """Every spectrum of format ``fmt`` in the pre-training and fine-tuning sets."""
    parts = []
    for key in ("pretrain", "finetune"):
        ts = sets[key]
        rows = np.flatnonzero(formats(ts) == fmt)
        # emulated stars carry negative per-set group ids: keep the two sets' apart
        g = ts.groups[rows].astype(np.int64)
        g = np.where(g < 0, g - (10_000_000 if key == "finetune" else 0), g)
        parts.append(Arrays(flux=ts.data.flux[rows], ivar=ts.data.ivar[rows],
                            labels={n: np.asarray(ts.data.labels[n], float)[rows] for n in LABELS}, groups=g))
    return Arrays(flux=np.concatenate([p.flux for p in parts]), ivar=np.concatenate([p.ivar for p in parts]),
                  labels={n: np.concatenate([p.labels[n] for p in parts]) for n in LABELS},
                  groups=np.concatenate([p.groups for p in parts]))


# --------------------------------------------------------------------------- ridge and kNN

@dataclass
class RidgeModel:
    mean: np.ndarray        # (P,) mean training flux
    coef: np.ndarray        # (L, P)
    intercept: np.ndarray   # (L,)
    penalty: dict           # label -> chosen relative penalty


def fit_ridge(*, flux: np.ndarray, labels: dict, names=LABELS, val: np.ndarray | None = None,
              penalties=RIDGE_PENALTIES) -> RidgeModel:
    """Ridge regression of each label on the mean-subtracted flux.

    The penalty is ``r * trace(X^T X) / P`` with ``r`` from ``penalties``, chosen per label by the
    median absolute error on the rows ``val`` (a boolean mask), then refitted on all rows. Rows
    where a label is NaN are left out of that label's fit. Equivalent to scikit-learn's
    ``Ridge(alpha=...).fit(flux - mean, label)``.
    """
    flux = np.asarray(flux, np.float64)
    mean = flux.mean(0)
    x = flux - mean
    val = np.zeros(len(x), bool) if val is None else np.asarray(val, bool)
    coef, intercept, chosen = [], [], {}
    for name in names:
        y = np.asarray(labels[name], np.float64)
        known = np.isfinite(y)
        if not known.any():
            coef.append(np.zeros(x.shape[1]))
            intercept.append(np.nan)
            chosen[name] = None
            continue

        def solve(rows, rs):
            xr, yr = x[rows], y[rows]
            ym = yr.mean()
            ev, vec = np.linalg.eigh(xr.T @ xr)
            proj = vec.T @ (xr.T @ (yr - ym))
            scale = ev.sum() / x.shape[1]
            return [(vec @ (proj / (ev + r * scale)), ym) for r in rs]

        r_best = penalties[0]
        fit_rows, val_rows = known & ~val, known & val
        if len(penalties) > 1 and val_rows.any() and fit_rows.sum() > 1:
            errs = [np.median(np.abs(x[val_rows] @ w + ym - y[val_rows])) for w, ym in solve(fit_rows, penalties)]
            r_best = penalties[int(np.argmin(errs))]
        (w, ym), = solve(known, [r_best])
        coef.append(w)
        intercept.append(ym)
        chosen[name] = float(r_best)
    return RidgeModel(mean=mean, coef=np.array(coef), intercept=np.array(intercept), penalty=chosen)


def predict_ridge(model: RidgeModel, *, flux: np.ndarray) -> np.ndarray:
    """(N, L) predicted labels."""
    return (np.asarray(flux, np.float64) - model.mean) @ model.coef.T + model.intercept


@dataclass
class KNNModel:
    flux: np.ndarray     # (M, P) training flux
    labels: np.ndarray   # (M, L), NaN where unknown
    k: dict              # label -> k


def _neighbours(train: np.ndarray, query: np.ndarray, k: int, chunk: int = 512) -> np.ndarray:
    """Indices (N, k) of the k nearest training rows of each query row (Euclidean), nearest first."""
    sq = np.einsum("ij,ij->i", train, train)
    out = np.empty((len(query), k), np.int64)
    for i in range(0, len(query), chunk):
        d = sq[None, :] - 2.0 * query[i:i + chunk] @ train.T
        part = np.argpartition(d, k - 1, axis=1)[:, :k]
        order = np.argsort(np.take_along_axis(d, part, 1), axis=1)
        out[i:i + chunk] = np.take_along_axis(part, order, 1)
    return out


def _mean_label(labels: np.ndarray, nn: np.ndarray) -> np.ndarray:
    vals = labels[nn]                                   # (N, k)
    n = np.isfinite(vals).sum(1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.nansum(vals, 1) / np.maximum(n, 1), np.nan)


def fit_knn(*, flux: np.ndarray, labels: dict, names=LABELS, val: np.ndarray | None = None, ks=KNN_KS) -> KNNModel:
    """k nearest neighbours; k per label chosen by the median absolute error on rows ``val`` (neighbours
    from the other rows), then every row is kept as a neighbour."""
    flux = np.asarray(flux, np.float64)
    y = np.stack([np.asarray(labels[n], np.float64) for n in names], 1)
    val = np.zeros(len(flux), bool) if val is None else np.asarray(val, bool)
    chosen = {n: ks[0] for n in names}
    if len(ks) > 1 and val.any() and (~val).sum() >= max(ks):
        ref = np.flatnonzero(~val)
        nn = ref[_neighbours(flux[ref], flux[val], max(ks))]
        for j, name in enumerate(names):
            truth = y[val, j]
            if not np.isfinite(truth).any():
                continue
            errs = [np.nanmedian(np.abs(_mean_label(y[:, j], nn[:, :k]) - truth)) for k in ks]
            chosen[name] = int(ks[int(np.nanargmin(errs))])
    return KNNModel(flux=flux, labels=y, k=chosen)


def predict_knn(model: KNNModel, *, flux: np.ndarray) -> np.ndarray:
    """(N, L) mean labels of each spectrum's k nearest training spectra (NaN labels ignored)."""
    nn = _neighbours(model.flux, np.asarray(flux, np.float64), max(model.k.values()))
    return np.stack([_mean_label(model.labels[:, j], nn[:, :model.k[n]]) for j, n in enumerate(model.k)], 1)


# --------------------------------------------------------------------------- The Cannon

@contextlib.contextmanager
def _cannon_quiet():
    """Run thecannon 0.2.96 with numpy >= 2 and without its progress bars.

    Two shims, nothing else in the fits changes:

    * the training step stores the fitted pixel scatter, a 1-element array from
      ``scipy.optimize.fmin``, into a float array element (``s2[pixel] = array([x])``), which
      numpy 2 refuses ("setting an array element with a sequence"): the per-pixel fit returns it
      as a float;
    * the test step returns ``None`` as the covariance of a spectrum it could not fit and then
      stacks the covariances with ``np.array``, which numpy >= 1.24 refuses for such ragged lists:
      that spectrum's covariance becomes a NaN matrix (its labels are already NaN).
    """
    from thecannon import fitting

    orig_pixel, orig_spectrum = fitting.fit_pixel_fixed_scatter, fitting.fit_spectrum

    def fit_pixel(*args, **kwargs):
        theta, s2, meta = orig_pixel(*args, **kwargs)
        return theta, float(np.squeeze(s2)), meta

    def fit_spectrum(flux, ivar, initial_labels, vectorizer, *args, **kwargs):
        labels, cov, meta = orig_spectrum(flux, ivar, initial_labels, vectorizer, *args, **kwargs)
        if cov is None:
            k = len(vectorizer.label_names)
            cov = np.full((k, k), np.nan)
        return labels, cov, meta

    fitting.fit_pixel_fixed_scatter, fitting.fit_spectrum = fit_pixel, fit_spectrum
    logger = logging.getLogger("thecannon")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        fitting.fit_pixel_fixed_scatter, fitting.fit_spectrum = orig_pixel, orig_spectrum
        logger.setLevel(level)


class CannonPeer:
    """The Cannon's training and test steps (``thecannon.CannonModel``), quadratic in ``names``."""

    def __init__(self, names=("TEFF", "LOGG", "FEH", "ALPHAFE")):
        self.names = tuple(names)
        self.model = None

    def fit(self, *, flux: np.ndarray, ivar: np.ndarray, labels: np.ndarray) -> "CannonPeer":
        import thecannon as tc

        vec = tc.vectorizer.PolynomialVectorizer(self.names, 2)
        self.model = tc.CannonModel(np.asarray(labels, np.float64), np.asarray(flux, np.float64),
                                    np.asarray(ivar, np.float64), vec)
        with _cannon_quiet():
            self.model.train()
        return self

    def predict(self, *, flux: np.ndarray, ivar: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Labels (N, K) in ``names`` order and their 1-sigma uncertainties from the test step's
        covariance (which is in the model's scaled label units: multiplied back by the scales)."""
        with _cannon_quiet():
            values, cov, _ = self.model.test(np.asarray(flux, np.float64), np.asarray(ivar, np.float64))
        k = len(self.names)
        values = np.asarray(values, float).reshape(len(flux), k)
        err = np.full_like(values, np.nan)
        for i, c in enumerate(cov):
            if c is not None and np.shape(c) == (k, k):
                err[i] = np.sqrt(np.abs(np.diag(c))) * self.model._scales
        return values, err


def cannon_labels(arrays: Arrays, names) -> tuple[np.ndarray, np.ndarray]:
    """(N, K) training labels for The Cannon in ``names`` order, and which rows had [alpha/Fe] filled."""
    from catalog_tool.sim.specmodel import alpha_galactic

    cols, filled = [], np.zeros(len(arrays), bool)
    for n in names:
        v = arrays.labels[n].copy()
        if n == "ALPHAFE":
            filled = ~np.isfinite(v)
            v[filled] = alpha_galactic(arrays.labels["FEH"][filled])
        cols.append(v)
    return np.stack(cols, 1), filled


def cannon_misfit(peer: CannonPeer, ts, *, min_snr: float = 40.0) -> dict:
    """How well the trained quadratic model reproduces spectra at their *true* labels.

    On the simulated test stars (all four labels known) with S/N > ``min_snr``: the median absolute
    difference between the spectrum and the model at the true labels, beside the median noise
    (1/sqrt(ivar)) of the same pixels. A misfit at or above the noise is model error that the test
    step's covariance does not know about.
    """
    rows = np.flatnonzero(ts.data.snr > min_snr)
    if rows.size == 0:
        return {"n": 0}
    truth = np.stack([np.asarray(ts.data.labels[n], float)[rows] for n in peer.names], 1)
    model_flux = np.atleast_2d(peer.model(truth))
    ivar = ts.data.ivar[rows].astype(float)
    good = ivar > 0
    resid = np.abs(ts.data.flux[rows] - model_flux)[good]
    return {"n": int(rows.size), "min_snr": min_snr, "median_abs_residual": float(np.median(resid)),
            "p90_abs_residual": float(np.percentile(resid, 90)),
            "median_noise": float(np.median(1.0 / np.sqrt(ivar[good])))}


# --------------------------------------------------------------------------- evaluation

def evaluate(pred: np.ndarray, err: np.ndarray, ts) -> list[dict]:
    """Held-out metrics (:func:`~catalog_tool.train.library_sets.heldout_report`) of (N, 4) predictions
    in LABELS order, all stars and split at [Fe/H] = -1."""
    from catalog_tool.train.library_sets import heldout_report

    rows = heldout_report(pred=pred, err=err, true=ts.data.labels, label_names=list(LABELS))
    return [r for r in rows if r["subset"] in SUBSETS]


def _in_label_order(values: np.ndarray, names) -> np.ndarray:
    out = np.full((len(values), len(LABELS)), np.nan)
    for j, n in enumerate(names):
        out[:, LABELS.index(n)] = values[:, j]
    return out


def run_peer(method: str, sets: dict, *, seed: int, cannon_teff, log=log) -> dict:
    """Fit ``method`` per format and predict the evaluation sets; timings included."""
    out = {"train": {}, "eval": {}, "predict_seconds": 0.0, "predict_spectra": 0}
    fitted = {}
    for fmt in sorted(set(EVAL_SETS.values())):
        arr = training_arrays(sets, fmt)
        from catalog_tool.train.loop import split_indices

        _, val_rows = split_indices(len(arr), val_fraction=0.1, seed=seed, groups=arr.groups)
        val = np.zeros(len(arr), bool)
        val[val_rows] = True
        t0 = time.perf_counter()
        if method in ("cannon4", "cannon3"):
            names = ("TEFF", "LOGG", "FEH", "ALPHAFE")[:4 if method == "cannon4" else 3]
            keep = (arr.labels["TEFF"] > cannon_teff[0]) & (arr.labels["TEFF"] < cannon_teff[1])
            sub = arr.take(np.flatnonzero(keep))
            lab, filled = cannon_labels(sub, names)
            model = CannonPeer(names).fit(flux=sub.flux, ivar=sub.ivar, labels=lab)
            info = {"spectra": len(sub), "alpha_filled": int(filled.sum()) if "ALPHAFE" in names else 0,
                    "median_scatter": float(np.nanmedian(np.sqrt(model.model.s2)))}
        elif method == "ridge":
            model = fit_ridge(flux=arr.flux, labels=arr.labels, val=val)
            info = {"spectra": len(arr), "penalty": model.penalty}
        elif method == "knn":
            model = fit_knn(flux=arr.flux, labels=arr.labels, val=val)
            info = {"spectra": len(arr), "k": model.k}
        else:
            raise SystemExit(f"unknown method {method!r}; known: {', '.join(METHODS)}")
        info["seconds"] = time.perf_counter() - t0
        if isinstance(model, CannonPeer) and fmt == EVAL_SETS["sim_test"]:
            info["misfit"] = cannon_misfit(model, sets["sim_test"])
        out["train"][fmt] = info
        fitted[fmt] = model
        log(f"  {method} ({fmt}): trained on {info['spectra']} spectra in {info['seconds']:.1f} s")
    for key, fmt in EVAL_SETS.items():
        ts, model = sets[key], fitted[fmt]
        t0 = time.perf_counter()
        if isinstance(model, CannonPeer):
            values, err = model.predict(flux=ts.data.flux, ivar=ts.data.ivar)
            pred, perr = _in_label_order(values, model.names), _in_label_order(err, model.names)
        elif isinstance(model, RidgeModel):
            pred, perr = predict_ridge(model, flux=ts.data.flux), None
        else:
            pred, perr = predict_knn(model, flux=ts.data.flux), None
        out["predict_seconds"] += time.perf_counter() - t0
        out["predict_spectra"] += len(ts)
        out["eval"][key] = evaluate(pred, np.full_like(pred, np.nan) if perr is None else perr, ts)
    return out


def predict_bundle(bundle, sets: dict) -> dict:
    """Predict the evaluation sets with a network bundle (values and uncertainties), timed."""
    from catalog_tool.models.infer import predict

    out = {"train": {}, "eval": {}, "predict_seconds": 0.0, "predict_spectra": 0, "bundle": bundle.name,
           "sha256": bundle.sha256}
    for key in EVAL_SETS:
        ts = sets[key]
        t0 = time.perf_counter()
        p = predict(bundle, flux=ts.data.flux, ivar=ts.data.ivar)
        out["predict_seconds"] += time.perf_counter() - t0
        out["predict_spectra"] += len(ts)
        out["eval"][key] = evaluate(p.values, p.errors, ts)
    return out


def run_network(bundle_name: str, sets: dict, *, train: bool, script, recipe_inputs, work: str,
                log=log) -> dict:
    """Results ``{"network": ...}`` for the bundle, and with ``train`` also ``"network (re-trained)"``:
    the recipe re-run in this run (the script's settings, the fine-tuning method the bundle records),
    timed; and the bundles under the same names."""
    from catalog_tool.models.bundle import load_bundle

    bundle = load_bundle(bundle_name)
    results = {"network": predict_bundle(bundle, sets)}
    bundles = {"network": bundle}
    if train:
        from catalog_tool.train.sim2real import run_recipe

        a = script.build_parser().parse_args(["--out", "unused"])
        method = (bundle.manifest.get("training") or {}).get("chosen_method") or a.methods.split(",")[0]
        model, extra, config, grid, settings = recipe_inputs
        log(f"  re-running the recipe (ensemble {a.ensemble}, fine-tuning {method}) to time the networks' training")
        t0 = time.perf_counter()
        r = run_recipe(work, model=model, config=config, grid=grid, settings=settings, extra=extra,
                       ensemble=a.ensemble, epochs=a.epochs, ft_epochs=a.ft_epochs, lr=a.lr, ft_lr=a.ft_lr,
                       batch_size=a.batch_size, methods=(method,), log=lambda m: log("    " + m))
        total = time.perf_counter() - t0
        retrained = predict_bundle(r["bundle"], sets)
        retrained["train"]["both"] = {"spectra": len(sets["pretrain"]) + len(sets["finetune"]),
                                      "seconds": r["pretrain_seconds"] + r["results"][method]["seconds"],
                                      "recipe_seconds": total, "method": method, "ensemble": a.ensemble}
        results["network (re-trained)"] = retrained
        bundles["network (re-trained)"] = r["bundle"]
    return results, bundles


#: Label boxes of ``--domain-check``: The Cannon's usual setting, one class of star at a time.
DOMAINS = {
    "giants": {"TEFF": (4000.0, 5300.0), "LOGG": (-1.0, 3.5), "FEH": (-1.5, 1.0)},
    "dwarfs": {"TEFF": (4800.0, 6500.0), "LOGG": (3.8, 6.0), "FEH": (-1.5, 1.0)},
}


def in_domain(labels: dict, box: dict) -> np.ndarray:
    ok = np.ones(len(labels["TEFF"]), bool)
    for name, (lo, hi) in box.items():
        v = np.asarray(labels[name], float)
        ok &= (v > lo) & (v < hi)
    return ok


def domain_check(sets: dict, bundles: dict, log=log) -> list[dict]:
    """The Cannon (4 labels) and ridge trained inside one label box, beside the network bundles
    (trained on everything), on the evaluation stars inside the same box: is The Cannon competitive
    where it is usually used?"""
    from catalog_tool.models.infer import predict
    from catalog_tool.train.evaluate import robust_scatter

    rows = []
    for dom, box in DOMAINS.items():
        fitted = {}
        for fmt in sorted(set(EVAL_SETS.values())):
            arr = training_arrays(sets, fmt)
            sub = arr.take(np.flatnonzero(in_domain(arr.labels, box)))
            names = ("TEFF", "LOGG", "FEH", "ALPHAFE")
            lab, _ = cannon_labels(sub, names)
            fitted[fmt] = (CannonPeer(names).fit(flux=sub.flux, ivar=sub.ivar, labels=lab),
                           fit_ridge(flux=sub.flux, labels=sub.labels, penalties=(1e-2,)), len(sub))
        for key, fmt in EVAL_SETS.items():
            ts = sets[key]
            sel = in_domain(ts.data.labels, box)
            cannon, ridge, n_train = fitted[fmt]
            flux, ivar = ts.data.flux[sel], ts.data.ivar[sel]
            preds = {name: predict(b, flux=flux, ivar=ivar).values for name, b in bundles.items()}
            preds["cannon4"] = _in_label_order(cannon.predict(flux=flux, ivar=ivar)[0], cannon.names)
            preds["ridge"] = predict_ridge(ridge, flux=flux)
            for method, p in preds.items():
                row = {"domain": dom, "set": key, "method": method, "n": int(sel.sum()), "trained_on": n_train}
                for name in ("FEH", "TEFF", "LOGG"):
                    row[name] = robust_scatter(p[:, LABELS.index(name)] - np.asarray(ts.data.labels[name])[sel])
                rows.append(row)
        log(f"  domain check: {dom} done")
    return rows


# --------------------------------------------------------------------------- tables

def _fmt(v, label, kind):
    if v is None or not np.isfinite(v):
        return "—"
    if label == "TEFF" and kind != "z":
        return f"{v:+.0f}" if kind == "bias" else f"{v:.0f}"
    if kind == "z":
        return f"{v:.2f}"
    return f"{v:+.3f}" if kind == "bias" else f"{v:.3f}"


def accuracy_table(results: dict, key: str) -> str:
    lines = [f"#### {key}", "",
             "| method | label | n | σ all | σ [Fe/H]<−1 | σ [Fe/H]≥−1 | bias all | bias [Fe/H]<−1 | bias [Fe/H]≥−1 "
             "| z σ all | z σ [Fe/H]<−1 |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for method, res in results.items():
        rows = {(r["label"], r["subset"]): r for r in res["eval"][key]}
        for label in LABELS:
            if (label, "all") not in rows:
                continue
            g = {s: rows.get((label, s), {}) for s in SUBSETS}
            if not g["all"].get("n") or not np.isfinite(g["all"].get("scatter", np.nan)):
                continue
            sc = [_fmt(g[s].get("scatter"), label, "sc") for s in SUBSETS]
            bi = [_fmt(g[s].get("bias"), label, "bias") for s in SUBSETS]
            z = [_fmt(g[s].get("z_scatter"), label, "z") for s in SUBSETS[:2]]
            lines.append(f"| {method} | {label} | {g['all']['n']} | " + " | ".join(sc + bi + z) + " |")
    return "\n".join(lines)


def speed_table(results: dict) -> str:
    lines = ["| method | trained on (spectra) | training (s) | inference (spectra/s) |", "|---|---|---:|---:|"]
    for method, res in results.items():
        if res["train"]:
            on = ", ".join(f"{fmt} {t['spectra']}" for fmt, t in res["train"].items())
            secs = sum(t["seconds"] for t in res["train"].values())
            secs_s = f"{secs:.0f}"
        else:
            on, secs_s = "(not re-run)", "—"
        speed = res["predict_spectra"] / res["predict_seconds"] if res["predict_seconds"] else float("nan")
        lines.append(f"| {method} | {on} | {secs_s} | {speed:.0f} |")
    return "\n".join(lines)


def domain_table(rows: list[dict]) -> str:
    lines = ["| domain | evaluation set | method | trained on | n | σ FEH | σ TEFF (K) | σ LOGG |",
             "|---|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        on = "everything" if r["method"].startswith("network") else str(r["trained_on"])
        lines.append(f"| {r['domain']} | {r['set']} | {r['method']} | {on} | {r['n']} | {r['FEH']:.3f} | "
                     f"{r['TEFF']:.0f} | {r['LOGG']:.3f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    script = load_recipe_script()
    defaults = script.build_parser().parse_args(["--out", "unused"])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--wheel", help="sdss-mangadap 4.5.0 wheel (default: pip download into --work)")
    ap.add_argument("--work", help="folder for the cached sets (default: a temporary folder)")
    ap.add_argument("--bundle", default="default", help="the network bundle to compare (name or path)")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--network-training", choices=("chosen", "skip"), default="chosen",
                    help="re-run the recipe with the bundle's fine-tuning method to time the networks' training")
    ap.add_argument("--cannon-teff", default="3800,7500",
                    help="Teff range (K) of The Cannon's training stars (default: the held-out stars' range)")
    ap.add_argument("--threads", type=int, default=defaults.threads, help="numpy and torch threads")
    ap.add_argument("--domain-check", action="store_true",
                    help="also train The Cannon and ridge inside one label box at a time (giants, dwarfs)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    methods = [m for m in args.methods.split(",") if m]
    bad = sorted(set(methods) - set(METHODS))
    if bad:
        raise SystemExit(f"unknown method(s) {', '.join(bad)}; known: {', '.join(METHODS)}")
    if any(m.startswith("cannon") for m in methods) and importlib.util.find_spec("thecannon") is None:
        raise SystemExit('The Cannon is not installed: pip install -e ".[peers]" (or leave out cannon4,cannon3)')
    cannon_teff = tuple(float(x) for x in args.cannon_teff.split(","))

    import torch
    from threadpoolctl import threadpool_limits

    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.sim.library import fetch_wheel
    from catalog_tool.train.sim2real import build_sets

    torch.set_num_threads(args.threads)
    tmp = None if args.work else tempfile.TemporaryDirectory(prefix="stxcat-peers-")
    work = args.work or tmp.name
    os.makedirs(work, exist_ok=True)
    load0 = os.getloadavg()
    config = script.recipe_config(defaults)
    model, extra = script.recipe_libraries(args.wheel or fetch_wheel(work))
    grid, settings = ModelGrid(), PreprocessSettings()
    log(f"sets of the recipe (scripts/train_default_model.py): {json.dumps(config.to_dict())}; "
        f"libraries {[m.library.name for m in (model, *extra)]}")
    sets = build_sets(work, model=model, config=config, grid=grid, settings=settings, extra=extra, log=log)
    log("sizes: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()))
    results, bundles = {}, {}
    with threadpool_limits(args.threads):
        for method in methods:
            log(f"{method}")
            if method == "network":
                res, bundles = run_network(args.bundle, sets, train=args.network_training == "chosen",
                                           script=script, recipe_inputs=(model, extra, config, grid, settings),
                                           work=work)
                results.update(res)
            else:
                results[method] = run_peer(method, sets, seed=config.seed, cannon_teff=cannon_teff)
        if args.domain_check:
            log("domain check")
            if not bundles:
                from catalog_tool.models.bundle import load_bundle

                bundles = {"network": load_bundle(args.bundle)}
            domains = domain_check(sets, bundles)
    load1 = os.getloadavg()
    print()
    for key in EVAL_SETS:
        print(accuracy_table(results, key))
        print()
    print(speed_table(results))
    print(f"\nthreads {args.threads}; load average {load0[0]:.2f} at the start, {load1[0]:.2f} at the end "
          f"(1-min); bundle {args.bundle}")
    net = results.get("network (re-trained)", {}).get("train", {}).get("both")
    if net:
        print(f"network (re-trained): the recipe re-run in this run ({net['method']}, ensemble {net['ensemble']}): "
              f"pre-training + fine-tuning {net['seconds']:.0f} s, the whole recipe run {net['recipe_seconds']:.0f} s")
    for method, res in results.items():
        mis = res["train"].get(EVAL_SETS["sim_test"], {}).get("misfit")
        if mis and mis.get("n"):
            print(f"{method}: at the true labels of {mis['n']} simulated test stars with S/N > {mis['min_snr']:g} the "
                  f"model misses the spectrum by {mis['median_abs_residual']:.4f} (median; 90th percentile "
                  f"{mis['p90_abs_residual']:.4f}) where the noise is {mis['median_noise']:.4f}; median pixel "
                  f"scatter s {res['train'][EVAL_SETS['sim_test']]['median_scatter']:.4f}")
    if args.domain_check:
        print()
        print(domain_table(domains))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"config": config.to_dict(), "methods": results,
                       "domains": domains if args.domain_check else None, "load": [load0, load1],
                       "threads": args.threads, "cannon_teff": cannon_teff}, fh, indent=1, default=float)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
