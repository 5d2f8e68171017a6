"""Write a synthetic DESI healpix data release with known truth.

Layout: ``OUT/healpix/{survey}/{program}/{pixel//100}/{pixel}/coadd-{survey}-{program}-{pixel}.fits``
and ``redrock-...fits`` beside it, pixels at nside 64 NESTED, plus ``OUT/truth-desi.fits``. The coadds
carry every HDU a real one has (PRIMARY, FIBERMAP, EXP_FIBERMAP, B/R/Z WAVELENGTH, FLUX, IVAR,
MASK, RESOLUTION, SCORES) with the columns, dtypes, units and keywords of the real files
(:mod:`catalog_tool.sim._desi_schema`); redrock files have REDSHIFTS, FIBERMAP, EXP_FIBERMAP, TSNR2.

Memory stays bounded: a pixel's metadata is planned in full (a few hundred bytes a target), its
spectra are rendered and written ``chunk`` rows at a time into pre-sized image HDUs. Determinism:
one :class:`numpy.random.SeedSequence` per run, spawned into one child per pixel (and per chunk).
See docs/simulation.md ("Instruments", "File formats written").
"""

from __future__ import annotations

import concurrent.futures
import math
import multiprocessing
import os
from dataclasses import dataclass

import fitsio
import healpy as hp
import numpy as np

from catalog_tool import __version__
from catalog_tool.errors import ConfigError
from catalog_tool.sim import _desi_schema as schema
from catalog_tool.sim import _fitsraw as fr
from catalog_tool.sim import instrument as ins
from catalog_tool.sim import randomise as rnd
from catalog_tool.sim.common import (
    LABELS, SimResult, as_label_table, atomic_path, check_snr_range, draw_labels, draw_rv,
    draw_snr, load_model, prepare_output, source_flux, write_truth,
)
from catalog_tool.sim.templates import stellar_class
from catalog_tool.threads import single_thread_blas

__all__ = ["DesiMix", "simulate_desi", "coadd_path", "NSIDE", "TRUTH_NAME", "BITS"]

NSIDE = 64
TRUTH_NAME = "truth-desi.fits"

#: Bit values used (desitarget targetmask.yaml, desispec maskbits, redrock zwarning).
BITS = {
    # DESI_TARGET
    "LRG": 1 << 0, "ELG": 1 << 1, "QSO": 1 << 2, "SKY": 1 << 32, "STD_FAINT": 1 << 33,
    "STD_BRIGHT": 1 << 35, "BGS_ANY": 1 << 60, "MWS_ANY": 1 << 61,
    # MWS_TARGET
    "MWS_BROAD": 1 << 0, "MWS_MAIN_BLUE": 1 << 8, "MWS_MAIN_BLUE_SOUTH": 1 << 10,
    "MWS_MAIN_RED": 1 << 11, "MWS_MAIN_RED_SOUTH": 1 << 13,
    # BGS_TARGET
    "BGS_BRIGHT": 1 << 1,
    # COADD_FIBERSTATUS (fibermask)
    "UNASSIGNED": 1 << 0, "RESTRICTED": 1 << 3, "POORPOSITION": 1 << 10,
    "BADAMPB": 1 << 22, "BADAMPR": 1 << 23, "BADAMPZ": 1 << 24,
    # {ARM}_MASK (specmask)
    "SOMEBADPIX": 1 << 0, "ALLBADPIX": 1 << 1, "COSMIC": 1 << 2, "BADFIBER": 1 << 9,
    # ZWARN (redrock)
    "ZW_SKY": 1 << 0, "ZW_LITTLE_COVERAGE": 1 << 1, "ZW_SMALL_DELTA_CHI2": 1 << 2,
    "ZW_NODATA": 1 << 9,
}
_ARMS = ("B", "R", "Z")
_KIND_CODE = {"star": 0, "galaxy": 1, "qso": 2, "sky": 3, "unassigned": 4}
_KINDS = np.array(list(_KIND_CODE))
_BUNIT_FLUX = "10**-17 erg/(s cm2 Angstrom)"
_BUNIT_IVAR = "10**+34 (s2 cm4 Angstrom2) / erg2"
_TSNR2_NAMES = [c[0] for c in schema.TSNR2_COLUMNS[1:]]


@dataclass(frozen=True)
class DesiMix:
    """Fractions of non-stellar rows per pixel (the rest are stars).

    With at least 10 rows in a pixel every kind with a non-zero fraction gets at least one row,
    so small test releases still contain the full mess.
    """

    unassigned: float = 0.03
    sky: float = 0.07
    galaxy: float = 0.06
    qso: float = 0.03

    def counts(self, nstars_or_rows: int, *, stars_given: bool) -> dict:
        """Number of rows of each kind; ``stars_given``: the argument is the star count."""
        frac = {"unassigned": self.unassigned, "sky": self.sky, "galaxy": self.galaxy, "qso": self.qso}
        if stars_given:
            total = nstars_or_rows / max(1.0 - sum(frac.values()), 1e-3)
        else:
            total = nstars_or_rows
        out = {}
        for k, f in frac.items():
            c = int(round(f * total))
            out[k] = max(c, 1) if (f > 0 and total >= 10) else c
        if stars_given:
            out["star"] = nstars_or_rows
        else:
            out["star"] = nstars_or_rows - sum(out.values())
        return out


