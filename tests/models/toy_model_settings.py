"""Shapes of the toy model tests (a uniquely named module: test files import it directly, which a
``from conftest import ...`` cannot do safely when several conftest.py files are loaded)."""

NPIX = 200
HIDDEN = (48, 24, 12)
GRID = {"loglam0": 3.602, "dloglam": 1e-4, "npix": NPIX}
PREPROCESS = {"rest_frame": False, "lsf_match_R": None}
