"""``python -m dmmlib train``: train DMM-Net end to end through the matching layer."""

from __future__ import annotations

import argparse
import dataclasses

from dmmlib.distributed import world_from_env
from dmmlib.errors import DMMInputError
from dmmlib.train_config import config_path, load_config
from dmmlib.training import train


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True,
                        help="YAML training config: a file, or the name of a packaged one "
                             "(smoke, cpu, gpu, davis2017, youtube-vos)")
    parser.add_argument("--out", required=True, help="run folder: checkpoints, train_log.jsonl, config.yaml")
    parser.add_argument("--resume", action="store_true", help="continue from the run folder's newest checkpoint")
    parser.add_argument("--force", action="store_true", help="start over in an existing run folder")
    parser.add_argument("--data", default=None, help="dataset root (overrides the config's `data`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (YAML value; model.KEY for model settings); repeatable")


def main(args: argparse.Namespace) -> int:
    if args.resume and args.force:
        raise DMMInputError("--resume and --force contradict each other; pass one of them")
    cfg = load_config(config_path(args.config), args.overrides)
    if args.data is not None:
        cfg = dataclasses.replace(cfg, data=str(args.data))
    result = train(cfg, args.out, resume=args.resume, force=args.force)
    if world_from_env().is_main:
        last = result.log[-1] if result.log else {}
        print(f"trained {result.step} steps; last loss {last.get('loss', float('nan')):.4f}; run folder {result.run_dir}")
    return 0
