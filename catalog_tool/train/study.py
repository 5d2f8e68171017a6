"""The paper's study on simulated releases: shared steps of the examples and the default-model script.

``simulate_study_sets``
    Simulated LAMOST (pre-training) and DESI (fine-tuning, held-out test) releases, read and
    preprocessed into :class:`~catalog_tool.train.data.LabelledSet` s; optionally the LAMOST stars
    rendered through DESI too (a paired view for contrastive encoder pre-training).
``finetune_methods``
    Fine-tune one pre-trained bundle with each method, save each result and predict the test set.
``inference_seconds``
    Wall seconds per spectrum of :func:`~catalog_tool.models.infer.predict` on a bundle.

Used by ``examples/finetune_study.py``, ``examples/compare_embeddings.py`` and
``scripts/train_default_model.py``. File I/O happens only under the ``work`` folder they are given.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from catalog_tool.train.data import LabelledSet, load_labelled

__all__ = ["StudySets", "MethodResult", "simulate_study_sets", "paired_rows", "finetune_methods",
           "inference_seconds"]


@dataclass
class StudySets:
    """The labelled sets of a study and the truth tables they came from.

    ``sets`` has ``lamost``, ``desi_ft``, ``desi_test`` and, when simulated, ``desi_pair`` (the
    LAMOST stars rendered through DESI); ``truth`` the truth table of each; ``failures`` the files
    that could not be read, per set.
    """

    sets: dict[str, LabelledSet]
    truth: dict[str, str]
    failures: dict[str, list] = field(default_factory=dict)


def simulate_study_sets(work, *, n_lamost: int, n_desi: int, n_test: int, names: list[str], seed: int,
                        grid, settings, paired: bool = False, lamost_overwrite: bool = True,
                        log: Callable[[str], None] = lambda msg: None) -> StudySets:
    """Simulate and load the study's releases under ``work`` (seeded).

    Parameters
    ----------
    work : path
        Folder for the releases (``lamost/``, ``desi_ft/``, ``desi_test/``, ``desi_pair/``).
    n_lamost, n_desi, n_test : int
        LAMOST files (stars, galaxies and QSOs drawn unless ``paired``), DESI fine-tuning stars
        and held-out DESI test stars (other seeds: other stars).
    names : list of str
        Label columns to load.
    seed : int
        LAMOST uses ``seed``, the DESI sets ``seed + 1`` and ``seed + 2``, the paired DESI view
        ``seed + 3``.
    grid, settings : ModelGrid, PreprocessSettings
    paired : bool
        Draw the LAMOST stars' labels here (``sample_labels``, seed ``seed``), render them through
        LAMOST *and* DESI (``desi_pair``); match rows with :func:`paired_rows`.
    lamost_overwrite : bool
        Passed to ``simulate_lamost`` (replace an earlier simulation in ``work``).
    log : callable, optional
        Progress messages.
    """
    from catalog_tool.sim.desi import simulate_desi
    from catalog_tool.sim.lamost import simulate_lamost
    from catalog_tool.sim.population import sample_labels

    def desi(key, labels, s):
        log(f"simulating {len(labels['FEH'])} DESI stars ({key})")
        return simulate_desi(os.path.join(work, key), pixels=max(1, len(labels["FEH"]) // 250), seed=s,
                             labels=labels, resolution=False, snr_range=(5, 100), program="bright", overwrite=True)

    log(f"simulating {n_lamost} LAMOST spectra")
    lam_labels = sample_labels(n_lamost, rng=np.random.default_rng(seed)) if paired else None
    r = simulate_lamost(os.path.join(work, "lamost"), n=n_lamost, seed=seed, snr_range=(10, 150), labels=lam_labels,
                        overwrite=lamost_overwrite)
    where = {"lamost": (os.path.join(work, "lamost", "spectra"), r.truth)}
    for key, n, s in (("desi_ft", n_desi, seed + 1), ("desi_test", n_test, seed + 2)):
        where[key] = (os.path.join(work, key), desi(key, sample_labels(n, rng=np.random.default_rng(s)), s).truth)
    if paired:
        where["desi_pair"] = (os.path.join(work, "desi_pair"), desi("desi_pair", lam_labels, seed + 3).truth)
    out = StudySets(sets={}, truth={})
    for key, (inp, truth) in where.items():
        log(f"preprocessing {key}")
        out.sets[key], out.failures[key] = load_labelled([inp], labels_path=truth, names=names, grid=grid,
                                                         settings=settings)
        out.truth[key] = truth
        if out.failures[key]:
            log(f"  {len(out.failures[key])} files failed, e.g. {out.failures[key][0]}")
        log(f"  {len(out.sets[key])} labelled spectra")
    return out


def paired_rows(study: StudySets, a: str = "lamost", b: str = "desi_pair") -> tuple[np.ndarray, np.ndarray]:
    """Rows (ia, ib) of sets ``a`` and ``b`` that are the same simulated star (truth LABEL_ROW)."""
    from catalog_tool.train.encoder_commands import pair_by_truth

    return pair_by_truth(meta_a={"TARGETID": study.sets[a].targetid}, meta_b={"TARGETID": study.sets[b].targetid},
                         truth_a=study.truth[a], truth_b=study.truth[b])


@dataclass
class MethodResult:
    """One fine-tuning method's outcome: the trained ensemble, its saved bundle, test predictions."""

    method: str
    trained: object
    bundle: object
    pred: np.ndarray
    seconds: float


