"""``python -m dmmlib proposals {train, compute, recall}``: the proposal network and its cache."""

from __future__ import annotations

import argparse
import os

from dmmlib.errors import DMMInputError
from dmmlib.fileio import (
    check_apart,
    check_destinations,
    check_writable_folder,
    plain_name,
)
from dmmlib.profiles import PROFILES
from dmmlib.proposals.compute import compute_proposals
from dmmlib.proposals.frames import TOP_K
from dmmlib.proposals.recall import proposal_recall
from dmmlib.proposals.train import (
    load_proposal_net,
    loss_log_path,
    train_config_for_profile,
    train_proposal_net,
)


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    train = sub.add_parser("train", help="train the class-agnostic Mask R-CNN on the train split")
    train.add_argument("--data", required=True, help="benchmark root in the DAVIS layout (with Instances/)")
    train.add_argument("--out", required=True, help="checkpoint file to write")
    train.add_argument("--profile", choices=PROFILES, help="settings table (default: $DMM_PROFILE)")
    train.add_argument("--steps", type=int, help="override the profile's number of steps")
    train.add_argument("--init-weights", help="starting weights: 'coco', 'none' (random) or a state-dict file "
                       "(default: the profile's)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--device", default="auto")
    train.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    train.add_argument("--force", action="store_true", help="replace an existing --out")

    compute = sub.add_parser("compute", help="compute and cache the top-50 proposals of every frame of a split")
    compute.add_argument("--data", required=True)
    compute.add_argument("--split", default="val")
    compute.add_argument("--checkpoint", required=True, help="a checkpoint from `proposals train`")
    compute.add_argument("--cache", required=True, help="cache folder (<cache>/<seq>/<frame>.pt)")
    compute.add_argument("--device", default="auto")
    compute.add_argument("--batch-size", type=int, default=4, help="frames per forward pass (default 4)")
    compute.add_argument("--workers", type=int, default=None,
                         help="processes decoding frames ahead of the net (default: 4 on a GPU, 0 on a CPU)")

    recall = sub.add_parser("recall", help="recall of the annotated objects by the cached proposals")
    recall.add_argument("--data", required=True)
    recall.add_argument("--split", default="val")
    recall.add_argument("--cache", required=True)
    recall.add_argument("--top-k", type=int, default=TOP_K)
    recall.add_argument("--iou", type=float, nargs="+", default=[0.5, 0.7], help="IoU thresholds")


def _check_outputs(args: argparse.Namespace) -> None:
    """Names and destinations, before the network is built: outputs apart from the inputs, writable."""
    if args.action == "train":
        weights = args.init_weights if args.init_weights and os.path.exists(args.init_weights) else None
        check_apart(args.out, "--out", {"--data": args.data, "--init-weights": weights})
        check_destinations({args.out: "proposal-net checkpoint", loss_log_path(args.out): "loss log"},
                           force=args.force or args.resume)
        return
    plain_name(args.split, "--split")
    if args.action == "compute":
        check_apart(args.cache, "--cache", {"--data": args.data, "--checkpoint": args.checkpoint})
        check_writable_folder(args.cache, f"--cache {args.cache}")


def main(args: argparse.Namespace) -> int:
    _check_outputs(args)
    if args.action == "train":
        config = train_config_for_profile(args.profile)
        if args.steps is not None:
            config = config.replace(steps=args.steps)
        if args.init_weights is not None:
            config = config.replace(init_weights=None if args.init_weights.lower() == "none" else args.init_weights)
        result = train_proposal_net(
            args.data, args.out, config, seed=args.seed, resume=args.resume, force=args.force, device=args.device
        )
        last = result["losses"].get("total", [float("nan")])[-1]
        print(f"trained {result['steps']} steps in {result['seconds']:.1f} s; last loss {last:.4f}; wrote {args.out}")
        return 0
    if args.action == "compute":
        net = load_proposal_net(args.checkpoint, device=args.device)
        workers = args.workers if args.workers is not None else (4 if net.device.type == "cuda" else 0)
        if args.batch_size < 1 or workers < 0:
            raise DMMInputError(f"--batch-size {args.batch_size} / --workers {workers}: expected >= 1 and >= 0")
        counts = compute_proposals(args.data, args.split, net, args.cache, batch_size=args.batch_size,
                                   num_workers=workers)
        print(f"{counts['computed']} frames computed, {counts['skipped']} already cached, "
              f"{counts['sequences']} sequences -> {args.cache}")
        return 0
    result = proposal_recall(args.data, args.split, args.cache, tuple(args.iou), args.top_k)
    print(f"top-{args.top_k} proposal recall on {args.split} ({result['pairs']} object-frames, "
          f"mean best IoU {result['mean_best_iou']:.3f})")
    print(f"{'IoU >=':>8}  recall")
    for threshold, value in result["recall"].items():
        print(f"{threshold:>8.2f}  {value:.3f}")
    return 0
