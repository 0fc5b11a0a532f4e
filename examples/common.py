"""What the three two-tower examples share: settings, command line, batches, evaluation, baseline, output.

Each example (``two_tower_torch.py``, ``two_tower_jax.py``, ``two_tower_keras.py``) defines only its model and
training loop, a function ``train(data, config, use_log_q) -> TrainResult``, and hands it to :func:`main`,
which generates the data, trains with and without logQ correction, evaluates both models and a popularity
baseline over the whole item catalogue with :mod:`recloss.metrics`, and prints a table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator

import numpy as np

import recloss.metrics

from data import Interactions, generate

CUTOFFS = (10, 50)
POPULAR_SHARE = 0.2  # the most frequent 20% of the items are "popular", the rest "rare"


@dataclass(frozen=True)
class Config:
    """The data size and the training settings of one run."""

    num_users: int
    num_items: int
    epochs: int
    batch_size: int
    dim: int = 32
    learning_rate: float = 0.01
    temperature: float = 0.1
    seed: int = 0
    #: Where logQ comes from: "exact" (each item's share of the training log, known in advance) or "estimated"
    #: (recloss' streaming frequency estimator, fed the batches' item ids during training).
    log_q_source: str = "exact"


FULL = Config(num_users=4000, num_items=3000, epochs=10, batch_size=512)
SHORT = Config(num_users=600, num_items=400, epochs=10, batch_size=256)


@dataclass
class TrainResult:
    """What a training run returns: the mean loss of each epoch and the trained tower outputs."""

    epoch_losses: list[float]
    user_embeddings: np.ndarray  # [num_users, dim]
    item_embeddings: np.ndarray  # [num_items, dim]


TrainFn = Callable[[Interactions, Config, bool], TrainResult]


def parse_args(framework: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The examples' command line: ``--short``, ``--logq off|on|both``, ``--epochs N``, ``--seed S``."""
    parser = argparse.ArgumentParser(description=f"Two-tower retrieval with recloss on {framework}: in-batch "
                                     "sampled softmax with accidental-hit removal, with and without logQ "
                                     "correction, evaluated over the whole item catalogue.")
    parser.add_argument("--short", action="store_true",
                        help=f"small data and few steps (CI): {SHORT.num_users} users x {SHORT.num_items} items")
    parser.add_argument("--logq", choices=("off", "on", "both"), default="both",
                        help="train without logQ correction, with it, or both (default)")
    parser.add_argument("--logq-source", choices=("exact", "estimated", "both"), default="exact",
                        help="logQ from the exact item frequencies of the training log (default), from recloss' "
                             "streaming frequency estimator fed the training batches, or both (two models)")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the initialisation")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    """The short or full settings, with the seed and the number of epochs of the command line."""
    config = replace(SHORT if args.short else FULL, seed=args.seed)
    return config if args.epochs is None else replace(config, epochs=args.epochs)


def batches(data: Interactions, batch_size: int, rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of shuffled training batches ``{"user", "item", "log_q"}`` (int64, int64, float32 ``[B]``;
    ``log_q`` is the exact log share of each item in the training log). The last incomplete batch is dropped,
    so that every step has the same shapes (one compilation)."""
    order = rng.permutation(len(data.train_items))
    log_q = data.item_log_q
    for start in range(0, len(order) - batch_size + 1, batch_size):
        rows = order[start:start + batch_size]
        items = data.train_items[rows]
        yield {"user": data.train_users[rows], "item": items, "log_q": log_q[items]}


