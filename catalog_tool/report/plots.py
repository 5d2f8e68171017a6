"""The report's figures, drawn with matplotlib's object API on the Agg canvas.

Each function takes arrays (keyword-only) and returns a :class:`matplotlib.figure.Figure`; nothing
here reads files or touches pyplot's global state, so figures can be made from any thread, without
a display, and importing this module does not import matplotlib. :func:`save_png` writes one.

Above :data:`SCATTER_MAX` points a panel is drawn as a 2-D histogram (counts, or the mean of a
third quantity per cell) instead of a scatter: millions of overlapping markers hide the density and
take minutes to rasterise, a histogram of 200 x 200 cells takes milliseconds.
"""

from __future__ import annotations

import os

import numpy as np

from catalog_tool.report.stats import binned_2d, grouped_quantiles

__all__ = ["SCATTER_MAX", "LABEL_TEXT", "new_figure", "save_png", "kiel_figure", "alpha_feh_figure",
           "sky_figure", "uncertainty_figure", "distributions_figure", "flags_figure", "residuals_figure"]

#: Largest number of points drawn as a scatter plot; more are binned.
SCATTER_MAX = 5000
#: Axis labels of the VAC labels.
LABEL_TEXT = {"FEH": "[Fe/H]", "ALPHAFE": r"[$\alpha$/Fe]", "TEFF": r"$T_\mathrm{eff}$ (K)", "LOGG": r"$\log g$"}
_BINS = 160
_MIN_CELL = 3


