"""Device placement without a GPU: the model's frame step, a training forward and the tracking loop
on a fake CUDA device, and the helpers of dmmlib.device.

torch's fake tensors (``FakeTensorMode``) carry a shape, a dtype and a device but no values; on this
CPU-only build a fake ``cuda`` device works, and an operation that meets a CPU tensor and a CUDA one
raises ``FakeTensorDeviceMismatchError`` -- the error a real GPU would raise on its first run.
Modules are created inside the mode under ``torch.device("cuda")``. Each test drives its path up to
the point where data must leave the device (the tracker's label map; a training step's backward
and log read, which fake tensors cannot run), and checks that a CPU tensor fed in is caught.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

from dmmlib import training
from dmmlib.data.clips import ClipDataset
from dmmlib.device import (
    any_on_host,
    check_amp,
    frames_to_device,
    full_precision,
    speed_settings,
    to_device,
)
from dmmlib.errors import DMMInputError
from dmmlib.model import DMMNet, default_config
from dmmlib.proposals.oracle import proposals_from_labels
from dmmlib.proposals.sources import list_source, oracle_source
from dmmlib.tracking import Tracker
from dmmlib.train_config import TrainConfig
from dmmlib.unrolled import UnrolledClip, collate_clips

H, W = 48, 64


def scene(T: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Frames uint8 [T, H, W, 3] and labels uint8 [T, H, W]: two rectangles drifting right (host arrays)."""
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 60, (T, H, W, 3), dtype=np.uint8)
    labels = np.zeros((T, H, W), np.uint8)
    for t in range(T):
        labels[t, 6:22, 4 + 2 * t:20 + 2 * t] = 1
        labels[t, 26:44, 30 + 2 * t:50 + 2 * t] = 2
        frames[t][labels[t] == 1] = (200, 40, 40)
        frames[t][labels[t] == 2] = (40, 200, 40)
    return frames, labels


def host_proposals(labels: np.ndarray) -> list:
    """Real CPU FrameProposals, made outside the fake mode, as a proposal source returns them."""
    return [proposals_from_labels(lab, n_noise=4, rng=np.random.default_rng(t)) for t, lab in enumerate(labels)]


def fake_cuda_model() -> tuple[FakeTensorMode, DMMNet]:
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    with mode, torch.device("cuda"):
        model = DMMNet(default_config("smoke", refine_width=8)).eval()
    return mode, model


def on_cuda(*tensors) -> bool:
    return all(isinstance(t, FakeTensor) and t.device.type == "cuda" for t in tensors)


MISMATCH = (RuntimeError,)  # FakeTensorDeviceMismatchError is a RuntimeError


def test_the_model_step_stays_on_the_device():
    frames, labels = scene()
    proposals = host_proposals(labels)
    mode, model = fake_cuda_model()
    with mode:
        images = torch.from_numpy(frames).to("cuda").permute(0, 3, 1, 2).float().div(255.0)  # [T, 3, H, W]
        templates = torch.from_numpy(np.stack([labels[0] == 1, labels[0] == 2])).to("cuda").float()[None]
        state = model.init_state(images[:1], templates)
        for t in (1, 2):
            out, state = model.step(images[t:t + 1], [proposals[t]], state)
        assert on_cuda(out.logits, out.cost, out.x_hat, out.matched_masks, out.present, state.previous_masks,
                       *[h for h, _ in state.lstm])
        assert out.logits.shape == (1, 2, H, W)
        with pytest.raises(MISMATCH, match="device"):
            model.step(images[1:2].cpu(), [proposals[1]], state)  # a caller that feeds CPU frames is caught


def test_a_training_forward_stays_on_the_device():
    """training._forward: the batch moved (uint8 frames, labels), proposals from the host, the loss on the device.

    It stops before the backward pass and the log's host read (fake tensors run neither). A proposal
    network's batch (proposals=None) cannot be traced here: Mask R-CNN's NMS has data-dependent shapes."""
    frames, labels = scene()
    item = {"frames": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),  # uint8, as the loader sends it
            "labels": torch.from_numpy(labels.astype(np.int64)), "sequence": "clip"}
    batch = collate_clips([item, item])
    cfg = TrainConfig(profile="smoke", max_objects=2, unroll=2)
    source = oracle_source(4, 0.1)
    mode, model = fake_cuda_model()
    model.train()
    run = SimpleNamespace(device=torch.device("cuda"), source=source, cfg=cfg, unrolled=UnrolledClip(model, cfg))
    keys = [(0, 0), (0, 1)]
    # host-side proposals, as a DataLoader worker makes them (real CPU tensors; they read the labels as numpy,
    # which fake tensors cannot give, so they are made outside the mode -- on the host, where they belong)
    from_workers = training.clip_proposals(batch[0], batch[1], batch[2], keys, source, cfg.seed)
    with mode:
        loss, stats = training._forward(run, keys, batch, from_workers)
        assert on_cuda(loss, *stats.values())
        with pytest.raises(MISMATCH, match="device"):  # without _forward's moves: CPU frames reach the model
            run.unrolled(batch[0].float(), batch[1], from_workers)


