"""Where negatives and their probabilities come from: candidate samplers that return their own log Q, streaming
frequency estimation of log Q from the training ids, and a queue of negatives from earlier batches.

**log Q** has one meaning in recloss: the log of the candidate's expected number of occurrences among one
step's candidates of its source (TensorFlow's expected counts). In-batch candidates of ``B`` rows drawn from
the training log: ``log(B p_item)``. ``n`` draws with replacement from ``q``: ``log(n q_item)``. Draws until
``n`` distinct candidates are found, in ``T`` draws: ``log(-expm1(T log1p(-q_item)))``. Each source's log Q
goes with its candidates: ``pos_log_q`` (the positives, also the in-batch negatives) and ``neg_log_q``::

    cands = recloss.sampling.log_uniform_candidates(item_ids, 1024, num_items, seed=generator)
    loss = recloss.sampled_softmax_loss(query, item_emb, table[cands.neg_ids], neg_log_q=cands.neg_log_q,
                                        pos_log_q=cands.pos_log_q, pos_ids=item_ids, neg_ids=cands.neg_ids)

The functions follow the framework of their tensors (``backend=`` to choose, as for the losses; NumPy alone
runs the NumPy reference). The estimator and the queue are pure functions of a state here (the JAX API; they
work on every backend); ``recloss.torch`` and ``recloss.keras`` wrap the same functions as a module and
layers whose state lives in buffers and variables. ``import recloss.sampling`` imports no framework.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from recloss import _validate_sampling as check
from recloss._dispatch import canonical_name, framework_of, load_backend, resolve_backend
from recloss._validate import GATHER_ENGINES, gather_error, gather_requested, is_tensor_like
from recloss.errors import BackendError, DTypeError, OptionError, ShapeError
from recloss.kernels import sampling as kernel
from recloss.kernels.sampling import EMPTY_LOG_Q, FrequencyState, Negatives, QueueState
from recloss.reference import sampling as reference

Tensor = Any  #: a tf.Tensor, torch.Tensor, jax.Array or np.ndarray


class Candidates(NamedTuple):
    """A sampler's draw, as keywords of ``sampled_softmax_loss``: ``neg_ids`` ``[num_sampled]`` (int64; int32 in
    JAX without x64), ``neg_log_q`` ``[num_sampled]`` and ``pos_log_q`` ``[B]`` (float32; float64 on NumPy).
    Look the negatives' embeddings up from ``neg_ids``."""

    neg_ids: Any
    neg_log_q: Any
    pos_log_q: Any


#: Defaults of the estimator: 2**20 buckets x 2 hash functions of float32 (8 MiB), decay 2**-7 (a window of
#: about 128 steps).
NUM_BUCKETS, NUM_HASHES, DECAY = 1 << 20, 2, 2.0 ** -7


# ----------------------------------------------------------------------------------------------------------
# Backends


_SAMPLING_MODULES: dict[str, Any] = {}


def backend_module(name: str) -> Any:
    """``recloss.backends.<framework>.sampling`` (its ``OPS``, ``random_state``, ...), importing the framework."""
    module = _SAMPLING_MODULES.get(name)
    if module is not None:
        return module
    load_backend(name)   # BackendUnavailableError with the install command where the framework is missing
    # Import statements, not importlib: torch.compile(fullgraph=True) follows them (see recloss._dispatch).
    if name == "torch":
        from recloss.backends.torch import sampling as torch_sampling
        _SAMPLING_MODULES[name] = torch_sampling
    elif name == "jax":
        from recloss.backends.jax import sampling as jax_sampling
        _SAMPLING_MODULES[name] = jax_sampling
    else:
        from recloss.backends.tensorflow import sampling as tensorflow_sampling
        _SAMPLING_MODULES[name] = tensorflow_sampling
    return _SAMPLING_MODULES[name]


def _array(x: Any) -> Any:
    return np.asarray(x) if isinstance(x, (list, tuple, int)) else x


def _jax_x64() -> bool:
    import jax
    return bool(jax.config.jax_enable_x64)  # type: ignore[attr-defined]


