"""The DAVIS 2017 semi-supervised evaluation of a results folder: J, F, recall, decay.

Reproduces the numbers of the official ``davis2017-evaluation`` script (semantics in
``notes/davis-metrics.md``), which the paper uses for Table 2 (Sec. 4.1, "Evaluation"):

* sequences are the lines of ``ImageSets/2017/<split>.txt``, in file order;
* ground truth is ``Annotations/480p/<seq>/<id>.png``; 255 (void) becomes background,
  the objects are 1..max(first annotation), ids seen only later above that are ignored;
* the first and the last frame are not scored;
* results are ``<results>/<seq>/<id>.png`` label PNGs of the same size, fewer ids
  than objects meaning empty predictions;
* per object: J and F per frame, then mean, recall and decay (:mod:`dmmlib.metrics`);
  the global table averages over all objects of all sequences.

Where the official script prints a message and exits with status 0 (a missing result
frame, an id above the object count), we raise :class:`DMMInputError` naming the file.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm.auto import tqdm

from dmmlib.errors import DMMInputError
from dmmlib.fileio import atomic_write_text, atomic_write_with, refuse_overwrite
from dmmlib.maskio import read_label_png
from dmmlib.metrics import Statistics, boundary_f, db_statistics, jaccard

VOID_LABEL = 255
GLOBAL_COLUMNS = ("J&F-Mean", "J-Mean", "J-Recall", "J-Decay", "F-Mean", "F-Recall", "F-Decay")
PER_SEQUENCE_COLUMNS = ("Sequence", "J-Mean", "F-Mean")


@dataclass(frozen=True)
class ObjectScores:
    """Scores of object ``object_id`` of ``sequence``: ``j``, ``f`` are per evaluated frame ``[T-2]``."""

    sequence: str
    object_id: int
    frames: tuple[str, ...]
    j: np.ndarray
    f: np.ndarray
    j_stats: Statistics
    f_stats: Statistics

    @property
    def name(self) -> str:
        """The per-sequence table's row name, ``<seq>_<k>``."""
        return f"{self.sequence}_{self.object_id}"


@dataclass(frozen=True)
class DavisEvaluation:
    """All objects' scores, in split-file then object order, and the global table."""

    split: str
    objects: list[ObjectScores]
    global_scores: dict[str, float] = field(default_factory=dict)

    def per_sequence_rows(self) -> list[tuple[str, float, float]]:
        """Rows ``(<seq>_<k>, J-Mean, F-Mean)`` of the official per-sequence table (one per object)."""
        return [(o.name, o.j_stats.mean, o.f_stats.mean) for o in self.objects]


def global_table(objects: Sequence[ObjectScores]) -> dict[str, float]:
    """The official global table: each column the plain mean over all objects (not per sequence first).

    J&F-Mean = (J-Mean + F-Mean) / 2. NaNs propagate, as with the official ``np.mean``.
    """
    if not objects:
        raise DMMInputError("no objects to evaluate: every sequence's first annotation is empty")

    def mean(values) -> float:
        return float(np.mean(np.asarray(list(values), dtype=np.float64)))

    j_mean = mean(o.j_stats.mean for o in objects)
    f_mean = mean(o.f_stats.mean for o in objects)
    return {
        "J&F-Mean": (j_mean + f_mean) / 2.0,
        "J-Mean": j_mean,
        "J-Recall": mean(o.j_stats.recall for o in objects),
        "J-Decay": mean(o.j_stats.decay for o in objects),
        "F-Mean": f_mean,
        "F-Recall": mean(o.f_stats.recall for o in objects),
        "F-Decay": mean(o.f_stats.decay for o in objects),
    }


# ----------------------------------------------------------------------------- dataset layout


