"""The candidate samplers of ``recloss.sampling``: their expected counts against TensorFlow's candidate samplers,
their distributions against the formulas (statistical tests whose tolerances follow from the number of draws,
seeded, so deterministic), unique draws against an exact enumeration of TensorFlow's rejection loop, the
compilers (``jax.jit`` with static shapes, ``tf.function``, ``torch.compile``) and the errors, with the same
words on every backend."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

import recloss
from recloss import sampling
from recloss._dispatch import available_backends
from recloss.errors import BackendError, DTypeError, OptionError, ShapeError
from recloss.kernels import sampling as kernel
from recloss.reference import sampling as reference

from helpers import to_backend

INSTALLED = set(available_backends())
SAMPLERS = {"uniform": sampling.uniform_candidates, "log_uniform": sampling.log_uniform_candidates,
            "unigram": sampling.unigram_candidates}
#: A normal quantile for tolerances: two-sided probability 1e-7 per compared quantity (z = 5.33).
Z = 5.33


def _skip_unless(backend: str) -> None:
    if backend not in INSTALLED:
        pytest.skip(f"{backend} is not installed")


def _counts(num_items: int) -> np.ndarray:
    return np.arange(1.0, num_items + 1.0)


def _third(kind: str, num_items: int, backend: str = "numpy"):
    """The third positional argument of a sampler: ``num_items``, or the counts of the unigram sampler."""
    return to_backend(backend, _counts(num_items)) if kind == "unigram" and backend != "numpy" else (
        _counts(num_items) if kind == "unigram" else num_items)


def _q(kind: str, num_items: int, distortion: float = 0.75) -> np.ndarray:
    return reference.probability(kind, np.arange(num_items), num_items, _counts(num_items), distortion)


def _random_state(backend: str, seed: int):
    if backend == "torch":
        import torch
        return torch.Generator().manual_seed(seed)
    if backend == "jax":
        import jax
        return jax.random.key(seed)
    if backend == "tensorflow":
        import tensorflow as tf
        return tf.random.Generator.from_seed(seed)
    return np.random.default_rng(seed)


def _numpy(x) -> np.ndarray:
    return np.asarray(x.numpy() if hasattr(x, "numpy") and not isinstance(x, np.ndarray) else x)


def _chi_square_bound(df: int, z: float = 4.75) -> float:
    """The chi-square quantile of upper probability ~1e-6 (z = 4.75), by Wilson and Hilferty's approximation."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


# ----------------------------------------------------------------------------------------------------------
# Expected counts: TensorFlow's, for TensorFlow's own draws


def _tensorflow_draw(kind: str, unique: bool, num_sampled: int, num_items: int, seed: int):
    import tensorflow as tf

    true = tf.constant(np.arange(0, num_items, 3)[:, None], tf.int64)
    common = dict(true_classes=true, num_true=1, num_sampled=num_sampled, unique=unique, range_max=num_items,
                  seed=seed)
    if kind == "uniform":
        out = tf.random.uniform_candidate_sampler(**common)
    elif kind == "log_uniform":
        out = tf.random.log_uniform_candidate_sampler(**common)
    else:
        out = tf.random.fixed_unigram_candidate_sampler(**common, distortion=0.75,
                                                        unigrams=list(_counts(num_items)))
    return (out.sampled_candidates.numpy(), out.sampled_expected_count.numpy(), true.numpy()[:, 0],
            out.true_expected_count.numpy()[:, 0])


def _tries(q: np.ndarray, counts: np.ndarray, num_sampled: int) -> int:
    """The number of draws TensorFlow's loop took, read back from its expected counts: ``n`` where they are
    ``n q`` (no draw rejected), else ``T = log1p(-c) / log1p(-q)`` (the same for every candidate)."""
    if np.allclose(counts, num_sampled * q, rtol=1e-6, atol=0):
        return num_sampled
    estimates = np.log1p(-counts.astype(np.float64)) / np.log1p(-q)
    tries = int(round(float(np.median(estimates))))
    assert np.allclose(estimates, tries, rtol=1e-3), estimates
    return tries


