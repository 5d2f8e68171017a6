"""Self-supervised pre-training of the spectral encoder, and embedding MLPs trained and fine-tuned on it.

``pretrain_encoder``
    Masked-chunk reconstruction on unlabelled spectra: contiguous runs of tokens are replaced by
    the mask token and the encoder reconstructs their standardised pixels (loss on masked tokens
    only, ivar-weighted when given). With a second view of the same stars (``flux_b``: e.g. the
    DESI rendering of LAMOST stars) a CLIP-style symmetric InfoNCE term with a learned
    temperature aligns the two views' (masked-input) embeddings through a projection head.
``pretrain_embedding``
    Regression heads (width -> 1024 -> 512 -> 64 -> L, the paper's MLP on embeddings) trained on
    frozen embeddings with the shared loop of :mod:`catalog_tool.train.pretrain`.
``finetune_embedding``
    ``zero-shot``, ``adapter`` (residual head on the head's 64-d features; encoder frozen),
    ``lora`` (rank-4 LoRA on the encoder's attention q/k/v/out and rank-8 LoRA on every head
    Linear) and ``full`` (encoder and head).

Arrays in, modules out; ``load_spectra`` is the I/O edge used by the command line.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from catalog_tool.errors import ConfigError
from catalog_tool.models.adapters import adapt_member, finetune_spec, method_of
from catalog_tool.models.bundle import Bundle, LabelSpec
from catalog_tool.models.encoder import (
    EmbeddingMember,
    EncoderConfig,
    SpectrumEncoder,
    apply_encoder_lora,
    chunk_mask,
    encode,
)
from catalog_tool.models.encoder_bundle import ENCODER_DIR, EncoderBundle, load_encoder, save_embedding_bundle, save_encoder
from catalog_tool.models.infer import resolve_device
from catalog_tool.models.manifest import as_json_dict, differences
from catalog_tool.models.mlp import MLPConfig
from catalog_tool.train.loop import TrainConfig, TrainLog, split_indices
from catalog_tool.train.pretrain import fit_members, label_matrix, pretrain
from catalog_tool.train.tuning import check_inputs, method_config, widened_labels

__all__ = ["EncoderTrainConfig", "TrainedEncoder", "TrainedEmbedding", "pretrain_encoder", "pretrain_embedding",
           "finetune_embedding", "load_spectra"]


@dataclass(frozen=True)
class EncoderTrainConfig:
    """Settings of encoder pre-training.

    Parameters
    ----------
    epochs, batch_size : int
        Passes over the training rows (10) and spectra per step (64).
    lr, weight_decay : float
        AdamW peak learning rate (5e-4, reached after ``warmup`` steps, then cosine decay to 10%)
        and weight decay (0.05).
    warmup : int
        Linear warm-up steps (capped at 10% of all steps).
    mask_ratio, min_run, max_run : float, int, int
        Fraction of tokens masked (0.3) in runs of ``min_run``..``max_run`` tokens (2..8).
    contrastive_weight : float
        Weight of the InfoNCE term when a second view is given.
    proj_dim : int
        Width of the contrastive projection head.
    val_fraction, seed, patience, device
        As in :class:`~catalog_tool.train.loop.TrainConfig`.
    """

    epochs: int = 10
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup: int = 200
    mask_ratio: float = 0.3
    min_run: int = 2
    max_run: int = 8
    contrastive_weight: float = 1.0
    proj_dim: int = 64
    val_fraction: float = 0.1
    seed: int = 0
    patience: int | None = None
    device: str = "auto"

    def __post_init__(self):
        problems = []
        if self.epochs < 1 or self.batch_size < 2:
            problems.append(f"epochs must be >= 1 and batch_size >= 2 (got {self.epochs}, {self.batch_size})")
        if not self.lr > 0 or self.weight_decay < 0 or self.warmup < 0:
            problems.append("lr must be > 0, weight_decay and warmup >= 0")
        if not 0 < self.mask_ratio < 1 or not 1 <= self.min_run <= self.max_run:
            problems.append(f"mask_ratio must be in (0, 1) and 1 <= min_run <= max_run (got {self.mask_ratio}, "
                            f"{self.min_run}, {self.max_run})")
        if self.contrastive_weight < 0 or self.proj_dim < 1:
            problems.append("contrastive_weight must be >= 0 and proj_dim >= 1")
        if not 0 < self.val_fraction < 1:
            problems.append(f"val_fraction must be in (0, 1) (got {self.val_fraction})")
        if self.patience is not None and self.patience < 1:
            problems.append(f"patience must be >= 1 or None (got {self.patience})")
        if problems:
            raise ConfigError("invalid encoder training settings: " + "; ".join(problems))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainedEncoder:
    """A pre-trained encoder (evaluation mode) and its training summary."""

    encoder: SpectrumEncoder
    summary: dict

    def save(self, path, *, grid, preprocess, provenance: dict, **kwargs) -> EncoderBundle:
        """Write as an encoder bundle (see :func:`~catalog_tool.models.encoder_bundle.save_encoder`)."""
        return save_encoder(path, encoder=self.encoder, grid=grid, preprocess=preprocess, provenance=provenance,
                            training=self.summary, **kwargs)


class _Contrastive(nn.Module):
    """Projection head and learned temperature of the CLIP-style loss."""

    def __init__(self, width: int, proj_dim: int):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(width, width), nn.GELU(), nn.Linear(width, proj_dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's initial temperature

    def forward(self, ea: torch.Tensor, eb: torch.Tensor) -> torch.Tensor:
        za, zb = F.normalize(self.proj(ea), dim=-1), F.normalize(self.proj(eb), dim=-1)
        # CLIP clips the scale at 100 so the softmax cannot become arbitrarily sharp.
        logits = self.logit_scale.clamp(max=math.log(100.0)).exp() * za @ zb.T
        target = torch.arange(len(za), device=za.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _rows(a, idx: np.ndarray, dev) -> torch.Tensor | None:
    if a is None:
        return None
    return torch.from_numpy(np.ascontiguousarray(a[np.sort(idx)], dtype=np.float32)).to(dev)


def _step_loss(encoder, contrast, views, *, cfg: EncoderTrainConfig, gen: torch.Generator, dev) -> tuple[torch.Tensor, dict]:
    """Reconstruction loss of every view (+ InfoNCE across two views) of one batch."""
    recon, embs = [], []
    for x, iv in views:
        mask = chunk_mask(len(x), encoder.config.n_tokens, ratio=cfg.mask_ratio, min_run=cfg.min_run,
                          max_run=cfg.max_run, generator=gen).to(dev)
        loss, emb = encoder.reconstruction_loss(x, token_mask=mask, ivar=iv, return_embedding=True)
        recon.append(loss)
        embs.append(emb)
    parts = {"recon": torch.stack(recon).mean()}
    total = parts["recon"]
    if contrast is not None:
        parts["contrastive"] = contrast(embs[0], embs[1])
        total = total + cfg.contrastive_weight * parts["contrastive"]
    return total, parts


def pretrain_encoder(*, flux: np.ndarray, ivar: np.ndarray | None = None, config: EncoderTrainConfig = EncoderTrainConfig(),
                     encoder_config: EncoderConfig | None = None, flux_b: np.ndarray | None = None,
                     ivar_b: np.ndarray | None = None, log_path=None) -> TrainedEncoder:
    """Pre-train a spectral encoder by masked-chunk reconstruction (and optional contrastive alignment).

    Parameters
    ----------
    flux : ndarray (N, npix)
        Normalised spectra on the model grid (a memmap is fine).
    ivar : ndarray (N, npix), optional
        Inverse variances; weight the reconstruction loss (0 = pixel not counted).
    config : EncoderTrainConfig
    encoder_config : EncoderConfig, optional
        Architecture; default ``EncoderConfig(n_in=npix)``. Its ``n_in`` must equal npix.
    flux_b, ivar_b : ndarray (N, npix), optional
        A second view of the same N stars (row i of ``flux_b`` is the star of row i of ``flux``,
        e.g. its DESI rendering): adds their reconstruction and the InfoNCE alignment term.
    log_path : path, optional
        JSON-lines log, one record per epoch.

    Returns
    -------
    TrainedEncoder
        The best-validation encoder; ``summary`` has the losses per epoch, the initial and best
        validation losses, seconds per epoch, and how many rows were left out as non-finite.
    """
    shape = np.shape(flux)
    if len(shape) != 2:
        raise ConfigError(f"flux must be 2-D (N, npix), got shape {shape}")
    for name, other in (("ivar", ivar), ("flux_b", flux_b), ("ivar_b", ivar_b)):
        if other is not None and np.shape(other) != shape:
            raise ConfigError(f"{name} has shape {np.shape(other)}, flux has {shape}")
    if ivar_b is not None and flux_b is None:
        raise ConfigError("ivar_b was given without flux_b")
    ecfg = encoder_config or EncoderConfig(n_in=shape[1])
    if ecfg.n_in != shape[1]:
        raise ConfigError(f"encoder input ({ecfg.n_in} px) does not match the spectra ({shape[1]} px)")
    # Rows with a non-finite value cannot be standardised; they are left out and counted.
    ok = np.isfinite(np.asarray(flux)).all(axis=1)
    if flux_b is not None:
        ok &= np.isfinite(np.asarray(flux_b)).all(axis=1)
    good = np.flatnonzero(ok)
    if len(good) < 4:
        raise ConfigError(f"need at least 4 spectra with finite flux to pre-train an encoder, got {len(good)}")
    tr, va = split_indices(len(good), val_fraction=config.val_fraction, seed=config.seed)
    tr, va = good[tr], good[va]
    if flux_b is not None and (len(tr) < 2 or len(va) < 2):
        raise ConfigError("contrastive training needs at least 2 training and 2 validation pairs")

    dev = resolve_device(config.device)
    torch.manual_seed(config.seed)
    encoder = SpectrumEncoder(ecfg).to(dev)
    contrast = _Contrastive(ecfg.width, config.proj_dim).to(dev) if flux_b is not None else None
    params = list(encoder.parameters()) + (list(contrast.parameters()) if contrast is not None else [])
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    n_batches = max(1, len(tr) // config.batch_size)
    total_steps = n_batches * config.epochs
    warm = min(config.warmup, max(1, total_steps // 10))

    def schedule(step: int) -> float:  # linear warm-up, cosine decay to 10% of the peak
        if step < warm:
            return (step + 1) / warm
        frac = (step - warm) / max(1, total_steps - warm)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    order = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed + 1)

    def views(idx):
        v = [(_rows(flux, idx, dev), _rows(ivar, idx, dev))]
        if flux_b is not None:
            v.append((_rows(flux_b, idx, dev), _rows(ivar_b, idx, dev)))
        return v

    def validate() -> dict:
        encoder.eval()
        if contrast is not None:
            contrast.eval()
        vgen = torch.Generator().manual_seed(config.seed + 2)  # the same masks every epoch
        sums, count = {}, 0
        with torch.no_grad():
            for s in range(0, len(va), 256):
                idx = va[s:s + 256]
                if contrast is not None and len(idx) < 2:
                    continue
                _, parts = _step_loss(encoder, contrast, views(idx), cfg=config, gen=vgen, dev=dev)
                for k, v in parts.items():
                    sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
                count += len(idx)
        out = {k: v / count for k, v in sums.items()}
        out["total"] = out["recon"] + (config.contrastive_weight * out["contrastive"] if contrast is not None else 0.0)
        return out

    log = TrainLog(log_path)
    first = validate()
    best, best_epoch, since, stopped = first["total"], -1, 0, False
    best_state = copy.deepcopy(encoder.state_dict())
    history, seconds = [], []
    epoch = 0
    for epoch in range(config.epochs):
        t0 = time.perf_counter()
        encoder.train()
        if contrast is not None:
            contrast.train()
        perm = tr[order.permutation(len(tr))]
        sums, count = {}, 0
        for b in range(n_batches):
            idx = perm[b * config.batch_size: (b + 1) * config.batch_size if b < n_batches - 1 else len(perm)]
            loss, parts = _step_loss(encoder, contrast, views(idx), cfg=config, gen=gen, dev=dev)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)  # transformers spike early; clipping keeps it stable
            opt.step()
            sched.step()
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(idx)
            count += len(idx)
        val = validate()
        dt = time.perf_counter() - t0
        seconds.append(dt)
        improved = val["total"] < best
        if improved:
            best, best_epoch, since = val["total"], epoch, 0
            best_state = copy.deepcopy(encoder.state_dict())
        else:
            since += 1
        rec = {"stage": "pretrain-encoder", "epoch": epoch, **{f"train_{k}": v / count for k, v in sums.items()},
               **{f"val_{k}": v for k, v in val.items()}, "best": improved, "seconds": round(dt, 3)}
        history.append(rec)
        log.write(rec)
        if config.patience is not None and since >= config.patience:
            stopped = True
            break
    encoder.load_state_dict(best_state)
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    summary = {"stage": "pretrain-encoder", "n_spectra": int(shape[0]), "n_nonfinite_left_out": int((~ok).sum()),
               "n_train": int(len(tr)), "n_val": int(len(va)), "contrastive": flux_b is not None,
               "config": config.to_dict(), "initial_val": first, "best_val_loss": best, "best_epoch": best_epoch,
               "epochs_run": epoch + 1, "stopped_early": stopped,
               "seconds_per_epoch": round(float(np.mean(seconds)), 2) if seconds else None,
               "seconds": round(float(np.sum(seconds)), 1), "history": history}
    return TrainedEncoder(encoder=encoder.cpu(), summary=summary)


@dataclass
class TrainedEmbedding:
    """Embedding-MLP members plus what :func:`~catalog_tool.models.encoder_bundle.save_embedding_bundle` needs."""

    members: list[EmbeddingMember]
    labels: list[LabelSpec]
    config: MLPConfig
    heads: str
    encoder: EncoderBundle
    finetune: dict = field(default_factory=lambda: finetune_spec("zero-shot"))
    encoder_mode: str = "frozen"
    encoder_lora: dict | None = None
    summary: dict = field(default_factory=dict)

    def save(self, path, *, provenance: dict, grid=None, preprocess=None, **kwargs) -> Bundle:
        """Write as an embedding bundle. ``grid``/``preprocess`` are accepted for symmetry with
        :class:`~catalog_tool.train.pretrain.TrainedEnsemble` and must equal the encoder's."""
        for asked, key in ((grid, "grid"), (preprocess, "preprocess")):
            if asked is not None:
                diffs = differences(as_json_dict(asked, key), self.encoder.manifest[key])
                if diffs:
                    raise ConfigError(f"the encoder was made for another {key}: " + "; ".join(diffs))
        if kwargs.pop("float16", False):
            raise ConfigError("float16 storage is not offered for embedding bundles (the encoder is stored as float32)")
        kwargs.pop("check_flux", None)  # only used by float16 storage
        extra = dict(kwargs.pop("extra", None) or {})
        extra.setdefault("training", self.summary)
        return save_embedding_bundle(path, members=self.members, encoder=self.encoder, head_config=self.config,
                                     heads=self.heads, labels=self.labels, provenance=provenance, finetune=self.finetune,
                                     encoder_mode=self.encoder_mode, encoder_lora=self.encoder_lora, extra=extra,
                                     **kwargs)


