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

import numpy as np
import torch

from catalog_tool.errors import ConfigError
from catalog_tool.models.adapters import METHODS, adapt_member, finetune_spec, method_of
from catalog_tool.models.bundle import Bundle
from catalog_tool.models.mlp import MLPConfig
from catalog_tool.train.encoder import finetune_embedding
from catalog_tool.train.loop import TrainConfig, TrainLog
from catalog_tool.train.pretrain import TrainedEnsemble, fit_members, label_matrix
from catalog_tool.train.tuning import check_inputs, method_config, widened_labels

__all__ = ["finetune", "METHODS"]


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
    method : str
        A name of :data:`~catalog_tool.models.adapters.METHODS` (``zero-shot``, ``adapter``,
        ``lora``, ``full``).
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
        return finetune_embedding(bundle, flux=flux, labels=labels, method=method, config=config, rank=rank,
                                  alpha=alpha, head_hidden=head_hidden, log_path=log_path)
    how = method_of(method)
    spec = finetune_spec(method, rank=rank, alpha=alpha, head_hidden=head_hidden)
    parent_how = method_of(bundle.method)
    if not parent_how.plain_when_loaded and how.trains:
        raise ConfigError(f"bundle {bundle.name} already carries {bundle.method} structures; "
                          "fine-tune its parent bundle instead")
    check_inputs(bundle, flux=flux, labels=labels)
    names = bundle.label_names
    arch = bundle.manifest["architecture"]
    mlp = MLPConfig.from_dict(arch["mlp"])
    y = label_matrix(labels, names, np.shape(flux)[0])
    specs = widened_labels(bundle, y)
    parent = {"name": bundle.name, "sha256": bundle.sha256, "method": bundle.method}
    if not how.trains:
        # Copies as they are; a bundle whose structure stays after loading (adapter heads) keeps it
        # (LoRA bundles load merged, i.e. plain).
        members = [copy.deepcopy(m) for m in bundle.members]
        if not parent_how.plain_when_loaded:
            spec = dict(arch["finetune"])
        summary = {"stage": "finetune", "method": method, "parent": parent, "units": []}
    else:
        members = []
        for k, m in enumerate(bundle.members):
            # New parameters (LoRA factors, adapter heads) start from member k's own seed, whatever
            # ran before in the process; torch's global random state is left as it was.
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(config.seed + k)
                members.append(adapt_member(copy.deepcopy(m), spec=spec))
        y_scaled = ((y - bundle.means) / bundle.stds).astype(np.float32)
        summary = fit_members(members, x=flux, y_scaled=y_scaled, names=names, config=method_config(how, config),
                              log=TrainLog(log_path), stage="finetune", groups=groups)
        summary.update(method=method, parent=parent, spec=spec)
    for m in members:
        m.eval()
    return TrainedEnsemble(members=members, labels=specs, config=mlp, heads=arch["heads"], finetune=spec,
                           summary=summary)
