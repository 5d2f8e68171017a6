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

#: Exit status of a command that wrote its output but could not read some input files.
EXIT_SOME_FILES_FAILED = 3


def report_failed_files(failures, *, where: str = "") -> None:
    """Print the input files that could not be read (the first five) and exit with status 3.

    The output (VAC, bundle, encoder, metrics) was written all the same; ``where`` says where the
    whole list is. Nothing happens when there are none.
    """
    if not failures:
        return
    click.echo(f"{len(failures)} input file(s) could not be read{f' (see {where})' if where else ''}:", err=True)
    for path, reason in list(failures)[:5]:
        click.echo(f"  {path}: {reason}", err=True)
    sys.exit(EXIT_SOME_FILES_FAILED)


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
@click.option("--catalog", type=click.Path(exists=True, dir_okay=False, path_type=str), default=None,
              help="LAMOST survey catalogue (LRS General Catalogue columns): plan from its rows, opening no "
                   "spectrum file.")
@friendly_errors
def plan(inputs, partition_size, as_json, catalog):
    """Index INPUTS (release trees, folders or files) and print the partitions.

    Reads headers only; with --catalog, not even those (files are matched to catalogue rows by
    name). Files that cannot be used are listed as skipped, with the reason.
    """
    from catalog_tool.io import release
    from catalog_tool.pipeline.plan import discover

    idx, planned = discover(inputs, catalog)
    parts = release.partition(planned, target_spectra=partition_size or release.DEFAULT_PARTITION_SPECTRA)
    if as_json:
        data = release.plan_to_dict(idx, parts)
        if catalog:
            data["catalog"] = idx.summary()
        click.echo(json.dumps(data, indent=2))
    else:
        click.echo(release.format_plan(idx, parts))
        if catalog:
            click.echo("\n".join(idx.lines()))
    if not planned:
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


def _randomise_option(func):
    return click.option("--randomise", is_flag=True,
                        help="Perturb each star as real spectra vary: LSF width and slope, flux-calibration "
                             "tilts and wiggles, sky residuals, dust, masked runs (ranges of "
                             "catalog_tool.sim.randomise); the draws are written to the truth table.")(func)


def _randomisation(flag: bool):
    from catalog_tool.sim.randomise import DomainRandomisation

    return DomainRandomisation() if flag else None


@simulate.command("desi")
@click.argument("out", type=click.Path(path_type=str))
@click.option("--pixels", type=int, default=4, show_default=True, help="HEALPix pixels (nside 64) to write.")
@click.option("--per-pixel", type=int, default=50, show_default=True, help="Fibres (rows) per pixel, all kinds.")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (output is a function of it).")
@click.option("--survey", default="main", show_default=True, help="DESI survey name.")
@click.option("--program", default="bright", show_default=True, help="DESI program name.")
@_snr_options
@click.option("--no-resolution", is_flag=True, help="Leave out the RESOLUTION HDUs (most of the volume).")
@click.option("--no-checksum", is_flag=True, help="Skip CHECKSUM/DATASUM keywords.")
@_randomise_option
@click.option("--workers", type=int, default=1, show_default=True,
              help="Processes writing pixels in parallel; the output does not depend on it.")
@click.option("--overwrite", is_flag=True, help="Replace an earlier simulation in OUT.")
@friendly_errors
def simulate_desi_cmd(out, pixels, per_pixel, seed, survey, program, snr_min, snr_max, no_resolution,
                      no_checksum, randomise, workers, overwrite):
    """Write a DESI healpix release (coadd + redrock files) and truth-desi.fits into OUT."""
    from catalog_tool.sim.desi import simulate_desi

    r = simulate_desi(out, pixels=pixels, per_pixel=per_pixel, seed=seed, survey=survey, program=program,
                      snr_range=(snr_min, snr_max), resolution=not no_resolution,
                      checksum=not no_checksum, overwrite=overwrite, workers=workers,
                      randomise=_randomisation(randomise))
    click.echo(f"wrote {r.nspec} spectra ({r.nstars} stars) in {len(r.files) // 2} pixels; truth: {r.truth}")


