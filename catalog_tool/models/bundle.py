"""Model bundles: a folder with ``manifest.json`` and ``weights.safetensors``; no pickle anywhere.

A bundle holds an ensemble of members (each mapping the normalised spectrum on the model grid to
L scaled labels), the labels' scaling and training-domain limits, the grid and preprocessing
settings the inputs must be made with, the fine-tuning structure (adapter heads and LoRA factors
live in the same weights file), the sha256 of the weights and the provenance. Loading verifies all
of it and refuses a mismatch with one :class:`~catalog_tool.errors.BundleError` sentence.

Tensors are named ``member{m}.{state_dict key}``; the structure they fill is rebuilt from the
manifest's ``architecture`` (never by importing or unpickling anything from the bundle).
See docs/models.md for the manifest, key by key.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import pathlib

import numpy as np
import torch
from safetensors.torch import load as _st_load
from safetensors.torch import save as _st_save
from torch import nn

from catalog_tool import __version__
from catalog_tool.errors import BundleError, ConfigError
from catalog_tool.models.adapters import adapt_member, finetune_spec, merge_member
from catalog_tool.models.calibration import check_calibration
from catalog_tool.models.encoder_bundle import load_embedding_bundle
from catalog_tool.models.manifest import (
    FORMAT,
    FORMAT_VERSION,
    MANIFEST_NAME,
    WEIGHTS_NAME,
    Bundle,
    LabelSpec,
    as_json_dict,
    bundled_names,
    bundled_root,
    differences,
    find_bundle,
    read_manifest,
    write_bundle_files,
)
from catalog_tool.models.mlp import HEADS, MLPConfig, build_member

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "WEIGHTS_NAME",
    "LabelSpec",
    "Bundle",
    "architecture_dict",
    "make_provenance",
    "save_bundle",
    "load_bundle",
    "find_bundle",
    "bundled_names",
    "bundled_root",
]

#: float16 storage is refused if it moves any prediction by more than this (dex, or the
#: equivalent relative change, ln(10) x 1e-3, for labels not in dex such as TEFF in K).
FLOAT16_TOLERANCE_DEX = 1e-3

_REQUIRED_KEYS = ("format", "format_version", "name", "architecture", "labels", "grid", "preprocess",
                  "ensemble_size", "weights", "provenance")


def architecture_dict(*, config: MLPConfig, heads: str, finetune: dict | None = None) -> dict:
    """The manifest's ``architecture`` entry."""
    if heads not in HEADS:
        raise ConfigError(f"heads must be one of {HEADS}, got {heads!r}")
    return {"kind": "spectrum-mlp", "heads": heads, "mlp": config.to_dict(),
            "layer_order": "Linear-BatchNorm1d-ReLU-Dropout",
            "finetune": dict(finetune) if finetune else finetune_spec("zero-shot")}


def make_provenance(*, command: str, seed: int | None, training_data: dict | None = None, **extra) -> dict:
    """Provenance for a manifest: stxcat version, command line, UTC date, seed, training-data summary."""
    return {"stxcat_version": __version__, "command": command,
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "seed": seed, "training_data": training_data or {}, **extra}


def _build_structure(manifest: dict) -> list[nn.Module]:
    arch = manifest["architecture"]
    if arch.get("kind") != "spectrum-mlp":
        raise BundleError(f"unknown architecture kind {arch.get('kind')!r}")
    try:
        config = MLPConfig.from_dict(arch["mlp"])
        spec = finetune_spec(arch["finetune"]["method"],
                             **{k: v for k, v in arch["finetune"].items() if k != "method"})
        members = []
        for _ in range(int(manifest["ensemble_size"])):
            m = build_member(config=config, n_labels=len(manifest["labels"]), heads=arch["heads"])
            members.append(adapt_member(m, spec=spec))
    except (ConfigError, KeyError, TypeError) as exc:
        raise BundleError(f"architecture {arch!r} cannot be built: {exc}") from None
    return members


