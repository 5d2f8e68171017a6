"""One partition's work, as plain functions: read, select, preprocess, infer, flag, write.

:func:`process_files` is pure with respect to its inputs (files in, a table out) and knows nothing
of Dask; :func:`run_partition` wraps it with the work-dir bookkeeping (part file, done marker) and
is what the orchestrator maps over partitions. The model is loaded once per process and cached
(:func:`cached_bundle`), so each Dask worker loads it once however many partitions it runs.
"""

from __future__ import annotations

import concurrent.futures
import os
import threading

import numpy as np

from catalog_tool.batch import SpectraBatch
from catalog_tool.errors import InputFileError, StxcatError
from catalog_tool.select import is_star, is_target

__all__ = ["run_partition", "process_files", "cached_bundle", "run_settings", "provenance",
           "DESI_ARM_RANGES"]

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


def run_settings(cfg, bundle) -> dict:
    """The settings that determine the output (recorded in the plan; a change blocks resume)."""
    from catalog_tool.vac.flags import FlagThresholds

    return {"grid": bundle.grid, "preprocess": bundle.preprocess,
            "thresholds": FlagThresholds().to_dict(), "partition_size": cfg.partition_size}


def provenance(cfg, bundle, device: str):
    """VAC provenance of a run."""
    import datetime

    from catalog_tool.vac.write import Provenance

    date = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return Provenance(model_name=bundle.name, model_sha256=bundle.sha256,
                      command=cfg.command or "stxcat annotate (library call)",
                      input_release=" ".join(os.path.abspath(os.fspath(p)) for p in cfg.inputs),
                      date=date, extra=(("DEVICE", device, "inference device"),))


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


def _meta_col(meta: dict, name: str, n: int, fill, dtype) -> np.ndarray:
    if name in meta:
        return np.asarray(meta[name])
    return np.full(n, fill, dtype=dtype)


def annotate_batch(batch: SpectraBatch, *, bundle, device: str, batch_size: int, thresholds=None) -> dict:
    """VAC columns for the targets of one batch (sky and unassigned fibres left out).

    Stars are preprocessed and inferred; other targets get NaN labels and ``NOT_STAR``.
    """
    from catalog_tool.models.infer import predict
    from catalog_tool.preprocess.chain import preprocess_batch
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.vac import flags as fl

    thresholds = thresholds or fl.FlagThresholds()
    batch = batch.take(np.flatnonzero(is_target(batch.meta)))
    meta, n = batch.meta, len(batch)
    star = is_star(meta)
    names = bundle.label_names
    values = np.full((n, len(names)), np.nan, np.float32)
    errors = np.full_like(values, np.nan)
    ens = np.full_like(values, np.nan)
    diag = {"SNR_MEDIAN": np.full(n, np.nan, np.float32), "BAD_FRAC": np.full(n, np.nan, np.float32),
            "COVERAGE": np.full(n, np.nan, np.float32), "COVERED": np.ones(n, bool),
            "CONT_OK": np.ones(n, bool), "PREPROC_OK": np.zeros(n, bool)}
    idx = np.flatnonzero(star)
    if len(idx):
        pre = preprocess_batch(batch.take(idx), grid=ModelGrid.from_dict(bundle.grid),
                               settings=PreprocessSettings.from_dict(bundle.preprocess))
        for k in diag:
            diag[k][idx] = pre.diagnostics[k]
        ok = idx[pre.diagnostics["PREPROC_OK"]]
        if len(ok):
            sel = pre.diagnostics["PREPROC_OK"]
            pred = predict(bundle, flux=pre.flux[sel], ivar=pre.ivar[sel], device=device,
                           batch_size=batch_size)
            values[ok], errors[ok], ens[ok] = pred.values, pred.errors, pred.ensemble_std
    labels = bundle.labels
    lo = np.array([s.domain[0] for s in labels])
    hi = np.array([s.domain[1] for s in labels])
    zwarn = _meta_col(meta, "ZWARN", n, -1, np.int64)
    fiberstatus = _meta_col(meta, "COADD_FIBERSTATUS", n, -1, np.int64)
    flags = fl.compute_flags(
        is_star=star, snr=diag["SNR_MEDIAN"], bad_frac=diag["BAD_FRAC"], covered=diag["COVERED"],
        cont_ok=diag["CONT_OK"], pred_in_domain=fl.in_domain(values=values, lo=lo, hi=hi),
        ensemble_std=ens, label_names=names, zwarn=zwarn, fiberstatus=fiberstatus,
        thresholds=thresholds)
    cols = {
        "TARGETID": meta["TARGETID"], "SURVEY": meta["SURVEY"], "PROGRAM": meta["PROGRAM"],
        "HEALPIX": meta["HEALPIX"], "TARGET_RA": meta["TARGET_RA"], "TARGET_DEC": meta["TARGET_DEC"],
        "SNR": diag["SNR_MEDIAN"], "FLAGS": flags, "BAD_FRAC": diag["BAD_FRAC"],
        "COVERAGE": diag["COVERAGE"],
        "Z": _meta_col(meta, "Z", n, np.nan, np.float64), "ZWARN": zwarn,
        "SPECTYPE": _meta_col(meta, "SPECTYPE", n, "", "U6"),
        "COADD_FIBERSTATUS": fiberstatus,
        "CLASS": _meta_col(meta, "CLASS", n, "", "U8"),
        "SOURCE": np.array([os.path.basename(str(s)) for s in meta["SOURCE"]], dtype="U80"),
        "SOURCE_ROW": meta["ROW"],
    }
    for j, name in enumerate(names):
        cols[name], cols[f"{name}_ERR"], cols[f"{name}_ENS_STD"] = values[:, j], errors[:, j], ens[:, j]
    return cols


