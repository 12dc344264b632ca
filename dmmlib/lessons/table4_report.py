"""Reading Table 4's runs (chapters 9 and 11): summaries per difficulty, paired comparisons, targets, curves.

Everything here works on the two long tables of :func:`dmmlib.lessons.table4.run_table4`
(``objects``: per seed, row, video and object J, F, JF; ``videos``: per seed, row and
video the tracking diagnostics) and on trained units
(:func:`dmmlib.lessons.book_models.train_unit`); it computes nothing expensive.

Comparisons are paired by seed and video, with an interval that covers both
(:func:`dmmlib.lessons.stats.paired_difference`); figures are in points (percent). The paper's
claims are judged by the one rule of :mod:`dmmlib.lessons.verdicts`.
"""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from dmmlib.lessons.stats import PairedEstimate, mean_without_interval, no_estimate, paired_difference
from dmmlib.lessons.table4 import ABLATIONS, PAPER_ROWS, ROW_LABELS, ROWS
from dmmlib.lessons.verdicts import outcome, point_outcome, verdict

DIFFICULTY_ORDER = ("all", "lookalike", "crossing")
# The paper's Table 4 (YouTube-VOS train-val split, J_M / F_M in %); proposal net X101 throughout.
# The paper has no unroll-1 row.
PAPER_TABLE4 = {
    "greedy": (57.1, 68.1),
    "hungarian": (57.3, 68.4),
    "dmm-frozen": (57.3, 68.3),
    "ft-unroll1": (None, None),
    "ft-unroll2": (59.0, 71.7),
    "ft-unroll3": (58.2, 71.4),
}
PAPER_OTHER_ROWS = {  # rows of Table 4 we do not run (other proposal networks)
    "fine-tuned, unroll 2, proposal net R50": (58.5, 71.4),
    "fine-tuned, unroll 2, proposal net fine-tuned on YouTube-VOS": (60.2, 73.0),
}


def _subset(objects: pd.DataFrame, difficulty: str) -> pd.DataFrame:
    return objects if difficulty == "all" else objects[objects["difficulty"] == difficulty]


def row_scores(objects: pd.DataFrame, row: str, difficulty: str = "all", metric: str = "JF") -> np.ndarray:
    """Per seed: the mean of ``metric`` over the objects of ``row`` (of one difficulty), in points."""
    part = _subset(objects[objects["row"] == row], difficulty)
    return 100 * part.groupby("seed")[metric].mean().to_numpy(dtype=float)


def summary_table(objects: pd.DataFrame, rows: tuple[str, ...] = ROWS + ABLATIONS) -> pd.DataFrame:
    """Per row: J&F per difficulty (mean over seeds of the object mean), J and F over all videos, seeds.

    Also the seeds' standard deviation of J&F (``JF std``) and the paper's J_M / F_M where it has the row.
    """
    out = []
    for row in rows:
        if row not in set(objects["row"]):
            continue
        entry = {"row": row, "label": ROW_LABELS[row], "seeds": int(objects[objects["row"] == row]["seed"].nunique())}
        for difficulty in DIFFICULTY_ORDER:
            entry[f"J&F {difficulty}"] = float(row_scores(objects, row, difficulty).mean())
        seeds = row_scores(objects, row)
        entry["J&F std"] = float(seeds.std(ddof=1)) if len(seeds) > 1 else float("nan")
        entry["J"] = float(row_scores(objects, row, metric="J").mean())
        entry["F"] = float(row_scores(objects, row, metric="F").mean())
        entry["paper J_M"], entry["paper F_M"] = PAPER_TABLE4.get(row, (None, None))
        out.append(entry)
    return pd.DataFrame(out).set_index("row")


def _estimate(sums: pd.DataFrame, counts: pd.Series) -> PairedEstimate:
    """:func:`paired_difference` in points; with one video only the mean (no interval can be formed)."""
    estimate = paired_difference if sums.shape[1] >= 2 else mean_without_interval
    return estimate(sums.to_numpy(), counts.to_numpy()).scaled(100)


