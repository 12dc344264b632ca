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

Sources are small picklable objects, so DataLoader workers can run the host-side ones
(see ``in_workers`` below); :func:`propose_all` asks a network for a whole batch at once.
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
    ``image``: float ``[3, H, W]`` in [0, 1] or uint8 ``[3, H, W]`` (any device); ``labels`` / ``instances``: the
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

# Two optional attributes of a source (plain callables have neither):
# * ``batch(queries) -> list[FrameProposals]`` answers many queries at once (a network: one forward pass);
# * ``in_workers = True`` says it works on the host alone (ground truth, files), so a DataLoader's
#   worker processes may call it; a source that runs a network on a GPU stays in the main process.


def propose_all(source: ProposalSource, queries: Sequence[FrameQuery]) -> list[FrameProposals]:
    """``[source(q) for q in queries]``, in one call when the source answers batches (:func:`network_source`)."""
    batch = getattr(source, "batch", None)
    return list(batch(list(queries))) if batch is not None and queries else [source(q) for q in queries]


@dataclass
class _NetworkSource:
    net: ProposalNet
    in_workers = False

    def __call__(self, query: FrameQuery) -> FrameProposals:
        return self.net.propose(query.image)

    def batch(self, queries: list[FrameQuery]) -> list[FrameProposals]:
        """One forward pass per frame size (a training batch's frames share one)."""
        found: dict[int, FrameProposals] = {}
        by_size: dict[tuple, list[int]] = {}
        for k, query in enumerate(queries):
            by_size.setdefault(tuple(query.image.shape), []).append(k)
        for members in by_size.values():
            found.update(zip(members, self.net.propose_batch([queries[k].image for k in members])))
        return [found[k] for k in range(len(queries))]


def network_source(net: ProposalNet) -> ProposalSource:
    """Proposals computed by ``net`` on the query's image (on the net's device; batches in one forward pass)."""
    return _NetworkSource(net)


@dataclass
class _CachedSource:
    cache: ProposalCache
    fallback: ProposalNet | None = None

    @property
    def in_workers(self) -> bool:
        return self.fallback is None  # reading files is host work; a fallback network is not

    def __call__(self, query: FrameQuery) -> FrameProposals:
        found = self.cache.get(query.sequence, query.name)
        if found is not None and query.transform is not None:  # a warped copy of the stored frame
            return found.transformed(query.transform, tuple(query.image.shape[-2:]))
        if found is not None:
            return found
        if self.fallback is None:
            raise DMMInputError(
                f"proposal cache {self.cache.root} has no proposals for {query.sequence}/{query.name}; fill it with "
                f"`python -m dmmlib proposals compute` or pass a proposal network for missing frames"
            )
        return self.fallback.propose(query.image)


def cached_source(cache: ProposalCache, fallback: ProposalNet | None = None) -> ProposalSource:
    """Proposals read from ``cache`` by ``(query.sequence, query.name)``; missing ones from ``fallback``."""
    return _CachedSource(cache, fallback)


def _need(query: FrameQuery, field: str, source: str):
    value = getattr(query, field)
    if value is None:
        raise DMMInputError(f"{source} proposals need the frame's {field} (ground truth); "
                            f"frame {query.name} of {query.sequence} has none")
    return np.asarray(value)


def _rng(query: FrameQuery) -> np.random.Generator:
    return query.rng if query.rng is not None else np.random.default_rng([query.index])


@dataclass
class _OracleSource:
    n_noise: int
    jitter: float
    in_workers = True

    def __call__(self, query: FrameQuery) -> FrameProposals:
        labels = _need(query, "labels", "oracle").astype(np.uint8)
        return proposals_from_labels(labels, n_noise=self.n_noise, jitter=self.jitter, rng=_rng(query))


def oracle_source(n_noise: int = 8, jitter: float = 0.1) -> ProposalSource:
    """:func:`~dmmlib.proposals.proposals_from_labels` on the query's ground-truth labels (an ablation)."""
    return _OracleSource(n_noise, jitter)


@dataclass
class _InstanceSource:
    settings: IdealProposals
    in_workers = True

    def __call__(self, query: FrameQuery) -> FrameProposals:
        return instance_proposals(_need(query, "instances", "instance").astype(np.int64), _rng(query), self.settings)


def instance_source(settings: IdealProposals = IdealProposals()) -> ProposalSource:
    """The idealised proposal network (:func:`~dmmlib.proposals.instance_proposals`) on the query's instance map."""
    return _InstanceSource(settings)


@dataclass
class _ListSource:
    proposals: Sequence[FrameProposals]
    in_workers = True

    def __call__(self, query: FrameQuery) -> FrameProposals:
        if query.index >= len(self.proposals):
            raise DMMInputError(f"proposals list has {len(self.proposals)} entries; frame {query.index} has none")
        return self.proposals[query.index]


def list_source(proposals: Sequence[FrameProposals]) -> ProposalSource:
    """``proposals[query.index]`` (entry 0, the first frame's, is never asked for when tracking)."""
    return _ListSource(proposals)


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
