"""``recloss validate`` for where negatives and their probabilities come from: on each backend and device, the
samplers' log Q (expected counts) and the frequency estimator and negative queue on one stream, against the
NumPy reference of :mod:`recloss.reference.sampling`.

* ``uniform_candidates``, ``log_uniform_candidates``, ``unigram_candidates``: draws with replacement and
  unique draws; each returned log Q against the float64 formula for the same ids (and, unique, the same
  number of draws). Error: the largest ``|log Q - log Q_ref|`` (the relative error of the expected count).
* ``frequency_estimator``: 40 training steps of 512 ids (a Zipfian stream with 64-bit and negative ids); the
  state must equal the float32 reference bit for bit (a failure otherwise); error: the largest
  ``|log Q - log Q_ref|`` against the float64 reference, over every step's ids and a read of 2000 ids.
* ``negative_queue``: pushes of 7, 0, 19 and 5 rows into a queue of 16; the negatives must equal the
  reference's exactly.
"""

from __future__ import annotations

import time
from typing import Any, Callable

import numpy as np

from recloss.parity import Row
from recloss.reference import sampling as reference

#: Tolerances (absolute, on log Q): log Q is computed in float64 and returned in float32 (samplers); the
#: estimator's state is float32, so its estimates carry float32 rounding of each step's update.
SAMPLER_TOLERANCE = 2e-6
ESTIMATOR_TOLERANCE = 2e-5


def _device_scope(backend: str, device: str) -> Any:
    import contextlib
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.device(device.upper() + ":0")
    if backend == "jax":
        import jax
        return jax.default_device(jax.devices(device)[0])
    return contextlib.nullcontext()


def _to(backend: str, device: str, array: np.ndarray) -> Any:
    from recloss.sampling import backend_module
    tensor = backend_module(backend).convert(array)
    return tensor.to(device) if backend == "torch" else tensor


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def _random_state(backend: str, device: str, seed: int) -> Any:
    if backend == "torch":
        import torch
        return torch.Generator(device=device).manual_seed(seed)
    if backend == "jax":
        import jax
        return jax.random.key(seed)
    import tensorflow as tf
    return tf.random.Generator.from_seed(seed)


def _sampler_check(kind: str) -> Callable[[str, str, int], tuple[float, list[str]]]:
    def check(backend: str, device: str, seed: int) -> tuple[float, list[str]]:
        from recloss.kernels import sampling as kernel
        from recloss.sampling import backend_module

        module = backend_module(backend)
        ops = module.OPS
        num_items, num_sampled = 1000, 64
        counts = np.random.default_rng(seed).integers(0, 50, num_items).astype(np.float64) + 1.0
        pos = np.array([0, 1, 17, 999, 500])
        weights = None
        if kind == "unigram":
            weights = ops.cast(_to(backend, device, counts), ops.sampling_float()) ** 0.75
        worst, failures = 0.0, []
        for unique in (False, True):
            rng = module.random_state(_random_state(backend, device, seed), _to(backend, device, pos))
            ids, neg_log_q, pos_log_q, tries = kernel.sample_candidates(
                ops, kernel.Sampler(kind, num_items, weights), rng, _to(backend, device, pos), num_sampled, unique)
            ids, tries = _numpy(ids), int(round(float(_numpy(tries))))
            if ids.shape != (num_sampled,) or ids.min() < 0 or ids.max() >= num_items or (
                    unique and len(set(ids.tolist())) != num_sampled):
                failures.append(f"unique={unique}: ids out of range or repeated")
            for which, got in ((ids, neg_log_q), (pos, pos_log_q)):
                q = reference.probability(kind, which, num_items, counts, 0.75)
                expected = np.log(reference.expected_count(q, num_sampled, tries, unique))
                worst = max(worst, float(np.max(np.abs(_numpy(got).astype(np.float64) - expected))))
        return worst, failures
    return check


