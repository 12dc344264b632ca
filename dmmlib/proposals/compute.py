"""Filling the proposal cache: run the proposal network over every frame of a split (Sec. 3, off-line)."""

from __future__ import annotations

import os
from pathlib import Path

from tqdm.auto import tqdm

from dmmlib.data.davis import frame_files, read_split
from dmmlib.data.images import read_frame
from dmmlib.distributed import World, world_from_env
from dmmlib.fileio import check_apart, staged_folder
from dmmlib.proposals.cache import ProposalCache, check_claim, claim_cache
from dmmlib.proposals.net import ProposalNet


def _compute_sequence(net: ProposalNet, cache: ProposalCache, seq: str, frames: list[Path], batch_size: int,
                      source: dict, bar) -> None:
    """The proposals of ``frames`` of ``seq``, staged and moved into the cache when all are done."""
    folder = cache.path(seq, 0).parent  # checks the name
    with staged_folder(folder) as staging:  # a failure mid-sequence leaves nothing of it
        for start in range(0, len(frames), batch_size):
            chunk = frames[start : start + batch_size]
            images = [read_frame(frame) for frame in chunk]
            groups: dict[tuple, list[int]] = {}  # frames of one size go through the net together
            for k, image in enumerate(images):
                groups.setdefault(image.shape, []).append(k)
            for members in groups.values():
                for k, proposals in zip(members, net.propose_batch([images[k] for k in members])):
                    proposals.save(staging / cache.path(seq, chunk[k].stem).name)
            bar.update(len(chunk))
        claim_cache(cache, source)  # the record of the network goes in with its first proposals


def compute_proposals(
    data_root: str | os.PathLike,
    split: str,
    net: ProposalNet,
    cache_root: str | os.PathLike | ProposalCache,
    progress: bool = True,
    world: World | None = None,
    batch_size: int = 4,
) -> dict[str, int]:
    """Run ``net`` on every frame of every sequence of ``split`` and store the top-50 in the cache.

    The off-line step of Sec. 3: frames already cached are skipped, so an interrupted
    run resumes where it stopped. Each sequence's new files are staged and moved into the
    cache when the sequence is complete: a failure (an unreadable frame) leaves nothing of
    that sequence, and the cache never holds half a sequence of this run. The cache must
    lie apart from ``data_root``. With several processes (``torchrun``, or ``world``
    given) rank ``r`` of ``W`` takes every ``W``-th sequence from the ``r``-th.
    Returns ``{"computed": ..., "skipped": ..., "sequences": ...}`` for this process.
    """
    world = world_from_env() if world is None else world
    cache = cache_root if isinstance(cache_root, ProposalCache) else ProposalCache(cache_root)
    check_apart(cache.root, "proposal cache", {"the data folder": data_root})
    sequences = read_split(data_root, split)[world.rank::world.size]
    source = {"architecture": net.architecture, "weights_sha1": net.digest()}
    check_claim(cache, source)
    todo: dict[str, list[Path]] = {}
    skipped = 0
    for seq in sequences:
        for frame in frame_files(data_root, seq):
            if cache.has(seq, frame.stem):
                skipped += 1
            else:
                todo.setdefault(seq, []).append(frame)
    net.eval()
    with tqdm(total=sum(map(len, todo.values())), desc=f"proposals {split}", disable=not progress) as bar:
        for seq, frames in todo.items():
            _compute_sequence(net, cache, seq, frames, batch_size, source, bar)
    return {"computed": sum(map(len, todo.values())), "skipped": skipped, "sequences": len(sequences)}
