"""The full-catalogue softmax over an item table split by rows across 2 torch processes (gloo), against the same
training with the whole table in one process.

Each process holds half of the item table (rows ``[r N / W, (r + 1) N / W)``) as its own parameter, outside
``DistributedDataParallel``, which wraps the user tower only. A step: each process takes its half of the global
batch, looks its positive items up in the split table (:class:`RowSplitLookup`, the part a distributed
embedding such as TorchRec's does), and calls

    recloss.sampled_softmax_loss(query, pos_emb, shard, pos_ids=items, neg_ids=shard_ids, in_batch=False,
                                 shard_negatives=True)

which scores every process's rows against every shard (each row's own item is removed by id on the shard that
holds it) without moving a shard. The one-process run computes the same loss with the whole table,
``sampled_softmax_loss(query, table[items], table, pos_ids=items, neg_ids=arange(N), in_batch=False)``, from
the same initial weights and batches, with the same Adam steps: the two loss curves agree to float32 rounding.

    python examples/sharded_catalogue_torch.py [--short] [--steps N]

Prints both curves and their largest difference, then a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F

import recloss
from common import FULL, SHORT, Config, batches
from data import generate

WORKERS = 2


class RowSplitLookup(torch.autograd.Function):
    """Rows ``[B_r, D]`` of ``ids`` ``[B_r]`` from a table split by rows over the ranks (this rank holds ``shard``,
    the rows from ``first`` on), for equal local batches: every rank gathers every rank's ids, fills in the rows
    it holds, and an all-reduce gives each rank its rows. The backward gathers every rank's cotangents and
    adds those of its rows into the shard's gradient, divided by the world size: recloss returns each rank W
    times the gradient of its ``pos_emb`` (for DDP's average), and a table split by rows is not averaged."""

    @staticmethod
    def forward(ctx: Any, shard: torch.Tensor, ids: torch.Tensor, first: int) -> torch.Tensor:
        workers, rank = dist.get_world_size(), dist.get_rank()
        every = torch.empty(workers * len(ids), dtype=ids.dtype)
        dist.all_gather_single(every, ids.contiguous())
        local = every - first
        held = (local >= 0) & (local < shard.shape[0])
        rows = torch.zeros(len(every), shard.shape[1], dtype=shard.dtype)
        rows[held] = shard.detach()[local[held]]
        dist.all_reduce(rows)
        ctx.save_for_backward(local, held)
        ctx.rows = shard.shape[0]
        return rows[rank * len(ids):(rank + 1) * len(ids)]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        local, held = ctx.saved_tensors
        workers = dist.get_world_size()
        every = torch.empty(workers * grad.shape[0], grad.shape[1], dtype=grad.dtype)
        dist.all_gather_single(every, grad.contiguous())
        grad_shard = torch.zeros(ctx.rows, grad.shape[1], dtype=grad.dtype)
        grad_shard.index_add_(0, local[held], every[held])
        return grad_shard / workers, None, None


def initial_weights(config: Config, num_users: int, num_items: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The same initial user and item tables in every process (each rank then keeps its rows of the items)."""
    generator = torch.Generator().manual_seed(config.seed)
    users = torch.randn(num_users, config.dim, generator=generator) * 0.1
    items = torch.randn(num_items, config.dim, generator=generator) * 0.1
    return users, items


def global_batches(config: Config, steps: int) -> tuple[Any, list[dict[str, np.ndarray]]]:
    data = generate(config.num_users, config.num_items, seed=config.seed)
    rng = np.random.default_rng(config.seed)
    out: list[dict[str, np.ndarray]] = []
    while len(out) < steps:
        out += list(batches(data, config.batch_size, rng))
    return data, out[:steps]


def sharded_run(rank: int, init: str, config: Config, steps: int, results: Any) -> None:
    """One of the processes: its half of every batch against its half of the table."""
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=WORKERS)
    data, steps_data = global_batches(config, steps)
    users, items = initial_weights(config, data.num_users, data.num_items)
    per_shard = data.num_items // WORKERS
    first = rank * per_shard
    user_tower = torch.nn.parallel.DistributedDataParallel(torch.nn.Embedding.from_pretrained(users, freeze=False))
    shard = torch.nn.Parameter(items[first:first + per_shard].clone())     # this rank's rows, outside DDP
    shard_ids = torch.arange(first, first + per_shard)
    optimizer = torch.optim.Adam([*user_tower.parameters(), shard], lr=config.learning_rate)
    local_rows = config.batch_size // WORKERS
    losses = []
    for batch in steps_data:
        rows = slice(rank * local_rows, (rank + 1) * local_rows)
        user_ids, item_ids = torch.from_numpy(batch["user"][rows]), torch.from_numpy(batch["item"][rows])
        query = F.normalize(user_tower(user_ids), dim=-1)
        positive = F.normalize(RowSplitLookup.apply(shard, item_ids, first), dim=-1)
        loss = recloss.sampled_softmax_loss(query, positive, F.normalize(shard, dim=-1), temperature=config.temperature,
                                            in_batch=False, pos_ids=item_ids, neg_ids=shard_ids,
                                            shard_negatives=True)   # every rank: the loss of the global batch
        optimizer.zero_grad()
        loss.backward()                                             # DDP averages the user tower's gradient
        optimizer.step()
        losses.append(loss.item())
    if rank == 0:
        results.put(losses)
    dist.destroy_process_group()


def one_process_run(config: Config, steps: int) -> list[float]:
    """The same training with the whole table and the whole batch in one process."""
    torch.set_num_threads(1)
    data, steps_data = global_batches(config, steps)
    users, items = initial_weights(config, data.num_users, data.num_items)
    user_tower = torch.nn.Embedding.from_pretrained(users, freeze=False)
    table = torch.nn.Parameter(items.clone())
    optimizer = torch.optim.Adam([*user_tower.parameters(), table], lr=config.learning_rate)
    all_ids = torch.arange(data.num_items)
    losses = []
    for batch in steps_data:
        user_ids, item_ids = torch.from_numpy(batch["user"]), torch.from_numpy(batch["item"])
        candidates = F.normalize(table, dim=-1)
        loss = recloss.sampled_softmax_loss(F.normalize(user_tower(user_ids), dim=-1), candidates[item_ids],
                                            candidates, temperature=config.temperature, in_batch=False,
                                            pos_ids=item_ids, neg_ids=all_ids)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="600 users x 400 items (a few seconds)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 2 epochs of the data)")
    args = parser.parse_args(argv)
    config = SHORT if args.short else FULL
    data, _ = global_batches(config, 1)
    steps = args.steps or 2 * (len(data.train_items) // config.batch_size)
    context = torch.multiprocessing.get_context("spawn")
    results = context.Queue()
    with tempfile.TemporaryDirectory() as folder:
        init = "file://" + os.path.join(folder, "rendezvous")
        processes = [context.Process(target=sharded_run, args=(rank, init, config, steps, results))
                     for rank in range(WORKERS)]
        for process in processes:
            process.start()
        sharded = results.get()
        for process in processes:
            process.join()
    single = one_process_run(config, steps)
    difference = float(np.max(np.abs(np.subtract(sharded, single))))
    for step in sorted({0, 1, steps // 4, steps // 2, 3 * steps // 4, steps - 1}):
        print(f"step {step:5d}: {WORKERS} processes {sharded[step]:.6f}   one process {single[step]:.6f}")
    print(f"{config.num_items} items, {steps} steps of {config.batch_size} rows: largest difference between the "
          f"curves {difference:.2e}")
    result = {"framework": "torch", "workers": WORKERS, "items": config.num_items, "steps": steps,
              "sharded_losses": sharded, "one_process_losses": single, "max_difference": difference}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
