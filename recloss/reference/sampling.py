"""NumPy references of the samplers, the frequency estimator and the negative queue (the ``"numpy"`` backend of
:mod:`recloss.sampling`, and the oracle the backends are compared with).

Written plainly, sharing nothing with :mod:`recloss.kernels.sampling`: hashing with Python integers, the
estimator's steps one after the other, TensorFlow's rejection loop for unique sampling, a list-like ring for
the queue. Probabilities and expected counts are float64. The estimator runs in float64 by default (the
math) or, with ``dtype="float32"``, rounds every operation as the backends' float32 state does, which the
cross-framework tests compare bit for bit.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

# ----------------------------------------------------------------------------------------------------------
# Hashing ids by value (Python integers)

_MASK = 0xFFFFFFFF


def _fmix32(h: int) -> int:
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & _MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & _MASK
    return h ^ (h >> 16)


def bucket(value: int, k: int, num_buckets: int) -> int:
    """Bucket of the id ``value`` (any Python integer in [-2**63, 2**64)) under hash function ``k``."""
    word = int(value) % (1 << 64)                   # the 64-bit two's complement of the value
    lo, hi = word & _MASK, word >> 32
    seed = (0x9E3779B9 * (k + 1)) & _MASK
    return _fmix32(lo ^ _fmix32(hi ^ seed)) % num_buckets


# ----------------------------------------------------------------------------------------------------------
# The frequency estimator


class FrequencyState(NamedTuple):
    counts: np.ndarray   # [num_hashes, num_buckets]
    norm: np.ndarray     # []
    decay: np.ndarray    # []


def frequency_init(num_buckets: int, num_hashes: int, decay: float, dtype: str = "float64") -> FrequencyState:
    return FrequencyState(np.zeros((num_hashes, num_buckets), dtype), np.zeros((), dtype),
                          np.asarray(decay, dtype=dtype))


def frequency_log_q(state: Any, ids: Any) -> np.ndarray:
    """log(max(min_k counts[k, h_k(id)], decay) / max(norm, decay)) per id, float64."""
    counts, norm, decay = state
    num_hashes, num_buckets = counts.shape
    out = []
    for value in np.asarray(ids).ravel().tolist():
        smallest = min(counts[k, bucket(value, k, num_buckets)] for k in range(num_hashes))
        ratio = np.maximum(smallest, decay) / np.maximum(norm, decay)    # rounded in the state's dtype
        out.append(math.log(float(ratio)))
    return np.asarray(out, dtype=np.float64)


def frequency_update(state: Any, ids: Any) -> FrequencyState:
    """counts <- counts - counts * decay + (occurrences in this step) * decay (then 0 below 2**-100); norm
    likewise with 1 occurrence."""
    counts, norm, decay = state
    num_hashes, num_buckets = counts.shape
    seen = np.zeros_like(counts)
    for value in np.asarray(ids).ravel().tolist():
        for k in range(num_hashes):
            seen[k, bucket(value, k, num_buckets)] += 1
    counts = (counts - counts * decay) + seen * decay
    counts[counts < 2.0 ** -100] = 0
    return FrequencyState(counts, (norm - norm * decay) + decay, decay)


def frequency_step(state: Any, ids: Any) -> tuple[np.ndarray, FrequencyState]:
    """A training step: the ids' log Q read from the previous steps, then the update with them."""
    return frequency_log_q(state, ids), frequency_update(state, ids)


# ----------------------------------------------------------------------------------------------------------
# The negative queue


class QueueState(NamedTuple):
    emb: np.ndarray
    ids: np.ndarray | None
    log_q: np.ndarray
    head: np.ndarray
    filled: np.ndarray


EMPTY_LOG_Q = float(np.finfo(np.float32).max)


def queue_init(size: int, dim: int, dtype: str = "float32", track_ids: bool = True) -> QueueState:
    return QueueState(np.zeros((size, dim), dtype), np.zeros(size, np.int64) if track_ids else None,
                      np.zeros(size, np.float32), np.zeros((), np.int32), np.zeros((), np.int32))


def queue_push(state: Any, emb: Any, ids: Any = None, log_q: Any = None) -> QueueState:
    """Each row in turn goes to slot ``head``, which then moves on by one (mod size)."""
    size = state.emb.shape[0]
    emb_, ids_, log_q_ = state.emb.copy(), None if state.ids is None else state.ids.copy(), state.log_q.copy()
    head, filled = int(state.head), int(state.filled)
    for row in range(len(emb)) if size else ():
        emb_[head] = emb[row]
        if ids_ is not None:
            ids_[head] = ids[row]
        log_q_[head] = 0.0 if log_q is None else log_q[row]
        head, filled = (head + 1) % size, min(filled + 1, size)
    return QueueState(emb_, ids_, log_q_, np.asarray(head, np.int32), np.asarray(filled, np.int32))


def queue_negatives(state: Any) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    log_q = state.log_q.copy()
    log_q[int(state.filled):] = EMPTY_LOG_Q
    return state.emb, state.ids, log_q


# ----------------------------------------------------------------------------------------------------------
# The samplers


def probability(kind: str, ids: Any, num_items: int, counts: Any = None, distortion: float = 1.0) -> np.ndarray:
    """q(id) of one draw, float64: uniform 1/V; log-uniform (log(id + 2) - log(id + 1)) / log(V + 1);
    unigram counts**distortion normalised."""
    ids = np.asarray(ids, dtype=np.float64)
    if kind == "uniform":
        return np.full(ids.shape, 1.0 / num_items)
    if kind == "log_uniform":
        return (np.log(ids + 2.0) - np.log(ids + 1.0)) / np.log(num_items + 1.0)
    weights = np.asarray(counts, np.float64) ** distortion
    return weights[ids.astype(np.int64)] / weights.sum()


def expected_count(q: Any, num_sampled: int, num_tries: int, unique: bool) -> np.ndarray:
    """TensorFlow's expected count: ``n q``; unique with ``T`` tries: ``1 - (1 - q)**T`` (``n q`` if T == n)."""
    q = np.asarray(q, np.float64)
    if not unique or num_tries == num_sampled:
        return num_sampled * q
    return -np.expm1(num_tries * np.log1p(-q))


def draw(kind: str, num_sampled: int, num_items: int, unique: bool, rng: np.random.Generator, counts: Any = None,
         distortion: float = 1.0) -> tuple[np.ndarray, int]:
    """TensorFlow's loop: draw with replacement; with ``unique``, keep each new id until ``num_sampled`` are
    found. Returns the ids (in the order found) and the number of draws."""
    q = probability(kind, np.arange(num_items), num_items, counts, distortion)
    picked: list[int] = []
    seen: set[int] = set()
    tries = 0
    while len(picked) < num_sampled:
        for value in rng.choice(num_items, size=num_sampled, p=q / q.sum()).tolist():   # i.i.d. draws, in turn
            tries += 1
            if unique and value in seen:
                continue
            seen.add(value)
            picked.append(value)
            if len(picked) == num_sampled:
                break
    return np.asarray(picked, np.int64), tries


def sample(kind: str, pos_ids: Any, num_sampled: int, num_items: int, unique: bool, seed: Any,
           counts: Any = None, distortion: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(neg_ids, neg_log_q, pos_log_q)`` of the reference sampler (float64 log Q)."""
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    ids, tries = draw(kind, num_sampled, num_items, unique, rng, counts, distortion)
    with np.errstate(divide="ignore"):
        log_q = [np.log(expected_count(probability(kind, x, num_items, counts, distortion), num_sampled, tries,
                                       unique)) for x in (ids, pos_ids)]
    return ids, log_q[0], log_q[1]
