"""The comparison script runs end to end and says what it measured; its numbers are not judged here
(benchmarks report, they do not assert: see bench/README.md for the figures)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KEYS = (
    "case1_speedup",
    "case3_speedup",
    "case1_accuracy",
    "baseline_case1_accuracy",
    "feature_extraction_efficiency",
)


def test_compare_quick_prints_its_json_last(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "bench/compare.py", "--quick"], cwd=ROOT, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["quick"] is True
    for key in KEYS:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert 0 <= result["case1_accuracy"] <= 1 and set(result["summary"]) == {"1", "2", "3"}
    assert "| case | engine wall |" in done.stderr  # the table, for people
