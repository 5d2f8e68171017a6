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
@click.option("--no-checksum", is_flag=True, help="Skip CHECKSUM/DATASUM keywords (about 2x faster).")
@click.option("--overwrite", is_flag=True, help="Replace an earlier simulation in OUT.")
@friendly_errors
def simulate_desi_cmd(out, pixels, per_pixel, seed, survey, program, snr_min, snr_max, no_resolution,
                      no_checksum, overwrite):
    """Write a DESI healpix release (coadd + redrock files) and truth-desi.fits into OUT."""
    from catalog_tool.sim.desi import simulate_desi

    r = simulate_desi(out, pixels=pixels, per_pixel=per_pixel, seed=seed, survey=survey, program=program,
                      snr_range=(snr_min, snr_max), resolution=not no_resolution,
                      checksum=not no_checksum, overwrite=overwrite)
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


# ---------------------------------------------------------------------------------------------
# annotate
# ---------------------------------------------------------------------------------------------
#: Exit status of an annotate run that wrote its VAC but could not read some input files.
EXIT_SOME_FILES_FAILED = 3


@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("--out", "-o", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="VAC FITS file to write (required unless given in --config).")
@click.option("--model", "-m", default=None,
              help="Bundled model name or path of a bundle folder  [default: default].")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None,
              help="Where the networks run; auto = CUDA when available  [default: auto].")
@click.option("--batch-size", type=int, default=None, help="Spectra per forward pass  [default: 2048].")
@click.option("--scheduler", default=None,
              help="threads, processes, synchronous, or a Dask scheduler address tcp://host:port  "
                   "[default: threads].")
@click.option("--workers", type=int, default=None,
              help="Partitions at once with the local schedulers  [default: 1].")
@click.option("--threads", type=int, default=None, help="Torch/BLAS threads per worker  [default: 1].")
@click.option("--partition-size", type=int, default=None,
              help="Target spectra per partition; pixels are never split  [default: 20000].")
@click.option("--work-dir", type=click.Path(file_okay=False, path_type=str), default=None,
              help="Run state: plan, part files, done markers, log  [default: OUT.work].")
@click.option("--resume/--no-resume", default=None,
              help="Continue the run in --work-dir, skipping finished partitions.")
@click.option("--overwrite", is_flag=True, default=None,
              help="Discard an existing work dir and output and start over.")
@click.option("--per-pixel", is_flag=True, default=None,
              help="Also write one VAC per HEALPix pixel in the DESI layout beside OUT.")
@click.option("--strict", is_flag=True, default=None,
              help="Stop at the first unreadable input file instead of recording it.")
@click.option("--progress/--no-progress", default=None, help="Progress bars on stderr  [default: on].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="TOML file of settings (field names of AnnotateConfig); the command line wins.")
@friendly_errors
def annotate(inputs, config_file, **options):
    """Annotate INPUTS (a DESI release tree, LAMOST folders, or files) into a VAC.

    Plans HEALPix partitions, processes each (read, select stars, preprocess, infer with
    uncertainties, flag) as one Dask task, and merges the part files into OUT. Unreadable files
    are listed in the VAC's ERRORS table and the log; the exit status is then 3 (the VAC is still
    written). Run state lives in --work-dir so that --resume continues an interrupted run.
    """
    from catalog_tool.config import build_config
    from catalog_tool.pipeline.run import annotate as run_annotate

    cfg = build_config(file=config_file, inputs=tuple(inputs) or None, command=" ".join(sys.argv),
                       **options)
    summary = run_annotate(cfg)
    click.echo(f"wrote {summary.out}: {summary.rows} rows, {summary.estimated} stars estimated, "
               f"{summary.flagged_bad} FLAG_BAD, in {summary.seconds:.1f} s on {summary.device}")
    if summary.per_pixel_files:
        click.echo(f"wrote {summary.per_pixel_files} per-pixel VAC files beside it")
    if summary.partitions_skipped:
        click.echo(f"resumed: {summary.partitions_skipped} of {summary.partitions} partitions were already done")
    if summary.failed_files:
        click.echo(f"{len(summary.failed_files)} input file(s) could not be read (see the ERRORS "
                   f"table and {cfg.resolved_work_dir}/stxcat.log):", err=True)
        for path, reason in summary.failed_files[:5]:
            click.echo(f"  {path}: {reason}", err=True)
        sys.exit(EXIT_SOME_FILES_FAILED)


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
@main.command()
@click.argument("vac", type=click.Path(dir_okay=False, path_type=str))
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for report.html, the PNG figures and summary.json (created if needed).")
@click.option("--truth", type=click.Path(dir_okay=False, path_type=str), default=None,
              help="Truth table or reference catalogue (FITS) matched by TARGETID (and SURVEY) or OBSID: "
                   "adds residual plots and the evaluate metrics.")
@click.option("--good-only/--all", "good_only", default=True, show_default=True,
              help="Draw figures and metrics from rows without FLAG_BAD only, or from every row with a value.")
@friendly_errors
def report(vac, out, truth, good_only):
    """Write QA figures, summary tables and one self-contained HTML page for the VAC file.

    Kiel diagram, [alpha/Fe] vs [Fe/H], sky maps of counts and median [Fe/H] per HEALPix pixel,
    uncertainty vs S/N, label distributions and flag counts. Counts always cover every row.
    """
    from catalog_tool.report import make_report

    r = make_report(vac, out, truth=truth, good_only=good_only)
    s = r.summary
    click.echo(f"wrote {r.html} and {len(r.figures)} figures: {s['rows']} rows, {s['estimated']} estimated, "
               f"{s['flag_bad']} FLAG_BAD")
    if "truth" in s:
        click.echo(f"matched {s['truth']['matched']} rows to {truth}; metrics in {out}/metrics.md")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
