"""The synthetic benchmark: determinism, the five difficulties, on-disk layout, completion, CLI."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmmlib.data import (
    DavisDataset,
    SynthConfig,
    ensure_synthetic,
    generate_benchmark,
    is_complete,
    read_meta,
    render_video,
)
from dmmlib.data import generate as generate_module
from dmmlib.data.photos import ALL_PHOTOS, load_photo
from dmmlib.data.synth_config import synth_config_for_profile
from dmmlib.errors import DMMInputError

TINY = SynthConfig(train_videos=2, val_videos=1, frames=6, height=40, width=64, distractor_prob=1.0)
SCENE = SynthConfig(train_videos=1, val_videos=0, frames=12, height=48, width=80)


def test_every_photo_loads_without_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("a photo tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    load_photo.cache_clear()
    for name in ALL_PHOTOS:
        image = load_photo(name)
        assert image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.float32
        assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.02, name


def test_render_video_shapes_and_label_instance_consistency():
    video = render_video(SCENE.replace(distractor_prob=1.0), seed=5)
    T, H, W = SCENE.frames, SCENE.height, SCENE.width
    assert video.frames.shape == (T, H, W, 3) and video.frames.dtype == np.uint8
    assert video.labels.shape == video.instances.shape == (T, H, W)
    tracked = video.info["objects"]
    assert SCENE.min_objects <= tracked <= SCENE.max_objects and video.info["distractors"] >= 1
    # annotations are the instance map with distractors turned into background
    expected = np.where(video.instances <= tracked, video.instances, 0)
    np.testing.assert_array_equal(video.labels, expected)
    assert set(np.unique(video.labels[0])) == set(range(tracked + 1))


def test_same_seed_same_video_and_different_seed_differs():
    a, b, c = render_video(SCENE, seed=3), render_video(SCENE, seed=3), render_video(SCENE, seed=4)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.instances, b.instances)
    assert a.info == b.info
    assert not np.array_equal(a.frames, c.frames)


def _visible_fraction(video, k):
    full = np.maximum(np.array(video.info["instances"][k - 1]["full_area"]), 1)
    return (video.labels == k).sum(axis=(1, 2)) / full


def test_occlusion_hides_then_reveals_a_tracked_object():
    config = SCENE.replace(occlusion_prob=1.0, exit_prob=0.0, distractor_prob=0.0, min_objects=2, max_objects=3)
    recovered = 0
    for seed in range(6):
        video = render_video(config, seed=seed)
        (event,) = video.info["occlusions"]
        fraction = _visible_fraction(video, event["occluded"])
        low = int(np.argmin(fraction))
        if fraction[low] < 0.5 and fraction[low:].max() > 0.9 and fraction[0] > 0.5:
            recovered += 1
    assert recovered >= 4
    no_occlusion = render_video(config.replace(occlusion_prob=0.0), seed=0)
    assert no_occlusion.info["occlusions"] == []


def test_objects_leave_the_frame_and_come_back():
    config = SCENE.replace(occlusion_prob=0.0, exit_prob=1.0, distractor_prob=0.0)
    video = render_video(config, seed=1)
    assert len(video.info["exits"]) == video.info["objects"]
    for event in video.info["exits"]:
        area = (video.labels == event["object"]).sum(axis=(1, 2))
        assert area[event["frame"]] == 0 and area[0] > 0 and area[-1] > 0
        # it left across the border: in the frame before it vanished it touches an edge
        last_seen = max(t for t in range(event["frame"]) if area[t] > 0)
        mask = video.labels[last_seen] == event["object"]
        assert mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()


def test_distractors_look_like_their_tracked_object():
    config = SCENE.replace(occlusion_prob=0.0, exit_prob=0.0, distractor_prob=1.0, min_objects=2, max_objects=3)
    close = 0
    for seed in range(4):
        video = render_video(config, seed=seed)
        pixels, ids = video.frames[0].reshape(-1, 3).astype(float), video.instances[0].ravel()
        mean = {i: pixels[ids == i].mean(axis=0) for i in np.unique(ids) if i}
        for distractor in video.info["lookalikes"]:
            d, twin = distractor["id"], distractor["lookalike_of"]
            if d not in mean or twin not in mean:
                continue
            to_twin = np.linalg.norm(mean[d] - mean[twin])
            to_others = [np.linalg.norm(mean[d] - mean[o]) for o in mean if o not in (d, twin) and o <= video.info["objects"]]
            close += to_twin < 15 and all(to_twin < other for other in to_others)
    assert close >= 3


def test_crossing_pairs_share_a_shape_differ_in_texture_and_overlap_at_the_crossing():
    """The "crossing" difficulty: objects 1 and 2 have the same outline and size but other textures, and around
    the crossing one's previous mask overlaps the other, so the IoU term of Eq. 1 cannot tell them apart."""
    config = SCENE.replace(difficulties=("crossing",), min_objects=2, max_objects=3)
    ambiguous = 0
    for seed in range(5):
        video = render_video(config, seed=seed)
        info = video.info
        assert info["difficulty"] == "crossing" and info["lookalikes"] == [] and info["occlusions"] == []
        (event,) = info["crossings"]
        assert event["objects"] == [1, 2] and event["front"] in (1, 2) and 0 < event["frame"] < SCENE.frames - 1
        first, second = info["instances"][0], info["instances"][1]
        assert first["shape"] == second["shape"] and first["texture"] != second["texture"]
        assert 0.8 < second["full_area"][0] / first["full_area"][0] < 1.25  # same size within the jitter
        assert not any(e["object"] in (1, 2) for e in info["exits"])  # the pair stays in view
        t0, back, front = event["frame"], 3 - event["front"], event["front"]
        window = range(max(1, t0 - 2), min(SCENE.frames, t0 + 3))
        area = (video.labels == back).sum(axis=(1, 2))
        hidden = min(area[t] for t in window) / area[0]  # the object behind is mostly covered at the crossing
        ratio = max(_iou(video.labels[t - 1] == back, video.labels[t] == front)
                    / max(_iou(video.labels[t - 1] == back, video.labels[t] == back), 1e-6) for t in window)
        apart = _iou(video.labels[0] == 1, video.labels[0] == 2) == 0.0
        ambiguous += hidden < 0.6 and ratio > 0.2 and apart
    assert ambiguous >= 4


