"""Column layouts of DESI healpix coadd and redrock files, as the DESI pipeline writes them.

Transcribed from the headers of a real healpix coadd and its redrock file (desispec 0.71 /
redrock 0.20 era, the same layout as DR1 "iron" healpix files): for every column its name, numpy
dtype (``S`` = FITS character column), ``TUNIT`` and the ``TTYPE`` comment. The simulator writes its
tables with exactly these columns in this order so that readers written for real files accept them.
"""

from __future__ import annotations

import numpy as np

__all__ = ["FIBERMAP_COLUMNS", "EXP_FIBERMAP_COLUMNS", "SCORES_COLUMNS", "REDSHIFTS_COLUMNS",
           "TSNR2_COLUMNS", "TSNR2_CLASSES", "dtype_of", "units_of", "comments_of"]

FIBERMAP_COLUMNS = (
    ('TARGETID', 'i8', '', 'Unique DESI target ID'),
    ('COADD_FIBERSTATUS', 'i4', '', 'Bitwise-AND of input FIBERSTATUS'),
    ('TARGET_RA', 'f8', 'deg', 'Barycentric right ascension in ICRS'),
    ('TARGET_DEC', 'f8', 'deg', 'Barycentric declination in ICRS'),
    ('DESINAME', 'S22', '', 'Human readable identifier of a sky location'),
    ('PMRA', 'f4', 'mas yr-1', 'Proper motion in the +RA direction'),
    ('PMDEC', 'f4', 'mas yr-1', 'Proper motion in the +Dec direction'),
    ('REF_EPOCH', 'f4', 'yr', 'Reference epoch for Gaia/Tycho astrometry'),
    ('FA_TARGET', 'i8', '', 'Fiberassign internal target bitmask'),
    ('FA_TYPE', 'u1', '', 'Fiberassign internal target type'),
    ('OBJTYPE', 'S3', '', 'Object type: TGT, SKY, NON, BAD'),
    ('SUBPRIORITY', 'f8', '', 'Assignment subpriority [0-1)'),
    ('OBSCONDITIONS', 'i4', '', 'Bitmask of allowed observing conditions'),
    ('RELEASE', 'i2', '', 'Imaging surveys release ID'),
    ('BRICKNAME', 'S8', '', 'Brick name from tractor input'),
    ('BRICKID', 'i4', '', 'Brick ID from tractor input'),
    ('BRICK_OBJID', 'i4', '', 'Imaging Surveys OBJID on that brick'),
    ('MORPHTYPE', 'S4', '', 'Imaging Surveys morphological type'),
    ('EBV', 'f4', 'mag', 'Galactic extinction E(B-V) reddening'),
    ('FLUX_G', 'f4', 'nanomaggy', 'Flux in the Legacy Survey g-band (AB)'),
    ('FLUX_R', 'f4', 'nanomaggy', 'Flux in the Legacy Survey r-band (AB)'),
    ('FLUX_Z', 'f4', 'nanomaggy', 'Flux in the Legacy Survey z-band (AB)'),
    ('FLUX_W1', 'f4', 'nanomaggy', 'WISE flux in W1 (AB)'),
    ('FLUX_W2', 'f4', 'nanomaggy', 'WISE flux in W2 (AB)'),
    ('FLUX_IVAR_G', 'f4', 'nanomaggy^-2', 'Inverse variance of FLUX_G (AB)'),
    ('FLUX_IVAR_R', 'f4', 'nanomaggy^-2', 'Inverse variance of FLUX_R (AB)'),
    ('FLUX_IVAR_Z', 'f4', 'nanomaggy^-2', 'Inverse variance of FLUX_Z (AB)'),
    ('FLUX_IVAR_W1', 'f4', 'nanomaggy^-2', 'Inverse variance of FLUX_W1 (AB)'),
    ('FLUX_IVAR_W2', 'f4', 'nanomaggy^-2', 'Inverse variance of FLUX_W2 (AB)'),
    ('FIBERFLUX_G', 'f4', 'nanomaggy', 'Predicted g-band flux in 1.5" fiber'),
    ('FIBERFLUX_R', 'f4', 'nanomaggy', 'Predicted r-band flux in 1.5" fiber'),
    ('FIBERFLUX_Z', 'f4', 'nanomaggy', 'Predicted z-band flux in 1.5" fiber'),
    ('FIBERTOTFLUX_G', 'f4', 'nanomaggy', 'g-band flux in 1.5" fiber from all sources'),
    ('FIBERTOTFLUX_R', 'f4', 'nanomaggy', 'r-band flux in 1.5" fiber from all sources'),
    ('FIBERTOTFLUX_Z', 'f4', 'nanomaggy', 'z-band flux in 1.5" fiber from all sources'),
    ('MASKBITS', 'i2', '', 'Bitmask for photometry issues'),
    ('SERSIC', 'f4', '', 'Power-law index for the Sersic profile model'),
    ('SHAPE_R', 'f4', 'arcsec', 'Half-light radius of galaxy model (>0)'),
    ('SHAPE_E1', 'f4', '', 'Ellipticity component 1 of galaxy model'),
    ('SHAPE_E2', 'f4', '', 'Ellipticity component 2 of galaxy model'),
    ('REF_ID', 'i8', '', 'Astrometric cat refID (Gaia SOURCE_ID)'),
    ('REF_CAT', 'S2', '', 'Reference catalog source for star'),
    ('GAIA_PHOT_G_MEAN_MAG', 'f4', 'mag', 'Gaia G band magnitude'),
    ('GAIA_PHOT_BP_MEAN_MAG', 'f4', 'mag', 'Gaia BP band magnitude'),
    ('GAIA_PHOT_RP_MEAN_MAG', 'f4', 'mag', 'Gaia RP band magnitude'),
    ('PARALLAX', 'f4', 'mas', 'Reference catalog parallax'),
    ('PHOTSYS', 'S1', '', 'N for BASS/MzLS, S for DECam'),
    ('PRIORITY_INIT', 'i8', '', 'Target initial priority'),
    ('NUMOBS_INIT', 'i8', '', 'Initial number of observations for target'),
    ('DESI_TARGET', 'i8', '', 'DESI target selection bitmask'),
    ('BGS_TARGET', 'i8', '', 'BGS target selection bitmask'),
    ('MWS_TARGET', 'i8', '', 'Milky Way Survey targeting bits'),
    ('SCND_TARGET', 'i8', '', 'Secondary target selection bitmask'),
    ('PLATE_RA', 'f8', 'deg', 'Right Ascension to be used by PlateMaker'),
    ('PLATE_DEC', 'f8', 'deg', 'Declination to be used by PlateMaker'),
    ('COADD_NUMEXP', 'i2', '', 'Number of exposures in coadd'),
    ('COADD_EXPTIME', 'f4', 's', 'Summed exposure time for coadd'),
    ('COADD_NUMNIGHT', 'i2', '', 'Number of nights in coadd'),
    ('COADD_NUMTILE', 'i2', '', 'Number of tiles in coadd'),
    ('MEAN_DELTA_X', 'f4', 'mm', 'Mean (over exposures) fiber difference in X'),
    ('RMS_DELTA_X', 'f4', 'mm', 'RMS (over exposures) fiber difference in X'),
    ('MEAN_DELTA_Y', 'f4', 'mm', 'Mean (over exposures) fiber difference in Y'),
    ('RMS_DELTA_Y', 'f4', 'mm', 'RMS (over exposures) difference in Y'),
    ('MEAN_PSF_TO_FIBER_SPECFLUX', 'f4', '', 'Mean of PSF_TO_FIBER_SPECFLUX'),
    ('MEAN_FIBER_RA', 'f8', 'deg', 'Mean (over exposures) RA of fiber position'),
    ('STD_FIBER_RA', 'f4', 'deg', 'Standard deviation (over exposures) of RA'),
    ('MEAN_FIBER_DEC', 'f8', 'deg', 'Mean (over exposures) DEC of fiber position'),
    ('STD_FIBER_DEC', 'f4', 'deg', 'Standard deviation (over exposures) of DEC'),
    ('MIN_MJD', 'f8', 'd', 'Minimum MJD contributing to fiber coadd'),
    ('MAX_MJD', 'f8', 'd', 'Maximum MJD contributing to fiber coadd'),
    ('MEAN_MJD', 'f8', 'd', 'Mean MJD across fibers contributing to coadd'),
)