@simulate.command("lamost")
@click.argument("out", type=click.Path(path_type=str))
@click.option("--n", "n", type=int, default=20, show_default=True, help="Number of spectra (one file each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed (output is a function of it).")
@click.option("--layout", type=click.Choice(["dr1", "dr7", "dr10", "mixed"]), default="mixed", show_default=True,
              help="File layout of the LAMOST release to imitate; mixed draws one per file.")
@click.option("--gzip", "gzip_", is_flag=True, help="Write .fits.gz files.")
@_snr_options
@_randomise_option
@click.option("--overwrite", is_flag=True, help="Replace an earlier simulation in OUT.")
@friendly_errors
def simulate_lamost_cmd(out, n, seed, layout, gzip_, snr_min, snr_max, randomise, overwrite):
    """Write LAMOST LRS spectrum files, catalog-lamost.fits and truth-lamost.fits into OUT."""
    from catalog_tool.sim.lamost import simulate_lamost

    r = simulate_lamost(out, n=n, seed=seed, layout=layout, gzip=gzip_, snr_range=(snr_min, snr_max),
                        overwrite=overwrite, randomise=_randomisation(randomise))
    click.echo(f"wrote {r.nspec} spectra ({r.nstars} stars); truth: {r.truth}")


# ---------------------------------------------------------------------------------------------
# annotate
# ---------------------------------------------------------------------------------------------
@main.command()
@click.argument("inputs", nargs=-1, type=click.Path(path_type=str))
@click.option("--out", "-o", type=click.Path(path_type=str), default=None,
              help="VAC to write: a FITS file, a Parquet file or a HATS folder, as --format says "
                   "(required unless given in --config).")
@click.option("--format", "format", type=click.Choice(["fits", "parquet", "hats"]), default=None,
              help="Output format; parquet and hats need the optional packages (pip install 'stxcat[hats]') "
                   "and keep the FITS VAC as vac.fits in --work-dir  [default: fits].")
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
@click.option("--threads", type=int, default=None,
              help="Compute threads per worker, each preprocessing and inferring its own chunks (torch and "
                   "numpy's BLAS run one thread inside each); 0 = the CPUs divided among the workers  [default: 0].")
@click.option("--catalog", type=click.Path(path_type=str), default=None,
              help="LAMOST survey catalogue (LRS General Catalogue columns): plan from its rows without opening "
                   "the files; rows whose file is missing become flagged rows, files it does not name are "
                   "listed, not read.")
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
    if summary.flag_counts:
        click.echo("flags: " + ", ".join(f"{k} {v}" for k, v in summary.flag_counts.items()))
    if summary.per_pixel_files:
        click.echo(f"wrote {summary.per_pixel_files} per-pixel VAC files beside it")
    if summary.partitions_skipped:
        click.echo(f"resumed: {summary.partitions_skipped} of {summary.partitions} partitions were already done")
    if summary.missing:
        click.echo(f"{summary.missing} catalogue row(s) name files that are not under the inputs: their rows "
                   f"are flagged FILE_MISSING", err=True)
    if summary.unlisted:
        click.echo(f"{len(summary.unlisted)} file(s) under the inputs are not in the catalogue and were not read "
                   f"(listed in {cfg.resolved_work_dir}/stxcat.log), e.g. {summary.unlisted[0]}", err=True)
    if summary.problems:
        click.echo(f"{len(summary.problems)} reading problem(s), e.g. {summary.problems[0]} (all in "
                   f"{cfg.resolved_work_dir}/stxcat.log; the rows are flagged)", err=True)
    report_failed_files(summary.failed_files, where=f"the ERRORS table and {cfg.resolved_work_dir}/stxcat.log")