def _iou(a, b):
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


def test_difficulties_alternate_by_video_and_are_tagged_in_meta(tmp_path):
    config = TINY.replace(difficulties=("lookalike", "crossing"), train_videos=4, frames=6, max_objects=3)
    root = generate_benchmark(tmp_path / "bench", config, seed=1, progress=False)
    meta = json.loads((root / "meta.json").read_text())
    tags = {name: info["difficulty"] for name, info in meta["sequences"].items()}
    assert [tags[f"train-{i:04d}"] for i in range(4)] == ["lookalike", "crossing", "lookalike", "crossing"]
    for name, info in meta["sequences"].items():
        assert bool(info["crossings"]) == (info["difficulty"] == "crossing")
        if info["difficulty"] == "lookalike":
            assert info["lookalikes"]  # distractor_prob 1: every look-alike video has one
    assert set(synth_config_for_profile("cpu").difficulties) == {"lookalike", "crossing"}
    with pytest.raises(DMMInputError, match="SynthConfig.difficulties"):
        SCENE.replace(difficulties=("spinning",))
    with pytest.raises(DMMInputError, match="SynthConfig.difficulties"):
        SCENE.replace(difficulties=("crossing",), frames=2)


def test_appearance_drift_changes_object_colour_over_time():
    def colour_change(drift):
        config = SCENE.replace(drift=drift, texture_drift=0.0, occlusion_prob=0, exit_prob=0, distractor_prob=0,
                               max_objects=1)
        changes = []
        for seed in range(3):
            video = render_video(config, seed=seed)
            first = video.frames[0][video.labels[0] == 1].mean(axis=0)
            last = video.frames[-1][video.labels[-1] == 1].mean(axis=0)
            changes.append(np.linalg.norm(last - first))
        return np.mean(changes)

    assert colour_change(0.5) > 20 + 3 * colour_change(0.0)


def test_config_validation_names_the_field():
    with pytest.raises(DMMInputError, match="SynthConfig.exit_prob"):
        SCENE.replace(exit_prob=1.5)
    with pytest.raises(DMMInputError, match="SynthConfig.frames"):
        SynthConfig(frames=1)
    assert synth_config_for_profile("smoke").frames < synth_config_for_profile("gpu").frames


