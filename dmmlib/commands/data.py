"""``python -m dmmlib data ...``: dataset commands.

``data synth`` renders the synthetic benchmark; sizes default to the active
profile's preset and each option overrides one field of it.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from dmmlib.data.generate import default_root, generate_benchmark
from dmmlib.data.synth_config import synth_config_for_profile
from dmmlib.errors import DMMInputError
from dmmlib.profiles import PROFILES, active_profile


def _size(text: str) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected HEIGHTxWIDTH, e.g. 120x216")
    return int(match.group(1)), int(match.group(2))


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    synth = sub.add_parser("synth", help="render the synthetic VOS benchmark in the DAVIS 2017 layout",
                           description="Render the synthetic VOS benchmark in the DAVIS 2017 layout.")
    synth.add_argument("--out", help="output folder (default: data/synthetic-<profile>)")
    synth.add_argument("--profile", choices=PROFILES, help="preset (default: $DMM_PROFILE or cpu)")
    synth.add_argument("--videos", type=int, help="number of training videos")
    synth.add_argument("--val-videos", type=int, help="number of validation videos")
    synth.add_argument("--frames", type=int, help="frames per video")
    synth.add_argument("--size", type=_size, help="frame size HEIGHTxWIDTH")
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--force", action="store_true",
                       help="replace a benchmark made by `data synth` in --out (other files there stay; a folder "
                            "that holds no such benchmark is never replaced)")
    synth.add_argument("--quiet", action="store_true", help="no progress bar")


def _synth(args: argparse.Namespace) -> int:
    profile = args.profile or active_profile()
    config = synth_config_for_profile(profile)
    changes = {}
    if args.videos is not None:
        changes["train_videos"] = args.videos
    if args.val_videos is not None:
        changes["val_videos"] = args.val_videos
    if args.frames is not None:
        changes["frames"] = args.frames
    if args.size is not None:
        changes["height"], changes["width"] = args.size
    config = config.replace(**changes)
    out = Path(args.out) if args.out else default_root(profile)
    root = generate_benchmark(out, config, seed=args.seed, force=args.force, progress=not args.quiet)
    print(f"wrote {config.train_videos} train + {config.val_videos} val videos of {config.frames} frames "
          f"({config.height}x{config.width}) to {root}")
    return 0


def main(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        return _synth(args)
    raise DMMInputError(f"unknown data subcommand {args.data_command!r}")