# ---------------------------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------------------------
@main.command()
@click.argument("vac", type=click.Path(dir_okay=False, path_type=str))
@click.argument("out", type=click.Path(path_type=str))
@click.option("--format", "format", required=True, type=click.Choice(["parquet", "hats"]),
              help="parquet: one Parquet file; hats: a HEALPix-partitioned HATS catalogue folder for LSDB.")
@click.option("--overwrite", is_flag=True, help="Replace an existing OUT.")
@click.option("--progress/--no-progress", default=True, show_default=True,
              help="hats-import's progress bars on stderr (hats only).")
@friendly_errors
def export(vac, out, format, overwrite, progress):
    """Write the FITS VAC file VAC to OUT as Parquet or HATS (needs pip install 'stxcat[hats]').

    Same columns, units, UCDs and descriptions as the FITS data model, the provenance and the
    ERRORS table; written streaming and atomically. The rows are the same as annotate --format
    would write.
    """
    from catalog_tool.vac.export import export_vac

    r = export_vac(vac, out, format=format, overwrite=overwrite, progress=progress)
    click.echo(f"wrote {r.path} ({r.format}): {r.nrows} rows"
               + (f" in {r.partitions} HEALPix partitions" if r.format == "hats" else "")
               + f", {r.nerrors} ERRORS rows carried over")
    if r.extras_left_out:
        click.echo(f"not exported (row-matched extra HDUs): {', '.join(r.extras_left_out)}", err=True)


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


# ---------------------------------------------------------------------------------------------
# pretrain, finetune, evaluate, models
# ---------------------------------------------------------------------------------------------
def _inference_options(func):
    """``--device``, ``--batch-size``, ``--threads`` and ``--cache`` of the commands that predict a labelled set."""
    for opt in reversed([
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--batch-size", type=click.IntRange(min=1), default=1024, show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads."),
        click.option("--cache", type=click.Path(dir_okay=False, path_type=str), default=None,
                     help="Preprocessed-set cache (.npz): read if present, else written."),
    ]):
        func = opt(func)
    return func


def _label_table_options(func):
    """--labels and how to read it: shared by pretrain, finetune, evaluate and calibrate."""
    opts = [
        click.option("--labels", "labels_path", required=True, type=click.Path(dir_okay=False, path_type=str),
                     help="Label table (FITS or CSV, e.g. an APOGEE allStar or GALAH allstar file), joined by "
                          "TARGETID/OBSID or else by RA/DEC within 1 arcsec."),
        click.option("--label-preset", type=click.Choice(["apogee", "galah"]), default=None,
                     help="Column names of APOGEE DR17 allStar or GALAH DR4 allstar (labels, errors, id, RA/DEC, "
                          "S/N)."),
        click.option("--label-column", "label_columns", multiple=True, metavar="KEY=COLUMN",
                     help="Which column gives a label, its error or a role (repeat): FEH=FE_H, FEH_ERR=FE_H_ERR, "
                          "TARGETID=..., ID=..., RA=..., DEC=..., SNR=...; wins over the preset."),
        click.option("--where", default=None, metavar="EXPR",
                     help='Quality cut on table columns, e.g. "ASPCAPFLAG == 0 and SNR > 70" (comparisons, '
                          "and/or/not, parentheses, & | for bit flags; never evaluated as code)."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _label_options(o: dict):
    """The LabelOptions of the parsed --label-preset/--label-column/--where (removed from ``o``)."""
    from catalog_tool.train.labels import LabelOptions

    return LabelOptions.from_cli(preset=o.pop("label_preset"), columns=o.pop("label_columns"), where=o.pop("where"))


def _train_options(func):
    """Options shared by pretrain and finetune (defaults: the paper's)."""
    opts = [
        click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=str),
                     help="Bundle folder to write (manifest.json, weights.safetensors, training_log.jsonl)."),
        click.option("--epochs", type=click.IntRange(min=1), default=100, show_default=True),
        click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True),
        click.option("--lr", type=float, default=1e-5, show_default=True, help="AdamW learning rate."),
        click.option("--weight-decay", type=float, default=1e-4, show_default=True),
        click.option("--val-fraction", type=float, default=0.1, show_default=True,
                     help="Held out for validation (best-validation checkpoint, early stopping)."),
        click.option("--patience", type=click.IntRange(min=1), default=None,
                     help="Stop after this many epochs without a better validation loss  [default: off]."),
        click.option("--seed", type=int, default=0, show_default=True,
                     help="Seeds the split; ensemble member m uses seed + m."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True),
        click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads."),
        click.option("--cache", type=click.Path(dir_okay=False, path_type=str), default=None,
                     help="Preprocessed-set cache (.npz): read if present, else written."),
        click.option("--float16", is_flag=True, help="Store weights as float16 (refused if any prediction "
                                                     "moves by more than 1e-3 dex)."),
        click.option("--overwrite", is_flag=True, help="Replace a bundle already at --out."),
    ]
    for opt in reversed(opts):
        func = opt(func)
    return func


