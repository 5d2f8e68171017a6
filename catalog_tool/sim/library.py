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
import warnings
import zipfile

import numpy as np

from catalog_tool.sim._wavelength import air_to_vacuum
from catalog_tool.sim.specmodel import SpectralModel, alpha_galactic

__all__ = ["StellarLibrary", "LibraryModel", "read_miles", "read_stelib", "miles_names", "fetch_wheel", "is_heldout",
           "assert_no_heldout", "HELDOUT_RULE", "WHEEL_SPEC", "MILES_FWHM_A", "STELIB_FWHM_A"]

WHEEL_SPEC = "sdss-mangadap==4.5.0"
MILES_DIR = "mangadap/data/spectral_templates/miles/"
MILES_FWHM_A = 2.5  # instrumental FWHM of MILES v9.1 (Falcon-Barroso et al. 2011), constant in A
STELIB_DIR = "mangadap/data/spectral_templates/stelib/"
STELIB_FWHM_A = 3.4  # STELIB v3.2 resolution (Le Borgne et al. 2003; mangadap's stelib.ini)
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


def miles_names(wheel: str | pathlib.Path) -> dict[str, int]:
    """Star name (upper case, no spaces, e.g. ``HD002857``) -> MILES id, from ``paramsMILES_v9.1.txt``."""
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(MILES_DIR + "paramsMILES_v9.1.txt").decode("latin-1").splitlines()
    out = {}
    for line in text:
        name, mid = line[:22].strip(), line[22:28].strip()
        if name and mid.isdigit():
            out[name.replace(" ", "").upper()] = int(mid)
    return out


def read_stelib(wheel: str | pathlib.Path, *, step: float = 1.0) -> StellarLibrary:
    """The STELIB stars that are also MILES stars, with the MILES labels and ids (vacuum wavelengths).

    STELIB v3.2 (Le Borgne et al. 2003, A&A 402, 433; in the same wheel) covers 3200-9500 A at
    3.4 A FWHM, so it adds real red-arm spectra and a second, independent observation of the same
    stars. The wheel carries no STELIB parameters: a star is kept when its name matches a MILES star
    with labels, and it takes that star's MILES id -- so the held-out rule (:func:`is_heldout`)
    holds out the same stars in both libraries. Each STELIB spectrum has its own wavelength
    solution; all are resampled (linearly) onto one grid of ``step`` A.
    """
    from astropy.io import fits

    wheel = pathlib.Path(wheel)
    names = miles_names(wheel)
    with zipfile.ZipFile(wheel) as zf:
        params = np.genfromtxt(io.BytesIO(zf.read(MILES_DIR + "MILES_params.db")), comments="#")
        table = {int(r[0]): r[1:4] for r in params}
        files = sorted(n for n in zf.namelist() if n.startswith(STELIB_DIR) and n.endswith(".fits"))
        grid = np.arange(3210.0, 9480.0 + step / 2, step)  # air, inside every STELIB spectrum
        ids, labels, flux = [], [], []
        for name in files:
            star = names.get(name.rsplit("STELIB_v3.2_", 1)[-1][:-5].upper())
            lab = table.get(star) if star is not None else None
            if lab is None or np.any(lab > 9e3):
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # IRAF-era cards astropy reports as non-standard
                with fits.open(io.BytesIO(zf.read(name))) as hdul:
                    hdr, data = hdul[0].header, np.asarray(hdul[0].data, dtype=np.float64)
            w = hdr["CRVAL1"] + hdr["CDELT1"] * (np.arange(hdr["NAXIS1"]) + 1 - hdr.get("CRPIX1", 1.0))
            ids.append(star)
            labels.append(lab)
            flux.append(np.interp(grid, w, data))
    order = np.argsort(ids, kind="stable")
    return StellarLibrary(
        name="STELIB", ids=np.array(ids, dtype=np.int64)[order], labels=np.array(labels, dtype=np.float64)[order],
        wave=air_to_vacuum(grid), flux=np.array(flux)[order], fwhm=STELIB_FWHM_A,
        source=f"STELIB v3.2 spectra (Le Borgne et al. 2003) with MILES labels and ids by star name, in {wheel.name}")


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


