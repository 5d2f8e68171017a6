"""Air-to-vacuum wavelength conversion shared by the spectral model and its fitting script."""

from __future__ import annotations

import numpy as np

__all__ = ["air_to_vacuum"]


def air_to_vacuum(wave_air: np.ndarray) -> np.ndarray:
    """Convert air wavelengths (Angstrom) to vacuum wavelengths.

    Uses the inverse of the Morton (2000, ApJS 130, 403) dispersion formula derived by N. Piskunov
    for VALD3 (the ``"Morton2000"`` method of ``specutils.utils.wcs_utils.air_to_vac``), which is
    accurate to a few 1e-5 A over 2000-20000 A, well below a MILES pixel (0.9 A).

    Parameters
    ----------
    wave_air : ndarray
        Wavelengths in air, Angstrom (any shape).

    Returns
    -------
    ndarray
        Vacuum wavelengths, Angstrom, same shape, float64.
    """
    wave_air = np.asarray(wave_air, dtype=np.float64)
    s2 = (1.0e4 / wave_air) ** 2
    n = (
        1.0
        + 0.00008336624212083
        + 0.02408926869968 / (130.1065924522 - s2)
        + 0.0001599740894897 / (38.92568793293 - s2)
    )
    return wave_air * n