def _torch_threads(n: int | None) -> None:
    """torch CPU threads for the rest of this command; the count is restored when it ends."""
    from catalog_tool.models.threads import torch_threads

    click.get_current_context().with_resource(torch_threads(n))


def _command_line() -> str:
    """The current command rebuilt from its parsed parameters (recorded in bundle provenance)."""
    import shlex

    ctx = click.get_current_context()
    parts = ["stxcat", ctx.info_name]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(param, click.Argument):
            parts += [str(v) for v in (value if isinstance(value, tuple) else (value,))]
        elif value is None or value is False or value == ():
            continue
        elif param.is_flag:
            parts.append(param.opts[0])
        else:
            for v in value if isinstance(value, tuple) else (value,):
                parts += [param.opts[0], str(v)]
    return " ".join(shlex.quote(p) for p in parts)


def _train_config(o: dict, *, freeze_bn: bool = False):
    from catalog_tool.train.loop import TrainConfig

    return TrainConfig(epochs=o["epochs"], batch_size=o["batch_size"], lr=o["lr"], weight_decay=o["weight_decay"],
                       val_fraction=o["val_fraction"], seed=o["seed"], patience=o["patience"], device=o["device"],
                       freeze_bn=freeze_bn)


def _report_trained(outcome) -> None:
    b = outcome.bundle
    if outcome.label_summary:
        click.echo(outcome.label_summary)
    click.echo(f"wrote bundle {b.path}: {b.ensemble_size} members, labels {', '.join(b.label_names)}, "
               f"method {b.method}, {outcome.n_spectra} spectra; log {outcome.log_path}")
    report_failed_files(outcome.failures)


@main.command()
@click.argument("spectra", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--label", "names", multiple=True, required=True,
              help="Label column to learn (repeat: --label FEH --label ALPHAFE).")
@click.option("--ensemble", type=click.IntRange(min=1), default=5, show_default=True,
              help="Members trained from different seeds (their spread is the model uncertainty).")
@click.option("--heads", type=click.Choice(["per-label", "multi-label"]), default="per-label", show_default=True,
              help="One network per label (the paper) or one network with an output per label (faster).")
@click.option("--hidden", default="1024,512,64", show_default=True, help="Hidden layer widths.")
@click.option("--encoder", default=None, type=click.Path(file_okay=False, path_type=str),
              help="Encoder bundle (stxcat pretrain-encoder): train the MLPs on its frozen embeddings instead "
                   "of on the spectra; the encoder is copied into the bundle and pinned by sha256.")
