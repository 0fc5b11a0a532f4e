"""Keras ``fit`` per training step: the two-tower model of ``examples/two_tower_keras.py`` with recloss's
``Retrieval`` task against the same model with a plain Keras loss, on each Keras backend.

    python benchmarks/keras_fit.py                          # every installed backend, 3 runs of each variant
    python benchmarks/keras_fit.py --backend torch --runs 5

Variants (4000 users, 3000 items, D = 32, batch 512, temperature 0.1, Adam):

* ``plain``: ``compute_loss`` returns ``mean(sparse_categorical_crossentropy(arange(B), q @ c.T / T))``, the
  in-batch softmax a Keras user writes by hand;
* ``recloss``: ``recloss.keras.Retrieval(temperature=T, in_batch=True)(q, c)``, the same math;
* ``recloss, ids``: the same with ``pos_ids=item`` (accidental hits removed), as the example trains.

Each run is its own subprocess (``KERAS_BACKEND`` is read once, at import) running 3 epochs of 40 steps; the time of
a step is measured by a callback from ``on_train_batch_begin`` to ``on_train_batch_end``, and a run reports the
median over its last two epochs (the first epoch holds the tracing and compilation). Variants alternate run by
run; the table gives the median over runs and the ratio to ``plain`` on the same backend.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402

VARIANTS = ("plain", "recloss", "recloss, ids")
BATCH, DIM, USERS, ITEMS, TEMPERATURE, STEPS, EPOCHS = 512, 32, 4000, 3000, 0.1, 40, 3


def worker(settings: dict[str, Any]) -> dict[str, Any]:
    """One run of ``settings["variant"]``, torch limited to ``settings["threads"]`` where given."""
    if os.environ.get("KERAS_BACKEND") == "torch" and settings.get("threads"):
        import torch
        torch.set_num_threads(settings["threads"])
    return run(settings["variant"])


def run(variant: str) -> dict[str, Any]:
    """One training run in this process (``KERAS_BACKEND`` already set); the per-step times in seconds."""
    import time

    import keras
    import numpy as np
    from keras import ops

    import recloss.keras

    class TwoTower(keras.Model):
        def __init__(self) -> None:
            super().__init__()
            init = keras.initializers.RandomNormal(stddev=0.1)
            self.users = keras.layers.Embedding(USERS, DIM, embeddings_initializer=init)
            self.items = keras.layers.Embedding(ITEMS, DIM, embeddings_initializer=init)
            self.task = recloss.keras.Retrieval(temperature=TEMPERATURE, in_batch=True)

        def build(self, input_shape: dict) -> None:
            self.users.build(input_shape["user"])
            self.items.build(input_shape["item"])

        def call(self, x: dict) -> tuple:
            return ops.normalize(self.users(x["user"]), axis=-1), ops.normalize(self.items(x["item"]), axis=-1)

        def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                         training: bool = True) -> Any:
            query, candidate = y_pred
            if variant == "recloss":
                return self.task(query, candidate)
            if variant == "recloss, ids":
                return self.task(query, candidate, pos_ids=x["item"])
            logits = ops.matmul(query, ops.transpose(candidate)) / TEMPERATURE
            labels = ops.arange(ops.shape(query)[0])
            return ops.mean(keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True))

    class Timer(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch: int, logs: Any = None) -> None:
            self.start = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: Any = None) -> None:
            times.append(time.perf_counter() - self.start)

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = {"user": rng.integers(0, USERS, BATCH * STEPS), "item": rng.integers(0, ITEMS, BATCH * STEPS)}
    model = TwoTower()
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    times: list[float] = []
    model.fit(x, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0, callbacks=[Timer()])
    return {"step_s": statistics.median(times[STEPS:]), "first_step_s": times[0], "steps": len(times)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="append", choices=("torch", "jax", "tensorflow"))
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: all cores)")
    args = parser.parse_args(argv)
    backends = args.backend or [b for b in ("torch", "jax", "tensorflow") if importlib.util.find_spec(b)]
    results: dict[tuple, list] = {}
    for backend in backends:
        for _ in range(args.runs):
            for variant in VARIANTS:
                env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
                config = {"variant": variant, "threads": args.threads}
                outcome = protocol.run([os.path.abspath(__file__), "--worker"], config, env)
                if outcome.get("ok") is False:
                    print(f"{backend} {variant}: failed: {outcome['error']}")
                    continue
                results.setdefault((backend, variant), []).append(outcome)
    print("| backend | variant | ms per step (median over runs) | / plain | first step, ms |")
    print("|---|---|---|---|---|")
    for backend in backends:
        plain = results.get((backend, "plain"))
        plain_ms = statistics.median(r["step_s"] for r in plain) * 1e3 if plain else None
        for variant in VARIANTS:
            runs = results.get((backend, variant))
            if not runs:
                continue
            ms = statistics.median(r["step_s"] for r in runs) * 1e3
            first = statistics.median(r["first_step_s"] for r in runs) * 1e3
            ratio = f"{ms / plain_ms:.2f}" if plain_ms else "–"
            print(f"| {backend} | {variant} | {ms:.1f} | {ratio} | {first:.0f} |")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--worker":
        protocol.serve(worker, sys.argv[2])
        sys.exit(0)
    sys.exit(main())
