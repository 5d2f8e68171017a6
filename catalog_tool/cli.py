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


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
