"""What ``stxcat pretrain``, ``finetune``, ``evaluate`` and ``models`` do, as plain functions.

The click commands in :mod:`catalog_tool.cli` parse options and call these; these read and
preprocess the labelled set once (:func:`catalog_tool.train.data.load_labelled`, optionally
cached), call the array-level training code, and write bundles and reports.
"""

from __future__ import annotations

import json
import os
import pathlib
from dataclasses import dataclass

import numpy as np

from catalog_tool.errors import BundleError, ConfigError
from catalog_tool.models.bundle import (MANIFEST_NAME, Bundle, bundled_names, bundled_root, load_bundle,
                                        make_provenance)
from catalog_tool.train.loop import TrainConfig

__all__ = ["TrainOutcome", "run_pretrain", "run_finetune", "run_evaluate", "describe_bundles", "format_bundles",
           "bundles_json"]


@dataclass
class TrainOutcome:
    """A written bundle, the files that could not be read, and the number of training spectra."""

    bundle: Bundle
    failures: list
    n_spectra: int
    log_path: str
    label_summary: str = ""


def _check_out(out, overwrite: bool) -> pathlib.Path:
    out = pathlib.Path(out)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a bundle; choose another --out or pass --overwrite")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "training_log.jsonl"
    log.write_text("")  # one run per log
    return out


def _summary(ls, *, inputs, labels_path) -> dict:
    out = {"inputs": [os.fspath(p) for p in inputs], "label_table": os.fspath(labels_path), "n_spectra": len(ls),
           "surveys": sorted(set(np.asarray(ls.survey).tolist())),
           "n_per_label": {k: int(np.isfinite(v).sum()) for k, v in ls.labels.items()}}
    r = ls.table_report
    if r and (r.get("preset") or r.get("where") or r.get("duplicates")):
        out["label_table_reading"] = {k: r[k] for k in ("preset", "where", "columns", "rows", "pass_where",
                                                        "duplicates", "kept")}
    return out


def _label_names(labels_path, candidates, options, *, what: str) -> list[str]:
    """The labels of ``candidates`` the table provides (refused when none)."""
    from catalog_tool.train.labels import available_labels

    names = available_labels(os.fspath(labels_path), candidates, options)
    if not names:
        raise ConfigError(f"label table {labels_path} has none of the {what} labels {list(candidates)} "
                          "(name columns with --label-column, or use --label-preset)")
    return names


def _save_with_floor(ens, out, *, ls, config: TrainConfig, grid, preprocess, provenance, float16: bool):
    """Save ``ens`` as bundle ``out`` with a per-label systematic error floor.

    The floor is fitted on the validation split the training used (same fraction and seed), so
    that (predicted - true) / error has unit robust scatter there (see
    :func:`catalog_tool.train.evaluate.fit_error_floor`); labels without validation stars get none.
    """
    from catalog_tool.models.infer import predict
    from catalog_tool.train.evaluate import fit_error_floor
    from catalog_tool.train.loop import split_indices

    kw = dict(grid=grid, preprocess=preprocess, provenance=provenance, overwrite=True, float16=float16,
              check_flux=ls.flux[:256] if float16 else None)
    bundle = ens.save(out, **kw)
    _, val = split_indices(len(ls), val_fraction=config.val_fraction, seed=config.seed)
    if len(val) < 2:
        return bundle
    pred = predict(bundle, flux=ls.flux[val], ivar=ls.ivar[val], device=config.device)
    floor = {name: fit_error_floor(pred=pred.values[:, j], true=ls.labels[name][val], err=pred.errors[:, j])
             for j, name in enumerate(bundle.label_names) if name in ls.labels}
    return ens.save(out, **kw, extra={"uncertainty": {
        "floor": floor, "fitted_on": f"{len(val)} validation stars (split seed {config.seed})"}})


