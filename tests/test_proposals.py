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
    assert not (tmp_path / "s").exists()  # not even the folder made for it


def test_cache_rejects_unsafe_names(tmp_path):
    cache = ProposalCache(tmp_path)
    with pytest.raises(DMMInputError, match="sequence"):
        cache.path("../escape", 0)
    with pytest.raises(DMMInputError, match="frame_id"):
        cache.path("s", "a/b")


# -- a tiny benchmark in the DAVIS layout ------------------------------------------------------


def _make_benchmark(root, sequences=(("train", 2), ("val", 2)), frames=3, height=48, width=64):
    """Moving coloured rectangles; Instances hold one extra distractor that Annotations lack."""
    import cv2

    from dmmlib.data.masks import write_label_png

    rng = np.random.default_rng(0)
    for split, count in sequences:
        names = [f"{split}-{k}" for k in range(count)]
        (root / "ImageSets" / "2017").mkdir(parents=True, exist_ok=True)
        (root / "ImageSets" / "2017" / f"{split}.txt").write_text("\n".join(names) + "\n")
        for name in names:
            for t in range(frames):
                image = np.full((height, width, 3), 40, np.uint8)
                instances = np.zeros((height, width), np.uint8)
                for k, (y, x) in enumerate([(5 + t, 5 + 2 * t), (25, 35 - t), (30, 5)], start=1):
                    instances[y : y + 14, x : x + 18] = k
                    image[y : y + 14, x : x + 18] = rng.integers(100, 255, size=3)
                annotations = np.where(instances == 3, 0, instances).astype(np.uint8)  # 3 = distractor
                (root / "JPEGImages" / "480p" / name).mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / "JPEGImages" / "480p" / name / f"{t:05d}.jpg"), image[:, :, ::-1])
                write_label_png(root / "Instances" / "480p" / name / f"{t:05d}.png", instances)
                write_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", annotations)
    return root


@pytest.fixture(scope="module")
def benchmark(tmp_path_factory):
    return _make_benchmark(tmp_path_factory.mktemp("bench"))


@pytest.fixture(scope="module")
def lite_net():
    from dmmlib.proposals import ProposalNet

    return ProposalNet("resnet18_fpn_lite", seed=0).eval()


# -- recall --------------------------------------------------------------------------------------


def _fill_cache(benchmark, cache_root, make):
    from dmmlib.data.davis import frame_files, read_split
    from dmmlib.data.masks import read_label_png

    cache = ProposalCache(cache_root)
    for seq in read_split(benchmark, "val"):
        for frame in frame_files(benchmark, seq):
            labels = read_label_png(benchmark / "Annotations" / "480p" / seq / f"{frame.stem}.png")
            cache.put(seq, frame.stem, make(labels))
    return cache


def test_recall_of_oracle_empty_and_random_proposals(benchmark, tmp_path):
    from dmmlib.proposals import proposal_recall, random_box_proposals

    _fill_cache(benchmark, tmp_path / "oracle", lambda labels: proposals_from_labels(labels, n_noise=3))
    _fill_cache(benchmark, tmp_path / "empty", lambda labels: FrameProposals.empty(labels.shape))
    rng = np.random.default_rng(0)
    _fill_cache(benchmark, tmp_path / "random", lambda labels: random_box_proposals(labels.shape, 50, rng))
    oracle = proposal_recall(benchmark, "val", tmp_path / "oracle")
    assert oracle["pairs"] == 2 * 3 * 2  # 2 sequences x 3 frames x 2 annotated objects
    assert oracle["recall"] == {0.5: 1.0, 0.7: 1.0}
    empty = proposal_recall(benchmark, "val", tmp_path / "empty")
    assert empty["recall"] == {0.5: 0.0, 0.7: 0.0} and empty["mean_best_iou"] == 0.0
    random = proposal_recall(benchmark, "val", tmp_path / "random", iou_thresholds=(0.5, 0.7, 0.9))
    assert 0.0 < random["mean_best_iou"] < oracle["mean_best_iou"]
    assert random["recall"][0.9] < 1.0
    # top_k cuts the list: with only the (score-sorted) noise kept, the oracle proposals go
    _fill_cache(benchmark, tmp_path / "noise-first", lambda labels: _noise_first(labels))
    assert proposal_recall(benchmark, "val", tmp_path / "noise-first", top_k=3)["recall"][0.5] == 0.0
    assert proposal_recall(benchmark, "val", tmp_path / "noise-first", top_k=50)["recall"][0.5] == 1.0


