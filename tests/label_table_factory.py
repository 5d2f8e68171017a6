"""Small label tables with the real column names and dtypes of APOGEE DR17 allStar and GALAH DR4 allstar.

Built from a simulated release's truth table (``TARGET_RA``, ``TARGET_DEC``, ``TEFF``, ``LOGG``, ``FEH``,
``ALPHAFE``, ``SNR``) so that the rows match spectra by position, with what real catalogues hold:
string ids padded with trailing spaces, -9999 sentinels and NaN, bitmask flags (unsigned 64-bit in
APOGEE), duplicates of a star (a second, lower-S/N row a fraction of an arcsec away, or with the
same id), an array column that must not be read. Imported by the label/calibration tests and by
``benchmarks/bench_calibrate.py`` (a plain module on the test path).
"""

from __future__ import annotations

import numpy as np

APOGEE_DTYPE = [
    ("APOGEE_ID", "U30"), ("TELESCOPE", "U8"), ("FIELD", "U20"), ("RA", "f8"), ("DEC", "f8"),
    ("SNR", "f4"), ("STARFLAG", "u8"), ("EXTRATARG", "i2"), ("ASPCAPFLAG", "u8"),
    ("TEFF", "f4"), ("TEFF_ERR", "f4"), ("LOGG", "f4"), ("LOGG_ERR", "f4"), ("M_H", "f4"), ("M_H_ERR", "f4"),
    ("ALPHA_M", "f4"), ("ALPHA_M_ERR", "f4"), ("FE_H", "f4"), ("FE_H_ERR", "f4"), ("FE_H_FLAG", "i4"),
    ("FPARAM", "f4", (9,)),
]
GALAH_DTYPE = [
    ("sobject_id", "i8"), ("tmass_id", "U16"), ("gaiadr3_source_id", "i8"), ("ra", "f8"), ("dec", "f8"),
    ("flag_sp", "i8"), ("teff", "f4"), ("e_teff", "f4"), ("logg", "f4"), ("e_logg", "f4"),
    ("fe_h", "f4"), ("e_fe_h", "f4"), ("flag_fe_h", "i8"), ("alpha_fe", "f4"), ("e_alpha_fe", "f4"),
    ("flag_alpha_fe", "i8"), ("snr_px_ccd3", "f4"),
]
#: ASPCAPFLAG bit 23 (STAR_BAD) and EXTRATARG bit 4 (duplicate entry), as in DR17.
STAR_BAD = np.uint64(1 << 23)
EXTRATARG_DUPLICATE = 16


def stars_of(truth) -> np.ndarray:
    """Rows of a truth table that are stars."""
    kind = np.char.strip(np.asarray(truth["KIND"]).astype(str))
    return np.asarray(truth)[kind == "star"]


def _nudge(ra, dec, rng, arcsec):
    """Positions moved by up to ``arcsec`` in a random direction."""
    ang = rng.uniform(0, 2 * np.pi, len(ra))
    d = arcsec / 3600.0
    return ra + d * np.cos(ang) / np.cos(np.radians(dec)), dec + d * np.sin(ang)