def finetune_methods(base, *, ft: LabelledSet, test: LabelledSet, methods, config_for: Callable, out_dir,
                     provenance: dict, grid=None, settings=None, name: str | None = None,
                     log: Callable[[str], None] = lambda msg: None) -> list[MethodResult]:
    """Fine-tune ``base`` with each method, save each bundle, and predict ``test`` (no noise propagation).

    Parameters
    ----------
    base : Bundle
        The pre-trained bundle (spectrum MLP or embedding MLP: :func:`~catalog_tool.train.finetune.finetune`
        dispatches).
    ft, test : LabelledSet
        Fine-tuning set (its labels for the bundle's labels) and held-out test set.
    methods : sequence of str
        ``zero-shot``, ``adapter``, ``lora``, ``full``.
    config_for : callable(method) -> TrainConfig
        Training settings per method.
    out_dir : path
        Bundles are written to ``out_dir/ft-METHOD`` (replacing earlier ones); logs beside them.
    provenance, grid, settings, name
        Passed to the trained ensemble's ``save`` (``name``: bundle name prefix).
    """
    from catalog_tool.models.infer import predict
    from catalog_tool.train.finetune import finetune

    labels = {n: ft.labels[n] for n in base.label_names if n in ft.labels}
    results = []
    for method in methods:
        t0 = time.perf_counter()
        trained = finetune(base, flux=ft.flux, labels=labels, method=method, config=config_for(method),
                           log_path=os.path.join(out_dir, f"log-{method}.jsonl"))
        kw = {"name": f"{name}-{method}"} if name else {}
        bundle = trained.save(os.path.join(out_dir, f"ft-{method}"), grid=grid, preprocess=settings,
                              provenance=provenance, overwrite=True, **kw)
        pred = predict(bundle, flux=test.flux, ivar=test.ivar, noise="none").values
        results.append(MethodResult(method=method, trained=trained, bundle=bundle, pred=pred,
                                    seconds=time.perf_counter() - t0))
        log(f"  {method}: {results[-1].seconds:.0f} s")
    return results


def inference_seconds(bundle, *, flux: np.ndarray, ivar: np.ndarray, noise: str = "none", repeats: int = 1,
                      batch_size: int = 256) -> float:
    """Best-of-``repeats`` wall seconds per spectrum of ``predict`` on CPU (after one warm-up batch)."""
    from catalog_tool.models.infer import predict

    predict(bundle, flux=flux[:8], ivar=ivar[:8], noise=noise, batch_size=batch_size)
    best = np.inf
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        predict(bundle, flux=flux, ivar=ivar, noise=noise, batch_size=batch_size)
        best = min(best, time.perf_counter() - t0)
    return best / len(flux)
