"""Scoring results the way the benchmarks do: DAVIS 2017, YouTube-VOS and SegTrack v2.

* :mod:`~dmmlib.evaluation.metrics` -- J, F, recall, decay, G, mIoU* / mIoU† on arrays;
* :mod:`~dmmlib.evaluation.davis` -- the official DAVIS 2017 semi-supervised evaluation
  of a results folder (tables as the official script writes them);
* :mod:`~dmmlib.evaluation.youtube_vos` -- J / F seen and unseen, G, on a split with ground truth;
* :mod:`~dmmlib.evaluation.segtrack` -- mIoU* and mIoU† (Table 3);
* :mod:`~dmmlib.evaluation.results` -- reading result PNGs and writing score files, for all three.
"""

from __future__ import annotations

from dmmlib.exports import lazy_exports

_EXPORTS = {
    "jaccard": "dmmlib.evaluation.metrics",
    "boundary_f": "dmmlib.evaluation.metrics",
    "db_statistics": "dmmlib.evaluation.metrics",
    "evaluate_davis": "dmmlib.evaluation.davis",
    "write_official_csvs": "dmmlib.evaluation.davis",
    "evaluate_youtube_vos": "dmmlib.evaluation.youtube_vos",
    "evaluate_segtrack": "dmmlib.evaluation.segtrack",
    "write_scores_json": "dmmlib.evaluation.results",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
