"""Where negatives and their probabilities come from, written once against :class:`SamplingOps`: the
candidate samplers, the streaming frequency estimator and the negative queue.

**log Q**, the one meaning used everywhere: the log of a candidate's expected number of occurrences among one
step's candidates of its source, as TensorFlow's candidate samplers define their expected counts:

* in-batch candidates of ``B`` rows drawn from the training log: ``B * p_item``;
* ``n`` draws with replacement from ``q``: ``n * q_item``;
* draws from ``q`` until ``n`` distinct candidates were found, which took ``T`` draws:
  ``-expm1(T * log1p(-q_item))`` (``n * q_item`` where no draw was rejected, ``T == n``).

**Hashing** (the estimator): an id is hashed by its value, as the two 32-bit words of its 64-bit two's
complement (``lo``, ``hi``), with 32-bit integer arithmetic that every backend does exactly (torch and
TensorFlow in int64 holding values below 2**32, JAX in uint32), so the same stream of ids lands in the same
buckets, and the float32 counts take the same values, on every framework.

The backends supply the primitives in ``recloss.backends.<framework>.sampling`` (a subclass of their ``Ops``);
the float64 NumPy reference, written separately, is :mod:`recloss.reference.sampling`.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, Protocol

from recloss._validate import dtype_name
from recloss.kernels._common import Ops

# ----------------------------------------------------------------------------------------------------------
# The primitives


class SamplingOps(Ops, Protocol):
    """The operations the sampling kernels need beyond :class:`recloss.kernels.Ops`."""

    def sampling_float(self) -> str: ...                  # "float64" (or "float32" where that is the widest)
    def index_dtype(self) -> str: ...                     # the integer dtype of ids and indices made here
    def id_words(self, ids: Any) -> tuple[Any, Any]: ...  # ids -> (lo, hi), the 32-bit words of their value
    def mul32(self, x: Any, c: int) -> Any: ...           # (x * c) mod 2**32 of words
    def xor(self, x: Any, y: Any) -> Any: ...             # words, or a word and a Python int < 2**32
    def shift_right(self, x: Any, bits: int) -> Any: ...  # logical shift of words
    def mod(self, x: Any, n: int) -> Any: ...             # words mod a Python int, as indices
    def arange(self, n: Any, dtype: str, like: Any) -> Any: ...   # on like's device
    def full(self, shape: tuple, value: float, dtype: str, like: Any) -> Any: ...
    def take(self, x: Any, index: Any) -> Any: ...        # x[index] along axis 0
    def bincount(self, index: Any, length: int, weight: Any) -> Any: ...  # weight (0-d) times the count of each
    #                                                                         index value, in weight's dtype
    def scatter_rows(self, x: Any, index: Any, rows: Any) -> Any: ...     # a copy of x with x[index] = rows
    def reshape(self, x: Any, shape: tuple) -> Any: ...
    def stack(self, xs: list, axis: int) -> Any: ...
    def min(self, x: Any, axis: int) -> Any: ...
    def floor(self, x: Any) -> Any: ...
    def searchsorted(self, sorted_: Any, values: Any) -> Any: ...  # side="right", as indices
    def uniform(self, rng: Any, shape: tuple, dtype: str, stream: int) -> Any: ...  # [0, 1)
    def randint(self, rng: Any, shape: tuple, high: int, stream: int) -> Any: ...   # [0, high)


# ----------------------------------------------------------------------------------------------------------
# Hashing ids by value


#: murmur3's 32-bit finaliser constants (a bijection of 32-bit words with full avalanche).
FMIX = (0x85EBCA6B, 0xC2B2AE35)
#: One seed per hash function: multiples of the 32-bit golden ratio. At most this many hash functions.
HASH_SEEDS = tuple((0x9E3779B9 * (k + 1)) & 0xFFFFFFFF for k in range(8))


def fmix32(ops: SamplingOps, h: Any) -> Any:
    """murmur3's finaliser: ``h ^= h >> 16; h *= 0x85ebca6b; h ^= h >> 13; h *= 0xc2b2ae35; h ^= h >> 16``."""
    h = ops.xor(h, ops.shift_right(h, 16))
    h = ops.mul32(h, FMIX[0])
    h = ops.xor(h, ops.shift_right(h, 13))
    h = ops.mul32(h, FMIX[1])
    return ops.xor(h, ops.shift_right(h, 16))


def bucket_indices(ops: SamplingOps, words: tuple[Any, Any], num_hashes: int, num_buckets: int) -> list[Any]:
    """Per hash function ``k``, the flat index ``k * num_buckets + h_k(id)`` of each id, with
    ``h_k(id) = fmix32(lo ^ fmix32(hi ^ seed_k)) mod num_buckets``."""
    lo, hi = words
    out = []
    for k in range(num_hashes):
        h = fmix32(ops, ops.xor(lo, fmix32(ops, ops.xor(hi, HASH_SEEDS[k]))))
        bucket = ops.mod(h, num_buckets)
        out.append(bucket if k == 0 else bucket + k * num_buckets)
    return out