def test_the_tracking_loop_stays_on_the_device_until_its_label_map():
    frames, labels = scene()
    mode, model = fake_cuda_model()
    source = list_source(host_proposals(labels))
    with mode:
        for size in (None, (32, 48)):  # at the frames' size, and resized for the model and back
            tracker = Tracker(model, source, "clip", (H, W), torch.device("cuda"), size)
            first = tracker.start(frames[0], labels[0])
            assert first.object_ids == [1, 2] and on_cuda(tracker.state.template_features)
            image = tracker._image(frames[1])
            output, rows = tracker.advance(1, image, "00001")
            assert on_cuda(output.logits, rows) and rows.shape == (H, W) and rows.dtype == torch.long
        with pytest.raises(MISMATCH, match="device"):
            tracker.advance(2, torch.from_numpy(frames[2]).permute(2, 0, 1).float() / 255, "00002")  # a CPU frame


def test_host_reads_are_explicit_and_skipped_for_fake_tensors():
    assert any_on_host(torch.tensor([False, True])) and not any_on_host(torch.zeros(3, dtype=torch.bool))
    with FakeTensorMode():
        assert any_on_host(torch.ones(2, dtype=torch.bool, device="cuda")) is False  # no value to read


def test_device_helpers_on_the_cpu():
    frames = torch.randint(0, 256, (2, 3, 4, 5), dtype=torch.uint8)
    moved = frames_to_device(frames, torch.device("cpu"))
    assert moved.dtype == torch.float32 and torch.allclose(moved * 255, frames.float())
    assert to_device(frames, torch.device("cpu")) is frames
    speed_settings(torch.device("cpu"))  # nothing to switch on a CPU
    assert not torch.backends.cudnn.benchmark
    assert check_amp("bf16") == "bf16" and check_amp(None) is None
    with pytest.raises(DMMInputError, match="amp='fp8'"):
        check_amp("fp8")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        a = torch.rand(4, 4)
        assert (a @ a).dtype == torch.bfloat16
        with full_precision(torch.device("cpu")):
            assert (a @ a).dtype == torch.float32


