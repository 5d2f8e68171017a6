"""Inference: ensemble mean, ensemble spread and propagated flux noise, batched on a device.

For each label the reported uncertainty is

    error = sqrt(ensemble_std**2 + noise_std**2 + floor**2)

A calibrated bundle (``stxcat calibrate``; :mod:`catalog_tool.models.calibration`) has its values
mapped onto the reference labels' scale, and ``ensemble_std`` and ``noise_std`` scaled by the
local slope of that map, before the floor is added; ``predict(..., calibrated=False)`` gives the
raw network values.

``floor`` is a per-label systematic term stored in the bundle's manifest
(``manifest["uncertainty"]["floor"]``, label units; 0 when absent), fitted on validation stars
so that (predicted - true) / error has unit robust scatter (see
:func:`catalog_tool.train.evaluate.fit_error_floor`): the ensemble and the flux noise do not
capture the error the model makes at high S/N (imperfect transfer, spectral-model limits).

``ensemble_std`` is the spread of the members' predictions (model uncertainty, ddof=1);
``noise_std`` is the flux noise (IVAR) carried through the network to the ensemble-mean
prediction. Two ways to get it (compared in benchmarks/bench_uncertainty.py, docs/models.md):

``linear`` (default)
    First order: ``noise_var = sum_i (d y / d x_i)**2 / ivar_i`` with the input gradients of the
    mean over the first ``noise_members`` members; one batched backward pass per label, or, for
    plain MLP members, the Jacobian in closed form (:mod:`catalog_tool.models.folded`).
``mc``
    Monte Carlo: ``mc_draws`` noisy copies ``x + N(0, 1/ivar)`` through the same members; the
    standard deviation of their predictions.

Pixels with ``ivar <= 0`` (masked, filled by preprocessing) carry no measured noise and add
nothing; their lack of information is reported by preprocessing's BAD_FRAC, not here. Rows with a
non-finite flux value give NaN values and errors (every row is computed independently: the
networks run in evaluation mode, BatchNorm uses stored statistics).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch

from catalog_tool.errors import ConfigError
from catalog_tool.models.bundle import Bundle
from catalog_tool.models.calibration import apply_calibration, is_calibrated
from catalog_tool.models.device import resolve_device
from catalog_tool.models.folded import fold_members, noise_variance
from catalog_tool.models.mlp import PerLabelStack

__all__ = ["Prediction", "predict", "error_floor", "NOISE_METHODS", "resolve_device", "DEFAULT_BATCH_SIZE"]

NOISE_METHODS = ("linear", "mc", "none")
_members_lock = threading.Lock()
DEFAULT_BATCH_SIZE = 1024


@dataclass
class Prediction:
    """Per-star, per-label results, in physical units (float32, shape (N, L))."""

    values: np.ndarray
    errors: np.ndarray
    ensemble_std: np.ndarray
    noise_std: np.ndarray
    label_names: list[str]

    def column(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, errors) of one label."""
        j = self.label_names.index(name)
        return self.values[:, j], self.errors[:, j]


def error_floor(bundle: Bundle) -> np.ndarray:
    """Per-label systematic uncertainty of ``bundle`` (label units; zeros when it has none)."""
    floors = bundle.manifest.get("uncertainty", {}).get("floor", {})
    return np.array([float(floors.get(name, 0.0)) for name in bundle.label_names], dtype=np.float64)


def _to_device(a: np.ndarray, dev: torch.device) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    if dev.type == "cuda":
        # Pinned host memory lets the copy overlap with the previous batch's kernels.
        return t.pin_memory().to(dev, non_blocking=True)
    return t


def _linear_noise_var(members, x: torch.Tensor, sigma2: torch.Tensor, n_labels: int):
    """Member outputs (M, n, L) and first-order noise variance (n, L) of their mean."""
    # Rows are independent in evaluation mode, so the gradient of a column's sum over rows is
    # every row's own gradient.
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        if all(isinstance(m, PerLabelStack) for m in members):
            # One network per label: build each label's graph from its own networks only, so its
            # backward pass does not also run (with zero gradients) through the L - 1 others.
            cols = [torch.stack([m.nets[j](x) for m in members]) for j in range(n_labels)]  # (M, n, 1) each
            var = torch.stack([
                (torch.autograd.grad(c.mean(0).sum(), x, retain_graph=j < n_labels - 1)[0].square() * sigma2).sum(-1)
                for j, c in enumerate(cols)], dim=1)
            return torch.cat(cols, dim=2).detach(), var
        outs = torch.stack([m(x) for m in members])
        mean = outs.mean(0)
        # Shared network: one batched backward pass for all labels (one larger matmul).
        basis = torch.eye(n_labels, dtype=mean.dtype, device=mean.device)[:, None, :].expand(n_labels, *mean.shape)
        (grads,) = torch.autograd.grad(mean, x, grad_outputs=basis, is_grads_batched=True)
    var = (grads.square() * sigma2).sum(-1).T  # (n, L)
    return outs.detach(), var


