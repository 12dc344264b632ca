"""``python -m dmmlib predict``: track every sequence of a DAVIS-layout split and write result PNGs.

``--dataset youtube-vos`` and ``--dataset segtrack`` (with ``--root``) run the same
tracker on those layouts; see :mod:`dmmlib.benchmarks_real`.

Reads ``<davis-root>/ImageSets/2017/<split>.txt``, and for each sequence the frames
``JPEGImages/<resolution>/<seq>/*.jpg`` and the first annotation
``Annotations/<resolution>/<seq>/<first frame>.png``; writes
``<out>/<seq>/<frame>.png`` label masks, the layout ``python -m dmmlib evaluate``
scores (the first frame's result is the given annotation, void set to 0).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from dmmlib.errors import DMMInputError
from dmmlib.maskio import read_label_png
from dmmlib.tracking import (
    image_files,
    load_model,
    make_proposal_net,
    refuse_existing_pngs,
    track,
    write_track,
)


def split_sequences(davis_root: Path, split: str) -> list[str]:
    """The sequence names listed in ``ImageSets/2017/<split>.txt``, in file order."""
    listing = davis_root / "ImageSets" / "2017" / f"{split}.txt"
    if not listing.is_file():
        raise DMMInputError(f"split file {listing} does not exist; expected a DAVIS 2017 layout under {davis_root}")
    names = [line.strip() for line in listing.read_text().splitlines() if line.strip()]
    if not names:
        raise DMMInputError(f"split file {listing} lists no sequences")
    return names


def plan_split(davis_root, split: str, out_dir, resolution: str = "480p", force: bool = False,
               sequences: list[str] | None = None) -> list[tuple[str, Path, Path]]:
    """Check every sequence's inputs and outputs before anything runs: [(seq, frames folder, first annotation)]."""
    davis_root, out_dir = Path(davis_root), Path(out_dir)
    names = split_sequences(davis_root, split) if sequences is None else list(sequences)
    plan = []
    for seq in names:
        frames_dir = davis_root / "JPEGImages" / resolution / seq
        if not frames_dir.is_dir():
            raise DMMInputError(f"frames folder {frames_dir} of sequence {seq} does not exist")
        first = image_files(frames_dir)[0]
        annotation = davis_root / "Annotations" / resolution / seq / f"{first.stem}.png"
        if not annotation.is_file():
            raise DMMInputError(f"first-frame annotation {annotation} of sequence {seq} does not exist")
        refuse_existing_pngs(out_dir / seq, force)
        plan.append((seq, frames_dir, annotation))
    return plan


