"""Damaged copies of simulated DESI coadds and LAMOST spectra, for the fuzz tests.

Every case is a function of the source file and a seeded generator only. Each damaged file gets a
name of its own (``coadd-main-bright-PIX-CASE.fits`` with its ``redrock-...-CASE.fits``; LAMOST
``spec-CASE.fits``) in a folder of its own, so every VAC row can be traced back to its case by
``SOURCE``, and ``expect`` says what stxcat must do with it: ``"error"`` (the file in the ERRORS
table) or ``"rows"`` (one row per FIBERMAP target, flagged as the case's ``check`` asserts).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field

import fitsio
import numpy as np

#: FITS structure cards that fitsio writes itself (not copied when an HDU is rewritten).
_STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "EXTEND", "XTENSION", "PCOUNT", "GCOUNT", "TFIELDS", "TTYPE",
               "TFORM", "TUNIT", "TDIM", "TNULL", "TSCAL", "TZERO", "EXTNAME", "CHECKSUM", "DATASUM",
               "BZERO", "BSCALE", "COMMENT", "HISTORY", "ZIMAGE", "ZBITPIX")


@dataclass
class Case:
    """One damaged file: what was done to it and what stxcat must make of it."""

    name: str
    path: str
    expect: str                      # "error" or "rows"
    targets: int = 0                 # FIBERMAP rows that are targets (the rows it must give)
    check: Callable | None = None    # check(rows of this file in the VAC) for "rows" cases
    note: str = ""
    extra: dict = field(default_factory=dict)


def _cards(header) -> list[dict]:
    out = []
    for rec in header.records():
        key = rec["name"].upper()
        if not key or any(key.startswith(s) for s in _STRUCTURAL):
            continue
        out.append({"name": key, "value": rec["value"], "comment": rec.get("comment", "")})
    return out


def read_hdus(path: str) -> list[tuple[str, object, list]]:
    """(EXTNAME, data or None, header cards) of every HDU."""
    hdus = []
    with fitsio.FITS(path) as f:
        for h in f:
            has_data = h.get_exttype() != "IMAGE_HDU" or bool(h.get_dims())
            hdus.append((h.get_extname(), h.read() if has_data else None, _cards(h.read_header())))
    return hdus


def write_hdus(path: str, hdus) -> None:
    if os.path.exists(path):
        os.remove(path)
    with fitsio.FITS(path, "rw", clobber=True) as f:
        for i, (name, data, cards) in enumerate(hdus):
            if i == 0:
                f.write(data, header=cards)
            else:
                f.write(data, extname=name, header=cards)


def edit(path: str, **changes) -> None:
    """Rewrite ``path`` with HDUs replaced (``NAME=fn(data) -> data``) or dropped (``NAME=None``)."""
    hdus = []
    for name, data, cards in read_hdus(path):
        if name in changes:
            fn = changes[name]
            if fn is None:
                continue
            data = fn(data)
        hdus.append((name, data, cards))
    write_hdus(path, hdus)


def hdu_ends(path: str) -> list[tuple[str, int, int]]:
    """(EXTNAME, header start, data end) of every HDU, in file order."""
    with fitsio.FITS(path) as f:
        return [(h.get_extname() or "PRIMARY", h.get_offsets()["header_start"], h.get_offsets()["data_end"])
                for h in f]


def truncate(path: str, size: int) -> None:
    with open(path, "r+b") as fh:
        fh.truncate(size)


# ---------------------------------------------------------------------------------------------
# DESI

def _desi_copy(src: str, root: str, case: str) -> str:
    """Copy a coadd and its redrock file into ROOT/CASE/ under names carrying the case."""
    folder = os.path.join(root, case)
    os.makedirs(folder)
    stem = os.path.basename(src)[len("coadd-"):-len(".fits")]
    dst = os.path.join(folder, f"coadd-{stem}-{case}.fits")
    shutil.copyfile(src, dst)
    shutil.copyfile(os.path.join(os.path.dirname(src), f"redrock-{stem}.fits"),
                    os.path.join(folder, f"redrock-{stem}-{case}.fits"))
    return dst


def _fits_block(n: int) -> int:
    return -(-n // 2880) * 2880


def desi_cases(src: str, root: str, rng: np.random.Generator) -> list[Case]:
    """Damaged copies of the coadd ``src`` (from :func:`catalog_tool.sim.desi.simulate_desi`)."""
    from catalog_tool.io.desi import read_coadd
    from catalog_tool.select import is_target
    from catalog_tool.vac.flags import FLAG_BITS

    bit = {f.name: f.value for f in FLAG_BITS}
    meta = read_coadd(src, arms=()).meta
    target = is_target(meta)
    ntarget = int(target.sum())
    trows = np.flatnonzero(target)
    nrows = len(target)
    cases: list[Case] = []

    def add(name, expect, note, damage=None, check=None, targets=ntarget):
        path = _desi_copy(src, root, name)
        if damage is not None:
            damage(path)
        cases.append(Case(name, path, expect, targets if expect == "rows" else 0, check, note))

    # --- structure: cut at every HDU boundary and inside every HDU, each HDU removed
    ends = hdu_ends(src)
    names = [n for n, _, _ in ends]
    optional = {"EXP_FIBERMAP", "SCORES"}   # not read: the file is whole without them
    for i, (name, start, end) in enumerate(ends[:-1]):
        rest = set(names[i + 1:])
        add(f"cut-after-{name}", "rows" if rest <= optional else "error",
            f"file ends after HDU {name}", lambda p, e=_fits_block(end): truncate(p, e))
    for name, start, end in ends:
        mid = start + max(2880, (end - start) // 2)   # inside the data (or the header of a tiny HDU)
        mid = min(mid, end - 1)
        add(f"cut-inside-{name}", "error", f"file cut inside HDU {name}", lambda p, m=mid: truncate(p, m))
    for name in names[1:]:
        add(f"no-{name}", "rows" if name in optional else "error", f"HDU {name} removed",
            lambda p, n=name: edit(p, **{n: None}))
    add("no-arms", "error", "B/R/Z arm HDUs removed, FIBERMAP kept",
        lambda p: edit(p, **{n: None for n in names if n[:2] in ("B_", "R_", "Z_")}))

    # --- arrays: NaN / inf / negative values, wrong lengths, masks
    star_rows = rng.choice(trows, size=4, replace=False)

    def set_rows(value, ext):
        def fn(a):
            a = a.copy()
            a[star_rows] = value
            return a
        return lambda p: edit(p, **{ext: fn})

    def not_estimated(rows):
        sel = np.isin(rows["SOURCE_ROW"], star_rows)
        assert np.all(np.isnan(rows["FEH"][sel])), "damaged spectra must not be estimated"
        assert np.all(rows["FLAG_BAD"][sel])

    add("nan-flux", "rows", "B_FLUX NaN on 4 rows", set_rows(np.nan, "B_FLUX"), not_estimated)
    add("inf-flux", "rows", "B_FLUX +inf on 4 rows", set_rows(np.inf, "B_FLUX"), not_estimated)
    add("nan-ivar", "rows", "B_IVAR NaN on 4 rows", set_rows(np.nan, "B_IVAR"), not_estimated)
    add("neg-ivar", "rows", "B_IVAR negative on 4 rows", set_rows(-1.0, "B_IVAR"), not_estimated)
    add("masked", "rows", "B_MASK all set on 4 rows", set_rows(1, "B_MASK"), not_estimated)
    def none_estimated(rows):
        assert not np.any(np.isfinite(rows["FEH"]))
        _all_bad_or_not_star(rows)

    add("all-nan-flux", "rows", "every B_FLUX value NaN",
        lambda p: edit(p, B_FLUX=lambda a: np.full_like(a, np.nan)), none_estimated)

    def huge(rows):
        est = np.isfinite(rows["FEH"])
        # no estimate from an absurd flux; any row not estimated says why
        assert not est.any() or np.isfinite(rows["FEH_ERR"][est]).all()
        _all_bad_or_not_star(rows)
    add("huge-flux", "rows", "B_FLUX x 1e37", lambda p: edit(p, B_FLUX=_times(1e37)), huge)
    add("short-flux", "error", "B_FLUX one row short", lambda p: edit(p, B_FLUX=lambda a: a[:-1]))
    add("short-wave", "error", "B_WAVELENGTH one pixel short", lambda p: edit(p, B_WAVELENGTH=lambda a: a[:-1]))
    add("reversed-wave", "error", "B_WAVELENGTH reversed", lambda p: edit(p, B_WAVELENGTH=lambda a: a[::-1]))
    add("wave-x10", "error", "B_WAVELENGTH x 10", lambda p: edit(p, B_WAVELENGTH=lambda a: a * 10))
    add("wave-nan", "error", "B_WAVELENGTH with a NaN",
        lambda p: edit(p, B_WAVELENGTH=lambda a: np.where(np.arange(a.size) == 7, np.nan, a)))

    # --- FIBERMAP: coordinates, duplicate ids, empty table
    bad_pos = rng.choice(trows, size=3, replace=False)

    def fibermap(fn):
        def apply(a):
            a = a.copy()
            fn(a)
            return a
        return lambda p: edit(p, FIBERMAP=apply)

    def coords_flagged(rows):
        sel = np.isin(rows["SOURCE_ROW"], bad_pos)
        assert np.all(rows["FLAGS"][sel] & bit["BAD_COORDS"]) and np.all(rows["HEALPIX"][sel] == -1)
        assert not np.any(rows["FLAGS"][~sel] & bit["BAD_COORDS"])

    add("dec-200", "rows", "TARGET_DEC = 200 on 3 rows",
        fibermap(lambda a: a["TARGET_DEC"].__setitem__(bad_pos, 200.0)), coords_flagged)
    add("nan-radec", "rows", "TARGET_RA/DEC NaN on 3 rows",
        fibermap(lambda a: (a["TARGET_RA"].__setitem__(bad_pos, np.nan),
                            a["TARGET_DEC"].__setitem__(bad_pos, np.nan))), coords_flagged)
    add("inf-dec", "rows", "TARGET_DEC -inf on 3 rows",
        fibermap(lambda a: a["TARGET_DEC"].__setitem__(bad_pos, -np.inf)), coords_flagged)
    dup = rng.choice(trows, size=3, replace=False)

    def dup_flagged(rows):
        sel = np.isin(rows["SOURCE_ROW"], dup)
        assert np.all(rows["FLAGS"][sel] & bit["DUPLICATE_ID"]) and np.all(rows["FLAG_BAD"][sel])
        assert not np.any(rows["FLAGS"][~sel] & bit["DUPLICATE_ID"])
        assert len(np.unique(rows["TARGETID"][sel])) == 1

    add("dup-ids", "rows", "3 target rows share one TARGETID",
        fibermap(lambda a: a["TARGETID"].__setitem__(dup[1:], a["TARGETID"][dup[0]])), dup_flagged)
    add("empty-fibermap", "error", "FIBERMAP with no rows", lambda p: edit(p, FIBERMAP=lambda a: a[:0]))

    # --- the redrock companion
    def no_redrock(rows):
        assert np.all(rows["FLAGS"] & bit["NO_REDROCK"]) and np.all(np.isnan(rows["Z"]))

    add("no-redrock", "rows", "redrock file missing",
        lambda p: os.remove(p.replace("coadd-", "redrock-")), no_redrock)
    add("cut-redrock", "rows", "redrock file cut in half (itself in ERRORS: a damaged FITS file)",
        lambda p: truncate(p.replace("coadd-", "redrock-"), os.path.getsize(p.replace("coadd-", "redrock-")) // 2),
        no_redrock)
    cases[-1].extra["errors"] = [cases[-1].path.replace("coadd-", "redrock-")]
    assert len({c.name for c in cases}) == len(cases) and nrows > ntarget > 0
    return cases


def _times(factor: float):
    """``a * factor`` in ``a``'s dtype; float32 overflows to inf where it must, silently."""
    def fn(a):
        with np.errstate(over="ignore"):
            return (a * factor).astype(a.dtype)
    return fn