def test_clip_dataset_can_send_uint8_frames(smoke_benchmark):
    from dmmlib.data.clips import ClipSampler
    from dmmlib.data.davis import DavisDataset

    dataset = ClipDataset(ClipSampler(DavisDataset(smoke_benchmark, "train"), clip_length=3, seed=0), length=4)
    as_bytes = dataset.with_uint8_frames()
    floats, raw = dataset[1]["frames"], as_bytes[1]["frames"]
    assert raw.dtype == torch.uint8 and floats.dtype == torch.float32
    torch.testing.assert_close(raw.float() / 255, floats, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------
# On a real GPU (skipped without one; benchmarks/gpu_check.py runs them with ``pytest -m cuda``)
# ----------------------------------------------------------------------------------------------

def _track_labels(device: str, amp=None, model=None, T: int = 4) -> list[np.ndarray]:
    from dmmlib.tracking import TrackOptions, track

    frames, labels = scene(T)
    if model is None:  # cost driven by IoU, no refinement: tracks oracle proposals exactly
        model = DMMNet(default_config("smoke", lam=0.99, refine=False, no_proposal_cost=-0.6))
    options = TrackOptions(device=device, progress=False, amp=amp)
    return list(track(list(frames), labels[0], model, host_proposals(labels), options=options))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tracking_gives_the_cpu_labels_and_the_ground_truth():
    _, labels = scene(4)
    on_gpu, on_cpu = _track_labels("cuda"), _track_labels("cpu")
    for t, (a, b) in enumerate(zip(on_gpu, on_cpu)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, labels[t])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_cuda_autocast_tracks_like_float32(amp):
    from dmmlib.tracking import TrackOptions, track_steps

    frames, labels = scene(4)
    torch.manual_seed(0)
    model = DMMNet(default_config("gpu", refine_width=16))
    runs = {a: list(track_steps(list(frames), labels[0], model, host_proposals(labels),
                                options=TrackOptions(device="cuda", progress=False, amp=a))) for a in (None, amp)}
    for full, mixed in zip(runs[None][1:], runs[amp][1:]):
        assert mixed.output.cost.dtype == torch.float32 and mixed.output.logits.dtype != torch.float32
        p_full, p_mixed = (torch.sigmoid(s.output.logits.float()) for s in (full, mixed))
        assert (p_full - p_mixed).abs().max() < 0.02
        assert (full.output.cost - mixed.output.cost).abs().max() < 1e-2


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_steps_follow_the_cpu_ones(tmp_path, smoke_benchmark):
    """Two smoke-profile steps of the real DMMNet on CUDA and on the CPU: the same losses, to GPU rounding."""
    from dmmlib import train_config

    logs = {}
    for device in ("cpu", "cuda"):
        cfg = train_config.profile_config("smoke", ["max_steps=2", f"device={device}", f"data={smoke_benchmark}"])
        result = training.train(cfg, tmp_path / device, progress=False)
        assert next(result.model.parameters()).device.type == device
        logs[device] = [r["loss"] for r in result.log]
    np.testing.assert_allclose(logs["cuda"], logs["cpu"], rtol=2e-3)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_workers_and_fp16_scaling_run(tmp_path, smoke_benchmark):
    from dmmlib import train_config

    cfg = train_config.profile_config("smoke", ["max_steps=3", "device=cuda", "num_workers=2", "amp=fp16",
                                                f"data={smoke_benchmark}"])
    result = training.train(cfg, tmp_path / "run", progress=False)
    assert len(result.log) == 3 and all(np.isfinite(r["loss"]) for r in result.log)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_online_copy_trains_on_the_gpu_from_a_cpu_checkpoint(tmp_path):
    """predict's path: a checkpoint loads to the CPU, the model moves to the GPU, the online copy trains there."""
    from dmmlib.checkpoints import load_checkpoint, save_checkpoint
    from dmmlib.online import OnlineOptions, online_finetune

    frames, labels = scene(2)
    save_checkpoint(tmp_path / "m.pt", DMMNet(default_config("smoke", refine_width=8)))
    model = load_checkpoint(tmp_path / "m.pt").to("cuda")
    tuned = online_finetune(model, frames[0], labels[0], OnlineOptions(steps=2, size=(32, 48)))
    assert next(tuned.parameters()).device.type == "cuda"


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_compiled_matching_equals_eager():
    from dmmlib.matching import dmm_match

    cost = torch.rand(64, 5, 50, device="cuda", generator=torch.Generator("cuda").manual_seed(0))
    torch.testing.assert_close(dmm_match(cost, compiled=True), dmm_match(cost), rtol=0, atol=1e-5)



class _Reached(Exception):
    pass


class _RecordingModel(torch.nn.Module):
    """Stands for a model on another device (``meta``: no values, like a GPU seen from here) and records
    the devices of what reaches its frame step, then stops the caller."""

    device = torch.device("meta")

    def __init__(self):
        super().__init__()
        self.seen = []

    def init_state(self, frames, masks, valid):
        self.seen += [frames.device, masks.device, valid.device]

    def step(self, frames, proposals, state):
        self.seen += [frames.device, *[p.masks.device for p in proposals]]
        raise _Reached


def test_the_matching_margins_feed_the_model_on_its_device():
    """lessons.measure.matching_margins (chapters 8, 9): frames, masks and proposals reach a model on
    another device on that device (fake tensors cannot be used here: the clip's object count is read first)."""
    from dmmlib.lessons.measure import matching_margins

    frames, labels = scene()
    item = {"frames": torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous(),
            "labels": torch.from_numpy(labels.astype(np.int64)), "sequence": "clip"}
    model = _RecordingModel()
    with pytest.raises(_Reached):
        matching_margins(model, [item], oracle_source(4, 0.1), n_clips=1)
    assert len(model.seen) >= 5 and all(d.type == "meta" for d in model.seen), model.seen