def read_split(davis_root: str | os.PathLike, split: str) -> list[str]:
    """Sequence names listed in ``ImageSets/2017/<split>.txt``, in file order (blank lines skipped)."""
    path = Path(davis_root) / "ImageSets" / "2017" / f"{split}.txt"
    if not path.is_file():
        raise DMMInputError(f"split file {path} does not exist; expected one sequence name per line")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise DMMInputError(f"split file {path} lists no sequences; expected one sequence name per line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DMMInputError(f"split file {path} lists {', '.join(repeated)} more than once")
    return names


@dataclass(frozen=True)
class _SequenceJob:
    sequence: str
    annotation_paths: tuple[Path, ...]
    results_dir: Path


def _plan_sequence(davis_root: Path, results_dir: Path, sequence: str, resolution: str) -> _SequenceJob:
    """Check the folders of one sequence and list its annotations (cheap: no image is read)."""
    image_dir = davis_root / "JPEGImages" / resolution / sequence
    annotation_dir = davis_root / "Annotations" / resolution / sequence
    result_dir = results_dir / sequence
    n_images = len(list(image_dir.glob("*.jpg"))) if image_dir.is_dir() else 0
    if n_images == 0:
        raise DMMInputError(f"no JPEG frames in {image_dir}; expected the frames of sequence {sequence}")
    annotations = tuple(sorted(annotation_dir.glob("*.png"))) if annotation_dir.is_dir() else ()
    if len(annotations) < n_images:
        # The official code pads the list and then crashes on the padding.
        raise DMMInputError(
            f"{annotation_dir} holds {len(annotations)} annotation PNGs but {image_dir} holds {n_images} frames; "
            "the semi-supervised evaluation needs an annotation for every frame"
        )
    if len(annotations) < 3:
        raise DMMInputError(
            f"{annotation_dir} holds {len(annotations)} annotated frames; at least 3 are needed "
            "because the first and the last frame are not scored"
        )
    if not result_dir.is_dir():
        raise DMMInputError(f"results folder {result_dir} for sequence {sequence} does not exist")
    return _SequenceJob(sequence, annotations, result_dir)


def _read_result(path: Path, shape: tuple[int, int], n_objects: int, annotation: Path) -> np.ndarray:
    if not path.is_file():
        raise DMMInputError(f"result frame {path} is missing; expected a label PNG for annotation {annotation}")
    labels = read_label_png(path)
    if labels.shape != shape:
        raise DMMInputError(
            f"result {path} is {labels.shape[0]}x{labels.shape[1]} (HxW) but annotation {annotation} is "
            f"{shape[0]}x{shape[1]}; results must have the annotation's size (nothing is resized)"
        )
    top = int(labels.max())
    if top == VOID_LABEL:
        raise DMMInputError(
            f"result {path} contains the void label 255; results hold 0 (background) and object ids 1..{n_objects}"
        )
    if top > n_objects:
        raise DMMInputError(
            f"result {path} contains object id {top} but the sequence has {n_objects} objects "
            f"(the largest id in its first annotation); expected ids 0..{n_objects}"
        )
    return labels


def evaluate_sequence(job: _SequenceJob) -> list[ObjectScores]:
    """Score every object of one sequence. Reads its annotations and result PNGs."""
    annotations = job.annotation_paths
    first = read_label_png(annotations[0])
    first = np.where(first == VOID_LABEL, 0, first)
    n_objects = int(first.max())
    scored = annotations[1:-1]  # the first frame is given and the last is not scored
    frame_ids = tuple(p.stem for p in scored)
    if n_objects == 0:
        return []  # as the official code: a sequence without objects contributes nothing
    shape = first.shape
    gt = np.empty((len(scored), *shape), dtype=np.uint8)
    pred = np.empty_like(gt)
    for t, path in enumerate(scored):
        labels = read_label_png(path)
        if labels.shape != shape:
            raise DMMInputError(
                f"annotation {path} is {labels.shape[0]}x{labels.shape[1]} but {annotations[0]} is "
                f"{shape[0]}x{shape[1]}; all frames of a sequence must have one size"
            )
        gt[t] = labels
        pred[t] = _read_result(job.results_dir / f"{path.stem}.png", shape, n_objects, path)
    # Void (255) is background here: the semi-supervised evaluation passes void=None.
    # Ids above n_objects that appear only later never equal any k below, so they are ignored.
    objects = []
    for k in range(1, n_objects + 1):
        gt_k = gt == k
        pred_k = pred == k
        j = jaccard(gt_k, pred_k)
        f = boundary_f(gt_k, pred_k)
        objects.append(ObjectScores(job.sequence, k, frame_ids, j, f, db_statistics(j), db_statistics(f)))
    return objects


def evaluate_davis(
    davis_root: str | os.PathLike,
    results_dir: str | os.PathLike,
    split: str = "val",
    progress: bool = True,
    workers: int | None = None,
    resolution: str = "480p",
) -> DavisEvaluation:
    """Evaluate a DAVIS-layout results folder like the official semi-supervised evaluation.

    ``workers``: threads over sequences (default: one per core, at most one per
    sequence; 1 runs sequentially). Threads, not processes: PNG decoding, numpy and
    OpenCV release the GIL, and a forked process pool can deadlock when the parent
    already runs OpenCV or OpenMP thread pools (as it does inside a test session). Every folder is checked before any image is
    read, so layout errors come at once.
    """
    davis_root = Path(davis_root)
    results_dir = Path(results_dir)
    if not davis_root.is_dir():
        raise DMMInputError(f"DAVIS root {davis_root} is not a folder")
    if not results_dir.is_dir():
        raise DMMInputError(f"results folder {results_dir} does not exist")
    sequences = read_split(davis_root, split)
    jobs = [_plan_sequence(davis_root, results_dir, s, resolution) for s in sequences]
    if workers is None:
        workers = min(len(jobs), os.cpu_count() or 1)
    if workers < 1:
        raise DMMInputError(f"workers must be at least 1; got {workers}")
    bar = tqdm(total=len(jobs), desc=f"evaluating {split}", unit="seq", disable=not progress)
    per_sequence: list[list[ObjectScores]] = []
    try:
        if workers == 1:
            for job in jobs:
                per_sequence.append(evaluate_sequence(job))
                bar.update()
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for objects in pool.map(evaluate_sequence, jobs):
                    per_sequence.append(objects)
                    bar.update()
    finally:
        bar.close()
    objects = [o for group in per_sequence for o in group]
    return DavisEvaluation(split=split, objects=objects, global_scores=global_table(objects))


# ----------------------------------------------------------------------------- output


def csv_paths(results_dir: str | os.PathLike, split: str) -> tuple[Path, Path]:
    """Where the official script puts its tables: inside the results folder."""
    results_dir = Path(results_dir)
    return results_dir / f"global_results-{split}.csv", results_dir / f"per-sequence_results-{split}.csv"


def _tables(result: DavisEvaluation):
    import pandas as pd

    table_g = pd.DataFrame([[result.global_scores[c] for c in GLOBAL_COLUMNS]], columns=list(GLOBAL_COLUMNS))
    table_s = pd.DataFrame(result.per_sequence_rows(), columns=list(PER_SEQUENCE_COLUMNS))
    return table_g, table_s


def write_official_csvs(
    result: DavisEvaluation, results_dir: str | os.PathLike, split: str, force: bool = False
) -> tuple[Path, Path]:
    """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv`` into ``results_dir``.

    Same bytes as the official ``to_csv(index=False, float_format="%.3f")``; each
    written atomically. Refuses if either exists, unless ``force``.
    """
    global_path, sequence_path = csv_paths(results_dir, split)
    for path in (global_path, sequence_path):
        refuse_overwrite(path, force, what="results table")
    table_g, table_s = _tables(result)
    atomic_write_with(global_path, lambda tmp: table_g.to_csv(tmp, index=False, float_format="%.3f"))
    atomic_write_with(sequence_path, lambda tmp: table_s.to_csv(tmp, index=False, float_format="%.3f"))
    return global_path, sequence_path


def _finite_or_none(value: float):
    return None if math.isnan(value) else float(value)


def result_to_json_dict(result: DavisEvaluation) -> dict:
    """The figures at full precision: ``{"global": {...}, "objects": [...]}``; NaN becomes null."""
    objects = []
    for o in result.objects:
        objects.append(
            {
                "sequence": o.sequence,
                "object": o.object_id,
                "name": o.name,
                "frames": list(o.frames),
                "J": [_finite_or_none(v) for v in o.j],
                "F": [_finite_or_none(v) for v in o.f],
                "J-Mean": _finite_or_none(o.j_stats.mean),
                "J-Recall": _finite_or_none(o.j_stats.recall),
                "J-Decay": _finite_or_none(o.j_stats.decay),
                "F-Mean": _finite_or_none(o.f_stats.mean),
                "F-Recall": _finite_or_none(o.f_stats.recall),
                "F-Decay": _finite_or_none(o.f_stats.decay),
            }
        )
    return {
        "split": result.split,
        "global": {c: _finite_or_none(result.global_scores[c]) for c in GLOBAL_COLUMNS},
        "objects": objects,
    }


def write_json(result: DavisEvaluation, path: str | os.PathLike, force: bool = False) -> Path:
    """Write :func:`result_to_json_dict` to ``path`` atomically; refuses to overwrite unless ``force``."""
    path = Path(path)
    refuse_overwrite(path, force, what="JSON file")
    atomic_write_text(path, json.dumps(result_to_json_dict(result), indent=1, allow_nan=False) + "\n")
    return path


# ----------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset", default="davis", choices=("davis", "youtube-vos", "segtrack"),
                        help="davis: J/F tables (default); youtube-vos: J/F seen/unseen and G on a split with "
                             "ground truth; segtrack: mIoU* and mIoU-dagger (see dmmlib.benchmarks_real)")
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


