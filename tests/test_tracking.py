"""dmmlib.track and the track / predict commands on tiny fixtures."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import dmmlib
from dmmlib.checkpoints import save_checkpoint
from dmmlib.data.masks import read_label_png, write_label_png
from dmmlib.errors import DMMInputError
from dmmlib.model import DMMNet, default_config
from dmmlib.proposals import ProposalCache, proposals_from_labels
from dmmlib.proposals.sources import cached_source
from dmmlib.tracking import TrackOptions, track, track_steps

QUIET = TrackOptions(progress=False)

sys.path.insert(0, str(Path(__file__).parent))
from test_model import rectangles_video  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def oracle_model():
    """IoU-driven, no refinement: tracks oracle proposals exactly (see test_model)."""
    return DMMNet(default_config("smoke", lam=0.99, refine=False, no_proposal_cost=-0.6))


def oracle_list(labels):
    return [proposals_from_labels(lab, n_noise=3, rng=np.random.default_rng(t)) for t, lab in enumerate(labels)]


def write_sequence(folder: Path, frames, labels=None, cache: ProposalCache | None = None, seq: str = "seq",
                   suffix: str = ".png"):
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{t:05d}{suffix}")
        if cache is not None:
            cache.put(seq, t, proposals_from_labels(labels[t], n_noise=3, rng=np.random.default_rng(t)))


@pytest.mark.parametrize("read_ahead", [0, 2])
def test_track_streams_and_matches_ground_truth(read_ahead):
    frames, labels = rectangles_video(T=6, absent=(2, 3))
    pulled = []

    def generator():
        for t, frame in enumerate(frames):
            pulled.append(t)
            yield frame

    options = TrackOptions(progress=False, read_ahead=read_ahead)
    outputs = dmmlib.track(generator(), labels[0], model=oracle_model(), proposals=oracle_list(labels), options=options)
    for t, output in enumerate(outputs):
        # streamed: frame t + 1 is read only once output t is asked for (two frames are read up front),
        # or up to read_ahead frames earlier (and one in the reader's hands) by the background reader
        assert len(pulled) <= max(t + 2, 2) + (read_ahead + 1 if read_ahead else 0)
        assert output.dtype == np.uint8 and output.shape == labels[t].shape
        np.testing.assert_array_equal(output, labels[t])
    assert t == 5


def test_a_reading_error_reaches_the_caller_at_its_frame():
    frames, labels = rectangles_video(T=5)

    def broken():
        yield from frames[:3]
        raise DMMInputError("frame 3 is broken")

    outputs = dmmlib.track(broken(), labels[0], model=oracle_model(), proposals=oracle_list(labels), options=QUIET)
    assert len([next(outputs) for _ in range(3)]) == 3
    with pytest.raises(DMMInputError, match="frame 3 is broken"):
        next(outputs)


def test_track_reads_a_folder_and_a_video(tmp_path):
    frames, labels = rectangles_video(T=3)
    write_sequence(tmp_path / "frames", frames)
    out = list(track(tmp_path / "frames", labels[0], model=oracle_model(), proposals=oracle_list(labels), options=QUIET))
    assert len(out) == 3 and np.array_equal(out[2], labels[2])
    import cv2

    writer = cv2.VideoWriter(str(tmp_path / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 5, (64, 48))
    for frame in frames:
        writer.write(np.ascontiguousarray(frame[:, :, ::-1]))
    writer.release()
    out = list(track(tmp_path / "v.avi", labels[0], model=oracle_model(), proposals=oracle_list(labels), options=QUIET))
    assert len(out) == 3 and np.array_equal(out[1], labels[1])  # the proposals decide the masks


def test_bad_inputs_are_clear_errors(tmp_path):
    frames, labels = rectangles_video(T=3)
    model, proposals = oracle_model(), oracle_list(labels)
    with pytest.raises(DMMInputError, match=r"first_frame_masks has size 24x64 but the first frame is 48x64"):
        track(frames, labels[0][:24], model=model, proposals=proposals)
    with pytest.raises(DMMInputError, match="holds no object"):
        track(frames, np.zeros_like(labels[0]), model=model, proposals=proposals)
    with pytest.raises(DMMInputError, match="single frame; tracking needs at least two"):
        track(frames[:1], labels[0], model=model, proposals=proposals)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("no frames here")
    with pytest.raises(DMMInputError, match="holds no images"):
        track(tmp_path / "empty", labels[0], model=model, proposals=proposals)
    with pytest.raises(DMMInputError, match="does not exist"):
        track(tmp_path / "missing", labels[0], model=model, proposals=proposals)
    with pytest.raises(DMMInputError, match=r"frame 2 \(00002\) of video is 24x64"):
        list(track(frames[:2] + [frames[2][:24]], labels[0], model=model, proposals=proposals, options=QUIET))


def run_cli(*args):
    env = dict(os.environ, DMM_PROFILE="smoke", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "dmmlib", *map(str, args)], capture_output=True, text=True, env=env, cwd=ROOT)


def test_track_command(tmp_path):
    frames, labels = rectangles_video(T=4, absent=(2,))
    cache = ProposalCache(tmp_path / "cache")
    write_sequence(tmp_path / "seq", frames, labels, cache)
    write_label_png(tmp_path / "first.png", labels[0])
    save_checkpoint(tmp_path / "model.pt", oracle_model())
    common = ["track", "--frames", tmp_path / "seq", "--mask", tmp_path / "first.png", "--out", tmp_path / "out",
              "--checkpoint", tmp_path / "model.pt", "--proposals-cache", tmp_path / "cache", "--device", "cpu"]
    done = run_cli(*common)
    assert done.returncode == 0, done.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["00000.png", "00001.png", "00002.png", "00003.png"]
    for t in range(4):
        np.testing.assert_array_equal(read_label_png(tmp_path / "out" / f"{t:05d}.png"), labels[t])
    again = run_cli(*common)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr and "Traceback" not in again.stderr
    assert run_cli(*common, "--force").returncode == 0
    (tmp_path / "corrupt.pt").write_bytes(b"\x00" * 100)
    bad = run_cli(*common[:-6], "--checkpoint", tmp_path / "corrupt.pt", "--out", tmp_path / "out2", "--device", "cpu")
    assert bad.returncode == 2 and "corrupt.pt is not a readable torch file" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_track_command_default_model_untrained_flag_and_clear_error(tmp_path):
    """Without --checkpoint: the published default model (and its proposal net), said so; else --untrained
    with a warning; else an error saying how to get a trained model."""
    from dmmlib.checkpoints import publish_default_model
    from dmmlib.proposals import ProposalNet

    frames, labels = rectangles_video(T=3)
    write_sequence(tmp_path / "seq", frames, labels)
    write_label_png(tmp_path / "first.png", labels[0])
    data = tmp_path / "data"

    def track_cli(out, *extra):
        env = dict(os.environ, DMM_PROFILE="smoke", OMP_NUM_THREADS="1", DMM_DATA_DIR=str(data))
        return subprocess.run([sys.executable, "-m", "dmmlib", "track", "--frames", str(tmp_path / "seq"),
                               "--mask", str(tmp_path / "first.png"), "--out", str(tmp_path / out), "--device", "cpu",
                               *map(str, extra)], capture_output=True, text=True, env=env, cwd=ROOT)

    refused = track_cli("o1")
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "no trained default model" in refused.stderr and "--untrained" in refused.stderr
    assert "chapter 8" in refused.stderr and not (tmp_path / "o1").exists()
    untrained = track_cli("o2", "--untrained")
    assert untrained.returncode == 0, untrained.stderr
    assert "untrained DMMNet" in untrained.stderr and "untrained ProposalNet" in untrained.stderr
    assert len(list((tmp_path / "o2").glob("*.png"))) == 3
    assert track_cli("o3", "--untrained", "--checkpoint", tmp_path / "x.pt").returncode == 2

    save_checkpoint(tmp_path / "model.pt", oracle_model())
    torch.save(ProposalNet(profile="smoke").detector.state_dict(), tmp_path / "proposal_net.pt")
    os.environ["DMM_DATA_DIR"] = str(data)
    try:
        publish_default_model(tmp_path / "model.pt", "smoke", {"trained_by": "a test",
                                                                "proposal_checkpoint": str(tmp_path / "proposal_net.pt")})
    finally:
        del os.environ["DMM_DATA_DIR"]
    default = track_cli("o4")
    assert default.returncode == 0, default.stderr
    assert "default-model-smoke/model.pt (trained by a test)" in default.stdout
    assert "proposal_net.pt (the default model's proposal net)" in default.stdout
    assert "untrained" not in default.stderr


def test_predict_command(tmp_path):
    root = tmp_path / "davis"
    cache = ProposalCache(tmp_path / "cache")
    for seq, absent in (("alpha", ()), ("beta", (1,))):
        frames, labels = rectangles_video(T=4, absent=absent)
        write_sequence(root / "JPEGImages" / "480p" / seq, frames, labels, cache, seq, suffix=".jpg")
        for t, lab in enumerate(labels):
            write_label_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", lab)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\n")
    save_checkpoint(tmp_path / "model.pt", oracle_model())
    args = ["predict", "--davis-root", root, "--split", "val", "--out", tmp_path / "results",
            "--checkpoint", tmp_path / "model.pt", "--proposals-cache", tmp_path / "cache", "--device", "cpu"]
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    for seq in ("alpha", "beta"):
        for t in range(4):
            truth = read_label_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png")
            np.testing.assert_array_equal(read_label_png(tmp_path / "results" / seq / f"{t:05d}.png"), truth)
    # The folder is what the evaluator reads (`python -m dmmlib evaluate`): perfect scores here.
    from dmmlib.evaluation.davis import evaluate_davis

    scores = evaluate_davis(root, tmp_path / "results", "val", progress=False, workers=1).global_scores
    assert scores["J-Mean"] == pytest.approx(1.0) and scores["F-Mean"] == pytest.approx(1.0)
    again = run_cli(*args)
    assert again.returncode == 2 and "refusing to overwrite" in again.stderr and "Traceback" not in again.stderr
    missing = run_cli("predict", "--davis-root", tmp_path / "nowhere", "--out", tmp_path / "r2")
    assert missing.returncode == 2 and "nowhere does not exist" in missing.stderr and "Traceback" not in missing.stderr


def test_track_with_a_proposal_net_and_a_cache_miss(tmp_path):
    """Proposals computed on the fly by a (random) ProposalNet, also for frames a cache lacks."""
    from dmmlib.proposals import ProposalNet

    frames, labels = rectangles_video(T=3)
    net = ProposalNet(profile="smoke")
    out = list(track(frames, labels[0], model=oracle_model(), proposals=net, options=QUIET))
    assert len(out) == 3 and all(o.shape == labels[0].shape and o.dtype == np.uint8 for o in out)
    assert set(np.unique(np.concatenate(out[1:]))) <= {0, 1, 2}
    cache = ProposalCache(tmp_path / "cache")
    clip = TrackOptions(progress=False, sequence="clip")
    with pytest.raises(DMMInputError, match="has no proposals for clip/00001"):
        list(track(frames, labels[0], model=oracle_model(), proposals=cache, options=clip))
    out = list(track(frames, labels[0], model=oracle_model(), proposals=cached_source(cache, net), options=clip))
    assert len(out) == 3


def test_track_at_a_smaller_model_size():
    """size=(24, 32): the model runs at half size, the outputs come back at 48 x 64."""
    frames, labels = rectangles_video(T=4)
    out = list(track(frames, labels[0], model=oracle_model(), proposals=oracle_list(labels),
                     options=TrackOptions(progress=False, size=(24, 32))))
    assert all(o.shape == (48, 64) for o in out)
    for t in range(1, 4):
        for i in (1, 2):
            pred, truth = out[t] == i, labels[t] == i
            assert (pred & truth).sum() / (pred | truth).sum() > 0.95
    with pytest.raises(DMMInputError, match="size="):
        track(frames, labels[0], model=oracle_model(), proposals=oracle_list(labels), options=TrackOptions(size=(4, 4)))


def test_predict_with_online_learning_tunes_a_copy_per_video(tmp_path):
    from dmmlib.predict import PredictOptions, plan_davis, predict_videos

    root = tmp_path / "davis"
    cache = ProposalCache(tmp_path / "cache")
    for seq in ("alpha", "beta"):
        frames, labels = rectangles_video(T=3)
        write_sequence(root / "JPEGImages" / "480p" / seq, frames, labels, cache, seq, suffix=".jpg")
        for t, lab in enumerate(labels):
            write_label_png(root / "Annotations" / "480p" / seq / f"{t:05d}.png", lab)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("alpha\nbeta\n")
    model = DMMNet(default_config("smoke"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    source = cached_source(cache)
    written = predict_videos(plan_davis(root, "val"), tmp_path / "results", model, lambda name: source,
                             PredictOptions(device="cpu", progress=False, online_steps=1))
    assert written == ["alpha", "beta"]
    for seq in written:
        assert sorted(p.name for p in (tmp_path / "results" / seq).iterdir()) == ["00000.png", "00001.png", "00002.png"]
    # the caller's model is untouched: each video is tracked by its own fine-tuned copy
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(DMMInputError, match="online_steps"):
        PredictOptions(online_steps=-1)


def test_bf16_autocast_tracks_like_float32_with_matching_in_float32():
    """TrackOptions(amp="bf16") (CPU autocast here): backbone and refinement in bf16, Eq. 1 and Alg. 1 in float32."""
    frames, labels = rectangles_video(T=4)
    torch.manual_seed(0)
    model = DMMNet(default_config("smoke", refine_width=8))
    steps = {amp: list(track_steps(frames, labels[0], model, oracle_list(labels),
                                   options=TrackOptions(progress=False, amp=amp, device="cpu")))
             for amp in (None, "bf16")}
    for full, mixed in zip(steps[None][1:], steps["bf16"][1:]):
        assert mixed.output.logits.dtype == torch.bfloat16  # autocast did run
        assert mixed.output.cost.dtype == mixed.output.x_hat.dtype == torch.float32
        probabilities = [torch.sigmoid(step.output.logits.float()) for step in (full, mixed)]
        print("bf16 vs float32: max |p diff|", float((probabilities[0] - probabilities[1]).abs().max()),
              "max |cost diff|", float((full.output.cost - mixed.output.cost).abs().max()))
        assert (probabilities[0] - probabilities[1]).abs().max() < 0.01  # measured 4e-4
        assert (full.output.cost - mixed.output.cost).abs().max() < 5e-3  # measured 2e-4
        assert (full.output.x_hat - mixed.output.x_hat).abs().max() < 5e-3
    with pytest.raises(DMMInputError, match="amp"):
        TrackOptions(amp="half")