def _stream(seed: int, steps: int, batch: int) -> list[np.ndarray]:
    """Zipfian ids over 5000 values, some made 64-bit (beyond 2**32) or negative: each value stays one id."""
    rng = np.random.default_rng(seed)
    values = rng.permutation(5000).astype(np.int64)
    values[::7] += 1 << 40
    values[::11] = -values[::11] - 1
    p = 1.0 / np.arange(1, 5001) ** 1.1
    return [values[rng.choice(5000, size=batch, p=p / p.sum())] for _ in range(steps)]


def _estimator_check(backend: str, device: str, seed: int) -> tuple[float, list[str]]:
    from recloss import sampling

    num_buckets, num_hashes, decay = 1 << 12, 2, 2.0 ** -4
    state = sampling.frequency_init(num_buckets, num_hashes, decay, backend=backend)
    state = sampling.FrequencyState(*(_to(backend, device, _numpy(x)) for x in state))
    exact = reference.frequency_init(num_buckets, num_hashes, decay, "float64")
    rounded = reference.frequency_init(num_buckets, num_hashes, decay, "float32")
    worst, failures = 0.0, []
    stream = _stream(seed, 40, 512)
    for ids in stream:
        log_q, state = sampling.frequency_update(state, ids)
        expected, exact = reference.frequency_step(exact, ids)
        rounded = reference.frequency_update(rounded, ids)
        worst = max(worst, float(np.max(np.abs(_numpy(log_q).astype(np.float64) - expected))))
    read = np.concatenate(stream)[:2000]
    worst = max(worst, float(np.max(np.abs(_numpy(sampling.frequency_log_q(state, read)).astype(np.float64)
                                           - reference.frequency_log_q(exact, read)))))
    for field in ("counts", "norm"):
        if not np.array_equal(_numpy(getattr(state, field)), getattr(rounded, field)):
            failures.append(f"state `{field}` differs from the float32 reference (bit for bit expected)")
    return worst, failures


def _queue_check(backend: str, device: str, seed: int) -> tuple[float, list[str]]:
    from recloss import sampling

    rng = np.random.default_rng(seed)
    state = sampling.queue_init(16, 4, backend=backend)
    state = sampling.QueueState(*(None if x is None else _to(backend, device, _numpy(x)) for x in state))
    expected = reference.queue_init(16, 4)
    failures = []
    for rows in (7, 0, 19, 5):
        emb = rng.normal(size=(rows, 4)).astype(np.float32)
        ids, log_q = rng.integers(0, 1 << 30, rows), rng.normal(size=rows).astype(np.float32)
        state = sampling.queue_push(state, _to(backend, device, emb), ids, _to(backend, device, log_q))
        expected = reference.queue_push(expected, emb, ids, log_q)
        got, want = sampling.queue_negatives(state), reference.queue_negatives(expected)
        if not all(np.array_equal(_numpy(a), np.asarray(b)) for a, b in zip(got, want)):
            failures.append(f"after a push of {rows} rows the negatives differ from the reference")
    return 0.0, failures


CHECKS: dict[str, tuple[Callable[[str, str, int], tuple[float, list[str]]], float]] = {
    "uniform_candidates": (_sampler_check("uniform"), SAMPLER_TOLERANCE),
    "log_uniform_candidates": (_sampler_check("log_uniform"), SAMPLER_TOLERANCE),
    "unigram_candidates": (_sampler_check("unigram"), SAMPLER_TOLERANCE),
    "frequency_estimator": (_estimator_check, ESTIMATOR_TOLERANCE),
    "negative_queue": (_queue_check, 0.0),
}


def run(name: str, backend: str, device: str, seed: int) -> Row:
    """One row of the report: the check ``name`` on ``backend`` and ``device`` (value only: no gradient)."""
    check, tolerance = CHECKS[name]
    row = Row(name, backend, device, "float32", grad_error=None, cases=1, value_tolerance=tolerance)
    start = time.perf_counter()
    try:
        with _device_scope(backend, device):
            error, failures = check(backend, device, seed)
    except Exception as caught:  # a crash is a failure of this row
        error, failures = float("inf"), [f"{type(caught).__name__}: {caught}"]
    row.value_error = error
    row.failures = failures + ([f"log Q error {error:.1e}"] if error > tolerance else [])
    row.seconds = time.perf_counter() - start
    return row


__all__ = ["CHECKS", "run"]
