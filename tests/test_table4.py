"""dmmlib.lessons.book_models / table4 / table4_report: units of work end to end (smoke), caching, resuming,
the baselines, the report's statistics; and the idealised proposals kept for ablations."""

import json
import shutil
import time

import numpy as np
import pandas as pd
import pytest
import torch

from dmmlib.data import DavisDataset, ensure_synthetic
from dmmlib.data.clips import AXIS_ALIGNED, ClipDataset, ClipSampler
from dmmlib.lessons import book_models
from dmmlib.lessons import table4 as t4
from dmmlib.lessons import table4_report as report
from dmmlib.lessons.verdicts import VERDICTS
from dmmlib.proposals import ProposalCache, proposals_from_labels
from dmmlib.proposals.oracle import IdealProposals, instance_proposals
from dmmlib.proposals.sources import instance_source
from dmmlib.unrolled import frame_query

TINY = {"steps": 2, "checkpoint_every": 1, "heldout_every": 1, "heldout_clips": 1}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 0.0


@pytest.fixture(scope="module")
def smoke_root():
    return ensure_synthetic(profile="smoke", progress=False)


@pytest.fixture
def runs(tmp_path, monkeypatch, one_torch_thread):
    """Every unit and evaluation of this test goes to ``tmp_path`` (the proposal net stays shared)."""
    monkeypatch.setattr(book_models, "runs_dir", lambda: tmp_path / "runs")
    monkeypatch.setattr(t4, "runs_dir", lambda: tmp_path / "runs")
    return tmp_path / "runs"


def _instance_frame_with_distractor(root):
    """An instance map of the smoke benchmark holding a distractor (id above the tracked ids)."""
    for split in ("train", "val"):
        tracked = DavisDataset(root, split)
        instances = DavisDataset(root, split, annotations="Instances")
        for name in tracked.names:
            k = max(tracked.sequence(name).object_ids)
            sequence = instances.sequence(name)
            for index in range(len(sequence)):
                labels = sequence.labels(index)
                if labels.max() > k:
                    return labels, k
    pytest.skip("the smoke benchmark has no distractor")


def test_instance_proposals_cover_every_instance_including_distractors(smoke_root):
    labels, k = _instance_frame_with_distractor(smoke_root)
    proposals = instance_proposals(labels, np.random.default_rng(0))
    pasted = proposals.paste(threshold=0.5).numpy().astype(bool)
    ids = [int(i) for i in np.unique(labels) if i not in (0, 255) and (labels == i).sum() >= IdealProposals().min_area]
    assert any(i > k for i in ids)
    for instance in ids:  # tracked objects and distractors alike get a proposal overlapping them well
        best = max(_iou(p, labels == instance) for p in pasted)
        assert best >= 0.5, (instance, best)
    tracked_only = np.where(labels > k, 0, labels).astype(np.uint8)
    oracle = proposals_from_labels(tracked_only, n_noise=0).paste(threshold=0.5).numpy().astype(bool)
    distractor = labels == max(ids)
    assert max(_iou(p, distractor) for p in oracle) < 0.5


def test_instance_proposals_deterministic_and_capped(smoke_root):
    labels, _ = _instance_frame_with_distractor(smoke_root)
    a = instance_proposals(labels, np.random.default_rng([3, 1]))
    b = instance_proposals(labels, np.random.default_rng([3, 1]))
    c = instance_proposals(labels, np.random.default_rng([3, 2]))
    assert torch.equal(a.boxes, b.boxes) and torch.equal(a.masks, b.masks) and torch.equal(a.scores, b.scores)
    assert not torch.equal(a.boxes[: len(c)], c.boxes[: len(a)])
    assert bool((a.scores[:-1] >= a.scores[1:]).all())
    assert len(instance_proposals(labels, np.random.default_rng(0), IdealProposals(noise=80))) == 50
    assert len(instance_proposals(labels, np.random.default_rng(0), IdealProposals(noise=80, top_k=7))) == 7


