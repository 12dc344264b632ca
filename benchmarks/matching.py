"""How fast is the matching layer (Alg. 1), batched, against one matrix per call and Hungarian?

    python benchmarks/matching.py [--quick] [--device auto] [--batch 256] [--repeats 3] [--threads 1]
                                  [--no-compile]

Part 0 compares the fused layer of this commit with the layer as it was on main at commit
9624727 (a copy of that loop lives in this script, for this comparison only): torch.profiler's
operations per forward call on one 5 x 50 problem at the paper's settings, and forward time on
the batch, for the old loop, the fused loop, and the fused loop through ``torch.compile``
(``dmm_match(..., compiled=True)``; its first call compiles, which is not timed).

Part 1 times the same B uniform-random 5 x 50 cost matrices (5 templates, 50 proposals, the
paper's top-50) solved three ways, side by side in one run:

* ``dmm_match`` on the whole batch [B, 5, 50] in one call;
* ``dmm_match`` called once per [5, 50] matrix with the same iteration counts (what the
  authors' release does: one matrix per call);
* scipy's Hungarian method, one ``linear_sum_assignment`` per matrix.

Forward alone and forward + backward are both timed (best of ``--repeats``) and printed as
ratios to the batched layer.

Part 2 grows N_grad * N_proj and measures forward + backward time and the memory kept for
backward, with and without ``checkpoint=True``. On a GPU that memory is the peak of
``torch.cuda.max_memory_allocated`` above the inputs; on a CPU (where no allocator tracks
peaks) it is the bytes of the distinct tensors autograd saves for backward, counted with
``torch.autograd.graph.saved_tensors_hooks``.

``--quick`` uses B = 64 and smaller sizes so the whole run takes seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from dmmlib.device import pick_device
from dmmlib.matchers import hungarian_match
from dmmlib.matching import PAPER_SETTINGS, dmm_match, prepare_problem
from dmmlib.projections import rows_sum_to_one

N_TEMPLATES, N_PROPOSALS = 5, 50


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def best_time(fn, device: torch.device, repeats: int, clock: str) -> float:
    """Seconds of the fastest of ``repeats`` runs by ``clock``.

    ``"cpu"`` counts only this process's CPU time: on cores shared with other jobs that is what
    the run would take alone (with one thread); wall time there mostly measures the waiting.
    On a GPU the work is asynchronous and only ``"wall"`` (after synchronizing) makes sense.
    """
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        start = CLOCKS[clock]()
        fn()
        _sync(device)
        best = min(best, CLOCKS[clock]() - start)
    return best


# ----------------------------------------------------------------------------- main at 9624727, for comparison
# The paper variant's loop as it was before the fused layer (verbatim, less the trace), so that Part 0
# measures old and new side by side in one run on one machine.


def _old_columns_with_correction(Y, q_columns, layout):
    excess = (Y.sum(-2, keepdim=True) - 1.0) * layout.inv_n
    if q_columns is not None:
        excess = excess + q_columns
    new_q = torch.relu(excess)
    delta = new_q if q_columns is None else new_q - q_columns
    if layout.row_valid is not None:
        delta = delta * layout.row_valid
    return Y - delta, new_q


def _old_paper_outer_iteration(X, step, n_proj, layout):
    Y = X - step
    q_columns = q_nonneg = None
    for j in range(n_proj):
        Y = rows_sum_to_one(Y, layout)
        Y, q_columns = _old_columns_with_correction(Y, q_columns, layout)
        Z = Y if q_nonneg is None else Y + q_nonneg
        Y = torch.relu(Z)
        if j + 1 < n_proj:
            q_nonneg = Z - Y
    return Y


def old_dmm_match(cost: torch.Tensor, n_grad: int = 40, n_proj: int = 5, lr: float = 0.1) -> torch.Tensor:
    """``dmm_match(cost)`` (paper variant, no masks) as main computed it at 9624727."""
    problem = prepare_problem(cost, None, None, None)
    step = lr * problem.cost
    X, total = torch.zeros_like(problem.cost), None
    for i in range(n_grad):
        X = _old_paper_outer_iteration(X, step, n_proj, problem.layout)
        total = X if total is None else total + X
        _ = total / (i + 1)  # the old loop formed the running average for its trace on every iteration
    return problem.output(total / n_grad)


def operations_per_call(fn) -> tuple[int, int]:
    """(aten operations, all profiler events) of one call of ``fn`` (after a warm-up call)."""
    from torch.profiler import profile

    fn()
    with profile() as prof:
        fn()
    events = prof.events()
    return sum(e.name.startswith("aten::") for e in events), len(events)


def compare_with_main(costs: torch.Tensor, device: torch.device, repeats: int, clock: str,
                      compile_too: bool) -> list[tuple[str, int, int, float, float]]:
    """Part 0: [(implementation, aten ops per call, profiler events, seconds for the batch, max |diff|)]."""
    one = costs[:1]
    rows = [("main 9624727 (old loop)", old_dmm_match), ("fused (this commit)", dmm_match)]
    if compile_too:
        rows.append(("fused + torch.compile", lambda c: dmm_match(c, compiled=True)))
    results = []
    with torch.no_grad():
        reference = old_dmm_match(costs)
        for name, fn in rows:
            aten, events = operations_per_call(lambda: fn(one))
            fn(costs)  # a compiled function compiles a new shape on its first call
            seconds = best_time(lambda: fn(costs), device, repeats, clock)
            results.append((name, aten, events, seconds, float((fn(costs) - reference).abs().max())))
    return results


def forward_backward(cost: torch.Tensor, **kwargs) -> None:
    """One training-style step through the layer: a scalar of X^ back-propagated to the cost."""
    cost = cost.detach().requires_grad_()
    dmm_match(cost, **kwargs).square().sum().backward()


def warm_up(costs: torch.Tensor) -> None:
    """First calls pay one-off costs (lazy imports such as scipy.optimize, checkpoint set-up)."""
    for checkpoint in (False, True):
        forward_backward(costs[:2], n_grad=2, n_proj=2, checkpoint=checkpoint)
    hungarian_match(costs[:2])


def compare_batched_and_looped(costs: torch.Tensor, device: torch.device, repeats: int,
                               clock: str) -> list[tuple[str, float]]:
    """Part 1: [(method, seconds for the whole batch)]."""
    n_grad, n_proj = 40, 5
    rows = [
        ("dmm_match, batched, forward", lambda: dmm_match(costs, n_grad=n_grad, n_proj=n_proj)),
        ("dmm_match, one matrix per call, forward",
         lambda: [dmm_match(c, n_grad=n_grad, n_proj=n_proj) for c in costs]),
        ("dmm_match, batched, forward+backward", lambda: forward_backward(costs, n_grad=n_grad, n_proj=n_proj)),
        ("dmm_match, one matrix per call, forward+backward",
         lambda: [forward_backward(c, n_grad=n_grad, n_proj=n_proj) for c in costs]),
        ("Hungarian (scipy), one matrix per call", lambda: hungarian_match(costs)),
    ]
    warm_up(costs)
    results = []
    for name, fn in rows:
        if "backward" in name:
            results.append((name, best_time(fn, device, repeats, clock)))
        else:
            with torch.no_grad():
                results.append((name, best_time(fn, device, repeats, clock)))
    return results


def memory_kept_for_backward(cost: torch.Tensor, device: torch.device, **kwargs) -> int:
    """Bytes held for backward by one dmm_match call (see the module docstring)."""
    cost = cost.detach().requires_grad_()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        X_hat = dmm_match(cost, **kwargs)
        peak = torch.cuda.max_memory_allocated(device) - before
        X_hat.sum().backward()
        return peak
    seen: dict[tuple[int, int], int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        seen[(storage.data_ptr(), storage.nbytes())] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        X_hat = dmm_match(cost, **kwargs)
    X_hat.sum().backward()
    return sum(seen.values())


def memory_scan(costs: torch.Tensor, device: torch.device, settings, repeats: int, clock: str) -> list[tuple]:
    """Part 2: [(n_grad, n_proj, seconds plain, seconds checkpointed, bytes plain, bytes checkpointed)]."""
    rows = []
    for n_grad, n_proj in settings:
        kwargs = {"n_grad": n_grad, "n_proj": n_proj}
        seconds = [best_time(lambda: forward_backward(costs, checkpoint=ckpt, **kwargs), device, repeats, clock)
                   for ckpt in (False, True)]
        memory = [memory_kept_for_backward(costs, device, checkpoint=ckpt, **kwargs) for ckpt in (False, True)]
        rows.append((n_grad, n_proj, *seconds, *memory))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="B = 64 and small sizes: a few seconds")
    parser.add_argument("--device", default="auto", help="auto (CUDA, MPS, CPU), cpu, cuda, ...")
    parser.add_argument("--batch", type=int, default=None, help="problems per batch (default 256; 64 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="timed runs per row, best kept (default 3; 1 quick)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (default 1: on shared cores a second thread that gets "
                             "descheduled stalls every parallel op, making batched times erratic)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default=None,
                        help="cpu: process CPU time (default on CPU); wall: wall clock (default on GPU)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-compile", action="store_true", help="leave out the torch.compile row of Part 0")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # rows appear as they are measured, even into a file
    torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    batch = args.batch or (64 if args.quick else 256)
    repeats = args.repeats or (1 if args.quick else 3)
    clock = args.clock or ("wall" if device.type == "cuda" else "cpu")
    generator = torch.Generator().manual_seed(args.seed)
    costs = torch.rand(batch, N_TEMPLATES, N_PROPOSALS, generator=generator).to(device)

    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"B = {batch} problems of {N_TEMPLATES} x {N_PROPOSALS}, float32, best of {repeats} by the {clock} clock")
    if hasattr(os, "getloadavg"):
        # other processes share the cores: the load says how much wall times are inflated
        print(f"load average at start: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print()
    print(f"Part 0: the fused layer against main at 9624727, {PAPER_SETTINGS} (forward only; ops: torch.profiler, "
          f"one 5 x 50 problem)")
    print(f"{'implementation':<28} {'aten ops':>9} {'events':>7} {'total ms':>9} {'us/problem':>11} "
          f"{'x faster':>9} {'max |diff|':>11}")
    part0 = compare_with_main(costs, device, repeats, clock, not args.no_compile)
    for name, aten, events, seconds, diff in part0:
        print(f"{name:<28} {aten:>9} {events:>7} {seconds * 1e3:>9.1f} {seconds / batch * 1e6:>11.1f} "
              f"{part0[0][3] / seconds:>9.2f} {diff:>11.1e}")
    print()
    print("Part 1: the same problems three ways (N_grad = 40, N_proj = 5, the paper's settings)")
    results = compare_batched_and_looped(costs, device, repeats, clock)
    reference = {"forward": results[0][1], "forward+backward": results[2][1]}
    print(f"{'method':<50} {'total ms':>10} {'us/problem':>11} {'x batched':>10}")
    for name, seconds in results:
        base = reference["forward+backward" if "backward" in name else "forward"]
        print(f"{name:<50} {seconds * 1e3:>10.1f} {seconds / batch * 1e6:>11.1f} {seconds / base:>10.1f}")
    loop_ratio = results[1][1] / results[0][1]
    print(f"\nbatched layer is {loop_ratio:.0f}x faster than one matrix per call (forward), "
          f"{results[3][1] / results[2][1]:.0f}x (forward+backward); "
          f"Hungarian in a loop is {results[4][1] / results[0][1]:.2f}x the batched layer's time\n")

    settings = [(10, 5), (40, 5), (80, 10)] if args.quick else [(10, 5), (40, 5), (100, 10), (200, 20), (400, 10)]
    memory_name = "peak CUDA MiB" if device.type == "cuda" else "saved-for-backward MiB"
    print(f"Part 2: forward+backward as N_grad x N_proj grows ({memory_name})")
    print(f"{'N_grad':>6} {'N_proj':>6} {'rounds':>7} {'ms plain':>9} {'ms ckpt':>9} {'time x':>7} "
          f"{'MiB plain':>10} {'MiB ckpt':>9} {'memory /':>9}")
    for n_grad, n_proj, t_plain, t_ckpt, m_plain, m_ckpt in memory_scan(costs, device, settings, repeats, clock):
        print(f"{n_grad:>6} {n_proj:>6} {n_grad * n_proj:>7} {t_plain * 1e3:>9.1f} {t_ckpt * 1e3:>9.1f} "
              f"{t_ckpt / t_plain:>7.2f} {m_plain / 2**20:>10.1f} {m_ckpt / 2**20:>9.1f} "
              f"{m_plain / max(m_ckpt, 1):>9.1f}")


if __name__ == "__main__":
    main()
