"""Tests for dmmlib.proposals: storage, paste, oracle proposals, cache, the network, training, recall."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmmlib.errors import DMMInputError
from dmmlib.proposals import FrameProposals, ProposalCache, proposals_from_labels


def _labels(height=60, width=80):
    """Three instances: a rectangle, a disc and a thin diagonal-ish blob."""
    labels = np.zeros((height, width), np.uint8)
    labels[5:25, 10:40] = 1
    yy, xx = np.mgrid[:height, :width]
    labels[(yy - 40) ** 2 + (xx - 55) ** 2 <= 12**2] = 2
    labels[(np.abs((yy - 45) - (xx - 10) * 0.8) < 3) & (xx < 30)] = 3
    labels[0:2, 0:5] = 255  # void is not an instance
    return labels


def _iou(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.bool(), b.bool()
    return float((a & b).sum()) / float((a | b).sum())


def _random_proposals(m=7, height=50, width=70, size=28, seed=0):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(m, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
    wh = 2 + torch.rand(m, 2, generator=g) * torch.tensor([width * 0.5, height * 0.5])
    boxes = torch.cat([xy, xy + wh], dim=1)
    scores = torch.rand(m, generator=g).sort(descending=True).values
    return FrameProposals(boxes, scores, torch.rand(m, size, size, generator=g), (height, width))


# -- FrameProposals ----------------------------------------------------------------------------


def test_save_load_round_trip(tmp_path):
    proposals = _random_proposals()
    proposals.save(tmp_path / "a.pt")
    loaded = FrameProposals.load(tmp_path / "a.pt")
    assert loaded.image_size == proposals.image_size
    assert torch.equal(loaded.boxes, proposals.boxes) and torch.equal(loaded.scores, proposals.scores)
    assert loaded.masks.dtype == torch.float32
    assert (loaded.masks - proposals.masks).abs().max() <= 0.5 / 255 + 1e-6  # uint8 storage
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary left behind


def test_load_rejects_missing_and_foreign_files(tmp_path):
    with pytest.raises(DMMInputError, match="does not exist"):
        FrameProposals.load(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(DMMInputError, match="junk.pt"):
        FrameProposals.load(tmp_path / "junk.pt")
    torch.save({"boxes": torch.zeros(0, 4)}, tmp_path / "partial.pt")
    with pytest.raises(DMMInputError, match="keys"):
        FrameProposals.load(tmp_path / "partial.pt")


def test_shape_checks():
    with pytest.raises(DMMInputError, match="boxes"):
        FrameProposals(torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, 28, 28), (10, 10))
    with pytest.raises(DMMInputError, match="scores"):
        FrameProposals(torch.zeros(3, 4), torch.zeros(2), torch.zeros(3, 28, 28), (10, 10))
    with pytest.raises(DMMInputError, match="masks"):
        FrameProposals(torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 28, 14), (10, 10))


def test_empty_and_to():
    empty = FrameProposals.empty((20, 30), mask_size=14)
    assert len(empty) == 0 and empty.paste().shape == (0, 20, 30) and empty.mask_size == 14
    moved = _random_proposals().to("cpu")
    assert len(moved) == 7


def _paste_one_box_directly(boxes, masks, height, width):
    """Reference: one F.grid_sample call per box, sampling at every pixel centre."""
    out = []
    for box, mask in zip(boxes.tolist(), masks):
        x1, y1, x2, y2 = box
        xs = ((torch.arange(width) + 0.5) - x1) / (x2 - x1) * 2 - 1  # normalised box coords
        ys = ((torch.arange(height) + 0.5) - y1) / (y2 - y1) * 2 - 1
        grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # [1, H, W, 2] as (x, y)
        out.append(F.grid_sample(mask[None, None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0])
    return torch.stack(out)


def test_paste_matches_per_box_grid_sample():
    proposals = _random_proposals()
    expected = _paste_one_box_directly(proposals.boxes, proposals.masks, 50, 70)
    pasted = proposals.paste()
    assert pasted.shape == (7, 50, 70)
    torch.testing.assert_close(pasted, expected, atol=1e-5, rtol=0)
    # zero outside each box, beyond the half-cell bilinear fall-off at its edges
    for k, (x1, y1, x2, y2) in enumerate(proposals.boxes.tolist()):
        cell_x, cell_y = (x2 - x1) / 28, (y2 - y1) / 28
        xs, ys = torch.arange(70) + 0.5, torch.arange(50) + 0.5
        inside = ((ys >= y1 - cell_y / 2) & (ys <= y2 + cell_y / 2))[:, None] & ((xs >= x1 - cell_x / 2) & (xs <= x2 + cell_x / 2))[None]
        assert torch.all(pasted[k][~inside] == 0)
        assert pasted[k][inside].sum() > 0


def test_paste_rescales_to_another_size_and_thresholds():
    labels = _labels()  # 60 x 80
    proposals = proposals_from_labels(labels)
    soft = proposals.paste(120, 160)
    hard = proposals.paste(120, 160, threshold=0.5)
    assert soft.shape == hard.shape == (3, 120, 160)
    assert set(hard.unique().tolist()) <= {0.0, 1.0}
    assert torch.equal(hard, (soft > 0.5).float())
    upsampled = torch.from_numpy(labels).repeat_interleave(2, 0).repeat_interleave(2, 1)
    for k, instance in enumerate((1, 2, 3)):
        assert _iou(hard[k], upsampled == instance) > 0.9
    # the boxes themselves were scaled, not only the canvas
    assert hard[0].nonzero()[:, 1].min() == 20 and hard[0].nonzero()[:, 1].max() == 79


def test_oracle_proposals_paste_back_to_instances():
    labels = _labels()
    proposals = proposals_from_labels(labels)
    assert len(proposals) == 3 and proposals.mask_size == 28
    assert torch.equal(proposals.scores, torch.ones(3))
    assert proposals.boxes[0].tolist() == [10.0, 5.0, 40.0, 25.0]  # tight, pixel-edge coordinates
    pasted = proposals.paste(threshold=0.5)
    for k, instance in enumerate((1, 2, 3)):
        assert _iou(pasted[k], torch.from_numpy(labels == instance)) > 0.9


def test_oracle_jitter_and_noise_are_seeded_and_sorted():
    labels = _labels()
    a = proposals_from_labels(labels, n_noise=5, jitter=0.2, rng=np.random.default_rng(3))
    b = proposals_from_labels(labels, n_noise=5, jitter=0.2, rng=np.random.default_rng(3))
    clean = proposals_from_labels(labels)
    assert len(a) == 8 and torch.equal(a.boxes, b.boxes)
    assert not torch.equal(a.boxes[:3], clean.boxes)
    assert torch.all(a.scores[1:] <= a.scores[:-1])
    assert torch.all(a.scores[3:] < 1)
    with pytest.raises(DMMInputError, match="2-D"):
        proposals_from_labels(labels[None])


def test_oracle_on_empty_frame():
    proposals = proposals_from_labels(np.zeros((10, 12), np.uint8), n_noise=2)
    assert len(proposals) == 2 and proposals.image_size == (10, 12)


# -- ProposalCache -----------------------------------------------------------------------------


def test_cache_miss_put_hit(tmp_path):
    cache = ProposalCache(tmp_path / "cache")
    assert cache.get("seq-a", 3) is None and not cache.has("seq-a", 3)
    proposals = proposals_from_labels(_labels())
    path = cache.put("seq-a", 3, proposals)
    assert path == tmp_path / "cache" / "seq-a" / "00003.pt"
    assert cache.has("seq-a", 3) and cache.has("seq-a", "00003")
    got = cache.get("seq-a", 3)
    assert torch.equal(got.boxes, proposals.boxes)
    assert cache.sequences() == ["seq-a"] and cache.frames("seq-a") == ["00003"]
    assert not list((tmp_path / "cache" / "seq-a").glob(".*"))  # atomic: no temporaries left


def test_cache_write_failure_leaves_no_file(tmp_path, monkeypatch):
    cache = ProposalCache(tmp_path)

    def broken_save(obj, path):
        with open(path, "wb") as handle:
            handle.write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        cache.put("s", 0, proposals_from_labels(_labels()))
    assert cache.get("s", 0) is None
    assert not list((tmp_path / "s").iterdir())


def test_cache_rejects_unsafe_names(tmp_path):
    cache = ProposalCache(tmp_path)
    with pytest.raises(DMMInputError, match="sequence"):
        cache.path("../escape", 0)
    with pytest.raises(DMMInputError, match="frame_id"):
        cache.path("s", "a/b")
