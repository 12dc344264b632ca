"""Filling the proposal cache: run the proposal network over every frame of a split (Sec. 3, off-line)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dmmlib.data.davis import frame_files, read_split
from dmmlib.data.images import read_frame
from dmmlib.distributed import World, world_from_env
from dmmlib.fileio import check_apart, staged_folder
from dmmlib.proposals.cache import ProposalCache, check_claim, claim_cache
from dmmlib.proposals.net import ProposalNet


class _Frames(torch.utils.data.Dataset):
    """``(sequence, frame name, uint8 [3, H, W])`` per frame to compute: decoded in DataLoader workers."""

    def __init__(self, todo: list[tuple[str, Path]]):
        self.todo = todo

    def __len__(self) -> int:
        return len(self.todo)

    def __getitem__(self, k: int):
        sequence, path = self.todo[k]
        return sequence, path.stem, torch.from_numpy(read_frame(path)).permute(2, 0, 1)


def _frame_batches(todo: list, batch_size: int, num_workers: int, device: torch.device):
    """Batches of decoded frames, read ahead by ``num_workers`` processes, pinned for a CUDA net."""
    return torch.utils.data.DataLoader(_Frames(todo), batch_size=batch_size, collate_fn=list, num_workers=num_workers,
                                       pin_memory=device.type == "cuda")


def _compute_sequence(net: ProposalNet, cache: ProposalCache, seq: str, frames: list[Path], loading: tuple[int, int],
                      source: dict, bar) -> None:
    """The proposals of ``frames`` of ``seq``, staged and moved into the cache when all are done.

    ``loading``: ``(batch_size, num_workers)`` of the DataLoader that decodes the frames.
    """
    folder = cache.path(seq, 0).parent  # checks the name
    with staged_folder(folder) as staging:  # a failure mid-sequence leaves nothing of it
        for chunk in _frame_batches([(seq, frame) for frame in frames], *loading, net.device):
            groups: dict[tuple, list[int]] = {}  # frames of one size go through the net together
            for k, (_, _, image) in enumerate(chunk):
                groups.setdefault(tuple(image.shape), []).append(k)
            for members in groups.values():
                for k, proposals in zip(members, net.propose_batch([chunk[k][2] for k in members])):
                    proposals.save(staging / cache.path(seq, chunk[k][1]).name)
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
    num_workers: int = 0,
) -> dict[str, int]:
    """Run ``net`` on every frame of every sequence of ``split`` and store the top-50 in the cache.

    The off-line step of Sec. 3: frames already cached are skipped, so an interrupted
    run resumes where it stopped. Each sequence's new files are staged and moved into the
    cache when the sequence is complete: a failure (an unreadable frame) leaves nothing of
    that sequence, and the cache never holds half a sequence of this run. The cache must
    lie apart from ``data_root``. With several processes (``torchrun``, or ``world``
    given) rank ``r`` of ``W`` takes every ``W``-th sequence from the ``r``-th. Frames are
    decoded by ``num_workers`` DataLoader processes (0: in this one) and go through the net
    ``batch_size`` at a time (frames of one size in one forward pass), as uint8 to its device.
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
            _compute_sequence(net, cache, seq, frames, (batch_size, num_workers), source, bar)
    return {"computed": sum(map(len, todo.values())), "skipped": skipped, "sequences": len(sequences)}
