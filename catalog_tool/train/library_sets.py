"""Training and evaluation sets made of real stellar-library spectra rendered as survey files.

A real spectrum (MILES) rendered through the DESI or LAMOST instrument model -- radial velocity,
resolution, flux calibration, sky, noise, masks, and optionally the perturbations of
:mod:`catalog_tool.sim.randomise` -- is written in the survey's real file format by the
simulators, read back by the readers and preprocessed exactly as ``stxcat annotate`` does. Each
library star can be rendered several times (``copies``: other velocities, noise, perturbations),
and every row of a set remembers which library star it is (``star_id``), so that training,
validation and calibration splits can keep all copies of a star on one side
(:func:`catalog_tool.train.loop.split_indices` with ``groups``).

:func:`library_set` makes one such set; :func:`heldout_report` predicts a set with a bundle and
gives the held-out metrics the model card reports (robust scatter and bias of each label, split at
[Fe/H] = -1 and at logg = 3.5, and the z-score spread of the uncertainties).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import fitsio
import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.train.data import LabelledSet, load_labelled
from catalog_tool.train.evaluate import FEH_SPLIT, regression_metrics, robust_scatter

__all__ = ["LibrarySet", "rendered_set", "library_set", "heldout_report", "LOGG_SPLIT", "INSTRUMENTS"]

#: The logg boundary between giants and dwarfs in the held-out report.
LOGG_SPLIT = 3.5
INSTRUMENTS = ("desi", "lamost")


@dataclass
class LibrarySet:
    """A preprocessed set of rendered library stars and, row by row, which star each one is."""

    data: LabelledSet
    star_id: np.ndarray      # (N,) library id of each row (MILES: the NNNN of mNNNNV)
    truth: str               # the simulation's truth table
    instrument: str
    failures: list

    def __len__(self) -> int:
        return len(self.data)


def rendered_set(work, *, instrument: str, labels: dict, names, grid, settings, seed: int, model=None,
                 snr_range=(30.0, 30.0), snr_window=None, randomise=None) -> tuple[LabelledSet, np.ndarray, str, list]:
    """Render the stars of a label table as a DESI release or LAMOST files, and load them preprocessed.

    Returns the set, each row's ``LABEL_ROW`` (its row in ``labels``), the truth table's path and
    the files that could not be read. ``model``: a spectral model (default the bundled emulator;
    a :class:`~catalog_tool.sim.library.LibraryModel` renders real spectra).
    """
    from catalog_tool.sim.desi import simulate_desi
    from catalog_tool.sim.lamost import simulate_lamost

    if instrument not in INSTRUMENTS:
        raise ConfigError(f"instrument must be one of {', '.join(INSTRUMENTS)}, not {instrument!r}")
    n = len(labels["TEFF"])
    if instrument == "desi":
        res = simulate_desi(work, pixels=max(1, n // 250), seed=seed, labels=labels, resolution=False,
                            snr_range=snr_range, program="bright", overwrite=True, model=model,
                            randomise=randomise, snr_window=snr_window)
        inputs = [work]
    else:
        res = simulate_lamost(work, seed=seed, labels=labels, snr_range=snr_range, overwrite=True, model=model,
                              randomise=randomise, snr_window=snr_window)
        inputs = [os.path.join(work, "spectra")]
    data, failures = load_labelled(inputs, labels_path=res.truth, names=list(names), grid=grid, settings=settings)
    truth = fitsio.read(res.truth, columns=["TARGETID", "LABEL_ROW"])
    order = np.argsort(truth["TARGETID"])
    pos = order[np.searchsorted(truth["TARGETID"][order], data.targetid)]
    label_row = np.asarray(truth["LABEL_ROW"][pos], np.int64)
    if np.any(label_row < 0):
        raise RuntimeError("a rendered star lost its LABEL_ROW")
    return data, label_row, res.truth, failures


def library_set(work, *, model, rows, instrument: str, names, grid, settings, seed: int, copies: int = 1,
                snr_range=(30.0, 30.0), snr_window=None, randomise=None, alpha_known: bool = False,
                log=lambda msg: None) -> LibrarySet:
    """Render library ``rows`` (``copies`` times each) as a DESI release or LAMOST files and load them.

    Parameters
    ----------
    work : path
        Folder the simulation is written to (replaced).
    model : LibraryModel
        The library, as a spectral model (:class:`catalog_tool.sim.library.LibraryModel`).
    rows : array of int
        Library rows to render (rows of ``model.library``).
    instrument : {"desi", "lamost"}
    names : list of str
        Label columns of the set (FEH, ALPHAFE, TEFF, LOGG, ...).
    grid, settings : ModelGrid, PreprocessSettings
    seed : int
    copies : int
        Renderings per star (each its own radial velocity, S/N draw, noise and perturbations).
    snr_range : (float, float)
        S/N per pixel, log-uniform (``(30, 30)``: all at 30).
    snr_window : (float, float), optional
        Wavelengths (A) over which the S/N is set (default: the simulator's reference band).
    randomise : DomainRandomisation, optional
        Domain randomisation (:mod:`catalog_tool.sim.randomise`); ``None``: the base simulator.
    alpha_known : bool
        Keep ALPHAFE as a label. The library does not give [alpha/Fe]: by default the column is NaN,
        so training leaves it out for these stars.
    """
    if copies < 1:
        raise ConfigError(f"copies must be >= 1, got {copies}")
    model = model.take(np.repeat(np.asarray(rows, dtype=np.int64), copies))
    log(f"rendering {len(model)} {instrument.upper()} spectra of {len(model) // copies} library stars")
    data, label_row, truth, failures = rendered_set(
        work, instrument=instrument, labels=model.label_table(), names=names, grid=grid, settings=settings,
        seed=seed, model=model, snr_range=snr_range, snr_window=snr_window, randomise=randomise)
    if not alpha_known and "ALPHAFE" in data.labels:
        data.labels["ALPHAFE"] = np.full(len(data), np.nan)
    return LibrarySet(data=data, star_id=np.asarray(model.ids[label_row], np.int64), truth=truth,
                      instrument=instrument, failures=failures)


def _subsets(feh: np.ndarray, logg: np.ndarray) -> list[tuple[str, np.ndarray]]:
    return [("all", np.ones(feh.size, bool)),
            (f"[Fe/H] < {FEH_SPLIT:g}", feh < FEH_SPLIT), (f"[Fe/H] >= {FEH_SPLIT:g}", feh >= FEH_SPLIT),
            (f"logg < {LOGG_SPLIT:g}", logg < LOGG_SPLIT), (f"logg >= {LOGG_SPLIT:g}", logg >= LOGG_SPLIT)]


def heldout_report(*, pred: np.ndarray, err: np.ndarray, true: dict, label_names: list[str]) -> list[dict]:
    """Robust scatter, bias and z-score spread per label and subset of a held-out set.

    Parameters
    ----------
    pred, err : ndarray (N, L)
        Predicted values and uncertainties, columns in ``label_names`` order.
    true : dict name -> (N,)
        Reference labels (must include FEH and LOGG for the splits); a label absent or NaN is skipped.

    Returns
    -------
    list of dict
        ``label``, ``subset``, ``n``, ``bias``, ``scatter`` (1.4826 MAD), ``z_scatter``
        (1.4826 MAD of residual / error), ``median_err``.
    """
    feh, logg = np.asarray(true["FEH"], float), np.asarray(true["LOGG"], float)
    rows = []
    for j, name in enumerate(label_names):
        if name not in true or not np.isfinite(true[name]).any():
            continue
        ref = np.asarray(true[name], float)
        for subset, sel in _subsets(feh, logg):
            m = regression_metrics(pred=pred[sel, j], true=ref[sel])
            z = (pred[sel, j] - ref[sel]) / err[sel, j]
            rows.append({"label": name, "subset": subset, "n": m["n"], "bias": m["bias"], "scatter": m["scatter"],
                         "z_scatter": robust_scatter(z),
                         "median_err": float(np.nanmedian(err[sel, j])) if m["n"] else float("nan")})
    return rows
