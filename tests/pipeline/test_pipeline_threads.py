"""An annotate run leaves the process's thread settings as it found them."""

from __future__ import annotations

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
