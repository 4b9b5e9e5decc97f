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


def test_compare_quick_prints_its_json_last() -> None:
    # Cases 1 and 3 take both of the script's paths (a frozen body's feature pass, a fine-tune);
    # case 2 takes case 1's again.
    done = subprocess.run(
        [sys.executable, "bench/compare.py", "--quick", "--cases", "1,3"], cwd=ROOT, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["quick"] is True
    for key in KEYS:
        assert isinstance(result[key], float) and math.isfinite(result[key]) and result[key] > 0, key
    assert 0 <= result["case1_accuracy"] <= 1 and set(result["summary"]) == {"1", "3"}
    assert result["case2_speedup"] is None  # a case not asked for is not measured
    assert "| case | engine wall |" in done.stderr  # the table, for people


def test_scale_quick_measures_the_size_asked_for_and_prints_its_json_last() -> None:
    # One size: each takes five processes (two inspections, two cache builds, a run), and a
    # second size would only take them again.
    done = subprocess.run(
        [sys.executable, "bench/scale.py", "--quick", "--sizes", "200", "--json"], cwd=ROOT, capture_output=True,
        text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["quick"] is True and [row["images"] for row in result["sizes"]] == [200]
    for row in result["sizes"]:
        for key in (
            "inspect_s",
            "inspect_ratio",
            "cache_s",
            "cache_ratio",
            "case1_s",
            "disk_mib",
            "cache_peak_mib",
        ):
            assert isinstance(row[key], float) and math.isfinite(row[key]) and row[key] > 0, key
        assert row["same_pixels"] is True and 0 <= row["case1_accuracy"] <= 1
        assert 1 <= row["cache_workers"] <= result["machine"]["usable_cores"]
    assert "| images | zip | inspect 1 proc / all |" in done.stderr  # the table, for people
    assert "200 images: case-1 run, 1 epoch(s)..." in done.stderr  # progress as it goes
