"""One frozen, validated settings object for the whole preprocessing chain.

The model bundle's manifest stores :meth:`PreprocessSettings.to_dict`, and inference rebuilds the
settings with :meth:`PreprocessSettings.from_dict`, so a model is always fed spectra prepared the way
it was trained.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from catalog_tool.errors import ConfigError

__all__ = ["PreprocessSettings", "DESI_ARM_R"]

#: Approximate DESI resolving power at the two ends of each arm (linear in wavelength between),
#: measured as lambda / FWHM from the second moment of the coadd RESOLUTION matrices (EDR/DR1).
DESI_ARM_R = {"B": (3600.0, 2250.0, 5800.0, 3700.0),
              "R": (5760.0, 3900.0, 7620.0, 5100.0),
              "Z": (7520.0, 4300.0, 9824.0, 5200.0)}


def _pairs(value):
    return tuple(tuple(float(x) for x in p) for p in value)


@dataclass(frozen=True)
class PreprocessSettings:
    """Settings of the preprocessing chain (defaults: the paper's GASPP on the native spectrum).

    Parameters
    ----------
    rest_frame : bool
        Shift spectra to the rest frame with ``batch.meta["Z"]`` (DESI redrock Z, LAMOST header Z)
        before the continuum fit. The paper's LAMOST preprocessing does not shift.
    lsf_match_R : float or None
        Target resolving power lambda/FWHM of a Gaussian line-spread function; ``None`` skips the
        resolution match (the paper resamples DESI spectra only).
    lamost_R : float
        Resolving power assumed for LAMOST LRS input (constant in wavelength).
    use_resolution_matrix : bool
        For DESI, use the RESOLUTION HDU's second moment as the input LSF when the batch holds it;
        otherwise the approximate per-arm R(lambda) of :data:`DESI_ARM_R`.
    median_window : int
        Width in pixels of the median filter applied before every continuum fit.
    blue_segment : (float, float)
        Wavelength range (A) of the blue continuum segment.
    blue_degree, blue_rounds : int
        Polynomial degree and number of upper-envelope rounds of the blue fit.
    min_segment_pixels : int
        A segment is fitted only when it holds more than this many pixels (paper: 100).
    savgol_order : int
        Savitzky-Golay polynomial order of the pre-smoothing used to find the continuum peak.
    savgol_windows : tuple of (snr_min, window)
        Savitzky-Golay window (pixels) by median S/N: the first pair whose ``snr_min`` the spectrum
        reaches applies (paper: 3 at S/N >= 50, wider below).
    hot_peak_wave : float
        When the first blue polynomial peaks blueward of this wavelength (A), the spectrum counts as
        hot and the Balmer windows are bridged.
    balmer_windows : tuple of (float, float)
        Balmer-wing windows (A) bridged by straight lines for hot stars.
    balmer_anchor : float
        The line's ends are the flux maxima within this many Angstrom outside each window edge.
    red_start : float
        The red segment runs from here (A) to the end of the spectrum.
    red_degree, red_rounds : int
        Polynomial degree and number of rounds of the red fit.
    red_clip : float
        Points more than this many residual standard deviations above the fit are replaced.
    fit_all_segments : bool
        Fit every segment the spectrum has, not only those overlapping the model grid (slower;
        for QA and the benchmark).
    min_coverage : float
        Least fraction of the model grid a spectrum must cover to count as COVERED.
    """

    rest_frame: bool = False
    lsf_match_R: float | None = None
    lamost_R: float = 1800.0
    use_resolution_matrix: bool = True
    median_window: int = 7
    blue_segment: tuple = (3700.0, 5700.0)
    blue_degree: int = 5
    blue_rounds: int = 10
    min_segment_pixels: int = 100
    savgol_order: int = 2
    savgol_windows: tuple = ((50.0, 3), (20.0, 7), (0.0, 11))
    hot_peak_wave: float = 4500.0
    balmer_windows: tuple = ((4030.0, 4160.0), (4270.0, 4410.0), (4800.0, 4940.0))
    balmer_anchor: float = 10.0
    red_start: float = 6100.0
    red_degree: int = 4
    red_rounds: int = 9
    red_clip: float = 3.0
    fit_all_segments: bool = False
    min_coverage: float = 1.0

    def __post_init__(self):
        # normalise sequences (from JSON they arrive as lists) so the object stays hashable
        object.__setattr__(self, "blue_segment", tuple(float(x) for x in self.blue_segment))
        object.__setattr__(self, "balmer_windows", _pairs(self.balmer_windows))
        object.__setattr__(self, "savgol_windows",
                           tuple((float(s), int(w)) for s, w in self.savgol_windows))
        problems = []
        if self.lsf_match_R is not None and not self.lsf_match_R > 0:
            problems.append(f"lsf_match_R must be positive or None, not {self.lsf_match_R}")
        if not self.lamost_R > 0:
            problems.append(f"lamost_R must be positive, not {self.lamost_R}")
        if self.median_window < 1 or self.median_window % 2 == 0:
            problems.append(f"median_window must be an odd positive integer, not {self.median_window}")
        lo, hi = self.blue_segment
        if not lo < hi:
            problems.append(f"blue_segment must be increasing, not {self.blue_segment}")
        if self.red_start < hi:
            problems.append(f"red_start ({self.red_start}) must not lie inside the blue segment")
        for name in ("blue_degree", "red_degree", "blue_rounds", "red_rounds", "min_segment_pixels"):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        for s, w in self.savgol_windows:
            if w <= self.savgol_order or w % 2 == 0:
                problems.append(f"savgol window {w} must be odd and larger than savgol_order")
        if not self.savgol_windows or self.savgol_windows[-1][0] > 0:
            problems.append("savgol_windows must end with a pair whose snr_min is 0")
        if not 0 < self.min_coverage <= 1:
            problems.append(f"min_coverage must lie in (0, 1], not {self.min_coverage}")
        if problems:
            raise ConfigError("invalid preprocessing settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        """Plain JSON-ready dict of every setting."""
        d = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = [list(p) for p in v] if f.name in ("balmer_windows", "savgol_windows") else (
                list(v) if isinstance(v, tuple) else v)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "PreprocessSettings":
        """Settings from :meth:`to_dict` output; unknown keys raise :class:`ConfigError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown preprocessing settings {unknown}")
        try:
            return cls(**d)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid preprocessing settings: {exc}") from None