class LibraryModel:
    """Real library spectra as a spectral model for the simulators.

    A model renders the stars of its label table (:meth:`label_table`): star i of the table is
    library row ``rows[i]`` (default: every library star once, in order; :meth:`take` makes a model
    of other rows, repeats allowed). The simulators (:func:`catalog_tool.sim.desi.simulate_desi`,
    :func:`catalog_tool.sim.lamost.simulate_lamost`), given that table as ``labels`` and this
    model, call :meth:`render_rows` with each star's ``LABEL_ROW``. Inside the library's
    wavelength range the spectrum is the real one (linear interpolation; non-positive pixels
    bridged from their neighbours); outside it, which only the far blue of LAMOST and the red of
    DESI R/Z and LAMOST reach, the bundled emulator's spectrum for the star's labels is scaled to
    the real spectrum over the 100 A next to each end.

    Parameters
    ----------
    library : StellarLibrary
    fill : SpectralModel, optional
        Model for the wavelengths the library lacks (default: the bundled emulator).
    rows : array of int, optional
        Library rows of the label table (default ``arange(len(library.ids))``).
    """

    def __init__(self, library: StellarLibrary, *, fill=None, rows=None):
        if fill is None:
            fill = SpectralModel.load_default()
        self.library = library
        self.fill = fill
        self.rows = np.arange(len(library.ids)) if rows is None else np.asarray(rows, dtype=np.int64)
        if self.rows.size and (self.rows.min() < 0 or self.rows.max() >= len(library.ids)):
            raise ValueError(f"library rows must be in 0..{len(library.ids) - 1}")
        flux = np.array(library.flux, dtype=np.float64)
        good = flux > 0
        if not good.any(axis=1).all():
            raise ValueError("a library spectrum has no positive pixel")
        pix = np.arange(flux.shape[1])
        for i in np.flatnonzero(~good.all(axis=1)):  # a few dozen stars have gaps: offline, once
            flux[i] = np.interp(pix, pix[good[i]], flux[i, good[i]])
        self._flux = flux

    def take(self, rows) -> "LibraryModel":
        """A model whose label table is library ``rows`` (in that order; repeats allowed)."""
        new = object.__new__(LibraryModel)
        new.library, new.fill, new._flux = self.library, self.fill, self._flux
        new.rows = np.asarray(rows, dtype=np.int64)
        if new.rows.size and (new.rows.min() < 0 or new.rows.max() >= len(self.library.ids)):
            raise ValueError(f"library rows must be in 0..{len(self.library.ids) - 1}")
        return new

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def ids(self) -> np.ndarray:
        """Library ids (MILES: NNNN of mNNNNV) of the label table's stars."""
        return self.library.ids[self.rows]

    def label_table(self) -> dict:
        """TEFF, LOGG, FEH, ALPHAFE of the label table's stars.

        ALPHAFE (which MILES does not give) is the Galactic mean at the star's [Fe/H]
        (:func:`catalog_tool.sim.specmodel.alpha_galactic`): it only shapes the emulator's fill.
        """
        lab = self.library.labels[self.rows]
        feh = lab[:, 2]
        return {"TEFF": lab[:, 0], "LOGG": lab[:, 1], "FEH": feh, "ALPHAFE": alpha_galactic(feh)}

    def render_rows(self, *, rows, wave) -> np.ndarray:
        """Spectra of label-table ``rows`` (N,) at rest-frame vacuum ``wave`` (npix,): (N, npix) float64."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < 0 or rows.max() >= len(self)):
            raise ValueError(f"label rows must be in 0..{len(self) - 1} (is LABEL_ROW set for every star?)")
        lib_rows = self.rows[rows]
        wave = np.asarray(wave, dtype=np.float64)
        lw = self.library.wave
        x = np.interp(wave, lw, np.arange(lw.size))
        i0 = np.minimum(np.floor(x).astype(np.int64), lw.size - 2)
        t = x - i0
        f = self._flux[lib_rows]
        out = f[:, i0] * (1.0 - t) + f[:, i0 + 1] * t
        blue, red = wave < lw[0], wave > lw[-1]
        if blue.any() or red.any():
            lab = self.library.labels[lib_rows]
            emu = self.fill.render(teff=lab[:, 0], logg=lab[:, 1], feh=lab[:, 2], alphafe=alpha_galactic(lab[:, 2]),
                                   wave=wave).astype(np.float64)
            for side, win in ((blue, (lw[0], lw[0] + 100.0)), (red, (lw[-1] - 100.0, lw[-1]))):
                if side.any():
                    m = (wave >= win[0]) & (wave <= win[1])
                    scale = np.median(out[:, m], axis=1) / np.maximum(np.median(emu[:, m], axis=1), 1e-300)
                    out[:, side] = emu[:, side] * scale[:, None]
        return out
