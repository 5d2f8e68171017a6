"""One partition's work, as plain functions: read, select, preprocess, infer, flag, write.

:func:`process_files` is pure with respect to its inputs (files in, a table out) and knows nothing
of Dask; :func:`run_partition` wraps it with the work-dir bookkeeping (part file, done marker) and
is what the orchestrator maps over partitions. The model is loaded once per process and cached
(:func:`cached_bundle`), so each Dask worker loads it once however many partitions it runs.
"""

from __future__ import annotations

import os
import queue
import threading

import numpy as np

from catalog_tool.batch import SpectraBatch
from catalog_tool.errors import InputFileError, StxcatError
from catalog_tool.select import is_star, is_target

__all__ = ["run_partition", "process_files", "prepare_targets", "finish_targets", "missing_rows",
           "cached_bundle", "remember_bundle", "run_settings", "thresholds_of", "provenance",
           "DESI_ARM_RANGES", "CHUNK_ROWS"]

#: Wavelength coverage of the DESI arms (A): which arms a model grid needs.
DESI_ARM_RANGES = {"B": (3600.0, 5800.0), "R": (5760.0, 7620.0), "Z": (7520.0, 9824.0)}
#: Largest |v|/c a spectrum may have and still be shifted inside the arms read (3000 km/s).
_MAX_Z = 0.01

_cache: dict = {}
_cache_lock = threading.Lock()


def cached_bundle(path: str, sha256: str):
    """The bundle at ``path``, loaded once per process (verified against ``sha256``)."""
    from catalog_tool.models.bundle import load_bundle

    key = (os.path.abspath(path), sha256)
    with _cache_lock:
        if key not in _cache:
            bundle = load_bundle(path)
            if bundle.sha256 != sha256:
                raise StxcatError(f"model at {path} changed during the run (sha256 {bundle.sha256[:12]}, "
                                  f"expected {sha256[:12]})")
            _cache[key] = bundle
        return _cache[key]


def remember_bundle(path: str, bundle) -> None:
    """Put an already loaded bundle in this process's cache (the orchestrator loaded it to plan;
    the local schedulers' tasks then reuse it instead of loading and hashing it again)."""
    with _cache_lock:
        _cache[(os.path.abspath(path), bundle.sha256)] = bundle


def run_settings(cfg, bundle) -> dict:
    """The settings that determine the output (recorded in the plan; a change blocks resume).

    The one place the flag thresholds of a run are chosen: the tasks and the merge read them back
    from here (see :func:`thresholds_of`).
    """
    from catalog_tool.models.calibration import is_calibrated, manifest_sha256
    from catalog_tool.vac.flags import FlagThresholds

    out = {"grid": bundle.grid, "preprocess": bundle.preprocess,
           "thresholds": FlagThresholds().to_dict(), "partition_size": cfg.partition_size}
    if is_calibrated(bundle.manifest):  # same weights, other values: a resume must not mix the two
        out["calibrated_manifest"] = manifest_sha256(bundle.manifest)
    return out


def thresholds_of(settings: dict):
    """The :class:`~catalog_tool.vac.flags.FlagThresholds` recorded in a run's settings."""
    from catalog_tool.vac.flags import FlagThresholds

    return FlagThresholds.from_dict(settings["thresholds"])


def provenance(cfg, bundle, device: str, settings: dict):
    """VAC provenance of a run."""
    import datetime

    from catalog_tool.models.calibration import vac_cards
    from catalog_tool.vac.write import Provenance

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return Provenance(model_name=bundle.name, model_sha256=bundle.sha256,
                      command=cfg.command or "stxcat annotate (library call)",
                      input_release=" ".join(os.path.abspath(os.fspath(p)) for p in cfg.inputs),
                      date=date, thresholds=thresholds_of(settings),
                      extra=(("DEVICE", device, "inference device"),) + vac_cards(bundle.manifest))


def arms_needed(lo: float, hi: float) -> tuple[str, ...]:
    """DESI arms overlapping the observed range needed for rest-frame [lo, hi]."""
    lo, hi = lo * (1 - _MAX_Z), hi * (1 + _MAX_Z)
    return tuple(a for a, (a_lo, a_hi) in DESI_ARM_RANGES.items() if a_hi > lo and a_lo < hi)


def _read(files: list[dict], arms: tuple[str, ...]) -> tuple[list[SpectraBatch], list[tuple[str, str]]]:
    """Read a partition's files: batches (one per DESI file, one for all LAMOST files) and failures."""
    from catalog_tool.io import desi, lamost

    batches, failures = [], []
    for f in files:
        if f["kind"] != "desi":
            continue
        try:
            batches.append(desi.read_coadd(f["path"], arms=arms))
        except InputFileError as exc:
            failures.append((exc.path, exc.problem))
    lamost_paths = [f["path"] for f in files if f["kind"] == "lamost"]
    if lamost_paths:
        batch, failed = lamost.read_lamost_files(lamost_paths)
        failures.extend(failed)
        if len(batch):
            batches.append(batch)
    return batches, failures


