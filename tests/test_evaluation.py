"""dmmlib.evaluation on a tiny hand-checkable DAVIS-layout fixture, and through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmmlib.data.masks import write_label_png
from dmmlib.errors import DMMInputError
from dmmlib.evaluation.davis import (
    GLOBAL_COLUMNS,
    evaluate_davis,
    write_json,
    write_official_csvs,
)
from dmmlib.evaluation.metrics import boundary_f

H, W = 20, 30  # tolerance ceil(0.008 * 36.06) = 1 pixel


def rect(r0, r1, c0, c1):
    m = np.zeros((H, W), bool)
    m[r0:r1, c0:c1] = True
    return m


def labels_from(*masks):
    out = np.zeros((H, W), np.uint8)
    for k, m in enumerate(masks, start=1):
        out[m] = k
    return out


def write_sequence(root: Path, results: Path, name: str, gts: list[np.ndarray], preds: dict[int, np.ndarray]):
    for t, gt in enumerate(gts):
        image_dir = root / "JPEGImages" / "480p" / name
        image_dir.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H)).save(image_dir / f"{t:05d}.jpg")
        write_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", gt)
    for t, pred in preds.items():
        write_label_png(results / name / f"{t:05d}.png", pred)


@pytest.fixture()
def davis(tmp_path):
    """alpha: 5 frames, 2 objects (frames 1-3 scored); beta: 4 frames, 1 object, never predicted."""
    root, results = tmp_path / "DAVIS", tmp_path / "results"
    obj1, obj2 = rect(2, 6, 2, 8), rect(10, 14, 20, 28)
    void = rect(2, 6, 8, 10)
    gts = []
    for t in range(5):
        gt = labels_from(obj1, obj2)
        if t == 2:
            gt[void] = 255  # void is background in the semi-supervised evaluation
        if t == 3:
            gt[16:18, 0:3] = 3  # an id that appears only later above n_objects: ignored
        gts.append(gt)
    preds = {
        1: labels_from(obj1, obj2),  # both exact
        2: labels_from(obj1 | void, rect(0, 0, 0, 0)),  # object 1 spills onto the void, object 2 missed
        3: labels_from(obj1, rect(10, 14, 20, 24)),  # object 2 half: J = 0.5 exactly
    }
    write_sequence(root, results, "alpha", gts, preds)
    beta_gt = labels_from(rect(5, 15, 5, 25))
    write_sequence(root, results, "beta", [beta_gt] * 4, {1: np.zeros((H, W), np.uint8), 2: np.zeros((H, W), np.uint8)})
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\n")
    return root, results


def expected_figures():
    obj1, obj2, void = rect(2, 6, 2, 8), rect(10, 14, 20, 28), rect(2, 6, 8, 10)
    f_spill = boundary_f(obj1, obj1 | void)
    f_half = boundary_f(obj2, rect(10, 14, 20, 24))
    assert 0 < f_spill < 1 and 0 < f_half < 1
    return {
        ("alpha", 1): ([1.0, 24 / 32, 1.0], [1.0, f_spill, 1.0]),
        ("alpha", 2): ([1.0, 0.0, 0.5], [1.0, 0.0, f_half]),
        ("beta", 1): ([0.0, 0.0], [0.0, 0.0]),
    }


def test_per_frame_scores_and_global_table(davis):
    root, results = davis
    result = evaluate_davis(root, results, progress=False, workers=1)
    expected = expected_figures()
    assert [(o.sequence, o.object_id) for o in result.objects] == list(expected)
    for o in result.objects:
        j, f = expected[(o.sequence, o.object_id)]
        np.testing.assert_allclose(o.j, j, rtol=0, atol=1e-15)
        np.testing.assert_allclose(o.f, f, rtol=0, atol=1e-15)
    assert result.objects[0].frames == ("00001", "00002", "00003")
    # By hand: recall is strict (object 2's 0.5 does not count); decay with n = 3 uses
    # bins x[0:2] and x[2:3]; n = 2 gives x0 - x1.
    a1, a2, b1 = result.objects
    assert a1.j_stats.mean == pytest.approx(2.75 / 3) and a1.j_stats.recall == 1.0
    assert a1.j_stats.decay == pytest.approx(0.875 - 1.0)
    assert a2.j_stats.mean == pytest.approx(0.5) and a2.j_stats.recall == pytest.approx(1 / 3)
    assert a2.j_stats.decay == pytest.approx(0.0)
    assert b1.j_stats == (0.0, 0.0, 0.0) and b1.f_stats == (0.0, 0.0, 0.0)
    g = result.global_scores
    j_mean = (2.75 / 3 + 0.5 + 0.0) / 3  # over all objects, not per sequence
    f_mean = (np.mean(expected[("alpha", 1)][1]) + np.mean(expected[("alpha", 2)][1])) / 3
    assert g["J-Mean"] == pytest.approx(j_mean)
    assert g["J-Recall"] == pytest.approx((1 + 1 / 3 + 0) / 3)
    assert g["J-Decay"] == pytest.approx(-0.125 / 3)
    assert g["F-Mean"] == pytest.approx(f_mean)
    assert g["J&F-Mean"] == pytest.approx((j_mean + f_mean) / 2)
    assert list(g) == list(GLOBAL_COLUMNS)


def test_pool_gives_the_same_numbers(davis):
    root, results = davis
    serial = evaluate_davis(root, results, progress=False, workers=1)
    pooled = evaluate_davis(root, results, progress=False, workers=2)
    assert serial.global_scores == pooled.global_scores
    for a, b in zip(serial.objects, pooled.objects):
        np.testing.assert_array_equal(a.f, b.f)


def test_csv_bytes_json_and_refusal(davis, tmp_path):
    root, results = davis
    result = evaluate_davis(root, results, progress=False, workers=1)
    global_path, sequence_path = write_official_csvs(result, results, "val")
    g = result.global_scores
    expected_global = ",".join(GLOBAL_COLUMNS) + "\n" + ",".join(f"{g[c]:.3f}" for c in GLOBAL_COLUMNS) + "\n"
    assert global_path.read_bytes() == expected_global.encode()
    assert global_path.name == "global_results-val.csv"
    rows = ["Sequence,J-Mean,F-Mean"] + [f"{o.name},{o.j_stats.mean:.3f},{o.f_stats.mean:.3f}" for o in result.objects]
    assert sequence_path.read_text() == "\n".join(rows) + "\n"
    assert sequence_path.read_text().splitlines()[1].startswith("alpha_1,0.917,")
    with pytest.raises(DMMInputError, match="global_results-val.csv"):
        write_official_csvs(result, results, "val")
    write_official_csvs(result, results, "val", force=True)

    json_path = write_json(result, tmp_path / "scores.json")
    data = json.loads(json_path.read_text())
    assert set(data["global"]) == set(GLOBAL_COLUMNS)
    assert data["global"]["J-Mean"] == g["J-Mean"]  # full precision
    first = data["objects"][0]
    assert first["name"] == "alpha_1" and first["sequence"] == "alpha" and first["object"] == 1
    assert first["J"] == [1.0, 0.75, 1.0] and len(first["F"]) == 3
    for key in ("J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay"):
        assert key in first
    with pytest.raises(DMMInputError, match="scores.json"):
        write_json(result, json_path)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "dmmlib", "evaluate", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_tables_and_writes_csvs(davis, tmp_path):
    root, results = davis
    out = run_cli("--davis-root", root, "--results", results, "--json", tmp_path / "s.json", "--workers", "1")
    assert out.returncode == 0, out.stderr
    assert "J&F-Mean" in out.stdout and "alpha_2" in out.stdout and "beta_1" in out.stdout
    assert (results / "global_results-val.csv").is_file() and (tmp_path / "s.json").is_file()
    again = run_cli("--davis-root", root, "--results", results, "--workers", "1")
    assert again.returncode == 2 and "already exists" in again.stderr and "Traceback" not in again.stderr


def _break_missing_frame(root, results):
    (results / "alpha" / "00002.png").unlink()
    return "alpha/00002.png"


def _break_wrong_size(root, results):
    write_label_png(results / "alpha" / "00003.png", np.zeros((H + 1, W), np.uint8))
    return "alpha/00003.png"


def _break_id_too_high(root, results):
    write_label_png(results / "beta" / "00002.png", np.full((H, W), 2, np.uint8))
    return "beta/00002.png"


def _break_void_in_result(root, results):
    write_label_png(results / "beta" / "00001.png", np.full((H, W), 255, np.uint8))
    return "beta/00001.png"


def _break_missing_split(root, results):
    (root / "ImageSets" / "2017" / "val.txt").unlink()
    return "val.txt"


def _break_empty_split(root, results):
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n")
    return "val.txt"


@pytest.mark.parametrize(
    "breaker, words",
    [
        (_break_missing_frame, "missing"),
        (_break_wrong_size, "21x30"),
        (_break_id_too_high, "object id 2"),
        (_break_void_in_result, "255"),
        (_break_missing_split, "does not exist"),
        (_break_empty_split, "no sequences"),
    ],
)
def test_cli_errors_name_the_file(davis, breaker, words):
    root, results = davis
    named = breaker(root, results)
    out = run_cli("--davis-root", root, "--results", results, "--workers", "1", "--no-progress")
    assert out.returncode == 2
    assert out.stderr.startswith("error: ")
    assert named in out.stderr and words in out.stderr
    assert "Traceback" not in out.stderr
    assert not (results / "global_results-val.csv").exists()


def test_error_from_a_worker_thread_is_a_clear_error(davis):
    root, results = davis
    (results / "beta" / "00001.png").unlink()
    with pytest.raises(DMMInputError, match="beta/00001.png"):
        evaluate_davis(root, results, progress=False, workers=2)


def test_layout_errors_name_the_folder(davis):
    root, results = davis
    (results / "beta" / "00001.png").rename(results / "beta-moved")
    (results / "beta" / "00002.png").unlink()
    (results / "beta").rmdir()
    with pytest.raises(DMMInputError, match="results folder .*beta"):
        evaluate_davis(root, results, progress=False, workers=1)
    (root / "Annotations" / "480p" / "alpha" / "00004.png").unlink()
    with pytest.raises(DMMInputError, match="4 annotation PNGs .* 5 frames"):
        evaluate_davis(root, results, progress=False, workers=1)
    for jpg in (root / "JPEGImages" / "480p" / "alpha").glob("*.jpg"):
        jpg.unlink()
    with pytest.raises(DMMInputError, match="no JPEG frames in .*alpha"):
        evaluate_davis(root, results, progress=False, workers=1)


def test_too_short_sequences_and_mixed_sizes_are_errors(tmp_path):
    root, results = tmp_path / "D", tmp_path / "R"
    gt = labels_from(rect(2, 6, 2, 8))
    write_sequence(root, results, "short", [gt, gt], {})
    (results / "short").mkdir(parents=True)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("short\n")
    with pytest.raises(DMMInputError, match="at least 3"):
        evaluate_davis(root, results, progress=False, workers=1)
    write_sequence(root, results, "mixed", [gt, np.zeros((H, W + 2), np.uint8), gt], {1: gt})
    (root / "ImageSets" / "2017" / "val.txt").write_text("mixed\n")
    with pytest.raises(DMMInputError, match="mixed/00001.png is 20x32"):
        evaluate_davis(root, results, progress=False, workers=1)


def test_sequence_without_objects_contributes_nothing(davis):
    root, results = davis
    empty = np.zeros((H, W), np.uint8)
    write_sequence(root, results, "gamma", [empty] * 3, {1: empty})
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\ngamma\n")
    with_gamma = evaluate_davis(root, results, progress=False, workers=1)
    assert [o.sequence for o in with_gamma.objects] == ["alpha", "alpha", "beta"]
