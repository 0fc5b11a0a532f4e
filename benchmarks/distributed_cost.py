"""What cross-device negatives cost: bytes communicated per training step on 2 torch workers (gloo on this
machine) with ``gather=True``, against the same loss on one process holding the global batch.

    python benchmarks/distributed_cost.py [--batch 4096] [--negatives 4096] [--dim 128] [--repeats 5]

Each worker holds ``--batch`` rows and ``--negatives`` shared negatives (float32); one process holds both
workers' rows. The losses: ``sampled_softmax_loss`` with mixed negatives (in-batch positives with
``pos_log_q``/``pos_ids``, shared negatives with ``neg_log_q``/``neg_ids``) and ``info_nce_loss`` symmetric
(queries and keys gathered), ``implementation="auto"``. The bytes are counted at the ``torch.distributed``
calls recloss makes (wrapped in each worker): what a worker receives from the other worker, forward and
backward (``"received"``; the same amount is sent), and the bytes of the tensors handed to the collectives.
One process communicates nothing. Step times (forward + backward, medians) are printed for completeness; on a
shared 2-core CPU, 2 workers compete for the same cores, so they say little about a multi-GPU machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np


def _inputs(rows: int, negatives: int, dim: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"query_emb": rng.normal(size=(rows, dim)).astype(np.float32),
            "pos_emb": rng.normal(size=(rows, dim)).astype(np.float32),
            "neg_emb": rng.normal(size=(negatives, dim)).astype(np.float32),
            "pos_log_q": np.log(rng.uniform(1e-4, 1e-2, rows)).astype(np.float32),
            "neg_log_q": np.log(rng.uniform(1e-4, 1e-2, negatives)).astype(np.float32),
            "pos_ids": rng.integers(0, 10 * rows, rows), "neg_ids": rng.integers(0, 10 * rows, negatives)}


def _step(name: str, tensors: dict, gather) -> None:
    import torch

    import recloss

    leaves = {k: torch.tensor(v, requires_grad=v.dtype == np.float32) for k, v in tensors.items()}
    if name == "sampled_softmax_loss (mixed, logQ, ids)":
        loss = recloss.sampled_softmax_loss(**leaves, in_batch=True, temperature=0.05, gather=gather)
    else:
        loss = recloss.info_nce_loss(leaves["query_emb"], leaves["pos_emb"], ids=leaves["pos_ids"], symmetric=True,
                                     temperature=0.05, gather=gather)
    loss.backward()


LOSSES = ("sampled_softmax_loss (mixed, logQ, ids)", "info_nce_loss (symmetric, ids)")


class _Counter:
    """Wraps the torch.distributed calls recloss makes and adds up their bytes."""

    def __init__(self, workers: int) -> None:
        import torch.distributed as dist

        self.workers, self.received, self.handed = workers, 0, 0
        self._originals = {}
        for name in ("all_gather_single", "reduce_scatter_single", "all_reduce"):
            original = getattr(dist, name)
            self._originals[name] = original
            setattr(dist, name, self._wrap(name, original))

    def _wrap(self, name, original):
        def call(*args, **kwargs):
            if name == "all_reduce":
                size = args[0].numel() * args[0].element_size()
                self.received += (self.workers - 1) * size    # the others' values of every element
                self.handed += size
            else:
                output, given = args[0], args[1]
                out_bytes = output.numel() * output.element_size()
                in_bytes = given.numel() * given.element_size()
                # all-gather: the others' slices; reduce-scatter: the others' contributions to this slice.
                own = out_bytes if name == "reduce_scatter_single" else in_bytes
                self.received += (self.workers - 1) * own
                self.handed += in_bytes
            return original(*args, **kwargs)
        return call


def _worker(rank: int, workers: int, init: str, args: argparse.Namespace, queue) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 2) // workers))
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=workers)
    counter = _Counter(workers)
    local = _inputs(args.batch, args.negatives, args.dim, seed=rank)
    results = {}
    for name in LOSSES:
        _step(name, local, True)                       # warm-up
        counter.received = counter.handed = 0
        times = []
        for _ in range(args.repeats):
            dist.barrier()
            start = time.perf_counter()
            _step(name, local, True)
            dist.barrier()
            times.append(time.perf_counter() - start)
        results[name] = (counter.received / args.repeats, counter.handed / args.repeats, statistics.median(times))
    if rank == 0:
        queue.put(results)
    dist.destroy_process_group()


def _one_process(args: argparse.Namespace, workers: int) -> dict[str, float]:
    import torch

    torch.set_num_threads(os.cpu_count() or 2)
    parts = [_inputs(args.batch, args.negatives, args.dim, seed=r) for r in range(workers)]
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    out = {}
    for name in LOSSES:
        _step(name, merged, None)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            _step(name, merged, None)
            times.append(time.perf_counter() - start)
        out[name] = statistics.median(times)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4096, help="rows per worker")
    parser.add_argument("--negatives", type=int, default=4096, help="shared negatives per worker")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    import torch.multiprocessing as mp

    workers = 2
    single = _one_process(args, workers)
    context = mp.get_context("spawn")
    queue = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        init = "file://" + os.path.join(folder, "rendezvous")
        processes = [context.Process(target=_worker, args=(rank, workers, init, args, queue)) for rank in range(workers)]
        for process in processes:
            process.start()
        results = queue.get()
        for process in processes:
            process.join()
    mib = 1 << 20
    print(f"{workers} workers x {args.batch} rows, {args.negatives} shared negatives each, D={args.dim}, float32 "
          f"(torch {__import__('torch').__version__}, gloo); one process: {workers * args.batch} rows, "
          f"{workers * args.negatives} negatives")
    print("| loss | received per worker per step | handed to collectives | one process | "
          "step time, 2 workers / one process |")
    print("|---|---|---|---|---|")
    for name in LOSSES:
        received, handed, seconds = results[name]
        print(f"| {name} | {received / mib:.2f} MiB | {handed / mib:.2f} MiB | 0 bytes | "
              f"{seconds / single[name]:.2f} ({seconds * 1e3:.0f} ms / {single[name] * 1e3:.0f} ms) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
