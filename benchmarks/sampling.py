"""The targets of the streaming frequency estimator (README, "Sampling probabilities"):

    python benchmarks/sampling.py accuracy  [--backend jax] [--steps 1000] [--batch 1024] [--items 100000]
    python benchmarks/sampling.py memory
    python benchmarks/sampling.py cost      [--backend torch|jax|tensorflow] [--threads 1] [--repeats 21]
    python benchmarks/sampling.py examples  [--short]
    python benchmarks/sampling.py all       (the four, every installed backend for cost)

* ``accuracy``: a stream of Zipf(1.1) ids over ``--items`` items (the popularity ranks shuffled over the ids), in
  batches of ``--batch``, ``--steps`` training steps of the estimator at its defaults (2**20 buckets, 2 hash
  functions, decay 2**-7); then the mean ``|log Q_est - log Q_true|`` (``Q_true = batch * p_item``, the expected
  count per batch) over the items whose expected count is at least 0.5, and between 0.05 and 0.5. Every
  backend gives the same state bit for bit; ``--backend`` only chooses the one that computes it.
* ``memory``: the bytes of the estimator's state at the defaults, as each framework holds it.
* ``cost``: a training call of the estimator (read, count, state update) on 4096 Zipfian ids against the loss
  it feeds, ``sampled_softmax_loss`` at (B, N, D) = (4096, 4096, 64) with ``pos_log_q``, ``pos_ids`` and
  shared negatives (forward, and forward + backward), timed alternately in one process: medians and their
  ratio. torch eager (the module), ``jax.jit``, ``tf.function(jit_compile=True)``.
* ``examples``: the worked two-tower examples (``examples/``) trained with logQ from the exact item
  frequencies and from the estimator (``--logq on --logq-source both``), each framework (Keras on each Keras
  backend), full mode unless ``--short``; recall@10 of both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

BANDS = ((0.5, float("inf")), (0.05, 0.5))


def zipf_stream(items: int, batch: int, steps: int, seed: int = 0):
    """``(ids per step, expected count per batch of each id)``: Zipf(1.1) popularity over shuffled ids."""
    rng = np.random.default_rng(seed)
    p = np.arange(1, items + 1, dtype=np.float64) ** -1.1
    p /= p.sum()
    ids = rng.permutation(items)             # ids[r] has popularity rank r + 1
    probability = np.empty(items)
    probability[ids] = p
    cumulative = np.cumsum(p)
    draws = (ids[np.minimum(np.searchsorted(cumulative, rng.random(batch) * cumulative[-1]), items - 1)]
             for _ in range(steps))
    return draws, batch * probability


def accuracy(args: argparse.Namespace) -> dict:
    from recloss import sampling

    from recloss._dispatch import available_backends

    backend = args.backend or ("jax" if "jax" in available_backends() else "torch")   # the fastest here
    convert = _converter(backend)
    step = sampling.frequency_update
    if backend == "jax":
        import jax
        step = jax.jit(sampling.frequency_update)
    state = sampling.frequency_init(backend=backend)
    draws, expected = zipf_stream(args.items, args.batch, args.steps)
    start = time.perf_counter()
    for ids in draws:
        _, state = step(state, convert(ids))
    seconds = time.perf_counter() - start
    log_q = np.asarray(_numpy(sampling.frequency_log_q(state, convert(np.arange(args.items)))), np.float64)
    error = np.abs(log_q - np.log(expected))
    out = {"backend": backend, "items": args.items, "batch": args.batch, "steps": args.steps,
           "num_buckets": sampling.NUM_BUCKETS, "num_hashes": sampling.NUM_HASHES, "decay": sampling.DECAY,
           "seconds": round(seconds, 1), "bands": []}
    for low, high in BANDS:
        band = (expected >= low) & (expected < high)
        out["bands"].append({"expected_count": [low, high], "items": int(band.sum()),
                             "mean_abs_log_error": float(error[band].mean()),
                             "median_abs_log_error": float(np.median(error[band]))})
    return out


def memory(args: argparse.Namespace) -> dict:
    from recloss import sampling
    from recloss._dispatch import available_backends

    out = {"defaults": {"num_buckets": sampling.NUM_BUCKETS, "num_hashes": sampling.NUM_HASHES,
                        "decay": sampling.DECAY}}
    installed = available_backends()
    if "torch" in installed:
        import recloss.torch
        module = recloss.torch.FrequencyEstimator()
        out["torch FrequencyEstimator buffers"] = sum(b.numel() * b.element_size() for b in module.buffers())
    if "jax" in installed:
        out["jax frequency_init() arrays"] = sum(int(x.nbytes) for x in sampling.frequency_init(backend="jax"))
    if "tensorflow" in installed:
        out["tensorflow frequency_init() tensors"] = sum(
            int(np.asarray(x).nbytes) for x in sampling.frequency_init(backend="tensorflow"))
    return out


def _converter(backend: str):
    if backend == "torch":
        import torch
        return torch.from_numpy
    if backend == "jax":
        import jax.numpy as jnp
        return lambda x: jnp.asarray(x.astype(np.int32))
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.constant
    return lambda x: x


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
    return np.asarray(x)


def cost(args: argparse.Namespace) -> dict:
    """Medians of the estimator's training call and of the loss, timed alternately."""
    backend = args.backend or "torch"
    import recloss
    from recloss import sampling

    batch, negatives, dim = 4096, 4096, 64
    rng = np.random.default_rng(0)
    draws, _ = zipf_stream(100_000, batch, args.repeats + 3, seed=1)
    id_batches = list(draws)
    q, pos, neg = (rng.normal(size=(n, dim)).astype(np.float32) / 8 for n in (batch, batch, negatives))
    neg_log_q = np.log(rng.uniform(1e-4, 1e-2, negatives)).astype(np.float32)
    if backend == "torch":
        import torch
        import recloss.torch
        torch.set_num_threads(args.threads)
        estimator = recloss.torch.FrequencyEstimator()
        tensors = [torch.from_numpy(x) for x in (q, pos, neg, neg_log_q)]

        def update(ids):
            return estimator(torch.from_numpy(ids))

        def loss(log_q, ids, backward):
            leaves = [t.detach().requires_grad_(backward) for t in tensors[:3]]
            value = recloss.sampled_softmax_loss(*leaves, pos_log_q=log_q, neg_log_q=tensors[3],
                                                 pos_ids=torch.from_numpy(ids), temperature=0.05)
            if backward:
                value.backward()
            return value
        sync = lambda x: x  # noqa: E731
        label = f"torch {torch.__version__} eager (the module), {args.threads} thread(s)"
    elif backend == "jax":
        import jax
        import jax.numpy as jnp
        state = [sampling.frequency_init()]
        step = jax.jit(sampling.frequency_update)
        arrays = [jnp.asarray(x) for x in (q, pos, neg, neg_log_q)]

        def update(ids):
            log_q, state[0] = step(state[0], jnp.asarray(ids.astype(np.int32)))
            return log_q

        def loss_fn(q, pos, neg, log_q, ids):
            return recloss.sampled_softmax_loss(q, pos, neg, pos_log_q=log_q, neg_log_q=arrays[3], pos_ids=ids,
                                                temperature=0.05)
        forward = jax.jit(loss_fn)
        both = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1, 2)))

        def loss(log_q, ids, backward):
            return (both if backward else forward)(*arrays[:3], log_q, jnp.asarray(ids.astype(np.int32)))
        sync = jax.block_until_ready
        flags = os.environ.get("XLA_FLAGS", "")
        label = f"jax {jax.__version__} jax.jit (XLA CPU; XLA_FLAGS={flags!r})"
    else:
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        state = [sampling.frequency_init(backend="tensorflow")]
        step = tf.function(sampling.frequency_update, jit_compile=True)
        tensors = [tf.constant(x) for x in (q, pos, neg, neg_log_q)]

        def update(ids):
            log_q, state[0] = step(state[0], tf.constant(ids))
            return log_q

        def loss_fn(q, pos, neg, log_q, ids):
            return recloss.sampled_softmax_loss(q, pos, neg, pos_log_q=log_q, neg_log_q=tensors[3], pos_ids=ids,
                                                temperature=0.05)

        @tf.function(jit_compile=True)
        def forward(q, pos, neg, log_q, ids):
            return loss_fn(q, pos, neg, log_q, ids)

        @tf.function(jit_compile=True)
        def both(q, pos, neg, log_q, ids):
            with tf.GradientTape() as tape:
                tape.watch([q, pos, neg])
                value = loss_fn(q, pos, neg, log_q, ids)
            return value, tape.gradient(value, [q, pos, neg])

        def loss(log_q, ids, backward):
            return (both if backward else forward)(*tensors[:3], log_q, tf.constant(ids))
        sync = lambda x: tf.nest.map_structure(lambda t: t.numpy(), x)  # noqa: E731
        label = f"tensorflow {tf.__version__} tf.function(jit_compile=True), {args.threads} intra-op thread(s)"

    times: dict[str, list[float]] = {"update": [], "loss forward": [], "loss forward+backward": []}
    for ids in id_batches:
        start = time.perf_counter()
        log_q = update(ids)
        sync(log_q)
        times["update"].append(time.perf_counter() - start)
        for name, backward in (("loss forward", False), ("loss forward+backward", True)):
            start = time.perf_counter()
            sync(loss(log_q, ids, backward))
            times[name].append(time.perf_counter() - start)
    warm = {name: values[3:] for name, values in times.items()}     # the first calls compile
    medians = {name: statistics.median(values) for name, values in warm.items()}
    return {"backend": backend, "how": label, "repeats": len(warm["update"]),
            "median_ms": {name: round(1000 * value, 2) for name, value in medians.items()},
            "update / loss forward": round(medians["update"] / medians["loss forward"], 3),
            "update / loss forward+backward": round(medians["update"] / medians["loss forward+backward"], 3)}