def _framework_ids(name: str, argument: str, backend: str, ids: Any, device_of: Any = None,
                   words: bool = True) -> Any:
    """Ids as a tensor of ``backend``: NumPy converted, torch ids moved to ``device_of``'s device. In JAX without
    x64 (32-bit integers), 64-bit NumPy ids become their ``(lo, hi)`` 32-bit words, split here on the host, which
    the hash takes as they are (``words=True``), or must fit in int32 (``words=False``)."""
    if framework_of(ids) == "numpy":
        module = backend_module(backend)
        if backend == "jax" and ids.dtype.itemsize == 8 and not _jax_x64():
            if words:
                wide = ids.astype(np.uint64)   # the 64-bit two's complement of each value
                return (module.convert((wide & 0xFFFFFFFF).astype(np.uint32)),
                        module.convert((wide >> 32).astype(np.uint32)))
            int32 = np.iinfo(np.int32)
            if ids.size and (int(ids.min()) < int32.min or int(ids.max()) > int32.max):
                raise DTypeError(f"{name}: `{argument}` holds ids beyond int32, which JAX without jax_enable_x64 "
                                 "cannot hold; enable jax_enable_x64")
            ids = ids.astype(np.int32)
        ids = module.convert(ids)
    if backend == "torch" and device_of is not None and ids.device != device_of.device:
        ids = ids.to(device_of.device)
    return ids


# ----------------------------------------------------------------------------------------------------------
# Samplers


def uniform_candidates(pos_ids: Tensor, num_sampled: int, num_items: int, *, unique: bool = True,
                       seed: Any = None, backend: str | None = None) -> Candidates:
    """``num_sampled`` candidates drawn uniformly from ``[0, num_items)``, and their log Q and the positives'.

    One draw has ``q = 1 / num_items``; log Q is the expected count's log (see the module's docstring). With
    ``unique=True`` (TensorFlow's default) the candidates are distinct: drawn as TensorFlow's rejection loop
    draws them (the same distribution and expected counts as ``tf.random.uniform_candidate_sampler``), with
    static shapes. ``seed``: None (the framework's global generator; JAX needs a key), an int (the same draws
    on every call) or the framework's random state (``torch.Generator``, a JAX key, ``tf.random.Generator``).

    Args:
        pos_ids: ``[B]`` integer, the rows' positive ids, in ``[0, num_items)``.
        num_sampled: candidates per call, an int >= 1 (at most ``num_items`` with ``unique``).
        num_items: the id range, an int >= 1.

    Returns:
        :class:`Candidates` ``(neg_ids [num_sampled], neg_log_q [num_sampled], pos_log_q [B])``.
    """
    return _candidates("uniform_candidates", "uniform", pos_ids, num_sampled, num_items, None, 1.0, unique, seed,
                       backend)


def log_uniform_candidates(pos_ids: Tensor, num_sampled: int, num_items: int, *, unique: bool = True,
                           seed: Any = None, backend: str | None = None) -> Candidates:
    """``num_sampled`` candidates from the log-uniform (Zipfian) distribution over ``[0, num_items)``, as
    TensorFlow's ``log_uniform_candidate_sampler``: ``q(id) = log((id + 2) / (id + 1)) / log(num_items + 1)``,
    for ids sorted by decreasing frequency. Arguments and result as :func:`uniform_candidates`; the draws run
    in float64 (float32 in JAX without x64, where ids above about 2**20 get probabilities off by up to a few
    percent: the resolution of float32)."""
    return _candidates("log_uniform_candidates", "log_uniform", pos_ids, num_sampled, num_items, None, 1.0, unique,
                       seed, backend)


def unigram_candidates(pos_ids: Tensor, num_sampled: int, counts: Tensor, *, distortion: float = 0.75,
                       unique: bool = True, seed: Any = None, backend: str | None = None) -> Candidates:
    """``num_sampled`` candidates drawn in proportion to ``counts ** distortion``, as TensorFlow's
    ``fixed_unigram_candidate_sampler`` with ``unigrams=counts`` (``distortion=0.75`` as word2vec; 1 samples
    the counts themselves, 0 uniformly). ``counts`` ``[num_items]`` (floating or integer, >= 0, not all 0)
    gives ``num_items``; an id of count 0 is never drawn and may not be a positive (its log Q would be -inf).
    Other arguments and result as :func:`uniform_candidates`."""
    return _candidates("unigram_candidates", "unigram", pos_ids, num_sampled, None, counts, distortion, unique, seed,
                       backend)