def main(args: argparse.Namespace) -> int:
    from dmmlib.benchmarks_real import dataset_root, evaluate_main

    if args.davis_root and args.root and args.davis_root != args.root:
        raise DMMInputError("--davis-root and --root name different folders; pass one of them")
    args.davis_root = str(dataset_root(args))
    if args.dataset != "davis":
        args.root = args.davis_root
        return evaluate_main(args)
    # Refuse before the (long) evaluation rather than after it.
    for path in csv_paths(args.results, args.split):
        refuse_overwrite(path, args.force, what="results table")
    if args.json:
        refuse_overwrite(args.json, args.force, what="JSON file")
    result = evaluate_davis(
        args.davis_root,
        args.results,
        split=args.split,
        progress=not args.no_progress,
        workers=args.workers,
        resolution=args.resolution,
    )
    global_path, sequence_path = write_official_csvs(result, args.results, args.split, force=args.force)
    table_g, table_s = _tables(result)
    print(f"--------------------------- Global results for {args.split} ---------------------------")
    print(table_g.to_string(index=False, float_format="{:.3f}".format))
    print(f"\n---------- Per sequence results for {args.split} ----------")
    print(table_s.to_string(index=False, float_format="{:.3f}".format))
    print(f"\nwrote {global_path} and {sequence_path}")
    if args.json:
        print(f"wrote {write_json(result, args.json, force=args.force)}")
    return 0
