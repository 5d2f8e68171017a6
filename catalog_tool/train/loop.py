"""The training loop shared by pre-training and fine-tuning.

AdamW on a masked mean-squared error (optionally a Huber loss) in scaled label units (labels
missing for a star, NaN, do not count), mini-batches drawn by a seeded permutation, the best-validation weights kept and restored,
optional early stopping, one JSON line per epoch in the training log. Inputs are indexed batch by
batch, so ``x`` may be a read-only ``np.memmap`` of a preprocessed set larger than memory.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from catalog_tool.errors import ConfigError
from catalog_tool.models.adapters import set_batchnorm_eval
from catalog_tool.models.infer import resolve_device

__all__ = ["TrainConfig", "TrainLog", "split_indices", "train_network", "predict_scaled"]


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings (the paper's defaults).

    Parameters
    ----------
    epochs : int
        Passes over the training set (100).
    batch_size : int
        Spectra per step (32).
    lr, weight_decay : float
        AdamW learning rate (1e-5) and weight decay (1e-4).
    val_fraction : float
        Fraction held out for validation (0.1: the 9:1 split).
    seed : int
        Seeds the split; ensemble member m uses ``seed + m`` for its initialisation and batch order.
    patience : int or None
        Stop after this many epochs without a better validation loss (None: run all epochs).
    device : str
        ``"cpu"``, ``"cuda"`` or ``"auto"``.
    freeze_bn : bool
        Keep BatchNorm running statistics fixed while training (fine-tuning option).
    huber_delta : float or None
        Huber loss with this threshold (in scaled label units, i.e. training-set standard
        deviations) instead of the mean squared error: a star whose reference label is wrong pulls
        the network linearly, not quadratically. ``None`` (default): the paper's MSE.
    """

    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-5
    weight_decay: float = 1e-4
    val_fraction: float = 0.1
    seed: int = 0
    patience: int | None = None
    device: str = "auto"
    freeze_bn: bool = False
    huber_delta: float | None = None

    def __post_init__(self):
        problems = []
        if self.epochs < 1:
            problems.append(f"epochs must be >= 1 (got {self.epochs})")
        if self.batch_size < 2:
            problems.append(f"batch_size must be >= 2 for BatchNorm (got {self.batch_size})")
        if not self.lr > 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction must be in (0, 1) (got {self.val_fraction})")
        if self.huber_delta is not None and not self.huber_delta > 0:
            problems.append(f"huber_delta must be > 0 or None (got {self.huber_delta})")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be >= 1 or None (got {self.patience})")
        if problems:
            raise ConfigError("invalid training settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


class TrainLog:
    """Collects epoch records; appends each as one JSON line to ``path`` when given."""

    def __init__(self, path=None):
        self.path = path
        self.records: list[dict] = []

    def write(self, record: dict) -> None:
        self.records.append(record)
        if self.path is not None:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(record) + "\n")


