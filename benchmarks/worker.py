"""Runs ONE benchmark configuration in a fresh process and prints one JSON line (used by run.py).

    python benchmarks/worker.py '{"backend": "torch", "mode": "eager", "workload": "unsupervised_softmax",
                                  "shape": [256, 2560, 64], "reps": 10, "warmup": 2}'

Time: the median of ``reps`` forward+backward steps after ``warmup`` steps, each step alternating with the
*floor* (one float32 ``[B, D] x [D, N]`` NumPy matmul into a preallocated output) with a 50 ms pause between
them, so the ratio ``step / floor`` is measured under the same machine conditions.
Memory: the peak resident set size (``VmHWM``) during one step, above the resident size just before it (the
inputs, the floor's buffers and the framework are already resident). The peak is reset with
``/proc/self/clear_refs`` after warm-up, and run.py sets ``MALLOC_MMAP_THRESHOLD_`` so that large buffers are
returned to the system when freed (a freed buffer kept by malloc would hide the next step's allocation).
"""

from __future__ import annotations

import gc
import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402
import workloads  # noqa: E402
from memory import reset_peak, status  # noqa: E402

PAUSE = 0.05


def build_step(backend: str, mode: str, workload: str, inputs: dict[str, np.ndarray],
               wrt: list[str]) -> Callable[[], Any]:
    """A no-argument function running one forward+backward and waiting for its result."""
    if workload == "graphlearn":
        fn = workloads.graphlearn_tf
    elif workload == "plain":
        fn = workloads.plain(backend)
    elif workload == "plain_in_batch":
        fn = workloads.plain_in_batch(backend)
    elif workload == "exact_in_batch":
        fn = workloads.exact_in_batch(backend)
    elif workload == "matmul":
        fn = None
    else:
        fn = workloads.loss_function(workload)

    if backend == "numpy":              # the floor's own product, in a process with its own OpenBLAS settings
        out = np.empty((inputs["a"].shape[0], inputs["b_t"].shape[1]), np.float32)
        return lambda: np.matmul(inputs["a"], inputs["b_t"], out=out)

    if backend == "torch":
        import torch
        tensors = {k: (torch.from_numpy(np.asarray(v, np.float32)).to(torch.bfloat16) if v.dtype.name == "bfloat16"
                       else torch.from_numpy(v)) for k, v in inputs.items()}
        if workload == "matmul":
            out = torch.empty(tensors["a"].shape[0], tensors["b_t"].shape[1], dtype=tensors["a"].dtype)
            return lambda: torch.mm(tensors["a"], tensors["b_t"], out=out)
        for name in wrt:
            tensors[name].requires_grad_(True)
        call = torch.compile(fn) if mode == "compiled" else fn
        targets = [tensors[n] for n in wrt]
        return lambda: torch.autograd.grad(call(**tensors), targets)

    if backend == "jax":
        import jax
        import jax.numpy as jnp
        arrays = {k: jnp.asarray(v) for k, v in inputs.items()}
        if workload == "matmul":
            matmul = jax.jit(lambda a, b_t: a @ b_t)
            return lambda: matmul(arrays["a"], arrays["b_t"]).block_until_ready()
        others = {k: v for k, v in arrays.items() if k not in wrt}

        def loss(*leaves):
            return fn(**others, **dict(zip(wrt, leaves)))
        grad = jax.value_and_grad(loss, argnums=tuple(range(len(wrt))))
        call = jax.jit(grad) if mode == "compiled" else grad
        leaves = [arrays[n] for n in wrt]
        return lambda: jax.block_until_ready(call(*leaves))

    import tensorflow as tf
    tensors = {k: tf.convert_to_tensor(v) for k, v in inputs.items()}
    if workload == "matmul":
        return lambda: tf.matmul(tensors["a"], tensors["b_t"])
    others = {k: v for k, v in tensors.items() if k not in wrt}

    def value_and_grads(*leaves):
        with tf.GradientTape() as tape:
            tape.watch(leaves)
            value = fn(**others, **dict(zip(wrt, leaves)))
        return value, tape.gradient(value, list(leaves))
    if mode == "compiled":
        value_and_grads = tf.function(value_and_grads, jit_compile=workload != "graphlearn")
    leaves = [tensors[n] for n in wrt]
    return lambda: value_and_grads(*leaves)


def main(config: dict[str, Any]) -> dict[str, Any]:
    backend, mode, workload = config["backend"], config["mode"], config["workload"]
    shape = tuple(config["shape"])
    b, n, d = shape
    inputs, wrt = workloads.make_inputs(workloads.input_kind(workload), shape, seed=0,
                                        dtype=config.get("dtype", "float32"))
    floor_a = np.random.default_rng(1).standard_normal((b, d), dtype=np.float32)
    floor_b = np.random.default_rng(2).standard_normal((d, n), dtype=np.float32)
    floor_out = np.empty((b, n), np.float32)

    def floor() -> float:
        start = time.perf_counter()
        np.matmul(floor_a, floor_b, out=floor_out)
        return time.perf_counter() - start

    started = time.perf_counter()
    step = build_step(backend, mode, workload, inputs, wrt)
    for _ in range(config.get("warmup", 2)):
        result = step()
    del result
    setup_seconds = time.perf_counter() - started

    gc.collect()
    peak_ok = reset_peak()
    before = status("VmRSS")
    result = step()
    peak = status("VmHWM")
    del result
    gc.collect()

    floors, steps = [], []
    budget = config.get("max_seconds", 60.0)
    loop_start = time.perf_counter()
    for i in range(config["reps"]):
        floors.append(floor())
        time.sleep(PAUSE)
        start = time.perf_counter()
        result = step()
        steps.append(time.perf_counter() - start)
        del result
        time.sleep(PAUSE)
        if i >= 2 and time.perf_counter() - loop_start > budget:
            break
    step_median, floor_median = statistics.median(steps), statistics.median(floors)
    return {**config, "shape": list(shape), "ok": True, "step_s": step_median, "floor_s": floor_median,
            "openblas": {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")},
            "ratio": step_median / floor_median,
            "ratio_pairwise": statistics.median(s / f for s, f in zip(steps, floors)),
            "ratio_min": min(steps) / min(floors),
            "reps_done": len(steps), "setup_s": setup_seconds,
            "peak_bytes": (peak - before) if peak_ok else None,
            "logits_bytes": (workloads.logits_elements(workload, shape) * 4
                             if workload in workloads.LOSSES or workload in ("plain", "graphlearn") else None),
            "floor_gflops": 2 * b * n * d / floor_median / 1e9}


if __name__ == "__main__":
    protocol.serve(main, sys.argv[1])