def pretrain_embedding(*, flux: np.ndarray, labels: dict[str, np.ndarray], encoder: EncoderBundle,
                       names: list[str] | None = None, units: dict[str, str] | None = None,
                       hidden: tuple[int, ...] = (1024, 512, 64), dropout: float = 0.1, batchnorm: bool = True,
                       heads: str = "per-label", ensemble: int = 5, config: TrainConfig = TrainConfig(),
                       embed_batch: int = 256, log_path=None) -> TrainedEmbedding:
    """Train regression heads on frozen embeddings (the paper's embedding MLPs).

    The embeddings are computed once (batched on ``config.device``) and the heads are trained by
    :func:`catalog_tool.train.pretrain.pretrain` exactly as spectrum MLPs are, with ``n_in`` =
    encoder width. Parameters as in that function; ``encoder`` is a loaded encoder bundle.
    """
    if np.shape(flux)[1:] != (encoder.config.n_in,):
        raise ConfigError(f"encoder {encoder.name} expects spectra of {encoder.config.n_in} pixels, got shape {np.shape(flux)}")
    t0 = time.perf_counter()
    emb = encode(encoder.encoder, flux=flux, device=config.device, batch_size=embed_batch)
    t_embed = time.perf_counter() - t0
    trained = pretrain(flux=emb, labels=labels, names=names, units=units, hidden=hidden, dropout=dropout,
                       batchnorm=batchnorm, heads=heads, ensemble=ensemble, config=config, log_path=log_path)
    members = [EmbeddingMember(encoder.encoder, head) for head in trained.members]
    summary = {**trained.summary, "embedding_seconds": round(t_embed, 1), "encoder_sha256": encoder.sha256}
    return TrainedEmbedding(members=members, labels=trained.labels, config=trained.config, heads=trained.heads,
                            encoder=encoder, summary=summary)