def test_clips_carry_instances_aligned_with_labels(smoke_root):
    sampler = ClipSampler(DavisDataset(smoke_root, "train"), clip_length=3, seed=0, size=(48, 80), augment=AXIS_ALIGNED,
                          instances=DavisDataset(smoke_root, "train", annotations="Instances"))
    item = ClipDataset(sampler, 2)[0]
    assert item["instances"].shape == item["labels"].shape and item["transform"].shape == (2, 3)
    assert bool(((item["labels"] > 0) <= (item["instances"] > 0)).all())
    meta = {k: v for k, v in item.items() if k not in ("frames", "labels")}
    proposals = instance_source()(frame_query(item["frames"], item["labels"], meta, 1, np.random.default_rng(0)))
    assert len(proposals) >= int(item["labels"][1].max())


def test_book_model_config_uses_the_trained_proposals_and_trunk(smoke_root):
    assets = book_models.prepare_proposals("smoke")
    cfg = book_models.train_config("ft2", 1, "smoke")
    assert cfg.proposals == "cache" and cfg.proposal_cache == str(assets.caches["train"])
    assert cfg.backbone_weights == str(assets.f_theta) and cfg.augment and cfg.augment_axis_aligned
    assert cfg.seed == 1 and cfg.unroll == 2 and cfg.model["refine_mode"] == "pass-through"
    assert book_models.train_config("ft2-plain", 1, "smoke").model["refine_mode"] == "plain"
    assert book_models.train_config("frozen", 1, "smoke").unroll == book_models.FROZEN_UNROLL
    model = book_models.build_model(cfg, frozen=True)
    assert not any(p.requires_grad for p in model.features.parameters())
    assert "conv5" not in model.features.stages  # the smoke/cpu trunk has no conv5


def test_frozen_unit_keeps_its_features_and_units_are_cached(runs):
    budget = dict(book_models.model_budget("smoke"), **TINY)
    cfg = book_models.train_config("frozen", 0, "smoke", budget)
    initial = book_models.build_model(cfg, frozen=True)
    unit = book_models.train_unit("frozen", 0, "smoke", budget)
    assert len(unit.log) == 2 and [r["step"] for r in unit.heldout] == [0, 1, 2]
    for key, value in unit.model.features.state_dict().items():
        assert torch.equal(value.cpu(), initial.features.state_dict()[key]), key
    head = unit.model.refinement.state_dict()
    assert any(not torch.equal(v.cpu(), initial.refinement.state_dict()[k]) for k, v in head.items())
    assert not (unit.run_dir / "checkpoints").exists()  # a finished unit keeps model.pt only
    started = time.perf_counter()
    again = book_models.train_unit("frozen", 0, "smoke", budget)
    assert time.perf_counter() - started < 10 and again.run_dir == unit.run_dir
    other = dict(budget, lr_random=5e-4)  # other settings: another unit
    assert book_models.run_dir("frozen", 0, "smoke", other) != unit.run_dir


def test_a_killed_unit_resumes_and_ends_like_an_uninterrupted_one(runs, monkeypatch):
    budget = dict(book_models.model_budget("smoke"), **dict(TINY, steps=3))
    straight = book_models.train_unit("ft1", 0, "smoke", budget).model.state_dict()
    folder = book_models.run_dir("ft1", 0, "smoke", budget)
    shutil.rmtree(folder)
    real = book_models.heldout_stats

    def killed_at_step_2(model, cfg, profile=None, budget=None):
        if len(book_models.read_jsonl(folder / book_models.HELDOUT_LOG)) == 2:  # steps 0 and 1 logged
            raise KeyboardInterrupt("killed")
        return real(model, cfg, profile, budget)

    monkeypatch.setattr(book_models, "heldout_stats", killed_at_step_2)
    with pytest.raises(KeyboardInterrupt):
        book_models.train_unit("ft1", 0, "smoke", budget)
    assert not (folder / "done.json").exists() and list((folder / "checkpoints").glob("*.pt"))
    monkeypatch.setattr(book_models, "heldout_stats", real)
    resumed = book_models.train_unit("ft1", 0, "smoke", budget)
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, straight[key]), key
    assert [r["step"] for r in resumed.heldout] == [0, 1, 2, 3]