def _noise_first(labels):
    noise = proposals_from_labels(np.zeros_like(labels), n_noise=3)
    oracle = proposals_from_labels(labels)
    return FrameProposals(
        torch.cat([noise.boxes, oracle.boxes]), torch.linspace(1, 0.1, len(noise) + len(oracle)),
        torch.cat([noise.masks, oracle.masks]), labels.shape,
    )


def test_recall_needs_every_frame_cached(benchmark, tmp_path):
    from dmmlib.proposals import proposal_recall

    cache = _fill_cache(benchmark, tmp_path / "c", lambda labels: proposals_from_labels(labels))
    cache.path("val-1", 2).unlink()
    with pytest.raises(DMMInputError, match="val-1/00002"):
        proposal_recall(benchmark, "val", cache)


def test_recall_cli_prints_a_table(benchmark, tmp_path, capsys):
    from dmmlib.cli import main

    _fill_cache(benchmark, tmp_path / "c", lambda labels: proposals_from_labels(labels))
    assert main(["proposals", "recall", "--data", str(benchmark), "--split", "val", "--cache", str(tmp_path / "c")]) == 0
    out = capsys.readouterr().out
    assert "0.50  1.000" in out and "0.70  1.000" in out
    assert main(["proposals", "recall", "--data", str(tmp_path / "nowhere"), "--cache", str(tmp_path / "c")]) == 2


# -- ProposalNet ---------------------------------------------------------------------------------


def test_proposal_net_outputs(lite_net):
    frame = np.random.default_rng(1).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    proposals = lite_net.propose(frame)
    assert isinstance(proposals, FrameProposals)
    assert 0 < len(proposals) <= 50 and proposals.image_size == (40, 56) and proposals.mask_size == 28
    assert proposals.boxes.dtype == proposals.scores.dtype == proposals.masks.dtype == torch.float32
    assert torch.all(proposals.scores[1:] <= proposals.scores[:-1])
    assert proposals.masks.min() >= 0 and proposals.masks.max() <= 1
    assert torch.all(proposals.boxes[:, 2] <= 56) and torch.all(proposals.boxes[:, 3] <= 40)
    as_tensor = lite_net.propose(torch.from_numpy(frame).permute(2, 0, 1).float() / 255)
    torch.testing.assert_close(as_tensor.boxes, proposals.boxes)
    with pytest.raises(DMMInputError, match="uint8"):
        lite_net.propose(frame.astype(np.float32))


def test_weights_from_a_local_file(lite_net, tmp_path):
    from dmmlib.proposals import ProposalNet

    frame = np.random.default_rng(2).integers(0, 256, size=(40, 56, 3), dtype=np.uint8)
    torch.save(lite_net.detector.state_dict(), tmp_path / "w.pt")
    other_seed = ProposalNet("resnet18_fpn_lite", seed=1).eval()
    loaded = ProposalNet("resnet18_fpn_lite", weights=tmp_path / "w.pt", seed=1).eval()
    expected = lite_net.propose(frame)
    assert not torch.equal(other_seed.propose(frame).scores, expected.scores)
    got = loaded.propose(frame)
    assert torch.equal(got.boxes, expected.boxes) and torch.equal(got.masks, expected.masks)


