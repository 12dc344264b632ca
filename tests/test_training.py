"""dmmlib.training: the loss goes down, resume is bit-identical, configs are checked (losses: test_losses.py).

Most tests train ``TinyTracker`` -- a few-hundred-parameter module with DMMNet's
``init_state``/``step`` interface (a conv feature map, cosine cost, soft assignment,
Eq. 8 and a conv refinement with dropout) -- on ``TinyClips``, so they take seconds;
one test trains the real DMMNet on the synthetic smoke benchmark.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dmmlib import losses, train_config, training, unrolled
from dmmlib.checkpoints import checkpoint_paths, load_training_checkpoint
from dmmlib.errors import DMMInputError

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------------------------
# Stand-ins: a tiny tracker with DMMNet's interface and a tiny clip dataset
# ----------------------------------------------------------------------------------------------


def _pool(features: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Mask-weighted mean of features: [B, c, H, W], [B, k, H, W] -> [B, k, c]."""
    weights = masks / masks.sum(dim=(-2, -1), keepdim=True).clamp(min=1.0)
    return torch.einsum("bchw,bkhw->bkc", features, weights)


class TinyTracker(nn.Module):
    """init_state / step like DMMNet, with a cosine cost and a softmax in place of Alg. 1."""

    def __init__(self, width: int = 6, dropout: float = 0.2):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1))
        self.dropout = nn.Dropout(dropout)  # makes the torch RNG matter for resume
        self.refine = nn.Conv2d(width + 2, 1, 3, padding=1)

    def init_state(self, frames, template_masks, template_valid):
        features = self.features(frames)
        return SimpleNamespace(templates=_pool(features, template_masks.float()), masks=template_masks.float(),
                               valid=template_valid)

    def step(self, frames, proposals, state):
        b, n, height, width = state.masks.shape
        features = self.dropout(self.features(frames))
        pasted = [p.paste(height, width) for p in proposals]
        m = max(len(p) for p in pasted)
        proposal_masks = torch.stack([torch.cat([p, p.new_zeros(m - len(p), height, width)]) for p in pasted])
        real = torch.stack([torch.arange(m) < len(p) for p in pasted])
        cosine = F.cosine_similarity(state.templates[:, :, None], _pool(features, proposal_masks)[:, None], dim=-1)
        cost = -cosine
        x_hat = torch.softmax((-cost * 5).masked_fill(~real[:, None], -1e4), dim=-1)
        matched = torch.einsum("bnm,bmhw->bnhw", x_hat, proposal_masks)
        per_object = torch.cat([
            features[:, None].expand(b, n, -1, -1, -1), matched[:, :, None], state.masks[:, :, None]
        ], dim=2).flatten(0, 1)
        logits = self.refine(per_object).view(b, n, height, width)
        out = SimpleNamespace(logits=logits, cost=cost, cosine=cosine, x_hat=x_hat, x_tilde=x_hat,
                              matched_masks=matched, proposal_masks=proposal_masks)
        return out, state


class TinyClips(torch.utils.data.Dataset):
    """Clips of one or two squares drifting over noise; item i is fixed by (seed, i).

    ``repeat``: every item is clip 0. Clips differ in their number of objects, so
    a loss that weighed objects rather than clips would make DDP inexact.
    """

    def __init__(self, n_clips=16, length=3, size=(24, 32), seed=0, repeat=False):
        self.n_clips, self.length, self.size, self.seed, self.repeat = n_clips, length, size, seed, repeat

    def __len__(self):
        return self.n_clips

    def __getitem__(self, index):
        rng = np.random.default_rng([self.seed, 0 if self.repeat else index])
        height, width = self.size
        frames = rng.uniform(0, 0.3, size=(self.length, 3, height, width)).astype(np.float32)
        labels = np.zeros((self.length, height, width), dtype=np.uint8)
        for obj in range(1, int(rng.integers(1, 3)) + 1):  # one or two objects
            colour = rng.uniform(0.4, 1.0, size=3)
            y, x = rng.integers(2, height - 10), rng.integers(2, width - 10)
            dy, dx = rng.integers(-1, 2, size=2)
            for t in range(self.length):
                yy, xx = np.clip(y + t * dy, 0, height - 8), np.clip(x + t * dx, 0, width - 8)
                frames[t, :, yy:yy + 8, xx:xx + 8] = colour[:, None, None]
                labels[t, yy:yy + 8, xx:xx + 8] = obj
        return {"frames": torch.from_numpy(frames), "labels": torch.from_numpy(labels), "sequence": f"clip{index}"}


def tiny_config(**changes) -> train_config.TrainConfig:
    values = dict(profile="smoke", frame_size=[24, 32], max_objects=2, unroll=2, clips_per_epoch=16, batch_size=2,
                  epochs=4, max_steps=6, proposal_noise=3, checkpoint_every=2, device="cpu", log_every=1)
    values.update(changes)
    return train_config.config_from_dict(values, source="test config")


