"""Benchmark: render MILES-model spectra on a DESI-like 0.8 A grid (3600-9824 A).

Prints a table of stars, seconds and spectra per second. Usage: python benchmarks/bench_specmodel.py
"""

from __future__ import annotations

import time

import numpy as np

from catalog_tool.sim.population import sample_labels
from catalog_tool.sim.specmodel import SpectralModel


def main() -> None:
    model = SpectralModel.load_default()
    wave = np.arange(3600.0, 9824.0, 0.8)
    print(f"{'stars':>8} {'wave':>6} {'per-star wave':>14} {'seconds':>8} {'spectra/s':>10}")
    for n, per_star in [(1000, False), (5000, False), (5000, True)]:
        lab = sample_labels(n, rng=np.random.default_rng(1))
        w = wave
        if per_star:  # each star in its own rest frame (RV up to a few hundred km/s)
            v = np.random.default_rng(2).normal(0, 150, n)
            w = wave[None, :] / (1 + v[:, None] / 299792.458)
        t0 = time.perf_counter()
        model.render(teff=lab["TEFF"], logg=lab["LOGG"], feh=lab["FEH"], alphafe=lab["ALPHAFE"],
                     wave=w)
        dt = time.perf_counter() - t0
        print(f"{n:>8} {wave.size:>6} {str(per_star):>14} {dt:>8.2f} {n / dt:>10.0f}")


if __name__ == "__main__":
    main()
