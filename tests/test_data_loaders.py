"""DAVIS 2017, YouTube-VOS and SegTrack v2 loaders on small fixtures in each real on-disk format."""

import json

import numpy as np
import pytest
from PIL import Image

from dmmlib.data import DavisDataset
from dmmlib.data import sequence as sequence_module
from dmmlib.data.masks import write_label_png
from dmmlib.errors import DMMInputError
from dmmlib.lessons.fixtures import (
    write_davis_fixture,
    write_segtrack_fixture,
    write_youtube_vos_fixture,
)

H, W = 24, 40  # tiny frames: these tests read files, they track nothing


def make_davis(root, frames=4, names=("alpha", "beta")):
    return write_davis_fixture(root, sequences=names, frames=frames, size=(H, W), seed=0)


def _close_to(read, rendered, mean_levels=12):
    """A JPEG-compressed textured frame stays near what was rendered (mean absolute error in 8-bit levels)."""
    return float(np.abs(read.astype(int) - rendered.astype(int)).mean()) <= mean_levels


# ---------------------------------------------------------------- DAVIS 2017


def test_davis_reads_frames_labels_and_void(tmp_path):
    fixture = make_davis(tmp_path)
    dataset = DavisDataset(tmp_path, split="val")
    assert dataset.names == ["alpha", "beta"] and len(dataset) == 2
    sequence = dataset.sequence("beta")
    truth = fixture.video("val", "beta")
    assert len(sequence) == 4 and sequence.annotated_indices == [0, 1, 2, 3]
    assert sequence.object_ids == [1, 2] and all(o.first_frame == 0 for o in sequence.objects)
    labels, void = sequence.annotation(2)
    expected = truth.labels[2]
    assert (expected == 255).any() and set(np.unique(expected)) == {0, 1, 2, 255}
    np.testing.assert_array_equal(void, expected == 255)
    np.testing.assert_array_equal(labels, np.where(expected == 255, 0, expected))
    frame = sequence.frame(3)
    assert frame.shape == (H, W, 3) and frame.dtype == np.uint8
    assert _close_to(frame, truth.frames[3]) and not _close_to(frame, truth.frames[3][:, ::-1], 2)
    templates = sequence.templates()
    assert set(templates) == {1, 2} and templates[1][0] == 0
    np.testing.assert_array_equal(templates[1][1], truth.labels[0] == 1)


def test_davis_fixture_moves_and_has_train_and_val(tmp_path):
    fixture = write_davis_fixture(tmp_path, frames=3, size=(H, W), seed=1)
    assert sorted(fixture.videos) == ["train", "val"]
    for split in ("train", "val"):
        assert DavisDataset(tmp_path, split=split).names == [v.name for v in fixture.videos[split]]
    video = fixture.videos["val"][0]
    # the objects move: their masks differ between the first and the last frame
    assert not np.array_equal(video.labels[0] == 1, video.labels[-1] == 1)
    again = write_davis_fixture(tmp_path / "again", frames=3, size=(H, W), seed=1)
    np.testing.assert_array_equal(again.videos["val"][0].frames, video.frames)


def test_davis_sequence_streams_one_frame_at_a_time(tmp_path, monkeypatch):
    make_davis(tmp_path, frames=6)
    sequence = DavisDataset(tmp_path, split="val").sequence("alpha")
    reads = []
    real = sequence_module.read_frame
    monkeypatch.setattr(sequence_module, "read_frame", lambda path: reads.append(path) or real(path))
    stream = iter(sequence)
    first = next(stream)
    assert len(reads) == 1 and first.index == 0 and first.name == "00000" and first.labels.max() == 2
    rest = list(stream)
    assert len(reads) == 6 and [r.index for r in rest] == [1, 2, 3, 4, 5]


def test_davis_error_empty_split_and_missing_sequence(tmp_path):
    make_davis(tmp_path)
    root = tmp_path
    (root / "ImageSets/2017/train.txt").write_text("\n\n")
    with pytest.raises(DMMInputError, match=r"train.txt lists no sequences"):
        DavisDataset(root, split="train")
    (root / "ImageSets/2017/val.txt").write_text("alpha\nghost\n")
    with pytest.raises(DMMInputError, match=r"'ghost' is listed in .*val.txt but its frame folder .*ghost does not exist"):
        DavisDataset(root, split="val")
    with pytest.raises(DMMInputError, match=r"test-dev.txt does not exist"):
        DavisDataset(root, split="test-dev")
    with pytest.raises(DMMInputError, match=r"DAVIS root .*nowhere does not exist"):
        DavisDataset(tmp_path / "nowhere")


