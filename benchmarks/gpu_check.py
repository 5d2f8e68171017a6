"""GPU readiness check: CUDA and CPU give the same VAC values, and how fast each is.

Run through ``benchmarks/gpu_check.sh`` (which makes sure stxcat can be imported first)::

    bash benchmarks/gpu_check.sh [--quick] [--sizes 20000 200000] [--budget-s 270] [--data-dir DIR]

Steps, each printed as a table (the whole run is meant to fit in 5 minutes on a 16-core GPU node;
steps that would start after ``--budget-s`` seconds are reported as skipped):

1. environment: Python, torch, CUDA device, CPUs, load average;
2. agreement: the same preprocessed stars of a simulated DESI release predicted on the CPU and on
   CUDA (values, errors, ensemble spread, noise term): the largest differences, which must be within
   float32 rounding (``rtol`` 1e-4 of the value, plus 1e-5 of the label's scale), else FAIL;
3. end to end: ``stxcat annotate`` on simulated releases of each ``--sizes`` (fibres), on CUDA and on
   the CPU (spectra/s, peak RSS), and the two VACs compared the same way (FLAGS must match except
   where a value sits on a flag threshold);
4. split: read / select / preprocess / inference seconds per stage on one thread
   (``benchmarks/bench_stages.py``) on the first 20,000 fibres, with the inference on CUDA: how
   many CPU threads it takes to keep the GPU fed.

Without CUDA (or ``--quick``: releases of 2,000 and 5,000 fibres) only the CPU half runs, quickly:
that is how the script is tested on machines without a GPU. Exit status: 0 when the agreement
checks pass (or could not run for want of CUDA), 1 when one fails.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import peak_rss  # beside this script

HERE = pathlib.Path(__file__).resolve().parent
T0 = time.perf_counter()
#: Relative tolerance of the CPU/CUDA comparison (float32 rounding through four layers and sums of
#: 1,462 terms), and the absolute part as a fraction of each label's scale (the bundle's std).
RTOL, ATOL_SCALE = 1e-4, 1e-5


def elapsed() -> float:
    return time.perf_counter() - T0


def table(head, rows) -> None:
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print(flush=True)


def release(data: pathlib.Path, n: int, workers: int) -> pathlib.Path:
    from catalog_tool.sim.desi import simulate_desi

    pixels = -(-n // 1250)  # pixels of at most 1,250 fibres (a DESI DR1 pixel holds a few hundred to ~2,000)
    out = data / f"desi-{n}"
    if not (out / "truth-desi.fits").exists():
        t0 = time.perf_counter()
        simulate_desi(out, pixels=pixels, per_pixel=n // pixels, seed=2026, resolution=False,
                      checksum=False, overwrite=True, workers=workers)
        print(f"# simulated {n} fibres in {time.perf_counter() - t0:.0f} s ({workers} workers): {out}", flush=True)
    return out


def compare(a: dict, b: dict, scale: np.ndarray) -> list:
    """Rows (quantity, max |diff|, max |diff| / tolerance, ok) of two sets of (N, L) arrays."""
    rows = []
    for name in a:
        x, y = np.asarray(a[name], np.float64), np.asarray(b[name], np.float64)
        both = np.isfinite(x) & np.isfinite(y)
        same_nan = bool(np.array_equal(np.isnan(x), np.isnan(y)))
        with np.errstate(invalid="ignore"):
            d = np.where(both, np.abs(x - y), 0.0)
            ratio = np.where(both, d / (RTOL * np.abs(x) + ATOL_SCALE * scale), 0.0)
        worst = float(ratio.max()) if d.size else 0.0
        rows.append((name, f"{float(d.max()) if d.size else 0.0:.3g}", f"{worst:.3f}", "ok" if worst <= 1 and same_nan
                     else "FAIL"))
    return rows


def agreement(rel: pathlib.Path, bundle_name: str, n_max: int) -> bool | None:
    import torch

    from catalog_tool.io import desi
    from catalog_tool.models.bundle import load_bundle
    from catalog_tool.models.infer import predict
    from catalog_tool.pipeline import partition as pm
    from catalog_tool.preprocess.chain import needed_observed_range
    from catalog_tool.select import is_target

    bundle = load_bundle(bundle_name)
    grid, settings = pm._bundle_inputs(bundle)
    arms = desi.arms_covering(*needed_observed_range(grid=grid, settings=settings))
    flux, ivar = [], []
    for path in sorted(rel.rglob("coadd-*.fits")):
        batch = desi.read_coadd(path, arms=arms)
        prep = pm.prepare_targets(batch.take(np.flatnonzero(is_target(batch.meta))), kind="desi", grid=grid,
                                  settings=settings)
        flux.append(prep.flux)
        ivar.append(prep.ivar)
        if sum(len(f) for f in flux) >= n_max:
            break
    flux, ivar = np.concatenate(flux)[:n_max], np.concatenate(ivar)[:n_max]
    out = {}
    for dev in ("cpu", "cuda") if torch.cuda.is_available() else ("cpu",):
        t0 = time.perf_counter()
        p = predict(bundle, flux=flux, ivar=ivar, device=dev, batch_size=2048)
        if dev == "cuda":
            torch.cuda.synchronize()
            t0 = time.perf_counter()  # the second call: kernels compiled, weights on the device
            p = predict(bundle, flux=flux, ivar=ivar, device=dev, batch_size=2048)
            torch.cuda.synchronize()
        out[dev] = (p, time.perf_counter() - t0)
    print(f"## 2. agreement: {len(flux)} preprocessed stars, bundle {bundle.name} ({len(bundle.members)} members)")
    print(f"predict (with uncertainties): CPU {len(flux) / out['cpu'][1]:.0f} spectra/s"
          + (f", CUDA {len(flux) / out['cuda'][1]:.0f} spectra/s" if "cuda" in out else "") + "\n")
    if "cuda" not in out:
        print("no CUDA device: the CPU/CUDA comparison cannot run here (CPU half only)\n")
        return None
    cpu, gpu = out["cpu"][0], out["cuda"][0]
    scale = np.asarray(bundle.stds, np.float64)
    rows = compare({k: getattr(cpu, k) for k in ("values", "errors", "ensemble_std", "noise_std")},
                   {k: getattr(gpu, k) for k in ("values", "errors", "ensemble_std", "noise_std")}, scale)
    table(("quantity (all labels)", "max abs diff", "max diff / tolerance", "within float32 rounding"), rows)
    return all(r[-1] == "ok" for r in rows)


def annotate(rel: pathlib.Path, out: str, device: str, bundle: str, extra: list[str]) -> dict:
    """Run the CLI in a child: wall s, run s, peak RSS, VAC rows."""
    t0 = time.perf_counter()
    peak_json = out + ".peak.json"
    proc = subprocess.Popen(peak_rss.wrap(peak_json, "catalog_tool.cli",
                                          ["annotate", os.fspath(rel), "--out", out, "--model", bundle,
                                           "--no-progress", "--device", device, "--overwrite", *extra]),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()  # reads both pipes while it runs: no pipe-buffer stall
    wall = time.perf_counter() - t0
    code = proc.returncode
    if code not in (0, 3):
        raise SystemExit(f"stxcat annotate on {device} failed ({code}): {stderr.strip()[-1500:]}")
    import re

    m = re.search(r"in ([0-9.]+) s on", stdout)
    rss = peak_rss.read(peak_json) if os.path.exists(peak_json) else float("nan")
    return {"wall": wall, "run": float(m.group(1)) if m else wall, "rss": rss}


def end_to_end(rel: pathlib.Path, n: int, bundle_name: str, devices: list[str], tmp: str, cpus: int) -> bool:
    import fitsio

    from catalog_tool.models.bundle import load_bundle

    bundle = load_bundle(bundle_name)
    rows, vacs = [], {}
    for dev in devices:
        out = os.path.join(tmp, f"vac-{n}-{dev}.fits")
        # CUDA: several partitions at once so that reading (one thread per partition) keeps up
        workers = max(1, min(4, cpus // 4)) if dev == "cuda" else 1
        extra = ["--workers", str(workers), "--threads", str(max(1, cpus // workers)), "--partition-size", "20000"]
        load = os.getloadavg()[0]
        r = annotate(rel, out, dev, bundle_name, extra)
        vacs[dev] = fitsio.read(out, ext="STELLAR_PARAMS")
        stars = int(np.isfinite(vacs[dev][bundle.label_names[0]]).sum())
        n = len(fitsio.read(os.fspath(rel / "truth-desi.fits"), columns=["TARGETID"]))  # every fibre
        rows.append((dev, n, stars, " ".join(extra), f"{r['run']:.1f}", f"{n / r['run']:.0f}", f"{stars / r['run']:.0f}",
                     f"{r['rss']:.0f}", f"{load:.1f}"))
    print(f"## 3. end to end, {n} fibres")
    table(("device", "fibres", "stars", "options", "run s", "spectra/s", "stars/s", "peak RSS MB", "load"), rows)
    if len(vacs) < 2:
        return True
    return compare_vacs(vacs["cpu"], vacs["cuda"], bundle)


def compare_vacs(a: np.ndarray, b: np.ndarray, bundle) -> bool:
    """Print how two VACs of the same release differ; True when only by float32 rounding."""
    from catalog_tool.vac.flags import FlagThresholds

    if not np.array_equal(a["TARGETID"], b["TARGETID"]):
        print("FAIL: the two VACs hold different rows\n")
        return False
    names = bundle.label_names
    scale = np.asarray(bundle.stds, np.float64)
    cmp = compare({"values": np.stack([a[k] for k in names], 1), "errors": np.stack([a[f"{k}_ERR"] for k in names], 1)},
                  {"values": np.stack([b[k] for k in names], 1), "errors": np.stack([b[f"{k}_ERR"] for k in names], 1)},
                  scale)
    table(("VAC quantity", "max abs diff", "max diff / tolerance", "within float32 rounding"), cmp)
    differ = a["FLAGS"] != b["FLAGS"]
    near = np.zeros(len(a), bool)
    limits = dict(FlagThresholds().max_ensemble_std)
    for k in names:  # a spread or value a hair from a threshold may flip a bit: not a disagreement
        if f"{k}_ENS_STD" in a.dtype.names and k in limits:
            near |= np.abs(a[f"{k}_ENS_STD"] - limits[k]) <= RTOL * limits[k] + 1e-6
        lo, hi = next(s.domain for s in bundle.labels if s.name == k)
        near |= (np.abs(a[k] - lo) <= RTOL * max(abs(lo), 1)) | (np.abs(a[k] - hi) <= RTOL * max(abs(hi), 1))
    bad = int((differ & ~near).sum())
    print(f"FLAGS: {int(differ.sum())} rows differ, {bad} of them not at a threshold\n")
    return all(r[-1] == "ok" for r in cmp) and bad == 0


def split(rel: pathlib.Path, bundle: str, device: str, max_files: int, tmp: str) -> None:
    out = os.path.join(tmp, f"stages-{device}.json")
    proc = subprocess.run([sys.executable, os.fspath(HERE / "bench_stages.py"), os.fspath(rel), "--bundle", bundle,
                           "--device", device, "--max-files", str(max_files), "--json", out],
                          capture_output=True, text=True)
    if proc.returncode:
        print(f"bench_stages failed: {proc.stderr.strip()[-1000:]}")
        return
    d = json.load(open(out))
    st, n = d["stages"], max(d["stars"], 1)
    read = st["read"] + st["select"]
    pre = st["preprocess"]
    infer = st["ensemble forward"] + st["noise Jacobian"] + st["infer other"]
    rest = st["flags + rows"] + st["part write"] + st["merge"]
    print(f"## 4. split on one thread, inference on {device}: {d['fibres']} fibres, {d['stars']} stars")
    table(("stage", "s", "ms per star", "stars/s on one thread"),
          [(k, f"{v:.2f}", f"{1e3 * v / n:.3f}", f"{n / v:.0f}" if v else "-")
           for k, v in (("read + select", read), ("preprocess", pre), ("inference", infer), ("flags, write, merge", rest))])
    if device == "cuda":
        print(f"CPU threads needed to keep the GPU busy: about {max(1.0, (read + pre + rest) / max(infer, 1e-9)):.0f}")
    print()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small releases (2,000 and 5,000 fibres): a test run")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="release sizes in fibres")
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--budget-s", type=float, default=270.0, help="start no step after this many seconds")
    ap.add_argument("--data-dir", default=None, help="where the simulated releases are kept")
    a = ap.parse_args()
    sizes = a.sizes or ([2000, 5000] if a.quick else [20000, 200000])

    import torch

    import catalog_tool

    cuda = torch.cuda.is_available()
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    print("## 1. environment")
    table(("item", "value"), [
        ("stxcat", f"{catalog_tool.__version__} ({pathlib.Path(catalog_tool.__file__).parent})"),
        ("python", platform.python_version()), ("torch", f"{torch.__version__} (CUDA {torch.version.cuda})"),
        ("CUDA device", torch.cuda.get_device_name(0) if cuda else "none: CPU half only"),
        ("CPUs", cpus), ("load average", " ".join(f"{x:.2f}" for x in os.getloadavg())),
        ("TF32 matmul", torch.backends.cuda.matmul.allow_tf32)])
    data = pathlib.Path(a.data_dir or pathlib.Path(tempfile.gettempdir()) / "stxcat-gpu-check")
    data.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="stxcat-gpu-")
    ok = True
    rels = {}
    for n in sizes:
        if elapsed() > a.budget_s:
            print(f"## release of {n} fibres: SKIPPED (budget of {a.budget_s:.0f} s spent)\n")
            continue
        rels[n] = release(data, n, workers=max(1, cpus))
    first = rels.get(sizes[0])
    if first is not None:
        res = agreement(first, a.bundle, n_max=512 if a.quick else 4096)
        ok &= res is not False
    devices = ["cuda", "cpu"] if cuda else ["cpu"]
    for n, rel in rels.items():
        if elapsed() > a.budget_s:
            print(f"## 3. end to end, {n} fibres: SKIPPED (budget of {a.budget_s:.0f} s spent)\n")
            continue
        ok &= end_to_end(rel, n, a.bundle, devices, tmp, cpus)
    if first is not None and elapsed() <= a.budget_s:
        per_file = sizes[0] // -(-sizes[0] // 1250)
        split(first, a.bundle, "cuda" if cuda else "cpu", max(1, 20000 // per_file), tmp)
    elif first is not None:
        print(f"## 4. split: SKIPPED (budget of {a.budget_s:.0f} s spent)\n")
    print(f"# {'PASS' if ok else 'FAIL'}: CPU/CUDA agreement {'within' if ok else 'NOT within'} float32 rounding"
          + ("" if cuda else " (no CUDA here: CPU half only)") + f"; {elapsed():.0f} s in all")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