def run_pretrain(inputs, *, labels_path, names: list[str], out, config: TrainConfig, hidden=(1024, 512, 64),
                 heads: str = "per-label", ensemble: int = 5, cache=None, float16: bool = False,
                 overwrite: bool = False, command: str = "stxcat pretrain", label_options=None) -> TrainOutcome:
    """Read and preprocess labelled spectra, pre-train an ensemble, write it as bundle ``out``."""
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.data import load_labelled
    from catalog_tool.train.pretrain import pretrain

    if not names:
        raise ConfigError("give at least one --label to learn")
    out = _check_out(out, overwrite)
    grid, settings = ModelGrid(), PreprocessSettings()
    ls, failures = load_labelled(list(inputs), labels_path=labels_path, names=names, grid=grid, settings=settings,
                                 cache=cache, options=label_options)
    ens = pretrain(flux=ls.flux, labels=ls.labels, names=names, hidden=hidden, heads=heads, ensemble=ensemble,
                   config=config, log_path=out / "training_log.jsonl")
    prov = make_provenance(command=command, seed=config.seed,
                           training_data=_summary(ls, inputs=inputs, labels_path=labels_path))
    bundle = _save_with_floor(ens, out, ls=ls, config=config, grid=grid, preprocess=settings, provenance=prov,
                              float16=float16)
    return TrainOutcome(bundle=bundle, failures=failures, n_spectra=len(ls), log_path=os.fspath(out / "training_log.jsonl"),
                        label_summary=ls.summary())


def run_finetune(bundle_ref, inputs, *, labels_path, method: str, out, config: TrainConfig,
                 names: list[str] | None = None, rank: int = 8, alpha: float = 16.0, head_hidden: int = 32,
                 cache=None, float16: bool = False, overwrite: bool = False,
                 command: str = "stxcat finetune", label_options=None) -> TrainOutcome:
    """Fine-tune bundle ``bundle_ref`` on labelled spectra with ``method``; write bundle ``out``."""
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.data import load_labelled
    from catalog_tool.train.finetune import finetune

    base = load_bundle(bundle_ref)
    if names is None:  # every label of the bundle that the table has
        names = _label_names(labels_path, base.label_names, label_options, what="bundle's")
    out = _check_out(out, overwrite)
    grid, settings = ModelGrid.from_dict(base.grid), PreprocessSettings.from_dict(base.preprocess)
    ls, failures = load_labelled(list(inputs), labels_path=labels_path, names=names, grid=grid, settings=settings,
                                 cache=cache, options=label_options)
    ens = finetune(base, flux=ls.flux, labels=ls.labels, method=method, config=config, rank=rank, alpha=alpha,
                   head_hidden=head_hidden, log_path=out / "training_log.jsonl")
    prov = make_provenance(command=command, seed=config.seed,
                           training_data={**_summary(ls, inputs=inputs, labels_path=labels_path),
                                          "parent": {"name": base.name, "sha256": base.sha256,
                                                     "training_data": base.manifest["provenance"].get("training_data")}})
    bundle = _save_with_floor(ens, out, ls=ls, config=config, grid=base.grid, preprocess=base.preprocess,
                              provenance=prov, float16=float16)
    return TrainOutcome(bundle=bundle, failures=failures, n_spectra=len(ls), log_path=os.fspath(out / "training_log.jsonl"),
                        label_summary=ls.summary())


def _plots(out: pathlib.Path, *, names, pred, err, true, feh, snr) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    n = len(names)
    panels = (("pred_vs_ref", "reference", None), ("residual_vs_feh", "reference [Fe/H]", feh),
              ("residual_vs_snr", "S/N (median per pixel)", snr))
    for stem, xlabel, x in panels:
        fig, axes = plt.subplots(1, n, figsize=(3.6 * n, 3.4), squeeze=False)
        for j, (ax, name) in enumerate(zip(axes[0], names)):
            ok = np.isfinite(pred[:, j]) & np.isfinite(true[:, j])
            if x is None:
                ax.scatter(true[ok, j], pred[ok, j], s=3, alpha=0.5)
                lo, hi = np.nanmin(true[ok, j], initial=0), np.nanmax(true[ok, j], initial=1)
                ax.plot([lo, hi], [lo, hi], "k-", lw=0.8)
                ax.set_ylabel(f"predicted {name}")
                ax.set_xlabel(f"{xlabel} {name}")
            else:
                ax.errorbar(x[ok], pred[ok, j] - true[ok, j], yerr=err[ok, j], fmt=".", ms=2, alpha=0.4, lw=0.5)
                ax.axhline(0, color="k", lw=0.8)
                ax.set_ylabel(f"{name} predicted - reference")
                ax.set_xlabel(xlabel)
                if stem == "residual_vs_snr":
                    ax.set_xscale("log")
            ax.set_title(name)
        fig.tight_layout()
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(os.fspath(path))
    return written