def _check_tensors(found: dict[str, torch.Tensor], members: list[nn.Module]) -> None:
    expected = {f"member{m}.{k}": v.shape for m, member in enumerate(members) for k, v in member.state_dict().items()}
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        raise BundleError(f"weights lack {len(missing)} tensor(s) the architecture needs, e.g. {missing[:3]}")
    if extra:
        raise BundleError(f"weights hold {len(extra)} tensor(s) the architecture does not use, e.g. {extra[:3]}")
    bad = [k for k, shape in expected.items() if tuple(found[k].shape) != tuple(shape)]
    if bad:
        k = bad[0]
        raise BundleError(f"tensor {k} has shape {tuple(found[k].shape)}, the architecture needs {tuple(expected[k])}")
    nonfinite = [k for k, t in found.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if nonfinite:
        raise BundleError(f"tensor {nonfinite[0]} holds non-finite values")


def _member_tensors(members: list[nn.Module], *, float16: bool) -> dict[str, torch.Tensor]:
    out = {}
    for m, member in enumerate(members):
        for k, v in member.state_dict().items():
            v = v.detach().to("cpu")
            if float16 and v.is_floating_point():
                v = v.to(torch.float16)
            out[f"member{m}.{k}"] = v.contiguous().clone()
    return out


def _fill(members: list[nn.Module], tensors: dict[str, torch.Tensor]) -> list[nn.Module]:
    for m, member in enumerate(members):
        prefix = f"member{m}."
        state = {k[len(prefix):]: (v.float() if v.is_floating_point() else v)
                 for k, v in tensors.items() if k.startswith(prefix)}
        member.load_state_dict(state, strict=True)
    done = []
    for member in members:
        member = merge_member(member)  # e.g. LoRA factors are stored; inference uses W + (alpha/r) B A
        member.eval()
        for p in member.parameters():
            p.requires_grad_(False)
        done.append(member)
    return done


def _max_change_per_label(a: list[nn.Module], b: list[nn.Module], *, flux: np.ndarray, stds: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(np.ascontiguousarray(flux, dtype=np.float32))
    with torch.inference_mode():
        pa = torch.stack([m.eval()(x) for m in a]).mean(0).double().numpy()
        pb = torch.stack([m.eval()(x) for m in b]).mean(0).double().numpy()
    return np.abs(pa - pb).max(axis=0) * stds


def save_bundle(path: str | os.PathLike, *, members: list[nn.Module], config: MLPConfig, heads: str,
                labels: list[LabelSpec], grid, preprocess, provenance: dict, finetune: dict | None = None,
                name: str | None = None, float16: bool = False, check_flux: np.ndarray | None = None,
                float16_tolerance: float = FLOAT16_TOLERANCE_DEX, overwrite: bool = False,
                extra: dict | None = None) -> Bundle:
    """Write an ensemble as a bundle folder and return it, loaded back and verified.

    Parameters
    ----------
    path : path-like
        The bundle folder (created; refused if it holds a bundle and ``overwrite`` is false).
    members : list of nn.Module
        Ensemble members, each mapping (N, n_in) to (N, L) scaled labels, with the structure that
        ``config``, ``heads`` and ``finetune`` describe (adapter heads and unmerged LoRA factors
        included).
    config, heads, finetune
        Architecture (see :func:`architecture_dict`).
    labels : list of LabelSpec
        In output order.
    grid, preprocess : dict or objects with ``.to_dict()``
        ``ModelGrid`` and ``PreprocessSettings`` the inputs are made with; stored as given.
        ``grid["npix"]`` must equal ``config.n_in``.
    provenance : dict
        From :func:`make_provenance`.
    float16 : bool
        Store floating tensors as float16 (half the size). Needs ``check_flux`` (a few normalised
        spectra): refused if any prediction moves by more than ``float16_tolerance`` dex (default
        1e-3; the measured largest change is recorded in the manifest).
    extra : dict, optional
        More manifest entries (e.g. ``{"uncertainty": {...}}``, a training summary).
    """
    path = pathlib.Path(path)
    grid_d, pre_d = as_json_dict(grid, "grid"), as_json_dict(preprocess, "preprocess settings")
    if "npix" not in grid_d:
        raise ConfigError(f"grid dict has no 'npix' entry: {sorted(grid_d)}")
    if int(grid_d["npix"]) != config.n_in:
        raise ConfigError(f"network input ({config.n_in} px) does not match the grid ({grid_d['npix']} px)")
    if not members:
        raise ConfigError("a bundle needs at least one ensemble member")
    names = [lab.name for lab in labels]
    if len(set(names)) != len(names) or not names:
        raise ConfigError(f"label names must be unique and non-empty, got {names}")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "name": name or path.name,
        "architecture": architecture_dict(config=config, heads=heads, finetune=finetune),
        "labels": [lab.to_dict() for lab in labels],
        "grid": grid_d,
        "preprocess": pre_d,
        "ensemble_size": len(members),
        "weights": {},
        "provenance": provenance,
    }
    for lab in labels:  # same checks as on load, before anything is written
        LabelSpec.from_dict(lab.to_dict())
    if extra:
        clash = set(extra) & set(manifest)
        if clash:
            raise ConfigError(f"extra manifest entries clash with reserved keys: {sorted(clash)}")
        manifest.update(as_json_dict(extra, "extra manifest entries"))
    # The members must fill exactly the structure a loader will rebuild from this manifest.
    _check_tensors(_member_tensors(members, float16=False), _build_structure(manifest))

    tensors = _member_tensors(members, float16=float16)
    if float16:
        if check_flux is None:
            raise ConfigError(f"float16 storage needs check_flux (a few spectra) to verify predictions stay within "
                              f"{float16_tolerance:g} dex")
        ref = _fill(_build_structure(manifest), _member_tensors(members, float16=False))
        half = _fill(_build_structure(manifest), tensors)
        stds = np.array([lab.std for lab in labels])
        change = _max_change_per_label(ref, half, flux=check_flux, stds=stds)
        means = np.array([lab.mean for lab in labels])
        # Labels not in dex (TEFF in K) are compared as log10 changes around the label mean.
        change_dex = np.array([c if lab.unit == "dex" else c / (abs(mu) * math.log(10)) for c, lab, mu in
                               zip(change, labels, means)])
        if np.any(change_dex > float16_tolerance):
            worst = int(np.argmax(change_dex))
            raise BundleError(f"float16 storage would move {names[worst]} by {change_dex[worst]:.2g} dex "
                              f"(> {float16_tolerance:g}); store float32 instead")
        manifest["weights"]["float16_max_change_dex"] = {n: float(c) for n, c in zip(names, change_dex)}

    # one metadata entry: safetensors writes the metadata map in arbitrary order, so two entries
    # would make the same weights hash differently from one save to the next
    blob = _st_save(tensors, metadata={"format": FORMAT})
    manifest["weights"] = {"file": WEIGHTS_NAME, "sha256": hashlib.sha256(blob).hexdigest(),
                           "dtype": "float16" if float16 else "float32", "n_tensors": len(tensors),
                           "nbytes": len(blob), **manifest["weights"]}

    if (path / MANIFEST_NAME).exists() and not overwrite:
        raise BundleError(f"{path} already holds a bundle (use overwrite to replace it)")
    write_bundle_files(path, {WEIGHTS_NAME: blob, MANIFEST_NAME: (json.dumps(manifest, indent=2) + "\n").encode()})
    return load_bundle(path)


def load_bundle(path_or_name: str | os.PathLike, *, grid=None, preprocess=None) -> Bundle:
    """Load and verify a bundle.

    Parameters
    ----------
    path_or_name : str or path-like
        A bundle folder, or the name of a bundled model.
    grid, preprocess : dict or object with ``.to_dict()``, optional
        When given, the bundle is refused unless it was trained for exactly these.

    Raises
    ------
    BundleError
        Missing files, unreadable or unknown-version manifest, weights whose sha256 differs from
        the manifest's, missing/extra/misshapen tensors, a malformed ``calibration`` entry
        (:func:`catalog_tool.models.calibration.check_calibration`), or a grid/preprocessing mismatch.
    """
    folder = find_bundle(path_or_name)
    manifest = read_manifest(folder)
    mpath, wpath = folder / MANIFEST_NAME, folder / WEIGHTS_NAME
    arch = manifest.get("architecture")
    if manifest.get("kind") == "encoder" or (isinstance(arch, dict) and arch.get("kind") == "embedding-mlp"):
        # Encoder and embedding-MLP bundles (docs/encoder.md) are verified by their own module.
        return load_embedding_bundle(folder, manifest, grid=grid, preprocess=preprocess)
    missing = [k for k in _REQUIRED_KEYS if k not in manifest]
    if missing:
        raise BundleError(f"{mpath} lacks the entries {missing}")
    for key, kind in (("labels", list), ("grid", dict), ("preprocess", dict), ("weights", dict),
                      ("architecture", dict), ("provenance", dict)):
        if not isinstance(manifest[key], kind):
            raise BundleError(f"{mpath}: entry {key!r} must be a {kind.__name__}, got {type(manifest[key]).__name__}")
    if not manifest["labels"]:
        raise BundleError(f"{mpath} lists no labels")
    for d in manifest["labels"]:
        LabelSpec.from_dict(d)
    check_calibration(manifest, str(mpath))
    try:
        n_in = int(manifest["architecture"]["mlp"]["n_in"])
        npix = int(manifest["grid"]["npix"])
    except (KeyError, TypeError, ValueError):
        raise BundleError(f"{mpath} does not give the network input size and the grid's npix") from None
    if n_in != npix:
        raise BundleError(f"{folder}: network input ({n_in} px) does not match its grid ({npix} px)")
    for asked, key, what in ((grid, "grid", "model grid"), (preprocess, "preprocess", "preprocessing settings")):
        if asked is not None:
            diffs = differences(as_json_dict(asked, what), manifest[key])
            if diffs:
                raise BundleError(f"bundle {manifest['name']} was made for another {what}: " + "; ".join(diffs))

    blob = wpath.read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != manifest["weights"].get("sha256"):
        raise BundleError(f"{wpath} does not match the sha256 in its manifest (changed or corrupted weights)")
    try:
        tensors = _st_load(blob)
    except Exception as exc:  # safetensors raises its own untyped errors on a malformed header
        raise BundleError(f"{wpath} is not a readable safetensors file ({exc})") from None
    members = _build_structure(manifest)
    _check_tensors(tensors, members)
    return Bundle(manifest=manifest, members=_fill(members, tensors), path=str(folder))