# ----------------------------------------------------------------------------------------------------------
# The streaming frequency estimator


class FrequencyState(NamedTuple):
    """The estimator's state (a pytree in JAX): ``counts`` ``[num_hashes, num_buckets]`` float32, the
    decayed number of occurrences per bucket and step; ``norm`` ``[]`` float32, the decayed number of steps
    (``1 - (1 - decay)**t`` after ``t`` steps); ``decay`` ``[]`` float32, the weight of each new step (a power
    of two)."""

    counts: Any
    norm: Any
    decay: Any


def frequency_log_q(ops: SamplingOps, state: FrequencyState, words: tuple[Any, Any]) -> Any:
    """log Q of ids (in-batch source: their expected count per step), float32 ``[n]``, read only.

    ``Q = max(c, decay) / max(norm, decay)`` with ``c`` the smallest of the ids' buckets over the hash
    functions (a count-min sketch: collisions only add): the decayed mean count per step, bias-corrected by
    ``norm``, and at least the estimate of one occurrence in the window of ``1 / decay`` steps (an id never
    seen gets that, not -inf)."""
    counts, norm, decay = state
    num_hashes, num_buckets = counts.shape
    flat = ops.reshape(counts, (num_hashes * num_buckets,))
    found = [ops.take(flat, index) for index in bucket_indices(ops, words, num_hashes, num_buckets)]
    smallest = found[0] if num_hashes == 1 else ops.min(ops.stack(found, 0), 0)
    return ops.log(ops.maximum(smallest, decay) / ops.maximum(norm, decay))


#: Counts below this are set to 0: the decayed products stay normal floats (a flush of subnormal numbers to
#: zero, which XLA and TensorFlow do on CPUs and PyTorch does not, cannot change a result).
SMALLEST_COUNT = 2.0 ** -100


def frequency_update(ops: SamplingOps, state: FrequencyState, words: tuple[Any, Any]) -> FrequencyState:
    """The state after one step whose ids are ``words``: ``counts <- counts - counts * decay + n * decay`` with
    ``n`` the step's occurrences per bucket (repeats counted), ``norm <- norm - norm * decay + decay``.

    ``decay`` is a power of two, so both products are exact and each update rounds only its two additions: a
    compiler that fuses a multiply and an add (XLA does, on CPUs too) computes the same float32 values as
    eager code, on every framework."""
    counts, norm, decay = state
    num_hashes, num_buckets = counts.shape
    indices = bucket_indices(ops, words, num_hashes, num_buckets)
    index = indices[0] if num_hashes == 1 else ops.concat(indices, 0)
    # n * decay, summed decay by decay: every partial sum is a multiple of a power of two, hence exact.
    seen = ops.reshape(ops.bincount(index, num_hashes * num_buckets, decay), (num_hashes, num_buckets))
    counts = (counts - counts * decay) + seen
    counts = ops.where(counts < SMALLEST_COUNT, 0.0, counts)
    return FrequencyState(counts, (norm - norm * decay) + decay, decay)


def gather_words(comm: Any, words: tuple[Any, Any], count: Any) -> tuple[Any, Any]:
    """Every worker's id words, concatenated in worker order (the global batch)."""
    sizes = comm.sizes([count])[0]
    return comm.all_gather(words[0], sizes), comm.all_gather(words[1], sizes)


# ----------------------------------------------------------------------------------------------------------
# The negative queue


class QueueState(NamedTuple):
    """A ring of the last ``size`` pushed candidates: ``emb`` ``[size, D]``, ``ids`` ``[size]`` (or None when
    the queue keeps no ids), ``log_q`` ``[size]`` float32, ``head`` (the slot the next candidate goes to) and
    ``filled`` (the number of filled slots, at most ``size``), int32 scalars."""

    emb: Any
    ids: Any
    log_q: Any
    head: Any
    filled: Any


class Negatives(NamedTuple):
    """A queue's candidates, as keywords of the softmax losses: ``sampled_softmax_loss(q, pos, **negatives,
    in_batch=True, pos_ids=...)``."""

    neg_emb: Any
    neg_ids: Any
    neg_log_q: Any


#: log Q of a slot the queue has not filled yet: the largest float32, so that its term in any softmax row,
#: ``exp(q . 0 / T - 3.4e38 - m)``, is exactly 0 (and so is its gradient) and the shape stays ``[size, D]``.
EMPTY_LOG_Q = 3.4028234663852886e38


