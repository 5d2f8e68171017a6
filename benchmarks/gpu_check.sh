#!/usr/bin/env bash
# GPU readiness check of stxcat, run from anywhere in the repository on a fresh GPU machine:
#
#     bash benchmarks/gpu_check.sh [--quick] [--sizes 20000 200000] [--budget-s 270] [--data-dir DIR]
#
# Uses the Python that can already import stxcat: $PYTHON if set, else .venv/bin/python, else
# python3 (with this source tree on PYTHONPATH when that is enough). Only when none can does it run
# `pip install torch==2.13.0 -e .` (needs PyPI or a wheel mirror). Then it runs
# benchmarks/gpu_check.py: environment, CPU/CUDA agreement of the VAC values within float32
# rounding, spectra/s end to end on 20k and 200k fibres (CUDA and CPU), and the read/preprocess/
# infer split. About 2-4 minutes on a 16-core GPU node; --quick (2k and 5k fibres) in about one
# minute on a laptop without a GPU (then only the CPU half runs). Exit status 1: CPU and CUDA
# disagree; 2: stxcat could not be installed.
set -u
cd "$(dirname "$0")/.."
root=$(pwd)

works() { "$1" -c 'import catalog_tool, torch' >/dev/null 2>&1; }

py=""
for candidate in "${PYTHON:-}" "$root/.venv/bin/python" "$(command -v python3 || true)" "$(command -v python || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ] && "$candidate" -c 'import sys' >/dev/null 2>&1; then
        if works "$candidate"; then py=$candidate; break; fi
        if PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" works "$candidate"; then
            export PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}"
            py=$candidate
            echo "# using $candidate with PYTHONPATH=$root"
            break
        fi
        [ -z "$py" ] && fallback=${fallback:-$candidate}
    fi
done

if [ -z "$py" ]; then
    py=${fallback:-python3}
    echo "# stxcat cannot be imported by $py: pip install torch==2.13.0 -e ."
    if ! "$py" -m pip install -q torch==2.13.0 -e "$root"; then
        echo "FAIL: installing stxcat failed (no network or wheel mirror?); carry an environment that has" \
             "torch and stxcat's dependencies, or set PYTHON=/path/to/python" >&2
        exit 2
    fi
fi
echo "# python: $py"
exec "$py" "$root/benchmarks/gpu_check.py" "$@"