def _files(root):
    return sorted(p.relative_to(root) for p in Path(root).rglob("*") if p.is_file())


def test_benchmark_on_disk_is_davis_layout_and_deterministic(tmp_path):
    a = generate_benchmark(tmp_path / "a", TINY, seed=7, progress=False)
    b = generate_benchmark(tmp_path / "b", TINY, seed=7, progress=False)
    c = generate_benchmark(tmp_path / "c", TINY, seed=8, progress=False)
    assert _files(a) == _files(b) == _files(c)
    annotations = [p for p in _files(a) if p.parts[0] in ("Annotations", "Instances")]
    assert len(annotations) == 2 * 3 * TINY.frames
    assert all((a / p).read_bytes() == (b / p).read_bytes() for p in annotations)
    jpeg = Path("JPEGImages/480p/train-0001/00003.jpg")
    np.testing.assert_array_equal(np.asarray(Image.open(a / jpeg)), np.asarray(Image.open(b / jpeg)))
    assert not np.array_equal(np.asarray(Image.open(a / jpeg)), np.asarray(Image.open(c / jpeg)))
    with Image.open(a / "Annotations/480p/val-0000/00000.png") as mask:
        assert mask.mode == "P" and mask.size == (TINY.width, TINY.height)

    meta = json.loads((a / "meta.json").read_text())
    assert meta["seed"] == 7 and meta["config"]["frames"] == TINY.frames and meta["generator_version"] >= 1
    assert meta["splits"] == {"train": ["train-0000", "train-0001"], "val": ["val-0000"]}
    for name, info in meta["sequences"].items():
        assert {"objects", "distractors", "occlusions", "exits"} <= set(info)
        labels = np.asarray(Image.open(a / f"Annotations/480p/{name}/00000.png"))
        assert labels.max() == info["objects"]
    # meta.json is written last: nothing in the benchmark is newer
    newest = max(os.stat(a / p).st_mtime_ns for p in _files(a) if p.name != "meta.json")
    assert os.stat(a / "meta.json").st_mtime_ns >= newest

    davis = DavisDataset(a, split="train")
    assert davis.names == ["train-0000", "train-0001"]
    sequence = davis.sequence("train-0001")
    assert len(sequence) == TINY.frames and len(sequence.objects) == meta["sequences"]["train-0001"]["objects"]
    distractor_pixels = 0
    for name in ("train-0000", "train-0001"):
        info = meta["sequences"][name]
        instances = DavisDataset(a, split="train", annotations="Instances").sequence(name)
        labels = davis.sequence(name).labels(2)
        all_ids = instances.labels(2)
        assert all_ids.max() <= info["objects"] + info["distractors"]
        # the annotation is the instance map with distractors (ids above K) turned into background
        np.testing.assert_array_equal(labels, np.where(all_ids <= info["objects"], all_ids, 0))
        distractor_pixels += (all_ids > info["objects"]).sum()
    assert distractor_pixels > 0


def test_refuses_to_overwrite_and_force_keeps_foreign_files(tmp_path):
    root = generate_benchmark(tmp_path / "bench", TINY, seed=0, progress=False)
    with pytest.raises(DMMInputError, match="not empty; refusing to overwrite"):
        generate_benchmark(root, TINY, seed=1, progress=False)
    (root / "notes.txt").write_text("mine")
    generate_benchmark(root, TINY.replace(train_videos=1), seed=1, force=True, progress=False)
    assert (root / "notes.txt").read_text() == "mine"
    assert not (root / "JPEGImages/480p/train-0001").exists()  # stale videos removed with --force


def _entries(folder):
    return sorted(p.relative_to(folder) for p in Path(folder).rglob("*"))


def test_interrupted_run_leaves_nothing_and_ensure_then_generates(tmp_path, monkeypatch):
    root = tmp_path / "synthetic-smoke"
    real_write = generate_module.atomic_write_text

    def crash_on_meta(path, text):
        if Path(path).name == "meta.json":
            raise KeyboardInterrupt
        real_write(path, text)

    monkeypatch.setattr(generate_module, "atomic_write_text", crash_on_meta)
    with pytest.raises(KeyboardInterrupt):
        generate_benchmark(root, synth_config_for_profile("smoke"), progress=False)
    assert _entries(tmp_path) == []  # neither the benchmark nor its staging folder remains
    monkeypatch.setattr(generate_module, "atomic_write_text", real_write)

    assert ensure_synthetic(root, profile="smoke", progress=False) == root
    assert is_complete(root) and read_meta(root)["preset"] == "smoke"
    stamp = os.stat(root / "meta.json").st_mtime_ns
    ensure_synthetic(root, profile="smoke", progress=False)  # complete and matching: left alone
    assert os.stat(root / "meta.json").st_mtime_ns == stamp

    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"x")
    with pytest.raises(DMMInputError, match="does not hold a synthetic benchmark"):
        ensure_synthetic(foreign, profile="smoke", progress=False)
    assert _entries(foreign) == [Path("holiday.jpg")]