def new_figure(width: float, height: float):
    """A Figure attached to an Agg canvas (no pyplot, no display, no global backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_png(fig, path: str | os.PathLike, *, dpi: int = 100) -> str:
    """Write ``fig`` as a PNG; return the path."""
    path = os.fspath(path)
    fig.savefig(path, format="png", dpi=dpi)
    return path


def _text(name: str) -> str:
    return LABEL_TEXT.get(name, name)


def _limits(x: np.ndarray, *, pad: float = 0.05, q=(0.5, 99.5)) -> tuple[float, float]:
    """A plotting range covering the bulk of the finite values of ``x`` (robust to outliers)."""
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(x, q)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    d = (hi - lo) * pad
    return float(lo - d), float(hi + d)


def _empty(ax, what: str = "no stars to show") -> None:
    ax.text(0.5, 0.5, what, ha="center", va="center", transform=ax.transAxes, color="0.4")


def _density(ax, *, x, y, xr, yr, color=None, cmap="viridis", clabel="", fig=None, vmin=None, vmax=None):
    """Scatter (few points) or 2-D histogram: counts, or the mean of ``color`` per cell."""
    from matplotlib.colors import LogNorm

    ok = np.isfinite(x) & np.isfinite(y) & (np.isfinite(color) if color is not None else True)
    x, y = x[ok], y[ok]
    c = color[ok] if color is not None else None
    if x.size == 0:
        _empty(ax)
        return None
    if x.size <= SCATTER_MAX:
        if c is None:
            ax.scatter(x, y, c="k", s=3, lw=0, alpha=0.5, rasterized=True)
            return None
        art = ax.scatter(x, y, c=c, s=6, cmap=cmap, vmin=vmin, vmax=vmax, lw=0, alpha=0.8, rasterized=True)
    else:
        count, total = binned_2d(x=x, y=y, xrange=xr, yrange=yr, bins=(_BINS, _BINS), weights=c)
        extent = (xr[0], xr[1], yr[0], yr[1])
        if c is None:
            img = np.where(count > 0, count, np.nan)
            art = ax.imshow(img, origin="lower", extent=extent, aspect="auto", cmap="magma_r",
                            norm=LogNorm(vmin=1, vmax=max(2, count.max())), interpolation="nearest")
            clabel = "stars per cell"
        else:
            # cells of one or two stars would show their noise, not the mean: leave them blank
            with np.errstate(invalid="ignore", divide="ignore"):
                img = np.where(count >= _MIN_CELL, total / count, np.nan)
            art = ax.imshow(img, origin="lower", extent=extent, aspect="auto", cmap=cmap, vmin=vmin,
                            vmax=vmax, interpolation="nearest")
            # density contours: where the stars are, which the colour (a mean) does not show
            if count.max() >= 10:
                levels = np.logspace(1, np.log10(count.max()), 5)[:-1]
                ax.contour(count, levels=levels, extent=extent, colors="k", linewidths=0.6, alpha=0.7)
            clabel = f"mean {clabel} per cell (cells of ≥{_MIN_CELL} stars); contours: density"
    if fig is not None:
        fig.colorbar(art, ax=ax, label=clabel)
    return art


def kiel_figure(*, teff: np.ndarray, logg: np.ndarray, feh: np.ndarray):
    """Kiel diagram: TEFF against LOGG, both axes inverted, coloured by [Fe/H]."""
    fig = new_figure(6.0, 5.0)
    ax = fig.add_subplot()
    xr, yr = _limits(teff), _limits(logg)
    _density(ax, x=teff, y=logg, xr=xr, yr=yr, color=feh, cmap="viridis", clabel="[Fe/H]", fig=fig,
             vmin=-2.5, vmax=0.5)
    ax.set_xlim(xr[1], xr[0])  # hot stars left, giants up: as astronomers draw it
    ax.set_ylim(yr[1], yr[0])
    ax.set_xlabel(_text("TEFF"))
    ax.set_ylabel(_text("LOGG"))
    ax.set_title(f"Kiel diagram ({int(np.sum(np.isfinite(teff) & np.isfinite(logg))):,} stars)")
    return fig


def alpha_feh_figure(*, feh: np.ndarray, alphafe: np.ndarray):
    """[alpha/Fe] against [Fe/H] (star density)."""
    fig = new_figure(6.0, 4.5)
    ax = fig.add_subplot()
    xr, yr = _limits(feh), _limits(alphafe)
    _density(ax, x=feh, y=alphafe, xr=xr, yr=yr, fig=fig)
    ax.set_xlim(*xr)
    ax.set_ylim(*yr)
    ax.set_xlabel(_text("FEH"))
    ax.set_ylabel(_text("ALPHAFE"))
    ax.set_title(f"[α/Fe] vs [Fe/H] ({int(np.sum(np.isfinite(feh) & np.isfinite(alphafe))):,} stars)")
    return fig


def _graticule(ax, proj) -> None:
    """Meridians every 60 degrees and parallels every 30 degrees of a healpy Mollweide projector."""
    lat = np.linspace(-90, 90, 181)
    for lon in range(-180, 181, 60):
        x, y = proj.ang2xy(np.full_like(lat, lon), lat, lonlat=True)
        ax.plot(x, y, color="0.6", lw=0.5)
    lon = np.linspace(-180, 180, 361)
    for la in range(-60, 61, 30):
        x, y = proj.ang2xy(lon, np.full_like(lon, la), lonlat=True)
        ax.plot(x, y, color="0.6", lw=0.5)
    for lon in (0, 60, 120, 240, 300):
        x, y = proj.ang2xy(np.array([lon, lon]), np.array([0.0, 0.0]), lonlat=True)
        ax.text(x[0], y[0], f"{lon}°", fontsize=7, color="0.3", ha="center", va="bottom")


def sky_figure(*, healpix: np.ndarray, nside: int, values: np.ndarray | None = None, nest: bool = True,
               what: str = "[Fe/H]", xsize: int = 1000):
    """Mollweide map (equatorial, RA increasing to the left) of stars per pixel or the median of ``values``.

    Parameters
    ----------
    healpix : ndarray of int, shape (N,)
        Pixel of each star (invalid numbers are left out).
    nside : int
    values : ndarray of float, shape (N,), optional
        Map their median per pixel instead of the counts.
    nest : bool
        Pixel numbering scheme of ``healpix``.
    what : str
        Name of ``values`` for the colour bar.
    """
    import healpy as hp
    from healpy import projector
    from matplotlib.colors import LogNorm

    npix = hp.nside2npix(nside)
    pix = np.asarray(healpix, dtype=np.int64)
    ok = (pix >= 0) & (pix < npix)
    hmap = np.full(npix, np.nan)
    if values is None:
        counts = np.bincount(pix[ok], minlength=npix).astype(float)
        hmap[counts > 0] = counts[counts > 0]
        title, clabel = f"Stars per HEALPix pixel (nside {nside})", "stars"
    else:
        keys, med, _ = grouped_quantiles(groups=pix[ok], values=np.asarray(values, float)[ok], q=0.5)
        hmap[keys] = med
        title, clabel = f"Median {what} per HEALPix pixel (nside {nside})", f"median {what}"
    proj = projector.MollweideProj(xsize=xsize)
    img = proj.projmap(hmap, lambda x, y, z: hp.vec2pix(nside, x, y, z, nest=nest))
    img = np.where(np.isfinite(img), img, np.nan)  # -inf outside the ellipse, NaN in empty pixels

    fig = new_figure(8.0, 4.8)
    ax = fig.add_subplot()
    ax.set_axis_off()
    extent = proj.get_extent()
    # the projector's image has x growing with the column; 'astro' flip puts RA increasing leftwards
    if np.isfinite(img).any():
        if values is None:
            art = ax.imshow(img, origin="lower", extent=extent, cmap="magma_r", interpolation="nearest",
                            norm=LogNorm(vmin=1, vmax=max(2.0, np.nanmax(img))))
        else:
            lo, hi = np.nanpercentile(img, [2, 98])
            art = ax.imshow(img, origin="lower", extent=extent, cmap="viridis", interpolation="nearest",
                            vmin=lo, vmax=hi if hi > lo else lo + 0.1)
        fig.colorbar(art, ax=ax, orientation="horizontal", shrink=0.6, pad=0.02, label=clabel)
    else:
        _empty(ax)
    ellipse = np.linspace(0, 2 * np.pi, 361)
    ax.plot(2 * np.cos(ellipse), np.sin(ellipse), color="0.3", lw=0.8)
    _graticule(ax, proj)
    ax.set_xlim(extent[0] - 0.02, extent[1] + 0.02)
    ax.set_ylim(extent[2] - 0.02, extent[3] + 0.02)
    ax.set_aspect("equal")
    ax.set_title(title + " — equatorial, RA increases to the left")
    return fig


def _running(ax, *, x, y, edges, color="C1") -> None:
    """Median and 16th-84th percentile band of ``y`` in bins of ``x``."""
    idx = np.searchsorted(edges, x, side="right") - 1
    ok = (idx >= 0) & (idx < edges.size - 1) & np.isfinite(y)
    keys, q, counts = grouped_quantiles(groups=idx[ok], values=y[ok], q=[0.16, 0.5, 0.84])
    keep = counts >= 5
    if not keep.any():
        return
    centres = 0.5 * (edges[keys[keep]] + edges[keys[keep] + 1])
    ax.plot(centres, q[keep, 1], color=color, lw=1.5, label="median")
    ax.fill_between(centres, q[keep, 0], q[keep, 2], color=color, alpha=0.25, lw=0, label="16–84%")


def uncertainty_figure(*, snr: np.ndarray, errors: dict):
    """Each label's reported uncertainty against S/N (log S/N), with the running median."""
    names = list(errors)
    fig = new_figure(4.0 * len(names), 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    snr = np.asarray(snr, float)
    logsnr = np.log10(np.where(snr > 0, snr, np.nan))
    for ax, name in zip(axes, names):
        e = np.asarray(errors[name], float)
        ok = np.isfinite(logsnr) & np.isfinite(e)
        xr, yr = _limits(logsnr[ok], pad=0.02), _limits(e[ok], q=(0.0, 99.0))
        yr = (max(0.0, yr[0]), yr[1])
        _density(ax, x=logsnr, y=e, xr=xr, yr=yr)
        if ok.any():
            _running(ax, x=logsnr[ok], y=e[ok], edges=np.linspace(xr[0], xr[1], 21))
            if ax.get_legend_handles_labels()[0]:
                ax.legend(loc="upper right", fontsize=7)
        ax.set_xlim(*xr)
        ax.set_ylim(*yr)
        ax.set_xlabel(r"$\log_{10}$ S/N per pixel")
        ax.set_ylabel(f"uncertainty of {_text(name)}")
    fig.suptitle("Uncertainty vs S/N")
    return fig


def distributions_figure(*, values: dict, reference: dict | None = None, reference_name: str = "all rows",
                         shown_name: str = "shown rows"):
    """Histogram of each label; ``reference`` (e.g. every row, flagged included) drawn behind it."""
    names = list(values)
    fig = new_figure(3.6 * len(names), 3.2)
    axes = np.atleast_1d(fig.subplots(1, len(names)))
    for ax, lab in zip(axes, names):
        v = np.asarray(values[lab], float)
        v = v[np.isfinite(v)]
        r = None if reference is None else np.asarray(reference[lab], float)
        r = None if r is None else r[np.isfinite(r)]
        lo, hi = _limits(r if r is not None and r.size else v, pad=0.02, q=(0.1, 99.9))
        edges = np.linspace(lo, hi, 61)
        if r is not None and r.size:
            ax.hist(r, bins=edges, histtype="stepfilled", color="0.85", label=f"{reference_name} ({r.size:,})")
        if v.size:
            ax.hist(v, bins=edges, histtype="step", color="C0", lw=1.4, label=f"{shown_name} ({v.size:,})")
        else:
            _empty(ax)
        ax.set_xlabel(_text(lab))
        ax.set_ylabel("stars")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7, loc="upper left")
    fig.suptitle("Label distributions")
    return fig


