"""Seeded synthetic VAC tables for the vac tests (imported by conftest fixtures)."""

from __future__ import annotations

import numpy as np

from catalog_tool.vac import datamodel as dm
from catalog_tool.vac.write import Provenance

SURVEYS = np.array(["main", "sv3", "main", "lamost"])
PROGRAMS = np.array(["dark", "bright", "bright", "dr7"])


def make_columns(n: int, rng: np.random.Generator, *, targetid_pool: int | None = None,
                 pixels=(11, 3, 40000, 7)) -> dict:
    """A dict of columns as the pipeline would hand them over (str, not bytes; float64 values)."""
    kind = rng.integers(0, len(SURVEYS), n)
    pool = targetid_pool or 10 * n
    tid = rng.integers(1, pool, n).astype(np.int64) + 39_627_000_000_000_000
    lamost = SURVEYS[kind] == "lamost"
    tid[lamost] = rng.integers(100_000_000, 900_000_000, lamost.sum())
    snr = rng.uniform(2, 80, n)
    snr[rng.random(n) < 0.1] = np.nan
    cols = {
        "TARGETID": tid,
        "SURVEY": SURVEYS[kind],
        "PROGRAM": PROGRAMS[kind],
        "HEALPIX": rng.choice(np.asarray(pixels, dtype=np.int32), n),
        "TARGET_RA": rng.uniform(0, 360, n),
        "TARGET_DEC": rng.uniform(-20, 80, n),
        "FEH": rng.normal(-0.5, 0.6, n),
        "FEH_ERR": rng.uniform(0.02, 0.3, n),
        "ALPHAFE": rng.normal(0.1, 0.1, n),
        "ALPHAFE_ERR": rng.uniform(0.01, 0.1, n),
        "TEFF": rng.normal(5500, 700, n),
        "TEFF_ERR": rng.uniform(30, 200, n),
        "LOGG": rng.normal(3.8, 0.8, n),
        "LOGG_ERR": rng.uniform(0.05, 0.4, n),
        "SNR": snr,
        "FLAGS": rng.choice(np.array([0, 0, 0, 1, 2, 4, 256, 2 | 64]), n).astype(np.int64),
        "BAD_FRAC": rng.uniform(0, 0.5, n),
        "COVERAGE": rng.uniform(0.8, 1, n),
        "Z": np.where(lamost, rng.normal(0, 1e-4, n), rng.normal(0, 3e-4, n)),
        "ZWARN": np.where(lamost, -1, rng.choice([0, 0, 4], n)),
        "SPECTYPE": np.where(lamost, "", "STAR"),
        "COADD_FIBERSTATUS": np.where(lamost, -1, 0),
        "CLASS": np.where(lamost, "STAR", ""),
        "SOURCE": np.where(lamost, "spec-55859-F5902_sp01-001.fits.gz", "coadd-main-dark-10016.fits"),
        "SOURCE_ROW": rng.integers(0, 500, n),
    }
    return cols


def provenance(**kw) -> Provenance:
    args = dict(
        model_name="stxcat-test-bundle",
        model_sha256="0123456789abcdef" * 4,
        command="stxcat annotate " + " ".join(f"release/healpix/main/dark/{i}" for i in range(12))
                + " --out vac.fits --per-pixel",
        input_release="release/",
        date="2026-02-15T12:00:00",
    )
    args.update(kw)
    return Provenance(**args)


def expected_order(healpix: np.ndarray) -> np.ndarray:
    return np.argsort(np.asarray(healpix), kind="stable")


def as_model(cols: dict) -> np.ndarray:
    return dm.to_table(cols)


def assert_tables_equal(a: np.ndarray, b: np.ndarray, *, skip=()) -> None:
    """Column-by-column equality (NaN == NaN), strings compared as text."""
    assert a.dtype.names == b.dtype.names
    assert len(a) == len(b)
    for name in a.dtype.names:
        if name in skip:
            continue
        x, y = a[name], b[name]
        if x.dtype.kind in "SU":
            x = np.char.decode(x) if x.dtype.kind == "S" else x
            y = np.char.decode(y) if y.dtype.kind == "S" else y
        np.testing.assert_array_equal(x, y, err_msg=f"column {name}")


def make_sky_columns(n: int, rng: np.random.Generator) -> dict:
    """:func:`make_columns` with positions that make sense on the sky, for the Parquet/HATS tests.

    Half the rows in three tight clusters (so cone searches select many rows and HATS splits them
    into small partitions), half spread over the sphere; one target in ten repeated in a second
    program at the same position; ``SOURCE_ROW`` unique; ``HEALPIX`` computed from the position (nside 64, NESTED).
    """
    import healpy

    cols = make_columns(n, rng)
    centres = np.array([[150.0, 2.0], [10.0, -30.0], [270.0, 66.0]])
    k = rng.integers(0, 3, n)
    ra = centres[k, 0] + rng.normal(0, 1.5, n) / np.cos(np.radians(centres[k, 1]))
    dec = centres[k, 1] + rng.normal(0, 1.5, n)
    spread = rng.random(n) < 0.5
    ra[spread] = rng.uniform(0, 360, spread.sum())
    dec[spread] = np.degrees(np.arcsin(rng.uniform(-1, 1, spread.sum())))
    ra = np.mod(ra, 360)
    dup = np.flatnonzero(rng.random(n) < 0.1)
    dup = dup[dup + 1 < n]
    for name in ("TARGETID", "SURVEY"):
        cols[name][dup + 1] = cols[name][dup]
    cols["PROGRAM"][dup + 1] = np.where(cols["PROGRAM"][dup] == "dark", "bright", "dark")
    ra[dup + 1], dec[dup + 1] = ra[dup], dec[dup]
    cols["TARGET_RA"], cols["TARGET_DEC"] = ra, dec
    cols["HEALPIX"] = healpy.ang2pix(dm.HEALPIX_NSIDE, ra, dec, nest=True, lonlat=True).astype(np.int32)
    cols["SOURCE_ROW"] = np.arange(n)  # a unique key of the row, to compare tables after a reorder
    nan = rng.random(n) < 0.15  # not estimated
    for label in dm.LABELS:
        cols[label] = np.where(nan, np.nan, cols[label])
        cols[f"{label}_ERR"] = np.where(nan, np.nan, cols[f"{label}_ERR"])
    return cols