def test_a_named_benchmark_is_used_as_it_is_and_a_davis_copy_is_never_touched(tmp_path):
    seven = generate_benchmark(tmp_path / "seven", TINY, seed=7, progress=False)
    before = {p: (seven / p).read_bytes() for p in _files(seven)}
    # another seed and preset than the smoke profile's: an explicitly named benchmark stays as it is
    assert ensure_synthetic(seven, profile="smoke", seed=0, progress=False) == seven
    assert {p: (seven / p).read_bytes() for p in _files(seven)} == before

    davis = tmp_path / "davis-copy"  # a DAVIS layout without meta.json: not dmmlib's, never replaced
    for p in _files(seven):
        if p.name != "meta.json":
            (davis / p).parent.mkdir(parents=True, exist_ok=True)
            (davis / p).write_bytes((seven / p).read_bytes())
    copied = _entries(davis)
    with pytest.raises(DMMInputError, match="does not hold a synthetic benchmark"):
        ensure_synthetic(davis, profile="smoke", progress=False)
    with pytest.raises(DMMInputError, match="even with --force"):
        generate_benchmark(davis, TINY, seed=0, force=True, progress=False)
    assert _entries(davis) == copied


def test_only_the_default_folder_is_regenerated_and_only_if_dmmlib_made_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DMM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(generate_module, "synth_config_for_profile", lambda profile: TINY)
    default = tmp_path / "synthetic-smoke"
    generate_benchmark(default, TINY, seed=7, progress=False)
    (default / "notes.txt").write_text("mine")
    with pytest.warns(UserWarning, match="regenerating"):
        assert ensure_synthetic(profile="smoke", seed=0, progress=False) == default
    assert read_meta(default)["seed"] == 0 and (default / "notes.txt").read_text() == "mine"

    (default / "meta.json").unlink()  # now it is not marked as dmmlib's: it stays as it is
    kept = _entries(default)
    with pytest.raises(DMMInputError, match="never replaced"):
        ensure_synthetic(profile="smoke", seed=0, progress=False)
    assert _entries(default) == kept


def test_default_root_follows_data_dir_env(tmp_path, monkeypatch):
    monkeypatch.setenv("DMM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(generate_module, "synth_config_for_profile", lambda profile: TINY)
    assert ensure_synthetic(profile="smoke", progress=False) == tmp_path / "synthetic-smoke"
    assert is_complete(tmp_path / "synthetic-smoke")


def _run_cli(*args):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-m", "dmmlib", "data", "synth", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_synth_writes_benchmark_and_refuses_overwrite(tmp_path):
    out = tmp_path / "cli"
    args = ["--out", str(out), "--videos", "2", "--val-videos", "1", "--frames", "4", "--size", "32x48",
            "--seed", "3", "--profile", "smoke"]
    done = _run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert "synthetic videos" in done.stderr and "3/3" in done.stderr  # the tqdm bar
    assert len(list((out / "JPEGImages/480p").iterdir())) == 3
    assert len(list((out / "Annotations/480p/val-0000").glob("*.png"))) == 4
    with Image.open(out / "JPEGImages/480p/train-0000/00000.jpg") as frame:
        assert frame.size == (48, 32)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 3 and meta["config"]["height"] == 32

    again = _run_cli(*args)
    assert again.returncode == 2 and "error:" in again.stderr and "--force" in again.stderr
    assert "Traceback" not in again.stderr
    assert _run_cli(*args, "--force", "--quiet").returncode == 0
    bad = _run_cli("--out", str(tmp_path / "x"), "--size", "big")
    assert bad.returncode == 2 and "HEIGHTxWIDTH" in bad.stderr