def flags_figure(*, flag_rows: list[dict], nrows: int):
    """Horizontal bars: rows with each flag bit set (bad bits in red)."""
    fig = new_figure(6.5, 0.35 * max(4, len(flag_rows)) + 1.0)
    ax = fig.add_subplot()
    names = [r["name"] for r in flag_rows]
    counts = np.array([r["count"] for r in flag_rows], dtype=float)
    colors = ["C3" if r["bad"] else "C0" for r in flag_rows]
    y = np.arange(len(names))
    ax.barh(y, counts, color=colors)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(f"rows with the bit set (of {nrows:,}); red: part of FLAG_BAD")
    for yi, c in zip(y, counts):
        ax.text(c, yi, f" {int(c):,}", va="center", fontsize=7)
    ax.set_xlim(0, max(1.0, counts.max() if counts.size else 1.0) * 1.18)
    ax.set_title("Flag bits")
    return fig


def residuals_figure(*, pred: np.ndarray, true: np.ndarray, names: list[str]):
    """Per label: estimate against truth (with the 1:1 line) above, residual against truth below."""
    fig = new_figure(3.8 * len(names), 7.0)
    axes = np.asarray(fig.subplots(2, len(names), squeeze=False))
    for j, name in enumerate(names):
        p, t = pred[:, j], true[:, j]
        ok = np.isfinite(p) & np.isfinite(t)
        r = p - t
        lo, hi = _limits(np.concatenate([p[ok], t[ok]]))
        top, bottom = axes[0, j], axes[1, j]
        _density(top, x=t, y=p, xr=(lo, hi), yr=(lo, hi))
        top.plot([lo, hi], [lo, hi], color="C3", lw=0.8)
        top.set_xlim(lo, hi)
        top.set_ylim(lo, hi)
        top.set_xlabel(f"true {_text(name)}")
        top.set_ylabel(f"stxcat {_text(name)}")
        rr = _limits(r[ok], q=(1, 99))
        _density(bottom, x=t, y=r, xr=(lo, hi), yr=rr)
        bottom.axhline(0.0, color="C3", lw=0.8)
        if ok.sum() >= 5:
            _running(bottom, x=t[ok], y=r[ok], edges=np.linspace(lo, hi, 16))
            med = np.median(r[ok])
            mad = 1.4826 * np.median(np.abs(r[ok] - med))
            bottom.text(0.03, 0.95, f"bias {np.mean(r[ok]):.3g}\nscatter {mad:.3g}\nN {int(ok.sum()):,}",
                        transform=bottom.transAxes, va="top", fontsize=8)
        bottom.set_xlim(lo, hi)
        bottom.set_ylim(*rr)
        bottom.set_xlabel(f"true {_text(name)}")
        bottom.set_ylabel("stxcat − true")
    fig.suptitle("Comparison with the truth table")
    return fig