def queue_push(ops: SamplingOps, state: QueueState, emb: Any, ids: Any, log_q: Any) -> QueueState:
    """The queue after pushing ``emb`` ``[n, D]`` (no gradient is kept), ``ids`` ``[n]`` and ``log_q`` ``[n]``
    (0 where None): row ``r`` goes to slot ``head + r`` (mod ``size``); of more than ``size`` rows only the last
    ``size`` are written (the others would be overwritten)."""
    size = state.emb.shape[0]
    if size == 0:
        return state
    rows = ops.size(emb, 0)
    if isinstance(rows, int) and rows == 0:
        return state
    keep = min(rows, size) if isinstance(rows, int) else ops.minimum(rows, size)
    start = rows - keep
    if not (isinstance(start, int) and start == 0):
        emb, ids, log_q = (None if x is None else x[start:] for x in (emb, ids, log_q))
    # Row r of the batch goes to slot head + r (mod size), as pushing the rows one by one would put it.
    positions = ops.mod(state.head + start + ops.arange(keep, "int32", state.head), size)
    emb = ops.stop_gradient(ops.cast(emb, dtype_name(state.emb.dtype)))
    new_emb = ops.scatter_rows(state.emb, positions, emb)
    new_ids = state.ids
    if state.ids is not None:
        new_ids = ops.scatter_rows(state.ids, positions, ops.cast_int(ids, dtype_name(state.ids.dtype)))
    values = ops.full((keep,), 0.0, "float32", state.log_q) if log_q is None else ops.cast(
        ops.stop_gradient(log_q), "float32")
    new_log_q = ops.scatter_rows(state.log_q, positions, values)
    head = ops.mod(state.head + rows, size)
    filled = state.filled + keep
    filled = ops.where(filled < size, filled, size)
    return QueueState(new_emb, new_ids, new_log_q, ops.cast_int(head, "int32"), ops.cast_int(filled, "int32"))


def queue_negatives(ops: SamplingOps, state: QueueState) -> Negatives:
    """Every slot, ``[size, D]``: the filled ones as pushed, the empty ones with a zero embedding and log Q
    :data:`EMPTY_LOG_Q` (they add exactly nothing to a softmax loss)."""
    size = state.emb.shape[0]
    filled = ops.arange(size, "int32", state.filled) < state.filled
    return Negatives(state.emb, state.ids, ops.where(filled, state.log_q, EMPTY_LOG_Q))


# ----------------------------------------------------------------------------------------------------------
# The candidate samplers


class Sampler(NamedTuple):
    """What a sampler draws from: ``kind`` ``"uniform"``, ``"log_uniform"`` or ``"unigram"``; ``num_items``;
    for ``"unigram"`` the weights ``counts ** distortion`` ``[num_items]`` in the sampling dtype."""

    kind: str
    num_items: int
    weights: Any = None


def log_probability(ops: SamplingOps, sampler: Sampler, ids: Any, dtype: str) -> Any:
    """``log q(id)`` of one draw, ``[n]`` in ``dtype``: ``-log V`` (uniform); ``log(log((id + 2) / (id + 1)) /
    log(V + 1))`` (log-uniform, TensorFlow's Zipfian over ids sorted by decreasing frequency);
    ``log(w_id / sum w)`` (unigram)."""
    num_items = sampler.num_items
    if sampler.kind == "uniform":
        return ops.full((ops.size(ids, 0),), -math.log(num_items), dtype, ids)
    if sampler.kind == "log_uniform":
        position = ops.cast(ids, dtype) + 1.0
        return ops.log(ops.log1p(1.0 / position)) - math.log(math.log1p(num_items))
    weights = sampler.weights
    return ops.log(ops.take(weights, ids)) - ops.log(ops.sum(weights))


def draw_with_replacement(ops: SamplingOps, sampler: Sampler, rng: Any, num_sampled: int, dtype: str) -> Any:
    """``num_sampled`` independent draws, ``[num_sampled]`` ids."""
    num_items = sampler.num_items
    if sampler.kind == "uniform":
        return ops.randint(rng, (num_sampled,), num_items, 0)
    uniform = ops.uniform(rng, (num_sampled,), dtype, 0)
    if sampler.kind == "log_uniform":
        # (V + 1) ** (1 - u) is log-uniform on (1, V + 1]; written with 1 - u in (0, 1] it keeps its resolution
        # at both ends in float32 too. floor(.) - 1 = id with probability log((id + 2) / (id + 1)) / log(V + 1).
        value = ops.floor((num_items + 1.0) * ops.exp(-math.log1p(num_items) * (1.0 - uniform))) - 1.0
        return ops.mod(ops.cast_int(value, ops.index_dtype()), num_items)
    cumulative = ops.cumsum(sampler.weights)
    found = ops.searchsorted(cumulative, uniform * cumulative[-1])
    return ops.where(found < num_items, found, num_items - 1)   # u * total rounded up to the total


