"""Pre-training an ensemble of spectrum MLPs on labelled spectra (arrays in, networks out).

The command ``stxcat pretrain`` reads, joins and preprocesses; this module starts from the
normalised flux array and a dict of label arrays. Labels are scaled by their training-set mean and
standard deviation; the training-domain limits are their training-set minimum and maximum. With
``heads="per-label"`` (the paper's choice) every label gets its own network, trained on the stars
that have that label; ``heads="multi-label"`` trains one network with L outputs on a masked loss.
Ensemble member m is initialised and shuffled with seed ``config.seed + m``; all members share the
seeded 9:1 train/validation split.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from catalog_tool.errors import ConfigError
from catalog_tool.models.adapters import finetune_spec
from catalog_tool.models.bundle import Bundle, LabelSpec, save_bundle
from catalog_tool.models.mlp import MLPConfig, PerLabelStack, build_member
from catalog_tool.train.loop import TrainConfig, TrainLog, split_indices, train_network

__all__ = ["TrainedEnsemble", "label_matrix", "label_specs", "training_units", "pretrain", "DEFAULT_UNITS"]

#: Units of the labels stxcat knows; others default to "".
DEFAULT_UNITS = {"FEH": "dex", "ALPHAFE": "dex", "TEFF": "K", "LOGG": "dex", "MGFE": "dex", "CFE": "dex"}


@dataclass
class TrainedEnsemble:
    """Members plus everything :func:`catalog_tool.models.bundle.save_bundle` needs besides grid and provenance."""

    members: list[nn.Module]
    labels: list[LabelSpec]
    config: MLPConfig
    heads: str
    finetune: dict = field(default_factory=lambda: finetune_spec("zero-shot"))
    summary: dict = field(default_factory=dict)

    def save(self, path, *, grid, preprocess, provenance: dict, **kwargs) -> Bundle:
        """Write as a bundle (see :func:`~catalog_tool.models.bundle.save_bundle` for ``kwargs``)."""
        extra = dict(kwargs.pop("extra", None) or {})
        extra.setdefault("training", self.summary)
        return save_bundle(path, members=self.members, config=self.config, heads=self.heads, labels=self.labels,
                           grid=grid, preprocess=preprocess, provenance=provenance, finetune=self.finetune,
                           extra=extra, **kwargs)


def label_matrix(labels: dict[str, np.ndarray], names: list[str], n: int) -> np.ndarray:
    """(N, L) float64 matrix of the named labels; a name absent from ``labels`` gives a NaN column."""
    out = np.full((n, len(names)), np.nan)
    for j, name in enumerate(names):
        if name in labels:
            col = np.asarray(labels[name], dtype=np.float64)
            if col.shape != (n,):
                raise ConfigError(f"label {name} has shape {col.shape}, expected ({n},)")
            out[:, j] = col
    return out


def label_specs(y: np.ndarray, *, names: list[str], units: dict[str, str] | None = None) -> list[LabelSpec]:
    """Scaling (mean, std) and domain (min, max) of each label column over its finite values."""
    units = {**DEFAULT_UNITS, **(units or {})}
    specs = []
    for j, name in enumerate(names):
        col = y[:, j][np.isfinite(y[:, j])]
        if col.size < 2:
            raise ConfigError(f"label {name} has {col.size} finite value(s); at least 2 are needed")
        std = float(col.std())
        if not std > 0:
            raise ConfigError(f"label {name} is constant ({col[0]}); it cannot be learned or scaled")
        specs.append(LabelSpec(name=name, unit=units.get(name, ""), mean=float(col.mean()), std=std,
                               domain=(float(col.min()), float(col.max()))))
    return specs


def training_units(member: nn.Module, n_labels: int) -> list[tuple[nn.Module, list[int]]]:
    """(module, label columns) trained together: each per-label network alone, or the whole member."""
    if isinstance(member, PerLabelStack):
        return [(net, [j]) for j, net in enumerate(member.nets)]
    return [(member, list(range(n_labels)))]


def fit_members(members: list[nn.Module], *, x: np.ndarray, y_scaled: np.ndarray, names: list[str],
                config: TrainConfig, log: TrainLog, stage: str, groups: np.ndarray | None = None) -> dict:
    """Train every member's units in place on the seeded split (by ``groups`` when given); return a
    JSON-able summary."""
    n_labels = y_scaled.shape[1]
    train_idx, val_idx = split_indices(len(x), val_fraction=config.val_fraction, seed=config.seed, groups=groups)
    summary = {"stage": stage, "n_spectra": int(len(x)), "n_train": int(len(train_idx)), "n_val": int(len(val_idx)),
               "config": config.to_dict(), "units": []}
    t0 = time.perf_counter()
    for m, member in enumerate(members):
        for module, cols in training_units(member, n_labels):
            known = np.isfinite(y_scaled[:, cols]).any(axis=1)
            tr, va = train_idx[known[train_idx]], val_idx[known[val_idx]]
            label = "+".join(names[c] for c in cols)
            if not any(p.requires_grad for p in module.parameters()):
                continue
            if len(tr) < 2 or len(va) < 1:
                # Not silent: recorded, and the unit keeps its starting (e.g. zero-shot) weights.
                summary["units"].append({"member": m, "labels": label, "trained": False,
                                         "reason": f"{len(tr)} training / {len(va)} validation stars with this label"})
                continue
            res = train_network(module, x=x, y=y_scaled[:, cols], train_idx=tr, val_idx=va, config=config,
                                seed=config.seed + m, log=log, tag={"stage": stage, "member": m, "labels": label})
            summary["units"].append({"member": m, "labels": label, "trained": True, "n_train": int(len(tr)),
                                     "n_val": int(len(va)), **res})
    summary["seconds"] = round(time.perf_counter() - t0, 1)
    return summary


def pretrain(*, flux: np.ndarray, labels: dict[str, np.ndarray], names: list[str] | None = None,
             units: dict[str, str] | None = None, hidden: tuple[int, ...] = (1024, 512, 64), dropout: float = 0.1,
             batchnorm: bool = True, heads: str = "per-label", ensemble: int = 5,
             config: TrainConfig = TrainConfig(), log_path=None, groups: np.ndarray | None = None) -> TrainedEnsemble:
    """Pre-train an ensemble on normalised spectra.

    Parameters
    ----------
    flux : ndarray (N, npix)
        Normalised flux on the model grid (a memmap is fine); npix sets the network input.
    labels : dict name -> ndarray (N,)
        Reference labels; NaN where a star lacks one.
    names : list of str, optional
        Labels to learn, in output order (default: the keys of ``labels``).
    units : dict, optional
        Units per label (defaults: dex for abundances and LOGG, K for TEFF).
    hidden, dropout, batchnorm : see :class:`~catalog_tool.models.mlp.MLPConfig`
    heads : {"per-label", "multi-label"}
    ensemble : int
        Members (different seeds).
    config : TrainConfig
    log_path : path, optional
        JSON-lines training log (appended).
    groups : ndarray (N,), optional
        Rows of one group (renderings of one real star) stay together in the train/validation split.

    Returns
    -------
    TrainedEnsemble
    """
    if ensemble < 1:
        raise ConfigError(f"ensemble size must be >= 1, got {ensemble}")
    flux_shape = np.shape(flux)
    if len(flux_shape) != 2:
        raise ConfigError(f"flux must be 2-D (N, npix), got shape {flux_shape}")
    names = list(names or labels)
    y = label_matrix(labels, names, flux_shape[0])
    train_idx, _ = split_indices(flux_shape[0], val_fraction=config.val_fraction, seed=config.seed, groups=groups)
    specs = label_specs(y[train_idx], names=names, units=units)  # scaling from training rows only
    y_scaled = ((y - [s.mean for s in specs]) / [s.std for s in specs]).astype(np.float32)
    mlp = MLPConfig(n_in=flux_shape[1], n_out=len(names) if heads == "multi-label" else 1, hidden=tuple(hidden), dropout=dropout, batchnorm=batchnorm)
    members = []
    for m in range(ensemble):
        torch.manual_seed(config.seed + m)
        members.append(build_member(config=mlp, n_labels=len(names), heads=heads))
    summary = fit_members(members, x=flux, y_scaled=y_scaled, names=names, config=config,
                          log=TrainLog(log_path), stage="pretrain", groups=groups)
    return TrainedEnsemble(members=members, labels=specs, config=mlp, heads=heads, summary=summary)
