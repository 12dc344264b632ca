"""Frames per second of tracking at 255 x 448 (the paper's YouTube-VOS size), stage by stage.

    python benchmarks/inference.py [--frames 5] [--objects 3] [--device auto] [--threads N]
                                   [--amp bf16|fp16] [--compile-matching]

For each matching backbone (resnet18, resnet50; random weights -- speed does not
depend on them) one video is tracked frame by frame, and each stage is timed
with a wall clock around it (``torch.cuda.synchronize`` on a GPU):

* proposals  -- ProposalNet.propose (random init: it keeps all top-50 boxes, as a
                trained one with score threshold 0 does);
* features   -- the backbone f_theta on the frame (conv2..conv5);
* cost       -- pasting P~ (Eq. 8), RoIAlign of the proposals, Eq. 1;
* matching   -- Alg. 1 (paper settings), X~, Eq. 8's contraction;
* refinement -- the four-ConvLSTM head.

The paper computes proposals off-line, so FPS is printed with and without them.
The first frame is a warm-up and is not counted. ``--amp`` runs the backbone and the
refinement head under autocast (Eq. 1 and Alg. 1 stay float32); ``--compile-matching``
runs Alg. 1 through ``torch.compile`` (compiled during the warm-up frame). On CUDA the
speed settings of :func:`dmmlib.device.speed_settings` (TF32, cudnn.benchmark) are on.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dmmlib.device import autocast, pick_device, speed_settings
from dmmlib.model import DMMNet, default_config
from dmmlib.proposals import ProposalNet

HEIGHT, WIDTH = 255, 448
STAGES = ("proposals", "features", "cost", "matching", "refinement")


def synthetic_first_mask(n_objects: int) -> np.ndarray:
    """n rectangles side by side: templates for the benchmark (content does not affect speed)."""
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    width = WIDTH // (n_objects + 1)
    for k in range(n_objects):
        mask[60:180, 20 + k * width : 20 + k * width + width // 2] = k + 1
    return mask


def time_backbone(backbone: str, proposal_net: ProposalNet, frames: torch.Tensor, mask: np.ndarray, device,
                  amp: str | None = None, compile_matching: bool = False) -> dict:
    """Seconds per stage summed over frames[1:] (frame 0 gives the templates; frame 1 warms up)."""
    model = DMMNet(default_config(backbone=backbone, compile_matching=compile_matching)).to(device).eval()
    ids = [int(i) for i in np.unique(mask) if i]
    templates = torch.from_numpy(np.stack([mask == i for i in ids]))[None].float().to(device)
    totals = dict.fromkeys(STAGES, 0.0)
    with torch.no_grad(), autocast(device, amp):
        state = model.init_state(frames[:1], templates)
        for t in range(1, len(frames)):
            frame = frames[t : t + 1]
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            proposals = proposal_net.propose(frame[0])
            if device.type == "cuda":
                torch.cuda.synchronize()
            timings = {"proposals": time.perf_counter() - start}
            _, state = model.step(frame, [proposals], state, timings=timings)
            if t > 1:  # frame 1 is the warm-up
                for stage in STAGES:
                    totals[stage] += timings.get(stage, 0.0)
    totals["n_frames"] = len(frames) - 2
    totals["n_proposals"] = len(proposals)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=5, help="timed frames per backbone (after a warm-up)")
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--backbones", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--proposal-arch", default=None, help="ProposalNet architecture (default: the profile's)")
    parser.add_argument("--amp", choices=["bf16", "fp16"], default=None, help="autocast the backbone and refinement")
    parser.add_argument("--compile-matching", action="store_true", help="Alg. 1 through torch.compile")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    speed_settings(device)
    torch.manual_seed(0)
    frames = torch.rand(args.frames + 2, 3, HEIGHT, WIDTH, device=device)
    mask = synthetic_first_mask(args.objects)
    proposal_net = ProposalNet(args.proposal_arch).to(device).eval()
    print(f"device {device}, {torch.get_num_threads()} threads, {HEIGHT}x{WIDTH}, {args.objects} objects, "
          f"proposal net {proposal_net.architecture}, {args.frames} timed frames, amp {args.amp}, "
          f"compiled matching {args.compile_matching}")
    header = ["backbone", "m"] + [f"{s} ms" for s in STAGES] + ["FPS", "FPS w/o proposals", "matching share"]
    print(" | ".join(header))
    for backbone in args.backbones:
        totals = time_backbone(backbone, proposal_net, frames, mask, device, args.amp, args.compile_matching)
        per_frame = {s: totals[s] / totals["n_frames"] for s in STAGES}
        total = sum(per_frame.values())
        model_only = total - per_frame["proposals"]
        row = [backbone, str(totals["n_proposals"])] + [f"{1000 * per_frame[s]:.1f}" for s in STAGES]
        row += [f"{1 / total:.2f}", f"{1 / model_only:.2f}", f"{per_frame['matching'] / model_only:.1%}"]
        print(" | ".join(row))


if __name__ == "__main__":
    main()
