"""The one-shot GPU check: what a first run on a CUDA machine must show, in one JSON file.

    python benchmarks/gpu_check.py [--device cuda] [--out data/gpu_check.json] [--frames 30]
    python benchmarks/gpu_check.py --device cpu --quick      # the script's own plumbing, in seconds

On one GPU it finishes in a few minutes (the budget is 8) and writes ``--out`` with:

* ``tests`` -- ``pytest -m cuda`` over the CUDA-only tests (tracking, AMP, training, online learning,
  compiled matching on the GPU against the CPU): passed / failed / skipped and the exit status;
* ``track`` -- frames per second at 255 x 448 with the R50 matching backbone, per stage (proposals,
  features, cost, matching, refinement; :mod:`benchmarks.inference`), in float32, with AMP (bf16 if the
  GPU supports it, else fp16), and with Alg. 1 compiled;
* ``matching`` -- ``dmm_match`` on 256 problems of 5 x 50 at the paper's settings: forward time on the
  device (eager and ``compiled=True``) and on the CPU, and torch.profiler's operations per call;
* ``train_step`` -- one training step of the gpu profile (batch 24, unroll 2, 240 x 432, R50): seconds
  and peak memory (``torch.cuda.max_memory_allocated``), float32 and AMP;
* ``amp_accuracy`` -- AMP against float32: the largest difference of the mask probabilities and of
  the cost (Eq. 1) while tracking, label agreement, and the training loss of the same batch.

Every section is written as soon as it is measured (atomically), so a crash keeps what was done. The
figures belong in chapter 10's table with the GPU's name and the date.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import inference  # noqa: E402  (benchmarks/inference.py: the per-stage tracking timer)

from dmmlib.device import AMP_DTYPES, autocast, pick_device, speed_settings  # noqa: E402
from dmmlib.fileio import atomic_write_text  # noqa: E402
from dmmlib.matching import dmm_match  # noqa: E402
from dmmlib.model import DMMNet, default_config  # noqa: E402
from dmmlib.proposals import ProposalNet, proposals_from_labels  # noqa: E402
from dmmlib.proposals.sources import oracle_source  # noqa: E402
from dmmlib.tracking import TrackOptions, track_steps  # noqa: E402
from dmmlib.train_config import profile_config  # noqa: E402
from dmmlib.unrolled import UnrolledClip, clip_proposals  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def amp_for(device: torch.device) -> str:
    """bf16 where the GPU has it (Ampere and later), else fp16; bf16 on a CPU."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return "fp16"
    return "bf16"


def run_cuda_tests(timeout: int) -> dict:
    """``pytest -m cuda`` on the CUDA-only tests, in a subprocess (smoke profile)."""
    command = [sys.executable, "-m", "pytest", "tests/test_device.py", "tests/test_matching.py", "-m", "cuda",
               "-q", "-p", "no:cacheprovider", "-rs"]
    env = dict(os.environ, DMM_PROFILE="smoke", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(command[1:]), "exit_status": None, "error": f"timed out after {timeout} s"}
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|error|errors)", done.stdout)}
    return {"command": " ".join(command[1:]), "exit_status": done.returncode, "seconds": round(time.perf_counter() - started, 1),
            **counts, "tail": done.stdout.strip().splitlines()[-6:]}


def track_speed(device: torch.device, frames: int, backbone: str, amp: str | None, compile_matching: bool,
                proposal_net: ProposalNet) -> dict:
    """Per-stage ms per frame, FPS with and without proposals (benchmarks/inference.py's timer)."""
    torch.manual_seed(0)
    video = torch.rand(frames + 2, 3, inference.HEIGHT, inference.WIDTH, device=device)
    totals = inference.time_backbone(backbone, proposal_net, video, inference.synthetic_first_mask(3), device,
                                     amp, compile_matching)
    per_frame = {stage: totals[stage] / totals["n_frames"] for stage in inference.STAGES}
    total = sum(per_frame.values())
    return {"amp": amp, "compiled_matching": compile_matching, "backbone": backbone, "frames": totals["n_frames"],
            "ms_per_frame": {s: round(1000 * v, 2) for s, v in per_frame.items()},
            "fps": round(1 / total, 2), "fps_without_proposals": round(1 / (total - per_frame["proposals"]), 2)}


