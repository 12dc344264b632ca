"""``python -m dmmlib predict``: track every video of a DAVIS, YouTube-VOS or SegTrack v2 split."""

from __future__ import annotations

import argparse

from dmmlib.commands.inputs import (
    add_model_arguments,
    dataset_root,
    load_model,
    model_inputs,
    proposal_supply,
    root_flag,
)
from dmmlib.errors import DMMInputError
from dmmlib.fileio import check_apart, check_writable_folder, plain_name
from dmmlib.predict import (
    DATASETS,
    PredictOptions,
    check_outputs,
    plan_videos,
    predict_videos,
    results_folder,
)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="davis", choices=DATASETS, help="layout of the dataset (default: davis)")
    parser.add_argument("--davis-root", help="root of a DAVIS 2017 layout (e.g. the synthetic benchmark)")
    parser.add_argument("--root", help="dataset root (any --dataset; for davis the same as --davis-root)")
    parser.add_argument("--split", default=None,
                        help="davis: ImageSets/2017/<split>.txt (default val); youtube-vos: <root>/<split> (default valid)")
    parser.add_argument("--out", required=True,
                        help="results folder: <out>/<seq>/<frame>.png (youtube-vos: <out>/Annotations/<video>/<frame>.png)")
    parser.add_argument("--resolution", default="480p", help="davis: subfolder of JPEGImages/ and Annotations/ (default 480p)")
    parser.add_argument("--sequences", nargs="+", help="only these sequences (videos) of the split")
    add_model_arguments(parser)
    parser.add_argument("--lam", type=float, help="lambda of Eq. 1 instead of the checkpoint's (Sec. 4.1: 0.9 for SegTrack v2)")
    parser.add_argument("--online-steps", type=int, default=0,
                        help="online learning (Sec. 4.1): fine-tune a copy of the model on each video's first "
                             "frame for this many steps before tracking it (default 0: off)")
    parser.add_argument("--force", action="store_true", help="overwrite result PNGs that already exist")


def main(args: argparse.Namespace) -> int:
    root = dataset_root(args)
    if args.lam is not None and not 0.0 <= args.lam <= 1.0:
        raise DMMInputError(f"--lam {args.lam}; expected a number in [0, 1]")
    for flag, names in (("--split", [args.split or "val"]), ("--resolution", [args.resolution]),
                        ("--sequences", args.sequences or [])):
        for name in names:
            plain_name(name, flag)
    check_apart(args.out, "--out", {root_flag(args): root, **model_inputs(args)})
    options = PredictOptions(device=args.device, size=args.size, online_steps=args.online_steps, force=args.force,
                             amp=args.amp)
    plans = plan_videos(args.dataset, root, args.split, args.sequences, args.resolution)
    target = results_folder(args.dataset, args.out)
    check_outputs(plans, target, args.force)  # fail fast, before the models are built
    check_writable_folder(target, f"--out {args.out}")
    model = load_model(args.checkpoint, args.untrained)
    if args.lam is not None:
        model.config.lam = float(args.lam)  # read by every step (Eq. 1); the weights do not depend on it
    supply = proposal_supply(args.proposals_cache, args.proposal_checkpoint, args.device, args.untrained)
    written = predict_videos(plans, target, model, supply, options)
    print(f"wrote results for {len(written)} videos to {target}")
    return 0
