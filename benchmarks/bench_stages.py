"""Where each second of ``stxcat annotate`` goes: the pipeline's stages timed one after the other.

Usage::

    python benchmarks/bench_stages.py RELEASE [--bundle default] [--device cpu] [--max-files N]
        [--partition-size 10000] [--json OUT.json]

Runs, on one thread and in this order, the functions a partition task runs, over the coadd files
of a simulated (or real) DESI release ``RELEASE``, and prints their seconds:

read
    ``io.desi.read_coadd`` of every file (FIBERMAP, redrock join, the bundle's arms).
select
    targets and stars (``select.is_target``, ``is_star``) and the row copies that go with them.
preprocess
    ``preprocess.chain.preprocess_batch`` of the stars, in the pipeline's chunks of 1,024 targets.
ensemble forward
    the forward passes of every member over the preprocessed stars (folded networks when the
    members can be folded, as ``predict`` runs them).
noise Jacobian
    ``models.folded.noise_variance`` on the first member (what ``predict`` does for the flux-noise
    term) minus that member's forward pass, which is counted above.
infer other
    ``models.infer.predict`` minus the two above (host/device copies, ensemble mean and spread,
    error composition).
flags + rows
    ``pipeline.partition.finish_targets`` minus its ``predict``: the VAC rows and ``FLAGS``.
part write, merge
    ``vac.write.write_vac`` of each partition's rows (partitions of ``--partition-size`` fibres in
    file order) and ``vac.write.merge_parts`` of them.

On the CPU the figures are the process's CPU seconds (``time.process_time``; everything runs on
one thread), so other jobs on a shared machine change them little; on CUDA they are wall seconds.
The sum is the work of one thread; ``stxcat annotate`` spreads it over ``--threads`` worker threads
(and a reader thread) per partition, so its wall time can be shorter than the sum. The same
script runs an older source tree for a before/after table (``PYTHONPATH=OLD_SRC python
benchmarks/bench_stages.py ...``): it uses only functions both have. With ``--device cuda`` the
inference stages run on the GPU (timed with ``torch.cuda.synchronize``).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("release", help="a DESI release tree (coadd-*.fits under it)")
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-files", type=int, default=None, help="first N coadd files only")
    ap.add_argument("--partition-size", type=int, default=10000, help="fibres per part file")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    a = ap.parse_args()

    import torch

    import catalog_tool
    from catalog_tool.io import desi
    from catalog_tool.preprocess.chain import needed_observed_range
    from catalog_tool.models.bundle import load_bundle
    from catalog_tool.models.folded import fold_members, noise_variance
    from catalog_tool.models.infer import predict, resolve_device
    from catalog_tool.models.threads import torch_threads
    from catalog_tool.pipeline import partition as pm
    from catalog_tool.select import is_star, is_target
    from catalog_tool.threads import single_thread_blas
    from catalog_tool.vac import write as vw
    from catalog_tool.vac.flags import FlagThresholds

    files = sorted(pathlib.Path(a.release).rglob("coadd-*.fits"))[: a.max_files]
    bundle = load_bundle(a.bundle)
    grid, settings = pm._bundle_inputs(bundle)
    arms = desi.arms_covering(*needed_observed_range(grid=grid, settings=settings))
    dev = resolve_device(a.device)
    members = [m.to(dev).eval() for m in bundle.members]
    fast = fold_members(members, dev) or members
    thresholds = FlagThresholds()
    t = dict.fromkeys(("read", "select", "preprocess", "ensemble forward", "noise Jacobian", "infer other",
                       "flags + rows", "part write", "merge"), 0.0)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    n_fibres = n_targets = n_stars = 0
    tables, parts = [], []
    tmp = tempfile.mkdtemp(prefix="stxcat-stages-")

    def clock():
        # CPU: the process's CPU time (one thread runs), which other jobs on the machine barely
        # change; CUDA: wall time after a synchronise (the GPU's time is not the process's)
        if dev.type == "cuda":
            sync()
            return time.perf_counter()
        return time.process_time()

    def flush_part():
        if not tables:
            return
        table = np.concatenate(tables)
        tables.clear()
        path = os.path.join(tmp, f"part-{len(parts)}.fits")
        prov = vw.Provenance(model_name=bundle.name, model_sha256=bundle.sha256, command="bench", input_release="x",
                             date="1970-01-01T00:00:00", thresholds=thresholds)
        t0 = clock()
        vw.write_vac(path, table, provenance=prov, errors=[], compute_primary=False, overwrite=True)
        t["part write"] += clock() - t0
        parts.append(path)

    with torch_threads(1), single_thread_blas(), torch.inference_mode():
        rows_in_part = 0
        for path in files:
            t0 = clock()
            batch = desi.read_coadd(path, arms=arms)
            t["read"] += clock() - t0
            n_fibres += len(batch)
            t0 = clock()
            targets = batch.take(np.flatnonzero(is_target(batch.meta)))
            t["select"] += clock() - t0
            for start in range(0, len(targets), pm.CHUNK_ROWS):
                t0 = clock()
                try:  # views where the code has them (this tree), copies otherwise (older ones)
                    chunk = targets.take(slice(start, start + pm.CHUNK_ROWS))
                except (TypeError, ValueError, IndexError):
                    chunk = targets.take(np.arange(start, min(start + pm.CHUNK_ROWS, len(targets))))
                chunk.take(np.flatnonzero(is_star(chunk.meta, kind="desi")))  # what prepare_targets selects
                t_sel = clock() - t0
                t0 = clock()
                prep = pm.prepare_targets(chunk, kind="desi", grid=grid, settings=settings)
                t["select"] += t_sel
                t["preprocess"] += max(clock() - t0 - t_sel, 0.0)
                n_targets += len(chunk)
                ok = prep.flux
                if ok is not None and len(ok):
                    n_stars += len(ok)
                    x = torch.from_numpy(np.ascontiguousarray(ok, np.float32)).to(dev)
                    iv = torch.from_numpy(np.ascontiguousarray(prep.ivar, np.float32)).to(dev)
                    s2 = torch.where(iv > 0, 1.0 / iv.clamp_min(1e-30), torch.zeros_like(iv))
                    t0 = clock()
                    for m in fast:
                        m(x)
                    t_fwd = clock() - t0
                    t0 = clock()
                    if hasattr(fast[0], "forward") and fast is not members:
                        fast[0].forward(x, keep=True)
                    else:
                        fast[0](x)
                    t_fwd0 = clock() - t0
                    t0 = clock()
                    if fast is not members:
                        noise_variance(fast[:1], x, s2)
                    t_nv = clock() - t0
                    t0 = clock()
                    predict(bundle, flux=ok, ivar=prep.ivar, device=dev, batch_size=2048)
                    t_pred = clock() - t0
                    t["ensemble forward"] += t_fwd
                    t["noise Jacobian"] += max(t_nv - t_fwd0, 0.0)
                    t["infer other"] += max(t_pred - t_fwd - max(t_nv - t_fwd0, 0.0), 0.0)
                else:
                    t_pred = 0.0
                t0 = clock()
                rows = pm.finish_targets(prep, bundle=bundle, device=str(dev), batch_size=2048, thresholds=thresholds)
                t["flags + rows"] += max(clock() - t0 - t_pred, 0.0)
                tables.append(rows)
            rows_in_part += len(batch)
            if rows_in_part >= a.partition_size:
                flush_part()
                rows_in_part = 0
        flush_part()
        prov = vw.Provenance(model_name=bundle.name, model_sha256=bundle.sha256, command="bench", input_release="x",
                             date="1970-01-01T00:00:00", thresholds=thresholds)
        t0 = clock()
        vw.merge_parts(parts, os.path.join(tmp, "vac.fits"), provenance=prov, errors=[], overwrite=True)
        t["merge"] += clock() - t0

    total = sum(t.values())
    load = os.getloadavg()
    print(f"# {catalog_tool.__file__}: {len(files)} files, {n_fibres} fibres, {n_targets} targets, {n_stars} stars "
          f"estimated; bundle {bundle.name} ({len(bundle.members)} members); device {dev}; one thread; "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print("| stage | s | ms per star | share |")
    print("|---|---|---|---|")
    for k, v in t.items():
        print(f"| {k} | {v:.2f} | {1e3 * v / max(n_stars, 1):.3f} | {100 * v / total:.0f}% |")
    print(f"| total (one thread) | {total:.2f} | {1e3 * total / max(n_stars, 1):.3f} | 100% |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"stages": t, "fibres": n_fibres, "stars": n_stars, "device": str(dev), "load": load}, fh)


if __name__ == "__main__":
    main()