def without_seconds(log):
    """A training log without its wall-clock times (the one field two identical runs do not share)."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in log]


def tiny_train(run_dir, cfg, repeat=False, **kwargs):
    torch.manual_seed(cfg.seed)
    model = TinyTracker()
    dataset = TinyClips(n_clips=cfg.clips_per_epoch, length=unrolled.clip_length(cfg), size=tuple(cfg.frame_size),
                        repeat=repeat)
    return training.train(cfg, run_dir, model=model, dataset=dataset, progress=False, **kwargs)


# ----------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------


def test_loss_goes_down_on_a_fixed_clip(tmp_path):
    cfg = tiny_config(max_steps=25, epochs=10, lr_random=1e-2, checkpoint_every=100)
    result = tiny_train(tmp_path / "run", cfg, repeat=True)
    first = np.mean([r["loss"] for r in result.log[:3]])
    last = np.mean([r["loss"] for r in result.log[-3:]])
    assert len(result.log) == 25
    assert last < 0.7 * first, (first, last)


@pytest.mark.parametrize("burn_in", [0, 2])
def test_resume_continues_bit_identically(tmp_path, burn_in):
    straight = tiny_train(tmp_path / "straight", tiny_config(max_steps=7, checkpoint_every=2, burn_in=burn_in))
    # "interrupted" after 3 steps (its final checkpoint is at step 3), then resumed to 7
    tiny_train(tmp_path / "split", tiny_config(max_steps=3, checkpoint_every=2, burn_in=burn_in))
    resumed = tiny_train(tmp_path / "split", tiny_config(max_steps=7, checkpoint_every=2, burn_in=burn_in), resume=True)
    assert resumed.step == 7
    assert_same_run(straight, resumed)


def assert_same_run(straight, resumed):
    assert resumed.step == straight.step == straight.log[-1]["step"]
    for (name, a), (_, b) in zip(straight.model.state_dict().items(), resumed.model.state_dict().items()):
        assert torch.equal(a, b), name
    strip = without_seconds(straight.log)
    assert without_seconds(resumed.log) == strip
    assert len(set(r["loss"] for r in strip)) > 1  # the losses really change from step to step


class GlobalRandomClips(TinyClips):
    """A user's dataset that augments with numpy's and Python's global RNGs (not a seeded generator)."""

    def __getitem__(self, index):
        item = super().__getitem__(index)
        noise = np.random.uniform(0.0, 0.2, size=item["frames"].shape).astype(np.float32)
        item["frames"] = item["frames"] + torch.from_numpy(noise) * random.random()
        return item


def global_random_train(run_dir, cfg, **kwargs):
    torch.manual_seed(cfg.seed)
    dataset = GlobalRandomClips(n_clips=cfg.clips_per_epoch, length=cfg.unroll + 1, size=tuple(cfg.frame_size))
    return training.train(cfg, run_dir, model=TinyTracker(), dataset=dataset, progress=False, **kwargs)


def test_resume_continues_a_data_pipeline_that_draws_from_numpy_and_python(tmp_path):
    """Resume restores numpy's and Python's global RNG states as well as torch's: a dataset that draws
    its augmentation from them continues as if the run had not stopped."""
    straight = global_random_train(tmp_path / "straight", tiny_config(max_steps=5, checkpoint_every=2))
    global_random_train(tmp_path / "split", tiny_config(max_steps=3, checkpoint_every=2))
    np.random.seed(123)  # what the process happens to hold
    random.seed(123)
    resumed = global_random_train(tmp_path / "split", tiny_config(max_steps=5, checkpoint_every=2), resume=True)
    assert without_seconds(resumed.log) == without_seconds(straight.log)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), name


def test_resume_without_restoring_the_rng_would_not_be_identical(tmp_path, monkeypatch):
    # The test above can fail: dropout draws from the torch RNG, so a resume that did not
    # restore the saved RNG states diverges from the straight run.
    straight = tiny_train(tmp_path / "straight", tiny_config(max_steps=5))
    tiny_train(tmp_path / "split", tiny_config(max_steps=2))
    torch.manual_seed(123)  # what the process happens to hold
    monkeypatch.setattr(training, "restore_rng", lambda state: None)
    resumed = tiny_train(tmp_path / "split", tiny_config(max_steps=5), resume=True)
    assert not all(torch.equal(a, b) for a, b in zip(straight.model.parameters(), resumed.model.parameters()))


class ScriptedTracker(nn.Module):
    """A tracker whose outputs are written by hand: each frame's logits and X_hat, and the proposals P~."""

    def __init__(self, logits, x_hat, proposal_masks):
        super().__init__()
        self.outputs = [SimpleNamespace(logits=l, x_hat=x, proposal_masks=p) for l, x, p in zip(logits, x_hat, proposal_masks)]
        self.anchor = nn.Parameter(torch.zeros(()))  # so that the losses have something to differentiate

    def init_state(self, frames, template_masks, template_valid):
        return 0

    def step(self, frames, proposals, state):
        self.grad_enabled = [*getattr(self, "grad_enabled", []), torch.is_grad_enabled()]
        out = self.outputs[state]
        return SimpleNamespace(logits=out.logits + self.anchor, x_hat=out.x_hat, proposal_masks=out.proposal_masks), state + 1


