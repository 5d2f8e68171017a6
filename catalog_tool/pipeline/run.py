"""Orchestration of ``stxcat annotate``: plan, one Dask task per partition, merge.

This is the only module that knows about Dask. Each task calls
:func:`catalog_tool.pipeline.partition.run_partition`, a plain function that reads, selects,
preprocesses, infers, flags and writes one part file; here we only map it over the partitions that
are not done yet, follow their progress, and merge the parts into the VAC.

Schedulers
----------
``threads`` (default), ``processes`` and ``synchronous`` run on this machine through Dask's local
schedulers, ``workers`` partitions at a time; an address ``tcp://host:port`` sends the tasks to a
running Dask distributed scheduler (one model per worker process, loaded once and cached there).
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from catalog_tool import __version__
from catalog_tool.config import AnnotateConfig
from catalog_tool.errors import StxcatError
from catalog_tool.pipeline import partition as part_mod
from catalog_tool.pipeline.plan import make_plan
from catalog_tool.pipeline.resume import WorkDir

__all__ = ["annotate", "RunSummary"]

log = logging.getLogger("stxcat")

_LOCAL = ("threads", "processes", "synchronous")
#: The merged FITS VAC in the work dir when ``--format`` is parquet or hats.
FITS_IN_WORK_DIR = "vac.fits"


@dataclass
class RunSummary:
    """What a run did, for the CLI's closing lines and the exit status."""

    out: str
    rows: int = 0
    estimated: int = 0
    flagged_bad: int = 0
    flag_counts: dict = field(default_factory=dict)
    partitions: int = 0
    partitions_skipped: int = 0
    failed_files: list = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"
    per_pixel_files: int = 0
    unlisted: list = field(default_factory=list)
    """Files under the inputs that the ``--catalog`` does not name (not read)."""
    missing: int = 0
    """Rows of the ``--catalog`` whose file is not under the inputs (rows flagged FILE_MISSING)."""
    problems: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed_files


class _LogFile(logging.FileHandler):
    """The run log; a failed write (a full disk) is dropped, not printed as a traceback."""

    def handleError(self, record):  # noqa: N802 (logging's name)
        pass