@pytest.mark.parametrize("unique", [False, True], ids=["replacement", "unique"])
@pytest.mark.parametrize("kind", list(SAMPLERS))
def test_expected_counts_equal_tensorflows_for_its_own_draws(kind, unique):
    """TensorFlow's samplers return each candidate's expected count (float32); the float64 reference and every
    backend's kernel, given TensorFlow's candidates and its number of draws, give the same values to float32
    rounding (TensorFlow computes in float32: relative 2e-6)."""
    _skip_unless("tensorflow")
    num_items, num_sampled = 40, 12
    checked = 0
    for seed in range(6):
        ids, counts, true_ids, true_counts = _tensorflow_draw(kind, unique, num_sampled, num_items, seed)
        q = reference.probability(kind, ids, num_items, _counts(num_items), 0.75)
        tries = _tries(q, counts, num_sampled) if unique else num_sampled
        for which, values, tf_counts in ((ids, q, counts), (true_ids, None, true_counts)):
            q_here = reference.probability(kind, which, num_items, _counts(num_items), 0.75) if values is None else values
            expected = reference.expected_count(q_here, num_sampled, tries, unique)
            np.testing.assert_allclose(expected, tf_counts, rtol=2e-6, atol=0)
            for backend in sorted(INSTALLED - {"numpy"}):
                module = sampling.backend_module(backend)
                ops = module.OPS
                log_q = ops.cast(module.convert(np.log(q_here)), ops.sampling_float())
                got = ops.exp(kernel.log_expected_count(ops, log_q, num_sampled, float(tries), unique))
                np.testing.assert_allclose(_numpy(got), tf_counts, rtol=2e-6, atol=0, err_msg=backend)
        checked += tries > num_sampled
    if unique:
        assert checked >= 3, "too few draws with rejections to compare the rejection formula"


# ----------------------------------------------------------------------------------------------------------
# Distributions


BACKENDS_AND_REFERENCE = ["numpy", "torch", "jax", "tensorflow"]


@pytest.mark.parametrize("kind", list(SAMPLERS))
@pytest.mark.parametrize("backend", BACKENDS_AND_REFERENCE)
def test_draws_with_replacement_follow_the_formula(backend, kind):
    """Counts of 12,800 draws (25 calls of 512) against ``N q``: Pearson's chi-square below its quantile of
    upper probability 1e-6 for 19 degrees of freedom; and every returned log Q is ``log(n q(id))``."""
    _skip_unless(backend)
    num_items, num_sampled, calls = 20, 512, 25
    q = _q(kind, num_items)
    state = _random_state(backend, 7)
    found = np.zeros(num_items)
    pos = np.array([0, 5, 19])
    for call in range(calls):
        seed = _random_state("jax", call) if backend == "jax" else state
        out = SAMPLERS[kind](to_backend(backend, pos) if backend != "numpy" else pos, num_sampled,
                             _third(kind, num_items, backend), unique=False, seed=seed,
                             **({"backend": "numpy"} if backend == "numpy" else {}))
        ids = _numpy(out.neg_ids)
        found += np.bincount(ids, minlength=num_items)
        np.testing.assert_allclose(_numpy(out.neg_log_q), np.log(num_sampled * q[ids]), rtol=0, atol=2e-6)
        np.testing.assert_allclose(_numpy(out.pos_log_q), np.log(num_sampled * q[pos]), rtol=0, atol=2e-6)
    total = calls * num_sampled
    chi_square = float(np.sum((found - total * q) ** 2 / (total * q)))
    assert chi_square < _chi_square_bound(num_items - 1), (chi_square, found, total * q)


