"""examples/compare_embeddings.py --quick: both parts run end to end on tiny simulated releases."""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "examples" / "compare_embeddings.py"


def test_compare_embeddings_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, str(EXAMPLE), "--quick", "--threads", "1", "--json-out", "out.json"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    m = re.search(r"Test set: (\d+) simulated DESI stars \((\d+) with \[Fe/H\] < -1\); fine-tuned on (\d+); "
                  r"pre-trained on (\d+) simulated LAMOST", r.stdout)
    assert m, r.stdout
    n_test, n_poor = int(m.group(1)), int(m.group(2))
    assert 30 <= n_test <= 40 and int(m.group(4)) <= 60 and 0 < n_poor < n_test
    res = json.loads((tmp_path / "out.json").read_text())
    rows = res["rows"]
    # 2 kinds x 4 methods x 2 labels x 3 subsets, each subset counting the right stars
    assert len(rows) == 2 * 4 * 2 * 3
    assert {(r["kind"], r["method"]) for r in rows} == {(k, m) for k in ("spectrum", "embedding")
                                                        for m in ("zero-shot", "adapter", "lora", "full")}
    for row in rows:
        want = {"all": n_test, "[Fe/H] < -1": n_poor, "[Fe/H] >= -1": n_test - n_poor}[row["subset"]]
        assert row["n"] == want and row["scatter"] >= 0 and row["mae"] >= abs(row["bias"]) - 1e-9, row
    # zero-shot of one kind differs from the other kind (two different models)
    zs = {r["kind"]: r["bias"] for r in rows if r["method"] == "zero-shot" and r["subset"] == "all"
          and r["label"] == "FEH"}
    assert zs["spectrum"] != zs["embedding"]
    costs = {c["kind"]: c for c in res["costs"]}
    assert set(costs) == {"spectrum", "embedding"}
    assert all(c["ms_none"] > 0 and c["ms_linear"] > 0 for c in costs.values())
    # contrastive part: three encoders (masked, contrastive, both views without the term), zero-shot and adapter
    crows = res["contrastive_rows"]
    assert {(r["encoder"], r["method"]) for r in crows} == {(e, m) for e in ("masked", "contrastive", "both-views")
                                                           for m in ("zero-shot", "adapter")}
    assert res["encoders"]["contrastive"]["n"] <= res["encoders"]["masked"]["n"]
    assert "| label | subset | kind | method | n | bias | scatter | mae |" in r.stdout
    assert "| label | subset | method | encoder | n | bias | scatter | mae |" in r.stdout
