"""Proposal sources: the one way every part of dmmlib asks for a frame's proposals.

Training, online learning, tracking and prediction all call a *proposal source*
with a :class:`FrameQuery` and get :class:`~dmmlib.proposals.FrameProposals` back::

    source(FrameQuery(sequence, index, name, image, labels=..., instances=..., rng=...))

The query carries everything a source may look at; each source uses what it needs:

* :func:`network_source` -- DMM-Net's proposal network run on ``image`` (Sec. 3);
* :func:`cached_source` -- the off-line cache, looked up by ``(sequence, name)`` (and
  warped like the query's image when it carries a ``transform``); frames it lacks are
  computed by a fallback network or are an error;
* :func:`oracle_source` -- :func:`~dmmlib.proposals.proposals_from_labels` on the
  ground truth ``labels`` (an ablation: matching given near-perfect proposals);
* :func:`instance_source` -- the idealised proposal network on ``instances``
  (every object of the synthetic benchmark, look-alikes included);
* :func:`list_source` -- a list of FrameProposals indexed by frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from dmmlib.errors import DMMInputError
from dmmlib.proposals.cache import ProposalCache
from dmmlib.proposals.frames import FrameProposals
from dmmlib.proposals.net import ProposalNet
from dmmlib.proposals.oracle import (
    IdealProposals,
    instance_proposals,
    proposals_from_labels,
)


@dataclass
class FrameQuery:
    """One frame, as a proposal source sees it.

    ``sequence``: the video's name; ``index``: the frame's index in it; ``name``: the frame's
    file stem (the cache key; ``%05d`` of the index where frames have no names);
    ``image``: float ``[3, H, W]`` in [0, 1] (any device); ``labels`` / ``instances``: the
    frame's ground-truth label / instance map uint8 ``[H, W]`` when known (oracle sources);
    ``rng``: the generator a random source draws from (fixed per clip and frame in training);
    ``transform``: when ``image`` is a warped copy of the stored frame (a training clip's
    resize and axis-aligned augmentation), the 2x3 matrix from the stored frame's pixel
    centres to ``image``'s -- cached proposals are warped by it to fit ``image``.
    """

    sequence: str
    index: int
    name: str
    image: torch.Tensor
    labels: np.ndarray | None = None
    instances: np.ndarray | None = None
    rng: np.random.Generator | None = None
    transform: np.ndarray | None = None


ProposalSource = Callable[[FrameQuery], FrameProposals]


def network_source(net: ProposalNet) -> ProposalSource:
    """Proposals computed by ``net`` on the query's image."""

    def from_network(query: FrameQuery) -> FrameProposals:
        return net.propose(query.image)

    return from_network


def cached_source(cache: ProposalCache, fallback: ProposalNet | None = None) -> ProposalSource:
    """Proposals read from ``cache`` by ``(query.sequence, query.name)``; missing ones from ``fallback``."""

    def from_cache(query: FrameQuery) -> FrameProposals:
        found = cache.get(query.sequence, query.name)
        if found is not None and query.transform is not None:
            return found.transformed(query.transform, tuple(query.image.shape[-2:]))
        if found is not None:
            return found
        if fallback is None:
            raise DMMInputError(
                f"proposal cache {cache.root} has no proposals for {query.sequence}/{query.name}; fill it with "
                f"`python -m dmmlib proposals compute` or pass a proposal network for missing frames"
            )
        return fallback.propose(query.image)

    return from_cache


def _need(query: FrameQuery, field: str, source: str):
    value = getattr(query, field)
    if value is None:
        raise DMMInputError(f"{source} proposals need the frame's {field} (ground truth); "
                            f"frame {query.name} of {query.sequence} has none")
    return np.asarray(value)


def _rng(query: FrameQuery) -> np.random.Generator:
    return query.rng if query.rng is not None else np.random.default_rng([query.index])


def oracle_source(n_noise: int = 8, jitter: float = 0.1) -> ProposalSource:
    """:func:`~dmmlib.proposals.proposals_from_labels` on the query's ground-truth labels (an ablation)."""

    def oracle(query: FrameQuery) -> FrameProposals:
        labels = _need(query, "labels", "oracle").astype(np.uint8)
        return proposals_from_labels(labels, n_noise=n_noise, jitter=jitter, rng=_rng(query))

    return oracle


def instance_source(settings: IdealProposals = IdealProposals()) -> ProposalSource:
    """The idealised proposal network (:func:`~dmmlib.proposals.instance_proposals`) on the query's instance map."""

    def idealised(query: FrameQuery) -> FrameProposals:
        return instance_proposals(_need(query, "instances", "instance").astype(np.int64), _rng(query), settings)

    return idealised


def list_source(proposals: Sequence[FrameProposals]) -> ProposalSource:
    """``proposals[query.index]`` (entry 0, the first frame's, is never asked for when tracking)."""

    def from_list(query: FrameQuery) -> FrameProposals:
        if query.index >= len(proposals):
            raise DMMInputError(f"proposals list has {len(proposals)} entries; frame {query.index} has none")
        return proposals[query.index]

    return from_list


def as_source(proposals) -> ProposalSource:
    """A proposal source from what a user passes: a source, a ProposalCache, a ProposalNet or a list."""
    if isinstance(proposals, ProposalCache):
        return cached_source(proposals)
    if isinstance(proposals, ProposalNet):
        return network_source(proposals)
    if isinstance(proposals, (list, tuple)):
        return list_source(proposals)
    if callable(proposals):
        return proposals
    raise DMMInputError(
        f"proposals must be a proposal source, a ProposalCache, a ProposalNet or a list; got {type(proposals).__name__}"
    )