def _candidates(name: str, kind: str, pos_ids: Any, num_sampled: Any, num_items: Any, counts: Any,
                distortion: Any, unique: Any, seed: Any, backend: str | None) -> Candidates:
    num_sampled = check.check_count(name, "num_sampled", num_sampled)
    unique = check.check_bool(name, "unique", unique)
    if kind == "unigram":
        distortion = check.check_number(name, "distortion", distortion, 0.0)
    else:
        num_items = check.check_count(name, "num_items", num_items)
    pos_ids, counts = _array(pos_ids), _array(counts)
    backend_name = _sampler_backend(name, backend, [x for x in (pos_ids, counts) if x is not None], seed)
    module = None if backend_name == "numpy" else backend_module(backend_name)
    concrete = load_backend(backend_name).concrete
    check.check_ids(name, "pos_ids", pos_ids)
    values = None
    if kind == "unigram":
        values = check.check_counts(name, counts, concrete)
        num_items = int(counts.shape[0])
    if unique and num_sampled > num_items:
        raise OptionError(f"{name}: `num_sampled` must be at most num_items = {num_items} with unique=True "
                          f"(each candidate is drawn once); got {num_sampled}")
    if backend_name == "jax" and num_items > 2 ** 31 - 1 and not _jax_x64():
        raise OptionError(f"{name}: `num_items` must be at most 2**31 - 1 in JAX without jax_enable_x64 (ids are "
                          f"int32); got {num_items}")
    check.check_id_range(name, "pos_ids", pos_ids, num_items, concrete)
    if values is not None:
        _check_unigram_support(name, values, distortion, pos_ids, num_sampled, unique, concrete)
    check.check_seed(name, seed, backend_name, (lambda s: isinstance(s, np.random.Generator)) if module is None
                     else module.is_random_state)
    if module is None:
        return Candidates(*reference.sample(kind, pos_ids, num_sampled, num_items, unique, seed, values, distortion))
    ops = module.OPS
    pos_ids = _framework_ids(name, "pos_ids", backend_name, pos_ids, words=False)
    weights = None
    if kind == "unigram":
        counts = module.convert(counts) if framework_of(counts) == "numpy" else counts
        weights = ops.cast(counts, ops.sampling_float()) ** distortion
    rng = module.random_state(seed, pos_ids)
    neg_ids, neg_log_q, pos_log_q, _ = kernel.sample_candidates(
        ops, kernel.Sampler(kind, num_items, weights), rng, pos_ids, num_sampled, unique)
    return Candidates(neg_ids, neg_log_q, pos_log_q)


#: The framework of a random state, by the top-level module of its type (a ``torch.Generator`` is no tensor).
_RANDOM_STATE_FRAMEWORKS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax", "jaxlib": "jax"}


def _sampler_backend(name: str, backend: str | None, tensors: list, seed: Any) -> str:
    """The backend of a sampler call: :func:`recloss._dispatch.resolve_backend` over its tensors, where the
    seed, when it is a framework's random state, counts as one more tensor of that framework."""
    framework = None
    if seed is not None and not isinstance(seed, (int, np.integer)):
        framework = _RANDOM_STATE_FRAMEWORKS.get(type(seed).__module__.split(".")[0])
    chosen = resolve_backend(name, backend, tensors)
    found = {framework_of(x) for x in tensors} - {"numpy"}
    if framework is None or framework == chosen:
        return chosen
    if backend is None and not found:
        return framework
    where = f"{chosen} ({type(tensors[0]).__module__}.{type(tensors[0]).__name__})" if found else f"backend={backend!r}"
    raise BackendError(f"{name}: tensors of several frameworks in one call: {where}, {framework} (the seed, a "
                       f"{type(seed).__module__}.{type(seed).__name__}); convert them to one framework first")


