"""End-to-end ``stxcat annotate`` speed and peak memory on simulated DESI releases, next to a floor.

Usage::

    python benchmarks/bench_annotate.py [--spectra 5000 20000] [--bundle PATH] [--data-dir DIR]
        [--per-pixel 500] [--batch-size 2048] [--workers 1] [--threads 0] [--device cpu]
        [--scheduler threads] [--partition-size 20000] [--repeat 1] [--baseline-src DIR]

For each size N a simulated DESI release of N fibres (``--per-pixel`` per HEALPix pixel; stars,
galaxies, QSOs, sky and unassigned fibres as the simulator draws them) is made once in
``--data-dir`` (kept for the next run; no RESOLUTION HDUs, no checksums) and annotated by the real
command line in a child process, whose wall time and peak RSS (its own ``VmHWM``: ``peak_rss.py``) are reported.

The floor is measured in this process, in the same run, for the same release:

* read: a bare ``fitsio`` read of the HDUs the model needs (``FIBERMAP`` and ``<ARM>_FLUX``,
  ``_IVAR``, ``_MASK`` of each arm the bundle's grid and continuum window touch) of every coadd
  file;
* forward: the bare forward passes of every network of the bundle over as many spectra as the run
  estimated (random inputs on the model grid, ``--batch-size`` rows at a time, inference mode),
  with one torch thread and with one per CPU; both floors are printed (one thread, and the faster).

``floor spec/s = N / (read + forward)``. The end-to-end run does more than the floor on purpose
(FIBERMAP and redrock, star selection, continuum normalisation, the noise term of the
uncertainties, flags, part files, the merged VAC), so the ratio says how much that costs.

``--bundle`` defaults to the bundled ``default`` model when it exists, otherwise to an untrained
bundle of the paper's size (multi-label MLP 1024-512-64, 5 members) made in ``--data-dir``: speed
does not depend on the weights.

On a machine shared with other work the figures vary: every row carries the 1-minute load average
before and after its run, ``--repeat`` runs each size several times, and ``--baseline-src DIR``
(an unpacked older source tree, e.g. ``git archive main | tar -x -C DIR``) runs that code on the
same release right before each run of this one, with ``--baseline-args`` (default: its old
defaults ``--threads 1``), so that before/after are compared in the same minutes.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

import fitsio
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peak_rss  # beside this script


def paper_bundle(folder: pathlib.Path) -> str:
    """An untrained bundle of the paper's shape (speed only), made once in ``folder``."""
    from catalog_tool.models.bundle import LabelSpec, make_provenance, save_bundle
    from catalog_tool.models.mlp import MLPConfig, build_member
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings

    path = folder / "paper-untrained"
    if (path / "manifest.json").exists():
        return os.fspath(path)
    import torch

    torch.manual_seed(0)
    grid = ModelGrid()
    config = MLPConfig(n_in=grid.npix, hidden=(1024, 512, 64))
    labels = [LabelSpec("FEH", "dex", -0.5, 0.5, (-4.0, 0.8)), LabelSpec("ALPHAFE", "dex", 0.1, 0.15, (-0.3, 0.6)),
              LabelSpec("TEFF", "K", 5500.0, 800.0, (3500.0, 8000.0)), LabelSpec("LOGG", "dex", 3.5, 1.0, (0.0, 5.5))]
    members = [build_member(config=config, n_labels=4, heads="multi-label").eval() for _ in range(5)]
    save_bundle(path, members=members, config=config, heads="multi-label", labels=labels, grid=grid,
                preprocess=PreprocessSettings(), name="paper-untrained",
                provenance=make_provenance(command="benchmarks/bench_annotate.py (untrained)", seed=0))
    return os.fspath(path)


def release(folder: pathlib.Path, n: int, per_pixel: int) -> pathlib.Path:
    """A simulated DESI release of about ``n`` fibres, made once."""
    from catalog_tool.sim.desi import simulate_desi

    out = folder / f"desi-{n}-{per_pixel}"
    if not (out / "truth-desi.fits").exists():
        t0 = time.perf_counter()
        pixels = max(1, round(n / per_pixel))
        simulate_desi(out, pixels=pixels, per_pixel=per_pixel, seed=2026, resolution=False, checksum=False,
                      overwrite=True)
        print(f"# simulated {pixels * per_pixel} spectra in {time.perf_counter() - t0:.0f} s: {out}", flush=True)
    return out


