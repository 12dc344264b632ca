"""benchmarks/gpu_check.py's plumbing: ``--device cpu --quick`` writes every section of its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_quick_on_the_cpu_writes_every_section(tmp_path):
    out = tmp_path / "check.json"
    env = dict(os.environ, DMM_PROFILE="smoke", PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--quick", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(out.read_text())
    failed = {k: v for k, v in report.items() if isinstance(v, dict) and "error" in v}
    assert not failed, failed
    assert report["device"] == "cpu" and report["quick"] and report["amp"] == "bf16"
    tests = report["tests"]
    assert tests["exit_status"] == 0 and tests.get("failed", 0) == 0 and tests["skipped"] >= 8  # no CUDA here
    assert [(t["amp"], t["compiled_matching"]) for t in report["track"]] == [(None, False), ("bf16", False)]
    for timing in report["track"]:
        assert set(timing["ms_per_frame"]) == {"proposals", "features", "cost", "matching", "refinement"}
        assert timing["fps"] > 0 and timing["fps_without_proposals"] > timing["fps"]
    cpu = report["matching"]["cpu eager"]
    assert cpu["ms_per_call"] > 0 and 0 < cpu["aten_ops_per_call_one_problem"] < 4000
    steps = report["train_step"]
    assert [s["amp"] for s in steps] == [None, "bf16"] and all(s["seconds_per_step"] > 0 for s in steps)
    accuracy = report["amp_accuracy"]
    assert 0 < accuracy["max_probability_difference"] < 0.05 and accuracy["max_cost_difference"] < 0.01
    assert abs(accuracy["train_loss_amp"] - accuracy["train_loss_float32"]) < 0.05
    assert report["total_seconds"] < 480
