"""The ahead-of-book runner (python -m dmmlib.lessons.run): what it runs, what it skips, how it fails."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmmlib.lessons import run

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, message", [
    (["bogus"], "target 'bogus' is not known; expected one of proposals, ch08, table4, all"),
    (["all", "--profile", "laptop"], "--profile 'laptop' is not a known profile"),
    (["all", "--profile", "cpu", "--dry-run"], "a dry run (DMM_DRY_RUN=1) is of the gpu profile"),
])
def test_a_bad_target_or_profile_is_one_error_line(monkeypatch, capsys, argv, message):
    # main sets both for the process it runs in: set here, so that they are restored after the test
    monkeypatch.setenv("DMM_DRY_RUN", "0")
    monkeypatch.setenv("DMM_PROFILE", "smoke")
    assert run.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_run_units_skips_what_is_done_and_estimates_the_rest():
    ran, lines = [], []
    done = {"a": True, "b": False, "c": True, "d": False}
    units = [run.Unit(k, lambda k=k: done[k], lambda k=k: (ran.append(k), time.sleep(0.05))) for k in done]
    result = run.run_units(units, write=lines.append)
    assert ran == ["b", "d"] and result == {"computed": ["b", "d"], "cached": ["a", "c"]}
    assert lines[0].startswith("[1/4] a: cached; 2 left") and lines[-1].endswith("nothing left")
    assert "1 left, ~0.0 min to go at 0.1 s per unit so far" in lines[1]  # b took ~0.05 s, d is left


def test_plan_all_runs_the_proposals_first_and_each_unit_once():
    units = run.plan("all", "smoke")
    labels = [u.label for u in units]
    assert labels[0] == "proposals (chapter 6)" and len(labels) == len(set(labels))
    assert {"train ft2, seed 0", "head study (chapter 8)", "evaluate static", "evaluate ft-unroll2-plain, seed 0",
            "train ft3, seed 0"} <= set(labels)
    assert labels.index("train ft2, seed 0") < labels.index("evaluate ft-unroll2, seed 0")


def _start(env):
    return subprocess.Popen([sys.executable, "-m", "dmmlib.lessons.run", "ch08", "--profile", "smoke"], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            start_new_session=True)


@pytest.mark.slow
def test_killed_after_the_first_unit_the_rerun_skips_it_and_finishes(tmp_path):
    env = dict(os.environ, DMM_DATA_DIR=str(tmp_path / "data"), DMM_PROFILE="smoke", DMM_DRY_RUN="0",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    first = _start(env)
    try:
        line = first.stdout.readline()  # the line of the first unit: it is on disk now
        assert line.startswith("[1/6] proposals (chapter 6): ") and "cached" not in line, line
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    second = _start(env)
    out, _ = second.communicate(timeout=1800)
    lines = out.strip().splitlines()
    assert second.returncode == 0, out
    assert lines[0].startswith("[1/6] proposals (chapter 6): cached")
    assert all("cached" not in line for line in lines[1:6]), lines  # the rest was computed now
    assert lines[-1] == "ch08 (smoke): 6 units, 5 computed, 1 already done"
    runs = tmp_path / "data" / "runs" / "book-models-smoke"
    trained = sorted(p.parent.name.split("-s0-")[0] for p in runs.glob("*/done.json"))
    assert trained == ["ft2", "ft2-plain"]
    assert all(json.loads(p.read_text())["steps"] > 0 for p in runs.glob("*/done.json"))
    assert len(list((runs / "evals").glob("*.json"))) == 2