def test_bad_weights_files(tmp_path):
    from dmmlib.proposals import ProposalNet

    with pytest.raises(DMMInputError, match="does not exist"):
        ProposalNet("resnet18_fpn_lite", weights=tmp_path / "missing.pt")
    (tmp_path / "corrupt.pt").write_bytes(b"\x00garbage")
    with pytest.raises(DMMInputError, match="corrupt.pt"):
        ProposalNet("resnet18_fpn_lite", weights=tmp_path / "corrupt.pt")
    torch.save({"backbone.body.conv1.weight": torch.zeros(3, 3)}, tmp_path / "wrong.pt")
    with pytest.raises(DMMInputError, match="does not fit"):
        ProposalNet("resnet18_fpn_lite", weights=tmp_path / "wrong.pt")
    with pytest.raises(DMMInputError, match="coco"):
        ProposalNet("resnet18_fpn_lite", weights="coco")
    with pytest.raises(DMMInputError, match="architecture"):
        ProposalNet("vgg")


def _coco_like_state(lite_net) -> dict:
    """The lite net's weights with 91-class predictors (COCO's class count), small random values."""
    generator = torch.Generator().manual_seed(3)
    state = dict(lite_net.detector.state_dict())
    for key, shape in (("roi_heads.box_predictor.cls_score.weight", (91, 256)),
                       ("roi_heads.box_predictor.cls_score.bias", (91,)),
                       ("roi_heads.box_predictor.bbox_pred.weight", (91 * 4, 256)),
                       ("roi_heads.box_predictor.bbox_pred.bias", (91 * 4,)),
                       ("roi_heads.mask_predictor.mask_fcn_logits.weight", (91, 64, 1, 1)),
                       ("roi_heads.mask_predictor.mask_fcn_logits.bias", (91,))):
        state[key] = torch.randn(shape, generator=generator) * 0.05
    return state


def test_foreign_class_heads_are_replaced_by_fresh_ones_on_request(lite_net, tmp_path):
    """heads="fresh" (a training start): a state dict with COCO's 91 classes loads all but the predictors."""
    from dmmlib.proposals import ProposalNet

    state = _coco_like_state(lite_net)
    torch.save(state, tmp_path / "coco-like.pt")
    net = ProposalNet("resnet18_fpn_lite", weights=tmp_path / "coco-like.pt", seed=5, heads="fresh")
    own = net.detector.state_dict()
    assert torch.equal(own["backbone.body.conv1.weight"], state["backbone.body.conv1.weight"])
    assert own["roi_heads.box_predictor.cls_score.weight"].shape == (2, 256)
    assert net.classes == 2 and net.detector.roi_heads.detections_per_img == 50


def test_coco_class_heads_are_kept_and_merged_into_one_object_class(lite_net, tmp_path):
    """The default heads="keep": COCO's 91 classes propose "objects", one class-agnostic NMS over all classes."""
    from torchvision.ops import box_iou

    from dmmlib.proposals import ProposalNet
    from dmmlib.proposals.net import MERGE_IOU, proposal_weights_kind

    torch.save(_coco_like_state(lite_net), tmp_path / "coco-like.pt")
    net = ProposalNet("resnet18_fpn_lite", weights=tmp_path / "coco-like.pt").eval()
    assert net.classes == 91 and net.detector.roi_heads.detections_per_img > 50
    assert proposal_weights_kind(tmp_path / "coco-like.pt") == "coco-merged"
    frame = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    proposals = net.propose(frame)
    assert 0 < len(proposals) <= 50 and proposals.masks.shape[1:] == (28, 28)
    assert (proposals.scores[:-1] >= proposals.scores[1:]).all()
    overlap = box_iou(proposals.boxes, proposals.boxes).triu(diagonal=1)
    assert overlap.max() <= MERGE_IOU  # without the merge one object comes back once per class
    raw = net.detector.roi_heads.detections_per_img
    assert raw > len(proposals)


