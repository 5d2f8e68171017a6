"""A seeded toy set of spectrum-like arrays whose labels shape absorption features.

Not a stellar model (that is :mod:`catalog_tool.sim`): a fast, dependency-free stand-in for tests,
benchmarks and smoke checks of the networks and training loops. Each "spectrum" is
``exp(-tau)`` on ``npix`` pixels with

* metal lines whose depth grows with 10**FEH and falls with TEFF,
* alpha lines whose depth grows with 10**(FEH + ALPHAFE),
* gravity-sensitive lines whose depth grows with LOGG,
* three broad Balmer-like lines whose depth follows TEFF and whose wings widen with LOGG,

and Gaussian noise of 1/snr (bluer pixels noisier, so a swapped axis shows). ``broadening``
widens every line (a second "instrument", for fine-tuning tests).
"""

from __future__ import annotations

import numpy as np

__all__ = ["TOY_LABELS", "toy_labels", "toy_spectra"]

TOY_LABELS = ("FEH", "ALPHAFE", "TEFF", "LOGG")


def toy_labels(n: int, *, rng: np.random.Generator, metal_poor_fraction: float = 0.25) -> dict[str, np.ndarray]:
    """Labels of n toy stars: a metal-rich disc plus a metal-poor tail with alpha enhancement."""
    poor = rng.random(n) < metal_poor_fraction
    feh = np.where(poor, rng.uniform(-2.5, -1.0, n), np.clip(rng.normal(-0.3, 0.35, n), -1.0, 0.5))
    alpha = np.clip(0.3 * np.clip(-feh, 0.0, 1.0) + rng.normal(0.0, 0.05, n), -0.1, 0.5)
    return {"FEH": feh, "ALPHAFE": alpha, "TEFF": rng.uniform(4000.0, 7000.0, n), "LOGG": rng.uniform(1.0, 5.0, n)}


def toy_spectra(*, labels: dict[str, np.ndarray], npix: int = 1462, snr=50.0, rng: np.random.Generator,
                broadening: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Noisy toy spectra for given labels.

    Parameters
    ----------
    labels : dict of ndarray
        FEH, ALPHAFE, TEFF, LOGG, each shape (N,).
    npix : int
        Pixels per spectrum.
    snr : float or ndarray (N,)
        Signal-to-noise per pixel at the red end (the blue end is 1.5 times noisier).
    rng : numpy.random.Generator
        Draws the noise.
    broadening : float
        Multiplies every line width.

    Returns
    -------
    flux, ivar : ndarray, float32, shape (N, npix)
    """
    feh, alpha = np.asarray(labels["FEH"], float), np.asarray(labels["ALPHAFE"], float)
    teff, logg = np.asarray(labels["TEFF"], float), np.asarray(labels["LOGG"], float)
    x = np.linspace(0.0, 1.0, npix)
    # Line list fixed by its own seed: the "physics" does not change with the caller's rng.
    lines = np.random.default_rng(7)
    n_met, n_alp, n_grav = 60, 20, 15
    n_lines = n_met + n_alp + n_grav
    centres = lines.uniform(0.02, 0.98, n_lines)
    strength = lines.uniform(0.2, 1.5, n_lines)
    width = broadening * lines.uniform(1.5, 3.0, n_lines) / npix
    profiles = np.exp(-0.5 * ((x[None, :] - centres[:, None]) / width[:, None]) ** 2)  # (lines, npix)
    cool = (5000.0 / teff) ** 3
    amp = np.concatenate([np.outer(10.0**feh * cool, strength[:n_met]),
                          np.outer(10.0 ** (feh + alpha) * cool, strength[n_met:n_met + n_alp]),
                          np.outer((0.1 + 0.2 * logg) * 10.0 ** (0.3 * feh), strength[n_met + n_alp:])], axis=1)
    tau = amp @ profiles
    hot = np.clip((teff - 3500.0) / 3500.0, 0.0, None)  # Balmer depth rises with TEFF
    for c in (0.15, 0.45, 0.8):
        w = broadening * (0.004 + 0.003 * logg)[:, None]  # wings widen with gravity
        tau += 0.8 * hot[:, None] * np.exp(-0.5 * ((x[None, :] - c) / w) ** 2)
    clean = np.exp(-tau)
    sigma = (1.0 / np.broadcast_to(np.asarray(snr, float), feh.shape))[:, None] * (1.5 - 0.5 * x)[None, :]
    flux = clean + sigma * rng.standard_normal(clean.shape)
    return flux.astype(np.float32), (1.0 / sigma**2).astype(np.float32)
