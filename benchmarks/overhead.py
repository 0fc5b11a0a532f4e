"""Overhead of one recloss call at a small batch (used by run.py; prints one JSON line).

Compares ``recloss.unsupervised_softmax_cross_entropy_loss(q, p, n)`` (resolve backend, convert, validate,
kernel), forward only, B=32, with (1) the same kernel called directly (``backend.KERNELS[name](bound, ...)``,
i.e. without the front end) and (2) the same math written directly in the framework, as a user would
(``workloads.plain``: concatenated logits and the framework's cross-entropy). Eagerly and under the framework's
compiler (``jax.jit``, ``tf.function``, ``torch.compile``), where validation runs at trace time only.
Each overhead is the median over rounds of (public - other) per call, rounds alternating the calls.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Any, Callable

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import protocol  # noqa: E402
import workloads  # noqa: E402

NAME = "unsupervised_softmax_cross_entropy_loss"


def _per_call(fn: Callable[[], Any], calls: int, sync: Callable[[Any], Any]) -> float:
    start = time.perf_counter()
    for _ in range(calls):
        out = fn()
    sync(out)
    return (time.perf_counter() - start) / calls


def measure(public: Callable[[], Any], direct: Callable[[], Any], plain: Callable[[], Any], calls: int,
            sync: Callable[[Any], Any]) -> dict[str, float]:
    for fn in (public, direct, plain):
        sync(fn())
    rounds = 7
    batch = max(calls // rounds, 20)
    pub, dir_, pla = [], [], []
    for _ in range(rounds):
        pub.append(_per_call(public, batch, sync))
        dir_.append(_per_call(direct, batch, sync))
        pla.append(_per_call(plain, batch, sync))
    return {"public_us": statistics.median(pub) * 1e6, "direct_us": statistics.median(dir_) * 1e6,
            "plain_us": statistics.median(pla) * 1e6,
            "overhead_us": statistics.median(p - d for p, d in zip(pub, dir_)) * 1e6,
            "over_plain_us": statistics.median(p - q for p, q in zip(pub, pla)) * 1e6}


def main(config: dict[str, Any]) -> dict[str, Any]:
    import recloss
    from recloss._dispatch import load_backend
    from recloss._validate import validate
    from recloss.losses import CATALOGUE

    backend = config["backend"]
    b, n, d = config["shape"]
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s, dtype=np.float32) for s in ((b, d), (b, d), (n, d))]
    module = load_backend(backend)
    q, p, neg = (module.convert(a) for a in arrays)
    spec = CATALOGUE[NAME]
    options = {**{option.name: option.default for option in spec.options}, "temperature": workloads.TEMPERATURE}
    bound = validate(spec, {"src_emb": q, "pos_emb": p, "neg_emb": neg, "sample_weight": None}, options,
                     module.concrete)
    kernel = module.KERNELS[NAME]
    public_fn = lambda q, p, neg: getattr(recloss, NAME)(q, p, neg, temperature=workloads.TEMPERATURE)  # noqa: E731
    direct_fn = lambda q, p, neg: kernel(bound, src_emb=q, pos_emb=p, neg_emb=neg, sample_weight=None,  # noqa: E731
                                        **options)
    plain_fn = workloads.plain(backend)

    if backend == "jax":
        import jax
        sync = jax.block_until_ready
        compile_ = jax.jit
    elif backend == "torch":
        import torch
        sync = lambda x: x  # noqa: E731
        compile_ = torch.compile
    else:
        import tensorflow as tf
        sync = lambda x: x  # noqa: E731
        compile_ = tf.function
    calls = config["calls"]
    eager = measure(lambda: public_fn(q, p, neg), lambda: direct_fn(q, p, neg), lambda: plain_fn(q, p, neg), calls,
                    sync)
    public_c, direct_c, plain_c = compile_(public_fn), compile_(direct_fn), compile_(plain_fn)
    compiled = measure(lambda: public_c(q, p, neg), lambda: direct_c(q, p, neg), lambda: plain_c(q, p, neg), calls,
                       sync)
    front_end = _front_end_us(spec, module, {"src_emb": q, "pos_emb": p, "neg_emb": neg, "sample_weight": None,
                                             **options}, calls)
    return {**config, "ok": True, "eager": eager, "compiled": compiled, "front_end_us": front_end}


def _front_end_us(spec: Any, module: Any, values: dict[str, Any], calls: int) -> float:
    """The front end alone (resolve, convert, validate, look up the kernel), the kernel replaced by a no-op:
    the best of 7 rounds, in microseconds per call."""
    from recloss._api import call

    kernels = module.KERNELS
    module.KERNELS = {name: (lambda bound, **arguments: None) for name in kernels}
    try:
        rounds = []
        for _ in range(7):
            start = time.perf_counter()
            for _ in range(calls):
                call(spec, None, values)
            rounds.append((time.perf_counter() - start) / calls)
    finally:
        module.KERNELS = kernels
    return min(rounds) * 1e6


if __name__ == "__main__":
    protocol.serve(main, sys.argv[1])