def test_davis_error_gap_and_annotation_without_frame(tmp_path):
    make_davis(tmp_path, frames=5)
    root = tmp_path
    (root / "JPEGImages/480p/alpha/00002.jpg").unlink()
    with pytest.raises(DMMInputError, match=r"alpha/00002.jpg is missing"):
        DavisDataset(root).sequence("alpha")
    (root / "JPEGImages/480p/beta/00004.jpg").unlink()
    with pytest.raises(DMMInputError, match=r"annotation .*beta/00004.png has no frame"):
        DavisDataset(root).sequence("beta")


def test_davis_error_size_mismatch_rgb_png_and_unreadable_frame(tmp_path):
    make_davis(tmp_path)
    root = tmp_path
    write_label_png(root / "Annotations/480p/alpha/00001.png", np.zeros((H + 1, W), np.uint8))
    Image.new("RGB", (W, H), (128, 0, 0)).save(root / "Annotations/480p/alpha/00002.png")
    (root / "JPEGImages/480p/alpha/00003.jpg").write_bytes(b"not a jpeg")
    sequence = DavisDataset(root).sequence("alpha")
    with pytest.raises(DMMInputError, match=rf"alpha/00001.png is {W}x{H + 1} .* frame .*00001.jpg is {W}x{H}"):
        sequence.labels(1)
    with pytest.raises(DMMInputError, match=r"alpha/00002.png is a RGB image"):
        sequence.labels(2)
    with pytest.raises(DMMInputError, match=r"frame .*alpha/00003.jpg is not a readable image"):
        sequence.frame(3)


# ---------------------------------------------------------------- YouTube-VOS


def make_youtube_vos(root):
    """One video per split: 26 frames at 30 fps (6 at 6 fps), object 2 entering at frame 00010."""
    return write_youtube_vos_fixture(root, videos=1, frames=26, step=5, entering_at=10, size=(H, W), seed=0)


def test_youtube_vos_train_objects_entering_late(tmp_path):
    from dmmlib.data import YouTubeVOSDataset

    fixture = make_youtube_vos(tmp_path)
    dataset = YouTubeVOSDataset(tmp_path, split="train")
    truth = fixture.videos["train"][0]
    assert dataset.all_frames_root is None and dataset.names == [truth.name]
    sequence = dataset.sequence(truth.name)
    assert len(sequence) == 6 and sequence.annotated_indices == list(range(6))
    assert [(o.id, o.first_frame) for o in sequence.objects] == [(1, 0), (2, 2)]
    assert [o.category for o in sequence.objects] == [truth.objects[1][1], truth.objects[2][1]]
    np.testing.assert_array_equal(sequence.labels(3), truth.labels[3])
    assert not (sequence.labels(1) == 2).any() and (sequence.labels(2) == 2).any()
    templates = sequence.templates()
    assert templates[2][0] == 2
    np.testing.assert_array_equal(templates[2][1], truth.labels[2] == 2)


def test_youtube_vos_valid_uses_all_frames_sibling(tmp_path):
    from dmmlib.data import YouTubeVOSDataset

    fixture = make_youtube_vos(tmp_path)
    root = tmp_path
    truth = fixture.videos["valid"][0]
    dataset = YouTubeVOSDataset(root, split="valid")
    assert dataset.all_frames_root == root / "valid_all_frames"
    sequence = dataset.sequence(truth.name)
    assert len(sequence) == 26 and sequence.annotated_indices == [0, 10]
    assert [(o.id, o.first_frame) for o in sequence.objects] == [(1, 0), (2, 10)]
    templates = sequence.templates()
    np.testing.assert_array_equal(templates[1][1], truth.labels[0] == 1)
    np.testing.assert_array_equal(templates[2][1], truth.labels[2] == 2)
    # valid annotations hold only the objects that start there
    assert set(np.unique(sequence.labels(10))) == {0, 2}
    assert _close_to(sequence.frame(7), truth.all_frames[7])  # an unannotated 30 fps frame
    records = list(sequence)
    assert len(records) == 26 and records[10].labels is not None and records[9].labels is None

    six_fps = YouTubeVOSDataset(root, split="valid", all_frames_root=False).sequence(truth.name)
    assert len(six_fps) == 6 and [(o.id, o.first_frame) for o in six_fps.objects] == [(1, 0), (2, 2)]