def split_indices(n: int, *, val_fraction: float = 0.1, seed: int = 0,
                  groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split (sorted index arrays); at least one row in each part.

    With ``groups`` (shape (n,), integers), rows of one group (e.g. several renderings of one real
    star) all fall on the same side, and each group's side is a seeded hash of its id alone: a group
    is in validation with probability ``val_fraction`` whatever set it appears in, so the same stars
    are held out of pre-training and of fine-tuning, and validation measures stars the network has
    never seen.
    """
    if n < 2:
        raise ConfigError(f"need at least 2 labelled spectra to split into training and validation, got {n}")
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise ConfigError(f"groups has shape {groups.shape}, expected ({n},)")
        uniq, inverse = np.unique(groups.astype(np.int64), return_inverse=True)
        if uniq.size < 2:
            raise ConfigError(f"need at least 2 groups to split into training and validation, got {uniq.size}")
        u = _hash_uniform(uniq, seed)
        val = u < val_fraction
        if not val.any():
            val[np.argmin(u)] = True
        if val.all():
            val[np.argmax(u)] = False
        return np.flatnonzero(~val[inverse]), np.flatnonzero(val[inverse])
    perm = np.random.default_rng(seed).permutation(n)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _hash_uniform(ids: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per integer id, a fixed function of (id, seed) (splitmix64)."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed & 0xFFFFFFFF) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _batch(a: np.ndarray, idx: np.ndarray, dev: torch.device) -> torch.Tensor:
    # Sorted fancy indexing reads a memmap sequentially; the copy is one batch.
    t = torch.from_numpy(np.ascontiguousarray(a[np.sort(idx)], dtype=np.float32))
    return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)


def _masked_loss(pred: torch.Tensor, y: torch.Tensor, huber_delta: float | None = None) -> torch.Tensor:
    """Mean over known labels (finite ``y``) of the squared error, or of the Huber loss."""
    ok = torch.isfinite(y)
    diff = torch.where(ok, pred - torch.nan_to_num(y), torch.zeros_like(pred))
    if huber_delta is None:
        per = diff.square()
    else:  # 2 x Huber, so that it equals the squared error below the threshold
        a = diff.abs()
        per = torch.where(a <= huber_delta, diff.square(), 2.0 * huber_delta * a - huber_delta ** 2)
    return per.sum() / ok.sum().clamp_min(1)


def predict_scaled(module: nn.Module, x: np.ndarray, *, device="cpu", batch_size: int = 4096) -> np.ndarray:
    """Outputs of ``module`` in evaluation mode (scaled units), shape (N, outputs)."""
    dev = resolve_device(device)
    module = module.to(dev).eval()
    out = []
    with torch.inference_mode():
        for s in range(0, len(x), batch_size):
            out.append(module(_batch(x, np.arange(s, min(s + batch_size, len(x))), dev)).cpu())
    return torch.cat(out).numpy()


def _adamw(params, config: TrainConfig) -> torch.optim.Optimizer:
    # The fused kernel does the whole update in one pass over the parameters: at batch 32 the
    # per-step update of 2M parameters otherwise costs more than the forward and backward passes.
    try:
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):  # device or torch build without the fused kernel
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)


def train_network(module: nn.Module, *, x: np.ndarray, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
                  config: TrainConfig, seed: int, log: TrainLog | None = None, tag: dict | None = None) -> dict:
    """Train the trainable parameters of ``module`` in place; keep the best-validation weights.

    Parameters
    ----------
    module : nn.Module
        Maps (n, npix) to (n, K); only parameters with ``requires_grad`` are optimised.
    x : ndarray (N, npix)
        Normalised flux (may be a memmap).
    y : ndarray (N, K)
        Scaled labels; NaN = not known for that star (excluded from the loss).
    train_idx, val_idx : ndarray of int
        Rows of ``x``/``y`` for training and validation.
    config : TrainConfig
    seed : int
        Seeds the batch order and torch's random numbers (dropout) while training, so the result
        depends on the module, the data, ``config`` and ``seed`` only, not on what ran before in the
        process; torch's global random state is restored afterwards. The caller seeds the
        initialisation.
    log : TrainLog, optional
        Receives one record per epoch: ``tag`` entries plus epoch, train_loss, val_loss, best, seconds.

    Returns
    -------
    dict
        ``best_epoch``, ``best_val_loss``, ``epochs_run``, ``stopped_early``.
    """
    dev = resolve_device(config.device)
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return _train(module, x=x, y=y, train_idx=train_idx, val_idx=val_idx, config=config, seed=seed, log=log,
                      tag=tag, dev=dev)


def _train(module: nn.Module, *, x, y, train_idx, val_idx, config: TrainConfig, seed: int, log, tag, dev) -> dict:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("nothing to train: the network has no trainable parameters")
    if len(train_idx) < 2 or len(val_idx) < 1:
        raise ConfigError(f"too few labelled spectra to train ({len(train_idx)} training, {len(val_idx)} validation)")
    module.to(dev)
    opt = _adamw(params, config)
    order = np.random.default_rng(seed)
    train_idx, val_idx = np.asarray(train_idx), np.sort(np.asarray(val_idx))
    y_val = torch.from_numpy(np.asarray(y[val_idx], np.float32))
    # The starting weights are a candidate too (epoch -1): fine-tuning that only hurts the
    # validation loss returns the zero-shot network instead of a worse one.
    hd = config.huber_delta
    best = float(_masked_loss(torch.from_numpy(predict_scaled(module, x[val_idx], device=dev)), y_val, hd))
    best_epoch, since = -1, 0
    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
    stopped = False
    epoch = 0
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        module.train()
        if config.freeze_bn:
            set_batchnorm_eval(module)
        perm = train_idx[order.permutation(len(train_idx))]
        # A last batch of one row would break BatchNorm in training mode: fold it into the previous.
        n_full = max(1, len(perm) // config.batch_size)
        total, count = 0.0, 0
        for b in range(n_full):
            idx = perm[b * config.batch_size: (b + 1) * config.batch_size if b < n_full - 1 else len(perm)]
            idx = np.sort(idx)
            xb, yb = _batch(x, idx, dev), _batch(y, idx, dev)
            loss = _masked_loss(module(xb), yb, hd)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
            count += len(idx)
        pred = torch.from_numpy(predict_scaled(module, x[val_idx], device=dev))
        val = float(_masked_loss(pred, y_val, hd))
        improved = val < best
        if improved:
            best, best_epoch, since = val, epoch, 0
            best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
        else:
            since += 1
        if log is not None:
            log.write({**(tag or {}), "epoch": epoch, "train_loss": total / max(count, 1), "val_loss": val,
                       "best": improved, "seconds": round(time.perf_counter() - t0, 3)})
        if config.patience is not None and since >= config.patience:
            stopped = True
            break
    module.load_state_dict(best_state)
    module.eval()
    return {"best_epoch": best_epoch, "best_val_loss": best, "epochs_run": epoch + 1, "stopped_early": stopped}
