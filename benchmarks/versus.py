"""recloss against the plain version a user would write, timed alternately in ONE process (used by run.py).

    python benchmarks/versus.py '{"backend": "torch", "mode": "eager", "shape": [256, 256, 64], "threads": 1}'

One configuration is (backend, mode, shape, threads). At the small step (``workloads.SMALL_STEP``) the pair is
in-batch ``sampled_softmax_loss(q, p)`` against ``cross_entropy(q @ p.T / T, arange(B))``, with a third step, the
exact form written by hand (``softplus(logsumexp(negatives) - s_pos)``, ``workloads.exact_in_batch``); at the other shapes
``unsupervised_softmax_cross_entropy_loss`` against the plain stable softmax cross-entropy on the concatenated
logits (``workloads.plain``). Both are forward+backward (gradients for every embedding) in the same framework and
mode (``eager``: torch eagerly, ``jax.value_and_grad`` op by op, TF under a tape; ``compiled``: ``torch.compile``,
``jax.jit``, ``tf.function(jit_compile=True)``), built by ``worker.build_step``. ``"skip_guards": true`` (a
diagnostic for ``torch.compile``) times the compiled steps without dynamo's per-call guard checks
(``torch.compiler.set_stance(skip_guard_eval_unsafe=True)``, after they have compiled), to show what those cost;
``"without_exact": true`` leaves the exact form out of the rounds. ``page_faults_per_call`` counts each step's
minor page faults (``getrusage``): whether its buffers come fresh from the kernel changes small steps' times.

After warm-up (compilation included) the steps run in random order in every round, until ``rounds`` rounds or
the time budget are spent; a small step is timed in batches of the same number of calls for both (about 5 ms
for the slower one).
Reported: the median time of each and ``ratio`` = median(recloss) / median(plain) (below 1: recloss faster), and
the median of the per-round ratios; at the small step also ``exact_ratio`` (exact by hand / plain) and
``ratio_to_exact`` (recloss / exact by hand). ``threads`` sets the framework's intra-op threads (torch
``set_num_threads``; TF's intra-op pool; JAX: one thread = XLA's Eigen pool off), before anything runs. Prints
one ``RESULT`` JSON line.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402
import workloads  # noqa: E402

#: (recloss workload, plain workload[, exact workload]) per kind of shape; the small step also times the exact
#: form written by hand (``workloads.exact_in_batch``), which tells what exactness itself costs there.
PAIRS = {"small": ("sampled_in_batch", "plain_in_batch", "exact_in_batch"), "large": ("unsupervised_softmax", "plain")}


def set_threads(backend: str, threads: int | None) -> None:
    """Limit the framework's intra-op threads (before it runs anything)."""
    if not threads:
        return
    if backend == "jax" and threads == 1:
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false "
                                   "intra_op_parallelism_threads=1").strip()
    elif backend == "torch":
        import torch
        torch.set_num_threads(threads)
    elif backend == "tensorflow":
        import tensorflow as tf
        tf.config.threading.set_intra_op_parallelism_threads(threads)


def _timed(step: Callable[[], Any], calls: int, faults: list[int] | None = None) -> float:
    """Seconds per call over ``calls`` calls; adds the minor page faults they took to ``faults[0]``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start = time.perf_counter()
    for _ in range(calls):
        result = step()
    elapsed = time.perf_counter() - start
    del result
    if faults is not None:
        faults[0] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    return elapsed / calls


def main(config: dict[str, Any]) -> dict[str, Any]:
    backend, mode = config["backend"], config["mode"]
    shape = tuple(config["shape"])
    set_threads(backend, config.get("threads"))
    import worker   # after the thread settings (it imports nothing heavy itself)

    kind = "small" if shape == workloads.SMALL_STEP else "large"
    names = PAIRS[kind][:2] if config.get("without_exact") else PAIRS[kind]
    steps = {}
    started = time.perf_counter()
    for name in names:
        inputs, wrt = workloads.make_inputs(workloads.input_kind(name), shape, seed=0)
        steps[name] = worker.build_step(backend, mode, name, inputs, wrt)
        for _ in range(config.get("warmup", 3)):
            steps[name]()
    setup = time.perf_counter() - started
    with _stance(config):
        return _timed_rounds(config, kind, names, steps, setup)


def _stance(config: dict[str, Any]) -> Any:
    """``"skip_guards"``: a diagnostic, torch.compile's compiled steps without their per-call guard checks."""
    if not config.get("skip_guards"):
        return contextlib.nullcontext()
    import torch
    return torch.compiler.set_stance(skip_guard_eval_unsafe=True)


def _timed_rounds(config: dict[str, Any], kind: str, names: tuple, steps: dict, setup: float) -> dict[str, Any]:
    # The same number of calls per timing for both, about 5 ms for the slower one (one call for longer steps):
    # on a loaded machine a longer window is preempted more often, so unequal windows would bias the ratio.
    slower = max(statistics.median(_timed(step, 1) for _ in range(5)) for step in steps.values())
    calls = max(1, int(0.005 / max(slower, 1e-6)))
    times: dict[str, list[float]] = {name: [] for name in names}
    faults = {name: [0] for name in names}
    ratios = []
    budget, rounds = config.get("max_seconds", 30.0), config.get("rounds", 300 if kind == "small" else 30)
    rng = random.Random(0)
    loop_start = time.perf_counter()
    for index in range(rounds):
        order = list(names)
        rng.shuffle(order)
        this = {name: _timed(steps[name], calls, faults[name]) for name in order}
        for name in names:
            times[name].append(this[name])
        ratios.append(this[names[0]] / this[names[1]])
        if index >= 4 and time.perf_counter() - loop_start > budget:
            break
    ours, plain = (statistics.median(times[name]) for name in names[:2])
    outcome = {**config, "ok": True, "pair": list(names), "recloss_s": ours, "plain_s": plain, "ratio": ours / plain,
               "ratio_rounds": statistics.median(ratios), "rounds": len(ratios), "calls": calls, "setup_s": setup,
               "page_faults_per_call": {name: faults[name][0] / (calls * len(ratios)) for name in names}}
    if len(names) > 2:   # the exact form by hand: its time, and recloss's ratio to it
        exact = statistics.median(times[names[2]])
        outcome.update(exact_s=exact, exact_ratio=exact / plain, ratio_to_exact=ours / exact)
    return outcome


if __name__ == "__main__":
    protocol.serve(main, sys.argv[1])
