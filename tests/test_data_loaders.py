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