def scripted_clip():
    """The hand-written clip of the test below: (model, frames [1, 3, 3, 6, 8], labels [1, 3, 6, 8])."""
    H, W = 6, 8
    one, two = torch.zeros(H, W), torch.zeros(H, W)
    one[0:2, 0:4] = 1
    two[4:6, 6:8] = 1
    labels = torch.zeros(1, 3, H, W, dtype=torch.long)
    labels[0, 0][one.bool()] = 1
    labels[0, 0][two.bool()] = 2
    labels[0, 1] = labels[0, 2] = labels[0, 0]
    frames = torch.zeros(1, 3, 3, H, W)

    def logits_of(*masks):
        return torch.stack([torch.where(m.bool(), 5.0, -5.0) for m in masks])[None]  # [1, n, H, W]

    wide_two = torch.zeros(H, W)
    wide_two[4:6, 4:8] = 1
    left_one = torch.zeros(H, W)
    left_one[0:2, 0:2] = 1
    proposals_1 = torch.stack([one, two, torch.zeros(H, W)])[None]  # [1, m=3, H, W]
    proposals_2 = torch.stack([one, torch.zeros(H, W), torch.zeros(H, W)])[None]  # nothing over object 2
    x_hat = [torch.tensor([[[0.9, 0.1, 0.0], [0.2, 0.7, 0.1]]]),  # frame 1: object 1 -> p1 (right), 2 -> p2 (right)
             torch.tensor([[[0.1, 0.8, 0.1], [0.3, 0.3, 0.4]]])]  # frame 2: object 1 -> p2 (wrong), 2 unscored
    model = ScriptedTracker([logits_of(one, wide_two), logits_of(left_one, torch.zeros(H, W))], x_hat,
                            [proposals_1, proposals_2])
    return model, frames, labels


def test_logged_iou_and_assignment_accuracy_by_hand():
    """One clip, 2 objects (a 2 x 4 and a 2 x 2 block), 2 predicted frames, IoU and accuracy counted by hand.

    Frame 1: object 1 predicted exactly (IoU 1), object 2 as a 2 x 4 block over its 2 x 2 (IoU 4/8). Frame 2:
    object 1 predicted as its left half (IoU 4/8), object 2 missed (IoU 0). Mean over the 4 (object, frame)
    pairs: 0.5. X_hat's largest entry is the GT-best proposal in frame 1 for both objects, and in frame 2 for
    neither; in frame 2 no proposal covers object 2 (IoU >= 0.5 with none), so that pair is not scored:
    accuracy 2 of 3.
    """
    model, frames, labels = scripted_clip()
    cfg = tiny_config(assignment_loss_weight=0.0)
    _, stats = unrolled.UnrolledClip(model, cfg)(frames, labels, [None, None])
    assert float(stats["iou"]) == pytest.approx((1 + 0.5 + 0.5 + 0) / 4)
    assert float(stats["assignment_accuracy"]) == pytest.approx(2 / 3)


def test_burn_in_frames_are_tracked_without_gradient_and_left_out_of_the_loss():
    """The clip of the test above with frame 1 as burn-in: the state still advances through frame 1 (frame 2
    gets frame 2's scripted output), no graph is built for it, and only frame 2 is scored: IoU (0.5 + 0) / 2,
    accuracy 0 of 1 (object 1 matched wrongly, object 2 unscored), the loss that of frame 2 alone."""
    model, frames, labels = scripted_clip()
    cfg = tiny_config(assignment_loss_weight=0.0)
    model.grad_enabled = []
    loss, stats = unrolled.UnrolledClip(model, cfg)(frames, labels, [None, None], burn_in=1)
    assert model.grad_enabled == [False, True]
    assert float(stats["iou"]) == pytest.approx(0.25)
    assert float(stats["assignment_accuracy"]) == 0.0
    target = (labels[:, 2, None] == torch.arange(1, 3).view(1, 2, 1, 1)).float()
    frame_2 = losses.mask_loss(model.outputs[1].logits, target, torch.ones(1, 2, dtype=torch.bool), cfg.loss)
    assert loss.item() == pytest.approx(frame_2.item())
    loss.backward()  # the anchor still gets the scored frame's gradient
    assert model.anchor.grad is not None and float(model.anchor.grad) != 0.0
    with pytest.raises(DMMInputError, match="burn_in=2"):
        unrolled.UnrolledClip(model, cfg)(frames, labels, [None, None], burn_in=2)


def test_burn_in_draws_are_fixed_by_the_seed_and_the_step_and_cover_every_length():
    cfg = tiny_config(burn_in=3, seed=5)
    draws = [unrolled.burn_in_frames(cfg, [(epoch, index), (epoch, index + 1)]) for epoch in range(3) for index in range(20)]
    assert set(draws) == {0, 1, 2, 3}
    assert draws == [unrolled.burn_in_frames(cfg, [(epoch, index)]) for epoch in range(3) for index in range(20)]
    assert draws != [unrolled.burn_in_frames(tiny_config(burn_in=3, seed=6), [(epoch, index)])
                     for epoch in range(3) for index in range(20)]
    assert unrolled.burn_in_frames(tiny_config(burn_in=0), [(0, 0)]) == 0
    assert unrolled.clip_length(cfg) == 1 + 3 + cfg.unroll


