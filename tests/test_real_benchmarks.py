"""The whole pipeline on tiny fixtures in the real on-disk formats of DAVIS 2017, YouTube-VOS and SegTrack v2.

Commands run in-process through ``dmmlib.cli.main`` (the same parser and code as
``python -m dmmlib``; one subprocess checks the exit status of an error). "Oracle"
runs (proposals cut from the ground truth, an IoU-driven model without refinement)
must reproduce the ground truth, so their scores check layouts, frame names, the
late-object protocol and the metrics' frame sets exactly.
"""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dmmlib.cli import main as cli
from dmmlib.data.masks import read_label_png, write_label_png
from dmmlib.lessons.fixtures import (
    write_davis_fixture,
    write_oracle_checkpoint,
    write_oracle_proposals,
    write_segtrack_fixture,
    write_youtube_vos_fixture,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def smoke_profile_one_thread(monkeypatch, one_torch_thread):
    monkeypatch.setenv("DMM_PROFILE", "smoke")


def iou(a, b) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def assert_tracked(result, truth, ids, at_least=0.95):
    """Every object's IoU with the ground truth is high (soft pasted masks may differ by a pixel or two)."""
    for i in ids:
        assert iou(result == i, truth == i) >= at_least, (i, iou(result == i, truth == i))


def run(*argv) -> None:
    code = cli([str(a) for a in argv])
    assert code == 0, argv


# ---------------------------------------------------------------- tracking: objects entering late


def test_track_adds_objects_that_enter_late(tmp_path):
    from dmmlib.model import DMMNet, default_config
    from dmmlib.proposals import proposals_from_labels
    from dmmlib.tracking import TrackOptions, track

    QUIET = TrackOptions(progress=False)
    fixture = write_youtube_vos_fixture(tmp_path, videos=1, heldout_split=None)
    video = fixture.videos["train"][0]
    frames, labels = video.frames, video.labels  # 6 fps; object 2 first appears at index 2
    assert not (labels[:2] == 2).any() and (labels[2] == 2).any()
    proposals = [proposals_from_labels(lab, n_noise=3, rng=np.random.default_rng(t)) for t, lab in enumerate(labels)]
    first = np.where(labels[0] == 1, 1, 0).astype(np.uint8)
    later = {2: np.where(labels[2] == 2, 2, 0).astype(np.uint8)}
    oracle = DMMNet(default_config("smoke", lam=0.99, refine=False, no_proposal_cost=-0.3))
    out = list(track(frames, first, model=oracle, proposals=proposals, later_masks=later, options=QUIET))
    for t in range(len(frames)):
        assert_tracked(out[t], labels[t], (1, 2))
    np.testing.assert_array_equal(out[2] == 2, labels[2] == 2)  # the template frame gives the result
    # the DAVIS protocol (no later masks): object 2 is never output
    plain = list(track(frames, first, model=oracle, proposals=proposals, options=QUIET))
    assert all(not (o == 2).any() for o in plain)
    # the refinement head's ConvLSTM memory grows with the new object; its given mask is the result there
    refined = DMMNet(default_config("smoke"))
    out = list(track(frames, first, model=refined, proposals=proposals, later_masks=later, options=QUIET))
    assert len(out) == 6 and np.array_equal(out[2] == 2, labels[2] == 2)
    # a video whose first frame holds no object yet
    empty = np.zeros_like(first)
    out = list(track(frames, empty, model=oracle, proposals=proposals, later_masks=later, options=QUIET))
    assert not out[0].any() and not out[1].any() and not (out[3] == 1).any()
    assert_tracked(out[3], labels[3], (2,))


def test_add_objects_pads_the_lstm_state_per_video():
    from dmmlib.model import DMMNet, default_config
    from dmmlib.proposals import proposals_from_labels
    from dmmlib.tracking import add_objects

    model = DMMNet(default_config("smoke")).eval()
    frame = torch.rand(1, 3, 64, 96)
    masks = torch.zeros(1, 2, 64, 96)
    masks[0, 0, 5:20, 5:30] = 1
    masks[0, 1, 30:50, 40:80] = 1
    labels = (masks[0, 0] + 2 * masks[0, 1]).numpy().astype(np.uint8)
    with torch.no_grad():
        state = model.init_state(frame, masks[:, :1])
        _, state = model.step(frame, [proposals_from_labels(labels)], state)
        grown = add_objects(model, state, frame, masks[:, 1:])
        assert grown.template_features.shape[1] == 2 and grown.template_valid.all()
        for (h_old, _), (h_new, c_new) in zip(state.lstm, grown.lstm):
            assert h_new.shape[0] == 2 and torch.equal(h_new[0], h_old[0]) and not h_new[1].any() and not c_new[1].any()
        out, _ = model.step(frame, [proposals_from_labels(labels)], grown)
    assert out.logits.shape == (1, 2, 64, 96)


# ---------------------------------------------------------------- DAVIS 2017


def test_davis_proposals_train_predict_evaluate(tmp_path):
    root = tmp_path / "DAVIS"
    write_davis_fixture(root, {"train": ["train-a"], "val": ["val-a"]}, frames=3)
    run("proposals", "train", "--data", root, "--out", tmp_path / "proposal_net.pt", "--steps", 1)
    for split in ("train", "val"):
        run("proposals", "compute", "--data", root, "--split", split, "--checkpoint", tmp_path / "proposal_net.pt",
            "--cache", tmp_path / "cache")
    run("train", "--config", "davis2017", "--data", root, "--out", tmp_path / "run",
        "--set", "profile=smoke", "--set", "frame_size=[64,112]", "--set", "max_objects=2",
        "--set", "clips_per_epoch=1", "--set", "max_steps=1", "--set", "num_workers=0", "--set", "device=cpu",
        "--set", "init_checkpoint=null", "--set", "lr_pretrained=1e-4", "--set", "lr_random=1e-3",
        "--set", f"proposal_cache={tmp_path / 'cache'}", "--set", "model.backbone=resnet18",
        "--set", "model.refine_width=8")
    assert (tmp_path / "run/model.pt").is_file()
    run("predict", "--davis-root", root, "--split", "val", "--out", tmp_path / "res",
        "--checkpoint", tmp_path / "run/model.pt", "--proposals-cache", tmp_path / "cache")
    assert sorted(p.name for p in (tmp_path / "res/val-a").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    run("evaluate", "--davis-root", root, "--results", tmp_path / "res", "--workers", "1", "--no-progress")
    with open(tmp_path / "res/global_results-val.csv") as handle:
        row = next(csv.DictReader(handle))
    assert set(row) >= {"J&F-Mean", "J-Mean", "F-Mean"}
    # J-Mean by the official semantics, from the PNGs (PIL, not dmmlib): objects 1..max of the first
    # annotation after void (255) -> 0, first and last frames dropped, J = |gt & pred| / |gt | pred|
    # (1 when both are empty), the mean over objects; the CSV is written with three decimals
    gt = [np.array(Image.open(root / f"Annotations/480p/val-a/{t:05d}.png")) for t in range(3)]
    gt = [np.where(g == 255, 0, g) for g in gt]
    pred = np.array(Image.open(tmp_path / "res/val-a/00001.png"))
    j = [iou(gt[1] == k, pred == k) for k in range(1, int(gt[0].max()) + 1)]
    assert len(j) == 2
    assert float(row["J-Mean"]) == pytest.approx(np.mean(j), abs=5e-4 + 1e-9)
    assert float(row["J&F-Mean"]) == pytest.approx((float(row["J-Mean"]) + float(row["F-Mean"])) / 2, abs=1e-3)


def test_davis_oracle_scores_one(tmp_path):
    fixture = write_davis_fixture(tmp_path / "DAVIS", ["val-a"], frames=4)
    write_oracle_proposals(fixture, tmp_path / "cache", "val")
    write_oracle_checkpoint(tmp_path / "oracle.pt")
    run("predict", "--root", tmp_path / "DAVIS", "--out", tmp_path / "res", "--checkpoint", tmp_path / "oracle.pt",
        "--proposals-cache", tmp_path / "cache")
    run("evaluate", "--root", tmp_path / "DAVIS", "--results", tmp_path / "res", "--workers", "1", "--no-progress",
        "--json", tmp_path / "scores.json")
    scores = json.loads((tmp_path / "scores.json").read_text())["global"]
    assert scores["J-Mean"] >= 0.95 and scores["F-Mean"] >= 0.95


# ---------------------------------------------------------------- YouTube-VOS


def test_youtube_vos_predict_submission_layout_and_seen_unseen_scores(tmp_path, capsys):
    root = tmp_path / "youtube-vos"
    fixture = write_youtube_vos_fixture(root, videos=1)
    write_oracle_checkpoint(tmp_path / "oracle.pt")
    for split in ("train-val", "valid"):
        write_oracle_proposals(fixture, tmp_path / "cache", split)

    # valid: tracked over every 30 fps frame (valid_all_frames), written for the 6 fps names only
    run("predict", "--dataset", "youtube-vos", "--root", root, "--split", "valid", "--out", tmp_path / "valid",
        "--checkpoint", tmp_path / "oracle.pt", "--proposals-cache", tmp_path / "cache")
    video = fixture.videos["valid"][0]
    folder = tmp_path / "valid/Annotations" / video.name
    assert sorted(p.stem for p in folder.iterdir()) == video.frame_names  # 00000, 00005, ..., 00025
    for k, name in enumerate(video.frame_names):
        result = read_label_png(folder / f"{name}.png")
        assert_tracked(result, video.labels[k], (1, 2))  # object 2 from 00010 on, from its template alone
        assert (result == 2).any() == (name >= "00010")

    # a held-out split with ground truth: J = F = 1 for the seen object and the unseen late one
    run("predict", "--dataset", "youtube-vos", "--root", root, "--split", "train-val", "--out", tmp_path / "tv",
        "--checkpoint", tmp_path / "oracle.pt", "--proposals-cache", tmp_path / "cache")
    capsys.readouterr()
    run("evaluate", "--dataset", "youtube-vos", "--root", root, "--split", "train-val", "--results", tmp_path / "tv",
        "--json", tmp_path / "tv.json")
    assert "J_S" in capsys.readouterr().out
    scores = json.loads((tmp_path / "tv.json").read_text())
    for key in ("J_seen", "J_unseen", "F_seen", "F_unseen", "G"):
        assert scores[key] >= 0.95, key
    objects = {(o["object"], o["seen"], o["frames"]) for o in scores["objects"]}
    assert objects == {(1, True, 5), (2, False, 3)}  # frames after each object's template frame

    # a wrong result lowers exactly the object it belongs to; G is the mean of the four
    tv_video = fixture.videos["train-val"][0]
    write_label_png(tmp_path / "tv/Annotations" / tv_video.name / "00025.png",
                    np.where(tv_video.labels[5] == 2, 0, tv_video.labels[5]).astype(np.uint8))
    from dmmlib.evaluation.youtube_vos import evaluate_youtube_vos

    worse = evaluate_youtube_vos(root, "train-val", tmp_path / "tv")
    assert worse["J_seen"] == pytest.approx(scores["J_seen"])  # object 1 untouched
    assert worse["J_unseen"] == pytest.approx(scores["J_unseen"] - 1 / 3, abs=0.03)  # 1 of its 3 frames lost
    assert worse["G"] == pytest.approx((worse["J_seen"] + worse["J_unseen"] + worse["F_seen"] + worse["F_unseen"]) / 4)
    only_cat = evaluate_youtube_vos(root, "train-val", tmp_path / "tv", seen_categories=["nothing"])
    assert np.isnan(only_cat["J_seen"]) and np.isnan(only_cat["G"])


# ---------------------------------------------------------------- SegTrack v2


def test_segtrack_predict_and_miou_frame_sets(tmp_path):
    root = tmp_path / "SegTrackv2"
    fixture = write_segtrack_fixture(root, frames=4)
    write_oracle_checkpoint(tmp_path / "oracle.pt")
    write_oracle_proposals(fixture, tmp_path / "cache", "all")
    run("predict", "--dataset", "segtrack", "--root", root, "--out", tmp_path / "res",
        "--checkpoint", tmp_path / "oracle.pt", "--proposals-cache", tmp_path / "cache")
    penguin = fixture.video("all", "penguin")
    written = sorted(p.name for p in (tmp_path / "res/penguin").iterdir())
    assert written == [f"{n}.png" for n in penguin.frame_names]
    assert_tracked(read_label_png(tmp_path / "res/penguin" / f"{penguin.frame_names[3]}.png"), penguin.labels[3], (1, 2))

    from dmmlib.evaluation.segtrack import evaluate_segtrack

    perfect = evaluate_segtrack(root, tmp_path / "res")
    assert perfect["mIoU*"] == pytest.approx(1.0, abs=0.01) and perfect["mIoU†"] == pytest.approx(1.0, abs=0.01)
    assert perfect["frames"] == 3 * 3  # frame 0 is given: 3 scored frames in each of 3 sequences

    # empty penguin's object 2 in frame 1 and bird's object in frame 0 (never scored)
    frame = penguin.frame_names[1]
    write_label_png(tmp_path / "res/penguin" / f"{frame}.png",
                    np.where(penguin.labels[1] == 2, 0, penguin.labels[1]).astype(np.uint8))
    bird = fixture.video("all", "bird")
    write_label_png(tmp_path / "res/bird" / f"{bird.frame_names[0]}.png", np.zeros_like(bird.labels[0]))
    scores = evaluate_segtrack(root, tmp_path / "res")
    # mIoU*: 9 frames, one of them averages penguin's (1 + 0) / 2; mIoU†: 4 instances, one at 2/3
    assert scores["mIoU*"] == pytest.approx((8 + 0.5) / 9, abs=0.01)
    assert scores["mIoU†"] == pytest.approx((3 + 2 / 3) / 4, abs=0.01)


def test_commands_report_bad_roots_with_exit_status_2(tmp_path, capsys):
    result = subprocess.run(
        [sys.executable, "-m", "dmmlib", "evaluate", "--dataset", "segtrack", "--root", tmp_path / "nowhere",
         "--results", tmp_path],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert result.returncode == 2 and "segtrack root" in result.stderr and "Traceback" not in result.stderr
    (tmp_path / "yt/valid").mkdir(parents=True)
    (tmp_path / "cache").mkdir()
    capsys.readouterr()
    code = cli(["predict", "--dataset", "youtube-vos", "--root", str(tmp_path / "yt"), "--out", str(tmp_path / "o"),
                "--proposals-cache", str(tmp_path / "cache")])
    assert code == 2 and "valid/meta.json does not exist" in capsys.readouterr().err  # before any model is built
