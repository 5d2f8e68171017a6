"""A survey reader added to the registry alone is discovered, read and selected by the whole pipeline."""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil

import fitsio
import numpy as np

from catalog_tool.io import desi, readers
from catalog_tool.vac import flags as fl

from pipeline_helpers import read_table, run_annotate


def test_a_reader_added_to_the_registry_is_used_everywhere(tmp_path, monkeypatch, desi_release, tiny_bundle):
    """A made-up survey: DESI coadds marked TOYSURV = T in the primary header, whose stars are the
    even TARGETIDs, read all together. Registering its Reader (nothing else) is enough for
    discovery, the partitions' reading and the star selection of ``stxcat annotate``."""
    coadd = sorted(glob.glob(os.path.join(desi_release.out, "healpix", "**", "coadd-*.fits"), recursive=True))[0]
    rel = tmp_path / "toy"
    rel.mkdir()
    for src in (coadd, desi.find_redrock(coadd)):
        shutil.copy(src, rel / os.path.basename(src))
    with fitsio.FITS(os.fspath(rel / os.path.basename(coadd)), "rw") as f:
        f[0].write_key("TOYSURV", True)

    def sniff(fits):
        return ("read", None) if fits[0].read_header().get("TOYSURV") else None

    calls = []

    def read(paths, *, wave_range=None):
        calls.append((list(paths), wave_range))
        return desi.read_files(paths, wave_range=wave_range)

    toy = readers.Reader(kind="toy", scan=lambda p: dataclasses.replace(desi.scan_coadd(p), kind="toy"),
                         read=read, select_stars=lambda meta: np.asarray(meta["TARGETID"]) % 2 == 0,
                         sniff=sniff, one_file_per_batch=False)
    monkeypatch.setattr(readers, "READERS", (toy,) + readers.READERS)
    run_annotate([rel], tmp_path / "vac.fits", tiny_bundle, scheduler="synchronous")
    assert len(calls) == 1 and calls[0][1] is not None  # one group, with preprocessing's range
    vac = read_table(tmp_path / "vac.fits")
    even = vac["TARGETID"] % 2 == 0
    not_star = (vac["FLAGS"] & fl.FLAG_BITS[0].value) != 0
    assert fl.FLAG_BITS[0].name == "NOT_STAR"
    assert even.any() and (~even).any()
    np.testing.assert_array_equal(not_star, ~even)  # the toy reader's rule, not redrock's
    assert np.isfinite(vac["FEH"][even]).any() and np.isnan(vac["FEH"][~even]).all()
