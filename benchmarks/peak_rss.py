"""A child process's own peak resident memory, measured inside it.

``os.wait4``'s ``ru_maxrss`` and ``RUSAGE_SELF`` in a freshly started child are *not* the child's
own peak on Linux: the kernel carries the parent's high-water mark over fork + exec, so a parent
that once held 1.4 GB makes every child it starts report at least 1.4 GB (measured: a 14 MB child
of a parent that had touched 1.6 GB reported 1.6 GB). ``VmHWM`` in ``/proc/self/status`` belongs
to the process's own address space and starts afresh at exec.

Two ways to use it:

* inside a child script: ``peak_mib()``;
* a ``python -c`` child: :func:`python_c` builds its command line so that it can import this;
* around a module run as a command: ``python benchmarks/peak_rss.py OUT.json MODULE ARGS...`` runs
  ``python -m MODULE ARGS...`` in this process and writes ``{"peak_mib": ...}`` to ``OUT.json`` at
  exit (also when the module exits with a non-zero status); :func:`wrap` builds that command line.
"""

from __future__ import annotations

import atexit
import json
import os
import pathlib
import resource
import runpy
import sys


def peak_mib() -> float:
    """This process's peak resident memory in MiB (``VmHWM``; ``ru_maxrss`` where there is no /proc)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def wrap(out_json: str | os.PathLike, module: str, args: list[str]) -> list[str]:
    """The command line that runs ``python -m module *args`` and records its peak in ``out_json``."""
    return [sys.executable, os.fspath(pathlib.Path(__file__).resolve()), os.fspath(out_json), module, *args]


def python_c(code: str, *args: str) -> list[str]:
    """The command line of ``python -c code args...`` in which ``from peak_rss import peak_mib`` works."""
    here = os.fspath(pathlib.Path(__file__).resolve().parent)
    return [sys.executable, "-c", f"import sys\nsys.path.insert(0, {here!r})\n{code}", *args]


def read(out_json: str | os.PathLike) -> float:
    """The peak (MiB) a wrapped run recorded."""
    with open(out_json) as fh:
        return float(json.load(fh)["peak_mib"])


def _main() -> None:
    out, module, *args = sys.argv[1:]

    def record() -> None:
        with open(out, "w") as fh:
            json.dump({"peak_mib": peak_mib()}, fh)

    atexit.register(record)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    _main()