def matching_speed(device: torch.device, problems: int, repeats: int, compiled: bool) -> dict:
    """Forward ``dmm_match`` on [problems, 5, 50] at the paper's settings: the device against the CPU."""
    from torch.profiler import profile

    cost = torch.rand(problems, 5, 50, generator=torch.Generator().manual_seed(0))
    result = {"problems": problems, "shape": [5, 50]}
    runs = [("cpu", torch.device("cpu"), False)] if device.type != "cpu" else []
    runs += [(f"{device.type} eager", device, False)] + ([(f"{device.type} compiled", device, True)] if compiled else [])
    with torch.no_grad():
        for name, where, use_compile in runs:
            c = cost.to(where)
            dmm_match(c, compiled=use_compile)  # warm-up (and compilation)
            best = float("inf")
            for _ in range(repeats):
                sync(where)
                start = time.perf_counter()
                dmm_match(c, compiled=use_compile)
                sync(where)
                best = min(best, time.perf_counter() - start)
            with profile() as prof:
                dmm_match(c[:1], compiled=use_compile)
            aten = sum(e.name.startswith("aten::") for e in prof.events())
            result[name] = {"ms_per_call": round(1000 * best, 3), "us_per_problem": round(1e6 * best / problems, 3),
                            "aten_ops_per_call_one_problem": aten}
    if "cpu" in result and f"{device.type} eager" in result:
        result["cpu_over_device_eager"] = round(result["cpu"]["ms_per_call"] / result[f"{device.type} eager"]["ms_per_call"], 2)
    return result


def synthetic_batch(batch: int, unroll: int, size: tuple[int, int], objects: int, seed: int = 0):
    """Random frames uint8 [B, T, 3, H, W] with ``objects`` drifting rectangles and their labels [B, T, H, W]."""
    rng = np.random.default_rng(seed)
    height, width = size
    frames = rng.integers(0, 80, (batch, unroll + 1, 3, height, width), dtype=np.uint8)
    labels = np.zeros((batch, unroll + 1, height, width), np.int64)
    for b in range(batch):
        for k in range(1, objects + 1):
            h, w = height // 6, width // 8
            y, x = rng.integers(0, height - h - 8 * unroll), rng.integers(0, width - w - 8 * unroll)
            for t in range(unroll + 1):
                labels[b, t, y + 4 * t:y + 4 * t + h, x + 4 * t:x + 4 * t + w] = k
                frames[b, t, :, y + 4 * t:y + 4 * t + h, x + 4 * t:x + 4 * t + w] = rng.integers(100, 255, (3, 1, 1))
    return torch.from_numpy(frames), torch.from_numpy(labels)


def train_step_check(device: torch.device, cfg, amp: str | None, steps: int, batch_data, proposals) -> dict:
    """Seconds per training step (after a warm-up step), peak memory, and the first step's loss."""
    from dmmlib import training

    model = training.build_model(cfg).to(device).train()
    unrolled = UnrolledClip(model, cfg)
    optimizer = torch.optim.Adam(training.parameter_groups(model, cfg.lr_pretrained, cfg.lr_random))
    scaler = torch.amp.GradScaler(device.type, enabled=amp == "fp16")
    frames, labels = batch_data[0].to(device), batch_data[1].to(device)
    on_device = [[p.to(device) for p in per_frame] for per_frame in proposals]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    for _ in range(steps + 1):
        sync(device)
        start = time.perf_counter()
        with autocast(device, amp):
            loss, _ = unrolled(frames, labels, on_device)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        sync(device)
        times.append(time.perf_counter() - start)
        losses.append(float(loss.detach()))
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"amp": amp, "batch": cfg.batch_size, "unroll": cfg.unroll, "frame_size": cfg.frame_size,
            "backbone": model.config.backbone, "seconds_per_step": round(min(times[1:]), 3),
            "first_step_seconds": round(times[0], 3), "peak_memory_gib": None if peak is None else round(peak, 2),
            "first_loss": losses[0]}