def _successive_sampling(q: np.ndarray, num_sampled: int) -> dict[str, np.ndarray | float]:
    """Exact properties of TensorFlow's loop (draw from q, keep new ids until n are found), by enumerating every
    ordered outcome: P(seq) = prod_j q_{s_j} / (1 - S_j) with S_j the mass already found; given seq, the
    rejected draws before the (j+1)-th new id are geometric with repeat probability S_j."""
    inclusion = np.zeros(len(q))
    mean_tries = second_moment = no_rejection = 0.0
    for seq in itertools.permutations(range(len(q)), num_sampled):
        p, found, mean, var, none = 1.0, 0.0, 0.0, 0.0, 1.0
        for j, item in enumerate(seq):
            if j:
                mean += found / (1 - found)
                var += found / (1 - found) ** 2
                none *= 1 - found
            p *= q[item] / (1 - found)
            found += q[item]
        inclusion[list(seq)] += p
        mean_tries += p * (num_sampled + mean)
        second_moment += p * (var + (num_sampled + mean) ** 2)
        no_rejection += p * none
    return {"inclusion": inclusion, "mean_tries": mean_tries, "var_tries": second_moment - mean_tries ** 2,
            "no_rejection": no_rejection}


def _unique_draws(backend: str, kind: str, num_items: int, num_sampled: int, calls: int):
    """``calls`` unique draws through the kernel (which also returns the number of draws T): ids ``[calls, n]``,
    their log Q ``[calls, n]`` and T ``[calls]``."""
    pos = np.array([0, num_items - 1])
    if backend == "numpy":
        rng = np.random.default_rng(11)
        ids, tries, log_q = [], [], []
        for _ in range(calls):
            drawn, t = reference.draw(kind, num_sampled, num_items, True, rng, _counts(num_items), 0.75)
            ids.append(drawn)
            tries.append(t)
            log_q.append(np.log(reference.expected_count(_q(kind, num_items)[drawn], num_sampled, t, True)))
        return np.array(ids), np.array(log_q), np.array(tries, float)
    module = sampling.backend_module(backend)
    ops = module.OPS
    weights = None
    if kind == "unigram":
        weights = ops.cast(module.convert(_counts(num_items)), ops.sampling_float()) ** 0.75
    sampler = kernel.Sampler(kind, num_items, weights)
    pos_t = module.convert(pos)
    if backend == "jax":
        import jax

        def one(key):
            ids, log_q, _, tries = kernel.sample_candidates(ops, sampler, key, pos_t, num_sampled, True)
            return ids, log_q, tries
        ids, log_q, tries = jax.jit(jax.vmap(one))(jax.random.split(jax.random.key(11), calls))
        return np.asarray(ids), np.asarray(log_q), np.asarray(tries, float)
    rng = module.random_state(_random_state(backend, 11), pos_t)
    call = lambda: kernel.sample_candidates(ops, sampler, rng, pos_t, num_sampled, True)  # noqa: E731
    if backend == "tensorflow":
        import tensorflow as tf
        call = tf.function(call)
    out = [call() for _ in range(calls)]
    return (np.stack([_numpy(o[0]) for o in out]), np.stack([_numpy(o[1]) for o in out]),
            np.array([float(_numpy(o[3])) for o in out]))


