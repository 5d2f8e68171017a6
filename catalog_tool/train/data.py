"""Labelled training sets: spectra from files, preprocessed once, joined to a label table.

:func:`load_labelled` reads any inputs ``stxcat annotate`` reads (DESI release trees, LAMOST
folders, single files), keeps the targets that appear in a label table, preprocesses them with
the model's grid and settings, and returns arrays ready for training. The label table is FITS or
CSV, read by :func:`catalog_tool.train.labels.read_labels` (column map, presets for APOGEE and
GALAH, ``--where`` cuts, missing values, duplicates), and joined by ``TARGETID`` (DESI; LAMOST
``OBSID`` is the TARGETID) -- or, when the table has no id column, by sky position (one-to-one
within 1 arcsec, nearest first).

The result can be cached to an ``.npz`` (no pickle) so a training run preprocesses its spectra once.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.train.labels import MATCH_ARCSEC, LabelOptions, LabelTable, describe, read_labels
from catalog_tool.train.skymatch import match_sky

__all__ = ["LabelledSet", "load_labelled"]


@dataclass
class LabelledSet:
    """Preprocessed spectra with their labels (row-matched)."""

    flux: np.ndarray          # (N, npix) float32
    ivar: np.ndarray          # (N, npix) float32
    labels: dict              # name -> (N,) float64, NaN where unknown
    targetid: np.ndarray      # (N,) int64
    snr: np.ndarray           # (N,) float32, median S/N on the grid
    survey: np.ndarray        # (N,) str
    key: str = ""             # what the set was made from (see _cache_key)
    errors: dict = field(default_factory=dict)   # name -> (N,) reference-label errors (NaN unknown)
    table_report: dict = field(default_factory=dict)  # LabelTable.report of the label table

    def __len__(self) -> int:
        return len(self.targetid)

    def save(self, path: str) -> None:
        np.savez(path, flux=self.flux, ivar=self.ivar, targetid=self.targetid, snr=self.snr,
                 survey=self.survey.astype("U16"), key=np.array(self.key),
                 table_report=np.array(json.dumps(self.table_report)),
                 **{f"label_{k}": v for k, v in self.labels.items()},
                 **{f"labelerr_{k}": v for k, v in self.errors.items()})

    @classmethod
    def load(cls, path: str) -> "LabelledSet":
        with np.load(path, allow_pickle=False) as z:
            labels = {k[6:]: z[k] for k in z.files if k.startswith("label_")}
            errors = {k[9:]: z[k] for k in z.files if k.startswith("labelerr_")}
            report = json.loads(str(z["table_report"])) if "table_report" in z.files else {}
            return cls(flux=z["flux"], ivar=z["ivar"], labels=labels, targetid=z["targetid"],
                       snr=z["snr"], survey=z["survey"], key=str(z["key"]) if "key" in z.files else "",
                       errors=errors, table_report=report)

    def summary(self) -> str:
        """One line on the label table (rows, cuts, duplicates) and the spectra matched to it."""
        return describe(self.table_report, len(self)) if self.table_report else f"{len(self)} labelled spectra"


def _match_rows(table: LabelTable, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    """Indices (rows of meta, rows of table) of matched targets: by id when the table has one (every
    spectrum of a labelled TARGETID), else by position: one-to-one within 1 arcsec, nearest first
    (:func:`catalog_tool.train.skymatch.match_sky`), so a table star labels one spectrum only."""
    if table.targetid is not None:
        tid = table.targetid
        order = np.argsort(tid, kind="stable")
        pos = np.searchsorted(tid[order], meta["TARGETID"])
        pos = np.clip(pos, 0, len(tid) - 1)
        hit = tid[order][pos] == meta["TARGETID"]
        return np.flatnonzero(hit), order[pos[hit]]
    return match_sky(ra_a=meta["TARGET_RA"], dec_a=meta["TARGET_DEC"], ra_b=table.ra, dec_b=table.dec,
                     radius_arcsec=MATCH_ARCSEC)


def _cache_key(inputs, *, labels_path: str, names, grid, settings, options: LabelOptions) -> str:
    """sha256 of everything a labelled set depends on: input files (path, size, mtime), the label
    table (path, size, mtime), the label names, how the table is read (preset, column map, cuts),
    the grid and the preprocessing settings."""
    import hashlib

    from catalog_tool.io.release import FITS_SUFFIXES

    files = []
    for raw in inputs:
        path = os.path.abspath(os.fspath(raw))
        if os.path.isdir(path):
            for folder, _, fnames in sorted(os.walk(path)):
                files += [os.path.join(folder, f) for f in sorted(fnames) if f.lower().endswith(FITS_SUFFIXES)]
        else:
            files.append(path)
    stat = [[f, os.path.getsize(f), int(os.path.getmtime(f))] for f in files + [labels_path] if os.path.exists(f)]
    parts = [stat, list(names), grid.to_dict(), settings.to_dict()]
    if not options.is_default:  # default reading keeps the keys of caches made before options existed
        parts.append(options.to_dict())
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def load_labelled(inputs, *, labels_path: str, names: list[str], grid, settings,
                  cache: str | None = None, options: LabelOptions | None = None
                  ) -> tuple[LabelledSet, list[tuple[str, str]]]:
    """Read, match and preprocess labelled spectra.

    Parameters
    ----------
    inputs : list of paths
        Anything :func:`catalog_tool.io.release.discover` takes.
    labels_path : str
        FITS or CSV label table.
    names : list of str
        Labels to take (e.g. ``["FEH", "ALPHAFE"]``); missing values become NaN.
    grid, settings : ModelGrid, PreprocessSettings
    cache : str, optional
        ``.npz`` path: loaded if it exists, written otherwise.
    options : LabelOptions, optional
        How to read the table (preset, column map, ``--where``); see :mod:`catalog_tool.train.labels`.

    Returns
    -------
    LabelledSet, list of (path, reason)
        The set (only preprocessed-OK rows) and the files that could not be read.
    """
    from catalog_tool.io import release
    from catalog_tool.io.readers import read_groups
    from catalog_tool.preprocess.chain import needed_observed_range, preprocess_batch

    options = options or LabelOptions()
    key = _cache_key(inputs, labels_path=labels_path, names=names, grid=grid, settings=settings, options=options)
    if cache and os.path.exists(cache):
        cached = LabelledSet.load(cache)
        if cached.key != key:
            raise ConfigError(f"cache {cache} was made from other inputs, labels or preprocessing; "
                              f"delete it or give another --cache file")
        return cached, []
    try:
        table = read_labels(labels_path, names=names, options=options)
    except ConfigError as exc:
        raise ConfigError(f"label table {labels_path}: {exc}") from None
    idx = release.discover(inputs)
    failures = list(idx.skipped)
    flux, ivar, tids, snr, survey = [], [], [], [], []
    labels = {n: [] for n in names}
    errors = {n: [] for n in names if n.upper() in table.errors}
    # the wavelengths annotate reads, so a training set is preprocessed exactly as annotate will
    wave_range = needed_observed_range(grid=grid, settings=settings)
    for _, batches, failed in read_groups(idx.entries, wave_range=wave_range):  # one group in memory at a time
        failures += failed
        for batch in batches:
            rows, trow = _match_rows(table, batch.meta) if len(table) else (np.zeros(0, int), np.zeros(0, int))
            if not len(rows):
                continue
            sub = batch.take(rows)
            pre = preprocess_batch(sub, grid=grid, settings=settings)
            ok = pre.diagnostics["PREPROC_OK"]
            flux.append(pre.flux[ok])
            ivar.append(pre.ivar[ok])
            tids.append(sub.meta["TARGETID"][ok])
            snr.append(pre.diagnostics["SNR_MEDIAN"][ok])
            survey.append(np.asarray(sub.meta["SURVEY"]).astype("U16")[ok])
            for n in names:
                labels[n].append(table.labels[n.upper()][trow][ok])
            for n in errors:
                errors[n].append(table.errors[n.upper()][trow][ok])
    if not flux:
        raise ConfigError(f"no spectrum in {', '.join(map(str, inputs))} matches the label table {labels_path} "
                          f"({table.summary()})")
    out = LabelledSet(flux=np.concatenate(flux), ivar=np.concatenate(ivar),
                      labels={n: np.concatenate(v) for n, v in labels.items()},
                      targetid=np.concatenate(tids), snr=np.concatenate(snr),
                      survey=np.concatenate(survey), key=key,
                      errors={n: np.concatenate(v) for n, v in errors.items()}, table_report=table.report)
    if cache:
        out.save(cache)
    return out, failures
