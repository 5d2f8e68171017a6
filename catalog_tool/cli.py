"""The ``stxcat`` command line: thin click commands that hand off to library functions.

Click lives here and nowhere else. Every command turns :class:`~catalog_tool.errors.StxcatError`
into one line on stderr and exit status 1 (click's own usage errors exit 2).
"""

from __future__ import annotations

import functools
import json
import sys

import click

from catalog_tool import __version__
from catalog_tool.errors import StxcatError


def friendly_errors(func):
    """Turn domain errors into a one-line ClickException (no traceback)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except StxcatError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="stxcat")
def main():
    """stxcat: stellar-parameter value-added catalogues from DESI and LAMOST spectra.

    Reads whole data releases by HEALPix partition, preprocesses each stellar spectrum as
    Zhao, Ting, Wyse et al. (arXiv:2602.15021) do, applies pre-trained and fine-tuned networks,
    and writes a FITS value-added catalogue that opens in TOPCAT.
    """


# ---------------------------------------------------------------------------------------------
# plan
# ---------------------------------------------------------------------------------------------
@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--partition-size", type=click.IntRange(min=1), default=None,
              help="Target number of spectra per partition  [default: 20000].")
@click.option("--json", "as_json", is_flag=True, help="Print the plan as JSON instead of a table.")
@friendly_errors
def plan(inputs, partition_size, as_json):
    """Index INPUTS (release trees, folders or files) and print the partitions.

    Reads headers only. Files that cannot be used are listed as skipped, with the reason.
    """
    from catalog_tool.io import release

    idx = release.discover(inputs)
    parts = release.partition(idx.entries, target_spectra=partition_size or release.DEFAULT_PARTITION_SPECTRA)
    if as_json:
        click.echo(json.dumps(release.plan_to_dict(idx, parts), indent=2))
    else:
        click.echo(release.format_plan(idx, parts))
    if not idx.entries:
        raise click.ClickException("no usable spectra found in " + ", ".join(inputs))


# ---------------------------------------------------------------------------------------------
# simulate
# ---------------------------------------------------------------------------------------------
@main.group()
def simulate():
    """Write synthetic DESI or LAMOST releases (real file formats) with a truth table."""


def _snr_options(func):
    func = click.option("--snr-max", type=float, default=80.0, show_default=True,
                        help="Largest median S/N per pixel (log-uniform draw).")(func)
    return click.option("--snr-min", type=float, default=5.0, show_default=True,
                        help="Smallest median S/N per pixel.")(func)


@simulate.command("desi")
@click.argument("out", type=click.Path(path_type=str))
@click.option("--pixels", type=int, default=4, show_default=True, help="HEALPix pixels (nside 64) to write.")
@click.option("--per-pixel", type=int, default=50, show_default=True, help="Fibres (rows) per pixel, all kinds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (output is a function of it).")
@click.option("--survey", default="main", show_default=True, help="DESI survey name.")
@click.option("--program", default="bright", show_default=True, help="DESI program name.")
@_snr_options
@click.option("--no-resolution", is_flag=True, help="Leave out the RESOLUTION HDUs (most of the volume).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier simulation in OUT.")
@friendly_errors
def simulate_desi_cmd(out, pixels, per_pixel, seed, survey, program, snr_min, snr_max, no_resolution, overwrite):
    """Write a DESI healpix release (coadd + redrock files) and truth-desi.fits into OUT."""
    from catalog_tool.sim.desi import simulate_desi

    r = simulate_desi(out, pixels=pixels, per_pixel=per_pixel, seed=seed, survey=survey, program=program,
                      snr_range=(snr_min, snr_max), resolution=not no_resolution, overwrite=overwrite)
    click.echo(f"wrote {r.nspec} spectra ({r.nstars} stars) in {len(r.files) // 2} pixels; truth: {r.truth}")


@simulate.command("lamost")
@click.argument("out", type=click.Path(path_type=str))
@click.option("--n", "n", type=int, default=20, show_default=True, help="Number of spectra (one file each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (output is a function of it).")
@click.option("--layout", type=click.Choice(["dr1", "dr7", "dr10", "mixed"]), default="mixed", show_default=True,
              help="File layout of the LAMOST release to imitate; mixed draws one per file.")
@click.option("--gzip", "gzip_", is_flag=True, help="Write .fits.gz files.")
@_snr_options
@click.option("--overwrite", is_flag=True, help="Replace an earlier simulation in OUT.")
@friendly_errors
def simulate_lamost_cmd(out, n, seed, layout, gzip_, snr_min, snr_max, overwrite):
    """Write LAMOST LRS spectrum files, catalog-lamost.fits and truth-lamost.fits into OUT."""
    from catalog_tool.sim.lamost import simulate_lamost

    r = simulate_lamost(out, n=n, seed=seed, layout=layout, gzip=gzip_, snr_range=(snr_min, snr_max),
                        overwrite=overwrite)
    click.echo(f"wrote {r.nspec} spectra ({r.nstars} stars); truth: {r.truth}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
