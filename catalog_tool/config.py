"""One frozen, validated run configuration for ``stxcat annotate``.

Settings come, in increasing priority, from the defaults below, an optional TOML file
(``--config run.toml``, keys as the field names, in a ``[annotate]`` table or at the top level),
and the command line. The CLI passes only the options a user actually gave, so a default never
silently overrides the file. :func:`build_config` reports every problem at once.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field, fields

from catalog_tool.errors import ConfigError

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["AnnotateConfig", "build_config", "available_cpus", "SCHEDULERS", "DEVICES", "FORMATS"]

SCHEDULERS = ("threads", "processes", "synchronous")
DEVICES = ("auto", "cpu", "cuda")
FORMATS = ("fits", "parquet", "hats")


@dataclass(frozen=True)
class AnnotateConfig:
    """Everything one ``annotate`` run needs to know."""

    inputs: tuple = ()
    """Release trees, folders of LAMOST files, or single files."""
    out: str = ""
    """Path of the merged VAC to write: a FITS or Parquet file, or a HATS catalogue folder."""
    format: str = "fits"
    """``fits`` (the VAC), ``parquet`` (one file) or ``hats`` (a folder; needs the ``hats`` extra).
    With parquet/hats the FITS VAC is also kept, as ``vac.fits`` in the work dir."""
    model: str = "default"
    """Name of a bundled model or path of a bundle folder."""
    device: str = "auto"
    """``auto`` (CUDA when torch sees a GPU), ``cpu`` or ``cuda``."""
    batch_size: int = 2048
    """Spectra per forward pass; the device memory used grows with it."""
    scheduler: str = "threads"
    """``threads``, ``processes``, ``synchronous`` or a Dask scheduler address ``tcp://host:port``."""
    workers: int = 1
    """Partitions processed at once by the local schedulers (threads/processes)."""
    work_dir: str = ""
    """Run state (plan, part files, done markers, log); default ``<out>.work``."""
    resume: bool = False
    """Skip partitions already done in ``work_dir`` (the plan and model must be unchanged)."""
    overwrite: bool = False
    """Discard an existing ``work_dir`` and output and start over."""
    progress: bool = True
    """Show tqdm progress bars on stderr."""
    partition_size: int = 20000
    """Target number of spectra per partition (pixels are never split)."""
    strict: bool = False
    """Stop at the first input file that cannot be read instead of recording it and going on."""
    per_pixel: bool = False
    """Also write one VAC file per HEALPix pixel in the DESI layout beside the merged one."""
    threads: int = 0
    """Compute threads per worker: each takes chunks of spectra and preprocesses and infers them
    (torch and numpy's OpenBLAS run one thread inside each; see docs/pipeline.md). 0 = the CPUs this
    process may use, divided among the local ``workers`` (one per Dask worker process on a cluster)."""
    catalog: str = ""
    """A LAMOST survey catalogue (the LRS General Catalogue or a subset with its columns): the plan
    is built from its rows without opening the spectrum files (see docs/pipeline.md)."""
    command: str = ""
    """The command line, recorded as provenance."""
    extra: dict = field(default_factory=dict)
    """Free-form settings kept for provenance (not interpreted)."""

    @property
    def resolved_threads(self) -> int:
        """``threads``, with 0 resolved for this machine's local schedulers (see ``threads``)."""
        if self.threads:
            return self.threads
        workers = self.workers if self.scheduler in SCHEDULERS and self.scheduler != "synchronous" else 1
        return max(1, available_cpus() // max(1, workers))

    @property
    def resolved_work_dir(self) -> str:
        # a HATS folder given as OUT/ must not get its work dir inside itself (OUT/.work)
        return self.work_dir or (os.fspath(self.out).rstrip("/" + os.sep) + ".work")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["inputs"] = list(self.inputs)
        return d


def available_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # pragma: no cover - macOS, Windows
        return os.cpu_count() or 1


def _validate(cfg: AnnotateConfig) -> list[str]:
    problems = []
    if not cfg.inputs:
        problems.append("no input given")
    if not cfg.out:
        problems.append("--out is required")
    elif os.path.isdir(cfg.out) and cfg.format != "hats":
        problems.append(f"--out {cfg.out} is a directory; give a file name such as vac.fits")
    if cfg.format not in FORMATS:
        problems.append(f"format must be one of {', '.join(FORMATS)}, not {cfg.format!r}")
    elif cfg.per_pixel and cfg.format != "fits":
        problems.append("--per-pixel writes FITS files; it needs --format fits")
    if cfg.device not in DEVICES:
        problems.append(f"device must be one of {', '.join(DEVICES)}, not {cfg.device!r}")
    if cfg.scheduler not in SCHEDULERS and not cfg.scheduler.startswith(("tcp://", "tls://", "inproc://")):
        problems.append(f"scheduler must be one of {', '.join(SCHEDULERS)} or an address tcp://host:port, "
                        f"not {cfg.scheduler!r}")
    for name in ("batch_size", "workers", "partition_size", "threads"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "threads" else 1):
            problems.append(f"{name} must be a {'non-negative' if name == 'threads' else 'positive'} integer, "
                            f"not {value!r}")
    if cfg.catalog and not os.path.isfile(cfg.catalog):
        problems.append(f"--catalog {cfg.catalog} is not a file")
    if cfg.resume and cfg.overwrite:
        problems.append("--resume and --overwrite contradict each other; give one")
    return problems


def read_config_file(path: str) -> dict:
    """The settings in a TOML file (top level or its ``[annotate]`` table)."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    return data.get("annotate", data)


def build_config(*, file: str | None = None, **given) -> AnnotateConfig:
    """Defaults, then ``file``, then ``given`` (only options the user set; ``None`` means unset).

    Raises
    ------
    ConfigError
        Listing every problem found, one per line.
    """
    known = {f.name for f in fields(AnnotateConfig)}
    values: dict = {}
    problems = []
    if file:
        for key, value in read_config_file(file).items():
            key = key.replace("-", "_")
            if key not in known:
                problems.append(f"unknown setting {key!r} in {file}")
            else:
                values[key] = value
    for key, value in given.items():
        if key not in known:
            raise TypeError(f"unknown setting {key}")
        if value is not None:
            values[key] = value
    if "inputs" in values:
        values["inputs"] = tuple(values["inputs"])
    cfg = AnnotateConfig(**values)
    problems += _validate(cfg)
    if problems:
        raise ConfigError("invalid settings: " + "; ".join(problems))
    return cfg