def thread_env(threads: int) -> dict[str, str]:
    """The environment of a subprocess limited to ``threads`` intra-op threads (XLA: one thread, no Eigen pool)."""
    env = {"OMP_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
    if threads == 1:
        env["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    return env


EXAMPLES = [("PyTorch", "two_tower_torch.py", None), ("JAX", "two_tower_jax.py", None),
            ("Keras (tensorflow)", "two_tower_keras.py", "tensorflow"), ("Keras (jax)", "two_tower_keras.py", "jax"),
            ("Keras (torch)", "two_tower_keras.py", "torch")]


def examples(args: argparse.Namespace) -> list[dict]:
    out = []
    for name, script, keras_backend in EXAMPLES:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TF_CPP_MIN_LOG_LEVEL": "2"}
        if keras_backend:
            env["KERAS_BACKEND"] = keras_backend
        command = [sys.executable, str(ROOT / "examples" / script), "--logq", "on", "--logq-source", "both"] + (
            ["--short"] if args.short else [])
        run = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT / "examples", timeout=7200)
        if run.returncode:
            out.append({"example": name, "error": run.stderr[-2000:]})
            continue
        summary = json.loads(run.stdout.strip().splitlines()[-1])
        exact, estimated = summary["runs"]["logq"]["metrics"], summary["runs"]["logq_estimated"]["metrics"]
        out.append({"example": name, "mode": summary["mode"], "recall@10 exact": exact["recall@10"],
                    "recall@10 estimated": estimated["recall@10"],
                    "ratio": estimated["recall@10"] / exact["recall@10"],
                    "recall@50 exact": exact["recall@50"], "recall@50 estimated": estimated["recall@50"],
                    "train seconds (exact, estimated)": [summary["runs"]["logq"]["train_seconds"],
                                                         summary["runs"]["logq_estimated"]["train_seconds"]]})
        print(json.dumps(out[-1]), file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=("accuracy", "memory", "cost", "examples", "all"))
    parser.add_argument("--backend", choices=("torch", "jax", "tensorflow"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=1024)
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=21)
    parser.add_argument("--short", action="store_true", help="examples: the short mode")
    args = parser.parse_args(argv)
    results = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": " ".join(sys.argv)}
    if args.what in ("accuracy", "all"):
        results["accuracy"] = accuracy(args)
        print(json.dumps(results["accuracy"]), file=sys.stderr, flush=True)
    if args.what in ("memory", "all"):
        results["memory"] = memory(args)
    if args.what in ("cost", "all"):
        if args.backend or args.what == "cost":
            results["cost"] = [cost(args)]
        else:
            from recloss._dispatch import available_backends
            results["cost"] = []
            for backend in [b for b in ("torch", "jax", "tensorflow") if b in available_backends()]:
                run = subprocess.run([sys.executable, __file__, "cost", "--backend", backend, "--threads",
                                      str(args.threads), "--repeats", str(args.repeats)], capture_output=True,
                                     text=True, env={**os.environ, **thread_env(args.threads)})
                results["cost"] += json.loads(run.stdout)["cost"] if not run.returncode else [
                    {"backend": backend, "error": run.stderr[-2000:]}]
    if args.what in ("examples", "all"):
        results["examples"] = examples(args)
    print(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