def contrast(objects: pd.DataFrame, weights: dict[str, float], difficulty: str = "all",
             metric: str = "JF") -> PairedEstimate:
    """A paired contrast ``sum_r weights[r] * score(r)`` per object, over seeds and videos (points).

    ``{"a": 1, "b": -1}`` is the paired difference a - b. Only the seeds every row has are used.
    """
    part = _subset(objects[objects["row"].isin(list(weights))], difficulty)
    seeds = sorted(set.intersection(*(set(part[part["row"] == r]["seed"]) for r in weights)))
    part = part[part["seed"].isin(seeds)]
    if part.empty:  # no video of this difficulty (a small profile): nothing to estimate
        return no_estimate(len(seeds))
    videos = sorted(part["video"].unique())
    sums = part.assign(weighted=part[metric] * part["row"].map(weights)).pivot_table(
        index="seed", columns="video", values="weighted", aggfunc="sum").reindex(index=seeds, columns=videos)
    reference = next(iter(weights))
    counts = part[(part["row"] == reference) & (part["seed"] == seeds[0])].groupby("video").size().reindex(videos)
    return _estimate(sums, counts)


def compare(objects: pd.DataFrame, row: str, reference: str, difficulty: str = "all",
            metric: str = "JF") -> PairedEstimate:
    """``row - reference`` of ``metric`` in points, paired by seed and video (:func:`contrast`)."""
    return contrast(objects, {row: 1.0, reference: -1.0}, difficulty, metric)


def refinement_gain(videos: pd.DataFrame, row: str, difficulty: str = "all") -> PairedEstimate:
    """Mean IoU of the output minus that of the matched proposal it started from, over the visible
    (frame, object) pairs of ``row``, in points, paired over seeds and videos."""
    part = _subset(videos[videos["row"] == row], difficulty)
    if part.empty or part["pairs"].sum() == 0:
        return no_estimate(int(part["seed"].nunique()))
    seeds, names = sorted(part["seed"].unique()), sorted(part["video"].unique())
    gain = part.assign(d=(part["output_iou"] - part["matched_iou"]).fillna(0.0) * part["pairs"])
    sums = gain.pivot_table(index="seed", columns="video", values="d", aggfunc="sum").reindex(index=seeds, columns=names)
    counts = part[part["seed"] == seeds[0]].set_index("video")["pairs"].reindex(names)
    return _estimate(sums, counts)


def targets(objects: pd.DataFrame, videos: pd.DataFrame) -> pd.DataFrame:
    """The book's three targets for the fine-tuned model (unroll 2): estimate, 95 % interval, :func:`target_status`.

    * ``gap``: J&F(ft) - (J&F(static) + J&F(ceiling)) / 2 > 0: at least half of the gap between the
      static baseline and the matching ceiling closed;
    * ``refinement``: mean IoU of the refined output - that of the matched proposal > 0;
    * ``appearance``: on the crossing videos, J&F(ft) - J&F(IoU only) > 0.
    """
    static, ceiling, tuned = (row_scores(objects, r).mean() for r in ("static", "ceiling", "ft-unroll2"))
    rows = [
        ("gap", "closes at least half of the gap between the static baseline and the matching ceiling (J&F)",
         contrast(objects, {"ft-unroll2": 1.0, "static": -0.5, "ceiling": -0.5}),
         f"{(tuned - static) / max(ceiling - static, 1e-9):.0%} of the gap closed"),
        ("refinement", "its refined output beats the matched proposal it started from (mean IoU)",
         refinement_gain(videos, "ft-unroll2"), "IoU points"),
        ("appearance", "on the crossing videos, the learned cost beats IoU-only matching (J&F)",
         compare(objects, "ft-unroll2", "iou-only", "crossing"), "J&F points"),
    ]
    out = [{"target": name, "statement": text, "estimate": e.mean, "low": e.low, "high": e.high,
            "status": target_status(e), "met": bool(e.low > 0), "note": note} for name, text, e, note in rows]
    return pd.DataFrame(out).set_index("target")


