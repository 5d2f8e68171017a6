"""Fine-tuning methods: their registry, and their structures (LoRA on every Linear layer, the
residual-head adapter).

Every method is one :class:`FinetuneMethod` in :data:`REGISTRY`: its name, a line of help, its
hyper-parameters, how it adapts a plain network, what it trains, how a loaded bundle merges it,
and what it does to the encoder of an embedding bundle. The trainers
(:mod:`catalog_tool.train.finetune`, :mod:`catalog_tool.train.encoder`), the bundles and the
command line ask the registry; none names a method. Adding one: its structure and one entry here
(docs/models.md, "Adding a method").

Methods, by name (see docs/models.md):

``zero-shot``
    The pre-trained network unchanged.
``adapter``
    The pre-trained network frozen (evaluation mode: no dropout, BatchNorm statistics fixed). A
    small head ``Linear(64, h) -> ReLU -> Linear(h, n_out)`` reads the frozen network's penultimate
    (last hidden, 64-d) features and its output is *added* to the frozen prediction. The head's last
    layer starts at zero, so training starts exactly at the zero-shot predictions.
``lora``
    Every Linear ``W x + b`` becomes ``W x + b + (alpha / r) B A x`` with ``A`` (r x in) random and
    ``B`` (out x r) zero, so training starts at zero-shot; only ``A`` and ``B`` train. For inference
    ``W + (alpha / r) B A`` is merged into a plain Linear (:func:`merge_lora`).
``full``
    All weights train; optionally the BatchNorm running statistics stay frozen.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from catalog_tool.errors import ConfigError
from catalog_tool.models.mlp import PerLabelStack, SpectrumMLP

__all__ = [
    "FinetuneMethod",
    "REGISTRY",
    "METHODS",
    "method_of",
    "merge_member",
    "LoRALinear",
    "ResidualHeadAdapter",
    "apply_lora",
    "merge_lora",
    "adapt_member",
    "set_batchnorm_eval",
    "finetune_spec",
]


class LoRALinear(nn.Module):
    """A frozen Linear plus a trainable low-rank update ``(alpha / r) B A``.

    Parameters
    ----------
    base : nn.Linear
        The pre-trained layer; its parameters are frozen.
    rank, alpha : int, float
        LoRA rank r and scale alpha (update scaled by alpha / r).
    """

    def __init__(self, base: nn.Linear, *, rank: int, alpha: float):
        super().__init__()
        if rank < 1:
            raise ConfigError(f"LoRA rank must be >= 1, got {rank}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.rank = int(rank)
        self.alpha = float(alpha)
        self.lora_A = nn.Parameter(torch.empty(rank, base.in_features))
        # Same initialisation as the LoRA paper / peft: A random, B zero, so B A = 0 at the start.
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, rank))

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Two thin matmuls (x A^T then B^T) instead of forming B A: cheaper while training.
        return self.base(x) + self.scaling * ((x @ self.lora_A.T) @ self.lora_B.T)

    def merged(self) -> nn.Linear:
        """A plain Linear with weight ``W + (alpha / r) B A`` (same bias)."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.scaling * (self.lora_B @ self.lora_A))
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


