"""Every command against a catalogue of bad inputs and faults: nothing a user owns is ever lost.

Each case runs one ``python -m dmmlib`` command (in-process through :func:`dmmlib.cli.main`,
or in a subprocess where a read-only folder needs a private mount namespace) and asserts:

* exit status 2 and exactly one ``error:`` line, which names the offending file or argument;
* no traceback, and no advice to load a file with ``weights_only=False``;
* every file under the inputs and the case's folder is unchanged (SHA-256 before and after),
  and no file or folder was added -- no new, partial or staged output.

The inputs are tiny fixtures in the real layouts (:mod:`dmmlib.lessons.fixtures`), built once.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pickle
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from PIL import Image

from dmmlib.checkpoints import TRAINING_CHECKPOINT_FORMAT, save_training_checkpoint
from dmmlib.cli import main as cli_main
from dmmlib.data import DavisDataset, SynthConfig, generate_benchmark
from dmmlib.data.masks import write_label_png
from dmmlib.lessons.fixtures import (
    write_davis_fixture,
    write_oracle_checkpoint,
    write_oracle_proposals,
)
from dmmlib.proposals.train import train_config_for_profile, train_proposal_net

ROOT = Path(__file__).resolve().parents[1]
TINY = SynthConfig(train_videos=2, val_videos=1, frames=4, height=40, width=64)


# ----------------------------------------------------------------------------- the inputs, built once


@dataclass
class World:
    base: Path
    davis: Path  # DAVIS layout: val-a (val), train-a (train); 5 frames of 64 x 112
    results: Path  # perfect results of val
    oracle: Path  # a DMMNet checkpoint that follows the oracle proposals
    cache: Path  # oracle proposals of val
    png_frames: Path  # val-a's frames as PNGs, in a folder named like the sequence
    mask: Path  # val-a's first-frame label PNG
    seven: Path  # a synthetic benchmark made with seed 7
    run: Path  # a run folder: a readable checkpoint (step 2) and an unreadable newer one (step 4)
    broken_run: Path  # a run folder whose only checkpoint is unreadable
    net: Path  # an (untrained) proposal-net checkpoint of `proposals train`


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("inputs")
    fixture = write_davis_fixture(base / "davis", {"val": ("val-a",), "train": ("train-a",)}, frames=5)
    video = fixture.video("val", "val-a")
    (base / "png" / "val-a").mkdir(parents=True)
    for t, (name, labels) in enumerate(zip(video.frame_names, video.labels)):
        write_label_png(base / "results" / "val-a" / f"{name}.png", np.where(labels == 255, 0, labels))
        Image.fromarray(video.frames[t]).save(base / "png" / "val-a" / f"{name}.png")
    shutil.copy(base / "davis/Annotations/480p/val-a/00000.png", base / "mask.png")
    oracle = write_oracle_checkpoint(base / "oracle.pt")
    cache = write_oracle_proposals(fixture, base / "cache", "val")
    seven = generate_benchmark(base / "seven", TINY, seed=7, progress=False)
    for run, steps in ((base / "run", (2, 4)), (base / "broken-run", (4,))):
        for step in steps:
            save_training_checkpoint(run, {"format": TRAINING_CHECKPOINT_FORMAT, "step": step}, keep=5)
        (run / "checkpoints" / f"step_{steps[-1]:07d}.pt").write_bytes(b"\x00" * 64)  # the newest is broken
    net = base / "net.pt"
    train_proposal_net(base / "davis", net, train_config_for_profile("smoke").replace(steps=0), progress=False)
    return World(base, base / "davis", base / "results", oracle, cache, base / "png" / "val-a", base / "mask.png",
                 seven, base / "run", base / "broken-run", net)


# ----------------------------------------------------------------------------- helpers for the cases


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def jpeg_named_png(path: Path, size=(112, 64)) -> Path:
    """A greyscale JPEG saved under a .png name: its content is not what its suffix claims."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full(size[::-1], 1, np.uint8)).save(path, format="JPEG")
    return path


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[:200])
    return path


def malicious_pickle(path: Path) -> Path:
    class Payload:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(path, "wb") as handle:
        pickle.dump({"state_dict": Payload()}, handle)
    return path


