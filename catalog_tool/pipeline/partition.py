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
from catalog_tool.io.readers import group_entries
from catalog_tool.select import is_star, is_target

__all__ = ["run_partition", "process_files", "prepare_targets", "finish_targets", "missing_rows",
           "cached_bundle", "remember_bundle", "run_settings", "thresholds_of", "provenance",
           "CHUNK_ROWS"]

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
    from catalog_tool.vac.flags import DEFAULT_THRESHOLDS

    out = {"grid": bundle.grid, "preprocess": bundle.preprocess,
           "thresholds": DEFAULT_THRESHOLDS.to_dict(), "partition_size": cfg.partition_size}
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


class _Prepared:
    """The numpy half of a chunk's work (selection, preprocessing), ready for inference."""

    __slots__ = ("meta", "star", "diag", "ok", "flux", "ivar")

    def __init__(self, meta, star, diag, ok, flux, ivar):
        self.meta, self.star, self.diag, self.ok, self.flux, self.ivar = meta, star, diag, ok, flux, ivar


def prepare_targets(batch: SpectraBatch, *, kind: str, grid, settings) -> _Prepared:
    """Select stars among a batch of targets and preprocess them (no torch; runs in a worker thread).

    ``batch`` holds targets only (see :func:`catalog_tool.select.is_target`), read by the ``kind``
    reader (whose star selection applies).
    """
    from catalog_tool.preprocess.chain import preprocess_batch

    meta, n = batch.meta, len(batch)
    star = is_star(meta, kind=kind)
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
    from catalog_tool.io.entry import valid_radec
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
        estimated=np.isfinite(values).all(axis=1), redrock_found=meta.get("REDROCK_FOUND"),
        coords_ok=valid_radec(ra=meta["TARGET_RA"], dec=meta["TARGET_DEC"]),
        unique_id=meta.get("UNIQUE_ID"), thresholds=thresholds)
    return table


def _bundle_inputs(bundle):
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings

    return ModelGrid.from_dict(bundle.grid), PreprocessSettings.from_dict(bundle.preprocess)


#: Targets of one file prepared and inferred together. Fixed (not tied to ``batch_size``, the
#: partitioning or the number of threads) so that results depend only on the file; small enough
#: that every worker thread has a chunk to work on even when a partition is a single file.
CHUNK_ROWS = 1024


def _unique_in_file(meta: dict) -> np.ndarray:
    """False on target rows whose TARGETID is on another target row of the same file (``SOURCE``)."""
    n = len(meta["TARGETID"])
    if n == 0:
        return np.ones(0, bool)
    key = np.char.add(np.char.add(np.asarray(meta["SOURCE"]).astype(str), "#"),
                      np.asarray(meta["TARGETID"]).astype(str))
    _, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
    return count[inverse.reshape(-1)] == 1


def _ledger(batch: SpectraBatch, target: np.ndarray, planned: dict) -> tuple[dict, list]:
    """Per file of a batch: FIBERMAP rows read and targets among them, checked against the plan.

    ``planned`` maps each file's path to its FIBERMAP row count in the plan (None: unknown).
    Returns the ledger ``{path: {"fibermap": n, "targets": t}}`` and the files whose row count
    differs from the plan's (rewritten since it was made), as failures.
    """
    source = np.asarray(batch.meta["SOURCE"]).astype(str)
    names, index = np.unique(source, return_inverse=True)
    rows = np.bincount(index, minlength=len(names))
    targets = np.bincount(index, weights=target, minlength=len(names)).astype(int)
    ledger, changed = {}, []
    for name, n, t in zip(names.tolist(), rows.tolist(), targets.tolist()):
        want = planned.get(name)
        if want is not None and int(want) != n:
            changed.append((name, f"changed since the run was planned (FIBERMAP has {n} rows, the "
                                  f"plan {want}): run again with --overwrite"))
        else:
            ledger[name] = {"fibermap": n, "targets": t}
    return ledger, changed


