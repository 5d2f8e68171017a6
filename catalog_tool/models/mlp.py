"""The paper's spectrum MLP and the ensemble-member containers built from it.

Architecture (Zhao, Ting, Wyse et al., arXiv:2602.15021, with the BatchNorm and dropout of the
authors' public regressors): the normalised spectrum on the model grid (``n_in`` pixels, 1,462 for
the default grid) goes through hidden blocks of widths 1024, 512 and 64, each

    Linear -> BatchNorm1d -> ReLU -> Dropout(0.1)

and a final ``Linear(64, n_out)``. With ``n_in = 1462`` and one output this has 2,059,009
parameters (2,055,809 in the Linear layers, 3,200 BatchNorm scales and shifts). Outputs are labels
scaled by the bundle's stored means and standard deviations.

Every ensemble member, whatever its heads, is a module mapping ``(N, n_in)`` to ``(N, L)`` scaled
labels: a :class:`PerLabelStack` of L one-output networks (the paper's choice) or one
:class:`SpectrumMLP` with L outputs (the multi-label head).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from catalog_tool.errors import ConfigError

__all__ = ["MLPConfig", "SpectrumMLP", "PerLabelStack", "build_member", "count_parameters", "HEADS"]

#: Ways of mapping L labels onto networks: one network per label, or one network with L outputs.
HEADS = ("per-label", "multi-label")


@dataclass(frozen=True)
class MLPConfig:
    """Shape of one :class:`SpectrumMLP`.

    Parameters
    ----------
    n_in : int
        Input pixels; taken from the model grid (``grid["npix"]``), never hard-coded.
    n_out : int
        Outputs (1 for a per-label network, L for the multi-label head).
    hidden : tuple of int
        Hidden widths; the paper's are (1024, 512, 64). Tests use tiny ones.
    dropout : float
        Dropout probability after each hidden block (0.1 as in the authors' regressors).
    batchnorm : bool
        BatchNorm1d after each hidden Linear.
    """

    n_in: int
    n_out: int = 1
    hidden: tuple[int, ...] = (1024, 512, 64)
    dropout: float = 0.1
    batchnorm: bool = True

    def __post_init__(self):
        problems = []
        if int(self.n_in) < 1:
            problems.append(f"n_in must be >= 1, got {self.n_in}")
        if int(self.n_out) < 1:
            problems.append(f"n_out must be >= 1, got {self.n_out}")
        if not self.hidden or any(int(h) < 1 for h in self.hidden):
            problems.append(f"hidden widths must be positive integers, got {self.hidden}")
        if not 0.0 <= float(self.dropout) < 1.0:
            problems.append(f"dropout must be in [0, 1), got {self.dropout}")
        if problems:
            raise ConfigError("invalid MLP configuration: " + "; ".join(problems))
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))

    def to_dict(self) -> dict:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MLPConfig":
        keys = {"n_in", "n_out", "hidden", "dropout", "batchnorm"}
        unknown = set(d) - keys
        if unknown:
            raise ConfigError(f"unknown MLP configuration keys: {sorted(unknown)}")
        return cls(**{k: (tuple(v) if k == "hidden" else v) for k, v in d.items()})


class SpectrumMLP(nn.Module):
    """The paper's MLP: hidden blocks (Linear, BatchNorm1d, ReLU, Dropout), then a Linear head.

    ``features(x)`` returns the penultimate (last hidden, 64-d by default) activations that the
    residual-head adapter reads; ``forward(x) = out(features(x))``.
    """

    def __init__(self, config: MLPConfig):
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.n_in
        for h in config.hidden:
            layers.append(nn.Linear(width, h))
            if config.batchnorm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if config.dropout > 0:
                layers.append(nn.Dropout(config.dropout))
            width = h
        self.body = nn.Sequential(*layers)
        self.out = nn.Linear(width, config.n_out)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


class PerLabelStack(nn.Module):
    """L independent networks, one per label, read as one ``(N, L)`` output (the paper's setup)."""

    def __init__(self, nets: list[nn.Module]):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([net(x) for net in self.nets], dim=1)


def build_member(*, config: MLPConfig, n_labels: int, heads: str) -> nn.Module:
    """A fresh (randomly initialised) ensemble member predicting ``n_labels`` scaled labels.

    Parameters
    ----------
    config : MLPConfig
        Shape of each network; ``n_out`` is overridden (1 per label, or ``n_labels``).
    n_labels : int
        Number of labels L.
    heads : {"per-label", "multi-label"}
        One network per label, or one network with L outputs.
    """
    if heads not in HEADS:
        raise ConfigError(f"heads must be one of {HEADS}, got {heads!r}")
    if heads == "multi-label":
        return SpectrumMLP(MLPConfig(**{**config.to_dict(), "hidden": config.hidden, "n_out": n_labels}))
    one = MLPConfig(**{**config.to_dict(), "hidden": config.hidden, "n_out": 1})
    return PerLabelStack([SpectrumMLP(one) for _ in range(n_labels)])


def count_parameters(module: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of parameters (BatchNorm running statistics are buffers and not counted)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