def draw_unique(ops: SamplingOps, sampler: Sampler, rng: Any, num_sampled: int, dtype: str,
                like: Any) -> tuple[Any, Any]:
    """``num_sampled`` distinct ids and ``T``, the number of draws it took, with the distribution of
    TensorFlow's rejection loop (draw with replacement, keep each new id, until ``num_sampled`` are found) and
    static shapes.

    The ids come in the order the loop finds them: successive sampling without replacement, which is the
    order of ``log q_i - log E_i`` (``E_i`` exponential), the top ``num_sampled`` of every id. Given that
    order, the draws the loop rejects before its ``j + 1``-th new id are geometric: each draw repeats a found
    id with probability ``S_j``, the sum of ``q`` over the first ``j`` ids, so
    ``T = num_sampled + sum_j floor(log U_j / log S_j)``. Cost: O(num_items) per call.
    """
    num_items = sampler.num_items
    everyone = ops.arange(num_items, ops.index_dtype(), like)
    log_q = log_probability(ops, sampler, everyone, dtype)
    exponential = -ops.log(1.0 - ops.uniform(rng, (num_items,), dtype, 1))
    keys = ops.where(log_q > float("-inf"), log_q - ops.log(exponential), float("-inf"))
    _, ids = ops.top_k_with_indices(ops.reshape(keys, (1, num_items)), num_sampled)
    ids = ops.cast_int(ops.reshape(ids, (num_sampled,)), ops.index_dtype())
    if num_sampled < 2:
        return ids, ops.full((), float(num_sampled), dtype, keys)
    found = ops.cumsum(ops.exp(ops.take(log_q, ids)))[:-1]
    below_one = 1.0 - (2.0 ** -52 if dtype == "float64" else 2.0 ** -23)   # a sum rounded up to 1
    found = ops.where(found < below_one, found, below_one)
    repeats = ops.floor(ops.log(1.0 - ops.uniform(rng, (num_sampled - 1,), dtype, 2)) / ops.log(found))
    return ids, float(num_sampled) + ops.sum(repeats)


def log_expected_count(ops: SamplingOps, log_q: Any, num_sampled: int, num_tries: Any, unique: bool) -> Any:
    """log Q of candidates whose one-draw log probability is ``log_q``: ``log(n q)`` with replacement; unique,
    ``log(-expm1(T log1p(-q)))``, or ``log(n q)`` where ``T == n`` (TensorFlow's ``ExpectedCountHelper``)."""
    with_replacement = log_q + math.log(num_sampled)
    if not unique or (isinstance(num_tries, (int, float)) and num_tries == num_sampled):
        return with_replacement
    rejected = ops.log(-ops.expm1(num_tries * ops.log1p(-ops.exp(log_q))))
    if isinstance(num_tries, (int, float)):
        return rejected
    return ops.where(num_tries == float(num_sampled), with_replacement, rejected)


def sample_candidates(ops: SamplingOps, sampler: Sampler, rng: Any, pos_ids: Any, num_sampled: int,
                      unique: bool) -> tuple[Any, Any, Any, Any]:
    """``(neg_ids, neg_log_q, pos_log_q, num_tries)``: ``num_sampled`` candidates and the log Q of them and of
    ``pos_ids`` (float32), computed in the backend's widest float (``ops.sampling_float()``)."""
    dtype = ops.sampling_float()
    pos_ids = ops.cast_int(pos_ids, ops.index_dtype())
    if unique:
        neg_ids, num_tries = draw_unique(ops, sampler, rng, num_sampled, dtype, pos_ids)
    else:
        neg_ids, num_tries = draw_with_replacement(ops, sampler, rng, num_sampled, dtype), float(num_sampled)
    neg_ids = ops.cast_int(neg_ids, ops.index_dtype())
    neg_log_q = log_expected_count(ops, log_probability(ops, sampler, neg_ids, dtype), num_sampled, num_tries, unique)
    pos_log_q = log_expected_count(ops, log_probability(ops, sampler, pos_ids, dtype), num_sampled, num_tries, unique)
    return neg_ids, ops.cast(neg_log_q, "float32"), ops.cast(pos_log_q, "float32"), num_tries


__all__ = ["SamplingOps", "FrequencyState", "QueueState", "Negatives", "Sampler", "EMPTY_LOG_Q", "HASH_SEEDS",
           "bucket_indices", "frequency_log_q", "frequency_update", "gather_words", "queue_push",
           "queue_negatives", "sample_candidates", "log_probability", "log_expected_count"]