def _check_unigram_support(name: str, counts: np.ndarray, distortion: float, pos_ids: Any, num_sampled: int,
                           unique: bool, concrete: Any) -> None:
    """Enough ids of positive weight for a unique draw, and no positive of weight 0 (log Q = -inf)."""
    drawable = (counts > 0) if distortion > 0 else np.ones(counts.shape, bool)
    if unique and num_sampled > int(drawable.sum()):
        raise OptionError(f"{name}: `num_sampled` must be at most the number of ids with a count > 0 "
                          f"({int(drawable.sum())}) with unique=True; got {num_sampled}")
    ids = concrete(pos_ids)
    if ids is not None and np.size(ids):
        never = ~drawable[np.asarray(ids, np.int64)]
        if np.any(never):
            raise OptionError(f"{name}: `pos_ids` must be ids with a count > 0 in `counts` (the log Q of an id "
                              f"that is never drawn is -inf); got {int(np.asarray(ids)[never][0])}, of count 0")


# ----------------------------------------------------------------------------------------------------------
# The streaming frequency estimator


def check_frequency_options(name: str, num_buckets: Any, num_hashes: Any, decay: Any) -> tuple[int, int, float]:
    """The estimator's options, checked: ``num_buckets`` and ``num_hashes`` integers >= 1 (at most 8 hashes,
    at most 2**31 - 1 cells), ``decay`` a power of two in [2**-24, 1] (its products are then exact: see
    :func:`recloss.kernels.sampling.frequency_update`)."""
    num_buckets = check.check_count(name, "num_buckets", num_buckets)
    num_hashes = check.check_count(name, "num_hashes", num_hashes, 1, check.MAX_HASHES)
    if num_buckets * num_hashes > check.MAX_CELLS:
        raise OptionError(f"{name}: `num_buckets` * `num_hashes` must be at most 2**31 - 1; got {num_buckets} * "
                          f"{num_hashes}")
    decay = check.check_power_of_two(name, "decay", decay, 24)
    return num_buckets, num_hashes, decay


def frequency_init(num_buckets: int = NUM_BUCKETS, num_hashes: int = NUM_HASHES, decay: float = DECAY, *,
                   backend: str = "jax") -> FrequencyState:
    """A new estimator state (nothing seen): :class:`FrequencyState` ``(counts [num_hashes, num_buckets],
    norm [], decay [])``, float32 arrays of ``backend`` (float64 on ``"numpy"``, the reference).

    The estimator keeps a count-min sketch of decayed counts: each step multiplies every bucket by ``1 -
    decay`` and adds ``decay`` per occurrence of an id hashed there, so a bucket holds the decayed mean number
    of occurrences per step over a window of about ``1 / decay`` steps. Memory: ``4 * num_hashes * num_buckets``
    bytes (8 MiB at the defaults)."""
    num_buckets, num_hashes, decay = check_frequency_options("frequency_init", num_buckets, num_hashes, decay)
    name = canonical_name(backend)
    if name == "numpy":
        return FrequencyState(*reference.frequency_init(num_buckets, num_hashes, decay))
    module = backend_module(name)
    return FrequencyState(module.convert(np.zeros((num_hashes, num_buckets), np.float32)),
                          module.convert(np.zeros((), np.float32)), module.convert(np.asarray(decay, np.float32)))


def _frequency_state(name: str, state: Any, ids: Any) -> tuple[FrequencyState, str]:
    if not (isinstance(state, tuple) and len(state) == 3 and all(is_tensor_like(x) for x in state)
            and len(state[0].shape) == 2):
        raise OptionError(f"{name}: `state` must be a FrequencyState (counts, norm, decay), as frequency_init "
                          f"returns; got {type(state).__name__}")
    state = FrequencyState(*state)
    return state, resolve_backend(name, None, [*state, ids])


def frequency_update(state: FrequencyState, ids: Tensor, *, gather: Any = None) -> tuple[Tensor, FrequencyState]:
    """One training step: ``(log_q, new_state)``. ``log_q`` ``[B]`` float32 is each id's log Q read from the
    previous steps (its estimated expected count per step, ``log(B p)`` for in-batch candidates; see
    :func:`frequency_log_q`); the new state has counted this step's ids, repeats included.

    ``ids`` ``[B]``: any integer dtype, hashed by value (the same stream gives the same state on every
    framework). ``gather`` (JAX: the mesh axis name inside ``shard_map``; torch: True or a process group;
    TensorFlow: True inside ``strategy.run``): every worker counts the global batch's ids, so every worker's
    state stays identical; ``log_q`` is still the local ids'."""
    name = "frequency_update"
    state, backend = _frequency_state(name, state, ids)
    check.check_ids(name, "ids", _array(ids))
    check.check_gather(name, gather)
    return frequency_step(name, backend, state, _array(ids), gather, training=True)