class ResidualHeadAdapter(nn.Module):
    """Frozen pre-trained network plus a small residual head on its penultimate features.

    ``forward(x) = base.out(f) + head(f)`` with ``f = base.features(x)``; the head's last Linear is
    zero-initialised, so at the start the output equals the frozen network's.
    """

    def __init__(self, base: SpectrumMLP, *, hidden: int = 32):
        super().__init__()
        if hidden < 1:
            raise ConfigError(f"adapter hidden width must be >= 1, got {hidden}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        width = base.out.in_features
        self.head = nn.Sequential(nn.Linear(width, hidden), nn.ReLU(), nn.Linear(hidden, base.out.out_features))
        nn.init.zeros_(self.head[2].weight)
        nn.init.zeros_(self.head[2].bias)

    def train(self, mode: bool = True):
        # The frozen network stays in evaluation mode (fixed BatchNorm statistics, no dropout):
        # the head learns a correction to exactly the predictions zero-shot would give.
        super().train(mode)
        self.base.eval()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.base.features(x)
        return self.base.out(f) + self.head(f)


def _replace_linears(module: nn.Module, make) -> None:
    for name, child in module.named_children():
        if isinstance(child, nn.Linear):
            setattr(module, name, make(child))
        else:
            _replace_linears(child, make)


def apply_lora(module: nn.Module, *, rank: int = 8, alpha: float = 16.0) -> nn.Module:
    """Freeze ``module`` and wrap every ``nn.Linear`` in it with :class:`LoRALinear` (in place)."""
    for p in module.parameters():
        p.requires_grad_(False)
    _replace_linears(module, lambda lin: LoRALinear(lin, rank=rank, alpha=alpha))
    return module


def merge_lora(module: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` in ``module`` by its merged Linear (in place)."""
    for name, child in module.named_children():
        if isinstance(child, LoRALinear):
            setattr(module, name, child.merged())
        else:
            merge_lora(child)
    return module


def set_batchnorm_eval(module: nn.Module) -> None:
    """Put every BatchNorm layer in evaluation mode (running statistics no longer update)."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def _freeze(member: nn.Module, trainable: bool) -> nn.Module:
    for p in member.parameters():
        p.requires_grad_(trainable)
    return member


def _lora_spec(*, rank, alpha, head_hidden) -> dict:
    if int(rank) < 1 or float(alpha) <= 0:
        raise ConfigError(f"LoRA needs rank >= 1 and alpha > 0, got rank={rank}, alpha={alpha}")
    return {"method": "lora", "rank": int(rank), "alpha": float(alpha)}


def _adapter_spec(*, rank, alpha, head_hidden) -> dict:
    if int(head_hidden) < 1:
        raise ConfigError(f"adapter hidden width must be >= 1, got {head_hidden}")
    return {"method": "adapter", "head_hidden": int(head_hidden)}


@dataclass(frozen=True)
class FinetuneMethod:
    """One fine-tuning method: all that the trainers, the bundles and the command line ask of it.

    Attributes
    ----------
    name : str
        As given to ``stxcat finetune --method`` and stored in the manifest (``finetune.method``).
    summary : str
        One line for ``--help``.
    spec : callable(*, rank, alpha, head_hidden) -> dict
        The manifest's ``finetune`` entry (``{"method": name, ...its hyper-parameters}``), after
        checking the values (:class:`~catalog_tool.errors.ConfigError`).
    adapt : callable(SpectrumMLP, spec) -> nn.Module
        The structure to train from a plain network, same input and output, with exactly the
        method's parameters trainable (modified in place where possible).
    trains : bool
        False for ``zero-shot``: the members are copied, nothing is trained.
    frozen_batchnorm : bool
        The BatchNorm running statistics stay fixed while training (all but ``full``, where
        ``--freeze-bn`` decides).
    merge : callable(nn.Module) -> nn.Module, optional
        Applied to every loaded member: the stored structure made the inference one (LoRA factors
        merged into plain Linear layers).
    plain_when_loaded : bool
        A loaded member is a plain network again (after ``merge``), so a bundle made with this
        method can be fine-tuned further; False for ``adapter`` (its heads stay).
    encoder : {"frozen", "lora", "full"}
        What it does to the encoder of an embedding bundle: ``frozen`` (only the heads train, on
        embeddings computed once), ``lora`` (rank-r LoRA on the attention) or ``full``.
    """

    name: str
    summary: str
    spec: Callable[..., dict]
    adapt: Callable[[nn.Module, dict], nn.Module]
    trains: bool = True
    frozen_batchnorm: bool = True
    merge: Callable[[nn.Module], nn.Module] | None = None
    plain_when_loaded: bool = True
    encoder: str = "frozen"


#: The fine-tuning methods, by name, in the order the command line lists them.
REGISTRY: dict[str, FinetuneMethod] = {m.name: m for m in (
    FinetuneMethod(
        name="zero-shot", summary="unchanged",
        spec=lambda **_: {"method": "zero-shot"}, adapt=lambda member, spec: _freeze(member, False),
        trains=False),
    FinetuneMethod(
        name="adapter", summary="frozen network + residual head on its 64-d features",
        spec=_adapter_spec, adapt=lambda member, spec: ResidualHeadAdapter(member, hidden=spec["head_hidden"]),
        plain_when_loaded=False),
    FinetuneMethod(
        name="lora", summary="low-rank updates of every Linear, merged for inference",
        spec=_lora_spec, adapt=lambda member, spec: apply_lora(member, rank=spec["rank"], alpha=spec["alpha"]),
        merge=merge_lora, encoder="lora"),
    FinetuneMethod(
        name="full", summary="all weights",
        spec=lambda **_: {"method": "full"}, adapt=lambda member, spec: _freeze(member, True),
        frozen_batchnorm=False, encoder="full"),
)}

#: Names of the fine-tuning methods (the registry's keys, for those who only need the names).
METHODS = tuple(REGISTRY)


def method_of(name: str) -> FinetuneMethod:
    """The registered method ``name`` (:class:`~catalog_tool.errors.ConfigError` if unknown)."""
    try:
        return REGISTRY[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown fine-tuning method {name!r}; choose one of {', '.join(REGISTRY)}") from None


def finetune_spec(method: str, *, rank: int = 8, alpha: float = 16.0, head_hidden: int = 32) -> dict:
    """The manifest's description of a fine-tuning method (what :func:`adapt_member` rebuilds)."""
    return method_of(method).spec(rank=rank, alpha=alpha, head_hidden=head_hidden)


def adapt_member(member: nn.Module, *, spec: dict) -> nn.Module:
    """Give an ensemble member the structure of a fine-tuning method, with the right parameters trainable.

    Parameters
    ----------
    member : SpectrumMLP or PerLabelStack
        A plain (zero-shot or pre-trained) member; modified in place where possible.
    spec : dict
        From :func:`finetune_spec`.

    Returns
    -------
    nn.Module
        Same input/output as ``member``, with the method's parameters trainable (none for
        ``zero-shot``, all for ``full``, only the new ones for ``adapter``/``lora``).
    """
    method = spec.get("method")
    if isinstance(member, PerLabelStack):
        member.nets = nn.ModuleList([adapt_member(net, spec=spec) for net in member.nets])
        return member
    if not isinstance(member, SpectrumMLP):
        raise ConfigError(
            f"cannot apply {method!r} to a {type(member).__name__}: only plain pre-trained networks are fine-tuned"
        )
    return method_of(method).adapt(member, spec)


def merge_member(member: nn.Module) -> nn.Module:
    """A loaded member as inference runs it: every method's ``merge`` applied (in place where possible)."""
    for m in REGISTRY.values():
        if m.merge is not None:
            member = m.merge(member)
    return member