def finetune_embedding(bundle: Bundle, *, flux: np.ndarray, labels: dict[str, np.ndarray], method: str,
                       config: TrainConfig = TrainConfig(), rank: int = 8, alpha: float = 16.0, head_hidden: int = 32,
                       encoder_rank: int = 4, encoder_alpha: float = 8.0, embed_batch: int = 256,
                       log_path=None) -> TrainedEmbedding:
    """Fine-tune an embedding bundle's ensemble; the bundle itself is not modified.

    Parameters
    ----------
    bundle : Bundle
        A loaded embedding bundle whose encoder is still the pinned (frozen) one; bundles with
        adapter heads or a fine-tuned encoder are refused (fine-tune their parent).
    flux, labels, config, log_path
        As in :func:`catalog_tool.train.finetune.finetune`.
    method : str
        A name of :data:`~catalog_tool.models.adapters.METHODS`; its ``encoder`` entry says what
        happens to the encoder. ``frozen`` (``adapter``): the heads train on embeddings computed
        once; ``lora``: rank ``encoder_rank`` LoRA on the encoder's attention and the method on
        every head, trained end to end on the spectra; ``full``: encoder and heads. With a
        trained encoder each member gets its own encoder copy and the L labels of a member train
        together (masked loss), since they share that encoder.
    """
    arch = bundle.manifest["architecture"]
    if arch.get("kind") != "embedding-mlp":
        raise ConfigError(f"bundle {bundle.name} is not an embedding-MLP bundle")
    how = method_of(method)
    spec = finetune_spec(method, rank=rank, alpha=alpha, head_hidden=head_hidden)
    mode = arch["encoder"]["mode"]
    parent_plain = method_of(bundle.method).plain_when_loaded
    if how.trains and (not parent_plain or mode != "frozen"):
        raise ConfigError(f"bundle {bundle.name} is already fine-tuned ({bundle.method}, encoder {mode}); "
                          "fine-tune its parent bundle instead")
    check_inputs(bundle, flux=flux, labels=labels)
    names = bundle.label_names
    enc_bundle = load_encoder(f"{bundle.path}/{arch['encoder'].get('path', ENCODER_DIR)}")
    y = label_matrix(labels, names, np.shape(flux)[0])
    specs = widened_labels(bundle, y)
    mlp = MLPConfig.from_dict(arch["mlp"])
    parent = {"name": bundle.name, "sha256": bundle.sha256, "method": bundle.method, "encoder_mode": mode}
    y_scaled = ((y - bundle.means) / bundle.stds).astype(np.float32)
    base = enc_bundle.encoder
    new_mode, enc_lora = "frozen", None
    if not how.trains:
        heads = [copy.deepcopy(m.head) for m in bundle.members]
        if not parent_plain:
            spec = dict(arch["finetune"])
        if mode == "frozen":
            members = [EmbeddingMember(base, h) for h in heads]
        else:  # merged LoRA or full encoders: stored whole
            members = [EmbeddingMember(copy.deepcopy(m.encoder), h) for m, h in zip(bundle.members, heads)]
            new_mode = "full"
        summary = {"stage": "finetune", "method": method, "parent": parent, "units": []}
    elif how.encoder == "frozen":
        heads = [adapt_member(copy.deepcopy(m.head), spec=spec) for m in bundle.members]
        emb = encode(base, flux=flux, device=config.device, batch_size=embed_batch)
        summary = fit_members(heads, x=emb, y_scaled=y_scaled, names=names, config=method_config(how, config),
                              log=TrainLog(log_path), stage="finetune")
        members = [EmbeddingMember(base, h) for h in heads]
    else:
        members = []
        for m in bundle.members:
            enc = copy.deepcopy(base)
            if how.encoder == "lora":
                apply_encoder_lora(enc, rank=encoder_rank, alpha=encoder_alpha)
            else:
                for p in enc.parameters():
                    p.requires_grad_(True)
            members.append(EmbeddingMember(enc, adapt_member(copy.deepcopy(m.head), spec=spec)))
        new_mode = how.encoder
        enc_lora = {"rank": int(encoder_rank), "alpha": float(encoder_alpha)} if how.encoder == "lora" else None
        summary = fit_members(members, x=flux, y_scaled=y_scaled, names=names, config=method_config(how, config),
                              log=TrainLog(log_path), stage="finetune")
    if how.trains:
        summary.update(method=method, parent=parent, spec=spec, encoder_mode=new_mode, encoder_lora=enc_lora)
    for m in members:
        m.eval()
    return TrainedEmbedding(members=members, labels=specs, config=mlp, heads=arch["heads"], encoder=enc_bundle,
                            finetune=spec, encoder_mode=new_mode, encoder_lora=enc_lora, summary=summary)