def _setup_log(path: str) -> logging.Handler:
    handler = _LogFile(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    return handler


class _TqdmCallback:
    """Progress over partitions (and spectra) as tasks finish."""

    def __init__(self, total_parts: int, total_spectra: int, enabled: bool):
        from tqdm.auto import tqdm

        self.parts = tqdm(total=total_parts, desc="partitions", unit="part", disable=not enabled,
                          position=0, file=sys.stderr, dynamic_ncols=True)
        self.spectra = tqdm(total=total_spectra, desc="spectra", unit="spec", disable=not enabled,
                            position=1, file=sys.stderr, dynamic_ncols=True, unit_scale=True)

    def done(self, info: dict) -> None:
        self.parts.update(1)
        self.spectra.update(int(info.get("nspec", 0)))

    def close(self) -> None:
        self.spectra.close()
        self.parts.close()


def _local_map(tasks: list, cfg: AnnotateConfig, on_done) -> list[dict]:
    """Run ``tasks`` (dask.delayed) on a local scheduler, calling ``on_done`` as each finishes."""
    import dask
    from dask.callbacks import Callback

    keys = {t.key: t for t in tasks}

    class Progress(Callback):
        def _posttask(self, key, result, dsk, state, worker_id):
            if key in keys:
                on_done(result)

    kwargs = {"scheduler": cfg.scheduler}
    if cfg.scheduler in ("threads", "processes"):
        kwargs["num_workers"] = cfg.workers
    with Progress():
        return list(dask.compute(*tasks, **kwargs))


def _distributed_map(parts: list[dict], kwargs: dict, cfg: AnnotateConfig, on_done) -> list[dict]:
    from distributed import Client, as_completed

    with Client(cfg.scheduler, timeout="30s") as client:
        # bind the settings with partial: Client.map has keywords of its own (batch_size, key, ...)
        # that would silently swallow ours
        task = functools.partial(part_mod.run_partition, **kwargs)
        futures = client.map(task, parts, key=[f"stxcat-partition-{p['index']}" for p in parts], pure=False)
        results = []
        for fut in as_completed(futures):
            info = fut.result()
            on_done(info)
            results.append(info)
        return results


def _count(summary: RunSummary, path: str, first_label: str) -> None:
    """Fill the estimated / FLAG_BAD / per-bit counts of ``summary`` from the written VAC (three columns)."""
    import fitsio

    with fitsio.FITS(path) as fits:
        hdu = fits["STELLAR_PARAMS"]
        if hdu.get_nrows():
            import numpy as np

            from catalog_tool.vac.flags import FLAG_BITS

            summary.estimated = int(np.isfinite(hdu.read_column(first_label)).sum())
            summary.flagged_bad = int(hdu.read_column("FLAG_BAD").sum())
            flags = hdu.read_column("FLAGS")
            counts = {f.name: int(((flags & f.value) != 0).sum()) for f in FLAG_BITS}
            summary.flag_counts = {k: v for k, v in sorted(counts.items(), key=lambda kv: -kv[1]) if v}


def annotate(cfg: AnnotateConfig) -> RunSummary:
    """Run a whole ``annotate``: plan, process partitions not yet done, merge into ``cfg.out``.

    Raises
    ------
    StxcatError
        Bad settings, an unusable model, a changed plan on resume, a work dir in use by another
        run, (``strict``) a bad file, a full disk (``DiskFullError``: finished partitions are
        kept for ``--resume``), or part files that do not hold one row per target of each input
        file (``LostRowsError``: the VAC is not written).
    """
    from catalog_tool.models.bundle import load_bundle, find_bundle
    from catalog_tool.models.infer import resolve_device

    t0 = time.perf_counter()
    if os.path.exists(cfg.out) and not (cfg.overwrite or cfg.resume):
        raise StxcatError(f"{cfg.out} exists: pass --overwrite to replace it (or --resume to finish its run)")
    if cfg.format != "fits":
        from catalog_tool.vac.export import check_available

        check_available(cfg.format)  # a missing optional package: say so now, not after the run
    bundle = load_bundle(cfg.model)
    # absolute paths: Dask workers on other hosts or in another directory resolve them as given
    bundle_path = os.path.abspath(find_bundle(cfg.model))
    part_mod.remember_bundle(bundle_path, bundle)
    if cfg.scheduler in _LOCAL:
        device = str(resolve_device(cfg.device))  # fail early: this machine runs the tasks
    else:
        # the workers resolve it: a login node without a GPU must not turn 'auto' into 'cpu' (or
        # refuse 'cuda') for GPU workers
        device = cfg.device
    settings = part_mod.run_settings(cfg, bundle)
    plan, idx = make_plan(cfg.inputs, partition_size=cfg.partition_size, model_name=bundle.name,
                          model_sha256=bundle.sha256, settings=settings, catalog=cfg.catalog or None)
    if cfg.strict and plan["skipped"]:
        path, reason = plan["skipped"][0]
        raise StxcatError(f"{path}: {reason} (--strict)")
    if not plan["partitions"]:
        reasons = "; ".join(f"{p}: {r}" for p, r in plan["skipped"][:3])
        raise StxcatError("no usable spectra found in " + ", ".join(map(str, cfg.inputs))
                          + (f" ({reasons})" if reasons else ""))

    wd = WorkDir(os.path.abspath(cfg.resolved_work_dir))
    with wd.lock():  # one run per work dir; released however this process ends
        return _run(cfg, wd, plan, idx, bundle, bundle_path, device, settings, t0)


def _run(cfg, wd, plan, idx, bundle, bundle_path, device, settings, t0) -> RunSummary:
    """The locked part of :func:`annotate`: partitions, merge, exports."""
    from catalog_tool.io.atomic import DiskFullError
    from catalog_tool.pipeline.accounting import expected_rows
    from catalog_tool.vac import write as vac_write

    done = wd.prepare(plan, resume=cfg.resume, overwrite=cfg.overwrite)
    # parquet/hats are exported from the merged FITS VAC, which is kept in the work dir
    vac_path = cfg.out if cfg.format == "fits" else os.path.join(wd.path, FITS_IN_WORK_DIR)
    stale = wd.remove_stale_temps(vac_path)
    handler = _setup_log(wd.log_path)
    try:
        log.info("stxcat %s annotate: %s", __version__, cfg.command or "(library call)")
        log.info("model %s sha256 %s on %s; %d partitions, %d files skipped at discovery",
                 bundle.name, bundle.sha256[:12], device, len(plan["partitions"]), len(plan["skipped"]))
        for path, reason in plan["skipped"]:
            log.warning("skipped %s: %s", path, reason)
        for path in idx.tables:
            log.info("not spectra (a plain FITS table), not read: %s", path)
        for note in getattr(idx, "notes", []):
            log.info("discovery: %s", note)
        if "catalog" in plan:
            cat = plan["catalog"]
            log.info("planned from the catalogue %s: %d rows, %d files found, %d missing (rows flagged "
                     "FILE_MISSING), %d files not in the catalogue (not read)", cat["path"], cat["rows"], cat["found"],
                     cat["missing"], len(cat["unlisted"]))
            for path in cat["unlisted"]:
                log.warning("not in the catalogue, not read: %s", path)
        if stale:
            log.info("removed %d temporary files left by an interrupted run", stale)
        todo = [p for p in plan["partitions"] if p["index"] not in done]
        if done:
            log.info("resuming: %d partitions already done", len(done))
        kwargs = dict(work_dir=wd.path, model=bundle_path, model_sha256=bundle.sha256, device=device,
                      batch_size=cfg.batch_size, strict=cfg.strict, settings=settings,
                      # local schedulers: resolved here; a cluster's workers resolve 0 themselves
                      threads=cfg.resolved_threads if cfg.scheduler in _LOCAL else cfg.threads)
        progress = _TqdmCallback(len(plan["partitions"]), sum(p["nspec"] for p in plan["partitions"]),
                                 cfg.progress)
        progress.parts.update(len(done))
        progress.spectra.update(sum(p["nspec"] for p in plan["partitions"] if p["index"] in done))

        def on_done(info):
            progress.done(info)
            log.info("partition %d done: %d rows, %d failed files", info["index"], info["rows"],
                     len(info["errors"]))
            for path, reason in info["errors"]:
                log.warning("failed %s: %s", path, reason)
            for problem in info.get("problems", []):
                log.warning("problem: %s", problem)

        try:
            try:
                if todo and cfg.scheduler in _LOCAL:
                    import dask

                    tasks = [dask.delayed(part_mod.run_partition, pure=False)(p, **kwargs) for p in todo]
                    _local_map(tasks, cfg, on_done)
                elif todo:
                    _distributed_map(todo, kwargs, cfg, on_done)
            finally:
                progress.close()

            infos = [wd.read_marker(p["index"]) for p in plan["partitions"]]
            errors = [tuple(e) for e in plan["skipped"]]
            # the devices the tasks actually used (several when a resumed run changed machines)
            device = "+".join(sorted({i.get("device", device) for i in infos})) or device
            provenance = part_mod.provenance(cfg, bundle, device, settings)
            merged = vac_write.merge_parts([wd.part_path(p["index"]) for p in plan["partitions"]], vac_path,
                                           errors=errors, provenance=provenance, overwrite=True,
                                           expected_rows=expected_rows(plan, infos))
        except DiskFullError as exc:
            raise DiskFullError(f"{exc} with --resume (finished partitions are kept)") from None
        summary = RunSummary(out=os.fspath(cfg.out), rows=merged.nrows, partitions=len(plan["partitions"]),
                             partitions_skipped=len(done), failed_files=[tuple(e) for e in merged.errors],
                             device=device, unlisted=list(plan.get("catalog", {}).get("unlisted", [])),
                             missing=int(plan.get("catalog", {}).get("missing", 0)),
                             problems=[p for i in infos for p in i.get("problems", [])])
        _count(summary, vac_path, bundle.label_names[0])
        if cfg.format != "fits":
            from catalog_tool.vac.export import export_vac

            export_vac(vac_path, cfg.out, format=cfg.format, overwrite=True, progress=cfg.progress)
            log.info("exported %s to %s as %s", vac_path, cfg.out, cfg.format)
        if cfg.per_pixel:
            out_dir = os.path.dirname(os.path.abspath(cfg.out))
            summary.per_pixel_files = len(vac_write.write_per_pixel(cfg.out, out_dir, overwrite=True))
        summary.seconds = time.perf_counter() - t0
        for key in ("sky", "unassigned"):
            n = sum(i.get("counts", {}).get(key, 0) for i in infos)
            if n:
                log.info("%d %s fibres have no VAC row (not targets)", n, key)
        log.info("wrote %s: %d rows, %d estimated, %d FLAG_BAD, %d failed files, %d reading problems, %.1f s",
                 summary.out, summary.rows, summary.estimated, summary.flagged_bad,
                 len(summary.failed_files), len(summary.problems), summary.seconds)
        return summary
    finally:
        log.removeHandler(handler)
        handler.close()