def run_cli(args: list[str], src: str | None = None) -> tuple[float, float, int, str, float]:
    """Run ``stxcat`` in a child: (wall s, run s as the command reports it, peak RSS bytes, stdout,
    CPU s of the child: user + system, all its threads).

    ``src``: a source tree to run instead of the installed package (put first on PYTHONPATH).
    """
    env = dict(os.environ)  # as a user runs it: no thread variables set for the child
    if src:
        env["PYTHONPATH"] = os.pathsep.join([src] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        # `python -m` puts the working directory first on sys.path: run from a checkout, the child
        # would import that checkout's catalog_tool, not src's (PYTHONSAFEPATH, Python >= 3.11)
        env["PYTHONSAFEPATH"] = "1"
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryDirectory() as tmp:
        peak_json = os.path.join(tmp, "peak.json")
        proc = subprocess.Popen(peak_rss.wrap(peak_json, "catalog_tool.cli", args), stdout=out,
                                stderr=subprocess.PIPE, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        err = proc.stderr.read()
        out.seek(0)
        stdout = out.read()
        peak = peak_rss.read(peak_json) * 2**20 if os.path.exists(peak_json) else float("nan")
    if proc.returncode not in (0, 3):
        raise SystemExit(f"stxcat failed ({proc.returncode}): {err.strip()[-2000:]}")
    m = re.search(r"in ([0-9.]+) s on", stdout)
    return wall, float(m.group(1)) if m else wall, peak, stdout, usage.ru_utime + usage.ru_stime


def floor_read(rel: pathlib.Path, arms: tuple[str, ...]) -> tuple[float, int]:
    """Seconds of a bare fitsio read of the needed HDUs of every coadd, and the rows read."""
    rows = 0
    t0 = time.perf_counter()
    for path in sorted(rel.rglob("coadd-*.fits")):
        with fitsio.FITS(os.fspath(path)) as f:
            f["FIBERMAP"].read()
            for arm in arms:
                keep = [f[f"{arm}_{what}"].read() for what in ("FLUX", "IVAR", "MASK")]
                rows += keep[0].shape[0] if arm == arms[0] else 0
    return time.perf_counter() - t0, rows


def floor_forward(bundle, n: int, batch_size: int, device: str) -> float:
    """Seconds of the bare forward passes of every member over ``n`` random spectra."""
    import torch

    dev = torch.device(device)
    members = [m.to(dev).eval() for m in bundle.members]
    x = torch.from_numpy(np.random.default_rng(0).normal(1.0, 0.05, (min(n, batch_size), bundle.n_in))
                         .astype(np.float32)).to(dev)
    with torch.inference_mode():
        for m in members:  # warm-up (allocator, kernels)
            m(x[:8])
        t0 = time.perf_counter()
        done = 0
        while done < n:
            k = min(batch_size, n - done)
            for m in members:
                y = m(x[:k])
            y.cpu()
            done += k
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--spectra", type=int, nargs="+", default=[5000, 20000], help="release sizes (fibres)")
    ap.add_argument("--bundle", default=None, help="model bundle (default: bundled 'default', else untrained paper-size)")
    ap.add_argument("--data-dir", default=None, help="where releases and the untrained bundle are kept "
                                                     "(default: a folder under the system temp dir)")
    ap.add_argument("--per-pixel", type=int, default=500, help="fibres per HEALPix pixel")
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="stxcat --threads (0: its default, the CPUs)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--scheduler", default="threads")
    ap.add_argument("--partition-size", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=1, help="runs of each size (each with its own floor)")
    ap.add_argument("--baseline-src", default=None, help="older source tree run before each run, same release")
    ap.add_argument("--baseline-args", default="--threads 1", help="extra stxcat options of the baseline runs")
    a = ap.parse_args()

    import torch

    from catalog_tool.models.bundle import bundled_names, load_bundle
    from catalog_tool.io.desi import arms_covering
    from catalog_tool.preprocess.chain import needed_observed_range
    from catalog_tool.preprocess.grid import ModelGrid
    from catalog_tool.preprocess.settings import PreprocessSettings

    torch.set_num_threads(1)
    data = pathlib.Path(a.data_dir or pathlib.Path(tempfile.gettempdir()) / "stxcat-bench-annotate")
    data.mkdir(parents=True, exist_ok=True)
    bundle_path = a.bundle or ("default" if "default" in bundled_names() else paper_bundle(data))
    bundle = load_bundle(bundle_path)
    arms = arms_covering(*needed_observed_range(grid=ModelGrid.from_dict(bundle.grid),
                                                settings=PreprocessSettings.from_dict(bundle.preprocess)))
    print(f"# bundle {bundle.name} ({len(bundle.members)} members, {bundle.n_in} pixels); arms read: {','.join(arms)}; "
          f"device {a.device}; batch {a.batch_size}; scheduler {a.scheduler} x{a.workers}; --threads {a.threads}; "
          f"{os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    rows = []
    for n in a.spectra:
        rel = release(data, n, a.per_pixel)
        for _ in range(a.repeat):
            runs = ([("baseline", a.baseline_src, a.baseline_args.split())] if a.baseline_src else []) + [
                ("this", None, ["--threads", str(a.threads)])]
            for label, src, extra in runs:
                load0 = os.getloadavg()[0]
                with tempfile.TemporaryDirectory() as tmp:
                    out = os.path.join(tmp, "vac.fits")
                    wall, run_s, rss, stdout, cpu = run_cli([
                        "annotate", os.fspath(rel), "--out", out, "--model", bundle_path, "--no-progress",
                        "--batch-size", str(a.batch_size), "--workers", str(a.workers), "--device", a.device,
                        "--scheduler", a.scheduler, "--partition-size", str(a.partition_size), *extra], src=src)
                    with fitsio.FITS(out) as f:
                        nrows = f["STELLAR_PARAMS"].get_nrows()
                        stars = int(np.isfinite(f["STELLAR_PARAMS"].read_column(bundle.label_names[0])).sum())
                load1 = os.getloadavg()[0]
                t_read, nread = floor_read(rel, arms)
                dev = "cpu" if a.device == "auto" else a.device
                # two floors: the forward passes on one torch thread, and the faster of that and all
                # cores (on a busy machine all cores can be the slower)
                t_fwd = {}
                for threads in sorted({1, os.cpu_count() or 1}):
                    torch.set_num_threads(threads)
                    t_fwd[threads] = floor_forward(bundle, stars, a.batch_size, dev)
                torch.set_num_threads(1)
                floor1 = nread / (t_read + t_fwd[1])
                floor_all = nread / (t_read + min(t_fwd.values()))
                rows.append((label, nread, nrows, stars, wall, run_s, nread / run_s, stars / run_s, t_read,
                             min(t_fwd.values()), floor1, rss / 2**20, load0, load1, cpu, floor_all))
                print("# " + " ".join(f"{v:.3g}" if isinstance(v, float) else str(v) for v in rows[-1]), flush=True)

    head = ("code", "fibres", "VAC rows", "stars", "wall s", "run s", "CPU s", "spec/s", "stars/s", "floor read s",
            "floor fwd s", "floor spec/s 1 thread / all", "of floor 1 thread / all", "peak RSS MB",
            "load before/after")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]:.1f} | {r[5]:.1f} | {r[14]:.1f} | {r[6]:.0f} | {r[7]:.0f} | "
              f"{r[8]:.2f} | {r[9]:.2f} | {r[10]:.0f} / {r[15]:.0f} | {r[6] / r[10]:.2f} / {r[6] / r[15]:.2f} | "
              f"{r[11]:.0f} | {r[12]:.1f} / {r[13]:.1f} |")
    print("# run s: from the start of the annotate function to the VAC written (the command's own figure, "
          "without Python start-up); wall s includes start-up; CPU s: user + system time of the whole child (all "
          "threads, start-up included): what the run costs whatever the load. spec/s counts every fibre read; "
          "'of floor' is spec/s over floor spec/s, the floor measured right after the run, with the forward passes "
          "on one torch thread, and on the faster of one and all cores; 'floor fwd s' is the faster.")


if __name__ == "__main__":
    main()