class _Prepared:
    """The numpy half of a chunk's work (selection, preprocessing), ready for inference."""

    __slots__ = ("meta", "star", "diag", "ok", "flux", "ivar")

    def __init__(self, meta, star, diag, ok, flux, ivar):
        self.meta, self.star, self.diag, self.ok, self.flux, self.ivar = meta, star, diag, ok, flux, ivar


def prepare_targets(batch: SpectraBatch, *, grid, settings) -> _Prepared:
    """Select stars among a batch of targets and preprocess them (no torch; runs in the reader thread).

    ``batch`` holds targets only (see :func:`catalog_tool.select.is_target`).
    """
    from catalog_tool.preprocess.chain import preprocess_batch

    meta, n = batch.meta, len(batch)
    star = is_star(meta)
    diag = {"SNR_MEDIAN": np.full(n, np.nan, np.float32), "BAD_FRAC": np.full(n, np.nan, np.float32),
            "COVERAGE": np.full(n, np.nan, np.float32), "COVERED": np.ones(n, bool),
            "CONT_OK": np.ones(n, bool), "PREPROC_OK": np.zeros(n, bool)}
    idx = np.flatnonzero(star)
    ok, flux, ivar = idx[:0], None, None
    if len(idx):
        pre = preprocess_batch(batch.take(idx), grid=grid, settings=settings)
        for k in diag:
            diag[k][idx] = pre.diagnostics[k]
        sel = pre.diagnostics["PREPROC_OK"]
        ok, flux, ivar = idx[sel], pre.flux[sel], pre.ivar[sel]
    return _Prepared(meta, star, diag, ok, flux, ivar)


def finish_targets(prep: _Prepared, *, bundle, device: str, batch_size: int, thresholds) -> np.ndarray:
    """Inference, flags and VAC rows of a prepared chunk (the torch half).

    Returns a table in the VAC data model (:func:`catalog_tool.vac.datamodel.to_table`): the
    columns copied from the files by ``columns_from_meta``, the labels by
    ``columns_from_prediction``, the diagnostics and ``FLAGS``; ``PRIMARY`` and ``FLAG_BAD`` are
    the merge's business.
    """
    from catalog_tool.models.infer import predict
    from catalog_tool.vac import datamodel as dm
    from catalog_tool.vac import flags as fl

    meta, star, diag = prep.meta, prep.star, prep.diag
    n = len(star)
    names = bundle.label_names
    values = np.full((n, len(names)), np.nan, np.float32)
    errors = np.full_like(values, np.nan)
    ens = np.full_like(values, np.nan)
    if len(prep.ok):
        pred = predict(bundle, flux=prep.flux, ivar=prep.ivar, device=device, batch_size=batch_size)
        values[prep.ok], errors[prep.ok], ens[prep.ok] = pred.values, pred.errors, pred.ensemble_std
    table = dm.to_table({
        **dm.columns_from_meta(meta),
        **dm.columns_from_prediction(values=values, errors=errors, ensemble_std=ens, label_names=names),
        "SNR": diag["SNR_MEDIAN"], "BAD_FRAC": diag["BAD_FRAC"], "COVERAGE": diag["COVERAGE"]}, n=n)
    lo = np.array([s.domain[0] for s in bundle.labels])
    hi = np.array([s.domain[1] for s in bundle.labels])
    table["FLAGS"] = fl.compute_flags(
        is_star=star, snr=diag["SNR_MEDIAN"], bad_frac=diag["BAD_FRAC"], covered=diag["COVERED"],
        cont_ok=diag["CONT_OK"], pred_in_domain=fl.in_domain(values=values, lo=lo, hi=hi),
        ensemble_std=ens, label_names=names, zwarn=table["ZWARN"], fiberstatus=table["COADD_FIBERSTATUS"],
        estimated=np.isfinite(values).all(axis=1), thresholds=thresholds)
    return table


