"""How fast is the DAVIS evaluator? A synthetic DAVIS-2017-val-sized set, timed end to end.

Builds (untimed, in a temporary folder) 30 sequences, about 2,000 frames at 480x854 in
all and 2 objects per sequence, whose "results" are the ground truth shifted, eroded or
dilated, sometimes lost. Then times ``evaluate_davis`` including PNG reading, and, side
by side on the first few sequences, a naive per-frame evaluator written straight from
the definitions (full-frame boundary maps, scipy ``binary_dilation``), printing the
speed-up as a ratio and checking both give the same numbers.

    .venv/bin/python benchmarks/metrics.py [--sequences 30] [--frames 2000] [--naive-sequences 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

from dmmlib.data.masks import read_label_png, write_label_png
from dmmlib.evaluation.davis import evaluate_davis
from dmmlib.evaluation.metrics import boundary_tolerance, db_statistics

HEIGHT, WIDTH = 480, 854


def ellipse(rows, cols, centre, radii):
    return ((rows - centre[0]) / radii[0]) ** 2 + ((cols - centre[1]) / radii[1]) ** 2 <= 1.0


def perturb(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A plausible tracker output: the mask shifted a few pixels, grown or shrunk, sometimes lost."""
    if rng.random() < 0.03:
        return np.zeros_like(mask)
    dy, dx = rng.integers(-6, 7, size=2)
    moved = np.roll(mask, (int(dy), int(dx)), axis=(0, 1))
    grow = int(rng.integers(-3, 4))
    if grow == 0:
        return moved
    kernel = disk(abs(grow)).astype(np.uint8)
    change = cv2.dilate if grow > 0 else cv2.erode
    return change(moved.view(np.uint8), kernel).view(bool)


def build_dataset(root: Path, results: Path, n_sequences: int, n_frames: int, seed: int) -> int:
    """Write the synthetic set; returns the number of objects."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:HEIGHT, 0:WIDTH]
    lengths = rng.multinomial(n_frames - 3 * n_sequences, np.ones(n_sequences) / n_sequences) + 3
    names = [f"seq{index:02d}" for index in range(n_sequences)]
    n_objects = 0
    for name, length in zip(names, lengths):
        image_dir = root / "JPEGImages" / "480p" / name
        image_dir.mkdir(parents=True)
        objects = int(rng.choice([1, 2, 2, 3]))
        n_objects += objects
        starts = rng.uniform([60, 100], [HEIGHT - 60, WIDTH - 100], size=(objects, 2))
        velocities = rng.uniform(-2, 2, size=(objects, 2))
        radii = rng.uniform([15, 20], [140, 200], size=(objects, 2))
        for t in range(length):
            (image_dir / f"{t:05d}.jpg").touch()  # the evaluator only counts the frames
            gt = np.zeros((HEIGHT, WIDTH), np.uint8)
            pred = np.zeros_like(gt)
            for k in range(objects):
                mask = ellipse(rows, cols, starts[k] + t * velocities[k], radii[k])
                gt[mask] = k + 1
                pred[perturb(mask, rng)] = k + 1
            write_label_png(root / "Annotations" / "480p" / name / f"{t:05d}.png", gt)
            if 0 < t < length - 1:
                write_label_png(results / name / f"{t:05d}.png", pred)
    (root / "ImageSets" / "2017").mkdir(parents=True)
    (root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
    return n_objects


def naive_boundary(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, ((0, 1), (0, 1)), mode="edge")
    here = padded[:-1, :-1]
    return (here != padded[:-1, 1:]) | (here != padded[1:, :-1]) | (here != padded[1:, 1:])


def naive_f(gt: np.ndarray, pred: np.ndarray) -> float:
    footprint = disk(int(boundary_tolerance(gt.shape))).astype(bool)
    gb, pb = naive_boundary(gt), naive_boundary(pred)
    n_gt, n_pred = gb.sum(), pb.sum()
    if n_gt == 0 or n_pred == 0:
        precision = 0.0 if n_gt == 0 and n_pred > 0 else 1.0
        recall = 0.0 if n_pred == 0 and n_gt > 0 else 1.0
    else:
        precision = (pb & binary_dilation(gb, footprint)).sum() / n_pred
        recall = (gb & binary_dilation(pb, footprint)).sum() / n_gt
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def naive_evaluate(root: Path, results: Path, names: list[str]) -> list[float]:
    """Per-object J-Mean and F-Mean, one frame and one object at a time."""
    means = []
    for name in names:
        annotations = sorted((root / "Annotations" / "480p" / name).glob("*.png"))
        first = read_label_png(annotations[0])
        n_objects = int(np.where(first == 255, 0, first).max())
        scores = {k: ([], []) for k in range(1, n_objects + 1)}
        for path in annotations[1:-1]:
            gt = read_label_png(path)
            pred = read_label_png(results / name / path.name)
            for k, (js, fs) in scores.items():
                g, p = gt == k, pred == k
                union = (g | p).sum()
                js.append(1.0 if union == 0 else (g & p).sum() / union)
                fs.append(naive_f(g, p))
        for js, fs in scores.values():
            means += [db_statistics(js).mean, db_statistics(fs).mean]
    return means


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sequences", type=int, default=30)
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--naive-sequences", type=int, default=2, help="sequences timed with the naive evaluator")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dmm-metrics-bench-") as tmp:
        root, results = Path(tmp) / "DAVIS", Path(tmp) / "results"
        start = time.perf_counter()
        n_objects = build_dataset(root, results, args.sequences, args.frames, args.seed)
        print(f"built {args.sequences} sequences, {args.frames} frames of {HEIGHT}x{WIDTH}, {n_objects} objects "
              f"in {time.perf_counter() - start:.1f} s (not timed below); {os.cpu_count()} cores")

        start = time.perf_counter()
        result = evaluate_davis(root, results, progress=False, workers=args.workers)
        total = time.perf_counter() - start
        scored = args.frames - 2 * args.sequences
        print(f"evaluate_davis, all sequences: {total:.1f} s = {scored / total:.0f} scored frames/s "
              f"({len(result.objects)} objects; J&F-Mean {result.global_scores['J&F-Mean']:.3f})")

        if args.naive_sequences > 0:
            names = [f"seq{index:02d}" for index in range(args.naive_sequences)]
            subset_root = Path(tmp) / "subset"
            (subset_root / "ImageSets" / "2017").mkdir(parents=True)
            for sub in ("JPEGImages", "Annotations"):
                (subset_root / sub).symlink_to(root / sub)
            (subset_root / "ImageSets" / "2017" / "val.txt").write_text("\n".join(names) + "\n")
            start = time.perf_counter()
            fast = evaluate_davis(subset_root, results, progress=False, workers=1)
            fast_time = time.perf_counter() - start
            start = time.perf_counter()
            slow_means = naive_evaluate(root, results, names)
            slow_time = time.perf_counter() - start
            fast_means = [v for o in fast.objects for v in (o.j_stats.mean, o.f_stats.mean)]
            assert np.allclose(fast_means, slow_means, rtol=0, atol=1e-12), (fast_means, slow_means)
            print(f"first {len(names)} sequences, one worker: evaluate_davis {fast_time:.2f} s, "
                  f"naive per-frame {slow_time:.2f} s, ratio {slow_time / fast_time:.1f}x (same J/F means)")


if __name__ == "__main__":
    main()