# --- I/O edge: inputs -> arrays ------------------------------------------------------------------

def load_spectra(inputs, *, grid=None, settings=None, stars_only: bool = True) -> tuple[np.ndarray, np.ndarray, dict, dict]:
    """Read, select and preprocess DESI/LAMOST files into arrays on the model grid.

    Parameters
    ----------
    inputs : sequence of str
        Files or release folders (as ``stxcat plan``/``annotate`` take them).
    grid, settings : ModelGrid, PreprocessSettings, optional
        Defaults ``ModelGrid()`` and ``PreprocessSettings()``.
    stars_only : bool
        Keep only spectra the selection calls stars (sky, galaxies and QSOs are not stars).

    Returns
    -------
    flux, ivar : ndarray float32 (N, npix)
        Preprocessed spectra whose preprocessing succeeded (PREPROC_OK).
    meta : dict of ndarray (N,)
        The batch metadata of those rows (TARGETID, TARGET_RA, TARGET_DEC, ...).
    report : dict
        Counts: files used, files skipped (with reasons), spectra read, not stars, preprocessing
        failures; nothing is left out without being counted here.
    """
    from catalog_tool.io import release
    from catalog_tool.io.readers import read_groups
    from catalog_tool.preprocess.chain import needed_observed_range, preprocess_batch
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings
    from catalog_tool.select import is_star

    grid = grid or ModelGrid()
    settings = settings or PreprocessSettings()
    idx = release.discover(list(inputs))
    failures = list(idx.skipped)
    fluxes, ivars, metas = [], [], []
    counts = {"spectra_read": 0, "not_star": 0, "preprocess_failed": 0}
    nbatches = 0
    # DESI (B, R, Z) and LAMOST (LRS) batches have different arms: preprocess each onto the
    # common grid, then stack the arrays. A damaged file is reported, not fatal.
    groups = read_groups(idx.entries, wave_range=needed_observed_range(grid=grid, settings=settings))
    for reader, batches, failed in groups:
        failures.extend(failed)
        for batch in batches:
            nbatches += 1
            star = is_star(batch.meta, kind=reader.kind) if stars_only else np.ones(len(batch), bool)
            counts["spectra_read"] += len(batch)
            counts["not_star"] += int((~star).sum())
            if not star.any():
                continue
            batch = batch.take(np.flatnonzero(star))
            pre = preprocess_batch(batch, grid=grid, settings=settings)
            ok = np.asarray(pre.diagnostics["PREPROC_OK"], bool)
            counts["preprocess_failed"] += int((~ok).sum())
            fluxes.append(pre.flux[ok])
            ivars.append(pre.ivar[ok])
            metas.append({k: np.asarray(v)[ok] for k, v in batch.meta.items()
                          if np.ndim(v) == 1 and len(v) == len(batch)})
    if not nbatches:
        raise ConfigError(f"no readable spectra in {list(inputs)} ({len(failures)} file(s) skipped)")
    if not fluxes or sum(len(f) for f in fluxes) == 0:
        raise ConfigError(f"no usable star spectra in {list(inputs)}: {counts}")
    keys = set.intersection(*(set(m) for m in metas))
    meta = {k: np.concatenate([m[k] for m in metas]) for k in sorted(keys)}
    flux, ivar = np.concatenate(fluxes), np.concatenate(ivars)
    report = {"files": len(idx.entries), "files_skipped": failures, **counts, "spectra_used": int(len(flux))}
    return flux, ivar, meta, report