def test_youtube_vos_errors(tmp_path):
    from dmmlib.data import YouTubeVOSDataset

    fixture = make_youtube_vos(tmp_path)
    root = tmp_path
    valid, train = fixture.videos["valid"][0].name, fixture.videos["train"][0].name
    (root / f"valid_all_frames/JPEGImages/{valid}/00007.jpg").unlink()
    with pytest.raises(DMMInputError, match=rf"valid_all_frames/JPEGImages/{valid}/00007.jpg is missing"):
        YouTubeVOSDataset(root, split="valid").sequence(valid)
    (root / f"train/JPEGImages/{train}/00025.jpg").unlink()
    with pytest.raises(DMMInputError, match=rf"annotation .*{train}/00025.png has no frame"):
        YouTubeVOSDataset(root, split="train").sequence(train)
    meta = json.loads((root / "train/meta.json").read_text())
    meta["videos"]["vid2"] = meta["videos"][train]
    (root / "train/meta.json").write_text(json.dumps(meta))
    with pytest.raises(DMMInputError, match=r"'vid2' is listed in .*meta.json but its frame folder .*vid2 does not exist"):
        YouTubeVOSDataset(root, split="train")
    (root / "train/meta.json").unlink()
    with pytest.raises(DMMInputError, match=r"meta file .*train/meta.json does not exist"):
        YouTubeVOSDataset(root, split="train")
    with pytest.raises(DMMInputError, match=r"all-frames folder .*elsewhere/JPEGImages does not exist"):
        YouTubeVOSDataset(root, split="valid", all_frames_root=tmp_path / "elsewhere")


# ---------------------------------------------------------------- SegTrack v2


def make_segtrack(root, frames=3):
    return write_segtrack_fixture(root, frames=frames, size=(H, W), seed=0)


def test_segtrack_mixed_formats_single_and_multi_object(tmp_path):
    from dmmlib.data import SegTrackV2Dataset

    fixture = make_segtrack(tmp_path)
    dataset = SegTrackV2Dataset(tmp_path)
    assert dataset.names == ["bird", "frog", "penguin"]
    bird, frog, penguin = (dataset.sequence(n) for n in dataset.names)
    assert len(bird) == len(frog) == len(penguin) == 3
    suffixes = {p.suffix for s in (bird, frog, penguin) for p in s.frame_paths}
    assert suffixes == {".png", ".jpg", ".bmp"}
    np.testing.assert_array_equal(bird.labels(2), fixture.video("all", "bird").labels[2])
    np.testing.assert_array_equal(frog.labels(1), fixture.video("all", "frog").labels[1])  # 1-bit .bmp
    truth = fixture.video("all", "penguin")
    assert set(np.unique(truth.labels[1])) >= {1, 2}
    np.testing.assert_array_equal(penguin.labels(1), truth.labels[1])  # RGB .png and 0/1 .bmp combined
    assert penguin.object_ids == [1, 2] and bird.object_ids == [1]
    assert penguin.frame(0).shape == (H, W, 3) and np.array_equal(penguin.frame(0), truth.frames[0])  # .bmp is lossless
    assert [r.labels.max() for r in penguin] == [2, 2, 2]


def test_segtrack_errors(tmp_path):
    from dmmlib.data import SegTrackV2Dataset

    make_segtrack(tmp_path)
    root = tmp_path
    Image.fromarray(np.zeros((H, W + 2), np.uint8)).save(root / "GroundTruth/penguin/2/penguin_00001.bmp")
    with pytest.raises(DMMInputError, match=rf"ground truth .*penguin/2/penguin_00001.bmp is {W + 2}x{H} .* is {W}x{H}"):
        SegTrackV2Dataset(root).sequence("penguin").labels(1)
    (root / "GroundTruth/penguin/2/penguin_00002.bmp").unlink()
    with pytest.raises(DMMInputError, match=r"object 2 and object 1 do not annotate the same frames"):
        SegTrackV2Dataset(root).sequence("penguin")
    Image.fromarray(np.zeros((H, W), np.uint8)).save(root / "GroundTruth/bird/bird_00009.png")
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

    fixture = make_youtube_vos(tmp_path / "yt")
    youtube = YouTubeVOSDataset(tmp_path / "yt", split="train")
    clip = ClipSampler(youtube, clip_length=6, seed=0, augment=None).clip(0)  # the only possible clip
    assert clip.frame_indices == list(range(6)) and clip.object_ids == [1]
    truth = fixture.videos["train"][0].labels
    assert (truth[3] == 2).any()  # object 2 is there, but not in the clip's first frame
    assert clip.labels.max() == 1 and (clip.labels[3] == 1).sum() == (truth[3] == 1).sum()

    davis_fixture = make_davis(tmp_path / "davis")
    davis = DavisDataset(tmp_path / "davis", split="val")
    clip = ClipSampler(davis, clip_length=2, seed=0, augment=None, max_objects=1).clip(0)
    assert len(clip.object_ids) == 1 and clip.labels.max() == 1
    expected = davis_fixture.video("val", clip.sequence).labels[clip.frame_indices[0]]
    np.testing.assert_array_equal(clip.void[0], expected == 255)


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
