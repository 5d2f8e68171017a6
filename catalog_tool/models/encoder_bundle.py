"""Bundles of spectral encoders and of embedding MLPs (safetensors + JSON; no pickle).

Encoder bundle (``stxcat pretrain-encoder``): a folder with ``manifest.json`` (``"kind": "encoder"``,
the encoder's architecture, grid, preprocessing, weights sha256, training summary, provenance) and
``weights.safetensors`` (the encoder's state: token/position embeddings, transformer layers and
the reconstruction head used in pre-training).

Embedding bundle: a label model like any other (``load_bundle`` returns a
:class:`~catalog_tool.models.bundle.Bundle` whose members map flux to scaled labels), with
``architecture.kind = "embedding-mlp"``. It **embeds** a byte-identical copy of its encoder bundle
in the sub-folder ``encoder/`` and **pins** it: ``architecture.encoder.sha256`` is the sha256 of
that encoder's weights. Loading verifies the copy (its own manifest and sha256) and refuses a
bundle whose ``encoder/`` is not the pinned encoder. Embedding (not referencing) keeps a bundle
self-contained: the folder alone reproduces a catalogue, and moving it cannot break it.

``weights.safetensors`` of an embedding bundle holds per member ``member{m}.head.*`` (the
regression head, with adapter heads or LoRA factors), plus, when the encoder was fine-tuned,
``member{m}.encoder.*``: only the LoRA factors (the base weights come from the pinned encoder) or,
for full fine-tuning, the whole encoder. Encoder modes: ``frozen`` (one encoder shared by all
members, run once per batch), ``lora``, ``full``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import pathlib
from dataclasses import dataclass

import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import nn

from catalog_tool.errors import BundleError, ConfigError
from catalog_tool.models.adapters import adapt_member, finetune_spec, merge_member
from catalog_tool.models.calibration import check_calibration
from catalog_tool.models.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    Bundle,
    LabelSpec,
    as_json_dict,
    differences,
    find_bundle,
    read_manifest,
    write_bundle_files,
)
from catalog_tool.models.encoder import (
    EmbeddingMember,
    EncoderConfig,
    SpectrumEncoder,
    apply_encoder_lora,
    merge_encoder_lora,
)
from catalog_tool.models.mlp import HEADS, MLPConfig, build_member

__all__ = ["EncoderBundle", "ENCODER_MODES", "ENCODER_DIR", "save_encoder", "load_encoder",
           "save_embedding_bundle", "load_embedding_bundle", "embedding_architecture"]

ENCODER_MODES = ("frozen", "lora", "full")
#: Sub-folder of an embedding bundle holding its encoder bundle.
ENCODER_DIR = "encoder"


@dataclass
class EncoderBundle:
    """A loaded, verified encoder: manifest, module (evaluation mode, frozen), the weights' bytes."""

    manifest: dict
    encoder: SpectrumEncoder
    blob: bytes
    path: str | None = None

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def sha256(self) -> str:
        return self.manifest["weights"]["sha256"]

    @property
    def config(self) -> EncoderConfig:
        return EncoderConfig.from_dict(self.manifest["architecture"]["config"])

    @property
    def grid(self) -> dict:
        return self.manifest["grid"]

    @property
    def preprocess(self) -> dict:
        return self.manifest["preprocess"]


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu").contiguous().clone() for k, v in module.state_dict().items()}


