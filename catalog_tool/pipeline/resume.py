"""Run state in the work directory: the plan, one part file and one done marker per partition.

Layout of ``work_dir``::

    plan.json                 the plan (partitions and their files), the model and settings
    parts/part-00012.fits     one VAC-format part file per finished partition
    parts/part-00012.done     its done marker (JSON: rows, errors, per-file ledger, sha256 of the part)
    stxcat.log                the run log
    .stxcat.lock              held (flock) by the run using the directory

A partition counts as done only when its marker exists and the part file it names has the recorded
checksum; a crash between writing the part and the marker leaves the partition to be redone.
Everything is written to a temporary name and renamed, so a killed run never leaves a half file
under a final name; the temporary files such a run leaves are removed by the next one
(:meth:`WorkDir.remove_stale_temps`).

One run at a time: :meth:`WorkDir.lock` takes an exclusive ``flock`` on ``.stxcat.lock`` for the
whole run, and a second run on the same directory is refused at once. The kernel drops the lock
when its process ends, however it ends, so a killed run never blocks the next one.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import shutil
import socket
from collections.abc import Iterator

from catalog_tool.errors import RunStateError
from catalog_tool.io.atomic import TEMP_SUFFIX, atomic_write_text

__all__ = ["WorkDir", "sha256_file", "LOCK_NAME"]

#: 2: done markers carry the per-file ledger (``files``) the merge checks the rows against.
PLAN_VERSION = 2
#: The lock file in a work dir (see :meth:`WorkDir.lock`).
LOCK_NAME = ".stxcat.lock"


def sha256_file(path: str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


class WorkDir:
    """The work directory of one annotate run."""

    def __init__(self, path: str):
        self.path = os.fspath(path)
        self.parts = os.path.join(self.path, "parts")
        self.plan_path = os.path.join(self.path, "plan.json")
        self.log_path = os.path.join(self.path, "stxcat.log")

    # -- setting up ---------------------------------------------------------------------------
    def is_empty(self) -> bool:
        return not os.path.exists(self.path) or not [n for n in os.listdir(self.path) if n != LOCK_NAME]

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the directory for one run (created if needed); refuse when another run holds it.

        Raises
        ------
        RunStateError
            Another process holds the lock (its pid, host and start time are in the message).
        """
        import fcntl

        os.makedirs(self.path, exist_ok=True)
        path = os.path.join(self.path, LOCK_NAME)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
                raise RunStateError(f"work dir {self.path} is in use by another stxcat annotate ({holder}): "
                                    f"wait for it to end, or give another --work-dir") from None
            except OSError:
                pass  # a file system without locks (some NFS mounts): run unguarded, as before
            else:
                now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now}\n".encode(), 0)
            yield
        finally:
            os.close(fd)  # releases the lock; the file stays (deleting it would race a waiting run)

    def remove_stale_temps(self, *others: str) -> int:
        """Remove temporary files left by a killed run: in ``parts/``, in the directory, and
        those of the files ``others`` (e.g. the VAC). Call it with :meth:`lock` held."""
        removed = 0
        targets = [(self.parts, None), (self.path, None)]
        targets += [(os.path.dirname(os.path.abspath(o)), os.path.basename(o)) for o in others]
        for folder, name in targets:
            if not os.path.isdir(folder):
                continue
            for entry in os.listdir(folder):
                if not (entry.startswith(".") and entry.endswith(TEMP_SUFFIX)):
                    continue
                if name is not None and not entry.startswith(f".{name}."):
                    continue
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, entry))
                    removed += 1
        return removed

    def prepare(self, plan: dict, *, resume: bool, overwrite: bool) -> set[int]:
        """Create or check the directory for ``plan``; return the indices of partitions done.

        Raises
        ------
        RunStateError
            The directory holds another run and neither resume nor overwrite was asked, or
            resume was asked and the plan or model changed.
        """
        if overwrite and os.path.exists(self.path):
            if not os.path.exists(self.plan_path) and not self.is_empty():
                raise RunStateError(
                    f"work dir {self.path} is not empty and holds no stxcat plan; refusing to delete it")
            for name in os.listdir(self.path):  # all but the lock this run holds
                if name != LOCK_NAME:
                    victim = os.path.join(self.path, name)
                    if os.path.isdir(victim) and not os.path.islink(victim):
                        shutil.rmtree(victim)
                    else:
                        os.remove(victim)
        if not self.is_empty():
            if not resume:
                raise RunStateError(
                    f"work dir {self.path} is not empty: pass --resume to continue that run "
                    f"or --overwrite to start over")
            old = self._read_plan()
            self._check_same(old, plan)
            return self.done_partitions()
        # (resume with nothing to resume starts fresh)
        os.makedirs(self.parts, exist_ok=True)
        atomic_write_text(self.plan_path, json.dumps({"version": PLAN_VERSION, **plan}, indent=1))
        return set()

    def _read_plan(self) -> dict:
        try:
            with open(self.plan_path) as fh:
                return json.load(fh)
        except FileNotFoundError:
            raise RunStateError(f"work dir {self.path} holds no plan.json; use --overwrite to start over") from None
        except json.JSONDecodeError as exc:
            raise RunStateError(f"{self.plan_path} is corrupt ({exc}); use --overwrite to start over") from None

    @staticmethod
    def _check_same(old: dict, new: dict) -> None:
        if old.get("version") != PLAN_VERSION:
            raise RunStateError("the work dir was made by another stxcat plan version; use --overwrite")
        if old.get("model", {}).get("sha256") != new.get("model", {}).get("sha256"):
            raise RunStateError(
                f"cannot resume: the model changed (work dir: {old.get('model', {}).get('name')} "
                f"{str(old.get('model', {}).get('sha256'))[:12]}, now: {new['model'].get('name')} "
                f"{str(new['model'].get('sha256'))[:12]}); use --overwrite to start over")
        if old.get("fingerprint") != new.get("fingerprint"):
            raise RunStateError(
                "cannot resume: the input files or partitioning changed since the run started; "
                "use --overwrite to start over")
        if old.get("settings") != new.get("settings"):
            changed = sorted(k for k in set(old.get("settings", {})) | set(new.get("settings", {}))
                             if old.get("settings", {}).get(k) != new.get("settings", {}).get(k))
            raise RunStateError(f"cannot resume: settings changed ({', '.join(changed)}); use --overwrite")

    # -- partitions ---------------------------------------------------------------------------
    def part_path(self, index: int) -> str:
        return os.path.join(self.parts, f"part-{index:05d}.fits")

    def marker_path(self, index: int) -> str:
        return os.path.join(self.parts, f"part-{index:05d}.done")

    def mark_done(self, index: int, info: dict) -> None:
        """Write the done marker of partition ``index`` (after its part file is in place)."""
        info = dict(info, sha256=sha256_file(self.part_path(index)))
        atomic_write_text(self.marker_path(index), json.dumps(info))

    def read_marker(self, index: int) -> dict:
        with open(self.marker_path(index)) as fh:
            return json.load(fh)

    def done_partitions(self) -> set[int]:
        """Indices whose marker exists and whose part file matches the marker's checksum."""
        done = set()
        if not os.path.isdir(self.parts):
            return done
        for name in os.listdir(self.parts):
            if not (name.startswith("part-") and name.endswith(".done")):
                continue
            index = int(name[5:10])
            try:
                info = self.read_marker(index)
                if os.path.exists(self.part_path(index)) and sha256_file(self.part_path(index)) == info["sha256"]:
                    done.add(index)
            except (OSError, ValueError, KeyError):
                continue  # a damaged marker: redo the partition
        return done