EXP_FIBERMAP_COLUMNS = (
    ('TARGETID', 'i8', '', 'Unique DESI target ID'),
    ('PRIORITY', 'i4', '', 'Target current priority'),
    ('SUBPRIORITY', 'f8', '', 'Assignment subpriority [0-1)'),
    ('NIGHT', 'i4', '', 'Night of observation (YYYYMMDD)'),
    ('EXPID', 'i4', '', 'DESI Exposure ID number'),
    ('MJD', 'f8', 'd', 'Modified Julian Date when shutter was opened'),
    ('TILEID', 'i4', '', 'Unique DESI tile ID'),
    ('EXPTIME', 'f8', 's', 'Length of time shutter was open'),
    ('PETAL_LOC', 'i2', '', 'Petal location [0-9]'),
    ('DEVICE_LOC', 'i4', '', 'Device location on focal plane [0-523]'),
    ('LOCATION', 'i8', '', 'FP location PETAL_LOC*1000 + DEVICE_LOC'),
    ('FIBER', 'i4', '', 'Fiber ID on the CCDs [0-4999]'),
    ('FIBERSTATUS', 'i4', '', 'Fiber status mask. 0=good'),
    ('FIBERASSIGN_X', 'f4', 'mm', 'Expected CS5 X location on focal plane'),
    ('FIBERASSIGN_Y', 'f4', 'mm', 'Expected CS5 Y location on focal plane'),
    ('LAMBDA_REF', 'f4', 'Angstrom', 'Wavelength at which fiber was centered'),
    ('PLATE_RA', 'f8', 'deg', 'Right Ascension to be used by PlateMaker'),
    ('PLATE_DEC', 'f8', 'deg', 'Declination to be used by PlateMaker'),
    ('NUM_ITER', 'i8', '', 'Number of positioner iterations'),
    ('FIBER_X', 'f8', 'mm', 'CS5 X location requested by PlateMaker'),
    ('FIBER_Y', 'f8', 'mm', 'CS5 Y location requested by PlateMaker'),
    ('DELTA_X', 'f8', 'mm', 'CS5 X requested minus actual position'),
    ('DELTA_Y', 'f8', 'mm', 'CS5 Y requested minus actual position'),
    ('FIBER_RA', 'f8', 'deg', 'RA of actual fiber position'),
    ('FIBER_DEC', 'f8', 'deg', 'DEC of actual fiber position'),
    ('PSF_TO_FIBER_SPECFLUX', 'f8', '', 'Fraction of light captured by a fiber'),
    ('IN_COADD_B', 'b1', '', 'Was this exposure included in B coadd'),
    ('IN_COADD_R', 'b1', '', 'Was this exposure included in R coadd'),
    ('IN_COADD_Z', 'b1', '', 'Was this exposure included in Z coadd'),
)

