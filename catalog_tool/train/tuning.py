"""What fine-tuning shares whatever the bundle's kind: spectrum MLPs (:mod:`catalog_tool.train.finetune`)
and MLPs on a spectral encoder's embeddings (:mod:`catalog_tool.train.encoder`).

The inputs' checks, the fine-tuned labels (the pre-trained scaling kept, the training-domain limits
widened to the new labels) and the training settings a method implies (its
:class:`~catalog_tool.models.adapters.FinetuneMethod` entry).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.models.adapters import FinetuneMethod
from catalog_tool.models.manifest import Bundle, LabelSpec
from catalog_tool.train.loop import TrainConfig

__all__ = ["check_inputs", "widened_labels", "method_config"]


def check_inputs(bundle: Bundle, *, flux, labels: dict) -> None:
    """Refuse spectra of the wrong width or labels the bundle does not predict (ConfigError)."""
    if np.shape(flux)[1:] != (bundle.n_in,):
        raise ConfigError(f"bundle {bundle.name} expects spectra of {bundle.n_in} pixels, got shape {np.shape(flux)}")
    unknown = sorted(set(labels) - set(bundle.label_names))
    if unknown:
        raise ConfigError(f"labels {unknown} are not outputs of bundle {bundle.name} "
                          f"(it predicts {bundle.label_names})")


def widened_labels(bundle: Bundle, y: np.ndarray) -> list[LabelSpec]:
    """The bundle's labels with their scaling kept and their domains widened to cover ``y`` (N, L)."""
    specs = []
    for j, lab in enumerate(bundle.labels):
        col = y[:, j][np.isfinite(y[:, j])]
        lo, hi = lab.domain
        if col.size:
            lo, hi = min(lo, float(col.min())), max(hi, float(col.max()))
        specs.append(LabelSpec(name=lab.name, unit=lab.unit, mean=lab.mean, std=lab.std, domain=(lo, hi)))
    return specs


def method_config(method: FinetuneMethod, config: TrainConfig) -> TrainConfig:
    """``config`` as ``method`` trains with it: adapter heads and LoRA factors train on top of fixed
    BatchNorm statistics (the frozen network must give exactly its zero-shot features); ``full``
    takes ``config.freeze_bn`` as given."""
    return dataclasses.replace(config, freeze_bn=True) if method.frozen_batchnorm else config