def save_encoder(path, *, encoder: SpectrumEncoder, grid, preprocess, provenance: dict, training: dict | None = None,
                 name: str | None = None, overwrite: bool = False) -> EncoderBundle:
    """Write an encoder bundle and return it loaded back and verified.

    Parameters
    ----------
    path : path-like
        Bundle folder (refused if it already holds one and ``overwrite`` is false).
    encoder : SpectrumEncoder
        Trained encoder (LoRA factors, if any, must be merged first).
    grid, preprocess : dict or objects with ``.to_dict()``
        Model grid (``npix`` must equal the encoder's ``n_in``) and preprocessing settings.
    provenance : dict
        From :func:`catalog_tool.models.bundle.make_provenance`.
    training : dict, optional
        Training summary (losses, epochs, seconds) stored as ``"training"``.
    """
    path = pathlib.Path(path)
    grid_d, pre_d = as_json_dict(grid, "grid"), as_json_dict(preprocess, "preprocess settings")
    if int(grid_d.get("npix", -1)) != encoder.config.n_in:
        raise ConfigError(f"encoder input ({encoder.config.n_in} px) does not match the grid ({grid_d.get('npix')} px)")
    tensors = _state(merge_encoder_lora(encoder))
    blob = _st_save(tensors, metadata={"format": f"{FORMAT} encoder"})  # one entry: byte-reproducible
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "encoder", "name": name or path.name,
        "architecture": {"kind": "spectral-encoder", "config": encoder.config.to_dict(),
                         "n_tokens": encoder.config.n_tokens, "embedding": "mean over tokens of the last layer",
                         "layer": "TransformerEncoderLayer(batch_first, norm_first, gelu) + final LayerNorm"},
        "grid": grid_d, "preprocess": pre_d,
        "weights": {"file": WEIGHTS_NAME, "sha256": hashlib.sha256(blob).hexdigest(), "dtype": "float32",
                    "n_tensors": len(tensors), "nbytes": len(blob)},
        "training": as_json_dict(training or {}, "training summary"),
        "provenance": as_json_dict(provenance, "provenance"),
    }
    if (path / MANIFEST_NAME).exists() and not overwrite:
        raise BundleError(f"{path} already holds a bundle (use overwrite to replace it)")
    write_bundle_files(path, {WEIGHTS_NAME: blob, MANIFEST_NAME: (json.dumps(manifest, indent=2) + "\n").encode()})
    return load_encoder(path)


def _read_folder(folder: pathlib.Path) -> tuple[dict, bytes]:
    manifest = read_manifest(folder)
    wpath = folder / WEIGHTS_NAME
    blob = wpath.read_bytes()
    if hashlib.sha256(blob).hexdigest() != (manifest.get("weights") or {}).get("sha256"):
        raise BundleError(f"{wpath} does not match the sha256 in its manifest (changed or corrupted weights)")
    return manifest, blob


