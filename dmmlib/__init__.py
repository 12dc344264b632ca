"""dmmlib: the library behind *DMM-Net, the book*.

A reproduction of Zeng, Liao et al., "DMM-Net: Differentiable Mask-Matching
Network for Video Object Segmentation", ICCV 2019. The layers, from the bottom up
(imports only ever point down; ``tests/test_architecture.py`` enforces it):

**Base** -- :mod:`~dmmlib.errors` (``DMMInputError``), :mod:`~dmmlib.profiles` (the
``DMM_PROFILE`` switch), :mod:`~dmmlib.fileio` (atomic writes), :mod:`~dmmlib.torchio`,
:mod:`~dmmlib.device`, :mod:`~dmmlib.distributed`, :mod:`~dmmlib.info`.

**The paper's DMM-Net (the core)**

* :mod:`~dmmlib.projections` -- P1, P2, P3 (Eq. 5-7) and Dykstra's algorithm;
* :mod:`~dmmlib.matching` -- the differentiable matching layer, Alg. 1 (``dmm_match``), X~;
* :mod:`~dmmlib.matchers` -- Hungarian, greedy and Sinkhorn matching, for comparison;
* :mod:`~dmmlib.cost` -- the matching cost of Eq. 1 (cosine and IoU);
* :mod:`~dmmlib.features` -- f_theta, RoI-pooled conv2-5 features (Sec. 4.1);
* :mod:`~dmmlib.refinement` -- the ConvLSTM refinement head;
* :mod:`~dmmlib.model` -- ``DMMNet``: one frame step, Eq. 1 -> Alg. 1 -> Eq. 8 -> refinement;
* :mod:`~dmmlib.losses` -- the training losses.

**Around it** -- :mod:`dmmlib.data` (datasets, the synthetic benchmark, frames and masks),
:mod:`dmmlib.proposals` (the Mask R-CNN proposal network, its cache, proposal sources),
:mod:`dmmlib.evaluation` (DAVIS, YouTube-VOS and SegTrack v2 scores),
:mod:`~dmmlib.checkpoints`.

**Using it** -- :mod:`~dmmlib.train_config`, :mod:`~dmmlib.unrolled`, :mod:`~dmmlib.training`,
:mod:`~dmmlib.tracking` (the one tracking loop), :mod:`~dmmlib.online`,
:mod:`~dmmlib.predict` (one prediction path for all three benchmarks);
:mod:`dmmlib.commands` and :mod:`~dmmlib.cli` (``python -m dmmlib``).

**Teaching** -- :mod:`dmmlib.lessons`: what only the book's chapters use (toy problems,
the convergence explorer, Table 4's orchestration, chapter settings). The library never
imports it.

The names below are importable from ``dmmlib`` itself; submodules are imported on first
use, so ``import dmmlib`` stays cheap.
"""

from __future__ import annotations

from dmmlib.exports import lazy_exports

__version__ = "0.1.0"

#: The public API a reader meets first: name -> the module that defines it.
_EXPORTS = {
    "DMMInputError": "dmmlib.errors",
    "active_profile": "dmmlib.profiles",
    "by_profile": "dmmlib.profiles",
    "project_rows_sum_to_one": "dmmlib.projections",
    "project_columns_sum_at_most_one": "dmmlib.projections",
    "project_nonnegative": "dmmlib.projections",
    "dykstra_project": "dmmlib.projections",
    "constraint_violation": "dmmlib.projections",
    "dmm_match": "dmmlib.matching",
    "confident_assignment": "dmmlib.matching",
    "lp_objective": "dmmlib.matching",
    "PAPER_SETTINGS": "dmmlib.matching",
    "hungarian_match": "dmmlib.matchers",
    "greedy_match": "dmmlib.matchers",
    "sinkhorn_match": "dmmlib.matchers",
    "matching_cost": "dmmlib.cost",
    "FeatureExtractor": "dmmlib.features",
    "RefinementHead": "dmmlib.refinement",
    "DMMNet": "dmmlib.model",
    "ModelConfig": "dmmlib.model",
    "default_config": "dmmlib.model",
    "save_checkpoint": "dmmlib.checkpoints",
    "load_checkpoint": "dmmlib.checkpoints",
    "track": "dmmlib.tracking",
    "track_steps": "dmmlib.tracking",
    "TrackOptions": "dmmlib.tracking",
    "train": "dmmlib.training",
    "TrainConfig": "dmmlib.train_config",
    "load_config": "dmmlib.train_config",
    "online_finetune": "dmmlib.online",
    "predict_videos": "dmmlib.predict",
    "plan_videos": "dmmlib.predict",
}

__all__ = sorted([*_EXPORTS, "__version__"])


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