def apogee_table(stars, *, rng, feh=None, teff=None, n_duplicates=5, n_sentinel=3, n_bad=4,
                 err=(0.01, 10.0, 0.03, 0.02)) -> np.ndarray:
    """An allStar-like table of ``stars`` (truth rows); ``feh``/``teff`` override the truth values.

    The first ``n_sentinel`` stars get FE_H = -9999 (and the next one NaN TEFF); the next
    ``n_bad`` after those carry ASPCAPFLAG STAR_BAD. ``n_duplicates`` stars get a second,
    lower-S/N row 0.3 arcsec away with EXTRATARG's duplicate bit and a shifted FE_H (+0.5 dex: a
    wrong choice shows), alternately under the same APOGEE_ID and an id of its own.
    """
    n = len(stars)
    t = np.zeros(n, APOGEE_DTYPE)
    # 2MASS-style ids, some shorter than the column (FITS pads them with spaces)
    t["APOGEE_ID"] = [f"2M{i:08d}+{i % 97:04d}" + (" " * (i % 3)) for i in range(n)]
    t["TELESCOPE"], t["FIELD"] = "apo25m", "sim"
    t["RA"], t["DEC"] = stars["TARGET_RA"], stars["TARGET_DEC"]
    t["SNR"] = rng.uniform(80, 400, n)
    t["TEFF"] = stars["TEFF"] if teff is None else teff
    t["LOGG"] = stars["LOGG"]
    t["FE_H"] = stars["FEH"] if feh is None else feh
    t["M_H"] = t["FE_H"]
    t["ALPHA_M"] = stars["ALPHAFE"]
    for col, e in zip(("FE_H_ERR", "TEFF_ERR", "LOGG_ERR", "ALPHA_M_ERR"), err):
        t[col] = e
    t["M_H_ERR"] = err[0]
    t["FPARAM"] = rng.normal(size=(n, 9))
    t["FE_H"][:n_sentinel] = -9999.0
    t["FE_H_FLAG"][:n_sentinel] = 1
    if n > n_sentinel:
        t["TEFF"][n_sentinel] = np.nan
    t["ASPCAPFLAG"][n_sentinel + 1:n_sentinel + 1 + n_bad] = STAR_BAD | np.uint64(1 << 40)
    t["STARFLAG"][::7] = np.uint64(1 << 33)  # a high bit that is not a cut
    dup = t[-n_duplicates:].copy() if n_duplicates else t[:0].copy()
    if n_duplicates:
        dup["RA"], dup["DEC"] = _nudge(dup["RA"], dup["DEC"], rng, 0.3)
        dup["SNR"] = dup["SNR"] / 3
        dup["FE_H"] = dup["FE_H"] + 0.5
        dup["EXTRATARG"] = EXTRATARG_DUPLICATE
        dup["FIELD"] = "other"
        dup["APOGEE_ID"][1::2] = [f"2M9{i:07d}-0000" for i in range(len(dup[1::2]))]
    out = np.concatenate([t, dup])
    return out[rng.permutation(len(out))]


def galah_table(stars, *, rng, feh=None, n_duplicates=4, n_nan=3) -> np.ndarray:
    """A GALAH DR4 allstar-like table: NaN for missing values; repeats share ``gaiadr3_source_id``."""
    n = len(stars)
    t = np.zeros(n, GALAH_DTYPE)
    t["sobject_id"] = 170000000000000 + np.arange(n) * 1000 + 1
    t["tmass_id"] = [f"{i:08d}-{i % 89:07d}" for i in range(n)]
    t["gaiadr3_source_id"] = 4000000000000000000 + np.arange(n) * 7
    t["gaiadr3_source_id"][0] = -9223372036854775808  # no Gaia match: not an id
    t["ra"], t["dec"] = stars["TARGET_RA"], stars["TARGET_DEC"]
    t["teff"], t["logg"] = stars["TEFF"], stars["LOGG"]
    t["fe_h"] = stars["FEH"] if feh is None else feh
    t["alpha_fe"] = stars["ALPHAFE"]
    t["e_teff"], t["e_logg"], t["e_fe_h"], t["e_alpha_fe"] = 60.0, 0.1, 0.05, 0.04
    t["snr_px_ccd3"] = rng.uniform(30, 200, n)
    t["fe_h"][:n_nan] = np.nan
    t["flag_sp"][n_nan:n_nan + 2] = 128
    dup = t[-n_duplicates:].copy() if n_duplicates else t[:0].copy()
    if n_duplicates:
        dup["sobject_id"] += 500
        dup["ra"], dup["dec"] = _nudge(dup["ra"], dup["dec"], rng, 2.0)  # far: only the Gaia id links them
        dup["snr_px_ccd3"] = dup["snr_px_ccd3"] / 4
        dup["fe_h"] = dup["fe_h"] - 0.4
    out = np.concatenate([t, dup])
    return out[rng.permutation(len(out))]


def write_table(path, rows) -> str:
    """Write ``rows`` as the first table HDU of a FITS file (fitsio: uint64 via TZERO, as SDSS does)."""
    import fitsio

    fitsio.write(str(path), rows, extname="ALLSTAR", clobber=True)
    return str(path)