def _tensors(blob: bytes, where) -> dict[str, torch.Tensor]:
    try:
        tensors = _st_load(blob)
    except Exception as exc:  # safetensors raises untyped errors on a malformed header
        raise BundleError(f"{where} is not a readable safetensors file ({exc})") from None
    bad = [k for k, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise BundleError(f"tensor {bad[0]} in {where} holds non-finite values")
    return tensors


def _check_grid(manifest: dict, grid, preprocess, what: str) -> None:
    for asked, key, label in ((grid, "grid", "model grid"), (preprocess, "preprocess", "preprocessing settings")):
        if asked is not None:
            diffs = differences(as_json_dict(asked, label), manifest[key])
            if diffs:
                raise BundleError(f"{what} {manifest['name']} was made for another {label}: " + "; ".join(diffs))


def load_encoder(path, *, grid=None, preprocess=None) -> EncoderBundle:
    """Load and verify an encoder bundle (sha256, architecture, tensors; grid/preprocess when given).

    Raises
    ------
    BundleError
        Not an encoder bundle, changed weights, tensors that do not fit the architecture, or a
        grid/preprocessing mismatch.
    """
    folder = find_bundle(path)
    manifest, blob = _read_folder(folder)
    if manifest.get("kind") != "encoder":
        raise BundleError(f"{folder} is a label model bundle, not a spectral encoder")
    for key in ("name", "architecture", "grid", "preprocess", "weights", "provenance"):
        if key not in manifest:
            raise BundleError(f"{folder / MANIFEST_NAME} lacks the entry {key!r}")
    try:
        config = EncoderConfig.from_dict(manifest["architecture"]["config"])
    except (ConfigError, KeyError, TypeError) as exc:
        raise BundleError(f"encoder architecture in {folder} cannot be built: {exc}") from None
    if int(manifest["grid"].get("npix", -1)) != config.n_in:
        raise BundleError(f"{folder}: encoder input ({config.n_in} px) does not match its grid ({manifest['grid'].get('npix')} px)")
    _check_grid(manifest, grid, preprocess, "encoder")
    encoder = SpectrumEncoder(config)
    _load_exact(encoder, _tensors(blob, folder / WEIGHTS_NAME), str(folder))
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad_(False)
    return EncoderBundle(manifest=manifest, encoder=encoder, blob=blob, path=str(folder))


def _load_exact(module: nn.Module, tensors: dict[str, torch.Tensor], where: str) -> None:
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    _check_keys(expected, tensors, where)
    module.load_state_dict({k: v.float() for k, v in tensors.items()}, strict=True)


def _check_keys(expected: dict[str, tuple], found: dict[str, torch.Tensor], where: str) -> None:
    missing, extra = sorted(set(expected) - set(found)), sorted(set(found) - set(expected))
    if missing:
        raise BundleError(f"{where}: weights lack {len(missing)} tensor(s) the architecture needs, e.g. {missing[:3]}")
    if extra:
        raise BundleError(f"{where}: weights hold {len(extra)} tensor(s) the architecture does not use, e.g. {extra[:3]}")
    for k, shape in expected.items():
        if tuple(found[k].shape) != shape:
            raise BundleError(f"{where}: tensor {k} has shape {tuple(found[k].shape)}, the architecture needs {shape}")


# --- embedding bundles -------------------------------------------------------------------------

def embedding_architecture(*, encoder: EncoderBundle, head_config: MLPConfig, heads: str, finetune: dict | None = None,
                           encoder_mode: str = "frozen", encoder_lora: dict | None = None) -> dict:
    """The manifest's ``architecture`` of an embedding bundle."""
    if heads not in HEADS:
        raise ConfigError(f"heads must be one of {HEADS}, got {heads!r}")
    if encoder_mode not in ENCODER_MODES:
        raise ConfigError(f"encoder mode must be one of {ENCODER_MODES}, got {encoder_mode!r}")
    if head_config.n_in != encoder.config.width:
        raise ConfigError(f"head input ({head_config.n_in}) must equal the encoder width ({encoder.config.width})")
    enc = {"name": encoder.name, "sha256": encoder.sha256, "path": ENCODER_DIR, "config": encoder.config.to_dict(),
           "mode": encoder_mode}
    if encoder_mode == "lora":
        lora = dict(encoder_lora or {})
        enc["lora"] = {"rank": int(lora.get("rank", 4)), "alpha": float(lora.get("alpha", 8.0))}
    return {"kind": "embedding-mlp", "n_in": encoder.config.n_in, "heads": heads, "mlp": head_config.to_dict(),
            "layer_order": "Linear-BatchNorm1d-ReLU-Dropout",
            "finetune": dict(finetune) if finetune else finetune_spec("zero-shot"), "encoder": enc}


def _stored(member: EmbeddingMember, mode: str) -> dict[str, torch.Tensor]:
    """The tensors of one member that the bundle stores (the rest comes from the pinned encoder)."""
    out = {f"head.{k}": v for k, v in member.head.state_dict().items()}
    if mode == "lora":
        out.update({f"encoder.{k}": v for k, v in member.encoder.state_dict().items() if ".lora_" in k})
    elif mode == "full":
        out.update({f"encoder.{k}": v for k, v in member.encoder.state_dict().items()})
    return out


def _build_members(manifest: dict, base: SpectrumEncoder) -> list[EmbeddingMember]:
    arch = manifest["architecture"]
    enc = arch["encoder"]
    try:
        mlp = MLPConfig.from_dict(arch["mlp"])
        spec = finetune_spec(arch["finetune"]["method"], **{k: v for k, v in arch["finetune"].items() if k != "method"})
        mode = enc["mode"]
        if mode not in ENCODER_MODES:
            raise ConfigError(f"unknown encoder mode {mode!r}")
        members = []
        for _ in range(int(manifest["ensemble_size"])):
            if mode == "frozen":
                encoder = base  # one shared module: the embedding is computed once per batch
            else:
                encoder = copy.deepcopy(base)
                if mode == "lora":
                    apply_encoder_lora(encoder, rank=enc["lora"]["rank"], alpha=enc["lora"]["alpha"])
            head = adapt_member(build_member(config=mlp, n_labels=len(manifest["labels"]), heads=arch["heads"]), spec=spec)
            members.append(EmbeddingMember(encoder, head))
    except (ConfigError, KeyError, TypeError) as exc:
        raise BundleError(f"architecture {arch!r} cannot be built: {exc}") from None
    return members


def _finish(members: list[EmbeddingMember]) -> list[EmbeddingMember]:
    for m in members:
        m.head = merge_member(m.head)  # e.g. LoRA factors stored; inference uses W + (alpha/r) B A
        merge_encoder_lora(m.encoder)
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return members


def save_embedding_bundle(path, *, members: list[EmbeddingMember], encoder: EncoderBundle, head_config: MLPConfig,
                          heads: str, labels: list[LabelSpec], provenance: dict, finetune: dict | None = None,
                          encoder_mode: str = "frozen", encoder_lora: dict | None = None, name: str | None = None,
                          overwrite: bool = False, extra: dict | None = None) -> Bundle:
    """Write an embedding-MLP ensemble (with its encoder embedded and pinned) and return it loaded.

    Parameters
    ----------
    path : path-like
        Bundle folder.
    members : list of EmbeddingMember
        With the structure that ``head_config``, ``heads``, ``finetune``, ``encoder_mode`` and
        ``encoder_lora`` describe (unmerged LoRA factors and adapter heads included).
    encoder : EncoderBundle
        The pre-trained encoder the members were built on; copied into ``path/encoder`` and pinned
        by its sha256. Its grid and preprocessing become the bundle's.
    labels : list of LabelSpec
    provenance : dict
    extra : dict, optional
        More manifest entries (e.g. ``{"training": {...}}``).
    """
    path = pathlib.Path(path)
    if not members:
        raise ConfigError("a bundle needs at least one ensemble member")
    names = [lab.name for lab in labels]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"label names must be unique and non-empty, got {names}")
    for lab in labels:
        LabelSpec.from_dict(lab.to_dict())
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": name or path.name,
        "architecture": embedding_architecture(encoder=encoder, head_config=head_config, heads=heads, finetune=finetune,
                                               encoder_mode=encoder_mode, encoder_lora=encoder_lora),
        "labels": [lab.to_dict() for lab in labels], "grid": dict(encoder.grid), "preprocess": dict(encoder.preprocess),
        "ensemble_size": len(members), "weights": {}, "provenance": as_json_dict(provenance, "provenance"),
    }
    if extra:
        clash = set(extra) & set(manifest)
        if clash:
            raise ConfigError(f"extra manifest entries clash with reserved keys: {sorted(clash)}")
        manifest.update(as_json_dict(extra, "extra manifest entries"))
    tensors = {f"member{m}.{k}": v.detach().to("cpu").contiguous().clone()
               for m, member in enumerate(members) for k, v in _stored(member, encoder_mode).items()}
    expected = {f"member{m}.{k}": tuple(v.shape) for m, member in
                enumerate(_build_members(manifest, encoder.encoder)) for k, v in _stored(member, encoder_mode).items()}
    try:
        _check_keys(expected, tensors, "members")
    except BundleError as exc:  # the caller's members do not match what it described
        raise ConfigError(str(exc)) from None
    blob = _st_save(tensors, metadata={"format": FORMAT})  # one entry: byte-reproducible
    manifest["weights"] = {"file": WEIGHTS_NAME, "sha256": hashlib.sha256(blob).hexdigest(), "dtype": "float32",
                           "n_tensors": len(tensors), "nbytes": len(blob)}
    if (path / MANIFEST_NAME).exists() and not overwrite:
        raise BundleError(f"{path} already holds a bundle (use overwrite to replace it)")
    enc_manifest = (json.dumps(encoder.manifest, indent=2) + "\n").encode()
    write_bundle_files(path / ENCODER_DIR, {WEIGHTS_NAME: encoder.blob, MANIFEST_NAME: enc_manifest})
    write_bundle_files(path, {WEIGHTS_NAME: blob, MANIFEST_NAME: (json.dumps(manifest, indent=2) + "\n").encode()})
    return load_embedding_bundle(path, read_manifest(path))