def run_evaluate(bundle_ref, inputs, *, labels_path, out, device: str = "auto", batch_size: int = 1024,
                 noise: str = "linear", cache=None, label_options=None) -> dict:
    """Predict labelled spectra with a bundle and write metrics (Markdown, FITS) and plots to ``out``.

    Returns a dict with ``metrics`` and ``calibration`` rows, the written ``files`` and ``failures``.
    """
    from astropy.table import Table

    from catalog_tool.models.infer import predict
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.data import load_labelled
    from catalog_tool.train.evaluate import calibration_table, format_markdown, metrics_table
    from catalog_tool.train.labels import available_labels

    bundle = load_bundle(bundle_ref)
    cal = bundle.manifest.get("calibration")
    names = _label_names(labels_path, bundle.label_names, label_options, what="bundle's")
    # FEH is read even for a bundle that does not predict it: the metrics split on it.
    has_feh = "FEH" not in names and available_labels(os.fspath(labels_path), ["FEH"], label_options)
    load_names = names + (["FEH"] if has_feh else [])
    ls, failures = load_labelled(list(inputs), labels_path=labels_path, names=load_names,
                                 grid=ModelGrid.from_dict(bundle.grid),
                                 settings=PreprocessSettings.from_dict(bundle.preprocess), cache=cache,
                                 options=label_options)
    pred = predict(bundle, flux=ls.flux, ivar=ls.ivar, device=device, batch_size=batch_size, noise=noise)
    idx = [bundle.label_names.index(n) for n in names]
    p, e = pred.values[:, idx], pred.errors[:, idx]
    true = np.stack([ls.labels[n] for n in names], axis=1)
    feh = ls.labels.get("FEH")
    rows = metrics_table(pred=p, true=true, label_names=names, feh_ref=feh)
    calib = calibration_table(pred=p, true=true, err=e, snr=ls.snr, label_names=names)
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "metrics.md"
    md.write_text(
        f"# Evaluation of {bundle.name} (sha256 {bundle.sha256[:12]})\n\n"
        + (f"Values calibrated against {cal['table'].get('name')} ({', '.join(cal['labels'])}; {cal.get('date')}): "
           "stars of that overlap measure the calibration's fit, not its accuracy.\n\n" if cal else "")
        + f"{len(ls)} labelled spectra from {', '.join(map(os.fspath, inputs))}; noise propagation: {noise}.\n"
        "bias = mean(predicted - reference); scatter = 1.4826 x MAD of the residuals; "
        "split at reference [Fe/H] = -1" + ("" if feh is not None else " (not possible: no FEH reference)") + ".\n\n"
        + format_markdown(rows, columns=["label", "subset", "n", "bias", "scatter", "mae", "r2"])
        + "\n## Calibration: spread of (predicted - reference) / error per S/N bin\n\n"
        + format_markdown(calib, columns=["label", "snr_lo", "snr_hi", "n", "z_scatter", "z_std", "median_err"]))
    fits_path = out / "metrics.fits"
    t = Table(rows=[[r[c] for c in ("label", "subset", "n", "n_missing", "bias", "scatter", "mae", "r2")] for r in rows],
              names=("LABEL", "SUBSET", "N", "N_MISSING", "BIAS", "SCATTER", "MAE", "R2"))
    t.meta["EXTNAME"] = "METRICS"
    t.meta["MODEL"] = bundle.name
    t.meta["MODELSHA"] = bundle.sha256
    t.meta["CALIB"] = bool(cal)
    c = Table(rows=[[r[k] for k in ("label", "snr_lo", "snr_hi", "n", "z_scatter", "z_std", "median_err")] for r in calib],
              names=("LABEL", "SNR_LO", "SNR_HI", "N", "Z_SCATTER", "Z_STD", "MEDIAN_ERR"))
    c.meta["EXTNAME"] = "CALIBRATION"
    from astropy.io import fits

    fits.HDUList([fits.PrimaryHDU(), fits.table_to_hdu(t), fits.table_to_hdu(c)]).writeto(fits_path, overwrite=True,
                                                                                        checksum=True)
    plots = _plots(out, names=names, pred=p, err=e, true=true,
                   feh=feh if feh is not None else np.full(len(ls), np.nan), snr=ls.snr)
    return {"metrics": rows, "calibration": calib, "files": [os.fspath(md), os.fspath(fits_path), *plots],
            "failures": failures, "n_spectra": len(ls), "markdown": md.read_text(), "label_summary": ls.summary()}