@pytest.mark.parametrize("kind", ["log_uniform", "unigram"])
@pytest.mark.parametrize("backend", BACKENDS_AND_REFERENCE)
def test_unique_draws_are_tensorflows_rejection_loop(backend, kind):
    """1500 unique draws of 3 among 6: the first id found ~ q (chi-square), each id's inclusion frequency,
    the mean number of draws T and how often no draw was rejected, against the exact enumeration of the
    loop (bounds of z = 5.33 standard errors); the ids are distinct and each log Q is TensorFlow's formula
    for the call's T."""
    _skip_unless(backend)
    num_items, num_sampled, calls = 6, 3, 1500
    q = _q(kind, num_items)
    exact = _successive_sampling(q, num_sampled)
    ids, log_q, tries = _unique_draws(backend, kind, num_items, num_sampled, calls)
    assert ids.shape == (calls, num_sampled)
    assert all(len(set(row)) == num_sampled for row in ids.tolist())
    first = np.bincount(ids[:, 0], minlength=num_items)
    assert np.sum((first - calls * q) ** 2 / (calls * q)) < _chi_square_bound(num_items - 1)
    inclusion = np.array([(ids == item).any(axis=1).sum() for item in range(num_items)])
    pi = exact["inclusion"]
    assert np.all(np.abs(inclusion - calls * pi) <= Z * np.sqrt(calls * pi * (1 - pi))), (inclusion, calls * pi)
    assert abs(tries.mean() - exact["mean_tries"]) <= Z * math.sqrt(exact["var_tries"] / calls), (
        tries.mean(), exact["mean_tries"])
    p_none = exact["no_rejection"]
    assert abs((tries == num_sampled).sum() - calls * p_none) <= Z * math.sqrt(calls * p_none * (1 - p_none))
    expected = np.log(np.stack([reference.expected_count(q[row], num_sampled, int(t), True)
                                for row, t in zip(ids, tries)]))
    np.testing.assert_allclose(log_q, expected, rtol=0, atol=5e-6)


def test_unique_uniform_draws_are_distinct_and_cover_every_id():
    """unique=True with num_sampled == num_items returns a permutation of every id (any backend)."""
    for backend in sorted(INSTALLED):
        pos = np.array([3])
        seed = _random_state("jax", 0) if backend == "jax" else 0
        out = sampling.uniform_candidates(pos if backend == "numpy" else to_backend(backend, pos), 10, 10,
                                          seed=seed, **({"backend": "numpy"} if backend == "numpy" else {}))
        assert sorted(_numpy(out.neg_ids).tolist()) == list(range(10)), backend


# ----------------------------------------------------------------------------------------------------------
# Compilers, dtypes, seeds


def test_jax_jit_with_a_key_static_shapes_and_vmap():
    _skip_unless("jax")
    import jax
    import jax.numpy as jnp

    pos = jnp.arange(4)

    @jax.jit
    def draw(pos, key, counts):
        return (sampling.log_uniform_candidates(pos, 5, 50, seed=key),
                sampling.unigram_candidates(pos, 5, counts, seed=key, unique=False),
                sampling.uniform_candidates(pos, 5, 50, seed=key))
    shapes = jax.eval_shape(draw, pos, jax.random.key(0), jnp.ones(50))
    for out in shapes:
        assert out.neg_ids.shape == (5,) and out.neg_log_q.shape == (5,) and out.pos_log_q.shape == (4,)
        assert out.neg_log_q.dtype == jnp.float32 and out.neg_ids.dtype == jnp.int32
    first, again = draw(pos, jax.random.key(0), jnp.ones(50)), draw(pos, jax.random.key(0), jnp.ones(50))
    other = draw(pos, jax.random.key(1), jnp.ones(50))
    assert all(np.array_equal(a.neg_ids, b.neg_ids) for a, b in zip(first, again))
    assert not np.array_equal(first[0].neg_ids, other[0].neg_ids)
    assert len(set(np.asarray(first[0].neg_ids).tolist())) == 5
    batched = jax.vmap(lambda key: sampling.log_uniform_candidates(pos, 5, 50, seed=key))(
        jax.random.split(jax.random.key(2), 3))
    assert batched.neg_ids.shape == (3, 5)