def test_checkpoints_hold_everything_and_load_with_weights_only(tmp_path):
    tiny_train(tmp_path / "run", tiny_config(max_steps=5, checkpoint_every=2, keep_checkpoints=2))
    paths = checkpoint_paths(tmp_path / "run")
    assert [p.name for p in paths] == ["step_0000004.pt", "step_0000005.pt"]  # step 2 pruned, 5 is the final one
    state = torch.load(paths[-1], map_location="cpu", weights_only=True)
    assert state["step"] == 5 and state["final"] is True
    assert {"model", "optimizer", "rng", "sampler", "config"} <= set(state)
    assert state["sampler"] == {"epoch": 0, "position": 5, "n_clips": 16, "batch_size": 2, "seed": state["config"]["seed"],
                                "world_size": 1}
    assert isinstance(state["scaler"], dict)  # AMP's loss scaler (its state is empty when AMP is off)
    earlier = torch.load(paths[0], map_location="cpu", weights_only=True)
    assert earlier["step"] == 4 and earlier["final"] is False  # only the last checkpoint is the final one
    assert state["config"]["max_steps"] == 5
    assert {"python", "numpy", "torch"} <= set(state["rng"])
    log = [json.loads(line) for line in (tmp_path / "run" / training.LOG_NAME).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert all(np.isfinite(r["loss"]) and 0 <= r["iou"] <= 1 for r in log)


def test_resuming_a_finished_run_trains_nothing(tmp_path):
    first = tiny_train(tmp_path / "run", tiny_config(max_steps=2))
    again = tiny_train(tmp_path / "run", tiny_config(max_steps=2), resume=True)
    assert again.step == 2 and again.log == first.log
    for a, b in zip(first.model.parameters(), again.model.parameters()):
        assert torch.equal(a, b)


def test_refuses_to_write_into_an_existing_run_dir(tmp_path):
    run = tmp_path / "run"
    tiny_train(run, tiny_config(max_steps=1))
    with pytest.raises(DMMInputError, match="already exists"):
        tiny_train(run, tiny_config(max_steps=1))
    other = tmp_path / "not-a-run"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DMMInputError, match="no checkpoint"):
        tiny_train(other, tiny_config(max_steps=1), resume=True)
    forced = tiny_train(run, tiny_config(max_steps=2), force=True)
    assert [r["step"] for r in forced.log] == [1, 2]


def test_cosine_schedule_by_hand():
    factors = [training.lr_factor("cosine", step, 4) for step in range(4)]
    assert factors == pytest.approx([1.0, (1 + 2 ** -0.5) / 2, 0.5, (1 - 2 ** -0.5) / 2])
    assert [training.lr_factor("constant", step, 4) for step in range(4)] == [1.0] * 4


def test_a_cosine_run_sets_the_rate_before_each_step(tmp_path, monkeypatch):
    seen = []
    step = torch.optim.Adam.step

    def spy(optimizer, *args, **kwargs):
        seen.append({g["name"]: g["lr"] for g in optimizer.param_groups})
        return step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.Adam, "step", spy)
    tiny_train(tmp_path / "run", tiny_config(max_steps=4, lr_schedule="cosine", lr_random=1e-2))
    assert [s["random"] for s in seen] == pytest.approx([1e-2 * training.lr_factor("cosine", k, 4) for k in range(4)])


def test_the_cosine_schedule_scales_both_parameter_groups_from_their_own_rates():
    cfg = tiny_config(lr_schedule="cosine", lr_pretrained=1e-4, lr_random=1e-3)
    groups = training.parameter_groups(TinyTracker(), cfg.lr_pretrained, cfg.lr_random, pretrained=("features.",))
    run = SimpleNamespace(cfg=cfg, step=2, total_steps=4, optimizer=torch.optim.Adam(groups))
    for step in (2, 3):  # the rate follows the step, not the rate of the step before
        run.step = step
        training._set_learning_rates(run)
        rates = {g["name"]: g["lr"] for g in run.optimizer.param_groups}
        factor = training.lr_factor("cosine", step, 4)
        assert rates == pytest.approx({"pretrained": 1e-4 * factor, "random": 1e-3 * factor})


def test_cosine_run_resumes_bit_identically_and_refuses_a_new_length(tmp_path):
    cfg = tiny_config(max_steps=6, checkpoint_every=2, keep_checkpoints=10, lr_schedule="cosine")
    straight = tiny_train(tmp_path / "straight", cfg)
    # a run "interrupted" after step 2: the same run with its later checkpoints taken away (a shorter
    # max_steps would be another cosine)
    tiny_train(tmp_path / "split", cfg)
    for path in checkpoint_paths(tmp_path / "split")[1:]:
        path.unlink()
    resumed = tiny_train(tmp_path / "split", cfg, resume=True)
    assert resumed.step == 6
    assert_same_run(straight, resumed)
    with pytest.raises(DMMInputError, match="max_steps"):
        tiny_train(tmp_path / "split", tiny_config(max_steps=8, checkpoint_every=2, lr_schedule="cosine"), resume=True)


