"""From simulations to real spectra: the training recipe of the bundled model, with its ablations.

The networks learn from two kinds of spectra, both written in the survey's real file formats by
the simulators and read back and preprocessed exactly as ``stxcat annotate`` does:

* **real stars**: MILES library spectra (:class:`~catalog_tool.sim.library.LibraryModel`), each
  rendered ``copies`` times through the LAMOST (pre-training) and DESI (fine-tuning) instrument
  models, at S/N 5-200, with the domain randomisation of :mod:`catalog_tool.sim.randomise`;
* **emulated stars**: the data-driven emulator (:class:`~catalog_tool.sim.specmodel.SpectralModel`)
  at labels drawn from a Milky-Way-like population, for label coverage (the metal-poor tail,
  [alpha/Fe], which MILES does not give).

The held-out MILES stars (id divisible by 5, :func:`~catalog_tool.sim.library.is_heldout`) are
never rendered into a training, validation or calibration set: :func:`build_sets` asserts it.
They are rendered once more, by the base simulator at S/N 30 per B pixel, to evaluate
(:func:`evaluate_heldout`). Train/validation splits keep the copies of a star together
(``groups``), so validation losses, the choice of fine-tuning method and the uncertainty floor
are measured on stars the networks have not seen.

:func:`run_recipe` is what ``scripts/train_default_model.py`` runs and what
``benchmarks/bench_sim2real.py`` runs with ingredients switched off.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field

import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.sim.library import assert_no_heldout, is_heldout
from catalog_tool.sim.randomise import DomainRandomisation
from catalog_tool.train.data import LabelledSet
from catalog_tool.train.evaluate import calibration_table, fit_error_floor, metrics_table, robust_scatter
from catalog_tool.train.library_sets import heldout_report, library_set, rendered_set

__all__ = ["Sim2RealConfig", "TrainingSet", "build_sets", "concat_sets", "evaluate_heldout", "run_recipe",
           "LABELS", "HELDOUT_TEFF"]

LABELS = ["FEH", "ALPHAFE", "TEFF", "LOGG"]
#: Held-out stars are evaluated in this Teff range (the emulator's and the targets' range).
HELDOUT_TEFF = (3800.0, 7500.0)


@dataclass(frozen=True)
class Sim2RealConfig:
    """What goes into the training sets (the ingredients the ablation switches).

    Parameters
    ----------
    real : bool
        Render the training MILES stars (LAMOST for pre-training, DESI for fine-tuning).
    emulator : bool
        Add emulated stars at drawn labels.
    randomise : DomainRandomisation or None
        Domain randomisation of every training spectrum (None: the base simulators).
    copies_lamost, copies_desi : int
        Renderings of each training library star per instrument.
    copies_ft_lamost : int
        Renderings of each training library star in LAMOST format added to the fine-tuning set
        (other draws than pre-training's), so that one bundle serves both surveys (0: DESI only).
    n_emu_lamost, n_emu_desi : int
        Emulated stars per instrument.
    snr_range : (float, float)
        S/N of the training spectra (log-uniform).
    heldout_copies : int
        Renderings of each held-out star (other velocities and noise) in the evaluation sets.
    heldout_snr : float
        S/N per pixel of the evaluation sets, over ``heldout_window`` (A; the B arm for DESI).
    eval_randomised : bool
        Also evaluate on held-out stars rendered with the full default randomisation.
    seed : int
    """

    real: bool = True
    emulator: bool = True
    randomise: DomainRandomisation | None = DomainRandomisation()
    copies_lamost: int = 12
    copies_desi: int = 8
    copies_ft_lamost: int = 4
    n_emu_lamost: int = 8000
    n_emu_desi: int = 1500
    snr_range: tuple = (5.0, 200.0)
    heldout_copies: int = 2
    heldout_snr: float = 30.0
    heldout_window: tuple = (4000.0, 5600.0)
    eval_randomised: bool = False
    seed: int = 2026

    def __post_init__(self):
        if not (self.real or self.emulator):
            raise ConfigError("a training set needs real stars, emulated stars or both")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["randomise"] = self.randomise.to_dict() if self.randomise is not None else None
        return d


@dataclass
class TrainingSet:
    """Preprocessed spectra, their labels, and a group per row (a real star's copies share one)."""

    data: LabelledSet
    groups: np.ndarray
    real: np.ndarray           # (N,) bool: a real library star
    star_id: np.ndarray        # (N,) library id, -1 for emulated stars
    info: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.data)


def concat_sets(sets: list[TrainingSet], names: list[str]) -> TrainingSet:
    """One set from several (labels absent from a set are NaN there)."""
    sets = [s for s in sets if s is not None and len(s)]
    if not sets:
        raise ConfigError("no spectra to train on")
    data = LabelledSet(
        flux=np.concatenate([s.data.flux for s in sets]), ivar=np.concatenate([s.data.ivar for s in sets]),
        labels={n: np.concatenate([s.data.labels.get(n, np.full(len(s), np.nan)) for s in sets]) for n in names},
        targetid=np.concatenate([s.data.targetid for s in sets]), snr=np.concatenate([s.data.snr for s in sets]),
        survey=np.concatenate([s.data.survey for s in sets]))
    return TrainingSet(data=data, groups=np.concatenate([s.groups for s in sets]),
                       real=np.concatenate([s.real for s in sets]), star_id=np.concatenate([s.star_id for s in sets]))


def _cached(path: str, make) -> TrainingSet:
    """Load a TrainingSet saved at ``path`` (npz, no pickle) or make and save it."""
    if os.path.exists(path):
        with np.load(path, allow_pickle=False) as z:
            labels = {k[6:]: z[k] for k in z.files if k.startswith("label_")}
            data = LabelledSet(flux=z["flux"], ivar=z["ivar"], labels=labels, targetid=z["targetid"],
                               snr=z["snr"], survey=z["survey"])
            return TrainingSet(data=data, groups=z["groups"], real=z["real"], star_id=z["star_id"],
                               info=json.loads(str(z["info"])))
    ts = make()
    tmp = path + ".tmp.npz"
    np.savez(tmp, flux=ts.data.flux, ivar=ts.data.ivar, targetid=ts.data.targetid, snr=ts.data.snr,
             survey=ts.data.survey.astype("U16"), groups=ts.groups, real=ts.real, star_id=ts.star_id,
             info=np.array(json.dumps(ts.info)), **{f"label_{k}": v for k, v in ts.data.labels.items()})
    os.replace(tmp, path)
    return ts


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def build_sets(work, *, model, config: Sim2RealConfig, grid, settings, extra=(),
               log=lambda msg: None) -> dict[str, TrainingSet]:
    """The pre-training, fine-tuning and evaluation sets of a recipe run (cached under ``work``).

    ``model`` is the MILES library (training and held-out stars); ``extra`` are other libraries
    (STELIB: :func:`~catalog_tool.sim.library.read_stelib`) whose training stars are rendered
    like MILES's; their held-out stars (the same ids) are never used.

    Keys: ``pretrain`` (LAMOST), ``finetune`` (DESI), ``heldout_desi``, ``heldout_lamost`` (held-out
    MILES stars, base simulator, S/N ``heldout_snr``), ``sim_test`` (emulated DESI stars at drawn
    labels, another seed: the simulated-world test of earlier releases), and with
    ``eval_randomised`` ``heldout_desi_rand`` / ``heldout_lamost_rand``.
    """
    from catalog_tool.sim.population import sample_labels

    os.makedirs(work, exist_ok=True)
    lib = model.library
    teff = lib.labels[:, 0]
    held_rows = np.flatnonzero(is_heldout(lib.ids) & (teff > HELDOUT_TEFF[0]) & (teff < HELDOUT_TEFF[1]))
    rz = config.randomise
    common = {"grid": grid, "settings": settings}
    gk = [grid.to_dict(), settings.to_dict(), lib.source]

    def real_set(name, inst, rows, copies, seed, snr_range, randomise, window=None, lib_model=model):
        def make():
            ls = library_set(os.path.join(work, "sims", name), model=lib_model, rows=rows, instrument=inst, names=LABELS,
                             seed=seed, copies=copies, snr_range=snr_range, snr_window=window, randomise=randomise,
                             log=log, **common)
            if ls.failures:
                raise RuntimeError(f"{len(ls.failures)} rendered files could not be read, e.g. {ls.failures[0]}")
            return TrainingSet(data=ls.data, groups=ls.star_id.copy(), real=np.ones(len(ls), bool),
                               star_id=ls.star_id, info={"stars": int(len(rows)), "copies": copies})
        key = _key(gk, lib_model.library.source, name, inst, rows.tolist(), copies, seed, snr_range, window,
                   dataclasses.asdict(randomise) if randomise else None)
        return _cached(os.path.join(work, f"{name}-{key}.npz"), make)

    def emu_set(name, inst, n, seed, snr_range, randomise):
        def make():
            labels = sample_labels(n, rng=np.random.default_rng(seed))
            log(f"rendering {n} emulated {inst.upper()} stars")
            data, _, _, failures = rendered_set(os.path.join(work, "sims", name), instrument=inst, labels=labels,
                                                names=LABELS, seed=seed, snr_range=snr_range, randomise=randomise,
                                                **common)
            if failures:
                raise RuntimeError(f"{len(failures)} rendered files could not be read, e.g. {failures[0]}")
            m = len(data)
            return TrainingSet(data=data, groups=-1 - np.arange(m), real=np.zeros(m, bool),
                               star_id=np.full(m, -1), info={"stars": n})
        key = _key(gk, name, inst, n, seed, snr_range, dataclasses.asdict(randomise) if randomise else None)
        return _cached(os.path.join(work, f"{name}-{key}.npz"), make)

    s = config.seed
    snr = tuple(config.snr_range)
    out = {}
    pre = [emu_set("emu_lamost", "lamost", config.n_emu_lamost, s, snr, rz) if config.emulator else None]
    ft = [emu_set("emu_desi", "desi", config.n_emu_desi, s + 1, snr, rz) if config.emulator else None]
    if config.real:
        for k, lm in enumerate((model, *extra)):
            rows = np.flatnonzero(~is_heldout(lm.library.ids))
            assert_no_heldout(lm.library.ids[rows], what=f"{lm.library.name} training stars")
            tag = lm.library.name.lower()
            pre.append(real_set(f"real_lamost_{tag}", "lamost", rows, config.copies_lamost, s + 10 + 100 * k, snr, rz,
                                lib_model=lm))
            ft.append(real_set(f"real_desi_{tag}", "desi", rows, config.copies_desi, s + 11 + 100 * k, snr, rz,
                               lib_model=lm))
            if config.copies_ft_lamost:
                ft.append(real_set(f"real_ft_lamost_{tag}", "lamost", rows, config.copies_ft_lamost, s + 12 + 100 * k,
                                   snr, rz, lib_model=lm))
    out["pretrain"] = concat_sets(pre, LABELS)
    out["finetune"] = concat_sets(ft, LABELS)
    for key in ("pretrain", "finetune"):
        used = out[key].star_id[out[key].real]
        assert_no_heldout(np.unique(used), what=f"{key} set")
    hs = (config.heldout_snr, config.heldout_snr)
    win = tuple(config.heldout_window)
    for inst in ("desi", "lamost"):
        out[f"heldout_{inst}"] = real_set(f"heldout_{inst}", inst, held_rows, config.heldout_copies, s + 20, hs, None, win)
        if config.eval_randomised:
            out[f"heldout_{inst}_rand"] = real_set(f"heldout_{inst}_rand", inst, held_rows, config.heldout_copies,
                                                   s + 21, hs, DomainRandomisation(), win)
    out["sim_test"] = emu_set("sim_test", "desi", 1000, s + 2, (5.0, 100.0), None)
    return out


def evaluate_heldout(bundle, sets: dict[str, TrainingSet], *, label_names=LABELS) -> dict:
    """Held-out reports (:func:`~catalog_tool.train.library_sets.heldout_report`) of ``bundle`` on
    every ``heldout_*`` set, and the metrics of the simulated test set."""
    from catalog_tool.models.infer import predict

    out = {}
    for key, ts in sets.items():
        if not key.startswith("heldout_"):
            continue
        p = predict(bundle, flux=ts.data.flux, ivar=ts.data.ivar)
        out[key] = heldout_report(pred=p.values, err=p.errors, true=ts.data.labels, label_names=label_names)
    t = sets["sim_test"]
    p = predict(bundle, flux=t.data.flux, ivar=t.data.ivar)
    true = np.stack([t.data.labels[n] for n in label_names], 1)
    out["sim_test"] = metrics_table(pred=p.values, true=true, label_names=label_names, feh_ref=t.data.labels["FEH"])
    out["sim_test_calibration"] = calibration_table(pred=p.values, true=true, err=p.errors, snr=t.data.snr,
                                                    label_names=label_names)
    return out


def run_recipe(work, *, model, config: Sim2RealConfig, grid, settings, extra=(), ensemble: int = 5,
               hidden=(1024, 512, 64), epochs: int = 40, ft_epochs: int = 30, lr: float = 1e-3, ft_lr: float = 3e-4,
               batch_size: int = 128, huber_delta: float | None = None,
               methods=("zero-shot", "adapter", "lora", "full"), provenance: dict | None = None,
               log=lambda msg: None) -> dict:
    """Build the sets, pre-train, fine-tune with each method, pick one, fit the error floor, evaluate.

    Returns a dict with ``final`` (the chosen TrainedEnsemble), ``bundle`` (it saved under
    ``work/final``, float32, with its floor), ``chosen``, ``results`` (per method: validation loss,
    held-out reports, simulated test metrics, seconds), ``floor``, ``sizes`` and ``sets``.
    """
    from catalog_tool.models.bundle import make_provenance
    from catalog_tool.models.infer import predict
    from catalog_tool.train.finetune import finetune
    from catalog_tool.train.loop import TrainConfig, split_indices
    from catalog_tool.train.pretrain import pretrain

    provenance = provenance or make_provenance(command="catalog_tool.train.sim2real.run_recipe", seed=config.seed,
                                               training_data={})
    sets = build_sets(work, model=model, config=config, grid=grid, settings=settings, extra=extra, log=log)
    pre, ft = sets["pretrain"], sets["finetune"]
    # Labels the training set has (real stars alone give no ALPHAFE)
    names = [n for n in LABELS if np.isfinite(pre.data.labels[n]).any()]
    log(f"pre-training {ensemble} members on {len(pre)} LAMOST spectra ({int(pre.real.sum())} real)")
    t0 = time.perf_counter()
    ens = pretrain(flux=pre.data.flux, labels=pre.data.labels, names=names, hidden=tuple(hidden), heads="multi-label",
                   ensemble=ensemble, groups=pre.groups,
                   config=TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, seed=config.seed, patience=8,
                                      huber_delta=huber_delta))
    pre_seconds = time.perf_counter() - t0
    log(f"  done in {pre_seconds:.0f} s")
    base = ens.save(os.path.join(work, "pretrained"), grid=grid, preprocess=settings, provenance=provenance,
                    name="pretrained", overwrite=True)
    # Selection and the error floor use the fine-tuning set's validation stars (the split fine-tuning
    # itself uses): real ones when there are any, since real spectra are what the model is for.
    _, val_all = split_indices(len(ft), val_fraction=0.1, seed=config.seed, groups=ft.groups)
    val_rows = val_all[ft.real[val_all]] if ft.real[val_all].any() else val_all
    yval = np.stack([ft.data.labels[n] for n in names], 1)[val_rows]
    results, candidates = {}, {}
    for method in methods:
        log(f"fine-tuning: {method} on {len(ft)} DESI spectra ({int(ft.real.sum())} real)")
        t0 = time.perf_counter()
        cand = finetune(base, flux=ft.data.flux, labels={n: ft.data.labels[n] for n in names}, method=method,
                        groups=ft.groups,
                        config=TrainConfig(epochs=ft_epochs, batch_size=64, lr=ft_lr, seed=config.seed, patience=6,
                                           huber_delta=huber_delta))
        bundle = cand.save(os.path.join(work, f"ft-{method}"), grid=grid, preprocess=settings, provenance=provenance,
                           name=f"candidate-{method}", overwrite=True)
        vp = predict(bundle, flux=ft.data.flux[val_rows], ivar=ft.data.ivar[val_rows], noise="none").values
        val = float(np.nanmean(((vp - yval) / base.stds) ** 2))
        val_scatter = {n: robust_scatter(vp[:, j] - yval[:, j]) for j, n in enumerate(names)}
        results[method] = {"val_loss": val, "val_scatter": val_scatter, "seconds": round(time.perf_counter() - t0, 1),
                           **evaluate_heldout(bundle, sets, label_names=names)}
        candidates[method] = cand
        feh = next(r for r in results[method]["heldout_desi"] if r["label"] == "FEH" and r["subset"] == "all")
        log(f"  validation: loss {val:.4f}, FEH {val_scatter['FEH']:.3f}, TEFF {val_scatter['TEFF']:.0f}, "
            f"LOGG {val_scatter['LOGG']:.3f}; held-out DESI FEH {feh['scatter']:.3f} ({results[method]['seconds']:.0f} s)")
    chosen = min(results, key=lambda m: results[m]["val_loss"])
    log(f"chosen method: {chosen}")
    final = candidates[chosen]
    staged = final.save(os.path.join(work, "staged"), grid=grid, preprocess=settings, provenance=provenance,
                        name="staged", overwrite=True)
    # The floor of each label on the real validation stars; a label they lack (ALPHAFE: the
    # library gives none) on every validation star that has it (the emulated ones).
    vp = predict(staged, flux=ft.data.flux[val_all], ivar=ft.data.ivar[val_all])
    yall = np.stack([ft.data.labels[n] for n in names], 1)[val_all]
    real_val = ft.real[val_all]
    floor, where = {}, {}
    for j, n in enumerate(names):
        rows = real_val & np.isfinite(yall[:, j])
        if rows.sum() < 20:
            rows = np.isfinite(yall[:, j])
        floor[n] = fit_error_floor(pred=vp.values[rows, j], true=yall[rows, j], err=vp.errors[rows, j])
        kind = "real" if real_val[rows].all() else "emulated" if not real_val[rows].any() else "real and emulated"
        where[n] = f"{int(rows.sum())} {kind} spectra of {len(np.unique(ft.groups[val_all][rows]))} stars"
    log(f"error floors: {floor}")
    fitted_on = ("fine-tuning validation stars not used for training (unit robust scatter of the pulls): "
                 + "; ".join(f"{n} on {w}" for n, w in where.items()))
    extra = {"uncertainty": {"floor": floor, "fitted_on": fitted_on}}
    bundle = final.save(os.path.join(work, "final"), grid=grid, preprocess=settings, provenance=provenance,
                        name="final", overwrite=True, extra=extra)
    final_eval = evaluate_heldout(bundle, sets, label_names=names)
    return {"final": final, "bundle": bundle, "chosen": chosen, "results": results, "floor": floor,
            "floor_fitted_on": fitted_on, "final_eval": final_eval, "pretrain_seconds": round(pre_seconds, 1),
            "sizes": {k: {"spectra": len(v), "real": int(v.real.sum()), "stars": int(len(np.unique(v.groups))),
                          "real_stars": int(len(np.unique(v.star_id[v.real])))} for k, v in sets.items()},
            "sets": sets, "extra": extra}