def predict(bundle: Bundle, *, flux: np.ndarray, ivar: np.ndarray, device: str | torch.device = "cpu",
            batch_size: int = DEFAULT_BATCH_SIZE, noise: str = "linear", noise_members: int | None = 1,
            mc_draws: int = 32, seed: int = 0, calibrated: bool = True) -> Prediction:
    """Predict labels with uncertainties for normalised spectra on the bundle's grid.

    Parameters
    ----------
    bundle : Bundle
        From :func:`catalog_tool.models.bundle.load_bundle`.
    flux, ivar : ndarray, shape (N, npix)
        Normalised flux and its inverse variance (0 where bad), as preprocessing makes them.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"`` or ``"auto"``.
    batch_size : int
        Spectra per device batch.
    noise : {"linear", "mc", "none"}
        How flux noise is propagated (see the module docstring).
    noise_members : int or None
        Members whose mean is differentiated (``linear``) or re-run on noisy copies (``mc``);
        None = all. The default 1 measures the noise term on the first member only, which costs
        1/M of the full term and was measured to agree with it closely (docs/models.md).
    mc_draws : int
        Monte Carlo draws per spectrum (``mc`` only).
    seed : int
        Seed of the Monte Carlo draws.
    calibrated : bool
        Apply the bundle's calibration, if it has one (default). False: the networks' own values
        (what ``stxcat calibrate`` fits against); the errors still include the floor.

    Returns
    -------
    Prediction
    """
    flux = np.asarray(flux)
    ivar = np.asarray(ivar)
    if flux.ndim != 2 or flux.shape != ivar.shape:
        raise ConfigError(f"flux and ivar must be 2-D and of one shape, got {flux.shape} and {ivar.shape}")
    if flux.shape[1] != bundle.n_in:
        raise ConfigError(f"bundle {bundle.name} expects spectra of {bundle.n_in} pixels, got {flux.shape[1]}")
    if noise not in NOISE_METHODS:
        raise ConfigError(f"noise must be one of {NOISE_METHODS}, got {noise!r}")
    if batch_size < 1 or mc_draws < 2:
        raise ConfigError(f"batch_size must be >= 1 and mc_draws >= 2, got {batch_size}, {mc_draws}")
    dev = resolve_device(device)
    # the pipeline's worker threads share one bundle: one of them at a time moves it to the device
    # and folds it (a member half moved by another thread must not be folded or run)
    with _members_lock:
        members = [m.to(dev).eval() for m in bundle.members]
        # plain MLP members (the usual case) run folded, with the noise Jacobian in closed form
        # (catalog_tool.models.folded: the same numbers to float32 rounding, about twice as fast)
        folded = fold_members(members, dev)
    if folded is not None:
        members = folded
    k = len(members) if noise_members is None else max(1, min(int(noise_members), len(members)))
    n, n_labels = flux.shape[0], len(bundle.label_names)
    means = torch.as_tensor(bundle.means, dtype=torch.float32, device=dev)
    stds = torch.as_tensor(bundle.stds, dtype=torch.float32, device=dev)
    gen = torch.Generator(device=dev).manual_seed(int(seed))

    values = np.empty((n, n_labels), np.float32)
    ens_std = np.empty_like(values)
    noise_std = np.zeros_like(values)
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        x = _to_device(flux[start:stop], dev)
        iv = _to_device(ivar[start:stop], dev)
        sigma2 = torch.where((iv > 0) & torch.isfinite(iv), 1.0 / iv.clamp_min(1e-30), torch.zeros_like(iv))
        if noise == "linear":
            if folded is not None:
                with torch.inference_mode():
                    outs_k, var = noise_variance(members[:k], x, sigma2)
            else:
                outs_k, var = _linear_noise_var(members[:k], x, sigma2, n_labels)
            with torch.inference_mode():
                rest = [m(x) for m in members[k:]]
            outs = torch.cat([outs_k, torch.stack(rest)]) if rest else outs_k
            nstd = var.sqrt()
        else:
            with torch.inference_mode():
                outs = torch.stack([m(x) for m in members])
                if noise == "mc":
                    sig = sigma2.sqrt()
                    draws = []
                    for _ in range(mc_draws):  # loop over draws, each a full vectorised batch
                        xn = x + sig * torch.randn(x.shape, generator=gen, device=dev)
                        draws.append(torch.stack([m(xn) for m in members[:k]]).mean(0))
                    nstd = torch.stack(draws).std(0, correction=1)
                else:
                    nstd = torch.zeros_like(outs[0])
        with torch.inference_mode():
            mean = outs.mean(0)
            spread = outs.std(0, correction=1) if len(members) > 1 else torch.zeros_like(mean)
            values[start:stop] = (mean * stds + means).cpu().numpy()
            ens_std[start:stop] = (spread * stds).cpu().numpy()
            noise_std[start:stop] = (nstd * stds).cpu().numpy()
    if calibrated and is_calibrated(bundle.manifest):
        cal, scale = apply_calibration(bundle.manifest, list(bundle.label_names), values)
        values = cal.astype(np.float32)
        ens_std = (ens_std * scale).astype(np.float32)
        noise_std = (noise_std * scale).astype(np.float32)
    floor = error_floor(bundle)
    errors = np.sqrt(ens_std.astype(np.float64) ** 2 + noise_std.astype(np.float64) ** 2
                     + floor ** 2).astype(np.float32)
    return Prediction(values=values, errors=errors, ensemble_std=ens_std, noise_std=noise_std,
                      label_names=list(bundle.label_names))