@_label_table_options
@_train_options
@friendly_errors
def pretrain(spectra, names, ensemble, heads, hidden, encoder, **o):
    """Pre-train an ensemble of MLPs on labelled SPECTRA (e.g. LAMOST) and write a model bundle.

    Spectra are read, joined to the label table, preprocessed once on the default grid and
    settings, split 9:1 by --seed, and trained with AdamW keeping the best-validation weights.
    """
    from catalog_tool.errors import ConfigError
    from catalog_tool.train.commands import run_pretrain

    try:
        widths = tuple(int(h) for h in hidden.split(","))
    except ValueError:
        raise ConfigError(f"--hidden must be comma-separated integers, got {hidden!r}") from None
    _torch_threads(o.pop("threads"))
    label_options = _label_options(o)
    if encoder is not None:
        from catalog_tool.train.encoder_commands import run_pretrain_embedding

        if o["float16"]:
            raise ConfigError("--float16 is not offered with --encoder (embedding bundles are stored as float32)")
        outcome = run_pretrain_embedding(spectra, encoder=encoder, labels_path=o["labels_path"], names=list(names),
                                         out=o["out"], config=_train_config(o), hidden=widths, heads=heads,
                                         ensemble=ensemble, cache=o["cache"], overwrite=o["overwrite"],
                                         command=_command_line(), label_options=label_options)
        return _report_trained(outcome)
    outcome = run_pretrain(spectra, labels_path=o["labels_path"], names=list(names), out=o["out"],
                           config=_train_config(o), hidden=widths, heads=heads, ensemble=ensemble, cache=o["cache"],
                           float16=o["float16"], overwrite=o["overwrite"], command=_command_line(),
                           label_options=label_options)
    _report_trained(outcome)


@main.command("pretrain-encoder")
@click.argument("spectra", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Encoder bundle folder to write (manifest.json, weights.safetensors, training_log.jsonl).")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--preset", type=click.Choice(["default", "medium", "specclip"]), default="default", show_default=True,
              help="Size: default 128 wide/2 layers/4 heads (CPU); medium 256/4/4; specclip 768/6/6 (GPU).")
@click.option("--width", type=click.IntRange(min=8), default=None, help="Transformer width (overrides --preset).")
@click.option("--layers", type=click.IntRange(min=1), default=None, help="Transformer layers (overrides --preset).")
@click.option("--heads", type=click.IntRange(min=1), default=None, help="Attention heads (overrides --preset).")
@click.option("--contrastive-with", "contrastive_with", multiple=True, type=click.Path(path_type=str),
              help="Second view of the same stars (e.g. DESI spectra; repeatable): adds a CLIP-style InfoNCE "
                   "term aligning the two views. Pairs by sky position within 1.5 arcsec, or --pair-truth.")
@click.option("--pair-truth", nargs=2, default=None, type=click.Path(dir_okay=False, path_type=str),
              help="Simulated releases: pair by LABEL_ROW of the two truth tables (SPECTRA's, then the second view's).")
@click.option("--batch-size", type=click.IntRange(min=2), default=64, show_default=True)
@click.option("--lr", type=float, default=5e-4, show_default=True, help="Peak AdamW learning rate (warm-up, cosine).")
@click.option("--mask-ratio", type=float, default=0.3, show_default=True, help="Fraction of tokens masked.")
@click.option("--patience", type=click.IntRange(min=1), default=None,
              help="Stop after this many epochs without a better validation loss  [default: off].")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the split, the weights and the masks.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Torch CPU threads.")
