"""Seeded synthetic SpectraBatch builders for the preprocessing tests."""

from __future__ import annotations

import numpy as np

from catalog_tool.batch import Arm, SpectraBatch

DESI_B = np.round(3600.0 + 0.8 * np.arange(2751), 1)
DESI_R = np.round(5760.0 + 0.8 * np.arange(2326), 1)
LAMOST = 10 ** (3.5682 + 1e-4 * np.arange(3904))


def meta(n, survey="main", **extra):
    m = {
        "TARGETID": np.arange(1, n + 1, dtype=np.int64) * 7,
        "SURVEY": np.array([survey] * n),
        "PROGRAM": np.array(["dark"] * n),
        "TARGET_RA": np.linspace(10, 20, n),
        "TARGET_DEC": np.linspace(-5, 5, n),
        "HEALPIX": np.zeros(n, np.int32),
        "FIBER_KIND": np.array(["target"] * n),
        "SOURCE": np.array(["synthetic"] * n),
        "ROW": np.arange(n, dtype=np.int32),
    }
    m.update({k: np.asarray(v) for k, v in extra.items()})
    return m


def batch_from(arms: dict, n: int, **extra) -> SpectraBatch:
    """arms: name -> (wave, flux, ivar[, mask]) arrays."""
    out = {}
    for name, parts in arms.items():
        wave, flux, ivar = parts[:3]
        mask = parts[3] if len(parts) > 3 else np.zeros(flux.shape, np.uint32)
        out[name] = Arm(name, np.asarray(wave, float), np.asarray(flux, np.float32),
                        np.asarray(ivar, np.float32), np.asarray(mask, np.uint32))
    return SpectraBatch(arms=out, meta=meta(n, **extra))


def smooth_continuum(wave, n, rng):
    """Smooth, positive, asymmetric continua (a tilted blackbody-like shape), one per row."""
    x = (wave - 4700.0) / 1000.0
    a = rng.uniform(0.8, 1.2, n)[:, None]
    b = rng.uniform(-0.3, 0.3, n)[:, None]
    c = rng.uniform(-0.2, 0.0, n)[:, None]
    return 100.0 * a * (1 + b * x + c * x * x)


def absorption(wave, centres, depths, sigmas):
    """Product of Gaussian absorption lines (rows broadcast)."""
    f = np.ones(np.broadcast_shapes(np.shape(wave), (1,)))
    for c, d, s in zip(centres, depths, sigmas):
        f = f * (1 - d * np.exp(-0.5 * ((wave - c) / s) ** 2))
    return f