def test_ceiling_of_exact_proposals_is_the_truth_and_static_repeats_frame_0(smoke_root, tmp_path):
    sequence = DavisDataset(smoke_root, "val").sequence(DavisDataset(smoke_root, "val").names[0])
    cache = ProposalCache(tmp_path / "exact")
    for t in range(len(sequence)):
        cache.put(sequence.name, sequence.frame_names[t], proposals_from_labels(sequence.labels(t), n_noise=3))
    height, width = sequence.labels(0).shape
    ceiling = list(t4.ceiling_labels(sequence, cache, (height, width)))
    for t, labels in enumerate(ceiling):
        truth = sequence.labels(t)
        assert np.mean(labels == np.where(truth == 255, 0, truth)) > 0.98, t
    static = list(t4.static_labels(sequence))
    assert len(static) == len(sequence) and all(np.array_equal(s, static[0]) for s in static)


def test_run_table4_smoke_end_to_end_cached_and_reported(runs):
    budget = dict(book_models.model_budget("smoke"), **dict(TINY, steps=1))
    settings = dict(t4.table4_settings("smoke"), val_videos=2, bootstrap=100)
    objects, videos = t4.run_table4("smoke", budget=budget, settings=settings)
    assert set(objects["row"]) == set(t4.ROWS + t4.ABLATIONS)
    assert objects[["J", "F", "JF"]].apply(lambda c: c.between(0, 1)).all().all()
    assert set(objects["difficulty"]) <= {"lookalike", "crossing"}
    per_row = objects.groupby("row").size()
    assert per_row.nunique() == 1  # every row scores the same objects
    assert set(videos["row"]) == set(t4.ROWS + t4.ABLATIONS) - {"static", "ceiling"}
    started = time.perf_counter()
    again, _ = t4.run_table4("smoke", budget=budget, settings=settings)
    assert time.perf_counter() - started < 20
    pd.testing.assert_frame_equal(objects, again)
    summary = report.summary_table(objects)
    assert list(summary.index) == [r for r in t4.ROWS + t4.ABLATIONS]
    rows = report.report_card_rows(objects)
    assert len(rows) == 3 * len(summary) and json.loads(json.dumps(rows)) == rows
    checks = report.claim_checks(objects)
    assert len(checks) == len(report.CLAIMS) and set(checks["verdict"]) <= set(VERDICTS)
    targets = report.targets(objects, videos)
    assert list(targets.index) == ["gap", "refinement", "appearance"]


def test_contrast_is_the_paired_difference_and_targets_read_it():
    rows = []
    for seed in (0, 1):
        for video, difficulty, n in (("a", "lookalike", 2), ("b", "crossing", 1), ("c", "crossing", 3)):
            for k in range(n):
                for row, value in (("x", 0.6), ("y", 0.5)):
                    rows.append({"seed": seed, "row": row, "video": video, "difficulty": difficulty, "object": k,
                                 "J": value, "F": value, "JF": value})
    objects = pd.DataFrame(rows)
    estimate = report.compare(objects, "x", "y")
    assert estimate.mean == pytest.approx(10.0) and estimate.low == pytest.approx(10.0)
    assert report.compare(objects, "x", "y", "crossing").n_videos == 2
    assert np.isnan(report.compare(objects[objects["difficulty"] == "crossing"], "x", "y", "lookalike").mean)


def test_claims_are_judged_by_the_one_rule():
    """Each claim's verdict is verdicts.verdict(outcome(its paired estimate), its expectation)."""
    rows = []
    for seed in (0, 1, 2):
        for v in range(6):
            for row in ("greedy", "hungarian", "dmm-frozen", "ft-unroll2", "ft-unroll3"):
                value = {"greedy": 0.50, "hungarian": 0.60, "dmm-frozen": 0.602, "ft-unroll2": 0.70,
                         "ft-unroll3": 0.75}[row] + 0.01 * ((v * 7 + seed * 3) % 5)
                rows.append({"seed": seed, "row": row, "video": f"v{v}", "difficulty": "crossing", "object": 0,
                             "J": value, "F": value, "JF": value})
    checks = report.claim_checks(pd.DataFrame(rows)).set_index(["row", "reference"])
    like_hungarian, beats_greedy = checks.loc[("dmm-frozen", "hungarian")], checks.loc[("dmm-frozen", "greedy")]
    assert like_hungarian["outcome"] == "alike" and like_hungarian["verdict"] == "reproduces"
    assert beats_greedy["outcome"] == "better" and beats_greedy["verdict"] == "reproduces"
    assert beats_greedy["paper outcome"] == "alike"  # the paper's own +0.2 J is below the minimal effect
    tuned, unroll3 = checks.loc[("ft-unroll2", "dmm-frozen")], checks.loc[("ft-unroll3", "ft-unroll2")]
    assert tuned["outcome"] == "better" and tuned["verdict"] == "reproduces" and tuned["paper outcome"] == "better"
    assert unroll3["outcome"] == "better" and unroll3["verdict"] == "does not reproduce"  # paper: 3 does not help


