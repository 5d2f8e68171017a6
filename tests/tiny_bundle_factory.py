"""A tiny multi-label MLP bundle for tests that need *a* model (plumbing quality, about two seconds).

Imported by the pipeline, report and examples tests (a plain module on the test path, not a conftest).
"""

from __future__ import annotations

import os

import numpy as np

#: Label order of the tiny bundles (the default model's order).
TINY_LABELS = ("FEH", "ALPHAFE", "TEFF", "LOGG")


def make_tiny_bundle(path, *, seed: int, command: str, n: int = 300, hidden: tuple = (32, 16),
                     ensemble: int = 2, epochs: int = 2) -> str:
    """Train a seeded toy ensemble and save it as a bundle at ``path`` (default grid and preprocessing).

    Parameters
    ----------
    path : path
        Bundle folder to write.
    seed : int
        Seeds the toy labels and spectra; different seeds give different bundles.
    command : str
        Recorded in the bundle's provenance (names the test suite that built it).
    n, hidden, ensemble, epochs
        Training-set size, MLP hidden widths, ensemble members and epochs.

    Returns
    -------
    str
        ``path``.
    """
    from catalog_tool.models.bundle import make_provenance, save_bundle
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.loop import TrainConfig
    from catalog_tool.train.pretrain import pretrain
    from catalog_tool.train.synthetic import toy_labels, toy_spectra

    rng = np.random.default_rng(seed)
    labels = toy_labels(n, rng=rng)
    flux, _ = toy_spectra(labels=labels, rng=rng)
    ens = pretrain(flux=flux, labels={k: labels[k] for k in TINY_LABELS}, hidden=hidden, heads="multi-label",
                   ensemble=ensemble, config=TrainConfig(epochs=epochs))
    save_bundle(path, members=ens.members, config=ens.config, heads=ens.heads, labels=ens.labels,
                grid=ModelGrid(), preprocess=PreprocessSettings(),
                provenance=make_provenance(command=command, seed=seed))
    return os.fspath(path)
