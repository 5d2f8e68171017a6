"""Pieces shared by the DESI and LAMOST simulators: argument checks, output folders, atomic FITS
writing, star labels (drawn or given), radial velocities, S/N draws, noiseless source spectra and
the truth table."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import fitsio
import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.io.atomic import atomic_path
from catalog_tool.sim import instrument as ins
from catalog_tool.sim._fitsraw import add_checksum_placeholders, finalize_checksums
from catalog_tool.sim.randomise import broaden_rows
from catalog_tool.sim.templates import galaxy_flux, qso_flux

__all__ = ["LABELS", "SimResult", "check_snr_range", "prepare_output", "atomic_path", "atomic_fits",
           "as_label_table", "draw_labels", "draw_rv", "draw_snr", "load_model", "write_truth",
           "source_flux"]

#: Stellar labels every star carries (truth-table columns; NaN for non-stars).
LABELS = ("TEFF", "LOGG", "FEH", "ALPHAFE")


@dataclass(frozen=True)
class SimResult:
    """What a simulation wrote.

    Attributes
    ----------
    out : str
        The output folder.
    files : list of str
        Spectrum files written (paths relative to ``out``), in write order.
    truth : str
        Path of the truth table.
    nspec : int
        Number of spectra (rows) written, all kinds.
    nstars : int
        Number of stars among them.
    """

    out: str
    files: list
    truth: str
    nspec: int
    nstars: int


def check_snr_range(snr_range) -> list[str]:
    """Problems with an S/N range ``(lo, hi)`` (empty list when fine)."""
    lo, hi = snr_range
    problems = []
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo <= 0 or hi <= 0:
        problems.append(f"S/N range must be positive, got {lo:g}..{hi:g}")
    elif lo > hi:
        problems.append(f"S/N minimum {lo:g} exceeds maximum {hi:g}")
    return problems


def prepare_output(out: str | os.PathLike, *, overwrite: bool, owned: list[str]) -> str:
    """Create ``out``, or refuse a non-empty one unless ``overwrite``.

    With ``overwrite`` only the ``owned`` entries (paths relative to ``out`` that this simulator
    writes: its file tree, truth and catalogue) are removed first, so stale spectra from an earlier,
    larger run cannot linger beside a new truth table; nothing else in ``out`` is touched.
    """
    out = os.fspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ConfigError(f"output {out} exists and is not a directory")
    if os.path.isdir(out) and os.listdir(out):
        if not overwrite:
            raise ConfigError(f"output directory {out} is not empty (use --overwrite to replace a simulation)")
        for rel in owned:
            p = os.path.join(out, rel)
            if os.path.isdir(p) and not os.path.islink(p):
                shutil.rmtree(p)
            elif os.path.lexists(p):
                os.remove(p)
    os.makedirs(out, exist_ok=True)
    return out


@contextlib.contextmanager
def atomic_fits(path: str, *, compress: bool = False) -> Iterator[fitsio.FITS]:
    """Write a FITS file under a temporary name and rename it into place when complete.

    With ``compress`` the finished file is gzip-compressed (``path`` should end in ``.gz``). On an
    exception the temporary file is removed and nothing appears at ``path``.
    """
    with atomic_path(path, compress=compress) as tmp:
        fits = fitsio.FITS(tmp, "rw", clobber=True)
        try:
            yield fits
        finally:
            fits.close()


def as_label_table(labels) -> dict:
    """Normalise a label table to a dict of float64 arrays.

    Parameters
    ----------
    labels : mapping, numpy structured array or astropy Table
        Must have TEFF, LOGG, FEH, ALPHAFE; RV (km/s) and SNR are used when present.

    Raises
    ------
    ConfigError
        Missing columns, unequal lengths, non-finite labels or an empty table.
    """
    names = labels.dtype.names if hasattr(labels, "dtype") and labels.dtype.names else list(labels.keys())
    missing = [c for c in LABELS if c not in names]
    if missing:
        raise ConfigError(f"label table lacks columns {missing}")
    out = {c: np.asarray(labels[c], dtype=np.float64).ravel() for c in LABELS + ("RV", "SNR") if c in names}
    n = {len(v) for v in out.values()}
    if len(n) != 1 or 0 in n:
        raise ConfigError("label table is empty or its columns differ in length")
    bad = [c for c, v in out.items() if not np.all(np.isfinite(v))]
    if bad:
        raise ConfigError(f"label table has non-finite values in {bad}")
    if "SNR" in out and np.any(out["SNR"] <= 0):
        raise ConfigError("label table has SNR <= 0")
    return out


def load_model(model=None):
    """The spectral model to render stars with: ``model`` itself, or the bundled default."""
    if model is not None:
        return model
    from catalog_tool.sim.specmodel import SpectralModel

    return SpectralModel.load_default()


def draw_labels(n: int, *, rng: np.random.Generator) -> dict:
    """``n`` Milky-Way-like star labels from :func:`catalog_tool.sim.population.sample_labels`."""
    from catalog_tool.sim.population import sample_labels

    lab = sample_labels(n, rng=rng)
    return {c: np.asarray(lab[c], dtype=np.float64) for c in LABELS}


def draw_rv(n: int, *, feh: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Heliocentric radial velocities (km/s): a cold disc and, for metal-poor stars, a hot halo.

    Disc: N(-10, 35); stars with [Fe/H] < -1 are halo with N(0, 150). Clipped to +-600 km/s.
    """
    halo = np.asarray(feh) < -1.0
    rv = np.where(halo, rng.normal(0.0, 150.0, n), rng.normal(-10.0, 35.0, n))
    return np.clip(rv, -600.0, 600.0)


