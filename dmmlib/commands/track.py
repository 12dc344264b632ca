"""``python -m dmmlib track``: track objects through a video from a first-frame mask."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from dmmlib.commands.inputs import (
    add_model_arguments,
    load_model,
    model_inputs,
    proposal_supply,
)
from dmmlib.errors import DMMInputError
from dmmlib.fileio import (
    check_apart,
    check_writable_folder,
    plain_name,
    refuse_overwrite,
    staged_folder,
)
from dmmlib.predict import write_labels
from dmmlib.tracking import TrackOptions, open_video, video_steps


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", required=True, help="folder of frames (sorted by name) or a video file")
    parser.add_argument("--mask", required=True, help="label PNG of the first frame (DAVIS palette or greyscale ids)")
    parser.add_argument("--out", required=True, help="output folder for the label PNGs (00000.png, ...)")
    parser.add_argument("--sequence", help="name of the video in --proposals-cache (default: the frames folder's name)")
    add_model_arguments(parser)
    parser.add_argument("--force", action="store_true", help="overwrite PNGs already in --out")


def _check_out(args: argparse.Namespace) -> Path:
    """--out: apart from every input, a folder, without PNGs unless --force, writable."""
    out_dir = Path(args.out)
    check_apart(out_dir, "--out", {"--frames": args.frames, "--mask": args.mask, **model_inputs(args)})
    if out_dir.exists() and not out_dir.is_dir():
        raise DMMInputError(f"--out {out_dir} is a file; expected a folder for the label PNGs")
    if out_dir.is_dir() and any(out_dir.glob("*.png")):
        refuse_overwrite(out_dir, args.force, what="output folder (with PNGs)")
    check_writable_folder(out_dir, f"--out {out_dir}")
    return out_dir


def main(args: argparse.Namespace) -> int:
    # every input is checked before the (slow) models are built, so errors come fast
    out_dir = _check_out(args)
    if args.sequence is not None:
        plain_name(args.sequence, "--sequence")
    video = open_video(args.frames, args.mask, sequence=args.sequence, mask_name="--mask")
    options = TrackOptions(device=args.device, size=args.size, progress=True, sequence=video.sequence, amp=args.amp)
    model = load_model(args.checkpoint, args.untrained)
    source = proposal_supply(args.proposals_cache, args.proposal_checkpoint, args.device, args.untrained)(video.sequence)
    names = video.names or (f"{i:05d}" for i in itertools.count())  # a video file has no names
    labels = (step.labels for step in video_steps(video, model, source, options))
    with staged_folder(out_dir) as staging:  # every PNG of the video, or (on an error) none
        count = write_labels(labels, staging, names)
    print(f"wrote {count} label masks to {out_dir}")
    return 0