def process_files(files: list[dict], *, bundle, device: str, batch_size: int,
                  strict: bool = False) -> tuple[dict, list[tuple[str, str]], dict]:
    """Annotate a list of files (a partition).

    Reading and preprocessing of the next DESI file overlap the current one's inference
    (one reader thread ahead).

    Returns
    -------
    columns : dict of str to ndarray
        The VAC rows of every target in the readable files, in file order.
    failures : list of (path, reason)
        Files that could not be read (their targets are unknown, hence no rows).
    counts : dict
        ``targets``, ``stars``, ``sky``, ``unassigned`` for the log.
    """
    from catalog_tool.preprocess.chain import needed_range
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings

    lo, hi, _, _ = needed_range(grid=ModelGrid.from_dict(bundle.grid),
                                settings=PreprocessSettings.from_dict(bundle.preprocess))
    arms = arms_needed(lo, hi)
    # one file ahead: the reader thread reads file i+1 while this thread infers file i
    groups = [[f] for f in files if f["kind"] == "desi"]
    lamost_files = [f for f in files if f["kind"] != "desi"]
    if lamost_files:
        groups.append(lamost_files)
    parts, failures = [], []
    counts = {"targets": 0, "stars": 0, "sky": 0, "unassigned": 0}
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_read, groups[0], arms) if groups else None
        for i in range(len(groups)):
            batches, failed = pending.result()
            pending = pool.submit(_read, groups[i + 1], arms) if i + 1 < len(groups) else None
            if failed and strict:
                path, reason = failed[0]
                raise InputFileError(path, reason + " (--strict)")
            failures.extend(failed)
            for batch in batches:
                kind = np.char.upper(np.asarray(batch.meta["FIBER_KIND"]).astype(str))
                counts["sky"] += int((kind == "SKY").sum())
                counts["unassigned"] += int((kind == "UNASSIGNED").sum())
                cols = annotate_batch(batch, bundle=bundle, device=device, batch_size=batch_size)
                counts["targets"] += len(cols["TARGETID"])
                counts["stars"] += int(np.isfinite(cols[bundle.label_names[0]]).sum())
                parts.append(cols)
    if parts:
        columns = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    else:
        columns = {}
    return columns, failures, counts


def run_partition(part: dict, *, work_dir: str, model: str, model_sha256: str, device: str,
                  batch_size: int, threads: int, strict: bool, settings: dict, provenance=None) -> dict:
    """Process one partition and record it in ``work_dir`` (part file, then done marker).

    Returns the done marker's content: ``index``, ``rows``, ``nspec``, ``errors``, ``counts``.
    """
    import torch

    from catalog_tool.pipeline.resume import WorkDir
    from catalog_tool.vac import write as vac_write
    from catalog_tool.vac.flags import FlagThresholds

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    bundle = cached_bundle(model, model_sha256)
    columns, failures, counts = process_files(part["files"], bundle=bundle, device=device,
                                              batch_size=batch_size, strict=strict)
    wd = WorkDir(work_dir)
    prov = vac_write.Provenance(model_name=bundle.name, model_sha256=bundle.sha256,
                                command="(part file)", input_release=f"partition {part['index']}",
                                date="1970-01-01T00:00:00",
                                thresholds=FlagThresholds.from_dict(settings["thresholds"]))
    from catalog_tool.vac.datamodel import empty_table

    vac_write.write_vac(wd.part_path(part["index"]), columns if columns else empty_table(0), provenance=prov,
                        errors=failures, compute_primary=False, overwrite=True)
    info = {"index": part["index"], "rows": len(columns.get("TARGETID", ())), "nspec": part["nspec"],
            "errors": [list(f) for f in failures], "counts": counts}
    wd.mark_done(part["index"], info)
    return info