def _crash_reason(exc: BaseException) -> str:
    """One line for an unexpected error: what it was and the innermost stxcat frame (a bug)."""
    import traceback

    where = ""
    for frame in reversed(traceback.extract_tb(exc.__traceback__)):
        if "catalog_tool" in frame.filename:
            where = f" at {os.path.basename(frame.filename)}:{frame.lineno} in {frame.name}"
            break
    text = " ".join(str(exc).split())[:200]
    return f"could not be processed: {type(exc).__name__}: {text}{where} (an stxcat bug: please report it)"


def _producer(groups, planned, wave_range, out: "queue.Queue", stop: threading.Event) -> None:
    """Reader thread: read each group (:func:`catalog_tool.io.readers.group_entries`), select
    targets, and queue them in chunks of :data:`CHUNK_ROWS`, in order (the worker threads
    preprocess and infer them).

    Messages are ``(what, group index, item)``. A group (one file, or all of a reader's files when
    it reads them together) that raises anything unexpected is reported as ``group_failed`` with
    every file of it, so the consumer drops whatever rows of it it already has: a file is processed
    whole or not at all.
    """

    def put(item):
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    try:
        for gi, (reader, group) in enumerate(groups):
            try:
                batches, failed = reader.read(group, wave_range=wave_range)
                for batch in batches:
                    target = is_target(batch.meta)
                    ledger, changed = _ledger(batch, target, planned)
                    failed += changed
                    if changed:
                        keep = ~np.isin(np.asarray(batch.meta["SOURCE"]).astype(str), [p for p, _ in changed])
                        batch, target = batch.take(np.flatnonzero(keep)), target[keep]
                    kind = np.char.upper(np.asarray(batch.meta["FIBER_KIND"]).astype(str))
                    counts = {"sky": int((kind == "SKY").sum()), "unassigned": int((kind == "UNASSIGNED").sum())}
                    targets = batch.take(np.flatnonzero(target))
                    targets.meta["UNIQUE_ID"] = unique = _unique_in_file(targets.meta)
                    problems = list(batch.problems)
                    dup_src = np.asarray(targets.meta["SOURCE"]).astype(str)[~unique]
                    for path, k in zip(*np.unique(dup_src, return_counts=True)):
                        problems.append(f"{path}: {k} target rows share their TARGETID with another row "
                                        f"of the file (flagged DUPLICATE_ID)")
                    put(("files", gi, ledger))
                    put(("counts", gi, counts))
                    put(("problems", gi, problems))
                    for start in range(0, len(targets), CHUNK_ROWS):
                        if stop.is_set():
                            return
                        chunk = targets.take(slice(start, start + CHUNK_ROWS))  # views, no copy
                        put(("chunk", gi, (reader.kind, chunk)))
                put(("failed", gi, failed))
            except MemoryError:
                raise
            except Exception as exc:  # one file's bug or damage must not end the partition
                reason = _crash_reason(exc)
                put(("group_failed", gi, ([(os.fspath(path), reason) for path in group], exc)))
        put(("end", None, None))
    except BaseException as exc:  # handed to the consumer, which re-raises it in the task
        put(("error", None, exc))


def _chunk_rows(kind: str, chunk: SpectraBatch, *, grid, settings, bundle, device, batch_size,
                thresholds) -> np.ndarray:
    """One chunk of targets, start to finish: select stars, preprocess, infer, flag (a worker thread)."""
    prep = prepare_targets(chunk, kind=kind, grid=grid, settings=settings)
    return finish_targets(prep, bundle=bundle, device=device, batch_size=batch_size, thresholds=thresholds)


