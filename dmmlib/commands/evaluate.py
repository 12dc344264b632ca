"""``python -m dmmlib evaluate``: score a results folder (DAVIS J/F; YouTube-VOS J/F seen/unseen and G; SegTrack v2 mIoU)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from dmmlib.commands.inputs import dataset_root, root_flag
from dmmlib.evaluation.davis import (
    evaluate_davis,
    output_paths,
    score_tables,
    write_official_csvs,
)
from dmmlib.evaluation.results import check_json_path, write_scores_json
from dmmlib.evaluation.segtrack import evaluate_segtrack
from dmmlib.evaluation.youtube_vos import evaluate_youtube_vos
from dmmlib.fileio import check_apart, plain_name, read_text_file


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="davis", choices=("davis", "youtube-vos", "segtrack"),
                        help="davis: J/F tables (default); youtube-vos: J/F seen/unseen and G on a split with "
                             "ground truth; segtrack: mIoU* and mIoU-dagger")
    parser.add_argument("--davis-root", help="folder holding JPEGImages/, Annotations/, ImageSets/")
    parser.add_argument("--root", help="dataset root (any --dataset; for davis the same as --davis-root)")
    parser.add_argument("--results", required=True, help="results folder: <seq>/<frame>.png label PNGs")
    parser.add_argument("--split", default="val", help="davis: ImageSets/2017/<split>.txt (default: val); "
                                                        "youtube-vos: a fully annotated split, e.g. train-val")
    parser.add_argument("--resolution", default="480p", help="image/annotation subfolder (default: 480p)")
    parser.add_argument("--json", metavar="PATH", help="also write every figure at full precision as JSON")
    parser.add_argument("--workers", type=int, default=None, help="threads over sequences (default: one per core)")
    parser.add_argument("--seen-categories", help="youtube-vos: file or comma list of seen categories "
                                                  "(default: those of <root>/<seen-split>/meta.json)")
    parser.add_argument("--seen-split", default="train", help="youtube-vos: the training split (default: train)")
    parser.add_argument("--force", action="store_true", help="overwrite existing CSV/JSON outputs")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def _seen_categories(text: str | None) -> set[str] | None:
    """``--seen-categories``: a file or a comma list (None: the training split's, read by the evaluator)."""
    if not text:
        return None
    source = Path(text)
    listed = read_text_file(source, "--seen-categories file") if source.is_file() else text
    return {c.strip() for c in listed.replace(",", "\n").splitlines() if c.strip()}


def _print_davis(result, split: str) -> None:
    table_g, table_s = score_tables(result)
    print(f"--------------------------- Global results for {split} ---------------------------")
    print(table_g.to_string(index=False, float_format="{:.3f}".format))
    print(f"\n---------- Per sequence results for {split} ----------")
    print(table_s.to_string(index=False, float_format="{:.3f}".format))


def _print_youtube_vos(scores: dict) -> None:
    def fmt(v):
        return "  nan" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:5.1f}"

    print("   J_S    J_U    F_S    F_U      G   (x100; seen = categories of the training split)")
    print("  ".join(fmt(scores[k]) for k in ("J_seen", "J_unseen", "F_seen", "F_unseen", "G")))
    print(f"\n{'video':<16} {'obj':>3} {'category':<12} {'seen':<5} {'frames':>6} {'J':>6} {'F':>6}")
    for r in scores["objects"]:
        print(f"{r['video']:<16} {r['object']:>3} {str(r['category']):<12} {str(r['seen']):<5} {r['frames']:>6} "
              f"{r['J']:6.3f} {r['F']:6.3f}")


def _print_segtrack(scores: dict) -> None:
    print(f"mIoU* {100 * scores['mIoU*']:.1f}   mIoU† {100 * scores['mIoU†']:.1f}   "
          f"(x100; {scores['frames']} frames: after each instance's template frame, where its mask is non-empty)")
    print(f"\n{'sequence':<20} {'obj':>3} {'frames':>6} {'IoU':>6}")
    for r in scores["per_instance"]:
        print(f"{r['sequence']:<20} {r['object']:>3} {r['frames']:>6} {r['IoU']:6.3f}")


def _check_arguments(args: argparse.Namespace, root: Path) -> None:
    """Every name and destination, before the (long) evaluation rather than after it."""
    for flag in ("split", "resolution", "seen_split"):
        plain_name(getattr(args, flag), f"--{flag.replace('_', '-')}")
    # the tables go into --results (as the official script puts them): it must not be part of the dataset
    check_apart(args.results, "--results", {root_flag(args): root})
    if args.json:
        check_apart(args.json, "--json", {root_flag(args): root})
    if args.dataset == "davis":
        output_paths(args.results, args.split, args.json, args.force)
    elif args.json:
        check_json_path(args.json, args.force)


def main(args: argparse.Namespace) -> int:
    root = dataset_root(args)
    _check_arguments(args, root)
    if args.dataset == "davis":
        result = evaluate_davis(root, args.results, split=args.split, progress=not args.no_progress,
                                workers=args.workers, resolution=args.resolution)
        global_path, sequence_path = write_official_csvs(result, args.results, args.split, force=args.force,
                                                         json_path=args.json)
        _print_davis(result, args.split)
        print(f"\nwrote {global_path} and {sequence_path}" + (f" and {args.json}" if args.json else ""))
        return 0
    if args.dataset == "youtube-vos":
        scores = evaluate_youtube_vos(root, args.split, args.results, _seen_categories(args.seen_categories),
                                      args.seen_split)
        _print_youtube_vos(scores)
    else:
        scores = evaluate_segtrack(root, args.results)
        _print_segtrack(scores)
    if args.json:
        print(f"wrote {write_scores_json(scores, args.json, force=args.force)}")
    return 0