def frequency_log_q(state: FrequencyState, ids: Tensor) -> Tensor:
    """Each id's log Q from the state, read only: ``log(max(c, decay) / max(norm, decay))`` with ``c`` the
    smallest of its buckets (a count-min sketch), ``[B]`` float32. An id not seen within the window gets the
    estimate of one occurrence (``decay`` per step), not -inf."""
    name = "frequency_log_q"
    state, backend = _frequency_state(name, state, ids)
    check.check_ids(name, "ids", _array(ids))
    return frequency_step(name, backend, state, _array(ids), None, training=False)[0]


def frequency_step(name: str, backend: str, state: FrequencyState, ids: Any, gather: Any,
                   training: bool) -> tuple[Any, FrequencyState]:
    """The estimator's step on ``backend``, shared by the functions, the torch module and the Keras layer:
    log Q of ``ids`` from ``state``, and (``training``) the state after counting the (gathered) ids."""
    gather = gather_requested(gather)
    if backend == "numpy":
        if gather is not None and training:
            raise gather_error(name, gather, GATHER_ENGINES, "the numpy backend, one process",
                               "pass torch, JAX or TensorFlow tensors, or gather=None")
        log_q = reference.frequency_log_q(state, ids)
        return log_q, (FrequencyState(*reference.frequency_update(state, ids)) if training else state)
    ops = backend_module(backend).OPS
    words = ops.id_words(_framework_ids(name, "ids", backend, ids, state.counts))
    log_q = kernel.frequency_log_q(ops, state, words)
    if not training:
        return log_q, state
    if gather is not None:
        comm = ops.collectives(name, gather)
        if comm is not None:
            words = kernel.gather_words(comm, words, ops.size(words[0], 0))
    return log_q, kernel.frequency_update(ops, state, words)


# ----------------------------------------------------------------------------------------------------------
# The negative queue


def check_queue_options(name: str, size: Any, dim: Any, track_ids: Any) -> tuple[int, int, bool]:
    return (check.check_count(name, "size", size, 0), check.check_count(name, "dim", dim),
            check.check_bool(name, "track_ids", track_ids))


def queue_init(size: int, dim: int, *, dtype: str = "float32", track_ids: bool = True,
               backend: str = "jax") -> QueueState:
    """An empty queue of ``size`` candidates of dimension ``dim``: :class:`QueueState` ``(emb [size, dim] of
    dtype, ids [size] (int64; int32 in JAX without x64) or None without ``track_ids``, log_q [size] float32,
    head, filled)``."""
    size, dim, track_ids = check_queue_options("queue_init", size, dim, track_ids)
    if dtype not in ("float16", "bfloat16", "float32", "float64"):
        raise OptionError(f"queue_init: `dtype` must be one of 'float16', 'bfloat16', 'float32', 'float64'; got "
                          f"{dtype!r}")
    name = canonical_name(backend)
    if name == "numpy":
        return QueueState(*reference.queue_init(size, dim, dtype, track_ids))
    module = backend_module(name)
    ids_dtype = np.int32 if name == "jax" and not _jax_x64() else np.int64
    emb = module.convert(np.zeros((size, dim), np.float32))
    return QueueState(module.OPS.cast(emb, dtype), module.convert(np.zeros(size, ids_dtype)) if track_ids else None,
                      module.convert(np.zeros(size, np.float32)), module.convert(np.zeros((), np.int32)),
                      module.convert(np.zeros((), np.int32)))


def _queue_state(name: str, state: Any, *tensors: Any) -> tuple[QueueState, str]:
    if not (isinstance(state, tuple) and len(state) == 5 and is_tensor_like(state[0]) and len(state[0].shape) == 2):
        raise OptionError(f"{name}: `state` must be a QueueState (emb, ids, log_q, head, filled), as queue_init "
                          f"returns; got {type(state).__name__}")
    state = QueueState(*state)
    return state, resolve_backend(name, None, [x for x in (*state, *tensors) if x is not None])


