"""Helpers shared by the pipeline tests (run, read and compare VACs, call the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

LABELS = ["FEH", "ALPHAFE", "TEFF", "LOGG"]


def run_annotate(inputs, out, model, **options):
    """Library call of a whole annotate run (no progress bars); returns the RunSummary."""
    from catalog_tool.config import build_config
    from catalog_tool.pipeline.run import annotate

    options.setdefault("progress", False)
    cfg = build_config(inputs=tuple(os.fspath(i) for i in inputs), out=os.fspath(out), model=model, **options)
    return annotate(cfg)


def read_table(path, ext="STELLAR_PARAMS"):
    import fitsio

    return fitsio.read(os.fspath(path), ext=ext)


def assert_same_rows(a, b):
    """Two VAC tables equal row for row in every column (NaN equal to NaN)."""
    assert a.dtype.names == b.dtype.names
    assert len(a) == len(b)
    for name in a.dtype.names:
        x, y = a[name], b[name]
        if x.dtype.kind == "f":
            assert np.array_equal(x, y, equal_nan=True), name
        else:
            assert np.array_equal(x, y), name


def stxcat(*args, cwd=None, timeout=120, **kwargs) -> subprocess.CompletedProcess:
    """Run the ``stxcat`` command line in a subprocess (output captured as text)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "catalog_tool.cli", *map(os.fspath, args)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, env=env, **kwargs)