def missing_rows(files: list[dict], *, thresholds) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """VAC rows and ERRORS entries of catalogue rows whose files are missing (``missing`` records).

    Planned from a LAMOST catalogue (see :mod:`catalog_tool.io.lamost_catalog`), such a row has no
    spectrum but still reaches the VAC: ids and position from the catalogue, no estimate,
    ``READ_FAILED``; and its file is listed in ``ERRORS``.
    """
    from catalog_tool.vac import datamodel as dm
    from catalog_tool.vac import flags as fl

    n = len(files)
    meta = {"TARGETID": np.array([f["obsid"] for f in files], np.int64),
            "SURVEY": np.array([f["survey"] for f in files]), "PROGRAM": np.array([f["program"] for f in files]),
            "HEALPIX": np.array([f["healpix"] for f in files], np.int32),
            "TARGET_RA": np.array([f["ra"] for f in files], np.float64),
            "TARGET_DEC": np.array([f["dec"] for f in files], np.float64),
            "SOURCE": np.array([f["path"] for f in files]), "ROW": np.zeros(n, np.int32)}
    table = dm.to_table(dm.columns_from_meta(meta), n=n)
    table["FLAGS"] = fl.compute_flags(is_star=np.zeros(n, bool), read_ok=np.zeros(n, bool), thresholds=thresholds)
    failures = [(f["path"], f"named by the catalogue (row {f['catalog_row']}, obsid {f['obsid']}) but not "
                            "found under the inputs") for f in files]
    return table, failures


def _bundle_inputs(bundle):
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings

    return ModelGrid.from_dict(bundle.grid), PreprocessSettings.from_dict(bundle.preprocess)


#: Targets of one file prepared and inferred together. Fixed (not tied to ``batch_size``, the
#: partitioning or the number of threads) so that results depend only on the file; small enough
#: that every thread has a chunk to work on even when a partition is a single file.
CHUNK_ROWS = 1024


def _reader(groups, arms, out: "queue.Queue", stop: threading.Event) -> None:
    """Reader thread: read each group, count its fibres, and queue its targets in chunks, in order."""

    def put(item):
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    try:
        for group in groups:
            batches, failed = _read(group, arms)
            put(("failed", failed))
            for batch in batches:
                kind = np.char.upper(np.asarray(batch.meta["FIBER_KIND"]).astype(str))
                counts = {"sky": int((kind == "SKY").sum()), "unassigned": int((kind == "UNASSIGNED").sum())}
                targets = batch.take(np.flatnonzero(is_target(batch.meta)))
                put(("counts", counts))
                for start in range(0, len(targets), CHUNK_ROWS):
                    if stop.is_set():
                        return
                    put(("chunk", targets.take(slice(start, start + CHUNK_ROWS))))  # views, no copy
        put(("end", None))
    except BaseException as exc:  # handed to the consumer, which re-raises it in the task
        put(("error", exc))


def _chunk_rows(chunk, *, grid, settings, bundle, device, batch_size, thresholds) -> np.ndarray:
    """One chunk of targets, start to finish (runs in a worker thread)."""
    prep = prepare_targets(chunk, grid=grid, settings=settings)
    return finish_targets(prep, bundle=bundle, device=device, batch_size=batch_size, thresholds=thresholds)