def test_tensorflow_function_and_xla_with_a_generator_and_an_int_seed():
    _skip_unless("tensorflow")
    import tensorflow as tf

    generator = tf.random.Generator.from_seed(4)
    pos = tf.constant([0, 7, 9], tf.int64)
    for jit in (False, True):
        draw = tf.function(lambda pos: sampling.log_uniform_candidates(pos, 6, 30, seed=generator), jit_compile=jit)
        one, two = draw(pos), draw(pos)
        assert not np.array_equal(one.neg_ids.numpy(), two.neg_ids.numpy())   # the generator's state advances
        assert len(set(one.neg_ids.numpy().tolist())) == 6 and one.neg_ids.numpy().max() < 30
        assert one.neg_log_q.dtype == tf.float32 and one.pos_log_q.shape == (3,)
        fixed = tf.function(lambda pos: sampling.unigram_candidates(pos, 6, tf.range(1.0, 31.0), seed=5,
                                                                    unique=False), jit_compile=jit)
        assert np.array_equal(fixed(pos).neg_ids.numpy(), fixed(pos).neg_ids.numpy())   # an int seed: stateless


def test_torch_compile_fullgraph_with_the_global_generator():
    _skip_unless("torch")
    import torch

    torch.manual_seed(0)
    draw = torch.compile(lambda pos, counts: (sampling.log_uniform_candidates(pos, 6, 30),
                                              sampling.unigram_candidates(pos, 6, counts, unique=False)),
                         fullgraph=True)
    pos = torch.tensor([0, 7, 9])
    first, second = draw(pos, torch.arange(1.0, 31.0))
    assert first.neg_ids.shape == (6,) and len(set(first.neg_ids.tolist())) == 6
    q = _q("unigram", 30)[second.neg_ids.numpy()]
    np.testing.assert_allclose(second.neg_log_q.numpy(), np.log(6 * q), atol=2e-6)


@pytest.mark.parametrize("backend", ["torch", "jax", "tensorflow"])
def test_an_int_seed_gives_the_same_draws_and_ids_of_any_integer_dtype_work(backend):
    _skip_unless(backend)
    results = []
    for dtype in ("int32", "int64", "uint8"):
        pos = to_backend(backend, np.array([1, 2, 30], dtype))
        results.append(sampling.log_uniform_candidates(pos, 8, 40, seed=3))
    for out in results[1:]:
        assert np.array_equal(_numpy(out.neg_ids), _numpy(results[0].neg_ids))
        assert np.array_equal(_numpy(out.pos_log_q), _numpy(results[0].pos_log_q))