def describe_bundles(refs=()) -> list[dict]:
    """Key facts of the bundled models and of the bundles ``refs`` (names or paths).

    A bundle that fails verification is listed with ``error`` instead of failing the listing.
    """
    entries = [(f"bundled:{n}", bundled_root() / n) for n in bundled_names()] + [(os.fspath(r), r) for r in refs]
    out = []
    for label, ref in entries:
        try:
            b = load_bundle(ref)
        except BundleError as exc:
            out.append({"bundle": label, "error": str(exc)})
            continue
        m = b.manifest
        arch = m["architecture"]
        # .get: embedding bundles (docs/encoder.md) describe their heads differently.
        out.append({"bundle": label, "name": b.name, "path": b.path, "kind": arch.get("kind"),
                    "labels": b.label_names, "domain": {lab.name: list(lab.domain) for lab in b.labels},
                    "ensemble": b.ensemble_size, "heads": arch.get("heads"),
                    "hidden": arch.get("mlp", {}).get("hidden"),
                    "method": arch.get("finetune", {}).get("method"), "npix": b.n_in,
                    "weights": f"{m['weights']['dtype']}, {m['weights']['nbytes'] / 1e6:.1f} MB",
                    "sha256": b.sha256, "date": m["provenance"].get("date"),
                    "stxcat_version": m["provenance"].get("stxcat_version"),
                    "calibration": _calibration_facts(m.get("calibration"))})
    return out


def _calibration_facts(c: dict | None) -> dict | None:
    if not c:
        return None
    return {"table": c["table"].get("name"), "table_sha256": c["table"]["sha256"], "date": c.get("date"),
            "n_spectra": c.get("n_spectra"), "degree": {k: e["degree"] for k, e in c["labels"].items()},
            "n": {k: e["n"] for k, e in c["labels"].items()},
            "coef": {k: e["coef"] for k, e in c["labels"].items()}}


def format_bundles(rows: list[dict]) -> str:
    """Plain-text listing of :func:`describe_bundles` rows."""
    if not rows:
        return "no bundles found (none bundled, none given)"
    lines = []
    for r in rows:
        if "error" in r:
            lines.append(f"{r['bundle']}: UNUSABLE: {r['error']}")
            continue
        lines.append(f"{r['bundle']}: {r['name']}  [{r['path']}]")
        lines.append(f"  labels   {', '.join(r['labels'])}")
        lines.append("  domain   " + "; ".join(f"{k} {v[0]:.4g}..{v[1]:.4g}" for k, v in r["domain"].items()))
        lines.append(f"  networks {r['kind']}, {r['ensemble']} members, {r['heads']} heads, hidden {r['hidden']}, "
                     f"input {r['npix']} px, fine-tuning: {r['method']}")
        lines.append(f"  weights  {r['weights']}, sha256 {r['sha256'][:16]}...")
        lines.append(f"  made     {r['date']} with stxcat {r['stxcat_version']}")
        c = r.get("calibration")
        if not c:
            lines.append("  calib    none")
        else:
            labels = ", ".join(f"{k} (trend {v}, {c['n'][k]} stars)" for k, v in c["degree"].items())
            lines.append(f"  calib    {labels} against {c['table']} (sha256 {c['table_sha256'][:12]}...), {c['date']}")
    return "\n".join(lines)


def bundles_json(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2)
