"""Milky-Way-like stellar label population for synthetic surveys.

Three chemical components (thin disc, thick disc, halo) and four evolutionary stages (main
sequence, turnoff/subgiant, red giant branch, red clump / horizontal branch) on simple
isochrone-like Teff-logg loci. Everything stays inside the spectral model's domain
(``SpectralModel.domain``): the metal-poor tail reaches [Fe/H] = -2.5, the limit of the MILES fit.
See docs/simulation.md, "Label population", for the numbers and their sources.
"""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri

from catalog_tool.errors import ConfigError

__all__ = ["sample_labels", "COMPONENTS", "STAGES", "LIMITS"]

#: Component: (fraction, [Fe/H] mean, [Fe/H] sigma, [Fe/H] lower, [Fe/H] upper, max MS Teff).
COMPONENTS = {
    "thin": (0.70, -0.10, 0.22, -1.0, 0.5, 7400.0),
    "thick": (0.20, -0.55, 0.25, -1.6, 0.3, 6300.0),
    "halo": (0.10, -1.45, 0.45, -2.5, -0.4, 6400.0),
}
#: Evolutionary stage fractions (the same in every component).
STAGES = {"ms": 0.55, "subgiant": 0.15, "rgb": 0.20, "clump": 0.10}
#: Hard limits of the sampled labels (inside the spectral model's domain).
LIMITS = {"TEFF": (3850.0, 7400.0), "LOGG": (0.8, 4.9), "FEH": (-2.5, 0.5), "ALPHAFE": (-0.2, 0.6)}


def _truncnorm(rng, mean, sigma, lo, hi):
    """Truncated normal by inverse CDF: vectorised, exact, one uniform per draw."""
    a, b = ndtr((lo - mean) / sigma), ndtr((hi - mean) / sigma)
    u = rng.uniform(size=np.shape(mean))
    return mean + sigma * ndtri(a + u * (b - a))


def sample_labels(n: int, *, rng: np.random.Generator, return_components: bool = False
                  ) -> dict[str, np.ndarray]:
    """Draw labels for ``n`` stars that look like a Milky Way spectroscopic survey.

    Parameters
    ----------
    n : int
        Number of stars (>= 0).
    rng : numpy.random.Generator
        Source of randomness; the result is a deterministic function of its state.
    return_components : bool
        Also return ``COMPONENT`` (0 thin, 1 thick, 2 halo) and ``STAGE`` (0 main sequence,
        1 subgiant, 2 RGB, 3 clump/HB) as int8 arrays.

    Returns
    -------
    dict of str to ndarray
        ``TEFF`` (K), ``LOGG`` (dex), ``FEH`` (dex), ``ALPHAFE`` (dex): float64 arrays of length n.
    """
    if not isinstance(n, (int, np.integer)) or n < 0:
        raise ConfigError(f"n must be a non-negative integer, got {n!r}")
    comp_p = np.array([c[0] for c in COMPONENTS.values()])
    comp = rng.choice(len(comp_p), size=n, p=comp_p / comp_p.sum())
    par = np.array([c[1:] for c in COMPONENTS.values()])[comp]  # (n, 5)
    feh = _truncnorm(rng, par[:, 0], par[:, 1], par[:, 2], par[:, 3])
    tmax_ms = par[:, 4]

    # [alpha/Fe]: thin disc low-alpha sequence; thick disc high-alpha sequence with a knee near
    # [Fe/H] = -0.8; halo on the +0.3 plateau, with a third (accreted, GSE-like) falling to lower
    # alpha above [Fe/H] ~ -2.
    thin_a = np.clip(-0.15 * feh, -0.05, 0.15)
    thick_a = 0.30 - 0.20 * np.clip((feh + 0.8) / 0.9, 0.0, 1.0)
    accreted = rng.uniform(size=n) < 0.3
    halo_a = np.where(accreted, 0.32 - 0.20 * np.clip((feh + 2.0) / 1.2, 0.0, 1.0), 0.32)
    alpha = np.choose(comp, [thin_a, thick_a, halo_a]) + rng.normal(0.0, 0.04, n)

    stage_p = np.array(list(STAGES.values()))
    stage = rng.choice(len(stage_p), size=n, p=stage_p / stage_p.sum())
    u, g1, g2 = rng.uniform(size=n), rng.normal(size=n), rng.normal(size=n)

    # Main sequence: more F/G than K dwarfs (magnitude-limited survey); logg falls slowly with Teff
    # from 4.70 (K dwarfs) to ~4.2 at 7400 K; age spread pushes stars up off the ZAMS.
    t_ms = 3900.0 + (tmax_ms - 3900.0) * rng.beta(2.0, 1.6, size=n)
    x = np.clip((t_ms - 4000.0) / 3400.0, 0.0, 1.0)
    g_ms = 4.70 - 0.5 * x**1.3 + 0.08 * g1 - np.abs(0.12 * g2)
    # Turnoff -> subgiant branch -> base of the RGB (5000 K, logg 3.5); old populations turn off
    # cooler than the thin disc.
    t_to = np.where(comp == 0, 5600.0 + 1200.0 * rng.uniform(size=n), 5900.0 + 500.0 * u)
    s = rng.uniform(size=n)
    t_sg = t_to - s * (t_to - 5000.0) + 60.0 * g2
    g_sg = 4.1 - 0.6 * s + 0.1 * g1
    # RGB: cooler at low gravity, hotter when metal-poor (~ +150 K per dex).
    g_rgb = 0.8 + 2.7 * rng.uniform(size=n) ** 0.8
    t_rgb = 4000.0 + 420.0 * (g_rgb - 1.0) - 150.0 * feh + 60.0 * g1
    # Red clump for metal-rich stars, red horizontal branch for metal-poor ones (blue HB stars lie
    # outside the model's Teff domain and are not drawn).
    mp = feh < -0.8
    t_cl = np.where(mp, 5000.0 + 1200.0 * u, 4700.0 - 150.0 * feh + 80.0 * g2)
    g_cl = np.where(mp, 2.5 + 0.15 * g1, 2.45 + 0.10 * g1)

    teff = np.choose(stage, [t_ms, t_sg, t_rgb, t_cl])
    logg = np.choose(stage, [g_ms, g_sg, g_rgb, g_cl])
    out = {
        "TEFF": np.clip(teff, *LIMITS["TEFF"]),
        "LOGG": np.clip(logg, *LIMITS["LOGG"]),
        "FEH": np.clip(feh, *LIMITS["FEH"]),
        "ALPHAFE": np.clip(alpha, *LIMITS["ALPHAFE"]),
    }
    if return_components:
        out["COMPONENT"] = comp.astype(np.int8)
        out["STAGE"] = stage.astype(np.int8)
    return out