def draw_snr(n: int, *, snr_range, rng: np.random.Generator) -> np.ndarray:
    """Median S/N per pixel, log-uniform in ``snr_range`` (faint targets dominate, as in surveys)."""
    lo, hi = snr_range
    return np.exp(rng.uniform(np.log(lo), np.log(hi), n))


def source_flux(*, star: np.ndarray, galaxy: np.ndarray, qso: np.ndarray, labels: dict,
                z: np.ndarray, wave: np.ndarray, grid: ins.FineGrid, lsf, model,
                rng: np.random.Generator, extra_lsf: dict | None = None) -> np.ndarray:
    """Noiseless observed-frame flux of the stars, galaxies and QSOs of a chunk (other rows 0).

    Stars are rendered once on the rest-frame ``grid``, broadened by ``lsf`` and shifted to ``wave``;
    galaxies and QSOs come from the templates at their redshift.

    Parameters
    ----------
    star, galaxy, qso : ndarray of bool, shape (N,)
        Which rows are which kind.
    labels : dict
        ``LABELS`` columns, shape (N,) each; read on star rows only. A model with
        ``render_rows(*, rows, wave)`` (a library of real spectra,
        :class:`catalog_tool.sim.library.LibraryModel`) is given the ``LABEL_ROW`` column instead.
    z : ndarray, shape (N,)
        Redshift (for stars ``1 + z`` is the Doppler factor).
    wave : ndarray, shape (npix,)
        Observed vacuum wavelengths (A).
    grid : FineGrid
    lsf : scipy.sparse matrix or None
        Extra broadening on ``grid`` (:func:`catalog_tool.sim.instrument.lsf_matrix`).
    model : object
        Spectral model with ``render(*, teff, logg, feh, alphafe, wave)``.
    rng : numpy Generator
        Galaxy then QSO template draws (in that order: the output is a function of the seed).
    extra_lsf : dict, optional
        Per-row extra broadening of the stars (domain randomisation): ``fwhm`` and ``slope``
        (shape (N,)), ``wrange`` and a matrix ``cache`` for
        :func:`catalog_tool.sim.randomise.broaden_rows`.

    Returns
    -------
    ndarray, float64, shape (N, npix)
    """
    flux = np.zeros((star.size, wave.size))
    if star.any():
        sel = np.flatnonzero(star)
        if hasattr(model, "render_rows"):
            rest = model.render_rows(rows=labels["LABEL_ROW"][sel], wave=grid.wave).astype(np.float64)
        else:
            rest = model.render(teff=labels["TEFF"][sel], logg=labels["LOGG"][sel], feh=labels["FEH"][sel],
                                alphafe=labels["ALPHAFE"][sel], wave=grid.wave).astype(np.float64)
        rest = ins.apply_lsf(flux=rest, matrix=lsf)
        if extra_lsf is not None:
            rest = broaden_rows(flux=rest, grid=grid, fwhm=extra_lsf["fwhm"][sel], slope=extra_lsf["slope"][sel],
                                wrange=extra_lsf["wrange"], cache=extra_lsf["cache"])
        flux[sel] = ins.resample_shifted(flux=rest, grid=grid, wave=wave, doppler=1.0 + z[sel])
    for m, fn in ((galaxy, galaxy_flux), (qso, qso_flux)):
        if m.any():
            sel = np.flatnonzero(m)
            flux[sel] = fn(wave_rest=wave[None, :] / (1.0 + z[sel])[:, None], rng=rng)
    return flux


def write_truth(path: str, columns: dict, *, header: dict, extname: str = "TRUTH",
                units: dict | None = None) -> None:
    """Write a table (the truth table: EXTNAME ``TRUTH``) atomically, with units on the physical columns.

    ``units`` adds or overrides units by column name.
    """
    units = {"TEFF": "K", "RV": "km/s",
             "TARGET_RA": "deg", "TARGET_DEC": "deg", "RA": "deg", "DEC": "deg", "MAG_R": "mag",
             **(units or {})}
    names = list(columns)
    data = np.zeros(len(columns[names[0]]), dtype=[(c, np.asarray(columns[c]).dtype) for c in names])
    for c in names:
        data[c] = columns[c]
    with atomic_path(path) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as f:
            f.write(data, extname=extname, units=[units.get(c, "") for c in names],
                    header=[{"name": k, "value": v} for k, v in header.items()])
            for hdu in f:
                add_checksum_placeholders(hdu)
        # Our checksums carry no date: the same simulation gives byte-identical truth tables.
        finalize_checksums(tmp)