@click.option("--overwrite", is_flag=True, help="Replace a bundle already at --out.")
@friendly_errors
def pretrain_encoder_cmd(spectra, out, epochs, preset, width, layers, heads, contrastive_with, pair_truth, batch_size,
                         lr, mask_ratio, patience, seed, device, threads, overwrite):
    """Pre-train a transformer spectral encoder on unlabelled SPECTRA (masked-chunk reconstruction).

    Spectra are read, stars selected and preprocessed on the default grid; the encoder (docs/encoder.md)
    learns to reconstruct masked runs of 20-pixel tokens. Use the result with `stxcat pretrain --encoder`.
    """
    from catalog_tool.models.encoder import ENCODER_PRESETS
    from catalog_tool.train.encoder import EncoderTrainConfig
    from catalog_tool.train.encoder_commands import run_pretrain_encoder

    _torch_threads(threads)
    shape = {**ENCODER_PRESETS[preset], **{k: v for k, v in (("width", width), ("layers", layers), ("heads", heads))
                                           if v is not None}}
    cfg = EncoderTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, mask_ratio=mask_ratio, patience=patience,
                             seed=seed, device=device)
    r = run_pretrain_encoder(spectra, out=out, config=cfg, encoder_config=shape, contrastive_with=list(contrastive_with),
                             pair_truth=tuple(pair_truth) if pair_truth else None, overwrite=overwrite,
                             command=_command_line())
    s = r.encoder.manifest["training"]
    click.echo(f"wrote encoder {r.encoder.path}: {shape['width']} wide, {shape['layers']} layers, {shape['heads']} heads; "
               f"{r.n_spectra} spectra{' (pairs)' if contrastive_with else ''}; validation loss "
               f"{s['initial_val']['total']:.4g} -> {s['best_val_loss']:.4g}; {s['seconds_per_epoch']} s/epoch; "
               f"log {r.log_path}")
    parts = [r.report["a"], r.report["b"]] if "a" in r.report else [r.report]
    report_failed_files([f for part in parts for f in part["files_skipped"]])


class _MethodChoice(click.Choice):
    """The registered fine-tuning methods (``models.adapters.REGISTRY``), looked up when first
    needed: the registry imports torch, which most commands never load."""

    def __init__(self):
        super().__init__(())

    @property
    def choices(self):
        from catalog_tool.models.adapters import REGISTRY

        return tuple(REGISTRY)

    @choices.setter
    def choices(self, value):  # click.Choice.__init__ assigns; the registry is the only source
        pass


class _MethodOption(click.Option):
    """``--method``, whose help lists each registered method with its one-line summary."""

    def get_help_record(self, ctx):
        from catalog_tool.models.adapters import REGISTRY

        self.help = "; ".join(f"{m.name}: {m.summary}" for m in REGISTRY.values()) + "."
        return super().get_help_record(ctx)


@main.command()
@click.argument("bundle")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--method", cls=_MethodOption, required=True, type=_MethodChoice(),
              help="Fine-tuning method (docs/models.md).")
@click.option("--label", "names", multiple=True,
              help="Labels to fine-tune on  [default: every bundle label in the table].")
@click.option("--rank", type=click.IntRange(min=1), default=8, show_default=True, help="LoRA rank r.")
@click.option("--alpha", type=float, default=16.0, show_default=True, help="LoRA scale alpha (update x alpha/r).")
@click.option("--head-hidden", type=click.IntRange(min=1), default=32, show_default=True,
              help="Hidden width of the adapter's residual head.")
@click.option("--freeze-bn", is_flag=True, help="full: keep the BatchNorm statistics fixed.")
@_label_table_options
@_train_options
@friendly_errors
def finetune(bundle, inputs, method, names, rank, alpha, head_hidden, freeze_bn, **o):
    """Fine-tune BUNDLE (name or folder) on labelled INPUTS (e.g. DESI) and write a new bundle.

    The labels keep the pre-trained scaling; adapter heads and LoRA factors are stored in the new
    bundle beside the frozen weights, and its manifest records the parent's sha256.
    """
    from catalog_tool.train.commands import run_finetune

    _torch_threads(o.pop("threads"))
    label_options = _label_options(o)
    outcome = run_finetune(bundle, inputs, labels_path=o["labels_path"], method=method, out=o["out"],
                           config=_train_config(o, freeze_bn=freeze_bn), names=list(names) or None, rank=rank,
                           alpha=alpha, head_hidden=head_hidden, cache=o["cache"], float16=o["float16"],
                           overwrite=o["overwrite"], command=_command_line(), label_options=label_options)
    _report_trained(outcome)