def test_flatness():
    flat = report.flatness([{"step": s, "loss": 1.0 - 0.5 * (1 - np.exp(-s / 5))} for s in range(0, 101, 10)])
    falling = report.flatness([{"step": s, "loss": 1.0 - 0.004 * s} for s in range(0, 101, 10)])
    assert flat["late_share"] < 0.05 and falling["late_share"] == pytest.approx(0.4)
    # the rule: flat, still falling, turned back up, and never moved (no share of nothing: not flat)
    def curve(values):
        return [{"step": 10 * k, "loss": v} for k, v in enumerate(values)]

    assert report.flattened(curve([1.0, 0.6, 0.5, 0.5, 0.5, 0.5]))
    assert not report.flattened(curve([1.0, 0.9, 0.8, 0.7, 0.6, 0.5]))
    assert not report.flattened(curve([1.0, 0.6, 0.5, 0.6, 0.7, 0.8]))
    assert not report.flattened(curve([1.0] * 6))


def test_in_processes_runs_every_call_and_raises_a_failed_ones_error(tmp_path):
    calls = [(tmp_path / f"{k}.txt", str(k)) for k in range(3)]
    book_models.in_processes(type(tmp_path).write_text, calls, workers=2)  # spawned, one torch thread each
    assert sorted(p.read_text() for p in tmp_path.glob("*.txt")) == ["0", "1", "2"]
    with pytest.raises(ValueError, match="invalid literal"):
        book_models.in_processes(int, [("1",), ("not a number",)], workers=2)
    book_models.in_processes(type(tmp_path).write_text, [(tmp_path / "here.txt", "x")], workers=2)  # one call: here
    assert (tmp_path / "here.txt").read_text() == "x"


@pytest.mark.slow
def test_units_trained_side_by_side_equal_units_trained_here(tmp_path, monkeypatch, one_torch_thread):
    """train_units with 2 workers (spawned processes, which read $DMM_DATA_DIR) gives the same training log and
    weights as training the unit in this process, one thread each; finished units are only read back."""
    assets = book_models.prepare_proposals("smoke")
    for name, place in (("side-by-side", tmp_path / "a"), ("here", tmp_path / "b")):
        place.mkdir()
        for shared in (assets.root, assets.work):  # the benchmark and the proposal net, not the runs
            (place / shared.name).symlink_to(shared)
    monkeypatch.setenv("DMM_DATA_DIR", str(tmp_path / "a"))
    units = [("frozen", 0), ("ft1", 0)]
    side = book_models.train_units(units, "smoke", workers=2)
    assert list(side) == units and all(book_models.unit_trained(k, s, "smoke") for k, s in units)
    monkeypatch.setenv("DMM_DATA_DIR", str(tmp_path / "b"))
    here = book_models.train_units([("ft1", 0)], "smoke", workers=1)[("ft1", 0)]
    theirs = side[("ft1", 0)]
    assert [r["loss"] for r in here.log] == [r["loss"] for r in theirs.log]
    assert here.heldout == theirs.heldout
    for (name, a), b in zip(here.model.state_dict().items(), theirs.model.state_dict().values()):
        assert torch.equal(a, b), name
    started = time.perf_counter()
    again = book_models.train_units([("ft1", 0)], "smoke", workers=2)  # finished: read back, no process started
    assert again[("ft1", 0)].heldout == here.heldout and time.perf_counter() - started < 5