def load_embedding_bundle(folder, manifest: dict, *, grid=None, preprocess=None) -> Bundle:
    """Finish loading a bundle whose manifest is not a spectrum MLP's (called by ``load_bundle``,
    which has found the folder and read its manifest with :func:`~catalog_tool.models.manifest.read_manifest`).

    Raises
    ------
    BundleError
        An encoder bundle given where a label model is needed; a missing or changed embedded
        encoder, or one that is not the pinned encoder (sha256); tensors that do not fit; a
        malformed ``calibration`` entry.
    """
    folder = pathlib.Path(folder)
    if manifest.get("kind") == "encoder":
        raise BundleError(f"{folder} is a spectral encoder, not a label model: train a regression head on it first "
                          "(catalog_tool.train.encoder.pretrain_embedding)")
    for key in ("name", "architecture", "labels", "grid", "preprocess", "ensemble_size", "weights", "provenance"):
        if key not in manifest:
            raise BundleError(f"{folder / MANIFEST_NAME} lacks the entry {key!r}")
    for d in manifest["labels"]:
        LabelSpec.from_dict(d)
    arch = manifest["architecture"]
    pinned = (arch.get("encoder") or {}).get("sha256")
    if not pinned:
        raise BundleError(f"{folder} does not pin its encoder (architecture.encoder.sha256 is missing)")
    _check_grid(manifest, grid, preprocess, "bundle")
    enc_dir = folder / str(arch["encoder"].get("path", ENCODER_DIR))
    if not enc_dir.is_dir():
        raise BundleError(f"{folder} lacks its encoder folder {enc_dir.name}/")
    encoder = load_encoder(enc_dir)
    if encoder.sha256 != pinned:
        raise BundleError(f"bundle {manifest['name']} was trained on encoder sha256 {pinned[:12]}..., but its "
                          f"{enc_dir.name}/ holds encoder {encoder.name!r} with sha256 {encoder.sha256[:12]}... "
                          "(a different encoder: embeddings would not mean what the heads learned)")
    diffs = differences(encoder.grid, manifest["grid"]) + differences(encoder.preprocess, manifest["preprocess"])
    if diffs:
        raise BundleError(f"bundle {manifest['name']}: its encoder was made for another grid or preprocessing: "
                          + "; ".join(diffs))
    if int(arch.get("n_in", -1)) != encoder.config.n_in:
        raise BundleError(f"bundle {manifest['name']}: input size {arch.get('n_in')} differs from its encoder's ({encoder.config.n_in})")
    blob = (folder / WEIGHTS_NAME).read_bytes() if (folder / WEIGHTS_NAME).is_file() else None
    if blob is None:
        raise BundleError(f"{folder} is not a model bundle: {WEIGHTS_NAME} is missing")
    if hashlib.sha256(blob).hexdigest() != manifest["weights"].get("sha256"):
        raise BundleError(f"{folder / WEIGHTS_NAME} does not match the sha256 in its manifest (changed or corrupted weights)")
    tensors = _tensors(blob, folder / WEIGHTS_NAME)
    members = _build_members(manifest, encoder.encoder)
    mode = arch["encoder"]["mode"]
    expected = {f"member{m}.{k}": tuple(v.shape) for m, mem in enumerate(members) for k, v in _stored(mem, mode).items()}
    _check_keys(expected, tensors, str(folder / WEIGHTS_NAME))
    for m, member in enumerate(members):
        prefix = f"member{m}."
        state = {k[len(prefix):]: v.float() for k, v in tensors.items() if k.startswith(prefix)}
        # Keys not stored (frozen encoder, LoRA base weights) already hold the pinned encoder's values.
        result = member.load_state_dict(state, strict=False)
        if result.unexpected_keys:
            raise BundleError(f"{folder}: unexpected tensors {result.unexpected_keys[:3]}")
    bundle = Bundle(manifest=manifest, members=_finish(members), path=str(folder))
    check_calibration(manifest, str(folder / MANIFEST_NAME))
    return bundle

