"""Fine-tuning structures: LoRA on every Linear layer and the residual-head adapter.

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

import torch
from torch import nn

from catalog_tool.errors import ConfigError
from catalog_tool.models.mlp import PerLabelStack, SpectrumMLP

__all__ = [
    "METHODS",
    "LoRALinear",
    "ResidualHeadAdapter",
    "apply_lora",
    "merge_lora",
    "adapt_member",
    "set_batchnorm_eval",
    "finetune_spec",
]

#: Fine-tuning methods, selectable by name.
METHODS = ("zero-shot", "adapter", "lora", "full")


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


def finetune_spec(method: str, *, rank: int = 8, alpha: float = 16.0, head_hidden: int = 32) -> dict:
    """The manifest's description of a fine-tuning method (what :func:`adapt_member` rebuilds)."""
    if method not in METHODS:
        raise ConfigError(f"unknown fine-tuning method {method!r}; choose one of {', '.join(METHODS)}")
    if method == "lora":
        if int(rank) < 1 or float(alpha) <= 0:
            raise ConfigError(f"LoRA needs rank >= 1 and alpha > 0, got rank={rank}, alpha={alpha}")
        return {"method": "lora", "rank": int(rank), "alpha": float(alpha)}
    if method == "adapter":
        if int(head_hidden) < 1:
            raise ConfigError(f"adapter hidden width must be >= 1, got {head_hidden}")
        return {"method": "adapter", "head_hidden": int(head_hidden)}
    return {"method": method}


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
        Same input/output as ``member``. ``zero-shot``: unchanged, nothing trainable; ``full``: all
        trainable; ``adapter``/``lora``: only the new parameters trainable.
    """
    method = spec.get("method")
    if isinstance(member, PerLabelStack):
        member.nets = nn.ModuleList([adapt_member(net, spec=spec) for net in member.nets])
        return member
    if not isinstance(member, SpectrumMLP):
        raise ConfigError(
            f"cannot apply {method!r} to a {type(member).__name__}: only plain pre-trained networks are fine-tuned"
        )
    if method == "zero-shot":
        for p in member.parameters():
            p.requires_grad_(False)
        return member
    if method == "full":
        for p in member.parameters():
            p.requires_grad_(True)
        return member
    if method == "adapter":
        return ResidualHeadAdapter(member, hidden=spec["head_hidden"])
    if method == "lora":
        return apply_lora(member, rank=spec["rank"], alpha=spec["alpha"])
    raise ConfigError(f"unknown fine-tuning method {method!r}; choose one of {', '.join(METHODS)}")