def test_resume_refuses_a_changed_config(tmp_path):
    tiny_train(tmp_path / "run", tiny_config(max_steps=2))
    with pytest.raises(DMMInputError, match="lr_random"):
        tiny_train(tmp_path / "run", tiny_config(max_steps=4, lr_random=1e-2), resume=True)


def test_unknown_config_key_is_named_with_the_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_size: 2\nlearning_rate: 0.1\n")
    with pytest.raises(DMMInputError, match=r"bad\.yaml.*'learning_rate'"):
        train_config.load_config(path)


@pytest.mark.parametrize("line, key", [("loss: l2", "loss"), ("unroll: 0", "unroll"), ("frame_size: [64]", "frame_size"),
                                       ("burn_in: -1", "burn_in"), ("lr_schedule: step", "lr_schedule"),
                                       ("proposals: cache\nproposal_cache: x", "augment"),
                                       ("proposals: network", "proposal_weights")])
def test_bad_config_values_are_named(tmp_path, line, key):
    path = tmp_path / "bad.yaml"
    path.write_text(line + "\n")
    with pytest.raises(DMMInputError, match=key):
        train_config.load_config(path)


def test_overrides_set_nested_and_typed_values(tmp_path):
    cfg = train_config.load_config(train_config.packaged_config("smoke"), ["max_steps=3", "model.lam=0.9", "loss=bce"])
    assert cfg.max_steps == 3 and cfg.model["lam"] == 0.9 and cfg.loss == "bce"
    with pytest.raises(DMMInputError, match="key=value"):
        train_config.load_config(train_config.packaged_config("smoke"), ["max_steps"])


@pytest.mark.parametrize("name", ["smoke", "cpu", "gpu", "davis2017", "youtube-vos"])
def test_shipped_configs_are_valid(name):
    cfg = train_config.load_config(train_config.packaged_config(name))
    assert cfg.unroll == 2
    if name == "davis2017":
        assert (cfg.lr_pretrained, cfg.batch_size, cfg.epochs) == (1e-7, 1, 8)
    if name == "youtube-vos":
        assert (cfg.batch_size, cfg.epochs, cfg.frame_size) == (24, 10, [255, 448])


def test_dataloader_workers_make_the_same_run_as_the_main_process(tmp_path):
    """num_workers > 0: clips and their oracle proposals are made in persistent workers, with the same seeds."""
    cfg = tiny_config(max_steps=5, epochs=2, clips_per_epoch=6, checkpoint_every=100)  # 3 steps an epoch: 2 epochs
    main = tiny_train(tmp_path / "main", cfg)
    workers = tiny_train(tmp_path / "workers", tiny_config(max_steps=5, epochs=2, clips_per_epoch=6,
                                                          checkpoint_every=100, num_workers=2))
    assert [r["loss"] for r in workers.log] == [r["loss"] for r in main.log]
    assert [r["epoch"] for r in main.log] == [0, 0, 0, 1, 1]


def test_keyed_clips_make_in_a_worker_the_proposals_the_main_process_would():
    cfg = tiny_config()
    dataset = TinyClips(n_clips=8, length=3, size=(24, 32))
    source = training.make_proposal_source(cfg)
    assert source.in_workers
    key, item, proposals = unrolled.KeyedClips(dataset, source, seed=4)[(1, 5)]
    frames, labels, metas = unrolled.collate_clips([item])
    expected = unrolled.clip_proposals(frames, labels, metas, [(1, 5)], source, 4)
    assert key == (1, 5) and len(proposals) == 2
    for got, want in zip(proposals, expected):
        assert torch.equal(got.boxes, want[0].boxes) and torch.equal(got.masks, want[0].masks)
    # a source that is not marked as host-only stays in the main process
    assert unrolled.KeyedClips(dataset, lambda query: None, seed=4)[(1, 5)][2] is None


def test_a_non_finite_loss_stops_the_run_at_the_next_read(tmp_path):
    class NaNClips(TinyClips):
        def __getitem__(self, index):
            item = super().__getitem__(index)
            item["frames"][1] = float("nan")
            return item

    cfg = tiny_config(max_steps=4, log_every=2, checkpoint_every=100)
    torch.manual_seed(0)
    with pytest.raises(FloatingPointError, match="between steps 1 and 2"):
        training.train(cfg, tmp_path / "run", model=TinyTracker(), dataset=NaNClips(n_clips=16, length=3, size=(24, 32)),
                       progress=False)