def target_status(estimate: PairedEstimate) -> str:
    """"met" when the whole 95 % interval is above zero, "missed" when it is below, else "not resolved"."""
    if estimate.low > 0:
        return "met"
    if estimate.high < 0:
        return "missed"
    return "not resolved" if np.isfinite(estimate.mean) else "no data"


def comparisons(objects: pd.DataFrame, pairs) -> pd.DataFrame:
    """One line per (row, reference) pair and difficulty: the paired J&F difference, its interval, the paper's."""
    out = []
    for row, reference in pairs:
        paper = None
        if PAPER_TABLE4.get(row, (None,))[0] is not None and PAPER_TABLE4.get(reference, (None,))[0] is not None:
            paper = round(PAPER_TABLE4[row][0] - PAPER_TABLE4[reference][0], 2)
        for difficulty in DIFFICULTY_ORDER:
            e = compare(objects, row, reference, difficulty)
            out.append({"row": row, "reference": reference, "difficulty": difficulty, "difference": e.mean,
                        "low": e.low, "high": e.high, "se": e.se, "df": e.df, "seeds": e.n_seeds,
                        "videos": e.n_videos, "outcome": outcome(e), "paper J_M difference": paper})
    return pd.DataFrame(out)


#: A held-out curve has flattened when the line through its late part changes it by less than this
#: share of the whole run's change (``flatness(...)["late_share"]``, in absolute value).
FLAT_SHARE = 0.2


def flattened(heldout: list[dict], key: str = "loss") -> bool:
    """Whether the held-out curve of ``key`` has flattened by the book's rule (:data:`FLAT_SHARE`)."""
    return bool(abs(flatness(heldout, key)["late_share"]) < FLAT_SHARE)


def flatness(heldout: list[dict], key: str = "loss", late: float = 0.4) -> dict:
    """How flat a held-out curve of ``key`` (the loss, or one of its logged parts) ends: a line fitted to
    the last ``late`` fraction of the steps.

    Returns the first and last held-out loss, the total change, the change the fitted line
    makes over that last part (``late_change``) and its share of the total (``late_share``):
    near 0 when the curve has flattened, near ``late`` when it still falls as fast as on average.
    """
    steps = np.array([r["step"] for r in heldout], dtype=float)
    loss = np.array([r[key] for r in heldout], dtype=float)
    tail = steps >= steps.max() * (1 - late)
    slope = np.polyfit(steps[tail], loss[tail], 1)[0] if tail.sum() >= 2 else float("nan")
    late_change = slope * steps.max() * late
    total = loss[-1] - loss[0]
    return {"first": float(loss[0]), "last": float(loss[-1]), "total_change": float(total),
            "late_change": float(late_change), "late_share": float(late_change / total) if total else float("nan")}


def plot_learning_curves(units: dict, axes=None, smooth: int = 5):
    """Training loss (thin: per step, thick: running mean) and held-out loss (dots) of each unit, one panel per unit."""
    if axes is None:
        _, axes = plt.subplots(1, len(units), figsize=(3.3 * len(units), 2.8), squeeze=False)
        axes = axes[0]
    for ax, (name, unit) in zip(axes, units.items()):
        steps = np.array([r["step"] for r in unit.log])
        loss = np.array([r["loss"] for r in unit.log], dtype=float)
        ax.plot(steps, loss, color="tab:blue", alpha=0.25, lw=1)
        if len(loss) >= smooth:
            ax.plot(steps[smooth - 1:], np.convolve(loss, np.ones(smooth) / smooth, "valid"), color="tab:blue",
                    lw=2, label="training loss")
        held = unit.heldout
        ax.plot([r["step"] for r in held], [r["loss"] for r in held], "o-", color="tab:red", ms=4,
                label="held-out loss (val clips)")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    axes[0].figure.tight_layout()
    return axes[0].figure