def davis_with_bad_frame(d: Path, w: World, kind: str) -> Path:
    """A copy of the DAVIS fixture whose val-a frame 00002 is truncated or of another size."""
    root = copy_tree(w.davis, d / "davis")
    frame = root / "JPEGImages/480p/val-a/00002.jpg"
    if kind == "truncated":
        truncate(frame)
    else:
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(frame, format="JPEG")
    return root


def davis_all_frames_truncated(d: Path, w: World) -> Path:
    """A copy of the DAVIS fixture whose frames after the first are all truncated: any training clip meets one."""
    root = copy_tree(w.davis, d / "davis")
    for frame in root.glob("JPEGImages/480p/*/*.jpg"):
        if frame.stem != "00000":
            truncate(frame)
    return root


def youtube_root(d: Path, meta: bytes | str) -> Path:
    write(d / "yt" / "valid" / "meta.json", meta)
    return d / "yt"


def frames_with_bad_frame(d: Path, w: World, kind: str) -> Path:
    folder = d / "val-a"  # named like the sequence: the oracle cache is keyed by it
    shutil.copytree(w.davis / "JPEGImages/480p/val-a", folder)
    if kind == "truncated":
        truncate(folder / "00002.jpg")
    else:
        Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(folder / "00002.jpg", format="JPEG")
    return folder


def oracle_args(w: World) -> list[str]:
    return ["--checkpoint", str(w.oracle), "--proposals-cache", str(w.cache), "--device", "cpu"]


def track(w: World, frames, mask, out, *extra) -> list[str]:
    return ["track", "--frames", str(frames), "--mask", str(mask), "--out", str(out), *extra]


def predict(w: World, root, out, *extra) -> list[str]:
    return ["predict", "--davis-root", str(root), "--out", str(out), *oracle_args(w), *extra]


def evaluate(w: World, results, *extra, root=None) -> list[str]:
    return ["evaluate", "--davis-root", str(root or w.davis), "--results", str(results), "--no-progress",
            "--workers", "1", *extra]


def results_copy(d: Path, w: World) -> Path:
    return copy_tree(w.results, d / "results")


def split_file(root: Path, content: bytes) -> Path:
    path = root / "ImageSets/2017/val.txt"
    path.write_bytes(content)
    return root


