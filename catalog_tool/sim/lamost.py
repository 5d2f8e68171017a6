"""Write synthetic single-spectrum LAMOST LRS files with known truth.

Three layouts, as the real releases have them (see ``../shared/realdata/lamost``):

* ``dr1``: primary image (5, 3904) float32, rows flux, ivar, sub-continuum (flux over a smooth
  continuum), andmask, ormask; wavelengths from COEFF0/COEFF1; no OBSID or DATA_V; SN_U..SN_Z.
* ``dr7``: primary image (5, N), N = 3901-3904, rows flux, ivar, **wavelength**, andmask, ormask;
  EXTNAME 'Flux'; OBSID, DATA_V 'LAMOST DR7', SNRU..SNRZ.
* ``dr10``: empty primary + binary table ``COADD`` (one row) with FLUX, IVAR, WAVELENGTH,
  ANDMASK, ORMASK, NORMALIZATION vectors of 3909 float32.

Files go to ``OUT/spectra/{PLANID}/spec-{LMJD}-{PLANID}_sp{SPID:02d}-{FIBERID:03d}.fits[.gz]``, with a
catalogue ``OUT/catalog-lamost.fits`` of all files in the form of the LAMOST LRS General Catalogue
(its column names and types, :data:`GENERAL_CATALOG_COLUMNS`; ``stxcat annotate --catalog`` plans
from it) and the truth table ``OUT/truth-lamost.fits``.
"""

from __future__ import annotations

import os

import numpy as np

from catalog_tool import __version__
from catalog_tool.errors import ConfigError
from catalog_tool.io.lamost import synthetic_obsid
from catalog_tool.sim import instrument as ins
from catalog_tool.sim import randomise as rnd
from catalog_tool.sim.common import (
    LABELS, SimResult, as_label_table, atomic_fits, check_snr_range, draw_labels, draw_rv,
    draw_snr, load_model, prepare_output, source_flux, write_truth,
)
from catalog_tool.sim.templates import stellar_class
from catalog_tool.threads import single_thread_blas

__all__ = ["simulate_lamost", "general_catalog", "GENERAL_CATALOG_COLUMNS", "LAYOUTS", "TRUTH_NAME",
           "CATALOG_NAME"]

LAYOUTS = ("dr1", "dr7", "dr10")
TRUTH_NAME = "truth-lamost.fits"
CATALOG_NAME = "catalog-lamost.fits"
_NPIX = {"dr1": (3904, 3904), "dr7": (3901, 3904), "dr10": (3909, 3909)}
_BANDS = {"U": (3700, 4000), "G": (4000, 5500), "R": (5500, 6900), "I": (6900, 8300), "Z": (8300, 9100)}
_FIBERS_PER_PLATE = 250
#: ANDMASK/ORMASK value set on cosmic-ray / bad-CCD pixels (LAMOST pipeline bit 1, BADCCD).
MASK_BADCCD = 1


class _Instrument:
    def __init__(self):
        self.wave = ins.lamost_wave(ins.LAMOST_NPIX)
        self.grid = ins.FineGrid.covering(self.wave[0], self.wave[-1], vmax=700.0, dloglam=5e-5)
        self.lsf = ins.lsf_matrix(grid=self.grid, fwhm=ins.broadening_fwhm(wave=self.grid.wave,
                                                                            resolving_power=ins.LAMOST_R))
        self.fwhm = ins.effective_fwhm(wave=self.wave, resolving_power=ins.LAMOST_R)
        self.sky = ins.sky_spectrum(wave=self.wave, fwhm=self.fwhm)
        w = self.wave
        # Blue CCD sensitivity falls below 4000 A; the dichroic at 5700-5900 A splits the arms.
        self.throughput = np.clip((w - 3550.0) / 700.0, 0.15, 1.0) * (1.0 - 0.6 * np.exp(-0.5 * ((w - 5800.0) / 60.0) ** 2))
        self.ref = (w > _BANDS["R"][0]) & (w < _BANDS["R"][1])
        self.band = {b: (w > lo) & (w < hi) for b, (lo, hi) in _BANDS.items()}
        self.lsf_cache = {}  # domain randomisation: extra-LSF matrices by quantised width

    def ref_pixels(self, window: tuple | None) -> np.ndarray:
        """Pixels over which the S/N is set: the r band (5500-6900 A), or ``window`` (A)."""
        if window is None:
            return self.ref
        return (self.wave >= window[0]) & (self.wave <= window[1])


