"""The DAVIS 2017 semi-supervised evaluation of a results folder: J, F, recall, decay.

Reproduces the numbers of the official ``davis2017-evaluation`` script (Pont-Tuset et
al. 2017), which the paper uses for Table 2 (Sec. 4.1, "Evaluation"):

* sequences are the lines of ``ImageSets/2017/<split>.txt``, in file order;
* ground truth is ``Annotations/480p/<seq>/<id>.png``; 255 (void) becomes background,
  the objects are 1..max(first annotation), ids seen only later above that are ignored;
* the first and the last frame are not scored;
* results are ``<results>/<seq>/<id>.png`` label PNGs of the same size, fewer ids
  than objects meaning empty predictions;
* per object: J and F per frame, then mean, recall and decay (:mod:`dmmlib.evaluation.metrics`);
  the global table averages over all objects of all sequences.

Where the official script prints a message and exits with status 0 (a missing result
frame, an id above the object count), we raise :class:`DMMInputError` naming the file.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from dmmlib.data.davis import RESOLUTION, annotation_folder, frame_folder, read_split
from dmmlib.data.masks import VOID_LABEL, read_label_png
from dmmlib.errors import DMMInputError
from dmmlib.evaluation.metrics import Statistics, boundary_f, db_statistics, jaccard
from dmmlib.evaluation.results import (
    check_json_path,
    read_result,
    scores_json_text,
    write_scores_json,
)
from dmmlib.fileio import check_destinations, plain_name, staged_files

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


@dataclass(frozen=True)
class _SequenceJob:
    sequence: str
    annotation_paths: tuple[Path, ...]
    results_dir: Path


def _plan_sequence(davis_root: Path, results_dir: Path, sequence: str, resolution: str) -> _SequenceJob:
    """Check the folders of one sequence and list its annotations (cheap: no image is read)."""
    image_dir = frame_folder(davis_root, sequence, resolution)
    annotation_dir = annotation_folder(davis_root, sequence, resolution)
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
        pred[t] = read_result(job.results_dir / f"{path.stem}.png", shape, path, n_objects)
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
    resolution: str = RESOLUTION,
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
    """Where the official script puts its tables: inside the results folder (``split`` is a plain name)."""
    results_dir = Path(results_dir)
    split = plain_name(split, "split")
    return results_dir / f"global_results-{split}.csv", results_dir / f"per-sequence_results-{split}.csv"


def score_tables(result: DavisEvaluation):
    """The official global and per-sequence tables as pandas DataFrames."""
    table_g = pd.DataFrame([[result.global_scores[c] for c in GLOBAL_COLUMNS]], columns=list(GLOBAL_COLUMNS))
    table_s = pd.DataFrame(result.per_sequence_rows(), columns=list(PER_SEQUENCE_COLUMNS))
    return table_g, table_s


def output_paths(results_dir: str | os.PathLike, split: str, json_path: str | os.PathLike | None = None,
                 force: bool = False) -> dict[Path, str]:
    """``{path: what}`` of everything a DAVIS evaluation writes, each checked (:func:`dmmlib.fileio.check_destinations`).

    Call it before evaluating: a refusal then comes before the (long) evaluation, not after it.
    """
    global_path, sequence_path = csv_paths(results_dir, split)
    outputs = {global_path: "results table", sequence_path: "results table"}
    if json_path is not None:
        outputs[check_json_path(json_path, force)] = "JSON file"
    check_destinations(outputs, force)
    return outputs


def write_official_csvs(
    result: DavisEvaluation, results_dir: str | os.PathLike, split: str, force: bool = False,
    json_path: str | os.PathLike | None = None,
) -> tuple[Path, Path]:
    """Write ``global_results-<split>.csv`` and ``per-sequence_results-<split>.csv`` into ``results_dir``.

    Same bytes as the official ``to_csv(index=False, float_format="%.3f")``. With ``json_path``
    every figure also goes there at full precision (:func:`result_to_json_dict`). All files are
    checked first (:func:`output_paths`: existing ones are refused unless ``force``) and written
    all or nothing. Returns the two CSV paths.
    """
    output_paths(results_dir, split, json_path, force)
    global_path, sequence_path = csv_paths(results_dir, split)
    table_g, table_s = score_tables(result)
    with staged_files() as batch:
        table_g.to_csv(batch.path(global_path), index=False, float_format="%.3f")
        table_s.to_csv(batch.path(sequence_path), index=False, float_format="%.3f")
        if json_path is not None:
            batch.path(json_path).write_text(scores_json_text(result_to_json_dict(result)), encoding="utf-8")
    return global_path, sequence_path


def result_to_json_dict(result: DavisEvaluation) -> dict:
    """The figures at full precision: ``{"split", "global": {...}, "objects": [...]}`` (NaN stays NaN here)."""
    objects = [
        {
            "sequence": o.sequence, "object": o.object_id, "name": o.name, "frames": list(o.frames),
            "J": [float(v) for v in o.j], "F": [float(v) for v in o.f],
            "J-Mean": o.j_stats.mean, "J-Recall": o.j_stats.recall, "J-Decay": o.j_stats.decay,
            "F-Mean": o.f_stats.mean, "F-Recall": o.f_stats.recall, "F-Decay": o.f_stats.decay,
        }
        for o in result.objects
    ]
    return {"split": result.split, "global": {c: result.global_scores[c] for c in GLOBAL_COLUMNS}, "objects": objects}


def write_json(result: DavisEvaluation, path: str | os.PathLike, force: bool = False) -> Path:
    """Write :func:`result_to_json_dict` to ``path`` atomically (NaN as null); refuses to overwrite unless ``force``."""
    return write_scores_json(result_to_json_dict(result), path, force)