def evaluate(scores: np.ndarray, data: Interactions, backend: str) -> dict[str, float]:
    """Recall@k and NDCG@k of ``scores`` ``[num_users, num_items]`` (every user against every item) on the
    held-out interactions, computed with :mod:`recloss.metrics` on ``backend``.

    Each user's training items are masked out (they are not candidates); the labels are the user's held-out
    items. Recall is also reported on popular and on rare held-out items only: the labels are then that
    group's held-out items, the ranking is still over the whole catalogue, and users with no held-out item in
    the group get ``sample_weight`` 0.
    """
    shape = (data.num_users, data.num_items)
    labels = np.zeros(shape, np.float32)
    labels[data.test_users, data.test_items] = 1.0
    candidates = np.ones(shape, bool)
    candidates[data.train_users, data.train_items] = False
    scores = scores.astype(np.float32)

    def metric(name: str, k: int, group: np.ndarray | None = None) -> float:
        group_labels = labels if group is None else labels * group
        weight = (group_labels.sum(axis=1) > 0).astype(np.float32)
        value = getattr(recloss.metrics, name)(scores, group_labels, k=k, mask=candidates, sample_weight=weight,
                                               backend=backend)
        return float(value)

    popular = data.popular_items(POPULAR_SHARE)
    results = {}
    for k in CUTOFFS:
        results[f"recall@{k}"] = metric("recall", k)
        results[f"ndcg@{k}"] = metric("ndcg", k)
        results[f"recall@{k} popular"] = metric("recall", k, popular)
        results[f"recall@{k} rare"] = metric("recall", k, ~popular)
    return results


def popularity_scores(data: Interactions) -> np.ndarray:
    """The popularity baseline: every user scores each item by its training frequency."""
    return np.broadcast_to(data.item_counts.astype(np.float32), (data.num_users, data.num_items))


COLUMNS = ("recall@10", "recall@50", "ndcg@10", "ndcg@50", "recall@10 popular", "recall@10 rare",
           "recall@50 popular", "recall@50 rare")


def table(rows: dict[str, dict[str, float]]) -> str:
    """A Markdown table: one row per model, one column per metric."""
    lines = ["| model | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(f"{metrics[c]:.4f}" for c in COLUMNS) + " |"
              for name, metrics in rows.items()]
    return "\n".join(lines)


VARIANTS = {"off": [False], "on": [True], "both": [False, True]}
SOURCES = {"exact": ["exact"], "estimated": ["estimated"], "both": ["exact", "estimated"]}


def variants(args: argparse.Namespace) -> list[tuple[str, str, bool, str]]:
    """``(table name, JSON key, use_log_q, log_q_source)`` of each model to train."""
    out = []
    for use_log_q in VARIANTS[args.logq]:
        if not use_log_q:
            out.append(("in-batch softmax", "no_logq", False, "exact"))
            continue
        for source in SOURCES[args.logq_source]:
            estimated = source == "estimated"
            out.append(("in-batch softmax + logQ" + (" (estimated)" if estimated else ""),
                        "logq_estimated" if estimated else "logq", True, source))
    return out


def main(framework: str, train: TrainFn, backend: str, argv: list[str] | None = None) -> dict[str, Any]:
    """Run an example: generate the data, train each variant, evaluate, print the table and, last, one JSON
    line with everything (what the tests read). ``backend`` is the recloss backend the metrics run on."""
    args = parse_args(framework, argv)
    config = config_from_args(args)
    data = generate(config.num_users, config.num_items, seed=config.seed)
    print(f"{framework}: {data.num_users} users x {data.num_items} items, {len(data.train_items)} training and "
          f"{len(data.test_items)} held-out interactions; {config}", flush=True)

    popularity = evaluate(popularity_scores(data), data, backend)
    rows = {"popularity": popularity}
    runs = {}
    for name, key, use_log_q, source in variants(args):
        start = time.perf_counter()
        result = train(data, replace(config, log_q_source=source), use_log_q)
        seconds = time.perf_counter() - start
        losses = " ".join(f"{loss:.4f}" for loss in result.epoch_losses)
        print(f"{name}: loss per epoch {losses} ({seconds:.1f} s)", flush=True)
        rows[name] = evaluate(result.user_embeddings @ result.item_embeddings.T, data, backend)
        runs[key] = {"epoch_losses": result.epoch_losses, "metrics": rows[name], "train_seconds": seconds}
    print(table(rows))
    summary = {"framework": framework, "mode": "short" if args.short else "full", "config": asdict(config),
               "popularity": popularity, "runs": runs}
    print(json.dumps(summary), flush=True)
    return summary
