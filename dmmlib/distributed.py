"""Multi-process training with ``torchrun``: who am I, and which clips are mine.

``torchrun --nproc_per_node=N -m dmmlib train ...`` starts N copies of the same
command and tells each one its place through environment variables
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``).
:func:`setup` reads them and joins the process group (NCCL on CUDA, gloo on
CPU); a plain ``python -m dmmlib train`` sees no ``WORLD_SIZE`` and runs as a
world of one, with no process group at all.

Sharding (:func:`epoch_batches`): every step has one *global* batch of
``batch_size`` clips, drawn from a per-epoch permutation that depends only on
the seed and the epoch. Rank ``r`` of ``W`` takes the ``r``-th contiguous slice
of ``batch_size // W`` clips. DistributedDataParallel averages the gradients
over ranks, so with equal slices the update is the gradient of the mean loss
over the whole global batch -- the same update a single process computes on the
same batch. The training trajectory therefore does not depend on the number of
GPUs (up to floating-point summation order).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from dmmlib.errors import DMMInputError


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0

    def __post_init__(self) -> None:
        if self.size < 1 or not 0 <= self.rank < self.size:
            raise DMMInputError(f"rank={self.rank} is not in [0, world size={self.size})")

    @property
    def is_main(self) -> bool:
        """Only the main process (rank 0) writes logs and checkpoints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world_from_env(environ: dict | None = None) -> World:
    """Read ``WORLD_SIZE`` / ``RANK`` / ``LOCAL_RANK`` as set by ``torchrun`` (absent: a world of one)."""
    env = os.environ if environ is None else environ
    try:
        size = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local_rank = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as error:
        raise DMMInputError(f"WORLD_SIZE/RANK/LOCAL_RANK must be integers ({error})") from None
    if size < 1 or not 0 <= rank < size:
        raise DMMInputError(f"environment RANK={rank} is not in [0, WORLD_SIZE={size})")
    return World(size=size, rank=rank, local_rank=local_rank)


def setup(device: torch.device, world: World | None = None) -> World:
    """Join the process group if this process was started by ``torchrun``.

    NCCL for CUDA devices, gloo otherwise. On CUDA each process uses the GPU
    numbered by its ``LOCAL_RANK``. Returns the :class:`World`.
    """
    world = world_from_env() if world is None else world
    if world.distributed and not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(world.local_rank)
        torch.distributed.init_process_group(backend=backend, rank=world.rank, world_size=world.size)
    return world


def teardown(world: World) -> None:
    """Leave the process group (a no-op for a world of one)."""
    if world.distributed and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def per_rank_batch_size(batch_size: int, world: World) -> int:
    """``batch_size // world.size``; the global batch must split evenly over the ranks."""
    if batch_size % world.size:
        raise DMMInputError(
            f"batch_size={batch_size} does not split evenly over {world.size} processes; "
            f"expected a multiple of WORLD_SIZE (each process trains on batch_size // WORLD_SIZE clips)"
        )
    return batch_size // world.size


def epoch_batches(n_clips: int, batch_size: int, epoch: int, seed: int, world: World) -> list[list[int]]:
    """This rank's clip indices for every step of ``epoch``: a list of per-step index lists.

    The global order is a permutation of ``range(n_clips)`` seeded by ``(seed, epoch)``;
    the last incomplete global batch is dropped so that every step sees
    ``batch_size`` clips. Rank ``r`` takes slice ``r`` of each global batch.
    """
    local = per_rank_batch_size(batch_size, world)
    order = np.random.default_rng([seed, epoch]).permutation(n_clips)
    steps = n_clips // batch_size
    return [
        order[s * batch_size + world.rank * local: s * batch_size + (world.rank + 1) * local].tolist()
        for s in range(steps)
    ]


def epoch_keys(n_clips: int, batch_size: int, seed: int, world: World, start: int, stop: int):
    """This rank's ``[(epoch, index), ...]`` per step, for steps ``start`` .. ``stop - 1`` (a generator).

    Step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` of
    :func:`epoch_batches`, so a run resumed at any step continues the same sequence.
    """
    steps_per_epoch = n_clips // batch_size
    step = start
    while step < stop:
        epoch, position = divmod(step, steps_per_epoch)
        for indices in epoch_batches(n_clips, batch_size, epoch, seed, world)[position:]:
            if step >= stop:
                return
            yield [(epoch, int(i)) for i in indices]
            step += 1


def mean_over_ranks(values: dict[str, float], world: World) -> dict[str, float]:
    """Average scalar metrics over all ranks (for logging; identity for a world of one)."""
    if not world.distributed or not values:
        return values
    keys = sorted(values)
    # NCCL reduces CUDA tensors only; gloo reduces CPU tensors.
    on = torch.device("cuda") if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
    packed = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=on)
    torch.distributed.all_reduce(packed)
    return {k: float(v) / world.size for k, v in zip(keys, packed.tolist())}
