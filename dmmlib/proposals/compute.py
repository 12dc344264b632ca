"""Filling the proposal cache: run the proposal network over every frame of a split (Sec. 3, off-line)."""

from __future__ import annotations

import os

from tqdm.auto import tqdm

from dmmlib.data.davis import frame_files, read_split
from dmmlib.data.images import read_frame
from dmmlib.distributed import World, world_from_env
from dmmlib.proposals.cache import ProposalCache, claim_cache
from dmmlib.proposals.net import ProposalNet


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
    run resumes where it stopped. With several processes (``torchrun``, or ``world``
    given) rank ``r`` of ``W`` takes every ``W``-th sequence from the ``r``-th; the atomic
    per-frame files mean no two writers ever see each other's half files.
    Returns ``{"computed": ..., "skipped": ..., "sequences": ...}`` for this process.
    """
    world = world_from_env() if world is None else world
    cache = cache_root if isinstance(cache_root, ProposalCache) else ProposalCache(cache_root)
    sequences = read_split(data_root, split)[world.rank::world.size]
    claim_cache(cache, {"architecture": net.architecture, "weights_sha1": net.digest()})
    todo = []
    skipped = 0
    for seq in sequences:
        for frame in frame_files(data_root, seq):
            if cache.has(seq, frame.stem):
                skipped += 1
            else:
                todo.append((seq, frame))
    net.eval()
    bar = tqdm(total=len(todo), desc=f"proposals {split}", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        images = [read_frame(frame) for _, frame in chunk]
        groups: dict[tuple, list[int]] = {}  # frames of one size go through the net together
        for k, image in enumerate(images):
            groups.setdefault(image.shape, []).append(k)
        for members in groups.values():
            for k, proposals in zip(members, net.propose_batch([images[k] for k in members])):
                cache.put(chunk[k][0], chunk[k][1].stem, proposals)
        bar.update(len(chunk))
    bar.close()
    return {"computed": len(todo), "skipped": skipped, "sequences": len(sequences)}
