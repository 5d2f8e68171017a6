"""The one container every stage downstream of the readers consumes: :class:`SpectraBatch`.

A batch holds N spectra from one survey, split into arms (DESI ``B``, ``R``, ``Z``; LAMOST one arm
``LRS``), and a table of per-target metadata. Everything is plain numpy, so the science code can be
tested without files.

Conventions
-----------
* Flux and inverse variance are float32, shape (N, npix); the mask is uint32 with 0 = good.
* Wavelengths are vacuum Angstrom, float64, either one grid shared by all rows, shape (npix,)
  (DESI), or one grid per row, shape (N, npix) (LAMOST files differ in length and start); rows
  shorter than ``npix`` are padded at the end with NaN wavelength, zero flux, zero ivar and a set mask.
* ``meta`` maps column name to a 1-D array of length N. Columns always present:

  ========== ======== =========================================================================
  TARGETID   int64    DESI TARGETID; LAMOST OBSID
  SURVEY     str      DESI survey (main, sv3, ...) or ``lamost``
  PROGRAM    str      DESI program (dark, bright, ...) or the LAMOST data release (``dr7``)
  TARGET_RA  float64  degrees
  TARGET_DEC float64  degrees
  HEALPIX    int32    nside 64, NESTED, from TARGET_RA/TARGET_DEC
  FIBER_KIND str      ``target``, ``sky`` or ``unassigned``
  SOURCE     str      path of the file the row came from
  ROW        int32    row index inside that file
  ========== ======== =========================================================================

  Readers add what their survey provides (redrock Z, ZWARN, SPECTYPE; LAMOST CLASS, Z, SNR; ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = ["Arm", "SpectraBatch", "REQUIRED_META", "PAD_MASK_BIT"]

#: Metadata columns every batch carries, with their dtypes (``U`` = unicode string).
REQUIRED_META = {
    "TARGETID": np.int64,
    "SURVEY": "U",
    "PROGRAM": "U",
    "TARGET_RA": np.float64,
    "TARGET_DEC": np.float64,
    "HEALPIX": np.int32,
    "FIBER_KIND": "U",
    "SOURCE": "U",
    "ROW": np.int32,
}

#: Mask bit set on padding pixels when rows of different lengths share an arm (bit 31: unused by
#: both the DESI and the LAMOST pipelines' mask definitions).
PAD_MASK_BIT = np.uint32(1 << 31)


@dataclass(frozen=True)
class Arm:
    """One spectrograph arm of N spectra.

    Parameters
    ----------
    name : str
        ``B``, ``R``, ``Z`` (DESI) or ``LRS`` (LAMOST).
    wave : ndarray, float64, shape (npix,) or (N, npix)
        Vacuum wavelength in Angstrom.
    flux, ivar : ndarray, float32, shape (N, npix)
        Flux (DESI: 1e-17 erg/s/cm2/A) and its inverse variance.
    mask : ndarray, uint32, shape (N, npix)
        0 where the pixel is good.
    resolution : ndarray, float32, shape (N, ndiag, npix), optional
        DESI resolution-matrix diagonals; ``None`` unless asked for.
    """

    name: str
    wave: np.ndarray
    flux: np.ndarray
    ivar: np.ndarray
    mask: np.ndarray
    resolution: np.ndarray | None = None

    def __post_init__(self):
        n, npix = self.flux.shape
        if self.ivar.shape != (n, npix) or self.mask.shape != (n, npix):
            raise ValueError(f"arm {self.name}: flux, ivar and mask shapes differ")
        if self.wave.shape not in ((npix,), (n, npix)):
            raise ValueError(f"arm {self.name}: wave shape {self.wave.shape} does not fit flux {self.flux.shape}")
        if self.mask.dtype != np.uint32:
            raise ValueError(f"arm {self.name}: mask must be uint32, not {self.mask.dtype}")

    @property
    def nspec(self) -> int:
        return self.flux.shape[0]

    def wave2d(self) -> np.ndarray:
        """Wavelengths as an (N, npix) array (a broadcast view when the grid is shared)."""
        return np.broadcast_to(self.wave, self.flux.shape)

    def take(self, index) -> "Arm":
        """The rows ``index`` (an integer array or boolean mask; a ``slice`` gives views) of this arm."""
        wave = self.wave if self.wave.ndim == 1 else self.wave[index]
        res = None if self.resolution is None else self.resolution[index]
        return Arm(self.name, wave, self.flux[index], self.ivar[index], self.mask[index], res)


@dataclass(frozen=True)
class SpectraBatch:
    """N spectra from one survey: per-arm arrays plus per-target metadata.

    Parameters
    ----------
    arms : dict of str to Arm
        In wavelength order (``B``, ``R``, ``Z``); may be empty when only metadata was read.
    meta : dict of str to ndarray
        Per-target columns, each of length N; see the module docstring for the required ones.
    problems : list of str
        Non-fatal problems met while reading (e.g. a missing redrock file), for the log.
    """

    arms: dict
    meta: dict
    problems: list = field(default_factory=list)

    def __post_init__(self):
        missing = [c for c in REQUIRED_META if c not in self.meta]
        if missing:
            raise ValueError(f"SpectraBatch meta lacks required columns {missing}")
        n = len(self.meta["TARGETID"])
        for name, col in self.meta.items():
            if len(col) != n:
                raise ValueError(f"meta column {name} has length {len(col)}, expected {n}")
        for arm in self.arms.values():
            if arm.nspec != n:
                raise ValueError(f"arm {arm.name} holds {arm.nspec} spectra, meta {n}")

    def __len__(self) -> int:
        return len(self.meta["TARGETID"])

    @property
    def targetid(self) -> np.ndarray:
        return self.meta["TARGETID"]

    def take(self, index) -> "SpectraBatch":
        """The rows ``index`` (an integer array or boolean mask: copies; a ``slice``: views), arms and
        metadata alike."""
        if not isinstance(index, slice):
            index = np.asarray(index)
        return SpectraBatch(
            arms={k: a.take(index) for k, a in self.arms.items()},
            meta={k: v[index] for k, v in self.meta.items()},
            problems=list(self.problems),
        )

    @staticmethod
    def concat(batches: list["SpectraBatch"]) -> "SpectraBatch":
        """Stack batches row-wise.

        Arms of the same name are stacked; when their pixel grids differ (LAMOST files), the wave
        arrays become per-row and shorter rows are padded at the end (NaN wave, zero flux and ivar,
        mask :data:`PAD_MASK_BIT`). All batches must have the same arm names and meta columns.
        """
        if not batches:
            raise ValueError("concat needs at least one batch")
        if len(batches) == 1:
            return batches[0]
        names = list(batches[0].arms)
        cols = list(batches[0].meta)
        for b in batches[1:]:
            if list(b.arms) != names or set(b.meta) != set(cols):
                raise ValueError("cannot concatenate batches with different arms or meta columns")
        meta = {c: np.concatenate([b.meta[c] for b in batches]) for c in cols}
        arms = {name: _concat_arms([b.arms[name] for b in batches]) for name in names}
        problems = [p for b in batches for p in b.problems]
        return SpectraBatch(arms=arms, meta=meta, problems=problems)


def _concat_arms(arms: list[Arm]) -> Arm:
    first = arms[0]
    same_grid = all(
        a.wave.ndim == 1 and a.wave.shape == first.wave.shape and np.array_equal(a.wave, first.wave)
        for a in arms
    )
    has_res = all(a.resolution is not None for a in arms)
    if same_grid:
        res = np.concatenate([a.resolution for a in arms]) if has_res else None
        return Arm(first.name, first.wave,
                   np.concatenate([a.flux for a in arms]),
                   np.concatenate([a.ivar for a in arms]),
                   np.concatenate([a.mask for a in arms]), res)
    npix = max(a.flux.shape[1] for a in arms)
    n = sum(a.nspec for a in arms)
    wave = np.full((n, npix), np.nan)
    flux = np.zeros((n, npix), np.float32)
    ivar = np.zeros((n, npix), np.float32)
    mask = np.full((n, npix), PAD_MASK_BIT, np.uint32)
    i = 0
    for a in arms:
        k, m = a.nspec, a.flux.shape[1]
        wave[i:i + k, :m] = a.wave2d()
        flux[i:i + k, :m] = a.flux
        ivar[i:i + k, :m] = a.ivar
        mask[i:i + k, :m] = a.mask
        i += k
    # Resolution matrices of different lengths are not padded: dropped when grids differ.
    return Arm(first.name, wave, flux, ivar, mask, None)
