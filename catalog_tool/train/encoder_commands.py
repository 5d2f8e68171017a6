"""What ``stxcat pretrain-encoder`` and ``stxcat pretrain --encoder`` do, as plain functions.

Reading and preprocessing happen here (:func:`catalog_tool.train.encoder.load_spectra`,
:func:`catalog_tool.train.data.load_labelled`); training is :mod:`catalog_tool.train.encoder`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from catalog_tool.errors import ConfigError
from catalog_tool.models.bundle import make_provenance
from catalog_tool.models.encoder import EncoderConfig
from catalog_tool.models.encoder_bundle import EncoderBundle, load_encoder

__all__ = ["EncoderOutcome", "run_pretrain_encoder", "run_pretrain_embedding", "pair_by_truth"]


@dataclass
class EncoderOutcome:
    """A written encoder bundle, the read report(s), and the number of training spectra (pairs)."""

    encoder: EncoderBundle
    report: dict
    n_spectra: int
    log_path: str


def pair_by_truth(*, meta_a: dict, meta_b: dict, truth_a: str, truth_b: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows (ia, ib) of the same simulated stars: each side's TARGETID -> its truth table's LABEL_ROW."""
    from astropy.table import Table

    def label_rows(meta, path):
        try:
            t = Table.read(path)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read truth table {path}: {exc}") from None
        if "LABEL_ROW" not in t.colnames:
            raise ConfigError(f"{path} has no LABEL_ROW column (not an stxcat simulation truth table)")
        tid = np.asarray(meta["TARGETID"], np.int64)
        best = np.full(len(tid), -1, np.int64)
        for col in ("TARGETID", "OBSID"):  # LAMOST spectra carry OBSID as TARGETID
            if col in t.colnames:
                key = np.asarray(t[col], np.int64)
                order = np.argsort(key, kind="stable")
                pos = np.clip(np.searchsorted(key[order], tid), 0, len(key) - 1)
                hit = key[order][pos] == tid
                rows = np.where(hit, np.asarray(t["LABEL_ROW"], np.int64)[order[pos]], -1)
                if (rows >= 0).sum() > (best >= 0).sum():
                    best = rows
        return best

    la, lb = label_rows(meta_a, truth_a), label_rows(meta_b, truth_b)
    ia = np.flatnonzero(la >= 0)
    order = np.argsort(lb)
    pos = np.clip(np.searchsorted(lb[order], la[ia]), 0, len(lb) - 1)
    hit = lb[order][pos] == la[ia]
    return ia[hit], order[pos[hit]]


def run_pretrain_encoder(inputs, *, out, config, encoder_config: dict | None = None, contrastive_with=None,
                         pair_truth: tuple[str, str] | None = None, radius_arcsec: float = 1.5,
                         overwrite: bool = False, command: str = "stxcat pretrain-encoder") -> EncoderOutcome:
    """Read and preprocess unlabelled spectra, pre-train an encoder, write it as bundle ``out``.

    Parameters
    ----------
    inputs : list of str
        Spectra (e.g. a LAMOST release).
    config : EncoderTrainConfig
    encoder_config : dict, optional
        ``width``, ``layers``, ``heads`` (others default); ``n_in`` comes from the grid.
    contrastive_with : list of str, optional
        A second set (e.g. DESI) of the same stars: pairs found by sky position within
        ``radius_arcsec`` or, for simulated releases, by ``pair_truth`` (the two truth tables).
    """
    import pathlib

    from catalog_tool.models.bundle import MANIFEST_NAME
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.encoder import load_spectra, pretrain_encoder
    from catalog_tool.train.skymatch import match_sky

    out = pathlib.Path(out)
    if (out / MANIFEST_NAME).exists() and not overwrite:
        raise ConfigError(f"{out} already holds a bundle; choose another --out or pass --overwrite")
    if pair_truth and not contrastive_with:
        raise ConfigError("--pair-truth needs --contrastive-with")
    grid, settings = ModelGrid(), PreprocessSettings()
    ecfg = EncoderConfig(**{**(encoder_config or {}), "n_in": grid.npix})
    flux, ivar, meta, report = load_spectra(list(inputs), grid=grid, settings=settings)
    flux_b = ivar_b = None
    if contrastive_with:
        fb, ib_, meta_b, report_b = load_spectra(list(contrastive_with), grid=grid, settings=settings)
        if pair_truth:
            ia, ib = pair_by_truth(meta_a=meta, meta_b=meta_b, truth_a=pair_truth[0], truth_b=pair_truth[1])
        else:
            ia, ib = match_sky(ra_a=meta["TARGET_RA"], dec_a=meta["TARGET_DEC"], ra_b=meta_b["TARGET_RA"],
                               dec_b=meta_b["TARGET_DEC"], radius_arcsec=radius_arcsec)
        if len(ia) < 4:
            raise ConfigError(f"only {len(ia)} star(s) are in both sets; contrastive training needs pairs "
                              "(simulated releases: give --pair-truth)")
        # Only paired stars train in the contrastive run; the count of unpaired ones is reported.
        report = {"a": report, "b": report_b, "pairs": int(len(ia)), "unpaired_a": int(len(flux) - len(ia))}
        flux, ivar, flux_b, ivar_b = flux[ia], ivar[ia], fb[ib], ib_[ib]
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "training_log.jsonl"
    log_path.write_text("")
    trained = pretrain_encoder(flux=flux, ivar=ivar, flux_b=flux_b, ivar_b=ivar_b, config=config,
                               encoder_config=ecfg, log_path=log_path)
    prov = make_provenance(command=command, seed=config.seed,
                           training_data={"inputs": [os.fspath(p) for p in inputs],
                                          "contrastive_with": [os.fspath(p) for p in contrastive_with or []],
                                          "n_spectra": int(len(flux)), "read": report})
    enc = trained.save(out, grid=grid, preprocess=settings, provenance=prov, overwrite=True)
    return EncoderOutcome(encoder=enc, report=report, n_spectra=int(len(flux)), log_path=os.fspath(log_path))


def run_pretrain_embedding(inputs, *, encoder, labels_path, names: list[str], out, config, hidden=(1024, 512, 64),
                           heads: str = "per-label", ensemble: int = 5, cache=None, overwrite: bool = False,
                           command: str = "stxcat pretrain --encoder", label_options=None):
    """Like :func:`catalog_tool.train.commands.run_pretrain`, with heads on ``encoder``'s frozen embeddings."""
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.train.commands import TrainOutcome, _check_out, _summary
    from catalog_tool.train.data import load_labelled
    from catalog_tool.train.encoder import pretrain_embedding

    if not names:
        raise ConfigError("give at least one --label to learn")
    enc = load_encoder(encoder)
    out = _check_out(out, overwrite)
    grid, settings = ModelGrid.from_dict(enc.grid), PreprocessSettings.from_dict(enc.preprocess)
    ls, failures = load_labelled(list(inputs), labels_path=labels_path, names=names, grid=grid, settings=settings,
                                 cache=cache, options=label_options)
    trained = pretrain_embedding(flux=ls.flux, labels=ls.labels, names=names, encoder=enc, hidden=hidden, heads=heads,
                                 ensemble=ensemble, config=config, log_path=out / "training_log.jsonl")
    prov = make_provenance(command=command, seed=config.seed,
                           training_data=_summary(ls, inputs=inputs, labels_path=labels_path))
    bundle = trained.save(out, provenance=prov, overwrite=True)
    return TrainOutcome(bundle=bundle, failures=failures, n_spectra=len(ls), log_path=os.fspath(out / "training_log.jsonl"),
                        label_summary=ls.summary())
