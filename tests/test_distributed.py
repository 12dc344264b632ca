"""Two gloo processes on CPU train like one process on the same global batch.

The library's own DDP path runs (``training.train`` under ``WORLD_SIZE=2``); the
averaged gradient of the first step is read back from Adam's first moment in the
checkpoint (after one step ``exp_avg = (1 - beta1) * grad`` exactly) and compared
with a single-process run on the same clips.
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_training import TinyClips, TinyTracker, tiny_config

from dmmlib import distributed, training
from dmmlib.checkpoints import checkpoint_paths

BETA1 = 0.9  # torch.optim.Adam's default


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config():
    # 8 clips, global batch 4: two steps, each rank trains 2 clips per step
    return tiny_config(clips_per_epoch=8, batch_size=4, max_steps=1, checkpoint_every=10)


def _run(run_dir) -> None:
    torch.set_num_threads(1)
    cfg = _config()
    torch.manual_seed(cfg.seed)
    model = TinyTracker(dropout=0.0)  # dropout masks would differ between one and two processes
    dataset = TinyClips(n_clips=cfg.clips_per_epoch, length=cfg.unroll + 1, size=tuple(cfg.frame_size))
    training.train(cfg, run_dir, model=model, dataset=dataset, progress=False)


def _worker(rank: int, world_size: int, port: int, run_dir: str) -> None:
    os.environ.update(WORLD_SIZE=str(world_size), RANK=str(rank), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    _run(run_dir)


def _first_gradient(run_dir) -> list[torch.Tensor]:
    (path,) = checkpoint_paths(run_dir)
    state = torch.load(path, map_location="cpu", weights_only=True)
    moments = state["optimizer"]["state"]
    return [moments[k]["exp_avg"] / (1 - BETA1) for k in sorted(moments)]


@pytest.mark.slow
def test_two_gloo_processes_average_to_the_single_process_gradient(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path / "ddp")), nprocs=2, join=True)
    _run(tmp_path / "single")

    ddp, single = _first_gradient(tmp_path / "ddp"), _first_gradient(tmp_path / "single")
    assert len(ddp) == len(single) == 6
    for a, b in zip(ddp, single):
        assert a.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)

    # rank 0 alone wrote: one record per step, tagged with the world size; loss averaged over ranks
    (ddp_log,) = [json.loads(line) for line in (tmp_path / "ddp" / training.LOG_NAME).read_text().splitlines()]
    (single_log,) = training.read_log(tmp_path / "single")
    assert ddp_log["world_size"] == 2 and single_log["world_size"] == 1
    assert ddp_log["loss"] == pytest.approx(single_log["loss"], rel=1e-5)


def test_one_rank_gets_its_slice_of_every_global_batch():
    whole = distributed.epoch_batches(10, 4, epoch=3, seed=7, world=distributed.World(1, 0))
    halves = [distributed.epoch_batches(10, 4, epoch=3, seed=7, world=distributed.World(2, r)) for r in (0, 1)]
    assert len(whole) == 2  # the incomplete last batch is dropped
    for step, batch in enumerate(whole):
        assert halves[0][step] + halves[1][step] == batch
    assert distributed.epoch_batches(10, 4, epoch=4, seed=7, world=distributed.World(1, 0)) != whole


def test_uneven_split_is_an_input_error():
    with pytest.raises(Exception, match="multiple of WORLD_SIZE"):
        distributed.per_rank_batch_size(5, distributed.World(2, 0))


def test_world_from_env_reads_torchrun_variables():
    world = distributed.world_from_env({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"})
    assert (world.size, world.rank, world.local_rank, world.is_main) == (4, 2, 0, False)
    assert distributed.world_from_env({}) == distributed.World(1, 0, 0)
    with pytest.raises(Exception, match="RANK"):
        distributed.world_from_env({"WORLD_SIZE": "2", "RANK": "2"})
