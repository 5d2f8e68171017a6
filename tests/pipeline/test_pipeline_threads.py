"""An annotate run leaves the process's thread settings as it found them; --threads changes no result."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

from pipeline_helpers import run_annotate


def test_annotate_restores_blas_and_torch_threads(tmp_path, desi_release, tiny_bundle):
    import catalog_tool.preprocess.chain  # noqa: F401  (loads scipy's OpenBLAS as a run does)

    blas = [(i["filepath"], i["num_threads"]) for i in threadpool_info()]
    torch_before = torch.get_num_threads()
    threads = 2 if torch_before != 2 else 1
    for scheduler in ("threads", "synchronous"):
        run_annotate([desi_release.out], tmp_path / f"{scheduler}.fits", tiny_bundle, threads=threads,
                     workers=2, partition_size=30, scheduler=scheduler)
        assert [(i["filepath"], i["num_threads"]) for i in threadpool_info()] == blas, scheduler
        assert torch.get_num_threads() == torch_before, scheduler


def test_results_do_not_depend_on_the_number_of_threads(tmp_path, desi_release, lamost_release, tiny_bundle,
                                                        reference_vac):
    """Worker threads split the work by fixed chunks: 1 and 3 threads give the same bits."""
    from pipeline_helpers import assert_same_rows, read_table

    spectra = lamost_release.out + "/spectra"
    for threads in (1, 3):
        run_annotate([desi_release.out, spectra], tmp_path / f"t{threads}.fits", tiny_bundle, threads=threads,
                     partition_size=30)
    assert_same_rows(read_table(tmp_path / "t1.fits"), read_table(tmp_path / "t3.fits"))
    # and the DESI rows equal the reference run's (default threads, partitions of one pixel)
    t1 = read_table(tmp_path / "t1.fits")
    assert_same_rows(t1[np.char.strip(t1["SURVEY"].astype(str)) != "lamost"], read_table(reference_vac))


def test_threads_setting(tmp_path):
    from catalog_tool.config import available_cpus, build_config
    from catalog_tool.errors import ConfigError

    cfg = build_config(inputs=("x",), out=str(tmp_path / "v.fits"))
    assert cfg.threads == 0 and cfg.resolved_threads == available_cpus()
    two = build_config(inputs=("x",), out=str(tmp_path / "v.fits"), workers=2)
    assert two.resolved_threads == max(1, available_cpus() // 2)
    assert build_config(inputs=("x",), out=str(tmp_path / "v.fits"), threads=3).resolved_threads == 3
    with pytest.raises(ConfigError, match="threads must be a non-negative integer"):
        build_config(inputs=("x",), out=str(tmp_path / "v.fits"), threads=-1)


def test_lamost_files_are_read_a_chunk_at_a_time(monkeypatch, lamost_release, tiny_bundle):
    """A partition's LAMOST files are read CHUNK_ROWS files at a time (bounded memory), all of them."""
    import glob

    from catalog_tool.models.bundle import load_bundle
    from catalog_tool.pipeline import partition as pm

    files = [{"path": p, "kind": "lamost", "nspec": 1}
             for p in sorted(glob.glob(f"{lamost_release.out}/spectra/*/*.fits*"))]
    bundle = load_bundle(tiny_bundle)
    read = []
    real = pm._producer

    def spy(groups, *args):
        read.extend(len(paths) for _, paths in groups)
        return real(groups, *args)

    monkeypatch.setattr(pm, "CHUNK_ROWS", 3)
    monkeypatch.setattr(pm, "_producer", spy)
    table, failures, counts = pm.process_files(files, bundle=bundle, device="cpu", batch_size=64, threads=2)
    assert read == [3, 3, 2] and not failures
    assert sorted(counts["files"]) == sorted(f["path"] for f in files)
    assert len(table) == len(files) and len(set(table["TARGETID"].tolist())) == len(files)
