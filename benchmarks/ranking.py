"""Ranking losses: forward + backward at (B, L) = (1024, 200) on every backend, against rax under ``jax.jit``
and keras-rs (TensorFlow and torch Keras backends) where they have the loss.

    python benchmarks/ranking.py                     # every loss and implementation, 2 rounds (~40 min, 2 cores)
    python benchmarks/ranking.py --quick             # B = 128, 1 round, 3 repetitions (smoke run)
    python benchmarks/ranking.py --losses listmle_loss --rounds 1

Every configuration (loss x implementation) runs in its own subprocess: the gradient with respect to the
scores, the median of ``--reps`` steps after two warm-up steps, and the peak resident memory of one step above
the resident memory before it, as a multiple of one float32 ``[B, L, L]`` pair block. Configurations are run
in interleaved rounds and each figure is the median over rounds; the ratios (recloss's time / the other
library's time, same framework and mode) come from the same run. Inputs: scores ~ N(0, 1), graded labels
0..4 (0/1 for the pointwise loss), every item valid, float32. Results: ``benchmarks/results/ranking.{json,md}``.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memory  # noqa: E402
import protocol  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")

#: loss -> (recloss options, rax function name (None: rax lacks it), keras-rs class name (None: it lacks it))
LOSSES: dict[str, tuple[dict, str | None, str | None]] = {
    "listwise_softmax_loss": ({}, "softmax_loss", None),
    "poly1_softmax_loss": ({}, "poly1_softmax_loss", None),
    "listmle_loss": ({}, "listmle_loss", "ListMLELoss"),
    "approx_ndcg_loss": ({}, "approx_ndcg", None),
    "pairwise_logistic_loss": ({}, "pairwise_logistic_loss", "PairwiseLogisticLoss"),
    "pairwise_logistic_loss+ndcg": ({"lambdaweight": "ndcg"}, "pairwise_logistic_loss+ndcg", None),
    "pairwise_hinge_loss": ({}, "pairwise_hinge_loss", "PairwiseHingeLoss"),
    "pairwise_soft_zero_one_loss": ({}, "pairwise_soft_zero_one_loss", "PairwiseSoftZeroOneLoss"),
    "pointwise_sigmoid_loss": ({}, "pointwise_sigmoid_loss", None),
}

#: (library, framework, mode): recloss on each backend, then the baselines.
IMPLEMENTATIONS = [("recloss", "torch", "eager"), ("recloss", "jax", "jit"), ("recloss", "tensorflow", "eager"),
                   ("recloss", "tensorflow", "xla"), ("rax", "jax", "jit"), ("keras-rs", "torch", "eager"),
                   ("keras-rs", "tensorflow", "eager"), ("keras-rs", "tensorflow", "xla")]


# ----------------------------------------------------------------------------------------------------------
# Worker: one configuration in this process


def _inputs(loss: str, batch: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((batch, size), dtype=np.float32)
    labels = rng.integers(0, 5, size=(batch, size)).astype(np.float32)
    if loss == "pointwise_sigmoid_loss":
        labels = (labels >= 3).astype(np.float32)
    return scores, labels


def _rax_loss(name: str) -> Callable[[Any, Any], Any]:
    import functools

    import jax
    import rax

    if name == "approx_ndcg":  # rax.approx_t12n(rax.ndcg_metric) fails on JAX 0.10 (jax.util.wraps): its body
        step = jax.nn.sigmoid
        return lambda s, y: -rax.ndcg_metric(s, y, rank_fn=functools.partial(rax.utils.approx_ranks, step_fn=step),
                                             cutoff_fn=functools.partial(rax.utils.approx_cutoff, step_fn=step))
    if name == "pairwise_logistic_loss+ndcg":
        weights = functools.partial(rax.dcg_lambdaweight, normalize=True)
        return lambda s, y: rax.pairwise_logistic_loss(s, y, lambdaweight_fn=weights)
    return getattr(rax, name)


def build_step(library: str, framework: str, mode: str, loss: str, scores: np.ndarray, labels: np.ndarray
               ) -> Callable[[], Any]:
    """A no-argument function running one forward + backward (gradient with respect to the scores)."""
    options, rax_name, keras_name = LOSSES[loss]
    if library == "recloss":
        import recloss
        function = getattr(recloss, loss.split("+")[0])
        fn = lambda s, y: function(s, y, **options)  # noqa: E731
    elif library == "rax":
        fn = _rax_loss(rax_name)
    else:
        import keras_rs
        keras_loss = getattr(keras_rs.losses, keras_name)()
        fn = lambda s, y: keras_loss(y, s)  # noqa: E731

    if framework == "torch":
        import torch
        s, y = torch.from_numpy(scores).requires_grad_(True), torch.from_numpy(labels)
        return lambda: torch.autograd.grad(fn(s, y), [s])
    # Labels are arguments of the compiled step, as in training: closed over, they would be constants that
    # XLA folds at compile time (a [B, L, L] comparison block of constants, a sort of constants).
    if framework == "jax":
        import jax
        s, y = jax.numpy.asarray(scores), jax.numpy.asarray(labels)
        grad = jax.jit(jax.value_and_grad(fn))
        return lambda: jax.block_until_ready(grad(s, y))
    import tensorflow as tf
    s, y = tf.constant(scores), tf.constant(labels)

    def value_and_grad(a, b):
        with tf.GradientTape() as tape:
            tape.watch(a)
            value = fn(a, b)
        return value, tape.gradient(value, a)
    if mode == "xla":
        value_and_grad = tf.function(value_and_grad, jit_compile=True)
    return lambda: [t.numpy() for t in value_and_grad(s, y)]


def worker(config: dict[str, Any]) -> dict[str, Any]:
    batch, size = config["shape"]
    scores, labels = _inputs(config["loss"], batch, size)
    step = build_step(config["library"], config["framework"], config["mode"], config["loss"], scores, labels)
    for _ in range(2):
        result = step()
    del result
    gc.collect()
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    before = memory.status("VmRSS")
    result = step()
    peak = memory.status("VmHWM") - before
    del result
    times = []
    for _ in range(config["reps"]):
        start = time.perf_counter()
        result = step()
        times.append(time.perf_counter() - start)
        del result
    return {**config, "ok": True, "step_s": statistics.median(times),
            "peak_blocks": peak / (4.0 * batch * size * size)}


# ----------------------------------------------------------------------------------------------------------
# Orchestrator


def _available(library: str, framework: str) -> bool:
    import importlib.util
    module = {"recloss": "recloss", "rax": "rax", "keras-rs": "keras_rs"}[library]
    return importlib.util.find_spec(module) is not None and importlib.util.find_spec(framework) is not None


def run_one(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0", "PYTHONWARNINGS": "ignore",
           "MALLOC_MMAP_THRESHOLD_": "131072", "MALLOC_TRIM_THRESHOLD_": "131072",
           "KERAS_BACKEND": config["framework"]}
    return protocol.run([os.path.abspath(__file__), "--worker"], config, env, timeout)


def table(results: list[dict[str, Any]], shape: tuple[int, int]) -> str:
    """Markdown: per loss, each implementation's median step (ms) and peak memory, and the ratios."""
    by = {(r["loss"], r["library"], r["framework"], r["mode"]): r for r in results if r.get("ok")}

    def cell(loss, library, framework, mode):
        r = by.get((loss, library, framework, mode))
        return "-" if r is None else f"{1e3 * r['step_s']:.0f} ms, {r['peak_blocks']:.2f}"

    def ratio(loss, framework, mode, other):
        a, b = by.get((loss, "recloss", framework, mode)), by.get((loss, other, framework, mode))
        return "-" if a is None or b is None else f"{a['step_s'] / b['step_s']:.2f}"

    heads = [f"{lib} {fw} {mode}" for lib, fw, mode in IMPLEMENTATIONS]
    lines = [f"Forward + backward at (B, L) = {shape}, float32: median step, peak memory in float32 [B, L, L] "
             "blocks; ratio = recloss time / the other library's time (same framework and mode).", "",
             "| loss | " + " | ".join(heads) + " | vs rax (jax.jit) | vs keras-rs torch | vs keras-rs TF eager | "
             "vs keras-rs TF XLA |", "|" + "---|" * (len(heads) + 5)]
    for loss in dict.fromkeys(r["loss"] for r in results):
        cells = [cell(loss, *impl) for impl in IMPLEMENTATIONS]
        ratios = [ratio(loss, "jax", "jit", "rax"), ratio(loss, "torch", "eager", "keras-rs"),
                  ratio(loss, "tensorflow", "eager", "keras-rs"), ratio(loss, "tensorflow", "xla", "keras-rs")]
        lines.append(f"| {loss} | " + " | ".join(cells + ratios) + " |")
    failed = [r for r in results if not r.get("ok")]
    for r in failed:
        lines.append(f"\nFAILED {r['loss']} {r['library']} {r['framework']} {r['mode']}: {r.get('error')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="B = 128, 1 round, 3 repetitions")
    parser.add_argument("--losses", nargs="*", default=list(LOSSES), choices=list(LOSSES))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--timeout", type=float, default=600.0)
    parser.add_argument("--out", default=os.path.join(RESULTS, "ranking"))
    args = parser.parse_args(argv)
    if args.worker:
        protocol.serve(worker, args.worker)
        return 0

    shape = (128, 200) if args.quick else (1024, 200)
    rounds, reps = (1, 3) if args.quick else (args.rounds, args.reps)
    configs = []
    for loss in args.losses:
        _, rax_name, keras_name = LOSSES[loss]
        for library, framework, mode in IMPLEMENTATIONS:
            if (library == "rax" and rax_name is None) or (library == "keras-rs" and keras_name is None):
                continue
            if _available(library, framework):
                configs.append({"loss": loss, "library": library, "framework": framework, "mode": mode,
                                "shape": list(shape), "reps": reps})
    runs: dict[int, list[dict]] = {i: [] for i in range(len(configs))}
    started = datetime.datetime.now(datetime.timezone.utc)
    for round_index in range(rounds):
        for i, config in enumerate(configs):
            result = run_one(config, args.timeout)
            runs[i].append(result)
            status = f"{1e3 * result['step_s']:.0f} ms" if result.get("ok") else result.get("error")
            print(f"[{round_index + 1}/{rounds}] {config['loss']} {config['library']} {config['framework']} "
                  f"{config['mode']}: {status}", file=sys.stderr, flush=True)
    results = []
    for i, config in enumerate(configs):
        good = [r for r in runs[i] if r.get("ok")]
        if not good:
            results.append(runs[i][-1])
            continue
        results.append({**config, "ok": True, "step_s": statistics.median(r["step_s"] for r in good),
                        "peak_blocks": statistics.median(r["peak_blocks"] for r in good), "rounds": len(good),
                        "step_s_each_round": [r["step_s"] for r in good]})
    header = (f"{started:%Y-%m-%d %H:%M} UTC, {platform.machine()} {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} at the end; `python benchmarks/ranking.py"
              f"{' --quick' if args.quick else ''}` ({rounds} rounds x {reps} repetitions)")
    markdown = header + "\n\n" + table(results, shape)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as handle:
        json.dump({"started": started.isoformat(), "shape": shape, "results": results}, handle, indent=1)
    with open(args.out + ".md", "w") as handle:
        handle.write(markdown + "\n")
    print(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
