"""What every reader shares: the index entry of a file, the HEALPix pixel of a direction, text columns.

The readers (:mod:`catalog_tool.io.desi`, :mod:`catalog_tool.io.lamost`) build :class:`FileEntry`
objects and HEALPix pixels; discovery (:mod:`catalog_tool.io.release`) sorts and groups them. Both
sides import these from here, below them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import healpy
import numpy as np

__all__ = ["HEALPIX_NSIDE", "HEALPIX_NEST", "FileEntry", "valid_radec", "radec_to_healpix", "pixel_of_targets",
           "text_column"]

#: HEALPix resolution and ordering used everywhere (the DESI healpix coadds' own).
HEALPIX_NSIDE = 64
HEALPIX_NEST = True


@dataclass(frozen=True)
class FileEntry:
    """One usable input file.

    Attributes
    ----------
    path : str
        Absolute path.
    kind : str
        The reader that reads it (:data:`catalog_tool.io.readers.READERS`): ``"desi"`` or ``"lamost"``.
    survey, program : str
        DESI survey and program (``"unknown"`` when the file does not say); LAMOST: ``"lamost"``
        and the data release.
    healpix : int
        Nside 64 NESTED pixel: ``HPXPIXEL`` of a healpix coadd; for a tile-based coadd the pixel of
        its targets' mean direction; for LAMOST the pixel of the header RA/DEC; -1 when unknown.
    nspec : int
        Number of spectra (FIBERMAP rows, every fibre included; 1 for LAMOST).
    nbytes : int
        Size on disk.
    layout : str
        DESI ``"healpix"`` or ``"tile"``; LAMOST ``"dr1"``, ``"dr7"`` or ``"dr10"``.
    """

    path: str
    kind: str
    survey: str
    program: str
    healpix: int
    nspec: int
    nbytes: int
    layout: str


# ---------------------------------------------------------------------------------------------
# HEALPix
# ---------------------------------------------------------------------------------------------
def valid_radec(*, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """True where (ra, dec) in degrees is a position: both finite and -90 <= dec <= 90.

    RA is taken modulo 360. The one test of a valid position: rows failing it get
    ``HEALPIX = -1`` (and the VAC's ``BAD_COORDS`` bit).
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        return np.isfinite(ra) & np.isfinite(dec) & (np.abs(dec) <= 90)


def radec_to_healpix(*, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
    """Nside 64 NESTED pixel of each (ra, dec) in degrees; -1 where they are not valid.

    Unassigned DESI fibres may carry NaN coordinates, and |dec| > 90 is nonsense (a damaged
    table): neither may raise inside healpy, so they get -1 (see :func:`valid_radec`).
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    good = valid_radec(ra=ra, dec=dec)
    out = np.full(ra.shape, -1, dtype=np.int32)
    if good.any():
        out[good] = healpy.ang2pix(HEALPIX_NSIDE, np.mod(ra[good], 360.0), dec[good],
                                   nest=HEALPIX_NEST, lonlat=True)
    return out


def pixel_of_targets(*, ra: np.ndarray, dec: np.ndarray) -> int:
    """The pixel of the mean direction of a set of targets (-1 when none is valid).

    The mean of unit vectors, not of RA, so a field across RA = 0/360 gets the right pixel.
    """
    ra = np.asarray(ra, dtype=np.float64)
    dec = np.asarray(dec, dtype=np.float64)
    good = valid_radec(ra=ra, dec=dec)
    if not good.any():
        return -1
    vec = healpy.ang2vec(np.mod(ra[good], 360.0), dec[good], lonlat=True).mean(axis=0)
    if not np.any(vec):
        return -1
    return int(healpy.vec2pix(HEALPIX_NSIDE, *vec, nest=HEALPIX_NEST))


def text_column(values) -> np.ndarray:
    """A text metadata column as stripped, upper-case ``str`` (bytes decoded as ASCII)."""
    a = np.asarray(values)
    if a.dtype.kind == "S":
        a = np.char.decode(a, "ascii", "replace")
    return np.char.upper(np.char.strip(a.astype(str)))
