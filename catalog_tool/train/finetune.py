"""Fine-tuning a pre-trained bundle's ensemble on a (small) labelled set from another instrument.

Methods (see :mod:`catalog_tool.models.adapters` and docs/models.md): ``zero-shot`` (copy,
nothing trained), ``adapter`` (frozen network + zero-initialised residual head on its 64-d
features), ``lora`` (rank-r updates on every Linear; only A and B train; BatchNorm statistics
frozen), ``full`` (every weight; ``config.freeze_bn`` keeps the BatchNorm statistics). The labels
keep the pre-trained scaling, so the networks' outputs mean the same thing before and after; the
training-domain limits widen to cover the fine-tuning labels.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.models.adapters import METHODS, adapt_member, finetune_spec
from catalog_tool.models.bundle import Bundle, LabelSpec
from catalog_tool.models.mlp import MLPConfig
from catalog_tool.train.loop import TrainConfig, TrainLog
from catalog_tool.train.pretrain import TrainedEnsemble, fit_members, label_matrix

__all__ = ["finetune", "METHODS"]


def check_inputs(bundle: Bundle, *, flux, labels: dict) -> None:
    """Refuse spectra of the wrong width or labels the bundle does not predict (ConfigError)."""
    if np.shape(flux)[1:] != (bundle.n_in,):
        raise ConfigError(f"bundle {bundle.name} expects spectra of {bundle.n_in} pixels, got shape {np.shape(flux)}")
    unknown = sorted(set(labels) - set(bundle.label_names))
    if unknown:
        raise ConfigError(f"labels {unknown} are not outputs of bundle {bundle.name} "
                          f"(it predicts {bundle.label_names})")


def finetune(bundle: Bundle, *, flux: np.ndarray, labels: dict[str, np.ndarray], method: str,
             config: TrainConfig = TrainConfig(), rank: int = 8, alpha: float = 16.0, head_hidden: int = 32,
             log_path=None, groups: np.ndarray | None = None) -> TrainedEnsemble:
    """Fine-tune every member of ``bundle`` with ``method``; the bundle itself is not modified.

    Parameters
    ----------
    bundle : Bundle
        A loaded pre-trained (or zero-shot / LoRA-merged / fully fine-tuned) bundle. A bundle that
        already carries adapter heads is refused (adapt its parent instead).
    flux : ndarray (N, npix)
        Normalised flux on the bundle's grid.
    labels : dict name -> ndarray (N,)
        Reference labels for (some of) the bundle's labels; NaN where unknown. A label with too
        few stars keeps its starting weights (recorded in the summary).
    method : {"zero-shot", "adapter", "lora", "full"}
    config : TrainConfig
        ``freeze_bn`` applies to ``full``; adapter and LoRA always keep the statistics frozen.
    rank, alpha : LoRA rank and scale (``lora``).
    head_hidden : hidden width of the residual head (``adapter``).
    log_path : path, optional
        JSON-lines training log (appended).
    groups : ndarray (N,), optional
        Rows of one group (renderings of one real star) stay together in the train/validation split.

    Returns
    -------
    TrainedEnsemble
        New members (the bundle's are deep-copied), the bundle's label scaling, and the method's
        structure description for the new bundle's manifest.
    """
    if bundle.manifest["architecture"].get("kind") == "embedding-mlp":
        # Encoder + heads: LoRA also on the encoder's attention (train.encoder, docs/encoder.md).
        if groups is not None:
            raise ConfigError("grouped train/validation splits are not supported for embedding bundles")
        from catalog_tool.train.encoder import finetune_embedding

        return finetune_embedding(bundle, flux=flux, labels=labels, method=method, config=config, rank=rank,
                                  alpha=alpha, head_hidden=head_hidden, log_path=log_path)
    spec = finetune_spec(method, rank=rank, alpha=alpha, head_hidden=head_hidden)
    if bundle.method == "adapter" and method != "zero-shot":
        raise ConfigError(f"bundle {bundle.name} already carries adapter heads; fine-tune its parent bundle instead")
    check_inputs(bundle, flux=flux, labels=labels)
    names = bundle.label_names
    arch = bundle.manifest["architecture"]
    mlp = MLPConfig.from_dict(arch["mlp"])
    y = label_matrix(labels, names, np.shape(flux)[0])
    specs = []
    for j, lab in enumerate(bundle.labels):
        col = y[:, j][np.isfinite(y[:, j])]
        lo, hi = lab.domain
        if col.size:
            lo, hi = min(lo, float(col.min())), max(hi, float(col.max()))
        specs.append(LabelSpec(name=lab.name, unit=lab.unit, mean=lab.mean, std=lab.std, domain=(lo, hi)))
    if method == "zero-shot":
        # Copies as they are; an adapter bundle keeps its heads (LoRA bundles load merged, i.e. plain).
        members = [copy.deepcopy(m) for m in bundle.members]
        if bundle.method == "adapter":
            spec = dict(arch["finetune"])
    else:
        members = [adapt_member(copy.deepcopy(m), spec=spec) for m in bundle.members]
    parent = {"name": bundle.name, "sha256": bundle.sha256, "method": bundle.method}
    if method == "zero-shot":
        summary = {"stage": "finetune", "method": method, "parent": parent, "units": []}
    else:
        # Adapter heads and LoRA factors train on top of fixed statistics: the frozen network must
        # give exactly its zero-shot features.
        cfg = config if method == "full" else dataclasses.replace(config, freeze_bn=True)
        y_scaled = ((y - bundle.means) / bundle.stds).astype(np.float32)
        summary = fit_members(members, x=flux, y_scaled=y_scaled, names=names, config=cfg,
                              log=TrainLog(log_path), stage="finetune", groups=groups)
        summary.update(method=method, parent=parent, spec=spec)
    for m in members:
        m.eval()
    return TrainedEnsemble(members=members, labels=specs, config=mlp, heads=arch["heads"], finetune=spec,
                           summary=summary)
