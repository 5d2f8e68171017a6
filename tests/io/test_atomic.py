"""io/atomic: the one atomic-write helper every writer uses."""

from __future__ import annotations

import gzip
import os
import stat
import threading

import pytest

from catalog_tool.io.atomic import OutputExistsError, atomic_path, atomic_write_bytes, atomic_write_text


def test_written_under_the_final_name_only_when_complete(tmp_path):
    dest = tmp_path / "sub" / "out.txt"
    with atomic_path(dest) as tmp:
        assert not dest.exists() and os.path.dirname(tmp) == os.fspath(dest.parent)
        with open(tmp, "w") as fh:
            fh.write("done")
    assert dest.read_text() == "done"
    assert os.listdir(dest.parent) == ["out.txt"]  # no temporary left beside it


def test_an_error_leaves_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "out.txt"
    dest.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            with open(tmp, "w") as fh:
                fh.write("half")
            raise RuntimeError("killed")
    assert dest.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.txt"]


def test_refuses_to_replace_unless_asked(tmp_path):
    dest = tmp_path / "out.txt"
    atomic_write_text(dest, "one")
    with pytest.raises(OutputExistsError, match="exists"):
        atomic_write_text(dest, "two", overwrite=False)
    atomic_write_text(dest, "two")
    assert dest.read_text() == "two"


def test_permissions_follow_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "shared.bin", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "shared.bin").st_mode) == 0o644


def test_temporary_names_are_unique_across_threads(tmp_path):
    names, lock = [], threading.Lock()

    def write(i):
        with atomic_path(tmp_path / "same.txt") as tmp:
            with lock:
                names.append(tmp)
            with open(tmp, "w") as fh:
                fh.write(str(i))

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == 8
    assert (tmp_path / "same.txt").read_text() in {str(i) for i in range(8)}
    assert os.listdir(tmp_path) == ["same.txt"]


def test_gzip_is_byte_reproducible(tmp_path):
    digests = []
    for name in ("a", "b"):
        dest = tmp_path / name / "spec.fits.gz"
        with atomic_path(dest, compress=True) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"payload" * 100)
        assert gzip.decompress(dest.read_bytes()) == b"payload" * 100
        digests.append(dest.read_bytes())
        assert os.listdir(dest.parent) == ["spec.fits.gz"]
    assert digests[0] == digests[1]  # no time stamp, no temporary name in the gzip header
