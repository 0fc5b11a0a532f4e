"""What cross-device negatives cost: bytes communicated per training step on 2 torch workers (gloo on this
machine) with ``gather=True``, against the same loss on one process holding the global batch; and with
``--sharded``, what the softmax over a catalogue split across workers (``shard_negatives=True``) communicates
and how much memory it takes.

    python benchmarks/distributed_cost.py [--batch 4096] [--negatives 4096] [--dim 128] [--repeats 5]
    python benchmarks/distributed_cost.py --sharded [--batch 4096] [--items 1000000] [--dim 128] [--workers 2 4]
    python benchmarks/distributed_cost.py --sharded --memory --items 1000000 --dim 64 --workers 2

``--sharded``: ``--workers`` gloo processes, each with ``--batch`` rows (queries, positives with ids) and a shard
of ``--items / W`` items (embeddings, ``neg_log_q``, ids), one forward+backward of the full-catalogue softmax
``sampled_softmax_loss(q, pos, shard, pos_ids=..., neg_ids=..., neg_log_q=..., in_batch=False,
shard_negatives=True)`` (``implementation="auto"``: each shard streams), one thread per worker. Printed: the
bytes each worker receives from the others, forward and backward, against the formula of :func:`sharded_bytes`,
and against gathering the table instead. ``--memory``: also the peak resident memory of the step above the
memory before it, the inputs already resident (``VmHWM`` after resetting it; run with
``MALLOC_MMAP_THRESHOLD_=65536`` so that freed buffers go back to the system), as a ratio to one worker's
``[B_global, N_w]`` float32 logits.

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from memory import reset_peak, status  # noqa: E402


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


# ----------------------------------------------------------------------------------------------------------
# shard_negatives


def sharded_bytes(workers: int, batch: int, dim: int, float_bytes: int = 4, id_bytes: int = 8) -> dict[str, int]:
    """What one worker receives from the others per step with ``shard_negatives`` (no ``gather``, equal local
    batches of ``batch`` rows, ids on both sides, weights absent), counted as :class:`_Counter` counts (an
    all-gather: the others' slices; a reduce-scatter: the others' contributions to this worker's slice; an
    all-reduce: the others' values of every element).

    forward: the exchange of sizes (8 int64 per worker: the digest of the call that every rank checks, the
    number of counts, then the rows, D, the dtypes and two unused slots), the rows ``[B, D + 1]`` (queries and positive
    scores), their ids ``[B]``, the maximum and the sum of ``exp(a - max)`` over the workers (``[W B]`` each),
    and the global reduction (3 numbers). backward: the cotangents of the sum ``[W B]`` and of the reduction
    (3), and the rows' cotangents ``[B, D + 1]``. The shard never moves."""
    others, rows = workers - 1, workers * batch
    forward = others * (8 * 8 + batch * (dim + 1) * float_bytes + batch * id_bytes + 2 * rows * float_bytes
                        + 3 * float_bytes)
    backward = others * (rows * float_bytes + 3 * float_bytes + batch * (dim + 1) * float_bytes)
    return {"forward": forward, "backward": backward, "total": forward + backward}


def table_bytes(workers: int, items: int, dim: int, float_bytes: int = 4, id_bytes: int = 8) -> int:
    """What one worker would receive per step if the table were gathered instead (``gather=True`` on the shards,
    with ``neg_log_q`` and ids): the others' shards forward, their cotangents backward."""
    shard = items // workers
    return (workers - 1) * shard * ((dim + 1) * float_bytes + id_bytes + (dim + 1) * float_bytes)


def _sharded_inputs(rank: int, workers: int, batch: int, items: int, dim: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rank)
    shard = items // workers
    return {"query_emb": (rng.normal(size=(batch, dim)) / np.sqrt(dim)).astype(np.float32),
            "pos_emb": (rng.normal(size=(batch, dim)) / np.sqrt(dim)).astype(np.float32),
            "neg_emb": (rng.normal(size=(shard, dim)) / np.sqrt(dim)).astype(np.float32),
            "neg_log_q": np.full(shard, -np.log(items), np.float32),
            "pos_ids": rng.integers(0, items, batch), "neg_ids": np.arange(rank * shard, (rank + 1) * shard)}


def _sharded_worker(rank: int, workers: int, init: str, args: argparse.Namespace, queue) -> None:
    import gc

    import torch
    import torch.distributed as dist

    import recloss

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=workers)

    def leaves(inputs: dict) -> dict:
        return {k: torch.tensor(v, requires_grad=v.dtype == np.float32 and k != "neg_log_q")
                for k, v in inputs.items()}

    def step(tensors: dict) -> tuple[tuple, tuple]:
        start = time.perf_counter()
        loss = recloss.sampled_softmax_loss(**tensors, in_batch=False, temperature=0.05, shard_negatives=True)
        forward = (counter.received, time.perf_counter() - start)
        loss.backward()
        return forward, (counter.received, time.perf_counter() - start)

    counter = _Counter(workers)
    step(leaves(_sharded_inputs(rank, workers, 8, 64, args.dim)))   # warm-up: the same code path, small
    inputs = leaves(_sharded_inputs(rank, workers, args.batch, args.items, args.dim))
    gc.collect()
    peak_ok = reset_peak() if args.memory else False
    before = status("VmRSS")
    counter.received = 0
    dist.barrier()
    (forward, _), (total, seconds) = step(inputs)
    peak = status("VmHWM") - before if peak_ok else None
    if rank == 0:
        queue.put({"forward": int(forward), "backward": int(total - forward), "seconds": seconds, "peak": peak})
    dist.destroy_process_group()


