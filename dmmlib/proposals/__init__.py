"""Mask proposals: the per-frame input DMM-Net matches against (Sec. 3, Sec. 4.1).

* :mod:`~dmmlib.proposals.frames` -- :class:`FrameProposals` (boxes, scores, box masks) and pasting;
* :mod:`~dmmlib.proposals.net` -- :class:`ProposalNet`, a class-agnostic torchvision Mask R-CNN;
* :mod:`~dmmlib.proposals.train` -- training it on a benchmark in the DAVIS layout;
* :mod:`~dmmlib.proposals.cache` -- :class:`ProposalCache`, the off-line store;
* :mod:`~dmmlib.proposals.compute` -- filling the cache for a split;
* :mod:`~dmmlib.proposals.recall` -- top-k recall of the annotated objects;
* :mod:`~dmmlib.proposals.oracle` -- proposals cut from ground truth (tests, ablations);
* :mod:`~dmmlib.proposals.sources` -- :class:`FrameQuery` and the proposal sources every caller uses.

Imports point one way: sources -> net, cache, oracle -> frames; train and compute sit on net.
"""

from __future__ import annotations

from dmmlib.exports import lazy_exports

_EXPORTS = {
    "TOP_K": "dmmlib.proposals.frames",
    "DEFAULT_MASK_SIZE": "dmmlib.proposals.frames",
    "FrameProposals": "dmmlib.proposals.frames",
    "ProposalNet": "dmmlib.proposals.net",
    "ProposalCache": "dmmlib.proposals.cache",
    "compute_proposals": "dmmlib.proposals.compute",
    "proposal_recall": "dmmlib.proposals.recall",
    "best_proposal_iou": "dmmlib.proposals.recall",
    "proposals_from_labels": "dmmlib.proposals.oracle",
    "instance_proposals": "dmmlib.proposals.oracle",
    "IdealProposals": "dmmlib.proposals.oracle",
    "random_box_proposals": "dmmlib.proposals.oracle",
    "FrameQuery": "dmmlib.proposals.sources",
    "cached_source": "dmmlib.proposals.sources",
    "network_source": "dmmlib.proposals.sources",
    "oracle_source": "dmmlib.proposals.sources",
    "instance_source": "dmmlib.proposals.sources",
    "ProposalTrainConfig": "dmmlib.proposals.train",
    "train_proposal_net": "dmmlib.proposals.train",
    "load_proposal_net": "dmmlib.proposals.train",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