@main.command()
@click.argument("bundle")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@_label_table_options
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Folder for metrics.md, metrics.fits and the PNG plots (created if needed).")
@click.option("--noise", type=click.Choice(["linear", "mc", "none"]), default="linear", show_default=True,
              help="Flux-noise propagation into the uncertainties.")
@_inference_options
@friendly_errors
def evaluate(bundle, inputs, labels_path, out, noise, device, batch_size, threads, cache, **o):
    """Evaluate BUNDLE on labelled INPUTS: metrics, calibration and plots.

    Bias (mean residual), robust scatter (1.4826 x MAD), MAE, R^2 and N per label, overall and
    split at reference [Fe/H] = -1; the spread of (predicted - reference) / error per S/N bin;
    plots of predicted vs reference and residuals vs [Fe/H] and S/N.
    """
    from catalog_tool.train.commands import run_evaluate

    _torch_threads(threads)
    res = run_evaluate(bundle, inputs, labels_path=labels_path, out=out, device=device, batch_size=batch_size,
                       noise=noise, cache=cache, label_options=_label_options(o))
    click.echo(res["label_summary"])
    click.echo(res["markdown"])
    click.echo(f"wrote {len(res['files'])} files to {out}")
    report_failed_files(res["failures"])


@main.command()
@click.argument("bundle")
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@_label_table_options
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=str),
              help="Calibrated bundle folder to write (the same weights, a manifest with the calibration).")
@click.option("--label", "names", multiple=True,
              help="Label to calibrate (repeat)  [default: every bundle label the table has].")
@click.option("--trend", type=click.IntRange(0, 2), default=0, show_default=True,
              help="Polynomial degree of the fitted bias in the reference label: 0 = zero point only, 1 = linear, "
                   "2 = quadratic (held constant outside the fitted range).")
@click.option("--replace", is_flag=True,
              help="Calibrate an already calibrated bundle anew (from its raw predictions; never chained).")
@click.option("--overwrite", is_flag=True, help="Replace a folder already at --out.")
@_inference_options
@friendly_errors
def calibrate(bundle, inputs, out, names, trend, replace, overwrite, device, batch_size, threads, cache, **o):
    """Calibrate BUNDLE on the stars of INPUTS that the label table has (e.g. APOGEE, GALAH).

    Fits per label the zero point (and with --trend a low-order trend) of predicted - reference
    and the systematic error floor, and writes a new bundle with the same weights and a manifest
    that records them; annotate, evaluate and the Python API then give calibrated values, and the
    VAC header says so (CALIB, CALIBN, CALIBSHA). Needs max(20, 10 x (trend + 1)) stars per label.
    """
    from catalog_tool.train.calibrate import format_calibration, run_calibrate

    _torch_threads(threads)
    r = run_calibrate(bundle, inputs, labels_path=o["labels_path"], out=out, label_options=_label_options(o),
                      names=list(names) or None, trend=trend, replace=replace, overwrite=overwrite, device=device,
                      batch_size=batch_size, cache=cache, command=_command_line())
    click.echo(r.label_summary)
    units = {lab.name: lab.unit for lab in r.bundle.labels}
    click.echo(format_calibration(r.calibration, units))
    click.echo(f"wrote calibrated bundle {r.bundle.path} (weights sha256 {r.bundle.sha256[:16]}... unchanged) "
               f"from {r.n_spectra} spectra in {r.seconds:.1f} s")
    report_failed_files(r.failures)


@main.command()
@click.argument("bundles", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print the facts as JSON.")
@friendly_errors
def models(bundles, as_json):
    """List the bundled models and the given BUNDLES (names or folders) with their key facts.

    Each bundle is verified (sha256, tensors, format); one that fails is listed as UNUSABLE with
    the reason, and the exit status is then 1.
    """
    from catalog_tool.train.commands import bundles_json, describe_bundles, format_bundles

    rows = describe_bundles(bundles)
    click.echo(bundles_json(rows) if as_json else format_bundles(rows))
    if any("error" in r for r in rows):
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