#: The redrock template classes with a TSNR2 value, in file order.
TSNR2_CLASSES = ("BGS", "ELG", "GPBBACKUP", "GPBBRIGHT", "GPBDARK", "LRG", "LYA", "QSO")
# The same TSNR2 block ends the coadd SCORES table and makes up the redrock TSNR2 table: per arm
# (B, R, Z) for every class, then the sums over arms. All float32 without unit or comment.
_TSNR2_BLOCK = (tuple((f"TSNR2_{k}_{arm}", "f4", "", "") for arm in "BRZ" for k in TSNR2_CLASSES)
                + tuple((f"TSNR2_{k}", "f4", "", "") for k in TSNR2_CLASSES))

SCORES_COLUMNS = (
    (('TARGETID', 'i8', '', ''),)
    + tuple((f"{q}_{arm}", "f4", "", "") for arm in "BRZ"
            for q in ("INTEG_COADD_FLUX", "MEDIAN_COADD_FLUX", "MEDIAN_COADD_SNR"))
    + _TSNR2_BLOCK
)

REDSHIFTS_COLUMNS = (
    ('TARGETID', 'i8', '', ''),
    ('Z', 'f8', '', ''),
    ('ZERR', 'f8', '', ''),
    ('ZWARN', 'i8', '', ''),
    ('CHI2', 'f8', '', ''),
    ('COEFF', ('f8', (10,)), '', ''),
    ('FITMETHOD', 'S4', '', ''),
    ('NPIXELS', 'i8', '', ''),
    ('SPECTYPE', 'S6', '', ''),
    ('SUBTYPE', 'S20', '', ''),
    ('NCOEFF', 'i8', '', ''),
    ('DELTACHI2', 'f8', '', ''),
)

TSNR2_COLUMNS = (('TARGETID', 'i8', '', ''),) + _TSNR2_BLOCK


def dtype_of(columns) -> np.dtype:
    """The numpy dtype of a table described by one of the ``*_COLUMNS`` tuples."""
    fields = []
    for name, form, _unit, _comment in columns:
        if isinstance(form, tuple):
            fields.append((name, form[0], form[1]))
        else:
            fields.append((name, form))
    return np.dtype(fields)


def units_of(columns) -> list[str]:
    """``TUNIT`` values (empty string where the real file has none)."""
    return [c[2] for c in columns]


def comments_of(columns) -> list[str]:
    """``TTYPE`` comments, as the real files carry them."""
    return [c[3] for c in columns]