def process_files(files: list[dict], *, bundle, device: str, batch_size: int, thresholds=None,
                  strict: bool = False, threads: int = 1) -> tuple[np.ndarray, list[tuple[str, str]], dict]:
    """Annotate a list of files (a partition).

    A reader thread reads the files, selects their targets and cuts them into chunks of
    :data:`CHUNK_ROWS`; ``threads`` worker threads each take a chunk and do all of its work
    (select stars, preprocess, infer, flag), so every core is busy whatever the mix of work. The
    heavy parts (numpy, torch) release the GIL; each runs single-threaded inside its worker (the
    caller holds torch and BLAS to one thread each), which also makes the results independent of
    ``threads``. Chunks come back in file order. At most ``2 * threads + 1`` chunks are in
    memory at a time (bounded memory whatever the partition's size).

    ``thresholds`` (:class:`~catalog_tool.vac.flags.FlagThresholds`) are the run's, recorded in its
    plan (see :func:`run_settings`); the defaults when None.

    Returns
    -------
    table : ndarray in the VAC data model's dtype
        The VAC rows of every target in the readable files, in file order (0 rows when none).
    failures : list of (path, reason)
        Files that could not be read (their targets are unknown, hence no rows), and catalogue rows
        whose file is missing (``missing`` records: those do have flagged rows, see
        :func:`missing_rows`).
    counts : dict
        ``targets``, ``stars``, ``sky``, ``unassigned`` for the log.
    """
    import collections
    from concurrent.futures import ThreadPoolExecutor

    from catalog_tool.vac.datamodel import empty_table
    from catalog_tool.vac.flags import FlagThresholds

    threads = max(1, int(threads))
    thresholds = thresholds or FlagThresholds()
    grid, settings = _bundle_inputs(bundle)
    arms = _arms_for(bundle)
    groups = [[f] for f in files if f["kind"] == "desi"]
    lamost_files = [f for f in files if f["kind"] != "desi" and not f.get("missing")]
    if lamost_files:
        groups.append(lamost_files)
    parts, failures = [], []
    counts = {"targets": 0, "stars": 0, "sky": 0, "unassigned": 0}
    missing = [f for f in files if f.get("missing")]
    if missing:  # catalogue rows without a file: flagged rows, listed in ERRORS
        if strict:
            raise InputFileError(missing[0]["path"], "named by the catalogue but not found (--strict)")
        rows, failed = missing_rows(missing, thresholds=thresholds)
        parts.append(rows)
        failures.extend(failed)
        counts["targets"] += len(rows)
    q: queue.Queue = queue.Queue(maxsize=threads)
    stop = threading.Event()
    reader = threading.Thread(target=_reader, args=(groups, arms, q, stop), name="stxcat-reader", daemon=True)
    work = dict(grid=grid, settings=settings, bundle=bundle, device=device, batch_size=batch_size,
                thresholds=thresholds)
    pending: collections.deque = collections.deque()

    def collect(limit: int) -> None:
        # in order: wait for the oldest chunk while more than ``limit`` are pending
        while pending and (len(pending) > limit or pending[0].done()):
            rows = pending.popleft().result()
            counts["targets"] += len(rows)
            counts["stars"] += int(np.isfinite(rows[bundle.label_names[0]]).sum())
            parts.append(rows)

    from catalog_tool.models.threads import follow_torch_threads

    # each worker thread adopts torch's thread count (one, in a run): OpenMP's is per thread
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stxcat-work",
                              initializer=follow_torch_threads)
    reader.start()
    try:
        while True:
            what, item = q.get()
            if what == "end":
                break
            if what == "error":
                raise item
            if what == "failed":
                if item and strict:
                    path, reason = item[0]
                    raise InputFileError(path, reason + " (--strict)")
                failures.extend(item)
            elif what == "counts":
                for k, v in item.items():
                    counts[k] += v
            else:
                pending.append(pool.submit(_chunk_rows, item, **work))
                collect(threads)
        collect(0)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        reader.join()
    return (np.concatenate(parts) if parts else empty_table(0)), failures, counts


_arms_cache: dict = {}


def _arms_for(bundle) -> tuple[str, ...]:
    """DESI arms a bundle needs (computed once per bundle, not per partition)."""
    key = bundle.sha256
    if key not in _arms_cache:
        from catalog_tool.preprocess.chain import needed_range

        grid, settings = _bundle_inputs(bundle)
        lo, hi, _, _ = needed_range(grid=grid, settings=settings)
        _arms_cache[key] = arms_needed(lo, hi)
    return _arms_cache[key]


def run_partition(part: dict, *, work_dir: str, model: str, model_sha256: str, device: str,
                  batch_size: int, threads: int, strict: bool, settings: dict, provenance=None) -> dict:
    """Process one partition and record it in ``work_dir`` (part file, then done marker).

    Returns the done marker's content: ``index``, ``rows``, ``nspec``, ``errors``, ``counts`` and
    ``device`` (the one this worker used: ``auto`` is resolved here, on the worker).
    """
    from catalog_tool.config import available_cpus
    from catalog_tool.models.infer import resolve_device
    from catalog_tool.models.threads import torch_threads
    from catalog_tool.pipeline.resume import WorkDir
    from catalog_tool.threads import single_thread_blas
    from catalog_tool.vac import write as vac_write

    bundle = cached_bundle(model, model_sha256)
    device = str(resolve_device(device))  # 'auto' means this worker's GPU when it has one
    threads = threads or available_cpus()  # 0: a cluster worker uses its machine's CPUs
    thresholds = thresholds_of(settings)
    # ``threads`` worker threads, each running torch and BLAS on one thread (both settings are
    # process-wide: held while the partition runs, then restored)
    with torch_threads(1), single_thread_blas():
        table, failures, counts = process_files(part["files"], bundle=bundle, device=device,
                                                batch_size=batch_size, thresholds=thresholds, strict=strict,
                                                threads=threads)
    wd = WorkDir(work_dir)
    prov = vac_write.Provenance(model_name=bundle.name, model_sha256=bundle.sha256,
                                command="(part file)", input_release=f"partition {part['index']}",
                                date="1970-01-01T00:00:00", thresholds=thresholds)
    vac_write.write_vac(wd.part_path(part["index"]), table, provenance=prov,
                        errors=failures, compute_primary=False, overwrite=True)
    info = {"index": part["index"], "rows": len(table), "nspec": part["nspec"],
            "errors": [list(f) for f in failures], "counts": counts, "device": device}
    wd.mark_done(part["index"], info)
    return info