def predict_split(davis_root, split: str, out_dir, model, proposals_cache=None, proposal_net=None,
                  resolution: str = "480p", device: str = "auto", force: bool = False,
                  sequences: list[str] | None = None, progress: bool = True,
                  size: tuple[int, int] | None = None, online_steps: int = 0) -> list[str]:
    """Track each sequence of ``split`` into ``out_dir/<seq>/``; returns the sequences written.

    ``online_steps > 0`` is the paper's online learning (Sec. 4.1): before tracking a video, a
    copy of ``model`` is fine-tuned for that many steps on warped copies of its first frame
    and annotation (:func:`dmmlib.online.online_finetune`); ``model`` itself is not changed.
    """
    from tqdm.auto import tqdm

    if isinstance(online_steps, bool) or not isinstance(online_steps, int) or online_steps < 0:
        raise DMMInputError(f"online_steps={online_steps!r}; expected an integer >= 0")
    plan = plan_split(davis_root, split, out_dir, resolution, force, sequences)
    for seq, frames_dir, annotation in tqdm(plan, desc=f"predict {split}", unit="video", disable=not progress):
        video_model = model
        if online_steps:
            from dmmlib.data.images import read_frame
            from dmmlib.online import online_finetune

            first_frame = read_frame(image_files(frames_dir)[0])
            video_model = online_finetune(model, first_frame, read_label_png(annotation), steps=online_steps)
        labels = track(frames_dir, annotation, model=video_model, proposals=proposals_cache,
                       proposal_net=proposal_net, device=device, progress=False, sequence=seq, size=size)
        write_track(labels, Path(out_dir) / seq, [p.stem for p in image_files(frames_dir)])
    return [seq for seq, _, _ in plan]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="davis", choices=("davis", "youtube-vos", "segtrack"),
                        help="layout of the dataset (default: davis)")
    parser.add_argument("--davis-root", help="root of a DAVIS 2017 layout (e.g. the synthetic benchmark)")
    parser.add_argument("--root", help="dataset root (any --dataset; for davis the same as --davis-root)")
    parser.add_argument("--split", default=None,
                        help="davis: ImageSets/2017/<split>.txt (default val); youtube-vos: <root>/<split> (default valid)")
    parser.add_argument("--out", required=True,
                        help="results folder: <out>/<seq>/<frame>.png (youtube-vos: <out>/Annotations/<video>/<frame>.png)")
    parser.add_argument("--resolution", default="480p", help="subfolder of JPEGImages/ and Annotations/ (default 480p)")
    parser.add_argument("--checkpoint", help="DMMNet checkpoint (default: an untrained model)")
    parser.add_argument("--proposals-cache", help="folder of cached proposals (ProposalCache: <dir>/<seq>/<frame>.pt)")
    parser.add_argument("--proposal-checkpoint", help="ProposalNet weights, for frames not in the cache")
    parser.add_argument("--sequences", nargs="+", help="only these sequences (videos) of the split")
    parser.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), help="run the model at this size (e.g. 255 448)")
    parser.add_argument("--lam", type=float, help="lambda of Eq. 1 instead of the checkpoint's (Sec. 4.1: 0.9 for SegTrack v2)")
    parser.add_argument("--online-steps", type=int, default=0,
                        help="online learning (Sec. 4.1): fine-tune a copy of the model on each video's first "
                             "frame for this many steps before tracking it (davis layout; default 0: off)")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, ...")
    parser.add_argument("--force", action="store_true", help="overwrite result PNGs that already exist")


def main(args: argparse.Namespace) -> int:
    from dmmlib.benchmarks_real import dataset_root, plan_dataset, predict_main

    if args.davis_root and args.root and args.davis_root != args.root:
        raise DMMInputError("--davis-root and --root name different folders; pass one of them")
    root = dataset_root(args)
    if args.dataset == "davis":
        split = args.split or "val"
        plan_split(root, split, args.out, args.resolution, args.force, args.sequences)  # fail fast
    else:
        plan_dataset(args.dataset, root, args.out, args.split or "valid", args.sequences, args.force)
    from dmmlib.proposals import ProposalCache

    cache = None
    if args.proposals_cache:
        cache = ProposalCache(args.proposals_cache)
        if not cache.root.is_dir():
            raise DMMInputError(f"--proposals-cache {cache.root} is not a folder")
    if args.lam is not None and not 0.0 <= args.lam <= 1.0:
        raise DMMInputError(f"--lam {args.lam}; expected a number in [0, 1]")
    model = load_model(args.checkpoint)
    if args.lam is not None:
        model.config.lam = float(args.lam)  # read by every step (Eq. 1); the weights do not depend on it
    proposal_net = make_proposal_net(args.proposal_checkpoint, needed=cache is None)
    if args.dataset != "davis":
        if args.online_steps:
            raise DMMInputError(f"--online-steps is implemented for --dataset davis only; got --dataset {args.dataset}")
        args.root = str(root)
        return predict_main(args, model, cache, proposal_net)
    written = predict_split(root, split, args.out, model, cache, proposal_net,
                            args.resolution, args.device, args.force, args.sequences, size=args.size,
                            online_steps=args.online_steps)
    print(f"wrote results for {len(written)} sequences to {args.out}")
    return 0
