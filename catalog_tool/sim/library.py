"""Real stellar libraries (MILES) read from the ``sdss-mangadap`` wheel, and the held-out rule.

The MILES library (v9.1; Sanchez-Blazquez et al. 2006, MNRAS 371, 703; Falcon-Barroso et al.
2011, A&A 532, A95; labels of Cenarro et al. 2007) ships inside the PyPI wheel
``sdss-mangadap==4.5.0`` as 985 FITS spectra (``mangadap/data/spectral_templates/miles/``) and a
label table (``MILES_params.db``). The wheel is read in place with :mod:`zipfile`: nothing is
installed or extracted. Scripts that build shipped artefacts fetch it with :func:`fetch_wheel`
(``pip download``); the package never downloads anything at run time.

**Held-out stars.** MILES stars whose id (the NNNN in ``mNNNNV``) is divisible by 5 are never used
to fit the emulator or to train, fine-tune or calibrate a shipped model: :func:`is_heldout` is the
one definition of that rule, and :func:`assert_no_heldout` is what every recipe calls on the ids
it fits with.
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import subprocess
import sys
import zipfile

import numpy as np

from catalog_tool.sim._wavelength import air_to_vacuum

__all__ = ["StellarLibrary", "read_miles", "fetch_wheel", "is_heldout", "assert_no_heldout",
           "HELDOUT_RULE", "WHEEL_SPEC", "MILES_FWHM_A"]

WHEEL_SPEC = "sdss-mangadap==4.5.0"
MILES_DIR = "mangadap/data/spectral_templates/miles/"
MILES_FWHM_A = 2.5  # instrumental FWHM of MILES v9.1 (Falcon-Barroso et al. 2011), constant in A
HELDOUT_RULE = "MILES id (NNNN in mNNNNV) divisible by 5"


@dataclasses.dataclass(frozen=True)
class StellarLibrary:
    """Spectra of a stellar library on one vacuum wavelength grid.

    ``ids`` (n,) int; ``labels`` (n, 3) TEFF, LOGG, FEH; ``wave`` (npix,) vacuum A; ``flux``
    (n, npix) in the library's arbitrary per-star units (non-positive where the library has no
    data); ``fwhm`` the library's instrumental FWHM in A.
    """

    name: str
    ids: np.ndarray
    labels: np.ndarray
    wave: np.ndarray
    flux: np.ndarray
    fwhm: float
    source: str

    label_names = ("TEFF", "LOGG", "FEH")

    def select(self, mask: np.ndarray) -> "StellarLibrary":
        """The stars where ``mask`` is true."""
        mask = np.asarray(mask, dtype=bool)
        return dataclasses.replace(self, ids=self.ids[mask], labels=self.labels[mask], flux=self.flux[mask])


def is_heldout(ids: np.ndarray) -> np.ndarray:
    """True for the evaluation-only MILES stars: id divisible by 5."""
    return np.asarray(ids, dtype=np.int64) % 5 == 0


def assert_no_heldout(ids: np.ndarray, *, what: str) -> None:
    """Raise if any of ``ids`` is a held-out MILES star (the recipes call this before fitting)."""
    bad = np.asarray(ids)[is_heldout(ids)]
    if bad.size:
        raise AssertionError(f"{what}: {bad.size} held-out MILES stars ({HELDOUT_RULE}) in the fitting set, "
                             f"e.g. m{int(bad[0]):04d}")


def fetch_wheel(dest: str | pathlib.Path) -> pathlib.Path:
    """``pip download`` the sdss-mangadap wheel into ``dest`` (for build scripts only)."""
    dest = pathlib.Path(dest)
    found = sorted(dest.glob("sdss_mangadap-*.whl"))
    if not found:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", WHEEL_SPEC,
                        "-d", str(dest)], check=True)
        found = sorted(dest.glob("sdss_mangadap-*.whl"))
    return found[-1]


def _star_id(name: str) -> int:
    return int(name.rsplit("_m", 1)[1][:4])


def read_miles(wheel: str | pathlib.Path, *, vacuum: bool = True) -> StellarLibrary:
    """The MILES stars that have labels, from the wheel (air wavelengths converted to vacuum).

    Stars without fitted parameters (9999/99999 in ``MILES_params.db``) or on another wavelength
    grid are left out; every kept star has TEFF, LOGG and FEH.
    """
    from astropy.io import fits

    wheel = pathlib.Path(wheel)
    with zipfile.ZipFile(wheel) as zf:
        params = np.genfromtxt(io.BytesIO(zf.read(MILES_DIR + "MILES_params.db")), comments="#")
        table = {int(r[0]): r[1:4] for r in params}
        names = sorted(n for n in zf.namelist() if n.startswith(MILES_DIR) and n.endswith(".fits"))
        ids, labels, flux, wave = [], [], [], None
        for name in names:
            star = _star_id(name)
            lab = table.get(star)
            if lab is None or np.any(lab > 9e3):  # 99999 / 9999: no fitted parameters
                continue
            with fits.open(io.BytesIO(zf.read(name))) as hdul:
                hdr, data = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
            w = hdr["CRVAL1"] + hdr["CDELT1"] * (np.arange(hdr["NAXIS1"]) + 1 - hdr["CRPIX1"])
            if wave is None:
                wave = w
            if w.shape != wave.shape or not np.allclose(w, wave):
                continue
            ids.append(star)
            labels.append(lab)
            flux.append(data)
    return StellarLibrary(
        name="MILES", ids=np.array(ids, dtype=np.int64), labels=np.array(labels, dtype=np.float64),
        wave=air_to_vacuum(wave) if vacuum else wave, flux=np.array(flux), fwhm=MILES_FWHM_A,
        source=f"MILES v9.1 spectra and MILES_params.db (Cenarro et al. 2007) in {wheel.name}")