def _all_bad_or_not_star(rows) -> None:
    """Every row without an estimate says why: FLAG_BAD."""
    est = np.isfinite(rows["FEH"])
    assert np.all(rows["FLAG_BAD"][~est]), "a row without an estimate must be FLAG_BAD"


# ---------------------------------------------------------------------------------------------
# LAMOST

def _lamost_copy(src: str, root: str, case: str) -> str:
    folder = os.path.join(root, case)
    os.makedirs(folder)
    dst = os.path.join(folder, f"spec-{case}.fits")
    shutil.copyfile(src, dst)
    return dst


def _set_header(path: str, **keys) -> None:
    with fitsio.FITS(path, "rw") as f:
        for k, v in keys.items():
            f[0].write_key(k, v)


def lamost_cases(image_src: str, table_src: str, root: str) -> list[Case]:
    """Damaged copies of a LAMOST image-layout (DR7) file and a table-layout (DR10) file."""
    from catalog_tool.vac.flags import FLAG_BITS

    bit = {f.name: f.value for f in FLAG_BITS}
    cases: list[Case] = []

    def add(name, src, expect, note, damage=None, check=None):
        path = _lamost_copy(src, root, name)
        if damage is not None:
            damage(path)
        cases.append(Case(name, path, expect, 1 if expect == "rows" else 0, check, note))

    def row_edit(row, fn):
        def apply(a):
            a = a.copy()
            a[row] = fn(a[row])
            return a
        return apply

    def not_estimated(rows):
        assert np.all(np.isnan(rows["FEH"])) and np.all(rows["FLAG_BAD"])

    def coords_flagged(rows):
        assert np.all(rows["FLAGS"] & bit["BAD_COORDS"]) and np.all(rows["HEALPIX"] == -1)

    for layout, src in (("img", image_src), ("tab", table_src)):
        ends = hdu_ends(src)
        for i, (name, start, end) in enumerate(ends[:-1]):
            add(f"{layout}-cut-after-{name}", src, "error", f"cut after HDU {name}",
                lambda p, e=_fits_block(end): truncate(p, e))
        for name, start, end in ends:
            add(f"{layout}-cut-inside-{name}", src, "error", f"cut inside HDU {name}",
                lambda p, m=min(start + max(2880, (end - start) // 2), end - 1): truncate(p, m))
        add(f"{layout}-dec-200", src, "rows", "header DEC = 200", lambda p: _set_header(p, DEC=200.0),
            coords_flagged)
        add(f"{layout}-ra-nan", src, "rows", "header RA = 'NaN'", lambda p: _set_header(p, RA="NaN"),
            coords_flagged)
    add("tab-empty", table_src, "error", "COADD table without rows", lambda p: edit(p, COADD=lambda a: a[:0]))
    image = {"nan-flux": lambda a: row_edit(0, lambda r: np.full_like(r, np.nan))(a),
             "inf-ivar": lambda a: row_edit(1, lambda r: np.full_like(r, np.inf))(a),
             "neg-ivar": lambda a: row_edit(1, lambda r: -np.abs(r) - 1)(a),
             "huge-flux": lambda a: row_edit(0, _times(1e37))(a)}
    first = read_hdus(image_src)[0][0]
    for name, fn in image.items():
        add(f"img-{name}", image_src, "rows", f"image {name}", lambda p, f=fn: edit(p, **{first: f}),
            not_estimated)
    add("img-reversed-wave", image_src, "error", "wavelength row reversed (and COEFF0 useless)",
        lambda p: (edit(p, **{first: row_edit(2, lambda r: r[::-1])}), _set_header(p, COEFF0=9.0)))
    add("img-wave-x10", image_src, "error", "wavelength row x 10 (and COEFF0 useless)",
        lambda p: (edit(p, **{first: row_edit(2, lambda r: r * 10)}), _set_header(p, COEFF0=9.0)))
    add("img-short", image_src, "error", "image of 3 rows", lambda p: edit(p, **{first: lambda a: a[:3]}))

    def table(fn):
        def apply(a):
            a = a.copy()
            fn(a)
            return a
        return lambda p: edit(p, COADD=apply)

    add("tab-nan-flux", table_src, "rows", "FLUX NaN", table(lambda a: a["FLUX"].__setitem__(0, np.nan)),
        not_estimated)
    add("tab-neg-ivar", table_src, "rows", "IVAR negative", table(lambda a: a["IVAR"].__setitem__(0, -1.0)),
        not_estimated)
    add("tab-reversed-wave", table_src, "error", "WAVELENGTH reversed",
        table(lambda a: a["WAVELENGTH"].__setitem__(0, a["WAVELENGTH"][0][::-1])))
    add("tab-wave-x10", table_src, "error", "WAVELENGTH x 10",
        table(lambda a: a["WAVELENGTH"].__setitem__(0, a["WAVELENGTH"][0] * 10)))
    add("tab-wave-short", table_src, "error", "WAVELENGTH shorter than FLUX",
        lambda p: edit(p, COADD=lambda a: _short_column(a, "WAVELENGTH")))
    # two files with the same OBSID: both kept (each its own file), PRIMARY on one of them
    add("dup-obsid-a", table_src, "rows", "OBSID shared with dup-obsid-b")
    add("dup-obsid-b", image_src, "rows", "OBSID shared with dup-obsid-a",
        lambda p: _set_header(p, OBSID=int(fitsio.read_header(table_src)["OBSID"])))
    assert len({c.name for c in cases}) == len(cases)
    return cases


def _short_column(a: np.ndarray, name: str) -> np.ndarray:
    """The one-row table ``a`` with column ``name`` 10 elements shorter than the others."""
    dt = [(n, a.dtype[n].base, (a.dtype[n].shape[0] - 10,) if n == name else a.dtype[n].shape)
          for n in a.dtype.names]
    out = np.zeros(len(a), dtype=dt)
    for n in a.dtype.names:
        out[n] = a[n][:, :-10] if n == name else a[n]
    return out
