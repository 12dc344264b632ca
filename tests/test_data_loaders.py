"""DAVIS 2017, YouTube-VOS and SegTrack v2 loaders on small fixtures in each real on-disk format."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dmmlib.data import DavisDataset
from dmmlib.data import sequence as sequence_module
from dmmlib.errors import DMMInputError
from dmmlib.maskio import write_label_png

H, W = 12, 16


def _colour_frame(t):
    """A flat-coloured frame whose colour encodes ``t``: JPEG keeps flat colours within a few levels."""
    return np.full((H, W, 3), (20 * t + 10, 200 - 20 * t, 90), np.uint8)


def _davis_labels(t):
    labels = np.zeros((H, W), np.uint8)
    labels[2:6, 1 + t : 5 + t] = 1
    labels[7:11, 9:14] = 2
    labels[0, :] = 255  # a void strip, as DAVIS marks ambiguous pixels
    return labels


def make_davis(root, frames=4, names=("alpha", "beta")):
    for name in names:
        for t in range(frames):
            path = root / "JPEGImages/480p" / name / f"{t:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_colour_frame(t)).save(path, quality=95)
            write_label_png(root / "Annotations/480p" / name / f"{t:05d}.png", _davis_labels(t))
    (root / "ImageSets/2017").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets/2017/val.txt").write_text("".join(f"{n}\n" for n in names))
    return root


# ---------------------------------------------------------------- DAVIS 2017


def test_davis_reads_frames_labels_and_void(tmp_path):
    dataset = DavisDataset(make_davis(tmp_path), split="val")
    assert dataset.names == ["alpha", "beta"] and len(dataset) == 2
    sequence = dataset.sequence("beta")
    assert len(sequence) == 4 and sequence.annotated_indices == [0, 1, 2, 3]
    assert sequence.object_ids == [1, 2] and all(o.first_frame == 0 for o in sequence.objects)
    labels, void = sequence.annotation(2)
    expected = _davis_labels(2)
    np.testing.assert_array_equal(void, expected == 255)
    np.testing.assert_array_equal(labels, np.where(expected == 255, 0, expected))
    frame = sequence.frame(3)
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
    assert np.abs(frame.astype(int) - _colour_frame(3)).max() <= 4
    templates = sequence.templates()
    assert set(templates) == {1, 2} and templates[1][0] == 0
    np.testing.assert_array_equal(templates[1][1], _davis_labels(0) == 1)


def test_davis_sequence_streams_one_frame_at_a_time(tmp_path, monkeypatch):
    sequence = DavisDataset(make_davis(tmp_path, frames=6), split="val").sequence("alpha")
    reads = []
    real = sequence_module.read_frame
    monkeypatch.setattr(sequence_module, "read_frame", lambda path: reads.append(path) or real(path))
    stream = iter(sequence)
    first = next(stream)
    assert len(reads) == 1 and first.index == 0 and first.name == "00000" and first.labels.max() == 2
    rest = list(stream)
    assert len(reads) == 6 and [r.index for r in rest] == [1, 2, 3, 4, 5]


def test_davis_error_empty_split_and_missing_sequence(tmp_path):
    root = make_davis(tmp_path)
    (root / "ImageSets/2017/train.txt").write_text("\n\n")
    with pytest.raises(DMMInputError, match=r"train.txt is empty"):
        DavisDataset(root, split="train")
    (root / "ImageSets/2017/val.txt").write_text("alpha\nghost\n")
    with pytest.raises(DMMInputError, match=r"'ghost' is listed in .*val.txt but its frame folder .*ghost does not exist"):
        DavisDataset(root, split="val")
    with pytest.raises(DMMInputError, match=r"test-dev.txt does not exist"):
        DavisDataset(root, split="test-dev")
    with pytest.raises(DMMInputError, match=r"DAVIS root .*nowhere does not exist"):
        DavisDataset(tmp_path / "nowhere")


def test_davis_error_gap_and_annotation_without_frame(tmp_path):
    root = make_davis(tmp_path, frames=5)
    (root / "JPEGImages/480p/alpha/00002.jpg").unlink()
    with pytest.raises(DMMInputError, match=r"alpha/00002.jpg is missing"):
        DavisDataset(root).sequence("alpha")
    (root / "JPEGImages/480p/beta/00004.jpg").unlink()
    with pytest.raises(DMMInputError, match=r"annotation .*beta/00004.png has no frame"):
        DavisDataset(root).sequence("beta")


def test_davis_error_size_mismatch_rgb_png_and_unreadable_frame(tmp_path):
    root = make_davis(tmp_path)
    write_label_png(root / "Annotations/480p/alpha/00001.png", np.zeros((H + 1, W), np.uint8))
    Image.new("RGB", (W, H), (128, 0, 0)).save(root / "Annotations/480p/alpha/00002.png")
    (root / "JPEGImages/480p/alpha/00003.jpg").write_bytes(b"not a jpeg")
    sequence = DavisDataset(root).sequence("alpha")
    with pytest.raises(DMMInputError, match=r"alpha/00001.png is 16x13 .* frame .*00001.jpg is 16x12"):
        sequence.labels(1)
    with pytest.raises(DMMInputError, match=r"alpha/00002.png is a RGB image"):
        sequence.labels(2)
    with pytest.raises(DMMInputError, match=r"frame .*alpha/00003.jpg is not a readable image"):
        sequence.frame(3)


# ---------------------------------------------------------------- YouTube-VOS


def _ytvos_labels(number, entering_at=10):
    """Object 1 throughout; object 2 from frame ``entering_at`` on (frame numbers are 30 fps names)."""
    labels = np.zeros((H, W), np.uint8)
    labels[1:5, 1:6] = 1
    if number >= entering_at:
        labels[6:11, 8 + number % 5 : 13 + number % 5] = 2
    return labels


def _write_jpeg(path, t):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(_colour_frame(t % 9)).save(path, quality=95)


def make_youtube_vos(root):
    numbers = [0, 5, 10, 15, 20, 25]
    objects = {
        "1": {"category": "cat", "frames": [f"{n:05d}" for n in numbers]},
        "2": {"category": "dog", "frames": [f"{n:05d}" for n in numbers if n >= 10]},
    }
    # train: every 6 fps frame annotated
    (root / "train").mkdir(parents=True)
    (root / "train/meta.json").write_text(json.dumps({"videos": {"vid1": {"objects": objects}}}))
    for n in numbers:
        _write_jpeg(root / f"train/JPEGImages/vid1/{n:05d}.jpg", n)
        write_label_png(root / f"train/Annotations/vid1/{n:05d}.png", _ytvos_labels(n))
    # valid: only each object's first frame annotated, holding only the new object; every frame in valid_all_frames
    (root / "valid").mkdir(parents=True)
    (root / "valid/meta.json").write_text(json.dumps({"videos": {"vid1": {"objects": objects}}}))
    for n in numbers:
        _write_jpeg(root / f"valid/JPEGImages/vid1/{n:05d}.jpg", n)
    for n in range(26):
        _write_jpeg(root / f"valid_all_frames/JPEGImages/vid1/{n:05d}.jpg", n)
    write_label_png(root / "valid/Annotations/vid1/00000.png", (_ytvos_labels(0) == 1).astype(np.uint8))
    write_label_png(root / "valid/Annotations/vid1/00010.png", np.where(_ytvos_labels(10) == 2, 2, 0).astype(np.uint8))
    return root


def test_youtube_vos_train_objects_entering_late(tmp_path):
    from dmmlib.data import YouTubeVOSDataset

    dataset = YouTubeVOSDataset(make_youtube_vos(tmp_path), split="train")
    assert dataset.all_frames_root is None and dataset.names == ["vid1"]
    sequence = dataset.sequence("vid1")
    assert len(sequence) == 6 and sequence.annotated_indices == list(range(6))
    assert [(o.id, o.first_frame, o.category) for o in sequence.objects] == [(1, 0, "cat"), (2, 2, "dog")]
    np.testing.assert_array_equal(sequence.labels(3), _ytvos_labels(15))
    templates = sequence.templates()
    assert templates[2][0] == 2
    np.testing.assert_array_equal(templates[2][1], _ytvos_labels(10) == 2)


def test_youtube_vos_valid_uses_all_frames_sibling(tmp_path):
    from dmmlib.data import YouTubeVOSDataset

    root = make_youtube_vos(tmp_path)
    dataset = YouTubeVOSDataset(root, split="valid")
    assert dataset.all_frames_root == root / "valid_all_frames"
    sequence = dataset.sequence("vid1")
    assert len(sequence) == 26 and sequence.annotated_indices == [0, 10]
    assert [(o.id, o.first_frame) for o in sequence.objects] == [(1, 0), (2, 10)]
    templates = sequence.templates()
    np.testing.assert_array_equal(templates[1][1], _ytvos_labels(0) == 1)
    np.testing.assert_array_equal(templates[2][1], _ytvos_labels(10) == 2)
    assert np.abs(sequence.frame(7).astype(int) - _colour_frame(7)).max() <= 4  # an unannotated 30 fps frame
    records = list(sequence)
    assert len(records) == 26 and records[10].labels is not None and records[9].labels is None

    six_fps = YouTubeVOSDataset(root, split="valid", all_frames_root=False).sequence("vid1")
    assert len(six_fps) == 6 and [(o.id, o.first_frame) for o in six_fps.objects] == [(1, 0), (2, 2)]


def test_youtube_vos_errors(tmp_path):
    from dmmlib.data import YouTubeVOSDataset

    root = make_youtube_vos(tmp_path)
    (root / "valid_all_frames/JPEGImages/vid1/00007.jpg").unlink()
    with pytest.raises(DMMInputError, match=r"valid_all_frames/JPEGImages/vid1/00007.jpg is missing"):
        YouTubeVOSDataset(root, split="valid").sequence("vid1")
    (root / "train/JPEGImages/vid1/00025.jpg").unlink()
    with pytest.raises(DMMInputError, match=r"annotation .*vid1/00025.png has no frame"):
        YouTubeVOSDataset(root, split="train").sequence("vid1")
    meta = json.loads((root / "train/meta.json").read_text())
    meta["videos"]["vid2"] = meta["videos"]["vid1"]
    (root / "train/meta.json").write_text(json.dumps(meta))
    with pytest.raises(DMMInputError, match=r"'vid2' is listed in .*meta.json but its frame folder .*vid2 does not exist"):
        YouTubeVOSDataset(root, split="train")
    (root / "train/meta.json").unlink()
    with pytest.raises(DMMInputError, match=r"meta file .*train/meta.json does not exist"):
        YouTubeVOSDataset(root, split="train")
    with pytest.raises(DMMInputError, match=r"all-frames folder .*elsewhere/JPEGImages does not exist"):
        YouTubeVOSDataset(root, split="valid", all_frames_root=tmp_path / "elsewhere")


# ---------------------------------------------------------------- SegTrack v2


def _blob(t, obj):
    mask = np.zeros((H, W), bool)
    if obj == 1:
        mask[2:7, 1 + t : 6 + t] = True
    else:
        mask[7:11, 10 - t : 15 - t] = True
    return mask


def make_segtrack(root, frames=3):
    # "bird": .png frames, one object, greyscale 0/255 masks directly in GroundTruth/bird
    # "penguin": .bmp frames, objects in GroundTruth/penguin/1 (RGB .png) and /2 (greyscale 0/1 .bmp)
    # "frog": .jpg frames, one object, 1-bit .bmp masks
    for t in range(frames):
        for name, ext in (("bird", "png"), ("penguin", "bmp"), ("frog", "jpg")):
            path = root / f"JPEGImages/{name}/{name}_{t:05d}.{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_colour_frame(t)).save(path)
        gt = root / "GroundTruth"
        for sub in ("bird", "penguin/1", "penguin/2", "frog"):
            (gt / sub).mkdir(parents=True, exist_ok=True)
        Image.fromarray(_blob(t, 1).astype(np.uint8) * 255, mode="L").save(gt / f"bird/bird_{t:05d}.png")
        rgb = np.repeat(_blob(t, 1)[:, :, None], 3, axis=2).astype(np.uint8) * 255
        Image.fromarray(rgb, mode="RGB").save(gt / f"penguin/1/penguin_{t:05d}.png")
        Image.fromarray(_blob(t, 2).astype(np.uint8), mode="L").save(gt / f"penguin/2/penguin_{t:05d}.bmp")
        Image.fromarray(_blob(t, 2)).convert("1").save(gt / f"frog/frog_{t:05d}.bmp")
    return root


def test_segtrack_mixed_formats_single_and_multi_object(tmp_path):
    from dmmlib.data import SegTrackV2Dataset

    dataset = SegTrackV2Dataset(make_segtrack(tmp_path))
    assert dataset.names == ["bird", "frog", "penguin"]
    bird, frog, penguin = (dataset.sequence(n) for n in dataset.names)
    assert len(bird) == len(frog) == len(penguin) == 3
    np.testing.assert_array_equal(bird.labels(2), _blob(2, 1).astype(np.uint8))
    np.testing.assert_array_equal(frog.labels(1), _blob(1, 2).astype(np.uint8))
    expected = np.zeros((H, W), np.uint8)
    expected[_blob(1, 1)] = 1
    expected[_blob(1, 2)] = 2
    np.testing.assert_array_equal(penguin.labels(1), expected)
    assert penguin.object_ids == [1, 2] and bird.object_ids == [1]
    assert penguin.frame(0).shape == (H, W, 3) and np.array_equal(penguin.frame(0), _colour_frame(0))  # .bmp is lossless
    assert [r.labels.max() for r in penguin] == [2, 2, 2]


def test_segtrack_errors(tmp_path):
    from dmmlib.data import SegTrackV2Dataset

    root = make_segtrack(tmp_path)
    Image.fromarray(np.zeros((H, W + 2), np.uint8), mode="L").save(root / "GroundTruth/penguin/2/penguin_00001.bmp")
    with pytest.raises(DMMInputError, match=r"ground truth .*penguin/2/penguin_00001.bmp is 18x12 .* is 16x12"):
        SegTrackV2Dataset(root).sequence("penguin").labels(1)
    (root / "GroundTruth/penguin/2/penguin_00002.bmp").unlink()
    with pytest.raises(DMMInputError, match=r"object 2 and object 1 do not annotate the same frames"):
        SegTrackV2Dataset(root).sequence("penguin")
    Image.fromarray(np.zeros((H, W), np.uint8), mode="L").save(root / "GroundTruth/bird/bird_00009.png")
    with pytest.raises(DMMInputError, match=r"ground truth .*bird_00009.png has no frame named bird_00009"):
        SegTrackV2Dataset(root).sequence("bird")
    (root / "JPEGImages/frog/frog_00001.jpg").write_bytes(b"garbage")
    with pytest.raises(DMMInputError, match=r"frog_00001.jpg is not a readable image"):
        SegTrackV2Dataset(root).sequence("frog").frame(1)
    (root / "JPEGImages/owl").mkdir()
    with pytest.raises(DMMInputError, match=r"'owl' has frames in .* but no ground truth folder"):
        SegTrackV2Dataset(root)


# ---------------------------------------------------------------- training clips

CH, CW = 40, 56


def make_colour_coded_davis(root, frames=5):
    """Frames whose colours give the labels away: object 1 red, object 2 green, background grey."""
    rng = np.random.default_rng(0)
    for t in range(frames):
        labels = np.zeros((CH, CW), np.uint8)
        labels[5 + t : 20 + t, 4:22] = 1
        cy, cx = 25, 38 - t
        yy, xx = np.mgrid[:CH, :CW]
        labels[(yy - cy) ** 2 + (xx - cx) ** 2 < 64] = 2
        frame = np.full((CH, CW, 3), 110, np.uint8)
        frame[labels == 1] = (230, 20, 20)
        frame[labels == 2] = (20, 230, 20)
        frame = np.clip(frame + rng.integers(-6, 7, frame.shape), 0, 255).astype(np.uint8)
        path = root / f"JPEGImages/480p/coded/{t:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(path, quality=97)
        write_label_png(root / f"Annotations/480p/coded/{t:05d}.png", labels)
    (root / "ImageSets/2017").mkdir(parents=True)
    (root / "ImageSets/2017/train.txt").write_text("coded\n")
    return root


def test_augmentation_moves_frames_and_masks_together(tmp_path):
    from dmmlib.data import AffineAugment, ClipSampler

    dataset = DavisDataset(make_colour_coded_davis(tmp_path), split="train")
    strong = AffineAugment(rotation=30, scale=(0.7, 1.3), translate=0.15, shear=15, flip_prob=0.5)
    sampler = ClipSampler(dataset, clip_length=3, seed=1, size=(48, 80), augment=strong)
    moved = 0
    for index in range(4):
        clip = sampler.clip(index)
        assert clip.frames.shape == (3, 48, 80, 3) and clip.labels.shape == clip.void.shape == (3, 48, 80)
        assert clip.frames.dtype == np.uint8 and clip.labels.dtype == np.uint8
        assert set(np.unique(clip.labels)) <= {0, 1, 2}  # nearest-neighbour: no blended label values
        red = (clip.frames[..., 0] > 170) & (clip.frames[..., 1] < 80)
        green = (clip.frames[..., 1] > 170) & (clip.frames[..., 0] < 80)
        for colour, object_id in ((red, clip.object_ids.index(1) + 1), (green, clip.object_ids.index(2) + 1)):
            mask = clip.labels == object_id
            iou = (colour & mask).sum() / max((colour | mask).sum(), 1)
            assert iou > 0.85, (index, object_id, iou)
        plain = dataset.sequence("coded").labels(clip.frame_indices[0])
        moved += not np.array_equal(
            clip.labels[0], np.asarray(Image.fromarray(plain).resize((80, 48), Image.NEAREST)))
    assert moved == 4  # the transform really changed every clip


def test_clips_are_deterministic_by_seed(tmp_path):
    from dmmlib.data import ClipSampler

    dataset = DavisDataset(make_colour_coded_davis(tmp_path), split="train")
    a = ClipSampler(dataset, clip_length=2, seed=3).clip(5)
    b = ClipSampler(dataset, clip_length=2, seed=3).clip(5)
    c = ClipSampler(dataset, clip_length=2, seed=4).clip(5)
    np.testing.assert_array_equal(a.frames, b.frames)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.frames, c.frames)
    other_epoch = ClipSampler(dataset, clip_length=2, seed=3).clip(5, epoch=1)
    assert not np.array_equal(a.frames, other_epoch.frames)
    with pytest.raises(DMMInputError, match="no sequence .* has 9 annotated frames"):
        ClipSampler(dataset, clip_length=9)


def test_clip_keeps_only_objects_of_its_first_frame_and_void(tmp_path):
    from dmmlib.data import ClipSampler, YouTubeVOSDataset

    youtube = YouTubeVOSDataset(make_youtube_vos(tmp_path / "yt"), split="train")
    clip = ClipSampler(youtube, clip_length=6, seed=0, augment=None).clip(0)  # the only possible clip
    assert clip.frame_indices == list(range(6)) and clip.object_ids == [1]
    assert clip.labels.max() == 1 and (clip.labels[3] == 1).sum() == (_ytvos_labels(15) == 1).sum()

    davis = DavisDataset(make_davis(tmp_path / "davis"), split="val")
    clip = ClipSampler(davis, clip_length=2, seed=0, augment=None, max_objects=1).clip(0)
    assert len(clip.object_ids) == 1 and clip.labels.max() == 1
    np.testing.assert_array_equal(clip.void[0], _davis_labels(0) == 255)


def test_clip_dataset_gives_batched_torch_tensors(tmp_path):
    import torch

    from dmmlib.data import ClipDataset, ClipSampler

    dataset = DavisDataset(make_colour_coded_davis(tmp_path), split="train")
    clips = ClipDataset(ClipSampler(dataset, clip_length=3, seed=0, size=(32, 48)), length=4)
    item = clips[1]
    assert item["frames"].shape == (3, 3, 32, 48) and item["frames"].dtype == torch.float32
    assert 0.0 <= float(item["frames"].min()) and float(item["frames"].max()) <= 1.0
    assert item["labels"].shape == (3, 32, 48) and item["labels"].dtype == torch.int64
    assert item["num_objects"] == int(item["labels"].max())
    batch = next(iter(torch.utils.data.DataLoader(clips, batch_size=2)))
    assert batch["frames"].shape == (2, 3, 3, 32, 48) and batch["labels"].shape == (2, 3, 32, 48)
    torch.testing.assert_close(batch["frames"][1], item["frames"])
    clips.set_epoch(1)
    assert not torch.equal(clips[1]["frames"], item["frames"])
    with pytest.raises(IndexError):
        clips[4]
