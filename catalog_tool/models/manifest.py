"""What every model bundle shares, whatever its architecture: the folder layout and its format
version, the manifest checks, the loaded :class:`Bundle` and its :class:`LabelSpec` s, and where
bundles are found (a folder, or the name of a bundled one).

:mod:`catalog_tool.models.bundle` (spectrum MLPs, and the one ``load_bundle`` for every kind) and
:mod:`catalog_tool.models.encoder_bundle` (spectral encoders and the MLPs on their embeddings) both
build on this module; neither imports anything above it.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import pathlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from catalog_tool import __version__
from catalog_tool.errors import BundleError, ConfigError
from catalog_tool.io.atomic import atomic_write_bytes

if TYPE_CHECKING:
    from torch import nn

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "WEIGHTS_NAME",
    "LabelSpec",
    "Bundle",
    "as_json_dict",
    "differences",
    "read_manifest",
    "write_bundle_files",
    "find_bundle",
    "bundled_names",
    "bundled_root",
]

FORMAT = "stxcat-model-bundle"
#: Version of the bundle layout this code writes; loading refuses any other.
FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
WEIGHTS_NAME = "weights.safetensors"


@dataclass(frozen=True)
class LabelSpec:
    """One output label: name, unit, scaling (network output = (value - mean) / std), domain."""

    name: str
    unit: str
    mean: float
    std: float
    domain: tuple[float, float]

    def to_dict(self) -> dict:
        return {"name": self.name, "unit": self.unit, "mean": float(self.mean), "std": float(self.std),
                "domain": [float(self.domain[0]), float(self.domain[1])]}

    @classmethod
    def from_dict(cls, d: dict) -> "LabelSpec":
        try:
            spec = cls(name=str(d["name"]), unit=str(d["unit"]), mean=float(d["mean"]), std=float(d["std"]),
                       domain=(float(d["domain"][0]), float(d["domain"][1])))
        except (KeyError, TypeError, ValueError, IndexError, AttributeError) as exc:
            raise BundleError(f"label entry {d!r} is malformed ({exc.__class__.__name__}: {exc})") from None
        if not (math.isfinite(spec.mean) and math.isfinite(spec.std) and spec.std > 0):
            raise BundleError(f"label {spec.name} has an unusable scaling (mean={spec.mean}, std={spec.std})")
        if not spec.domain[0] <= spec.domain[1]:
            raise BundleError(f"label {spec.name} has an empty training domain {list(spec.domain)}")
        return spec


@dataclass
class Bundle:
    """A loaded, verified bundle: its manifest and its ensemble members (evaluation mode, frozen)."""

    manifest: dict
    members: list[nn.Module]
    path: str | None = None

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def labels(self) -> list[LabelSpec]:
        return [LabelSpec.from_dict(d) for d in self.manifest["labels"]]

    @property
    def label_names(self) -> list[str]:
        return [d["name"] for d in self.manifest["labels"]]

    @property
    def means(self) -> np.ndarray:
        return np.array([d["mean"] for d in self.manifest["labels"]], dtype=np.float64)

    @property
    def stds(self) -> np.ndarray:
        return np.array([d["std"] for d in self.manifest["labels"]], dtype=np.float64)

    @property
    def grid(self) -> dict:
        return self.manifest["grid"]

    @property
    def preprocess(self) -> dict:
        return self.manifest["preprocess"]

    @property
    def n_in(self) -> int:
        arch = self.manifest["architecture"]
        # Embedding bundles give the spectrum size at the top (their head's mlp.n_in is the encoder width).
        return int(arch["n_in"] if "n_in" in arch else arch["mlp"]["n_in"])

    @property
    def ensemble_size(self) -> int:
        return int(self.manifest["ensemble_size"])

    @property
    def sha256(self) -> str:
        return self.manifest["weights"]["sha256"]

    @property
    def method(self) -> str:
        return self.manifest["architecture"]["finetune"]["method"]


def as_json_dict(obj, what: str) -> dict:
    """Accept ``ModelGrid``/``PreprocessSettings`` objects (``.to_dict()``) or plain dicts."""
    if hasattr(obj, "to_dict"):
        obj = obj.to_dict()
    if not isinstance(obj, dict):
        raise ConfigError(f"{what} must be a dict or have .to_dict(), got {type(obj).__name__}")
    try:  # must survive JSON unchanged
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what} is not JSON-serialisable: {exc}") from None


def write_bundle_files(folder: str | os.PathLike, files: dict[str, bytes]) -> None:
    """Write a bundle's files into ``folder`` in the order given, each atomically.

    Weights first, manifest last: a crash never leaves a folder whose manifest verifies against
    half-written weights.
    """
    for fname, data in files.items():
        atomic_write_bytes(pathlib.Path(folder) / fname, data)


def bundled_root() -> pathlib.Path:
    """Folder of the bundles shipped inside the package (``catalog_tool/data/models``)."""
    return pathlib.Path(str(importlib.resources.files("catalog_tool"))) / "data" / "models"


def bundled_names() -> list[str]:
    """Names of the bundles shipped with the package."""
    root = bundled_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST_NAME).is_file())


def find_bundle(path_or_name: str | os.PathLike) -> pathlib.Path:
    """Folder of a bundle given as a path, or as the name of a bundled one."""
    p = pathlib.Path(path_or_name)
    if p.is_dir():
        return p
    s = os.fspath(path_or_name)
    if os.sep not in s and "/" not in s and s in bundled_names():
        return bundled_root() / s
    names = ", ".join(bundled_names()) or "none"
    raise BundleError(f"no model bundle folder at {s!r} and no bundled model of that name (bundled: {names})")


def differences(asked: dict, stored: dict) -> list[str]:
    """``key=stored in the bundle but asked asked`` for every key whose values differ (numbers to 1e-9)."""
    diffs = []
    for k in sorted(set(asked) | set(stored)):
        a, b = asked.get(k, "<absent>"), stored.get(k, "<absent>")
        same = (math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
                if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool)
                else a == b)
        if not same:
            diffs.append(f"{k}={b!r} in the bundle but {a!r} asked")
    return diffs


def read_manifest(folder: pathlib.Path) -> dict:
    """The manifest of bundle ``folder`` (any kind), after the checks every bundle shares: both files
    present, readable JSON, an stxcat manifest of a format version this stxcat reads."""
    mpath, wpath = folder / MANIFEST_NAME, folder / WEIGHTS_NAME
    for p in (mpath, wpath):
        if not p.is_file():
            raise BundleError(f"{folder} is not a model bundle: {p.name} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{mpath} is not readable JSON ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"{mpath} is not an stxcat model manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BundleError(f"{folder} has bundle format version {manifest.get('format_version')!r}; "
                          f"this stxcat ({__version__}) reads version {FORMAT_VERSION} only")
    return manifest