def test_bf16_autocast_trains_close_to_float32(tmp_path):
    """amp: bf16 (CPU autocast here; CUDA on a GPU): the first losses agree with float32 to bf16's precision."""
    full = tiny_train(tmp_path / "fp32", tiny_config(max_steps=3, checkpoint_every=100))
    mixed = tiny_train(tmp_path / "bf16", tiny_config(max_steps=3, checkpoint_every=100, amp="bf16"))
    first = [r["loss"] for r in full.log], [r["loss"] for r in mixed.log]
    assert first[0] != first[1]  # autocast did run in bf16
    np.testing.assert_allclose(first[1], first[0], rtol=0.05)
    with pytest.raises(DMMInputError, match="amp"):
        tiny_config(amp="fp8")


def test_fine_tuning_starts_from_a_trained_checkpoint(tmp_path):
    from dmmlib.checkpoints import save_checkpoint
    from dmmlib.model import DMMNet, default_config

    with pytest.raises(DMMInputError, match="init_checkpoint.*fine-tune a trained model"):
        tiny_config(lr_pretrained=1e-7, lr_random=1e-7)
    cfg = train_config.profile_config("smoke", ["lr_pretrained=1e-7", "lr_random=1e-7",
                                                f"init_checkpoint={tmp_path / 'trained.pt'}"])
    with pytest.raises(DMMInputError, match="trained.pt does not exist"):
        training.train(cfg, tmp_path / "run", progress=False)
    torch.manual_seed(5)
    trained = DMMNet(default_config("smoke", **cfg.model))
    save_checkpoint(tmp_path / "trained.pt", trained)
    model = training.build_model(cfg)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), trained.state_dict().values()))
    assert training.pretrained_prefixes(cfg) == ("",)  # every weight is a trained one: lr_pretrained
    save_checkpoint(tmp_path / "other.pt", DMMNet(default_config("smoke", refine_width=4)))
    other = train_config.profile_config("smoke", ["lr_random=1e-7", "lr_pretrained=1e-7",
                                                  f"init_checkpoint={tmp_path / 'other.pt'}"])
    with pytest.raises(DMMInputError, match="does not fit the configured model"):
        training.build_model(other)


def test_network_proposals_with_random_heads_are_refused(tmp_path):
    from dmmlib.proposals import ProposalNet
    from dmmlib.proposals.net import CHECKPOINT_FORMAT

    net = ProposalNet("resnet18_fpn_lite")
    torch.save({"format": CHECKPOINT_FORMAT, "architecture": net.architecture, "model": net.detector.state_dict(),
                "step": 0}, tmp_path / "untrained.pt")
    cfg = tiny_config(proposals="network", proposal_weights=str(tmp_path / "untrained.pt"))
    with pytest.raises(DMMInputError, match="heads are random"):
        training.train(cfg, tmp_path / "run", model=TinyTracker(), dataset=TinyClips(), progress=False)


def test_parameter_groups_split_pretrained_and_random():
    model = TinyTracker()
    groups = training.parameter_groups(model, 1e-4, 1e-3, pretrained=("features.",))
    by_name = {g["name"]: g for g in groups}
    assert by_name["pretrained"]["lr"] == 1e-4 and by_name["random"]["lr"] == 1e-3
    assert len(by_name["pretrained"]["params"]) == 4 and len(by_name["random"]["params"]) == 2