def queue_push(state: QueueState, emb: Tensor, ids: Tensor | None = None, log_q: Tensor | None = None, *,
               gather: Any = None) -> QueueState:
    """The queue after pushing a batch: ``emb`` ``[n, D]`` (kept without gradient), ``ids`` ``[n]`` (required
    when the queue keeps ids), ``log_q`` ``[n]`` (0 where None). The oldest candidates leave first; only the
    last ``size`` are kept. ``gather`` (as :func:`frequency_update`): every worker pushes the global batch, in
    worker order, so every worker's queue stays identical."""
    name = "queue_push"
    state, backend = _queue_state(name, state, emb, ids, log_q)
    return queue_step(name, backend, state, _array(emb), _array(ids), _array(log_q), gather)


def check_push(name: str, state: QueueState, emb: Any, ids: Any, log_q: Any) -> None:
    size, dim = state.emb.shape
    check.check_floats(name, "emb", emb, "[n, D]", 2, {1: (dim, f"D={dim} from the queue")})
    rows = emb.shape[0]
    if state.ids is not None and ids is None:
        raise OptionError(f"{name}: `ids` must be given: the queue keeps ids (track_ids=True); got None")
    if state.ids is None and ids is not None:
        raise OptionError(f"{name}: `ids` must be None: the queue keeps no ids (track_ids=False); got "
                          f"{type(ids).__name__}")
    if ids is not None:
        check.check_ids(name, "ids", ids, "[n]")
        if ids.shape[0] is not None and rows is not None and ids.shape[0] != rows:
            raise ShapeError(f"{name}: `ids` must have shape [n] with n={rows} from `emb`; got {tuple(ids.shape)}")
    if log_q is not None:
        check.check_floats(name, "log_q", log_q, "[n]", 1, {0: (rows, f"n={rows} from `emb`")})


def queue_step(name: str, backend: str, state: QueueState, emb: Any, ids: Any, log_q: Any, gather: Any) -> QueueState:
    """The push on ``backend``, shared by the function, the torch module and the Keras layer."""
    check_push(name, state, emb, ids, log_q)
    check.check_gather(name, gather)
    gather = gather_requested(gather)
    if backend == "numpy":
        if gather is not None:
            raise gather_error(name, gather, GATHER_ENGINES, "the numpy backend, one process",
                               "pass torch, JAX or TensorFlow tensors, or gather=None")
        return QueueState(*reference.queue_push(state, emb, ids, log_q))
    module = backend_module(backend)
    ops = module.OPS
    emb = module.convert(emb) if framework_of(emb) == "numpy" else emb
    log_q = module.convert(log_q) if log_q is not None and framework_of(log_q) == "numpy" else log_q
    if ids is not None:
        ids = _framework_ids(name, "ids", backend, ids, state.ids, words=False)
    if gather is not None:
        comm = ops.collectives(name, gather)
        if comm is not None:
            emb = ops.stop_gradient(emb)
            sizes = comm.sizes([ops.size(emb, 0)])[0]
            emb, ids, log_q = (None if x is None else comm.all_gather(x, sizes) for x in (emb, ids, log_q))
    return kernel.queue_push(ops, state, emb, ids, log_q)


def queue_negatives(state: QueueState) -> Negatives:
    """The queue's candidates as :class:`Negatives` ``(neg_emb [size, D], neg_ids [size] or None, neg_log_q
    [size])``, keywords of the softmax losses (pass ``in_batch=True`` to keep the in-batch negatives beside
    them). Slots not filled yet have a zero embedding and log Q = 3.4e38 (the largest float32): their term
    in a softmax row is exactly 0, so a queue that is not full gives the loss of the candidates it holds, with
    the shape fixed for compilers; a queue of size 0 gives the plain in-batch loss."""
    state, backend = _queue_state("queue_negatives", state)
    return negatives_of(backend, state)


def negatives_of(backend: str, state: QueueState) -> Negatives:
    if backend == "numpy":
        return Negatives(*reference.queue_negatives(state))
    return kernel.queue_negatives(backend_module(backend).OPS, state)


__all__ = ["Candidates", "Negatives", "FrequencyState", "QueueState", "EMPTY_LOG_Q", "uniform_candidates",
           "log_uniform_candidates", "unigram_candidates", "frequency_init", "frequency_update", "frequency_log_q",
           "queue_init", "queue_push", "queue_negatives", "NUM_BUCKETS", "NUM_HASHES", "DECAY"]