def write(path: Path, content: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def train(w: World, out, *extra) -> list[str]:
    return ["train", "--config", "smoke", "--out", str(out), *extra]


# ----------------------------------------------------------------------------- the catalogue


@dataclass
class Case:
    name: str
    argv: Callable[[World, Path], list[str]]  # builds the bad input in the case's folder, returns the command
    expect: tuple[str, ...]  # each must appear in the error line
    env: dict = field(default_factory=dict)
    readonly: Callable[[World, Path], Path] | None = None  # a folder to mount read-only (then: a subprocess)


CASES = [
    # ---- info
    Case("info-unknown-profile", lambda w, d: ["info"], ("DMM_PROFILE='bogus'", "smoke, cpu, gpu"),
         env={"DMM_PROFILE": "bogus"}),
    # ---- track: outputs apart from inputs
    Case("track-out-is-png-frames-with-force",
         lambda w, d: track(w, w.png_frames, w.mask, w.png_frames, "--force", *oracle_args(w)),
         ("--out", "is --frames")),
    Case("track-out-inside-frames",
         lambda w, d: track(w, w.png_frames, w.mask, w.png_frames / "labels", *oracle_args(w)),
         ("lies inside --frames",)),
    Case("track-out-contains-frames",
         lambda w, d: track(w, w.png_frames, w.mask, w.png_frames.parent, "--force", *oracle_args(w)),
         ("contains --frames",)),
    Case("track-out-is-the-mask-folder",
         lambda w, d: track(w, w.png_frames, copy_tree(w.davis / "Annotations/480p/val-a", d / "ann") / "00000.png",
                            d / "ann", "--force", *oracle_args(w)),
         ("contains --mask",)),
    Case("track-out-is-a-file",
         lambda w, d: track(w, w.png_frames, w.mask, write(d / "out", "mine"), *oracle_args(w)),
         ("--out", "is a file")),
    Case("track-out-holds-pngs",
         lambda w, d: track(w, w.png_frames, w.mask, write(d / "out" / "00000.png", b"x").parent, *oracle_args(w)),
         ("refusing to overwrite", "--force")),
    Case("track-sequence-is-a-path",
         lambda w, d: track(w, w.png_frames, w.mask, d / "out", "--sequence", "../val-a", *oracle_args(w)),
         ("--sequence", "not a plain name")),
    # ---- track: the mask, checked before any model is built
    Case("track-mask-missing", lambda w, d: track(w, w.png_frames, d / "nope.png", d / "out"),
         ("--mask", "nope.png", "does not exist")),
    Case("track-mask-jpeg-named-png", lambda w, d: track(w, w.png_frames, jpeg_named_png(d / "m.png"), d / "out"),
         ("--mask", "m.png", "holds JPEG data", ".png")),
    Case("track-mask-rgb", lambda w, d: track(w, w.png_frames, _rgb_png(d / "rgb.png"), d / "out"),
         ("--mask", "rgb.png", "RGB image")),
    Case("track-mask-other-size", lambda w, d: track(w, w.png_frames, _label_png(d / "small.png", (10, 10)), d / "out"),
         ("--mask has size 10x10", "00000.png")),
    Case("track-mask-no-object",
         lambda w, d: track(w, w.png_frames, _label_png(d / "empty.png", (64, 112), 0), d / "out"),
         ("--mask holds no object",)),
    Case("track-size-too-small", lambda w, d: track(w, w.png_frames, w.mask, d / "out", "--size", "8", "8"),
         ("size=", "at least 16")),
    # ---- track: bad frames mid-video, models and checkpoints
    Case("track-truncated-frame-mid-video",
         lambda w, d: track(w, frames_with_bad_frame(d, w, "truncated"), w.mask, d / "out", *oracle_args(w)),
         ("00002.jpg",)),
    Case("track-frame-of-another-size-mid-video",
         lambda w, d: track(w, frames_with_bad_frame(d, w, "size"), w.mask, d / "out", *oracle_args(w)),
         ("00002.jpg", "is 32x48; expected 64x112")),
    Case("track-checkpoint-truncated",
         lambda w, d: track(w, w.png_frames, w.mask, d / "out", "--checkpoint",
                            str(truncate(Path(shutil.copy(w.oracle, d / "model.pt"))))),
         ("model.pt", "not a readable torch file")),
    Case("track-checkpoint-malicious",
         lambda w, d: track(w, w.png_frames, w.mask, d / "out", "--checkpoint", str(malicious_pickle(d / "evil.pt"))),
         ("evil.pt",)),
    Case("track-frames-not-a-video",
         lambda w, d: track(w, write(d / "clip.mp4", b"not a video at all"), w.mask, d / "out"),
         ("clip.mp4", "neither a folder of images nor a video")),
    Case("track-frames-missing", lambda w, d: track(w, d / "nowhere", w.mask, d / "out"),
         ("nowhere", "does not exist")),
    Case("track-checkpoint-is-a-folder",
         lambda w, d: track(w, w.png_frames, w.mask, d / "out", "--checkpoint", str(_mkdir(d / "model.pt"))),
         ("checkpoint", "is a folder")),
    # ---- predict
    Case("predict-sequence-is-a-path",
         lambda w, d: predict(w, w.davis, d / "out", "--sequences", "../480p/val-a"),
         ("--sequences", "not a plain name")),
    Case("predict-split-is-a-path",
         lambda w, d: predict(w, w.davis, d / "out", "--split", "../../ImageSets/2017/val"),
         ("--split", "not a plain name")),
    Case("predict-resolution-is-a-path",
         lambda w, d: predict(w, w.davis, d / "out", "--resolution", "../480p"),
         ("--resolution", "not a plain name")),
    Case("predict-out-is-the-dataset", lambda w, d: predict(w, w.davis, w.davis, "--force"),
         ("--out", "is --davis-root")),
    Case("predict-out-inside-the-dataset", lambda w, d: predict(w, w.davis, w.davis / "JPEGImages/480p", "--force"),
         ("lies inside --davis-root",)),
    Case("predict-out-is-the-cache", lambda w, d: predict(w, w.davis, w.cache, "--force"),
         ("is --proposals-cache",)),
    Case("predict-split-file-lists-a-path",
         lambda w, d: predict(w, split_file(copy_tree(w.davis, d / "davis"), b"../480p/val-a\n"), d / "out"),
         ("split file", "val.txt", "line 1", "not a plain name")),
    Case("predict-split-file-not-utf8",
         lambda w, d: predict(w, split_file(copy_tree(w.davis, d / "davis"), b"val-\xff\xfea\n"), d / "out"),
         ("val.txt", "not UTF-8")),
    Case("predict-truncated-frame-mid-video",
         lambda w, d: predict(w, davis_with_bad_frame(d, w, "truncated"), d / "out"),
         ("00002.jpg", "not a readable image")),
    Case("predict-results-exist",
         lambda w, d: predict(w, w.davis, results_copy(d, w)),
         ("refusing to overwrite", "--force")),
    Case("predict-result-folder-is-a-file",
         lambda w, d: predict(w, w.davis, write(d / "out" / "val-a", "mine").parent),
         ("val-a", "is a file")),
    Case("predict-youtube-meta-malformed",
         lambda w, d: ["predict", "--dataset", "youtube-vos", "--root", str(youtube_root(d, '{"videos": {')),
                       "--out", str(d / "out")],
         ("meta.json", "not valid JSON")),
    Case("predict-youtube-video-name-is-a-path",
         lambda w, d: ["predict", "--dataset", "youtube-vos", "--root",
                       str(youtube_root(d, '{"videos": {"../../escape": {"objects": {}}}}')), "--out", str(d / "out")],
         ("meta.json", "'../../escape'", "not a plain name")),
    Case("predict-lam-out-of-range", lambda w, d: predict(w, w.davis, d / "out", "--lam", "2"), ("--lam",)),
    Case("predict-size-too-small", lambda w, d: predict(w, w.davis, d / "out", "--size", "8", "300"),
         ("size=", "at least 16")),
    Case("predict-online-steps-negative", lambda w, d: predict(w, w.davis, d / "out", "--online-steps", "-1"),
         ("online_steps=-1",)),
    # ---- evaluate
    Case("evaluate-split-is-a-path",
         lambda w, d: evaluate(w, results_copy(d, w), "--split", "../../ImageSets/2017/val", "--force"),
         ("--split", "not a plain name")),
    Case("evaluate-json-onto-the-csv",
         lambda w, d: evaluate(w, results_copy(d, w), "--json", str(d / "results/global_results-val.csv"), "--force"),
         ("global_results-val.csv", ".json")),
    Case("evaluate-json-exists",
         lambda w, d: evaluate(w, results_copy(d, w), "--json", str(write(d / "scores.json", "{}"))),
         ("scores.json", "already exists", "--force")),
    Case("evaluate-json-is-a-folder",
         lambda w, d: evaluate(w, results_copy(d, w), "--json", str(_mkdir(d / "s.json"))),
         ("s.json", "is a folder")),
    Case("evaluate-csv-is-a-folder",
         lambda w, d: evaluate(w, _mkdir(results_copy(d, w) / "per-sequence_results-val.csv").parent),
         ("per-sequence_results-val.csv", "is a folder")),
    Case("evaluate-result-jpeg-named-png",
         lambda w, d: evaluate(w, _with(results_copy(d, w), lambda r: jpeg_named_png(r / "val-a/00002.png"))),
         ("00002.png", "holds JPEG data")),
    Case("evaluate-result-other-size",
         lambda w, d: evaluate(w, _with(results_copy(d, w), lambda r: _label_png(r / "val-a/00002.png", (10, 10), 1))),
         ("00002.png", "10x10")),
    Case("evaluate-results-are-the-dataset", lambda w, d: evaluate(w, w.davis, "--force"),
         ("--results", "is --davis-root")),
    Case("evaluate-result-is-a-folder",
         lambda w, d: evaluate(w, _with(results_copy(d, w), lambda r: (r / "val-a/00002.png").unlink()
                                        or _mkdir(r / "val-a/00002.png"))),
         ("00002.png", "is a folder")),
    Case("evaluate-json-inside-the-dataset",
         lambda w, d: evaluate(w, results_copy(d, w), "--json", str(w.davis / "scores.json")),
         ("--json", "lies inside --davis-root")),
    Case("evaluate-seen-split-is-a-path",
         lambda w, d: ["evaluate", "--dataset", "youtube-vos", "--root", str(w.davis), "--results", str(w.results),
                       "--seen-split", "../train"],
         ("--seen-split", "not a plain name")),
    Case("evaluate-workers-zero", lambda w, d: evaluate(w, results_copy(d, w), "--workers", "0"),
         ("workers",)),
    Case("evaluate-seen-categories-not-utf8",
         lambda w, d: ["evaluate", "--dataset", "youtube-vos", "--root", str(w.davis), "--results", str(w.results),
                       "--seen-categories", str(write(d / "seen.txt", b"cat\n\xff\xfe\n"))],
         ("seen.txt", "not UTF-8")),
    # ---- data synth
    Case("synth-force-on-a-davis-copy",
         lambda w, d: ["data", "synth", "--out", str(w.davis), "--force", "--profile", "smoke", "--quiet"],
         ("even with --force",)),
    Case("synth-out-not-empty", lambda w, d: ["data", "synth", "--out", str(w.seven), "--profile", "smoke", "--quiet"],
         ("not empty", "--force")),
    Case("synth-out-is-a-file",
         lambda w, d: ["data", "synth", "--out", str(write(d / "bench", "x")), "--profile", "smoke", "--quiet"],
         ("bench", "not a folder")),
    Case("synth-one-frame", lambda w, d: ["data", "synth", "--out", str(d / "b"), "--frames", "1", "--quiet"],
         ("SynthConfig.frames",)),
    # ---- proposals
    Case("proposals-compute-cache-is-the-data",
         lambda w, d: ["proposals", "compute", "--data", str(w.davis), "--checkpoint", str(w.oracle),
                       "--cache", str(w.davis / "cache")],
         ("--cache", "lies inside --data")),
    Case("proposals-compute-split-is-a-path",
         lambda w, d: ["proposals", "compute", "--data", str(w.davis), "--split", "../val",
                       "--checkpoint", str(w.oracle), "--cache", str(d / "c")],
         ("--split", "not a plain name")),
    Case("proposals-compute-checkpoint-corrupt",
         lambda w, d: ["proposals", "compute", "--data", str(w.davis), "--checkpoint",
                       str(write(d / "net.pt", b"\x00" * 100)), "--cache", str(d / "c"), "--device", "cpu"],
         ("net.pt",)),
    Case("proposals-compute-truncated-frame-mid-sequence",
         lambda w, d: ["proposals", "compute", "--data", str(davis_with_bad_frame(d, w, "truncated")),
                       "--checkpoint", str(w.net), "--cache", str(d / "cache"), "--device", "cpu"],
         ("00002.jpg", "not a readable image")),
    Case("proposals-compute-cache-of-another-network",
         lambda w, d: ["proposals", "compute", "--data", str(w.davis), "--checkpoint", str(w.net),
                       "--cache", str(w.cache), "--device", "cpu"],
         ("cache", "unrecorded network")),
    Case("proposals-train-resume-corrupt",
         lambda w, d: ["proposals", "train", "--data", str(w.davis), "--resume", "--device", "cpu",
                       "--out", str(write(d / "net.pt", b"\x00" * 64))],
         ("net.pt", "not a readable torch file")),
    Case("proposals-train-out-inside-data",
         lambda w, d: ["proposals", "train", "--data", str(w.davis), "--out", str(w.davis / "net.pt")],
         ("--out", "lies inside --data")),
    Case("proposals-train-out-is-a-folder",
         lambda w, d: ["proposals", "train", "--data", str(w.davis), "--out", str(d)],
         ("is a folder",)),
    Case("proposals-recall-split-is-a-path",
         lambda w, d: ["proposals", "recall", "--data", str(w.davis), "--split", "a/b", "--cache", str(w.cache)],
         ("--split", "not a plain name")),
    # ---- train
    Case("train-resume-newest-checkpoint-unreadable", lambda w, d: train(w, w.run, "--resume"),
         ("step_0000004.pt", "step_0000002.pt (step 2) is readable", "--resume")),
    Case("train-resume-no-readable-checkpoint", lambda w, d: train(w, w.broken_run, "--resume"),
         ("step_0000004.pt", "--force")),
    Case("train-data-missing", lambda w, d: train(w, d / "run", "--data", str(d / "nowhere")),
         ("nowhere", "does not exist", "data synth --out")),
    Case("train-data-not-a-benchmark", lambda w, d: train(w, d / "run", "--data", str(_mkdir(d / "photos"))),
         ("photos", "Annotations", "does not exist")),
    Case("train-out-is-the-data", lambda w, d: train(w, w.seven, "--data", str(w.seven), "--force"),
         ("run folder", "is the data folder")),
    Case("train-out-inside-the-data", lambda w, d: train(w, w.seven / "run", "--data", str(w.seven)),
         ("run folder", "lies inside the data folder")),
    Case("train-out-is-a-file", lambda w, d: train(w, write(d / "run", "x"), "--data", str(w.seven)),
         ("run folder", "is a file")),
    Case("train-config-not-utf8", lambda w, d: ["train", "--config", str(write(d / "c.yaml", b"seed: \xff\n")),
                                                "--out", str(d / "run")],
         ("c.yaml", "not UTF-8")),
    Case("train-config-bad-yaml", lambda w, d: ["train", "--config", str(write(d / "c.yaml", "a: [1, 2\n")),
                                                "--out", str(d / "run")],
         ("c.yaml", "not valid YAML")),
    Case("train-fails-on-a-bad-frame-and-leaves-no-run",
         lambda w, d: train(w, d / "run", "--data", str(davis_all_frames_truncated(d, w)), "--set", "batch_size=1"),
         (".jpg", "not a readable image")),
    Case("train-force-fails-and-restores-the-earlier-run",
         lambda w, d: train(w, copy_tree(w.run, d / "run"), "--force", "--data", str(davis_all_frames_truncated(d, w)),
                            "--set", "batch_size=1"),
         (".jpg", "not a readable image")),
    Case("train-resume-and-force", lambda w, d: train(w, d / "run", "--resume", "--force"), ("--resume", "--force")),
    Case("train-unknown-key", lambda w, d: train(w, d / "run", "--set", "learning_rate=1"), ("learning_rate",)),
]

# read-only folders and full disks need a private mount namespace: these cases run in a subprocess
READONLY_CASES = [
    Case("evaluate-results-read-only", lambda w, d: evaluate(w, results_copy(d, w)),
         ("global_results-val.csv", "not writable"), readonly=lambda w, d: d / "results"),
    Case("synth-out-in-read-only-folder",
         lambda w, d: ["data", "synth", "--out", str(_mkdir(d / "ro") / "bench"), "--profile", "smoke", "--quiet"],
         ("bench", "not writable"), readonly=lambda w, d: d / "ro"),
    Case("track-out-in-read-only-folder",
         lambda w, d: track(w, w.png_frames, w.mask, _mkdir(d / "ro") / "out", *oracle_args(w)),
         ("out", "not writable"), readonly=lambda w, d: d / "ro"),
    Case("evaluate-json-in-read-only-folder",
         lambda w, d: evaluate(w, results_copy(d, w), "--json", str(_mkdir(d / "ro") / "s.json")),
         ("s.json", "not writable"), readonly=lambda w, d: d / "ro"),
]
# a full disk: a tiny tmpfs over the output folder; the folder is listed (inside the namespace) after the run
FULL_DISK_CASES = [
    Case("synth-disk-full-mid-benchmark",
         lambda w, d: ["data", "synth", "--out", str(_mkdir(d / "full") / "bench"), "--profile", "smoke", "--quiet"],
         ("no space is left",), readonly=lambda w, d: d / "full"),
    Case("track-disk-full-mid-video",
         lambda w, d: track(w, w.png_frames, w.mask, _mkdir(d / "full") / "out", *oracle_args(w)),
         ("no space is left",), readonly=lambda w, d: d / "full"),
]


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def _with(folder: Path, change) -> Path:
    change(folder)
    return folder


def _rgb_png(path: Path) -> Path:
    Image.fromarray(np.zeros((64, 112, 3), np.uint8)).save(path)
    return path


def _label_png(path: Path, size, value: int = 1) -> Path:
    write_label_png(path, np.full(size, value, np.uint8))
    return path


# ----------------------------------------------------------------------------- running and checking


def snapshot(*folders: Path) -> dict[str, str]:
    """Every file (its SHA-256) and folder under ``folders``, hidden ones included."""
    state = {}
    for folder in folders:
        for path in [folder, *folder.rglob("*")]:
            state[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "folder"
    return state


def run_in_process(argv: list[str], env: dict, monkeypatch) -> tuple[int, str]:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = cli_main(argv)
        except SystemExit as stop:  # argparse
            code = stop.code
    return code, err.getvalue()


def run_in_namespace(argv: list[str], folder: Path, mount: str) -> tuple[int, str, str]:
    """Run the command with ``folder`` mounted privately (``mount``: ``ro`` bind or a small ``tmpfs``);
    returns the exit status, stderr and the folder's listing as the command left it (seen inside the mount)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "DMM_PROFILE": "smoke"}
    how = 'mount --bind -o ro "$1" "$1"' if mount == "ro" else 'mount -t tmpfs -o size=12k tmpfs "$1"'
    script = how + ' || exit 99; dir="$1"; shift; "$@"; rc=$?; find "$dir" -mindepth 1; exit $rc'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, "-m", "dmmlib",
                           *argv], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    return done.returncode, done.stderr, done.stdout


def check_refusal(code: int, err: str, case: Case, before: dict, after: dict) -> None:
    lines = [line for line in err.splitlines() if "error:" in line]
    assert code == 2, f"exit status {code}; stderr:\n{err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"expected one error line; stderr:\n{err}"
    assert "Traceback" not in err and "weights_only" not in err, err
    for expected in case.expect:
        assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    changed = sorted(p for p in before.keys() & after.keys() if before[p] != after[p])
    assert not changed, f"inputs changed: {changed}"
    assert after.keys() == before.keys(), (f"new: {sorted(after.keys() - before.keys())}; "
                                           f"removed: {sorted(before.keys() - after.keys())}")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input_is_refused_and_nothing_changes(case, world, tmp_path, monkeypatch):
    argv = case.argv(world, tmp_path)
    before = snapshot(world.base, tmp_path)
    code, err = run_in_process(argv, case.env, monkeypatch)
    check_refusal(code, err, case, before, snapshot(world.base, tmp_path))


def _can_mount_read_only(tmp: Path) -> str | None:
    """None if a private read-only bind mount works here, else why not."""
    if shutil.which("unshare") is None:
        return "no unshare command"
    probe = _mkdir(tmp / "probe")
    done = subprocess.run(["unshare", "-m", "sh", "-c", f'mount --bind -o ro "{probe}" "{probe}" && touch "{probe}/x"'],
                          capture_output=True, text=True)
    if "Read-only file system" in done.stderr:
        return None
    return f"cannot make a private read-only bind mount (unshare -m needs root or user namespaces): {done.stderr.strip()}"


MOUNTED = [(case, "ro") for case in READONLY_CASES] + [(case, "tmpfs") for case in FULL_DISK_CASES]


@pytest.mark.parametrize("case, mount", MOUNTED, ids=[f"{c.name}" for c, _ in MOUNTED])
def test_file_system_faults_are_refused_and_leave_nothing(case, mount, world, tmp_path):
    """A read-only output folder is refused before anything is written; a disk that fills up
    mid-write leaves nothing of the run (the folder is listed inside the mount, after the run)."""
    reason = _can_mount_read_only(tmp_path)
    if reason:
        pytest.skip(reason)
    shutil.rmtree(tmp_path / "probe")
    argv = case.argv(world, tmp_path)
    before = snapshot(world.base, tmp_path)
    folder = case.readonly(world, tmp_path)
    code, err, listing = run_in_namespace(argv, folder, mount)
    check_refusal(code, err, case, before, snapshot(world.base, tmp_path))
    if mount == "tmpfs":  # the tmpfs (empty before the run) vanishes with the namespace: its listing is the proof
        left = [line for line in listing.splitlines() if line.startswith(str(folder))]
        assert not left, f"the run left {left} on the full disk"


def test_the_catalogue_covers_every_command():
    names = [c.name for c in CASES + READONLY_CASES + FULL_DISK_CASES]
    assert len(names) == len(set(names)) and len(names) >= 40
    for prefix in ("info", "track", "predict", "evaluate", "synth", "proposals-compute", "proposals-train",
                   "proposals-recall", "train"):
        assert any(n.startswith(prefix + "-") for n in names), prefix


# ----------------------------------------------------------------------------- what must still work


def test_a_named_benchmark_trains_as_it_is(world, tmp_path, monkeypatch):
    """train --data DIR of a `data synth --seed 7` benchmark: used with seed 7, not regenerated."""
    before = snapshot(world.seven)
    code, err = run_in_process(train(world, tmp_path / "run", "--data", str(world.seven), "--set", "max_steps=1",
                                     "--set", "batch_size=1", "--set", "frame_size=[40, 64]"), {}, monkeypatch)
    assert code == 0, err
    assert snapshot(world.seven) == before
    assert (tmp_path / "run" / "model.pt").is_file()
    assert DavisDataset(world.seven, "val").names == ["val-0000"]