def _sharded(args: argparse.Namespace) -> int:
    import torch
    import torch.multiprocessing as mp

    mib = 1 << 20
    print(f"shard_negatives=True: {args.batch} rows per worker, {args.items} items split over the workers, "
          f"D={args.dim}, float32, ids and neg_log_q (torch {torch.__version__}, gloo, 1 thread per worker)")
    header = "| workers | received per worker per step (forward + backward) | formula | gathering the table instead |"
    rows = []
    for workers in args.workers:
        context = mp.get_context("spawn")
        queue = context.Queue()
        with tempfile.TemporaryDirectory() as folder:
            init = "file://" + os.path.join(folder, "rendezvous")
            processes = [context.Process(target=_sharded_worker, args=(rank, workers, init, args, queue))
                         for rank in range(workers)]
            for process in processes:
                process.start()
            result = queue.get()
            for process in processes:
                process.join()
        expected = sharded_bytes(workers, args.batch, args.dim)
        measured = result["forward"] + result["backward"]
        row = (f"| {workers} | {measured:,} bytes = {measured / mib:.3f} MiB ({result['forward']:,} + "
               f"{result['backward']:,}) | {expected['total']:,} bytes ({expected['forward']:,} + "
               f"{expected['backward']:,}) | {table_bytes(workers, args.items, args.dim) / mib:.1f} MiB |")
        if args.memory:
            logits = workers * args.batch * (args.items // workers) * 4
            row += (f" peak above the inputs {result['peak'] / mib:.0f} MiB = {result['peak'] / logits:.4f} x the "
                    f"[B_global, N_w] logits ({logits / mib:.0f} MiB); step {result['seconds']:.0f} s |")
        rows.append(row)
    print(header + (" memory (rank 0) |" if args.memory else ""))
    print("|---|---|---|---|" + ("---|" if args.memory else ""))
    print("\n".join(rows))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=4096, help="rows per worker")
    parser.add_argument("--negatives", type=int, default=4096, help="shared negatives per worker")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sharded", action="store_true", help="shard_negatives: a table split across the workers")
    parser.add_argument("--items", type=int, default=1_000_000, help="--sharded: items of the whole table")
    parser.add_argument("--workers", type=int, nargs="+", default=[2, 4], help="--sharded: worker counts")
    parser.add_argument("--memory", action="store_true", help="--sharded: also the peak memory of the step")
    args = parser.parse_args()
    if args.sharded:
        return _sharded(args)
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