def test_the_kind_of_proposal_weights_tells_trained_heads_from_random_ones(lite_net, tmp_path):
    from dmmlib.proposals.net import CHECKPOINT_FORMAT, proposal_weights_kind

    state = lite_net.detector.state_dict()
    for step, kind in ((0, "untrained-heads"), (5, "trained")):
        torch.save({"format": CHECKPOINT_FORMAT, "architecture": "resnet18_fpn_lite", "model": state, "step": step},
                   tmp_path / f"ckpt{step}.pt")
        assert proposal_weights_kind(tmp_path / f"ckpt{step}.pt") == kind
    assert proposal_weights_kind(None) == "random" and proposal_weights_kind("coco") == "coco-merged"
    with pytest.raises(DMMInputError, match="does not exist"):
        proposal_weights_kind(tmp_path / "missing.pt")


@pytest.mark.slow
def test_coco_weights_from_the_torch_cache_keep_their_91_class_heads(monkeypatch):
    """weights="coco" with the torchvision file at hand (a fake of the right shapes; nothing is downloaded)."""
    from torchvision.models._api import WeightsEnum
    from torchvision.models.detection import maskrcnn_resnet50_fpn

    from dmmlib.proposals import ProposalNet

    fake = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=91).state_dict()
    monkeypatch.setattr(WeightsEnum, "get_state_dict", lambda self, *args, **kwargs: fake)
    merged = ProposalNet("resnet50_fpn", weights="coco")
    assert merged.classes == 91 and merged.detector.roi_heads.detections_per_img > 50
    key = "roi_heads.box_predictor.cls_score.weight"
    assert torch.equal(merged.detector.state_dict()[key], fake[key])
    fresh = ProposalNet("resnet50_fpn", weights="coco", heads="fresh")
    assert fresh.classes == 2 and fresh.detector.roi_heads.detections_per_img == 50
    key = "backbone.body.layer1.0.conv1.weight"
    assert torch.equal(fresh.detector.state_dict()[key], fake[key])


def test_coco_download_failure_is_a_clear_error(monkeypatch):
    import torchvision.models.detection as detection

    from dmmlib.proposals import ProposalNet

    def offline(*args, **kwargs):
        if kwargs.get("weights") is not None:
            raise OSError("no network")
        raise AssertionError("expected a weights request")

    monkeypatch.setattr(detection, "maskrcnn_resnet50_fpn", offline)
    with pytest.raises(DMMInputError, match="local weights file"):
        ProposalNet("resnet50_fpn", weights="coco")


# -- training and the off-line computation -------------------------------------------------------