def _smooth(flux: np.ndarray, width: int = 151) -> np.ndarray:
    """Running mean along rows (cumulative sums; edges use the available pixels)."""
    c = np.cumsum(np.pad(flux, ((0, 0), (1, 0))), axis=1)
    n = flux.shape[1]
    lo = np.clip(np.arange(n) - width // 2, 0, n)
    hi = np.clip(np.arange(n) + width // 2 + 1, 0, n)
    return (c[:, hi] - c[:, lo]) / (hi - lo)


def _render(p: dict, rows: np.ndarray, *, inst: _Instrument, model, rng: np.random.Generator) -> dict:
    kinds = p["KIND"][rows]
    n = rows.size
    rz = "EBV" in p  # domain randomisation (catalog_tool.sim.randomise) drawn in the plan
    # Its own stream for the randomisation's draws, so that switching one ingredient off changes
    # nothing else.
    rrng = np.random.default_rng(rng.integers(0, 2**63)) if rz else None
    extra = ({"fwhm": p["LSF_EXTRA"][rows], "slope": p["LSF_SLOPE"][rows], "cache": inst.lsf_cache,
              "wrange": (inst.wave[0], inst.wave[-1])} if rz else None)
    # inst.lsf takes MILES 2.5 A to R 1800 where that is coarser
    flux = source_flux(star=kinds == "star", galaxy=kinds == "galaxy", qso=kinds == "qso",
                       labels={c: p[c][rows] for c in LABELS + ("LABEL_ROW",)}, z=p["Z"][rows], wave=inst.wave,
                       grid=inst.grid, lsf=inst.lsf, model=model, rng=rng, extra_lsf=extra)
    if rz:
        flux *= rnd.ccm89_extinction(wave=inst.wave, ebv=p["EBV"][rows])
    # LAMOST fluxes are relatively calibrated counts: scale to a level of a few hundred to thousands.
    level = np.median(flux[:, inst.ref], axis=1)
    flux *= (p["LEVEL"][rows] / np.maximum(level, 1e-30))[:, None]
    # Flux calibration: smooth 8% curves plus a small step between the blue and red arms.
    cal = 0.08 * (p["CAL_SCALE"][rows] if rz else np.ones(n))
    distort = ins.calibration_distortion(wave=inst.wave, amplitude=cal, rng=rng, order=4)
    step = 1.0 + 0.03 * rng.standard_normal(n)[:, None] / (1.0 + np.exp(-(inst.wave - 5800.0) / 20.0))
    if rz:
        distort *= rnd.calibration_wiggles(wave=inst.wave, amplitude=p["WIGGLE"][rows], rng=rrng)
    flux *= distort * step
    sky = inst.sky[None, :] * (p["LEVEL"][rows] / 40.0)[:, None]
    noisy, ivar = ins.add_noise(flux=flux, sky=sky, snr=p["SNR"][rows], ref=inst.ref_pixels(p.get("SNR_WINDOW")),
                                rng=rng, read=0.0, throughput=inst.throughput)
    if rz:  # sky over- or under-subtracted by a fraction SKY_RESID
        noisy += (p["SKY_RESID"][rows][:, None] * sky).astype(np.float32)
    snr_band = {b: np.median(flux[:, m] * np.sqrt(ivar[:, m]), axis=1) for b, m in inst.band.items()}
    mask = np.zeros(flux.shape, np.float32)
    bad = np.zeros(flux.shape, bool)
    k = rng.poisson(2.0, n)
    r_idx = np.repeat(np.arange(n), k)
    start = rng.integers(0, inst.wave.size - 4, r_idx.size)
    for off in range(4):  # short cosmic spans, 4 pixels each
        bad[r_idx, start + off] = True
    bad[:, -6:] = True  # the red end of the red CCD is unusable in most real files
    if rz:  # runs of bad columns / dead CCD regions
        bad |= rnd.masked_runs(runs=p["MASK_RUNS"][rows], npix=inst.wave.size, rng=rrng)
    ivar[bad] = 0.0
    mask[bad] = MASK_BADCCD
    norm = (flux / np.maximum(_smooth(flux), 1e-30)).astype(np.float32)
    return {"FLUX": noisy, "IVAR": ivar, "MASK": mask, "NORM": norm, "SNR_BAND": snr_band}


def _header(p: dict, i: int, layout: str, npix: int, snr_band: dict, filename: str) -> list[dict]:
    def card(name, value, comment=""):
        return {"name": name, "value": value, "comment": comment}

    kind = p["KIND"][i]
    h = [card("COMMENT", "--------FILE INFORMATION"), card("FILENAME", filename)]
    if layout != "dr1":
        h.append(card("OBSID", int(p["OBSID"][i]), "Unique number ID of this spectrum"))
    h.append(card("AUTHOR", "LAMOST Pipeline", "Who compiled the information"))
    if layout != "dr1":
        h.append(card("DATA_V", f"LAMOST {layout.upper()}", "Data release version"))
    h.append(card("N_EXTEN", 2 if layout == "dr10" else 1, "The extension number"))
    if layout == "dr1":
        h.append(card("EXTEN0", "Flux Inverse Subcontinuum Andmask Ormask"))
    elif layout == "dr7":
        h += [card("EXTEN0", "Flux, Inverse, Wavelength, Andmask, Ormask"), card("EXTNAME", "Flux", "The extension name")]
    else:
        h.append(card("NORM", 1, "1 if there exists a normalizated spectrum"))
    h += [
        card("ORIGIN", "NAOC-LAMOST", "Organization responsible for creating this file"),
        card("COMMENT", "--------TELESCOPE PARAMETERS"),
        card("TELESCOP", "LAMOST", "GuoShouJing Telescope"),
        card("LONGITUD", 117.58, "[deg] Longitude of site"), card("LATITUDE", 40.39, "[deg] Latitude of site"),
        card("COMMENT", "--------OBSERVATION PARAMETERS"),
        card("LMJD", int(p["LMJD"][i]), "Local Modified Julian Day"),
        card("MJD", int(p["LMJD"][i]) - 1, "Modified Julian Day"),
        card("PLANID", str(p["PLANID"][i]), "Plan ID in use"),
        card("RA", float(p["RA"][i]), "[deg] Right ascension of object"),
        card("DEC", float(p["DEC"][i]), "[deg] Declination of object"),
        card("DESIG", str(p["DESIG"][i]), "Designation of LAMOST target"),
        card("FIBERID", int(p["FIBERID"][i]), "Fiber ID of Object"),
        card("OBJNAME", str(abs(int(p["TARGETID"][i])) % 10 ** 15), "Name of object"),
        card("OBJTYPE", "star" if layout == "dr1" else ("Star" if kind == "star" else "galaxy" if kind == "galaxy" else "QSO"),
             "Object type from input catalog"),
        card("FIB_TYPE" if layout == "dr10" else "FIBERTYP", "Obj", "Fiber type of object"),
        card("OBS_TYPE", "OBJ", "The type of target (OBJ, FLAT, ARC or BIAS)"),
        card("RADECSYS", "FK5", "Equatorial coordinate system"), card("EQUINOX", 2000.0, "Equinox in years"),
        card("COMMENT", "--------SPECTROGRAPH PARAMETERS"),
        card("SPID", int(p["SPID"][i]), "Spectrograph ID"),
        card("NEXP", 3, "Number of valid exposures"), card("EXPTIME", 1800.0, "[s] Minimum of exposure time for all cameras"),
        card("COMMENT", "--------DATA REDUCTION PARAMETERS"),
        card("HELIO", True, "Heliocentric correction"),
        card("HELIO_RV", float(p["HELIO_RV"][i]), "[km/s] Heliocentric correction"),
        card("VACUUM", True, "Wavelengths are in vacuum"),
        card("NWORDER", 2, "Number of linear-log10 coefficients"),
        card("WFITTYPE", "LOG-LINEAR", "Linear-log10 dispersion"),
        card("COEFF0", ins.LAMOST_LOGLAM0, "Central wavelength (log10) of first pixel"),
        card("COEFF1", ins.LAMOST_DLOGLAM, "Log10 dispersion per pixel"),
        card("CRVAL1", ins.LAMOST_LOGLAM0, "Central wavelength (log10) of first pixel"),
        card("CD1_1", ins.LAMOST_DLOGLAM, "Log10 dispersion per pixel"),
        card("CRPIX1", 1, "Starting pixel (1-indexed)"), card("CTYPE1", "LINEAR"),
        card("DC-FLAG", 1, "Log-linear flag"),
        card("COMMENT", "--------SPECTRA ANALYSIS RESULTS"),
        card("VERSPIPE", {"dr1": "v2.6.4", "dr7": "v2.9.7", "dr10": "v2.9.8"}[layout], "Version of Pipeline"),
        card("CLASS", {"star": "STAR", "galaxy": "GALAXY", "qso": "QSO"}[kind], "Class of object"),
        card("SUBCLASS", str(p["SUBCLASS"][i]), "Subclass of object"),
        card("Z", float(p["Z_PIPE"][i]), "Redshift of object"),
        card("Z_ERR", float(p["Z_ERR"][i]), "Redshift error of object"),
    ]
    if layout != "dr1":
        h.append(card("ZFLAG", "LASP", "Which method computes the redshift"))
    key = "SN_{}" if layout == "dr1" else "SNR{}"
    for b in "UGRIZ":
        h.append(card(key.format(b), round(float(max(snr_band[b], 0.0)), 2), f"SNR of {b.lower()} filter"))
    h += [card("SIMULATE", True, "synthetic spectrum written by stxcat simulate"),
          card("STXCATV", __version__, "stxcat version")]
    return h


def _write_file(path: str, layout: str, npix: int, spec: dict, j: int, header: list[dict], compress: bool) -> None:
    wave = ins.lamost_wave(npix).astype(np.float32)
    f, iv, m = spec["FLUX"][j, :npix], spec["IVAR"][j, :npix], spec["MASK"][j, :npix]
    with atomic_fits(path, compress=compress) as fits:
        if layout == "dr10":
            fits.write(None, header=header)
            cols = ("FLUX", "IVAR", "WAVELENGTH", "ANDMASK", "ORMASK", "NORMALIZATION")
            table = np.zeros(1, dtype=[(c, ">f4", (npix,)) for c in cols])
            for c, v in zip(cols, (f, iv, wave, m, m, spec["NORM"][j, :npix])):
                table[c][0] = v
            fits.write(table, extname="COADD")
        else:
            third = spec["NORM"][j, :npix] if layout == "dr1" else wave
            img = np.stack([f, iv, third, m, m]).astype(np.float32)
            fits.write(img, header=header)
            if layout == "dr7":
                fits[0].write_key("EXTNAME", "Flux", comment="The extension name")


#: Columns of the LAMOST LRS General Catalogue (DR10 v2.0, ``dr10_v2.0_LRS_catalogue.fits``): the
#: real lower-case names, in the real order, with the FITS types of the LAMOST database schema
#: (bigint -> int64, int -> int32, smallint -> int16, numeric -> float64 or float32 for S/N and
#: offsets_v, varchar(n) -> n characters). Columns the simulation knows nothing of are null as in
#: the real catalogue (-9999, or blank text).
GENERAL_CATALOG_COLUMNS = (
    ("obsid", "i8"), ("uid", "S32"), ("gp_id", "i8"), ("designation", "S19"), ("obsdate", "S10"),
    ("lmjd", "i4"), ("mjd", "i4"), ("planid", "S40"), ("spid", "i4"), ("fiberid", "i4"),
    ("ra_obs", "f8"), ("dec_obs", "f8"), ("snru", "f4"), ("snrg", "f4"), ("snrr", "f4"), ("snri", "f4"),
    ("snrz", "f4"), ("class", "S20"), ("subclass", "S20"), ("z", "f8"), ("z_err", "f8"), ("ps_id", "i8"),
    ("mag_ps_g", "f8"), ("mag_ps_r", "f8"), ("mag_ps_i", "f8"), ("mag_ps_z", "f8"), ("mag_ps_y", "f8"),
    ("gaia_source_id", "S25"), ("gaia_g_mean_mag", "f8"), ("tsource", "S16"), ("fibertype", "S10"),
    ("tfrom", "S60"), ("tcomment", "S80"), ("offsets", "i4"), ("offsets_v", "f4"), ("ra", "f8"),
    ("dec", "f8"), ("fibermask", "i4"), ("with_norm_flux", "i2"),
)


def general_catalog(p: dict, *, kinds: np.ndarray, snr: dict) -> dict:
    """The simulated spectra as rows of the LAMOST LRS General Catalogue (real names and types).

    Every spectrum has its ``obsid`` there, DR1-layout files included (their headers lack one).
    """
    n = len(kinds)
    mjd = (p["LMJD"] - 1).astype(np.int64)
    days = np.datetime64("1858-11-17") + mjd.astype("timedelta64[D]")
    values = {
        "obsid": p["OBSID"], "designation": np.char.replace(p["DESIG"].astype(str), "LAMOST ", ""),
        "obsdate": np.datetime_as_string(days, unit="D"), "lmjd": p["LMJD"], "mjd": mjd,
        "planid": p["PLANID"], "spid": p["SPID"], "fiberid": p["FIBERID"], "ra_obs": p["RA"],
        "dec_obs": p["DEC"], **{f"snr{b.lower()}": snr[b] for b in "UGRIZ"},
        "class": np.char.upper(np.where(kinds == "qso", "QSO", kinds)), "subclass": p["SUBCLASS"],
        "z": p["Z_PIPE"], "z_err": p["Z_ERR"], "fibertype": np.full(n, "Obj"), "offsets": 0,
        "offsets_v": 0.0, "ra": p["RA"], "dec": p["DEC"], "fibermask": 0, "with_norm_flux": 1,
    }
    out = {}
    for name, dtype in GENERAL_CATALOG_COLUMNS:
        null = "" if dtype[0] == "S" else -9999
        v = np.broadcast_to(values.get(name, null), (n,))
        out[name] = np.asarray(v.astype(str) if dtype[0] == "S" else v).astype(dtype)
    return out


@single_thread_blas()  # OpenBLAS rounds differently with its thread count: the output must not depend on it
def simulate_lamost(out: str | os.PathLike, *, n: int = 20, seed: int = 0, layout: str = "mixed",
                    gzip: bool = False, snr_range=(5.0, 100.0), labels=None, galaxy_fraction: float = 0.04,
                    qso_fraction: float = 0.03, overwrite: bool = False, chunk: int = 256,
                    model=None, randomise: rnd.DomainRandomisation | None = None,
                    snr_window: tuple | None = None) -> SimResult:
    """Write ``n`` synthetic LAMOST LRS spectrum files, a catalogue and a truth table.

    Parameters
    ----------
    out : path
        Output folder; must be empty or absent unless ``overwrite``.
    n : int
        Number of spectra (files); ignored when ``labels`` is given.
    seed : int
        Everything is a deterministic function of the seed and the arguments.
    layout : {"dr1", "dr7", "dr10", "mixed"}
        File layout; ``mixed`` draws one per file.
    gzip : bool
        Write ``.fits.gz`` files (as the LAMOST archive serves them).
    snr_range : (float, float)
        Median S/N per pixel in the r band (5500-6900 A, or ``snr_window``), log-uniform.
    labels : table, optional
        Explicit stars (TEFF, LOGG, FEH, ALPHAFE; optional RV, SNR): one file each, in order, no
        galaxies or QSOs; the truth LABEL_ROW matches them to the input rows.
    galaxy_fraction, qso_fraction : float
        Share of galaxies and QSOs when stars are drawn.
    overwrite : bool
        Replace the ``spectra/`` tree, catalogue and truth table of an earlier simulation.
    chunk : int
        Spectra rendered at a time (bounds memory).
    model : object, optional
        Spectral model; default the bundled one. A model with ``render_rows`` (real library spectra,
        :class:`catalog_tool.sim.library.LibraryModel`) renders star i from library row LABEL_ROW.
    randomise : DomainRandomisation, optional
        Per-spectrum LSF, calibration, sky-residual, extinction and mask perturbations
        (:mod:`catalog_tool.sim.randomise`), recorded in the truth table. ``None``: the base simulator.
    snr_window : (float, float), optional
        Wavelength window (A) over which the median S/N is ``SNR`` (default the r band).

    Returns
    -------
    SimResult

    Raises
    ------
    ConfigError
        Invalid arguments (all problems in one message) or a non-empty ``out``.
    """
    problems = []
    if labels is None and n < 1:
        problems.append(f"--n must be at least 1, got {n}")
    if layout not in LAYOUTS + ("mixed",):
        problems.append(f"--layout must be one of dr1, dr7, dr10, mixed, got {layout!r}")
    if not (0 <= galaxy_fraction and 0 <= qso_fraction and galaxy_fraction + qso_fraction < 1):
        problems.append("galaxy and QSO fractions must be >= 0 and sum below 1")
    if chunk < 1:
        problems.append(f"chunk must be at least 1, got {chunk}")
    problems += check_snr_range(snr_range)
    if problems:
        raise ConfigError("; ".join(problems))
    lab = as_label_table(labels) if labels is not None else None
    out = prepare_output(out, overwrite=overwrite, owned=["spectra", TRUTH_NAME, CATALOG_NAME])
    model = load_model(model)
    inst = _Instrument()

    plan_ss, spec_ss = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(plan_ss)
    if lab is not None:
        n = len(lab["TEFF"])
        kinds = np.full(n, "star", dtype="U6")
    else:
        u = rng.random(n)
        kinds = np.where(u < galaxy_fraction, "galaxy", np.where(u < galaxy_fraction + qso_fraction, "qso", "star"))
    p = {"KIND": kinds}
    star = kinds == "star"
    ns = int(star.sum())
    stars = lab if lab is not None else draw_labels(ns, rng=rng)
    for c in LABELS:
        p[c] = np.full(n, np.nan)
        p[c][star] = stars[c]
    p["LABEL_ROW"] = np.where(star, np.arange(n), -1) if lab is not None else np.full(n, -1)
    p["RV"] = np.full(n, np.nan)
    p["RV"][star] = stars["RV"] if "RV" in stars else draw_rv(ns, feh=stars["FEH"], rng=rng)
    z = np.zeros(n)
    z[star] = ins.doppler_factor(rv=p["RV"][star]) - 1.0
    z[kinds == "galaxy"] = rng.uniform(0.02, 0.3, (kinds == "galaxy").sum())
    z[kinds == "qso"] = rng.uniform(0.3, 3.0, (kinds == "qso").sum())
    p["Z"] = z
    p["SNR"] = draw_snr(n, snr_range=snr_range, rng=rng)
    if "SNR" in stars:
        p["SNR"][star] = stars["SNR"]
    p["LEVEL"] = np.exp(rng.uniform(np.log(200.0), np.log(3000.0), n))
    snr_err = np.maximum(p["SNR"], 1.0)
    p["Z_ERR"] = np.where(star, (5.0 / snr_err + 1.0) / ins.C_KMS, 2e-4 / snr_err)
    p["Z_PIPE"] = p["Z"] + p["Z_ERR"] * rng.standard_normal(n)
    p["SUBCLASS"] = np.where(star, stellar_class(teff=np.nan_to_num(p["TEFF"], nan=5000), digits=True), "Non")
    # Plates of up to 250 fibres on 16 spectrographs; one pointing per plate.
    plate = np.arange(n) // _FIBERS_PER_PLATE
    slot = np.arange(n) % _FIBERS_PER_PLATE
    nplate = int(plate.max()) + 1
    lmjd = 56000 + np.arange(nplate) * 7 + rng.integers(0, 5, nplate)
    ra_c, dec_c = rng.uniform(0, 360, nplate), rng.uniform(-5, 60, nplate)
    p["LMJD"] = lmjd[plate]
    p["PLANID"] = np.array([f"SIM{k:04d}{'N' if d >= 0 else 'S'}{abs(int(d)):02d}V{k % 100:02d}"
                            for k, d in enumerate(dec_c)])[plate]
    p["SPID"] = slot % 16 + 1
    p["FIBERID"] = slot // 16 + 1 + (slot % 3) * 16
    p["RA"] = (ra_c[plate] + rng.uniform(-1.5, 1.5, n) / np.cos(np.radians(dec_c[plate]))) % 360.0
    p["DEC"] = dec_c[plate] + rng.uniform(-1.5, 1.5, n)
    rah = p["RA"] / 15.0
    decabs = np.abs(p["DEC"])
    p["DESIG"] = np.array([
        f"LAMOST J{int(h):02d}{int(h * 60 % 60):02d}{h * 3600 % 60:05.2f}{'+' if d >= 0 else '-'}"
        f"{int(a):02d}{int(a * 60 % 60):02d}{a * 3600 % 60:04.1f}"
        for h, d, a in zip(rah, p["DEC"], decabs)])
    p["HELIO_RV"] = rng.uniform(-30.0, 30.0, n)
    layouts = np.full(n, layout) if layout != "mixed" else rng.choice(np.array(LAYOUTS), n)
    lo_hi = np.array([_NPIX[x] for x in layouts])
    npix = rng.integers(lo_hi[:, 0], lo_hi[:, 1] + 1)
    p["OBSID"] = 700_000_000 + np.arange(n, dtype=np.int64)
    tid = p["OBSID"].copy()
    for i in np.flatnonzero(layouts == "dr1"):
        tid[i] = synthetic_obsid(lmjd=int(p["LMJD"][i]), planid=str(p["PLANID"][i]),
                                 spid=int(p["SPID"][i]), fiberid=int(p["FIBERID"][i]))
    p["TARGETID"] = tid
    if randomise is not None:  # drawn last: the rest of the plan is the same with or without
        p.update(rnd.draw_parameters(n, settings=randomise, rng=rng))
    p["SNR_WINDOW"] = tuple(snr_window) if snr_window is not None else None

    files = []
    snr_cols = {b: np.zeros(n) for b in "UGRIZ"}
    chunk_ss = spec_ss.spawn(int(np.ceil(n / chunk)))
    for c in range(len(chunk_ss)):
        rows = np.arange(c * chunk, min((c + 1) * chunk, n))
        spec = _render(p, rows, inst=inst, model=model, rng=np.random.default_rng(chunk_ss[c]))
        for j, i in enumerate(rows):
            base = f"spec-{p['LMJD'][i]}-{p['PLANID'][i]}_sp{p['SPID'][i]:02d}-{p['FIBERID'][i]:03d}.fits"
            rel = os.path.join("spectra", str(p["PLANID"][i]), base + (".gz" if gzip else ""))
            band = {b: spec["SNR_BAND"][b][j] for b in "UGRIZ"}
            for b in "UGRIZ":
                snr_cols[b][i] = band[b]
            # One file per spectrum is LAMOST's format: this loop is I/O, not science.
            _write_file(os.path.join(out, rel), str(layouts[i]), int(npix[i]), spec, j,
                        _header(p, i, str(layouts[i]), int(npix[i]), band, base), gzip)
            files.append(rel)

    files_arr = np.array(files)
    common = {"OBSID": np.where(layouts == "dr1", -1, p["OBSID"]), "TARGETID": p["TARGETID"],
              "FILE": files_arr.astype("S"), "LAYOUT": layouts.astype("S")}
    hdr = {"SIMSEED": int(seed), "STXCATV": __version__, "NSPEC": int(n)}
    write_truth(os.path.join(out, CATALOG_NAME), general_catalog(p, kinds=kinds, snr=snr_cols), header=hdr,
                extname="CATALOG", units={c: "deg" for c in ("ra", "dec", "ra_obs", "dec_obs")})
    truth = {**common, "KIND": kinds.astype("S"), "RA": p["RA"], "DEC": p["DEC"],
             **{c: p[c] for c in LABELS}, "RV": p["RV"], "Z": p["Z"], "SNR": p["SNR"],
             "LABEL_ROW": p["LABEL_ROW"].astype(np.int64), **{c: p[c] for c in rnd.TRUTH_COLUMNS if c in p}}
    truth_path = os.path.join(out, TRUTH_NAME)
    write_truth(truth_path, truth, header=hdr)
    return SimResult(out=out, files=files, truth=truth_path, nspec=n, nstars=ns)