def amp_accuracy(device: torch.device, amp: str, backbone: str, frames: int, size: tuple[int, int]) -> dict:
    """Tracking the same video in float32 and with AMP: probabilities, costs and labels compared."""
    rng = np.random.default_rng(1)
    height, width = size
    video = rng.integers(0, 80, (frames, height, width, 3), dtype=np.uint8)
    labels = np.zeros((frames, height, width), np.uint8)
    for t in range(frames):  # object 1 drifts right, object 2 stays
        labels[t, height // 12:height // 3, width // 12 + 3 * t:width // 3 + 3 * t] = 1
        labels[t, height // 2:5 * height // 6, width // 2:3 * width // 4] = 2
        video[t][labels[t] == 1] = (200, 60, 60)
        video[t][labels[t] == 2] = (60, 200, 60)
    proposals = [proposals_from_labels(lab, n_noise=20, jitter=0.05, rng=np.random.default_rng(t))
                 for t, lab in enumerate(labels)]
    torch.manual_seed(0)
    model = DMMNet(default_config(backbone=backbone))
    runs = {a: list(track_steps(list(video), labels[0], model, proposals,
                                options=TrackOptions(device=str(device), progress=False, amp=a))) for a in (None, amp)}
    prob, cost, agree = 0.0, 0.0, []
    for full, mixed in zip(runs[None][1:], runs[amp][1:]):
        p_full, p_mixed = (torch.sigmoid(s.output.logits.float()) for s in (full, mixed))
        prob = max(prob, float((p_full - p_mixed).abs().max()))
        cost = max(cost, float((full.output.cost - mixed.output.cost).abs().max()))
        agree.append(float((full.labels == mixed.labels).mean()))
    return {"amp": amp, "frames": frames, "max_probability_difference": prob, "max_cost_difference": cost,
            "label_agreement": round(float(np.mean(agree)), 6)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help="cuda (default where there is one), cpu, ...")
    parser.add_argument("--out", default=None, help="JSON file (default data/gpu_check.json)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script's plumbing in seconds")
    parser.add_argument("--frames", type=int, default=None, help="timed tracking frames (default 30; 2 quick)")
    parser.add_argument("--skip-tests", action="store_true", help="leave out the pytest run")
    parser.add_argument("--test-timeout", type=int, default=240, help="seconds for the pytest run (default 240)")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    device = pick_device(args.device)
    speed_settings(device)
    if device.type == "cpu":  # on shared cores one thread gives steady timings (see benchmarks/matching.py)
        torch.set_num_threads(1)
    quick = args.quick
    out = Path(args.out) if args.out else ROOT / "data" / "gpu_check.json"
    frames = args.frames or (2 if quick else 30)
    amp = amp_for(device)
    backbone = "resnet18" if quick else "resnet50"
    report: dict = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"), "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "torch": torch.__version__, "cuda": torch.version.cuda, "quick": quick, "amp": amp,
        "tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_benchmark": torch.backends.cudnn.benchmark,
    }
    began = time.perf_counter()

    def section(name: str, fn) -> None:
        started = time.perf_counter()
        print(f"[{time.perf_counter() - began:6.1f} s] {name} ...")
        try:
            report[name] = fn()
        except Exception as error:  # one broken section must not cost the others
            report[name] = {"error": f"{type(error).__name__}: {error}"}
        report.setdefault("seconds", {})[name] = round(time.perf_counter() - started, 1)
        report["total_seconds"] = round(time.perf_counter() - began, 1)
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")
        print(json.dumps(report[name], indent=1)[:1500])

    if not args.skip_tests:
        section("tests", lambda: run_cuda_tests(args.test_timeout))
    proposal_net = ProposalNet("resnet18_fpn_lite" if quick else "resnet50_fpn").to(device).eval()
    settings = [(None, False), (amp, False)] + ([] if quick else [(None, True), (amp, True)])
    section("track", lambda: [track_speed(device, frames, backbone, a, c, proposal_net) for a, c in settings])
    section("matching", lambda: matching_speed(device, 16 if quick else 256, 2 if quick else 10, compiled=not quick))

    cfg = profile_config("smoke" if quick else "gpu", ["device=" + str(device)] +
                         (["batch_size=2", "frame_size=[64,112]"] if quick else []))
    batch_data = synthetic_batch(cfg.batch_size, cfg.unroll, tuple(cfg.frame_size), min(cfg.max_objects, 3))
    proposals = clip_proposals(batch_data[0], batch_data[1], [{} for _ in range(cfg.batch_size)],
                               [(0, b) for b in range(cfg.batch_size)],
                               oracle_source(cfg.proposal_noise, cfg.proposal_jitter), 0)
    steps = 1 if quick else 3
    section("train_step", lambda: [train_step_check(device, cfg, a, steps, batch_data, proposals) for a in (None, amp)])
    size = (64, 112) if quick else (inference.HEIGHT, inference.WIDTH)
    section("amp_accuracy", lambda: amp_accuracy(device, amp, backbone, 3 if quick else 10, size))
    if isinstance(report.get("train_step"), list) and len(report["train_step"]) == 2:
        first = [r["first_loss"] for r in report["train_step"]]
        report["amp_accuracy"]["train_loss_float32"], report["amp_accuracy"]["train_loss_amp"] = first
        atomic_write_text(out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out} in {time.perf_counter() - began:.0f} s")


if __name__ == "__main__":
    main()