def coadd_path(out: str, *, survey: str, program: str, pixel: int, prefix: str = "coadd") -> str:
    """Path of a healpix file inside a release tree."""
    return os.path.join(out, "healpix", survey, program, str(pixel // 100), str(pixel),
                        f"{prefix}-{survey}-{program}-{pixel}.fits")


# ------------------------------------------------------------------------------------------------
# planning: who is in each pixel
# ------------------------------------------------------------------------------------------------
def _choose_pixels(n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` distinct nside-64 nested pixels in a DESI-like footprint (dec > -15, |b| > 20)."""
    npix = hp.nside2npix(NSIDE)
    ra, dec = hp.pix2ang(NSIDE, np.arange(npix), nest=True, lonlat=True)
    # Galactic latitude from the equatorial position (J2000 pole at 192.859, 27.128 deg).
    d, r = np.radians(dec), np.radians(ra - 192.85948)
    sinb = np.sin(d) * np.sin(np.radians(27.12825)) + np.cos(d) * np.cos(np.radians(27.12825)) * np.cos(r)
    ok = np.flatnonzero((dec > -15) & (np.abs(np.degrees(np.arcsin(sinb))) > 20))
    return np.sort(rng.choice(ok, size=n, replace=False))


def _points_in_pixel(pixel: int, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` uniform random (ra, dec) inside a nested pixel (rejection sampling from a cap)."""
    vec0 = np.array(hp.pix2vec(NSIDE, pixel, nest=True))
    corners = hp.boundaries(NSIDE, pixel, nest=True)
    rad = np.arccos(np.clip(vec0 @ corners, -1, 1)).max() * 1.01
    ra_c, dec_c = hp.pix2ang(NSIDE, pixel, nest=True, lonlat=True)
    out_ra, out_dec = [], []
    have = 0
    while have < n:
        m = 4 * (n - have) + 16
        # uniform in the cap around the pole, then rotated to the pixel centre
        cost = rng.uniform(np.cos(rad), 1.0, m)
        phi = rng.uniform(0, 2 * np.pi, m)
        sint = np.sqrt(1 - cost ** 2)
        x, y, z = sint * np.cos(phi), sint * np.sin(phi), cost
        th, ph = np.radians(90.0 - dec_c), np.radians(ra_c)
        x1 = x * np.cos(th) + z * np.sin(th)
        z1 = -x * np.sin(th) + z * np.cos(th)
        x2, y2 = x1 * np.cos(ph) - y * np.sin(ph), x1 * np.sin(ph) + y * np.cos(ph)
        ra = np.degrees(np.arctan2(y2, x2)) % 360.0
        dec = np.degrees(np.arcsin(np.clip(z1, -1, 1)))
        keep = hp.ang2pix(NSIDE, ra, dec, nest=True, lonlat=True) == pixel
        out_ra.append(ra[keep])
        out_dec.append(dec[keep])
        have += keep.sum()
    return np.concatenate(out_ra)[:n], np.concatenate(out_dec)[:n]


def _plan_pixel(pixel: int, *, counts: dict, star_labels: dict | None, label_rows: np.ndarray | None,
                snr_range, program: str, rng: np.random.Generator,
                randomise: rnd.DomainRandomisation | None = None) -> dict:
    """Per-row truth and targeting of one pixel (no spectra yet); with ``randomise``, also the
    per-spectrum domain-randomisation values (drawn last, so nothing else changes)."""
    kinds = np.concatenate([np.full(counts[k], _KIND_CODE[k]) for k in _KIND_CODE])
    perm = rng.permutation(kinds.size)
    kinds = kinds[perm]  # kinds interleaved like fibres on a plate
    n = kinds.size
    ra, dec = _points_in_pixel(pixel, n, rng)
    star = kinds == 0
    ns = int(star.sum())
    p = {"KIND": kinds, "TARGET_RA": ra, "TARGET_DEC": dec}
    for c in LABELS:
        p[c] = np.full(n, np.nan)
    p["LABEL_ROW"] = np.full(n, -1, np.int64)
    lab = star_labels if star_labels is not None else draw_labels(ns, rng=rng)
    for c in LABELS:
        p[c][star] = lab[c]
    if label_rows is not None:
        p["LABEL_ROW"][star] = label_rows
    rv = np.full(n, np.nan)
    rv[star] = lab["RV"] if "RV" in lab else draw_rv(ns, feh=lab["FEH"], rng=rng)
    p["RV"] = rv
    z = np.zeros(n)
    z[star] = ins.doppler_factor(rv=rv[star]) - 1.0
    gal, qso = kinds == 1, kinds == 2
    z[gal] = rng.uniform(0.02, 0.45, gal.sum())
    z[qso] = rng.uniform(0.3, 3.2, qso.sum())
    p["Z"] = z
    snr = draw_snr(n, snr_range=snr_range, rng=rng)
    if "SNR" in lab:
        snr[star] = lab["SNR"]
    snr[kinds >= 3] = np.nan
    p["SNR"] = snr
    mag = np.where(star, 16.0 + 3.0 * rng.random(n), 18.0 + 2.5 * rng.random(n))
    mag[kinds >= 3] = np.nan
    p["MAG_R"] = mag

    # Targeting ids (desitarget layout: RELEASE<<42 | BRICKID<<22 | OBJID; sky adds bit 59).
    brickid = pixel % (1 << 20)
    objid = np.arange(n, dtype=np.int64) + 1
    tid = (np.int64(9010) << 42) | (np.int64(brickid) << 22) | objid
    tid[kinds == 3] = (np.int64(1) << 59) | (np.int64(brickid) << 22) | objid[kinds == 3]
    location = rng.choice(np.arange(10 * 1000), size=n, replace=False) + 1000  # PETAL*1000 + DEVICE
    tid[kinds == 4] = -(location[kinds == 4] + 2_700_000)  # negative, like real unassigned fibres
    p["TARGETID"] = tid
    p["LOCATION"] = location

    status = np.zeros(n, np.int32)
    tgt = kinds <= 2
    u = rng.random(n)
    status[tgt & (u < 0.02)] = BITS["POORPOSITION"]
    status[tgt & (u >= 0.02) & (u < 0.03)] = BITS["RESTRICTED"]
    badarm = np.full(n, -1)
    bad = tgt & (u >= 0.03) & (u < 0.05)  # ~2% of targets lose one camera (bad amplifier)
    badarm[bad] = rng.integers(0, 3, bad.sum())
    for a, name in enumerate(("BADAMPB", "BADAMPR", "BADAMPZ")):
        status[badarm == a] |= BITS[name]
    status[kinds == 4] = np.where(rng.random((kinds == 4).sum()) < 0.5, 1, 1033)
    p["COADD_FIBERSTATUS"] = status
    p["BADARM"] = badarm

    desi_t = np.zeros(n, np.int64)
    mws_t = np.zeros(n, np.int64)
    bgs_t = np.zeros(n, np.int64)
    blue = star & (p["TEFF"] > 5500)
    mws_t[blue] = BITS["MWS_MAIN_BLUE"] | BITS["MWS_MAIN_BLUE_SOUTH"]
    mws_t[star & ~blue] = BITS["MWS_MAIN_RED"] | BITS["MWS_MAIN_RED_SOUTH"]
    broad = star & (rng.random(n) < 0.15)
    mws_t[broad] = BITS["MWS_BROAD"]
    desi_t[star] = BITS["MWS_ANY"]
    std = star & (rng.random(n) < 0.05) & (p["TEFF"] > 5800)
    desi_t[std] |= BITS["STD_BRIGHT"] if program == "bright" else BITS["STD_FAINT"]
    if program == "bright":
        desi_t[gal] = BITS["BGS_ANY"]
        bgs_t[gal] = BITS["BGS_BRIGHT"]
    else:
        desi_t[gal] = np.where(rng.random(gal.sum()) < 0.5, BITS["LRG"], BITS["ELG"])
    desi_t[qso] = BITS["QSO"]
    desi_t[kinds == 3] = BITS["SKY"]
    p["DESI_TARGET"], p["MWS_TARGET"], p["BGS_TARGET"] = desi_t, mws_t, bgs_t
    p["NUMEXP"] = np.where(kinds == 4, 1, rng.integers(1, 4, n)).astype(np.int16)
    if randomise is not None:
        p.update(rnd.draw_parameters(n, settings=randomise, rng=rng))
    return p


def _fibermap(p: dict, *, survey: str, program: str, rng: np.random.Generator) -> np.ndarray:
    n = p["KIND"].size
    fm = np.zeros(n, dtype=schema.dtype_of(schema.FIBERMAP_COLUMNS))
    kinds = p["KIND"]
    star, gal, sky, una = kinds == 0, kinds == 1, kinds == 3, kinds == 4
    ra, dec = p["TARGET_RA"], p["TARGET_DEC"]
    fm["TARGETID"] = p["TARGETID"]
    fm["COADD_FIBERSTATUS"] = p["COADD_FIBERSTATUS"]
    fm["TARGET_RA"], fm["TARGET_DEC"] = ra, dec
    fm["DESINAME"] = np.char.mod("DESI J%08.4f", ra).astype("U") + np.char.mod("%+08.4f", dec).astype("U")
    fm["REF_EPOCH"] = np.where(star, 2015.5, 0.0)
    fm["PMRA"] = np.where(star, rng.normal(0, 8, n), 0.0)
    fm["PMDEC"] = np.where(star, rng.normal(-3, 8, n), 0.0)
    fm["PARALLAX"] = np.where(star, np.abs(rng.normal(0.4, 0.3, n)), 0.0)
    fm["FA_TARGET"] = p["DESI_TARGET"]
    fm["FA_TYPE"] = np.select([una, sky, star], [0, 4, 1], 1).astype(np.uint8)
    fm["OBJTYPE"] = np.where(una, "", np.where(sky, "SKY", "TGT"))
    fm["SUBPRIORITY"] = rng.random(n)
    fm["OBSCONDITIONS"] = np.where(una, 0, 4 if program == "bright" else 1)
    fm["RELEASE"] = np.where(una, 0, 9010)
    fm["BRICKNAME"] = np.where(una, "", np.char.mod("%04d", (ra * 10).astype(int)).astype("U")
                               + np.where(dec >= 0, "p", "m")
                               + np.char.mod("%03d", np.abs(dec * 10).astype(int)).astype("U"))
    fm["BRICKID"] = np.where(una, 0, (p["TARGETID"] >> 22) & ((1 << 20) - 1))
    fm["BRICK_OBJID"] = np.where(una, 0, p["TARGETID"] & ((1 << 22) - 1))
    fm["MORPHTYPE"] = np.where(star, "PSF", np.where(gal, "EXP", np.where(kinds == 2, "PSF", "")))
    fm["EBV"] = rng.uniform(0.01, 0.08, n)
    mag = np.nan_to_num(p["MAG_R"], nan=99.0)
    flux_r = np.where(mag < 90, 10 ** (-0.4 * (mag - 22.5)), 0.0)
    colour = np.where(star, np.clip((6500 - np.nan_to_num(p["TEFF"], nan=5500)) / 2500, -0.3, 1.6), 0.8)
    fm["FLUX_R"] = flux_r
    fm["FLUX_G"] = flux_r * 10 ** (-0.4 * colour)
    fm["FLUX_Z"] = flux_r * 10 ** (0.4 * 0.4 * colour)
    fm["FLUX_W1"], fm["FLUX_W2"] = 0.5 * fm["FLUX_Z"], 0.3 * fm["FLUX_Z"]
    for b in ("G", "R", "Z", "W1", "W2"):
        fm[f"FLUX_IVAR_{b}"] = np.where(fm[f"FLUX_{b}"] > 0, 1.0 / (0.02 * fm[f"FLUX_{b}"] + 0.05) ** 2, 0.0)
    for b in ("G", "R", "Z"):
        fm[f"FIBERFLUX_{b}"] = 0.78 * fm[f"FLUX_{b}"]
        fm[f"FIBERTOTFLUX_{b}"] = 0.80 * fm[f"FLUX_{b}"]
    fm["SHAPE_R"] = np.where(gal, rng.uniform(0.4, 2.5, n), 0.0)
    fm["SERSIC"] = np.where(gal, 1.0, 0.0)
    fm["REF_ID"] = np.where(star, rng.integers(1 << 40, 1 << 60, n), 0)
    fm["REF_CAT"] = np.where(star, "G2", "")
    g = np.where(star, mag + 0.2, 0.0)
    fm["GAIA_PHOT_G_MEAN_MAG"] = g
    fm["GAIA_PHOT_BP_MEAN_MAG"] = np.where(star, g + 0.3 * colour + 0.2, 0.0)
    fm["GAIA_PHOT_RP_MEAN_MAG"] = np.where(star, g - 0.5 * colour - 0.2, 0.0)
    fm["PHOTSYS"] = np.where(una, "", "S")
    fm["PRIORITY_INIT"] = np.select([star, gal, kinds == 2], [1500, 2100, 3400], 0)
    fm["NUMOBS_INIT"] = np.where(una | sky, 0, 1)
    fm["DESI_TARGET"], fm["BGS_TARGET"], fm["MWS_TARGET"] = p["DESI_TARGET"], p["BGS_TARGET"], p["MWS_TARGET"]
    fm["PLATE_RA"], fm["PLATE_DEC"] = ra, dec
    fm["COADD_NUMEXP"] = p["NUMEXP"]
    fm["COADD_EXPTIME"] = np.where(una, 0.0, p["NUMEXP"] * (300.0 if program == "bright" else 1000.0))
    fm["COADD_NUMNIGHT"] = np.where(una, 0, 1)
    fm["COADD_NUMTILE"] = np.where(una, 0, 1)
    fm["MEAN_DELTA_X"], fm["MEAN_DELTA_Y"] = rng.normal(0, 0.002, n), rng.normal(0, 0.002, n)
    fm["RMS_DELTA_X"], fm["RMS_DELTA_Y"] = np.abs(rng.normal(0, 0.003, n)), np.abs(rng.normal(0, 0.003, n))
    fm["MEAN_PSF_TO_FIBER_SPECFLUX"] = np.where(una, 0.0, 0.79)
    fm["MEAN_FIBER_RA"], fm["MEAN_FIBER_DEC"] = ra, dec
    mjd = 59300.0 + (int(np.floor(ra.mean() * 7)) % 900)
    fm["MIN_MJD"] = fm["MAX_MJD"] = fm["MEAN_MJD"] = np.where(una, 0.0, mjd + 0.2)
    return fm


def _exp_fibermap(p: dict, fm: np.ndarray, *, program: str, rng: np.random.Generator) -> np.ndarray:
    nexp = p["NUMEXP"].astype(int)
    idx = np.repeat(np.arange(nexp.size), nexp)
    k = np.concatenate([np.arange(m) for m in nexp]) if nexp.size else np.zeros(0, int)
    e = np.zeros(idx.size, dtype=schema.dtype_of(schema.EXP_FIBERMAP_COLUMNS))
    e["TARGETID"] = fm["TARGETID"][idx]
    e["PRIORITY"] = fm["PRIORITY_INIT"][idx]
    e["SUBPRIORITY"] = fm["SUBPRIORITY"][idx]
    mjd0 = fm["MEAN_MJD"].max() if fm.size else 59300.2
    e["MJD"] = mjd0 + 0.01 * k
    e["NIGHT"] = 20210401 + (np.int64(mjd0) % 27)
    e["EXPID"] = 80000 + k
    e["TILEID"] = 1000 + (np.int64(mjd0) % 9000)
    e["EXPTIME"] = np.where(p["KIND"][idx] == 4, 0.0, 300.0 if program == "bright" else 1000.0)
    loc = p["LOCATION"][idx]
    e["PETAL_LOC"] = loc // 1000
    e["DEVICE_LOC"] = loc % 1000
    e["LOCATION"] = loc
    e["FIBER"] = (loc // 1000) * 500 + (loc % 1000) % 500
    e["FIBERSTATUS"] = p["COADD_FIBERSTATUS"][idx]
    e["FIBERASSIGN_X"] = rng.uniform(-400, 400, idx.size)
    e["FIBERASSIGN_Y"] = rng.uniform(-400, 400, idx.size)
    e["LAMBDA_REF"] = 5400.0
    e["PLATE_RA"], e["PLATE_DEC"] = fm["TARGET_RA"][idx], fm["TARGET_DEC"][idx]
    e["NUM_ITER"] = 2
    e["FIBER_X"], e["FIBER_Y"] = e["FIBERASSIGN_X"], e["FIBERASSIGN_Y"]
    e["DELTA_X"], e["DELTA_Y"] = rng.normal(0, 0.003, idx.size), rng.normal(0, 0.003, idx.size)
    e["FIBER_RA"], e["FIBER_DEC"] = fm["TARGET_RA"][idx], fm["TARGET_DEC"][idx]
    e["PSF_TO_FIBER_SPECFLUX"] = 0.79
    e["IN_COADD_B"] = e["IN_COADD_R"] = e["IN_COADD_Z"] = p["KIND"][idx] != 4
    return e


# ------------------------------------------------------------------------------------------------
# spectra
# ------------------------------------------------------------------------------------------------
class _Instrument:
    """Per-run constants of the DESI instrument: grids, LSF, sky, throughput, resolution data."""

    def __init__(self):
        self.wave = {a: ins.desi_wave(a) for a in _ARMS}
        self.npix = {a: self.wave[a].size for a in _ARMS}
        self.all_wave = np.concatenate([self.wave[a] for a in _ARMS])
        self.slices, i = {}, 0
        for a in _ARMS:
            self.slices[a] = slice(i, i + self.npix[a])
            i += self.npix[a]
        self.grid = ins.FineGrid.covering(self.all_wave[0], self.all_wave[-1], vmax=700.0, dloglam=5e-5)
        R = np.concatenate([ins.desi_resolving_power(wave=self.wave[a], arm=a) for a in _ARMS])
        self.fwhm = ins.effective_fwhm(wave=self.all_wave, resolving_power=R)
        # Extra broadening on the fine grid (zero for DESI: the instrument is sharper than the
        # model everywhere; kept so the code path is the same as LAMOST's).
        R_fine = np.interp(self.grid.wave, self.all_wave, R)
        self.lsf = ins.lsf_matrix(grid=self.grid, fwhm=ins.broadening_fwhm(wave=self.grid.wave, resolving_power=R_fine))
        self.sky = ins.sky_spectrum(wave=self.all_wave, fwhm=self.fwhm)
        # Throughput falls towards each arm's ends (dichroics, CCD QE): noisier overlaps.
        t = np.empty_like(self.all_wave)
        for a in _ARMS:
            w = self.wave[a]
            x = (w - w[0]) / (w[-1] - w[0])
            t[self.slices[a]] = 0.25 + 0.75 * np.sin(np.pi * np.clip(x, 0, 1)) ** 0.35
        self.throughput = t
        self.ref = (self.all_wave > 6000) & (self.all_wave < 7500) & (np.arange(self.all_wave.size) < self.slices["Z"].start)
        self.resolution = {a: ins.resolution_diagonals(fwhm_pix=self.fwhm[self.slices[a]] / ins.DESI_DWAVE)
                           for a in _ARMS}
        self._res_blocks = {}
        self.lsf_cache = {}  # domain randomisation: extra-LSF matrices by quantised width

    def ref_pixels(self, window: tuple | None) -> np.ndarray:
        """Pixels over which the S/N is set: 6000-7500 A of the R arm, or ``window`` (A) in the first
        arm that covers it (``(4000, 5600)``: S/N per B pixel)."""
        if window is None:
            return self.ref
        lo, hi = window
        for a in _ARMS:
            w = self.wave[a]
            if w[0] <= lo and hi <= w[-1]:
                ref = np.zeros(self.all_wave.size, bool)
                ref[self.slices[a]] = (w >= lo) & (w <= hi)
                return ref
        raise ConfigError(f"S/N window {lo:g}-{hi:g} A is not inside one DESI arm")

    def resolution_block(self, arm: str, rows: int = 32) -> tuple[np.ndarray, int]:
        """``rows`` copies of the arm's RESOLUTION diagonals as big-endian float32, and the FITS
        checksum of one copy: every fibre has the same LSF, so it is encoded once per run."""
        if arm not in self._res_blocks:
            one = self.resolution[arm].astype(">f4")
            block = np.ascontiguousarray(np.broadcast_to(one, (rows,) + one.shape))
            self._res_blocks[arm] = (block, fr.ones_sum(one))
        return self._res_blocks[arm]


def _normalise_to_mag(flux: np.ndarray, inst: _Instrument, mag: np.ndarray) -> np.ndarray:
    band = (inst.all_wave > 6000) & (inst.all_wave < 6500)
    level = np.median(flux[:, band], axis=1)
    target = ins.ab_flux_density(mag=mag, wave=6250.0)
    return flux * (target / np.maximum(level, 1e-30))[:, None]


def _spans(n: int, npix: int, rate: float, rng: np.random.Generator, maxlen: int = 6) -> np.ndarray:
    """Boolean (n, npix): Poisson(``rate``) random spans of 1..maxlen pixels per row (cosmics)."""
    k = rng.poisson(rate, n)
    rows = np.repeat(np.arange(n), k)
    start = rng.integers(0, npix, rows.size)
    stop = np.minimum(start + rng.integers(1, maxlen + 1, rows.size), npix)
    d = np.zeros((n, npix + 1), np.int32)
    np.add.at(d, (rows, start), 1)
    np.add.at(d, (rows, stop), -1)
    return np.cumsum(d, axis=1)[:, :npix] > 0


def _render_chunk(p: dict, rows: slice, *, inst: _Instrument, model, rng: np.random.Generator) -> dict:
    """Flux, ivar and mask of rows ``rows`` of a planned pixel, per arm (RESOLUTION: the writer's)."""
    kinds = p["KIND"][rows]
    n = kinds.size
    nall = inst.all_wave.size
    star, gal, qso, sky = kinds == 0, kinds == 1, kinds == 2, kinds == 3
    rz = "EBV" in p  # domain randomisation (catalog_tool.sim.randomise) drawn in the plan
    # Its own stream for the randomisation's draws, so that switching one ingredient off changes
    # nothing else.
    rrng = np.random.default_rng(rng.integers(0, 2**63)) if rz else None
    extra = ({"fwhm": p["LSF_EXTRA"][rows], "slope": p["LSF_SLOPE"][rows], "cache": inst.lsf_cache,
              "wrange": (inst.all_wave[0], inst.all_wave[-1])} if rz else None)
    flux = source_flux(star=star, galaxy=gal, qso=qso, labels={c: p[c][rows] for c in LABELS + ("LABEL_ROW",)},
                       z=p["Z"][rows], wave=inst.all_wave, grid=inst.grid, lsf=inst.lsf, model=model,
                       rng=rng, extra_lsf=extra)
    src = star | gal | qso
    if rz:
        flux[src] *= rnd.ccm89_extinction(wave=inst.all_wave, ebv=p["EBV"][rows][src])
    mag = np.where(src, p["MAG_R"][rows], 20.0)  # sky rows: noise of a r=20 source's exposure
    flux[src] = _normalise_to_mag(flux[src], inst, mag[src])
    # Flux-calibration quirks: a smooth 3% curve across all arms and a ~1.5% offset per arm (so the
    # arms disagree slightly in their overlaps, as real coadds do).
    cal = 0.03 * (p["CAL_SCALE"][rows] if rz else np.ones(n))
    distort = ins.calibration_distortion(wave=inst.all_wave, amplitude=cal, rng=rng)
    arm_off = 1.0 + 0.015 * rng.standard_normal((n, 3))
    for j, a in enumerate(_ARMS):
        distort[:, inst.slices[a]] *= arm_off[:, j:j + 1]
    if rz:
        distort *= rnd.calibration_wiggles(wave=inst.all_wave, amplitude=p["WIGGLE"][rows], rng=rrng)
    flux *= distort
    snr = np.where(src, p["SNR"][rows], 5.0)
    noise_flux = np.where(sky[:, None], ins.ab_flux_density(mag=20.0, wave=inst.all_wave)[None, :], flux)
    noisy, ivar = ins.add_noise(flux=noise_flux, sky=inst.sky, snr=snr, ref=inst.ref_pixels(p.get("SNR_WINDOW")),
                                rng=rng, throughput=inst.throughput)
    noisy[sky] -= noise_flux[sky].astype(np.float32)  # sky fibres: sky-subtracted residual only
    if rz:  # sky over- or under-subtracted by a fraction SKY_RESID
        noisy[src] += (p["SKY_RESID"][rows][src, None] * inst.sky[None, :]).astype(np.float32)

    mask = np.zeros((n, nall), np.int32)
    cosmic = _spans(n, nall, 3.0, rng) & (kinds != 4)[:, None]
    mask[cosmic] = BITS["COSMIC"] | BITS["SOMEBADPIX"]
    ivar[cosmic] = 0.0
    if rz:  # runs of bad columns / dead CCD regions
        runs = rnd.masked_runs(runs=np.where(src, p["MASK_RUNS"][rows], 0), npix=nall, rng=rrng)
        mask[runs] |= BITS["ALLBADPIX"] | BITS["SOMEBADPIX"]
        ivar[runs] = 0.0
    out = {}
    una = kinds == 4
    badarm = p["BADARM"][rows]
    for j, a in enumerate(_ARMS):
        s = inst.slices[a]
        f, iv, m = noisy[:, s].copy(), ivar[:, s].copy(), mask[:, s].copy()
        dead = badarm == j
        iv[dead] = 0.0
        m[dead] = BITS["BADFIBER"] | BITS["ALLBADPIX"]
        f[una], iv[una], m[una] = 0.0, 0.0, 0  # unassigned fibres: all-zero data, as in real coadds
        out[a] = {"FLUX": f, "IVAR": iv, "MASK": m}
    return out


def _scores_rows(chunk: dict, tid: np.ndarray, inst: _Instrument, tsnr2: np.ndarray) -> np.ndarray:
    s = np.zeros(tid.size, dtype=schema.dtype_of(schema.SCORES_COLUMNS))
    s["TARGETID"] = tid
    for a in _ARMS:
        f, iv = chunk[a]["FLUX"], chunk[a]["IVAR"]
        good = iv > 0
        s[f"INTEG_COADD_FLUX_{a}"] = np.sum(np.where(good, f, 0.0), axis=1) * ins.DESI_DWAVE
        s[f"MEDIAN_COADD_FLUX_{a}"] = np.median(f, axis=1)
        s[f"MEDIAN_COADD_SNR_{a}"] = np.median(f * np.sqrt(iv), axis=1)
    for c in _TSNR2_NAMES:
        s[c] = tsnr2[c]
    return s


def _tsnr2(p: dict, rng: np.random.Generator) -> np.ndarray:
    n = p["KIND"].size
    t = np.zeros(n, dtype=schema.dtype_of(schema.TSNR2_COLUMNS))
    t["TARGETID"] = p["TARGETID"]
    base = p["NUMEXP"] * rng.uniform(0.8, 1.2, n)
    scale = {"BGS": 800, "ELG": 80, "GPBBACKUP": 40, "GPBBRIGHT": 4, "GPBDARK": 12, "LRG": 60, "LYA": 900, "QSO": 25}
    for k, v in scale.items():
        for j, a in enumerate(_ARMS):
            t[f"TSNR2_{k}_{a}"] = v * base * (0.2, 0.3, 0.5)[j]
        t[f"TSNR2_{k}"] = v * base
    return t


def _redshifts(p: dict, npixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = p["KIND"].size
    kinds = p["KIND"]
    r = np.zeros(n, dtype=schema.dtype_of(schema.REDSHIFTS_COLUMNS))
    r["TARGETID"] = p["TARGETID"]
    snr = np.nan_to_num(p["SNR"], nan=1.0)
    zerr = np.where(kinds == 0, (3.0 / np.maximum(snr, 1.0) + 0.3) / ins.C_KMS, 1e-4 * (1 + p["Z"]) / np.maximum(snr, 1.0))
    r["ZERR"] = zerr
    r["Z"] = p["Z"] + zerr * rng.standard_normal(n)
    r["SPECTYPE"] = np.select([kinds == 0, kinds == 2], ["STAR", "QSO"], "GALAXY")
    r["SUBTYPE"] = np.where(kinds == 0, stellar_class(teff=np.nan_to_num(p["TEFF"], nan=5000)), "")
    r["FITMETHOD"] = "PCA"
    r["NCOEFF"] = np.select([kinds == 0, kinds == 2], [5, 4], 10)
    r["COEFF"] = rng.normal(0, 10, (n, 10)) * (np.arange(10)[None, :] < r["NCOEFF"][:, None])
    r["NPIXELS"] = npixels
    r["CHI2"] = npixels * rng.uniform(0.9, 1.3, n)
    r["DELTACHI2"] = np.where(kinds >= 3, rng.uniform(0, 5, n), 25.0 * snr ** 2 * rng.uniform(0.5, 1.5, n))
    zw = np.zeros(n, np.int64)
    zw[kinds == 3] = BITS["ZW_SKY"]
    zw[kinds == 4] = BITS["ZW_NODATA"] | BITS["ZW_LITTLE_COVERAGE"]
    zw[p["BADARM"] >= 0] |= BITS["ZW_LITTLE_COVERAGE"]
    low = (kinds <= 2) & (r["DELTACHI2"] < 25.0)
    zw[low] |= BITS["ZW_SMALL_DELTA_CHI2"]
    r["ZWARN"] = zw
    r["Z"][kinds == 4] = 0.0
    r["COEFF"][kinds == 4] = 0.0
    return r


# ------------------------------------------------------------------------------------------------
# writing
# ------------------------------------------------------------------------------------------------
def _primary_header(pixel: int, survey: str, program: str, seed: int) -> list[dict]:
    return [
        {"name": "SPGRP", "value": "healpix"}, {"name": "SPGRPVAL", "value": int(pixel)},
        {"name": "HPXPIXEL", "value": int(pixel)}, {"name": "HPXNSIDE", "value": NSIDE},
        {"name": "HPXNEST", "value": True}, {"name": "SURVEY", "value": survey},
        {"name": "PROGRAM", "value": program}, {"name": "LONGSTRN", "value": "OGIP 1.0"},
        {"name": "DEPNAM00", "value": "stxcat"}, {"name": "DEPVER00", "value": __version__},
        {"name": "SIMULATE", "value": True, "comment": "synthetic spectra written by stxcat simulate"},
        {"name": "SIMSEED", "value": int(seed), "comment": "stxcat simulate --seed"},
    ]


def _table_header(pixel: int, survey: str, program: str) -> list[dict]:
    return [
        {"name": "ENCODING", "value": "ascii"}, {"name": "LONGSTRN", "value": "OGIP 1.0"},
        {"name": "SURVEY", "value": survey}, {"name": "PROGRAM", "value": program},
        {"name": "INSTRUME", "value": "DESI"}, {"name": "OBSERVAT", "value": "KPNO"},
        {"name": "OBS-LAT", "value": "31.96403"}, {"name": "OBS-LONG", "value": "-111.59989"},
        {"name": "OBS-ELEV", "value": 2097.0}, {"name": "TELESCOP", "value": "KPNO 4.0-m telescope"},
        {"name": "HPXPIXEL", "value": int(pixel)}, {"name": "HPXNSIDE", "value": NSIDE},
    ]


def _write_table(fits, data: np.ndarray, columns, extname: str, header: list[dict] | None = None) -> None:
    fits.write(data, extname=extname, units=schema.units_of(columns), header=header)
    hdu = fits[-1]
    for i, (name, comment) in enumerate(zip(data.dtype.names, schema.comments_of(columns)), start=1):
        if comment:
            hdu.write_key(f"TTYPE{i}", name, comment=comment)


def _image_hdus(n: int, inst: _Instrument, resolution: bool) -> list[tuple]:
    """The coadd's image HDUs after EXP_FIBERMAP, in the real files' order (see RawImageWriter)."""
    hdus = []
    for a in _ARMS:
        npix = inst.npix[a]
        hdus.append((f"{a}_WAVELENGTH", "f8", (npix,), [("BUNIT", "Angstrom", "")]))
        hdus.append((f"{a}_FLUX", "f4", (n, npix), [("BUNIT", _BUNIT_FLUX, "")]))
        hdus.append((f"{a}_IVAR", "f4", (n, npix), [("BUNIT", _BUNIT_IVAR, "")]))
        hdus.append((f"{a}_MASK", "i4", (n, npix), []))
        if resolution:
            hdus.append((f"{a}_RESOLUTION", "f4", (n, 11, npix), []))
    return hdus


def _write_resolution(w: fr.RawImageWriter, inst: _Instrument, kinds: np.ndarray, start: int) -> None:
    """RESOLUTION rows of a chunk: the arm's constant block for every fibre but unassigned ones.

    Unassigned rows are skipped; the writer's data region already reads as zeros there.
    """
    assigned = np.concatenate([[False], kinds != 4, [False]])
    edges = np.flatnonzero(np.diff(assigned.astype(np.int8)))
    for a in _ARMS:
        block, rowsum = inst.resolution_block(a)
        for lo, hi in zip(edges[::2], edges[1::2]):  # runs of assigned rows
            for r0 in range(lo, hi, block.shape[0]):
                k = min(block.shape[0], hi - r0)
                w.write_bytes(f"{a}_RESOLUTION", start + r0, block[:k], datasum=fr.ones_repeat(rowsum, k))


def _write_pixel(out: str, pixel: int, p: dict, *, survey, program, seed, inst: _Instrument, model,
                 ss: np.random.SeedSequence, chunk: int, resolution: bool, checksum: bool) -> list[str]:
    meta_ss, spec_ss = ss.spawn(2)
    mrng = np.random.default_rng(meta_ss)
    fm = _fibermap(p, survey=survey, program=program, rng=mrng)
    efm = _exp_fibermap(p, fm, program=program, rng=mrng)
    tsnr2 = _tsnr2(p, mrng)
    n = fm.size
    tab_hdr = _table_header(pixel, survey, program)
    cpath = coadd_path(out, survey=survey, program=program, pixel=pixel)
    nchunks = max(1, math.ceil(n / chunk))
    chunk_ss = spec_ss.spawn(nchunks)
    npixels = np.zeros(n, np.int64)
    scores = []
    with atomic_path(cpath) as tmp:
        # Tables through fitsio; the large images appended raw (no zero fill, no re-read for the
        # checksums: see catalog_tool/sim/_fitsraw.py); SCORES appended by fitsio at the end.
        with fitsio.FITS(tmp, "rw", clobber=True) as f:
            f.write(None, header=_primary_header(pixel, survey, program, seed))
            _write_table(f, fm, schema.FIBERMAP_COLUMNS, "FIBERMAP", tab_hdr)
            _write_table(f, efm, schema.EXP_FIBERMAP_COLUMNS, "EXP_FIBERMAP", tab_hdr)
            if checksum:
                for hdu in f:
                    fr.add_checksum_placeholders(hdu)
        w = fr.RawImageWriter(tmp, _image_hdus(n, inst, resolution), checksum=checksum)
        try:
            for a in _ARMS:
                w.write_rows(f"{a}_WAVELENGTH", 0, inst.wave[a])
            for c in range(nchunks):
                rows = slice(c * chunk, min((c + 1) * chunk, n))
                spec = _render_chunk(p, rows, inst=inst, model=model, rng=np.random.default_rng(chunk_ss[c]))
                for a in _ARMS:
                    for kind, arr in spec[a].items():
                        w.write_rows(f"{a}_{kind}", rows.start, arr)
                    npixels[rows] += (spec[a]["IVAR"] > 0).sum(axis=1)
                if resolution:
                    _write_resolution(w, inst, p["KIND"][rows], rows.start)
                scores.append(_scores_rows(spec, p["TARGETID"][rows], inst, tsnr2[rows]))
        finally:
            w.close()
        with fitsio.FITS(tmp, "rw") as f:
            _write_table(f, np.concatenate(scores), schema.SCORES_COLUMNS, "SCORES")
            if checksum:
                fr.add_checksum_placeholders(f[-1])
        if checksum:
            fr.finalize_checksums(tmp, datasums=w.datasums())
    rpath = coadd_path(out, survey=survey, program=program, pixel=pixel, prefix="redrock")
    with atomic_path(rpath) as tmp:
        with fitsio.FITS(tmp, "rw", clobber=True) as f:
            hdr = _primary_header(pixel, survey, program, seed)
            hdr.insert(0, {"name": "RRVER", "value": "0.20.2"})
            f.write(None, header=hdr)
            _write_table(f, _redshifts(p, npixels, mrng), schema.REDSHIFTS_COLUMNS, "REDSHIFTS")
            _write_table(f, fm, schema.FIBERMAP_COLUMNS, "FIBERMAP", tab_hdr)
            _write_table(f, efm, schema.EXP_FIBERMAP_COLUMNS, "EXP_FIBERMAP", tab_hdr)
            _write_table(f, tsnr2, schema.TSNR2_COLUMNS, "TSNR2")
            if checksum:
                for hdu in f:
                    fr.add_checksum_placeholders(hdu)
        if checksum:
            fr.finalize_checksums(tmp)
    return [os.path.relpath(cpath, out), os.path.relpath(rpath, out)]


_WORKER: dict = {}


def _init_worker(model) -> None:
    """Per-process constants: the spectral model and the instrument (built once, used by every pixel)."""
    if _WORKER.get("given") is not model or "model" not in _WORKER:
        _WORKER.update(given=model, model=load_model(model), inst=_Instrument())


@single_thread_blas()  # OpenBLAS rounds differently with its thread count: the output must not depend on it
def _simulate_pixel(task: dict) -> tuple[list[str], dict]:
    """Plan and write one pixel; returns its two file names and its truth-table columns."""
    plan_ss, write_ss = task["ss"].spawn(2)
    rows_i = task["rows"]
    if rows_i is not None:
        counts = task["mix"].counts(rows_i.size, stars_given=True)
    else:
        counts = task["mix"].counts(task["per_pixel"], stars_given=False)
    pixel, survey, program = task["pixel"], task["survey"], task["program"]
    p = _plan_pixel(pixel, counts=counts, star_labels=task["labels"], label_rows=rows_i,
                    snr_range=task["snr_range"], program=program, rng=np.random.default_rng(plan_ss),
                    randomise=task["randomise"])
    p["SNR_WINDOW"] = task["snr_window"]
    written = _write_pixel(task["out"], pixel, p, survey=survey, program=program, seed=task["seed"],
                           inst=_WORKER["inst"], model=_WORKER["model"], ss=write_ss, chunk=task["chunk"],
                           resolution=task["resolution"], checksum=task["checksum"])
    n = p["KIND"].size
    truth = {
        "TARGETID": p["TARGETID"], "SURVEY": np.full(n, survey), "PROGRAM": np.full(n, program),
        "HEALPIX": np.full(n, pixel, np.int32), "FILE": np.full(n, written[0]),
        "ROW": np.arange(n, dtype=np.int32), "KIND": _KINDS[p["KIND"]],
        "TARGET_RA": p["TARGET_RA"], "TARGET_DEC": p["TARGET_DEC"],
        **{c: p[c] for c in LABELS}, "RV": p["RV"], "Z": p["Z"], "SNR": p["SNR"],
        "MAG_R": p["MAG_R"], "COADD_FIBERSTATUS": p["COADD_FIBERSTATUS"],
        "LABEL_ROW": p["LABEL_ROW"],
        **{c: p[c] for c in rnd.TRUTH_COLUMNS if c in p},
    }
    return written, truth


def simulate_desi(out: str | os.PathLike, *, pixels: int = 4, per_pixel: int = 50, seed: int = 0,
                  survey: str = "main", program: str = "bright", snr_range=(5.0, 80.0), labels=None,
                  mix: DesiMix = DesiMix(), resolution: bool = True, chunk: int = 256,
                  overwrite: bool = False, checksum: bool = True, model=None, workers: int = 1,
                  randomise: rnd.DomainRandomisation | None = None, snr_window: tuple | None = None) -> SimResult:
    """Write a synthetic DESI healpix release with its truth table.

    Parameters
    ----------
    out : path
        Output folder; must be empty or absent unless ``overwrite``.
    pixels : int
        Number of nside-64 nested HEALPix pixels (one coadd and one redrock file each).
    per_pixel : int
        Rows (fibres) per pixel, all kinds; ignored when ``labels`` is given.
    seed : int
        Everything is a deterministic function of the seed and the arguments.
    survey, program : str
        DESI survey and program names used in paths, headers and targeting bits
        (``program="bright"``: MWS/BGS bits; otherwise dark-time LRG/ELG bits for galaxies).
    snr_range : (float, float)
        Median S/N per pixel (6000-7500 A, or ``snr_window``) drawn log-uniform in this range.
    labels : table, optional
        Explicit stars (TEFF, LOGG, FEH, ALPHAFE; optional RV, SNR) instead of drawn ones, split
        evenly over ``pixels``; non-stellar rows are added per :class:`DesiMix`. The truth table's
        LABEL_ROW gives each star's row in ``labels``, so the same stars can be rendered through
        LAMOST with :func:`catalog_tool.sim.lamost.simulate_lamost` and matched.
    mix : DesiMix
        Fractions of unassigned, sky, galaxy and QSO rows.
    resolution : bool
        Write the RESOLUTION HDUs (about 350 kB per spectrum, most of the volume).
    chunk : int
        Spectra rendered and written at a time (bounds memory: ~1.5 MB per spectrum in flight).
    overwrite : bool
        Replace the ``healpix/`` tree and truth table of an earlier simulation in ``out``.
    checksum : bool
        Write CHECKSUM/DATASUM to every HDU, as the pipeline does (re-reads each file once).
    model : object, optional
        Spectral model with ``render(*, teff, logg, feh, alphafe, wave)``; default: the bundled
        :class:`catalog_tool.sim.specmodel.SpectralModel`. With ``workers > 1`` it must be
        picklable (it is sent once to each worker process).
    workers : int
        Processes writing pixels in parallel (1: in this process). The output is the same for any
        number: every pixel draws from its own child of the seed's SeedSequence.
    randomise : DomainRandomisation, optional
        Per-spectrum LSF, calibration, sky-residual, extinction and mask perturbations
        (:mod:`catalog_tool.sim.randomise`), recorded in the truth table. ``None``: the base simulator.
    snr_window : (float, float), optional
        Wavelength window (A, inside one arm) over which the median S/N is ``SNR``; default
        6000-7500 A of the R arm. ``(4000, 5600)`` sets the S/N per B pixel.

    Returns
    -------
    SimResult

    Raises
    ------
    ConfigError
        Invalid arguments (all problems in one message) or a non-empty ``out``.
    """
    problems = []
    if pixels < 1:
        problems.append(f"--pixels must be at least 1, got {pixels}")
    if labels is None and per_pixel < 1:
        problems.append(f"--per-pixel must be at least 1, got {per_pixel}")
    if chunk < 1:
        problems.append(f"chunk must be at least 1, got {chunk}")
    if workers < 1:
        problems.append(f"--workers must be at least 1, got {workers}")
    problems += check_snr_range(snr_range)
    for name, v in (("survey", survey), ("program", program)):
        if not v or not v.replace("_", "").isalnum() or v != v.lower():
            problems.append(f"{name} must be a lower-case word like the DESI ones, got {v!r}")
    if problems:
        raise ConfigError("; ".join(problems))
    lab_all = as_label_table(labels) if labels is not None else None
    if lab_all is not None and len(lab_all["TEFF"]) < pixels:
        raise ConfigError(f"{len(lab_all['TEFF'])} labelled stars cannot fill {pixels} pixels")
    out = prepare_output(out, overwrite=overwrite, owned=["healpix", TRUTH_NAME])
    if lab_all is None and mix.counts(per_pixel, stars_given=False)["star"] < 0:
        raise ConfigError("DesiMix fractions exceed 1")

    root = np.random.SeedSequence(seed)
    sel_ss, pix_root = root.spawn(2)
    pix_list = _choose_pixels(pixels, np.random.default_rng(sel_ss))
    pix_ss = pix_root.spawn(pixels)
    splits = np.array_split(np.arange(len(lab_all["TEFF"])), pixels) if lab_all is not None else None
    common = {"out": out, "per_pixel": per_pixel, "survey": survey, "program": program, "seed": seed,
              "snr_range": tuple(snr_range), "mix": mix, "resolution": resolution, "chunk": chunk,
              "checksum": checksum, "randomise": randomise,
              "snr_window": tuple(snr_window) if snr_window is not None else None}

    def tasks():
        # Everything a pixel needs travels with it (its own SeedSequence child included), so the
        # output does not depend on which process writes which pixel.
        for i, pixel in enumerate(pix_list):
            rows_i = splits[i] if splits is not None else None
            star_lab = {c: v[rows_i] for c, v in lab_all.items()} if rows_i is not None else None
            yield {**common, "pixel": int(pixel), "ss": pix_ss[i], "rows": rows_i, "labels": star_lab}

    files, truth = [], []
    if workers == 1:
        _init_worker(model)
        results = map(_simulate_pixel, tasks())
        for written, t in results:
            files += written
            truth.append(t)
    else:
        ctx = multiprocessing.get_context("spawn")  # no fork: safe beside threads (dask, torch)
        with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=ctx,
                                                    initializer=_init_worker, initargs=(model,)) as pool:
            for written, t in pool.map(_simulate_pixel, tasks()):  # results in pixel order
                files += written
                truth.append(t)
    cols = {k: np.concatenate([t[k] for t in truth]) for k in truth[0]}
    for k in ("SURVEY", "PROGRAM", "FILE", "KIND"):
        cols[k] = cols[k].astype("S")
    truth_path = os.path.join(out, TRUTH_NAME)
    write_truth(truth_path, cols, header={"SURVEY": survey, "PROGRAM": program, "SIMSEED": int(seed),
                                          "NPIXELS": int(pixels), "STXCATV": __version__})
    return SimResult(out=out, files=files, truth=truth_path, nspec=int(cols["TARGETID"].size),
                     nstars=int((cols["KIND"] == b"star").sum()))