def test_cli_reports_a_bad_config_as_an_error(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("batch_sise: 2\n")
    run = subprocess.run([sys.executable, "-m", "dmmlib", "train", "--config", str(path), "--out", str(tmp_path / "r")],
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 2, run.stderr
    assert "error:" in run.stderr and "batch_sise" in run.stderr and "bad.yaml" in run.stderr


# ----------------------------------------------------------------------------------------------
# The real model, online learning, evaluation
# ----------------------------------------------------------------------------------------------


def test_dmmnet_trains_on_the_smoke_benchmark_and_checkpoints_its_model(tmp_path, smoke_benchmark):
    from dmmlib.checkpoints import load_checkpoint

    cfg = train_config.profile_config("smoke", ["max_steps=3", "checkpoint_every=2", f"data={smoke_benchmark}",
                                                "assignment_loss_weight=0.5"])
    result = training.train(cfg, tmp_path / "run", progress=False)
    assert [r["step"] for r in result.log] == [1, 2, 3]
    # the logged loss is the training objective: mask loss + 0.5 x assignment loss, each a mean over frames
    for r in result.log:
        assert r["mask_loss"] > 0 and r["assignment_loss"] > 0, r
        assert r["loss"] == pytest.approx(r["mask_loss"] + 0.5 * r["assignment_loss"], rel=1e-5), r
        assert 0 <= r["iou"] <= 1 and 0 <= r["assignment_accuracy"] <= 1
    state = load_training_checkpoint(checkpoint_paths(tmp_path / "run")[-1])
    assert state["step"] == 3
    reloaded, extra = load_checkpoint(tmp_path / "run" / "model.pt", return_extra=True)  # what `predict --checkpoint` reads
    assert extra["step"] == 3
    for (name, a), b in zip(result.model.state_dict().items(), reloaded.state_dict().values()):
        assert torch.equal(a, b), name
    # resuming the finished run trains nothing and rewrites neither its model nor its final checkpoint
    written = {p: p.stat().st_mtime_ns for p in [tmp_path / "run" / "model.pt", *checkpoint_paths(tmp_path / "run")]}
    again = training.train(cfg, tmp_path / "run", progress=False, resume=True)
    assert again.step == 3
    assert {p: p.stat().st_mtime_ns for p in written} == written
    # ... while a resume that trains further (a larger max_steps) replaces model.pt with the longer-trained model
    longer = train_config.profile_config("smoke", ["max_steps=4", "checkpoint_every=2", f"data={smoke_benchmark}",
                                                   "assignment_loss_weight=0.5"])
    extended = training.train(longer, tmp_path / "run", progress=False, resume=True)
    reloaded, extra = load_checkpoint(tmp_path / "run" / "model.pt", return_extra=True)
    assert extended.step == 4 and extra["step"] == 4


def test_online_finetune_trains_a_copy_on_the_first_frame():
    from dmmlib import online

    clips = TinyClips(n_clips=1, length=1, size=(24, 32))[0]
    frame, mask = clips["frames"][0], clips["labels"][0].numpy().astype(np.uint8)
    torch.manual_seed(0)
    model = TinyTracker(dropout=0.0)
    before = [p.detach().clone() for p in model.parameters()]

    def held_out_loss(m):
        frames, labels = online.first_frame_clips(frame, mask, length=3, count=4, seed=999)
        cfg = train_config.TrainConfig(max_objects=2)
        keys = [(0, b) for b in range(4)]
        props = unrolled.clip_proposals(frames, labels, [{}] * 4, keys, training.make_proposal_source(cfg), 0)
        with torch.no_grad():
            return float(unrolled.UnrolledClip(m, cfg)(frames, labels, props)[0])

    tuned = online.online_finetune(model, frame, mask, online.OnlineOptions(steps=25, lr=1e-2, seed=0))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the original is untouched
    assert held_out_loss(tuned) < 0.8 * held_out_loss(model)
    with pytest.raises(DMMInputError, match="no object"):
        online.online_finetune(model, frame, np.zeros_like(mask), online.OnlineOptions(steps=1))


@pytest.mark.slow
def test_cli_trains_resumes_and_refuses_to_overwrite(tmp_path, smoke_benchmark):
    def run(*extra):
        return subprocess.run([sys.executable, "-m", "dmmlib", "train", "--config", "smoke",
                               "--out", str(tmp_path / "run"), "--data", str(smoke_benchmark),
                               "--set", "batch_size=1", *extra], capture_output=True, text=True, cwd=ROOT)

    first = run("--set", "max_steps=1")
    assert first.returncode == 0, first.stderr
    again = run("--set", "max_steps=1")
    assert again.returncode == 2 and "already exists" in again.stderr
    resumed = run("--set", "max_steps=2", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step 1 ({tmp_path / 'run' / 'checkpoints' / 'step_0000001.pt'})" in resumed.stdout
    assert [r["step"] for r in training.read_log(tmp_path / "run")] == [1, 2]


# ----------------------------------------------------------------------------------------------
# Resume: RNG states and a broken newest checkpoint, by hand
# ----------------------------------------------------------------------------------------------


def test_checkpoint_rng_capture_keeps_numpys_keys_and_the_cuda_states(monkeypatch):
    from dmmlib import checkpoints

    np.random.seed(3)
    state = checkpoints.capture_rng()
    assert state["numpy"][1].dtype == torch.int64  # uint32 keys widened exactly, loadable with weights_only
    assert state["numpy"][1].tolist() == np.random.get_state()[1].astype(np.int64).tolist()
    assert "cuda" not in state  # no GPU here
    # with a GPU: every device's state is captured and put back
    saved, restored = [torch.tensor([1, 2], dtype=torch.uint8), torch.tensor([3], dtype=torch.uint8)], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_rng_state_all", lambda: saved)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: restored.append(states))
    with_gpu = checkpoints.capture_rng()
    assert with_gpu["cuda"] is saved
    checkpoints.restore_rng(with_gpu)
    assert restored == [saved]
    checkpoints.restore_rng(state)  # a checkpoint written without a GPU resumes on one: nothing to put back
    assert restored == [saved]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    checkpoints.restore_rng(with_gpu)  # ... and one written with a GPU resumes without one
    assert restored == [saved]


def test_a_broken_newest_checkpoint_names_the_older_readable_one(tmp_path):
    from dmmlib.checkpoints import checkpoint_paths, newest_training_checkpoint

    tiny_train(tmp_path / "run", tiny_config(max_steps=5, checkpoint_every=2, keep_checkpoints=3))
    paths = checkpoint_paths(tmp_path / "run")
    assert [p.name for p in paths] == ["step_0000002.pt", "step_0000004.pt", "step_0000005.pt"]
    paths[-1].write_bytes(b"\x00" * 64)
    with pytest.raises(DMMInputError) as raised:
        newest_training_checkpoint(tmp_path / "run")
    message = str(raised.value)
    assert str(paths[-1]) in message
    assert f"the older checkpoint {paths[1]} (step 4) is readable" in message
    assert f"mv {paths[-1]} {paths[-1]}.broken" in message and "continue from step 4" in message
    paths[1].write_bytes(b"\x00" * 64)  # the next older one is then named
    with pytest.raises(DMMInputError, match=r"step_0000002.pt \(step 2\) is readable"):
        newest_training_checkpoint(tmp_path / "run")
    paths[0].write_bytes(b"\x00" * 64)
    with pytest.raises(DMMInputError, match="; no older checkpoint of this run is readable; pass --force to start the run over$"):
        newest_training_checkpoint(tmp_path / "run")


def test_resume_drops_log_records_written_after_the_checkpoint_and_new_runs_write_their_config(tmp_path):
    import yaml

    cfg = tiny_config(max_steps=5, checkpoint_every=2)
    straight = tiny_train(tmp_path / "straight", cfg)
    run = tmp_path / "killed"
    tiny_train(run, cfg)
    # killed after logging step 5 but before its checkpoint landed: the newest checkpoint is step 4
    (run / "checkpoints" / "step_0000005.pt").unlink()
    assert [json.loads(line)["step"] for line in (run / training.LOG_NAME).read_text().splitlines()] == [1, 2, 3, 4, 5]
    resumed = tiny_train(run, cfg, resume=True)
    lines = (run / training.LOG_NAME).read_text().splitlines()
    assert [json.loads(line)["step"] for line in lines] == [1, 2, 3, 4, 5]  # step 5 logged once, by the resumed run
    assert without_seconds(json.loads(line) for line in lines) == without_seconds(straight.log) == without_seconds(resumed.log)
    # a new run writes its settings, in the config's own order, where `dmmlib train --config` can read them
    written = (run / "config.yaml").read_text()
    assert yaml.safe_load(written) == cfg.to_dict()
    assert written == yaml.safe_dump(cfg.to_dict(), sort_keys=False)
    assert list(yaml.safe_load(written)) == list(cfg.to_dict())


def test_checkpoint_of_a_multi_process_run_holds_every_ranks_rng_and_each_rank_resumes_its_own(tmp_path, monkeypatch):
    """torch.distributed replaced by a stand-in that plays rank 0 of 2: the checkpoint gathers both ranks' RNG
    states; on resume, rank r restores state r, and a rank beyond the saved ones (a larger world) state 0."""
    from types import SimpleNamespace

    from dmmlib import checkpoints

    def gather(into, mine):
        into[0], into[1] = mine, {"rank": 1}

    monkeypatch.setattr(torch.distributed, "all_gather_object", gather)
    model = TinyTracker()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    run = SimpleNamespace(world=SimpleNamespace(distributed=True, size=2, is_main=True, rank=0), step=4,
                          steps_per_epoch=8, run_dir=tmp_path, model=model, optimizer=optimizer, dataset=[0] * 16,
                          cfg=tiny_config(), scaler=torch.amp.GradScaler("cpu", enabled=False))
    training._save(run)
    state = torch.load(checkpoints.checkpoint_paths(tmp_path)[-1], map_location="cpu", weights_only=True)
    assert isinstance(state["rng"], list) and len(state["rng"]) == 2
    assert state["rng"][1] == {"rank": 1} and set(state["rng"][0]) >= {"python", "numpy", "torch"}
    assert state["sampler"]["world_size"] == 2 and state["final"] is False
    restored = []
    monkeypatch.setattr(training, "restore_rng", restored.append)
    for rank, expected in ((0, 0), (1, 1), (2, 0)):
        step = training._restore(model, optimizer, state, SimpleNamespace(rank=rank))
        assert step == 4 and restored[-1] == state["rng"][expected], rank


class _Exploding(torch.utils.data.Dataset):
    """A dataset whose every clip fails to load: the run dies in its first step, before any checkpoint."""

    def __init__(self, clips):
        self.clips = clips

    def __len__(self):
        return len(self.clips)

    def __getitem__(self, index):
        raise RuntimeError("clip failed to load")


def test_a_new_run_that_fails_before_its_first_checkpoint_leaves_nothing_and_a_resumed_one_keeps_its_run(tmp_path):
    cfg = tiny_config(max_steps=4, checkpoint_every=2)
    clips = TinyClips(n_clips=cfg.clips_per_epoch, length=cfg.unroll + 1, size=tuple(cfg.frame_size))
    target = tmp_path / "deep" / "run"  # the run makes both folders
    with pytest.raises(RuntimeError, match="clip failed to load"):
        training.train(cfg, target, model=TinyTracker(), dataset=_Exploding(clips), progress=False)
    assert not (tmp_path / "deep").exists()
    tiny_train(target, tiny_config(max_steps=2, checkpoint_every=2))
    before = sorted(p.relative_to(target) for p in target.rglob("*"))
    with pytest.raises(RuntimeError, match="clip failed to load"):
        training.train(cfg, target, model=TinyTracker(), dataset=_Exploding(clips), progress=False, resume=True)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before  # the checkpoint to resume from stays
