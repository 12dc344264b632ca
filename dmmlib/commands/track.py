"""``python -m dmmlib track``: track objects through a video from a first-frame mask."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

from dmmlib.commands.inputs import add_model_arguments, load_model, proposal_supply
from dmmlib.data.images import iter_frames
from dmmlib.fileio import refuse_overwrite
from dmmlib.predict import write_labels
from dmmlib.tracking import TrackOptions, track


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--frames", required=True, help="folder of frames (sorted by name) or a video file")
    parser.add_argument("--mask", required=True, help="label PNG of the first frame (DAVIS palette or greyscale ids)")
    parser.add_argument("--out", required=True, help="output folder for the label PNGs (00000.png, ...)")
    parser.add_argument("--sequence", help="name of the video in --proposals-cache (default: the frames folder's name)")
    add_model_arguments(parser)
    parser.add_argument("--force", action="store_true", help="overwrite PNGs already in --out")


def main(args: argparse.Namespace) -> int:
    out_dir = Path(args.out)
    if out_dir.is_dir() and any(out_dir.glob("*.png")):  # before the slow model building: errors come fast
        refuse_overwrite(out_dir, args.force, what="output folder (with PNGs)")
    model = load_model(args.checkpoint, args.untrained)
    sequence = args.sequence or Path(args.frames).stem
    source = proposal_supply(args.proposals_cache, args.proposal_checkpoint, args.device, args.untrained)(sequence)
    names = iter_frames(args.frames)[2] or (f"{i:05d}" for i in itertools.count())  # a video file has no names
    options = TrackOptions(device=args.device, size=args.size, progress=True, sequence=sequence, amp=args.amp)
    labels = track(args.frames, args.mask, model, source, options=options)
    count = write_labels(labels, out_dir, names)
    print(f"wrote {count} label masks to {out_dir}")
    return 0
