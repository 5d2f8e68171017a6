"""Seeded synthetic VACs for the report tests (imported by conftest)."""

from __future__ import annotations

import os

import numpy as np

from catalog_tool.vac.write import Provenance, write_vac

SURVEYS = np.array(["main", "sv3", "main", "lamost", "special"])
PROGRAMS = np.array(["dark", "bright", "bright", "dr7", "dark"])
#: Survey mix drawn unevenly, so a swapped count shows.
KIND_P = np.array([0.45, 0.2, 0.15, 0.15, 0.05])
FLAG_CHOICES = np.array([0, 0, 0, 0, 1, 2, 4, 2 | 64, 256, 512, 2 | 128, 1024], dtype=np.int64)
LABELS = ("FEH", "ALPHAFE", "TEFF", "LOGG")


def make_columns(n: int, rng: np.random.Generator) -> dict:
    """VAC columns like the pipeline's: unestimated rows (NOT_STAR, READ_FAILED) are NaN."""
    kind = rng.choice(len(SURVEYS), n, p=KIND_P)
    lamost = SURVEYS[kind] == "lamost"
    tid = 39_627_000_000_000_000 + rng.permutation(n).astype(np.int64)
    tid[lamost] = 700_000_000 + np.arange(lamost.sum())
    flags = rng.choice(FLAG_CHOICES, n)
    feh = rng.normal(-0.4, 0.5, n)
    cols = {
        "TARGETID": tid, "SURVEY": SURVEYS[kind], "PROGRAM": PROGRAMS[kind],
        "HEALPIX": rng.choice(np.array([11, 3, 40000, 7, 27247], np.int32), n),
        "TARGET_RA": rng.uniform(0, 360, n), "TARGET_DEC": rng.uniform(-20, 80, n),
        "FEH": feh, "FEH_ERR": rng.uniform(0.02, 0.3, n),
        "ALPHAFE": 0.1 - 0.2 * feh + rng.normal(0, 0.05, n), "ALPHAFE_ERR": rng.uniform(0.01, 0.1, n),
        "TEFF": rng.normal(5500, 700, n), "TEFF_ERR": rng.uniform(30, 200, n),
        "LOGG": rng.normal(3.8, 0.8, n), "LOGG_ERR": rng.uniform(0.05, 0.4, n),
        "SNR": rng.uniform(2, 80, n), "FLAGS": flags,
    }
    unestimated = (flags & (1 | 1024)) != 0
    for lab in LABELS:
        cols[lab] = np.where(unestimated, np.nan, cols[lab])
        cols[f"{lab}_ERR"] = np.where(unestimated, np.nan, cols[f"{lab}_ERR"])
    return cols


def provenance() -> Provenance:
    return Provenance(model_name="report-test-bundle", model_sha256="ab" * 32, command="stxcat annotate rel --out v.fits",
                      input_release="rel/", date="2026-02-15T12:00:00")


def write_synthetic_vac(path, n: int, seed: int) -> str:
    cols = make_columns(n, np.random.default_rng(seed))
    write_vac(path, cols, provenance=provenance(), errors=[])
    return os.fspath(path)