def test_numpy_ids_follow_the_backend_and_the_candidates_feed_the_loss():
    """``backend=`` converts NumPy ids; the fields pass to sampled_softmax_loss as keywords."""
    for backend in sorted(INSTALLED - {"numpy"}):
        pos = np.array([1, 4, 4, 9])
        seed = _random_state("jax", 0) if backend == "jax" else 0
        cands = sampling.log_uniform_candidates(pos, 6, 20, seed=seed, backend=backend)
        table = np.random.default_rng(0).normal(size=(20, 3)).astype(np.float32)
        query = to_backend(backend, table[[0, 1, 2, 3]])
        neg_emb = to_backend(backend, table[_numpy(cands.neg_ids)])
        loss = recloss.sampled_softmax_loss(query, to_backend(backend, table[pos]), neg_emb, pos_ids=pos,
                                            **cands._asdict())
        expected = recloss.sampled_softmax_loss(table[[0, 1, 2, 3]], table[pos], table[_numpy(cands.neg_ids)],
                                                pos_ids=pos, neg_ids=_numpy(cands.neg_ids),
                                                neg_log_q=_numpy(cands.neg_log_q), pos_log_q=_numpy(cands.pos_log_q))
        np.testing.assert_allclose(float(_numpy(loss)), float(expected), rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Errors, the same words on every backend


def _call(backend: str, kind: str, pos, num_sampled, third, **options):
    pos = np.asarray(pos)
    if backend != "numpy":
        pos = to_backend(backend, pos)
        if kind == "unigram":
            third = to_backend(backend, np.asarray(third))
        options.setdefault("seed", _random_state("jax", 0) if backend == "jax" else 0)
    else:
        options.setdefault("backend", "numpy")
    return SAMPLERS[kind](pos, num_sampled, third, **options)


BAD_INPUTS = [
    ("uniform", [0.0, 1.0], 2, 10, {}, DTypeError,
     "uniform_candidates: `pos_ids` must be an integer tensor (int8, int16, int32, int64, uint8, uint16, uint32, "
     "uint64); got float"),
    ("log_uniform", [[0, 1]], 2, 10, {}, ShapeError, "log_uniform_candidates: `pos_ids` must have shape [B]; got (1, 2)"),
    ("uniform", [0, -1], 2, 10, {}, OptionError,
     "uniform_candidates: `pos_ids` must hold ids in [0, num_items) = [0, 10); got -1"),
    ("log_uniform", [0, 10], 2, 10, {}, OptionError,
     "log_uniform_candidates: `pos_ids` must hold ids in [0, num_items) = [0, 10); got 10"),
    ("uniform", [0], 11, 10, {}, OptionError,
     "uniform_candidates: `num_sampled` must be at most num_items = 10 with unique=True (each candidate is drawn "
     "once); got 11"),
    ("uniform", [0], 0, 10, {}, OptionError, "uniform_candidates: `num_sampled` must be an integer >= 1; got 0"),
    ("log_uniform", [0], 2, 2.5, {}, OptionError, "log_uniform_candidates: `num_items` must be an integer >= 1; got 2.5"),
    ("uniform", [0], 2, 10, {"unique": "yes"}, OptionError, "uniform_candidates: `unique` must be True or False; got 'yes'"),
    ("unigram", [0], 2, [1.0, -1.0, 2.0], {}, OptionError,
     "unigram_candidates: `counts` must hold finite values >= 0, not all 0; got -1.0"),
    ("unigram", [0], 2, [0.0, 0.0], {}, OptionError, "unigram_candidates: `counts` must hold finite values >= 0, not "
     "all 0; got all 0"),
    ("unigram", [0], 3, [1.0, 0.0, 2.0], {}, OptionError,
     "unigram_candidates: `num_sampled` must be at most the number of ids with a count > 0 (2) with unique=True; got 3"),
    ("unigram", [1], 1, [1.0, 0.0, 2.0], {}, OptionError,
     "unigram_candidates: `pos_ids` must be ids with a count > 0 in `counts` (the log Q of an id that is never "
     "drawn is -inf); got 1, of count 0"),
    ("unigram", [0], 1, [1.0, 2.0], {"distortion": -1.0}, OptionError,
     "unigram_candidates: `distortion` must be a finite number in [0, inf); got -1.0"),
]


@pytest.mark.parametrize("kind, pos, num_sampled, third, options, error, message", BAD_INPUTS,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD_INPUTS)])
def test_bad_inputs_get_the_same_words_on_every_backend(kind, pos, num_sampled, third, options, error, message):
    for backend in sorted(INSTALLED):
        with pytest.raises(error) as caught:
            _call(backend, kind, pos, num_sampled, third, **options)
        assert str(caught.value).startswith(message), (backend, str(caught.value))


def test_bad_seeds_name_the_framework_state():
    for backend in sorted(INSTALLED - {"numpy"}):
        with pytest.raises(OptionError) as caught:
            sampling.uniform_candidates(to_backend(backend, np.array([0])), 2, 10, seed="seven")
        assert str(caught.value).startswith("uniform_candidates: `seed` must be None, an int or ") or (
            backend == "jax" and "JAX key" in str(caught.value)), str(caught.value)
    if "jax" in INSTALLED:
        with pytest.raises(OptionError, match="must be an int or a JAX key on the jax backend"):
            sampling.uniform_candidates(to_backend("jax", np.array([0])), 2, 10)
    if {"torch", "jax"} <= INSTALLED:
        import jax
        with pytest.raises(BackendError, match="tensors of several frameworks in one call"):
            sampling.uniform_candidates(to_backend("torch", np.array([0])), 2, 10, seed=jax.random.key(0))