def plot_rows(objects: pd.DataFrame, rows: tuple[str, ...] = ROWS, ax=None):
    """J&F per row and difficulty: one dot per seed, a bar at the mean."""
    if ax is None:
        _, ax = plt.subplots(figsize=(10, 3.6))
    colours = {"all": "tab:blue", "lookalike": "tab:green", "crossing": "tab:orange"}
    for k, row in enumerate(rows):
        for d, difficulty in enumerate(DIFFICULTY_ORDER):
            values = row_scores(objects, row, difficulty)
            x = k + (d - 1) * 0.25
            ax.scatter(np.full(len(values), x), values, s=12, color=colours[difficulty], zorder=3,
                       label=difficulty if k == 0 else None)
            ax.hlines(values.mean(), x - 0.1, x + 0.1, color=colours[difficulty], lw=2)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([ROW_LABELS[r].replace(", ", ",\n").replace(" (", "\n(") for r in rows], fontsize=7)
    ax.set_ylabel("J&F on val (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, title="videos", title_fontsize=8)
    return ax.figure


def report_card_rows(objects: pd.DataFrame, rows: tuple[str, ...] = ROWS + ABLATIONS) -> list[dict]:
    """Table 4 for the report card: per row and difficulty J&F, J and F (points, mean over seeds) and the seeds."""
    out = []
    for row in rows:
        if row not in set(objects["row"]):
            continue
        for difficulty in DIFFICULTY_ORDER:
            out.append({"row": row, "label": ROW_LABELS[row], "difficulty": difficulty,
                        "J&F": round(float(row_scores(objects, row, difficulty).mean()), 2),
                        "J": round(float(row_scores(objects, row, difficulty, "J").mean()), 2),
                        "F": round(float(row_scores(objects, row, difficulty, "F").mean()), 2),
                        "seeds": int(objects[objects["row"] == row]["seed"].nunique()),
                        "paper row": row in PAPER_ROWS})
    return out


# The paper's claims about Table 4 (Sec. 4.3), as paired comparisons: (row, reference, expected outcome, claim, quote).
CLAIMS = (
    ("dmm-frozen", "hungarian", "alike", "at inference, the matching layer performs like the optimal (Hungarian) matching",
     "our matching layer has similar performance compared to the optimal matching"),
    ("dmm-frozen", "greedy", "better", "at inference, the matching layer is superior to greedy matching",
     "and is superior to the greedy one during inference"),
    ("ft-unroll2", "dmm-frozen", "better", "fine-tuning end to end through the layer improves the model",
     "the performance is improved significantly"),
    ("ft-unroll3", "ft-unroll2", "not better", "unrolling more than 2 frames in training does not help",
     "unrolling more than 2 step seems not helpful"),
)


def claim_checks(objects: pd.DataFrame) -> pd.DataFrame:
    """One line per claim of :data:`CLAIMS`: our paired J&F difference over all val videos, its interval,
    its outcome and verdict (:mod:`dmmlib.lessons.verdicts`), and the paper's J_M difference with the
    outcome the same rule gives it (read as exact: the paper reports no interval)."""
    out = []
    for row, reference, expected, claim, quote in CLAIMS:
        estimate = compare(objects, row, reference)
        paper = round(PAPER_TABLE4[row][0] - PAPER_TABLE4[reference][0], 2)
        result = outcome(estimate)
        out.append({"row": row, "reference": reference, "claim": claim, "quote": quote, "expected": expected,
                    "difference": estimate.mean, "low": estimate.low, "high": estimate.high, "df": estimate.df,
                    "seeds": estimate.n_seeds, "videos": estimate.n_videos, "outcome": result,
                    "paper J_M difference": paper, "paper outcome": point_outcome(paper),
                    "verdict": verdict(result, expected)})
    return pd.DataFrame(out)