def test_training_runs_saves_and_resumes_bit_identically(benchmark, tmp_path):
    from dmmlib.proposals.train import (
        ProposalTrainConfig,
        load_checkpoint,
        loss_log_path,
        train_proposal_net,
    )

    config = ProposalTrainConfig(steps=3, batch_size=1, warmup_steps=1, checkpoint_every=2)
    straight = train_proposal_net(benchmark, tmp_path / "a.pt", config, seed=4, progress=False)
    assert straight["steps"] == 3 and len(straight["losses"]["total"]) == 3
    assert all(np.isfinite(straight["losses"]["total"]))
    assert len(loss_log_path(tmp_path / "a.pt").read_text().splitlines()) == 1 + 3
    with pytest.raises(DMMInputError, match="already exists"):
        train_proposal_net(benchmark, tmp_path / "a.pt", config, seed=4, progress=False)

    train_proposal_net(benchmark, tmp_path / "b.pt", config.replace(steps=2), seed=4, progress=False)
    assert load_checkpoint(tmp_path / "b.pt")["step"] == 2
    resumed = train_proposal_net(benchmark, tmp_path / "b.pt", config, seed=4, resume=True, progress=False)
    assert resumed["losses"]["total"] == straight["losses"]["total"]
    a, b = load_checkpoint(tmp_path / "a.pt")["model"], load_checkpoint(tmp_path / "b.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(DMMInputError, match="seed"):
        train_proposal_net(benchmark, tmp_path / "b.pt", config, seed=5, resume=True, progress=False)
    from dmmlib.proposals import ProposalNet

    assert ProposalNet(weights=tmp_path / "a.pt", profile="gpu").architecture == "resnet18_fpn_lite"
    with pytest.raises(DMMInputError, match="resnet50_fpn"):
        ProposalNet("resnet50_fpn", weights=tmp_path / "a.pt")
    with pytest.raises(DMMInputError, match="lr"):
        train_proposal_net(benchmark, tmp_path / "b.pt", config.replace(lr=0.5), seed=4, resume=True, progress=False)


def test_compute_proposals_caches_skips_and_shards(benchmark, lite_net, tmp_path):
    from dmmlib.distributed import World
    from dmmlib.proposals import compute_proposals

    shard0 = compute_proposals(benchmark, "val", lite_net, tmp_path / "c", progress=False, world=World(2, 0))
    assert shard0 == {"computed": 3, "skipped": 0, "sequences": 1}
    cache = ProposalCache(tmp_path / "c")
    assert cache.sequences() == ["val-0"]
    both = compute_proposals(benchmark, "val", lite_net, tmp_path / "c", progress=False, world=World(), num_workers=2)
    assert both == {"computed": 3, "skipped": 3, "sequences": 2}  # val-1's frames decoded by two workers
    # the cache holds what the net gives for these frames (masks up to the uint8 storage step)
    from dmmlib.data.davis import frame_files
    from dmmlib.data.images import read_frame

    frames = [read_frame(p) for p in frame_files(benchmark, "val-1")]
    for t, direct in enumerate(lite_net.propose_batch(frames)):
        cached = cache.get("val-1", t)
        assert len(cached) == len(direct) and cached.image_size == direct.image_size
        torch.testing.assert_close(cached.boxes, direct.boxes, atol=1e-3, rtol=0)
        assert (cached.masks - direct.masks).abs().max() <= 0.5 / 255 + 1e-4
    with pytest.raises(DMMInputError, match="rank"):
        World(2, 2)


def test_compute_refuses_to_mix_two_networks(benchmark, lite_net, tmp_path):
    from dmmlib.distributed import World
    from dmmlib.proposals import ProposalNet, compute_proposals

    compute_proposals(benchmark, "val", lite_net, tmp_path / "c", progress=False, world=World(2, 0))
    other = ProposalNet("resnet18_fpn_lite", seed=9)
    assert other.digest() != lite_net.digest()
    with pytest.raises(DMMInputError, match="another network"):
        compute_proposals(benchmark, "val", other, tmp_path / "c", progress=False)


def test_training_starts_from_given_weights(benchmark, lite_net, tmp_path):
    from dmmlib.proposals.train import (
        ProposalTrainConfig,
        load_checkpoint,
        train_proposal_net,
    )

    torch.save(lite_net.detector.state_dict(), tmp_path / "init.pt")
    config = ProposalTrainConfig(steps=0, init_weights=str(tmp_path / "init.pt"))
    train_proposal_net(benchmark, tmp_path / "zero.pt", config, seed=7, progress=False)
    saved = load_checkpoint(tmp_path / "zero.pt")["model"]
    assert all(torch.equal(saved[k], v) for k, v in lite_net.detector.state_dict().items())


def test_cached_proposals_follow_an_axis_aligned_clip_transform(tmp_path):
    """Proposals cached for the stored frames, warped by a clip's resize + scale/shift/flip, fit the clip's labels."""
    from dmmlib.data import DavisDataset, ensure_synthetic
    from dmmlib.data.clips import AffineAugment, ClipDataset, ClipSampler
    from dmmlib.proposals.cache import ProposalCache
    from dmmlib.proposals.sources import cached_source
    from dmmlib.unrolled import frame_query

    root = ensure_synthetic(profile="smoke", progress=False)
    dataset = DavisDataset(root, "train")
    cache = ProposalCache(tmp_path / "cache")
    for name in dataset.names:
        sequence = dataset.sequence(name)
        for index in range(len(sequence)):
            cache.put(name, sequence.frame_names[index], proposals_from_labels(sequence.labels(index), n_noise=0))
    flips = AffineAugment(rotation=0.0, shear=0.0, flip_prob=1.0, scale=(0.8, 1.2))
    clips = ClipDataset(ClipSampler(dataset, clip_length=2, seed=3, size=(40, 72), augment=flips), 4)
    source = cached_source(cache)
    checked = 0
    for index in range(len(clips)):
        item = clips[index]
        meta = {k: v for k, v in item.items() if k not in ("frames", "labels")}
        assert float(meta["transform"][0, 0]) < 0  # flipped
        proposals = source(frame_query(item["frames"], item["labels"], meta, 1, np.random.default_rng(0)))
        pasted = proposals.paste(40, 72, threshold=0.5).bool()
        labels = item["labels"][1]
        for k in range(1, item["num_objects"] + 1):
            truth = labels == k
            if truth.sum() < 20:
                continue
            ious = (pasted & truth).flatten(1).sum(1) / (pasted | truth).flatten(1).sum(1)
            assert float(ious.max()) > 0.75, (index, k, float(ious.max()))
            checked += 1
    assert checked >= 3
    rotated = np.array([[0.9, 0.1, 0.0], [-0.1, 0.9, 0.0]])
    with pytest.raises(DMMInputError, match="axis-aligned"):
        proposals.transformed(rotated, (40, 72))


def test_matching_features_start_from_the_proposal_nets_backbone(tmp_path):
    """f_theta initialised from a copy of the detector's trunk computes exactly the detector's conv2-conv4 maps."""
    from dmmlib.features import FeatureExtractor
    from dmmlib.proposals.net import ProposalNet

    torch.manual_seed(0)
    net = ProposalNet("resnet18_fpn_lite", seed=1).eval()
    with torch.no_grad():  # non-trivial batch-norm statistics, as after training
        for module in net.detector.backbone.body.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    state = net.backbone_state_dict()
    assert not any(k.startswith(("layer4.", "fc.")) for k in state) and "layer3.1.conv2.weight" in state
    torch.save(state, tmp_path / "trunk.pt")
    levels = ("conv2", "conv3", "conv4")
    features = FeatureExtractor("resnet18", weights=tmp_path / "trunk.pt", pool_levels=levels).eval()
    assert features.levels == levels and "conv5" not in features.stages
    frames = torch.rand(2, 3, 48, 80)
    with torch.no_grad():
        ours = features(frames)
        mean, std = features.mean, features.std
        theirs = net.detector.backbone.body((frames - mean) / std)
    for k, level in enumerate(levels):
        torch.testing.assert_close(ours[level], theirs[str(k)], atol=1e-5, rtol=1e-4)
    with pytest.raises(DMMInputError, match="do not fit"):  # the trunk has no conv5 to pool
        FeatureExtractor("resnet18", weights=tmp_path / "trunk.pt")


def test_proposal_training_reads_losses_in_batches_and_names_the_diverged_step(tmp_path):
    from dmmlib.proposals.train import ProposalTrainConfig, _ProposalRun

    run = _ProposalRun(tmp_path / "x.pt", ProposalTrainConfig(), 0, None, None, None, torch.device("cpu"))
    run.pending = [{"loss_mask": torch.tensor(0.5), "total": torch.tensor(1.5)},
                   {"loss_mask": torch.tensor(0.25), "total": torch.tensor(1.0)}]
    run.step = 2
    run.flush()
    assert run.losses == {"loss_mask": [0.5, 0.25], "total": [1.5, 1.0]} and run.pending == []
    run.pending = [{"loss_mask": torch.tensor(0.1), "total": torch.tensor(0.2)},
                   {"loss_mask": torch.tensor(float("nan")), "total": torch.tensor(float("nan"))}]
    run.step = 4
    with pytest.raises(FloatingPointError, match="at step 4"):
        run.flush()