def missing_rows(files: list[dict], *, thresholds) -> tuple[np.ndarray, dict]:
    """VAC rows, and their ledger, of catalogue rows whose file is missing (``missing`` records).

    Planned from a LAMOST catalogue (see :mod:`catalog_tool.io.lamost_catalog`), such a row has no
    spectrum but is a target all the same: it gets its row, with the catalogue's OBSID and position,
    no estimate and the ``FILE_MISSING`` flag (``SOURCE`` is the file name the catalogue implies).
    """
    from catalog_tool.io.entry import valid_radec
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
    table["FLAGS"] = fl.compute_flags(is_star=np.zeros(n, bool), file_found=np.zeros(n, bool),
                                      coords_ok=valid_radec(ra=meta["TARGET_RA"], dec=meta["TARGET_DEC"]),
                                      thresholds=thresholds)
    return table, {os.fspath(f["path"]): {"fibermap": 1, "targets": 1} for f in files}


def process_files(files: list[dict], *, bundle, device: str, batch_size: int, thresholds=None,
                  strict: bool = False, threads: int = 1) -> tuple[np.ndarray, list[tuple[str, str]], dict]:
    """Annotate a list of files (a partition).

    A reader thread reads the files, selects their targets and cuts them into chunks of
    :data:`CHUNK_ROWS`; ``threads`` worker threads each take a chunk and do all of its work
    (select stars, preprocess, infer, flag), so every core is busy whatever the mix of work. The
    heavy parts (numpy, torch) release the GIL; each runs single-threaded inside its worker (the
    caller holds torch and BLAS to one thread each, and every worker adopts torch's count), which
    also makes the results independent of ``threads``. Chunks are collected in file order; at most
    about ``2 * threads + 1`` are in memory at a time (bounded memory whatever the partition's size).

    ``thresholds`` (:class:`~catalog_tool.vac.flags.FlagThresholds`) are the run's, recorded in its
    plan (see :func:`run_settings`); the defaults when None.

    Every file ends in exactly one of two places: its target rows in ``table`` (and an entry in
    ``counts["files"]``), or ``failures``. A file that raises anything while it is read,
    preprocessed or inferred is a failure as a whole (rows it already produced are dropped); with
    ``strict`` the first failure is raised instead. Catalogue rows whose file is missing (``missing``
    records of a plan made with ``--catalog``) are in ``table``, flagged (:func:`missing_rows`).

    Returns
    -------
    table : ndarray in the VAC data model's dtype
        The VAC rows of every target in the readable files, in file order (0 rows when none).
    failures : list of (path, reason)
        Files that could not be used (their targets get no rows).
    counts : dict
        ``targets``, ``stars``, ``sky``, ``unassigned`` for the log; ``files``, the ledger
        ``{path: {"fibermap": rows read, "targets": rows in table}}`` of every file in ``table``
        (what the merge checks the VAC against); ``problems``, non-fatal reading problems
        (missing redrock file, duplicate TARGETIDs, ...), one line each.
    """
    import collections
    from concurrent.futures import ThreadPoolExecutor

    from catalog_tool.models.threads import follow_torch_threads
    from catalog_tool.preprocess.chain import needed_observed_range
    from catalog_tool.vac.datamodel import empty_table
    from catalog_tool.vac.flags import DEFAULT_THRESHOLDS

    threads = max(1, int(threads))
    thresholds = thresholds or DEFAULT_THRESHOLDS
    grid, settings = _bundle_inputs(bundle)
    # preprocessing alone says which wavelengths it reads; the readers read only what covers them
    wave_range = needed_observed_range(grid=grid, settings=settings)
    missing = [f for f in files if f.get("missing")]
    # a reader that reads many files into one batch (LAMOST: one spectrum a file) gets them
    # CHUNK_ROWS at a time, so that a partition of 20,000 LAMOST files is never in memory at once
    groups = [(r, paths[i:i + CHUNK_ROWS]) for r, paths in group_entries([f for f in files if not f.get("missing")])
              for i in range(0, len(paths), CHUNK_ROWS)]
    planned = {os.fspath(f["path"]): f.get("nspec") for f in files}
    rows_of: dict[int, list] = {}
    ledger_of: dict[int, dict] = {}
    counts_of: dict[int, dict] = {}
    failures, problems, dead = [], [], set()
    if missing:  # catalogue rows without a file: their own group, before the files read
        if strict:
            raise InputFileError(missing[0]["path"], "named by the catalogue but not found (--strict)")
        table, ledger_of[-1] = missing_rows(missing, thresholds=thresholds)
        rows_of[-1] = [table]

    def fail(gi, failed, exc=None):
        if strict and failed:
            if exc is not None:
                raise exc
            path, reason = failed[0]
            raise InputFileError(path, reason + " (--strict)")
        failures.extend(failed)
        if exc is not None:
            dead.add(gi)
            rows_of.pop(gi, None)
            ledger_of.pop(gi, None)
            counts_of.pop(gi, None)

    work = dict(grid=grid, settings=settings, bundle=bundle, device=device, batch_size=batch_size,
                thresholds=thresholds)
    pending: collections.deque = collections.deque()  # (group index, future), in file order

    def collect(limit: int) -> None:
        # in order: wait for the oldest chunk while more than ``limit`` are pending
        while pending and (len(pending) > limit or pending[0][1].done()):
            gi, fut = pending.popleft()
            try:
                rows = fut.result()
            except MemoryError:
                raise
            except Exception as exc:  # as in the reader: the group fails, the partition goes on
                if gi not in dead:
                    fail(gi, [(os.fspath(path), _crash_reason(exc)) for path in groups[gi][1]], exc)
                continue
            if gi not in dead:
                rows_of.setdefault(gi, []).append(rows)

    q: queue.Queue = queue.Queue(maxsize=threads)
    stop = threading.Event()
    reader = threading.Thread(target=_producer, args=(groups, planned, wave_range, q, stop),
                              name="stxcat-reader", daemon=True)
    # each worker thread adopts torch's thread count (one, in a run): OpenMP's is per thread
    pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="stxcat-work",
                              initializer=follow_torch_threads)
    reader.start()
    try:
        while True:
            what, gi, item = q.get()
            if what == "end":
                collect(0)
                break
            if what == "error":
                raise item
            if what == "group_failed":
                if gi not in dead:
                    fail(gi, item[0], item[1])
                continue
            if gi in dead:
                continue
            if what == "failed":
                fail(gi, item)
            elif what == "files":
                ledger_of.setdefault(gi, {}).update(item)
            elif what == "counts":
                c = counts_of.setdefault(gi, {"sky": 0, "unassigned": 0})
                for k, v in item.items():
                    c[k] += v
            elif what == "problems":
                problems.extend(item)
            else:
                pending.append((gi, pool.submit(_chunk_rows, *item, **work)))
                collect(threads)
    finally:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        reader.join()
    parts = [r for gi in sorted(rows_of) for r in rows_of[gi]]
    table = np.concatenate(parts) if parts else empty_table(0)
    counts = {"targets": len(table), "stars": int(np.isfinite(table[bundle.label_names[0]]).sum()),
              "sky": sum(c["sky"] for c in counts_of.values()),
              "unassigned": sum(c["unassigned"] for c in counts_of.values()),
              "files": {p: e for gi in sorted(ledger_of) for p, e in ledger_of[gi].items()},
              "problems": problems}
    return table, failures, counts


def run_partition(part: dict, *, work_dir: str, model: str, model_sha256: str, device: str,
                  batch_size: int, threads: int, strict: bool, settings: dict, provenance=None) -> dict:
    """Process one partition and record it in ``work_dir`` (part file, then done marker).

    Returns the done marker's content: ``index``, ``rows``, ``nspec``, ``errors``, ``counts``,
    ``device`` (the one this worker used: ``auto`` is resolved here, on the worker), ``files``
    (the per-file ledger the merge checks the rows against) and ``problems`` (for the log).
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
    files, problems = counts.pop("files"), counts.pop("problems")
    info = {"index": part["index"], "rows": len(table), "nspec": part["nspec"],
            "errors": [list(f) for f in failures], "counts": counts, "device": device,
            "files": files, "problems": problems}
    wd.mark_done(part["index"], info)
    return info
