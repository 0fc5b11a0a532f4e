"""The streaming frequency estimator: one stream of ids gives the same state, bit for bit, on the float32 NumPy
reference, PyTorch (eager and ``torch.compile``), JAX (eager, ``jax.jit``, 32- and 64-bit) and TensorFlow
(eager and XLA), and log Q within float32 rounding of the float64 reference; ids are hashed by value; what a
training step reads and counts; convergence to the expected counts; the torch module; errors. The Keras layer
runs in ``tests/keras_sampling_checks.py`` (one subprocess per Keras backend, with ``tests/test_keras.py``'s)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recloss import sampling
from recloss._dispatch import available_backends
from recloss.errors import BackendError, DTypeError, OptionError
from recloss.reference import sampling as reference

from helpers import to_backend

INSTALLED = set(available_backends())
BUCKETS, HASHES, DECAY = 1 << 10, 2, 2.0 ** -4


def _skip_unless(*backends: str) -> None:
    for backend in backends:
        if backend not in INSTALLED:
            pytest.skip(f"{backend} is not installed")


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def stream(steps: int = 25, batch: int = 48, seed: int = 0, wide: bool = True) -> list[np.ndarray]:
    """Zipfian ids over 300 values; ``wide``: some beyond 2**32 and some negative (int64)."""
    rng = np.random.default_rng(seed)
    values = rng.permutation(300).astype(np.int64) * 3 + 1
    if wide:
        values[::5] += 1 << 40
        values[::7] = -values[::7]
    p = 1.0 / np.arange(1, 301) ** 1.1
    return [values[rng.choice(300, size=batch, p=p / p.sum())] for _ in range(steps)]


def replay(ids_stream: list[np.ndarray]) -> tuple[list[np.ndarray], reference.FrequencyState, list[np.ndarray]]:
    """The float64 reference's log Q per step, and the float32 reference's final state and log Q per step."""
    exact = reference.frequency_init(BUCKETS, HASHES, DECAY, "float64")
    rounded = reference.frequency_init(BUCKETS, HASHES, DECAY, "float32")
    exact_log_q, rounded_log_q = [], []
    for ids in ids_stream:
        log_q, exact = reference.frequency_step(exact, ids)
        exact_log_q.append(log_q)
        log_q, rounded = reference.frequency_step(rounded, ids)
        rounded_log_q.append(log_q)
    return exact_log_q, rounded, rounded_log_q


def _assert_same(name: str, state, log_qs: list, ids_stream: list[np.ndarray]) -> None:
    exact_log_q, rounded, rounded_log_q = replay(ids_stream)
    assert np.array_equal(_numpy(state.counts), rounded.counts), f"{name}: counts differ from the float32 reference"
    assert np.array_equal(_numpy(state.norm), rounded.norm), f"{name}: norm differs"
    for got, exact, rounded_step in zip(log_qs, exact_log_q, rounded_log_q):
        got = _numpy(got).astype(np.float64)
        np.testing.assert_allclose(got, exact, rtol=0, atol=2e-5, err_msg=name)          # float32 state vs float64
        np.testing.assert_allclose(got, rounded_step, rtol=0, atol=1e-6, err_msg=name)   # its log, in float32


# ----------------------------------------------------------------------------------------------------------
# One stream, every framework, every compiler


def _run_functions(backend: str, ids_stream, step=None, convert=None):
    state = sampling.frequency_init(BUCKETS, HASHES, DECAY, backend=backend)
    step = step or sampling.frequency_update
    log_qs = []
    for ids in ids_stream:
        log_q, state = step(state, convert(ids) if convert else ids)
        log_qs.append(log_q)
    return state, log_qs


def test_torch_eager_and_compiled_module_agree_bit_for_bit():
    _skip_unless("torch")
    import torch
    import recloss.torch

    ids_stream = stream()
    state, log_qs = _run_functions("torch", ids_stream, convert=torch.from_numpy)
    _assert_same("torch functions", state, log_qs, ids_stream)
    for compiled in (False, True):
        module = recloss.torch.FrequencyEstimator(BUCKETS, HASHES, DECAY)
        call = torch.compile(module, fullgraph=True) if compiled else module
        log_qs = [call(torch.from_numpy(ids)) for ids in ids_stream]
        _assert_same(f"torch module (compiled={compiled})", module.state, log_qs, ids_stream)


def test_jax_eager_jit_32_and_64_bit_agree_bit_for_bit():
    _skip_unless("jax")
    import jax
    import jax.numpy as jnp

    wide = stream()
    state, log_qs = _run_functions("jax", wide)          # 64-bit NumPy ids, split into words on the host
    _assert_same("jax eager, 64-bit NumPy ids", state, log_qs, wide)
    narrow = stream(wide=False)
    state, log_qs = _run_functions("jax", narrow, step=jax.jit(sampling.frequency_update),
                                   convert=lambda ids: jnp.asarray(ids.astype(np.int32)))
    _assert_same("jax.jit, int32 ids", state, log_qs, narrow)
    with jax.enable_x64(True):
        state, log_qs = _run_functions("jax", wide, step=jax.jit(sampling.frequency_update), convert=jnp.asarray)
        _assert_same("jax.jit with x64, int64 ids", state, log_qs, wide)


def test_tensorflow_eager_and_xla_agree_bit_for_bit():
    _skip_unless("tensorflow")
    import tensorflow as tf

    ids_stream = stream()
    state, log_qs = _run_functions("tensorflow", ids_stream, convert=tf.constant)
    _assert_same("tensorflow eager", state, log_qs, ids_stream)
    state, log_qs = _run_functions("tensorflow", ids_stream, convert=tf.constant,
                                   step=tf.function(sampling.frequency_update, jit_compile=True))
    _assert_same("tensorflow XLA", state, log_qs, ids_stream)


@pytest.mark.parametrize("backend", ["numpy", "torch", "jax", "tensorflow"])
def test_ids_are_hashed_by_value_whatever_their_dtype(backend):
    """The same values as int8, int16, int32, int64, uint8, uint16, uint32 and uint64 (as NumPy arrays and as
    the framework's tensors where it has the dtype) give the same log Q and state; so do uint64 values above
    2**63 as their own ids."""
    _skip_unless(backend)
    values = np.array([0, 1, 5, 100, 127, 5, 5])
    results = []
    for dtype in ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64"):
        ids = values.astype(dtype)
        state = sampling.frequency_init(BUCKETS, HASHES, DECAY, backend=backend)
        forms = [ids]
        if backend == "torch" and dtype in ("int8", "int16", "int32", "int64", "uint8"):
            forms.append(to_backend(backend, ids))
        elif backend == "tensorflow" or (backend == "jax" and dtype not in ("int64", "uint64")):
            forms.append(to_backend(backend, ids))
        for form in forms:
            log_q, new = sampling.frequency_update(state, form)
            log_q, new = sampling.frequency_update(new, form)
            results.append((_numpy(log_q), _numpy(new.counts)))
    for log_q, counts in results[1:]:
        assert np.array_equal(log_q, results[0][0]) and np.array_equal(counts, results[0][1])
    huge = np.array([2 ** 64 - 1, 2 ** 63, 2 ** 63 - 1], np.uint64)
    state = sampling.frequency_init(BUCKETS, 1, DECAY, backend=backend)
    counts = _numpy(sampling.frequency_update(state, huge)[1].counts)
    expected = sorted(reference.bucket(int(v), 0, BUCKETS) for v in huge)
    assert sorted(np.flatnonzero(counts[0]).tolist()) == sorted(set(expected))


# ----------------------------------------------------------------------------------------------------------
# What a step reads and counts


def test_a_training_step_reads_the_previous_steps_then_counts_repeats():
    state = sampling.frequency_init(BUCKETS, HASHES, DECAY, backend="numpy")
    first, state = sampling.frequency_update(state, np.array([7, 7, 7, 9]))
    np.testing.assert_allclose(first, 0.0)                  # nothing seen yet: one occurrence, log 1
    second, state = sampling.frequency_update(state, np.array([7, 9, 11]))
    np.testing.assert_allclose(second, [math.log(3), 0.0, 0.0], atol=1e-12)   # 7 came 3 times in the one step
    before = state
    read = sampling.frequency_log_q(state, np.array([7, 9, 11, 12]))
    assert all(np.array_equal(a, b) for a, b in zip(state, before))          # read only
    norm = DECAY + DECAY * (1 - DECAY)
    expected = [(3 * DECAY * (1 - DECAY) + DECAY) / norm, (DECAY * (1 - DECAY) + DECAY) / norm, DECAY / norm,
                DECAY / norm]                               # 12 never seen: one occurrence in the window
    np.testing.assert_allclose(read, np.log(expected), atol=1e-12)


def test_estimates_converge_to_the_expected_counts():
    """A stationary stream (Zipf(1.1) over 40 ids, 200 per step, decay 2**-5, 400 steps): each id's final
    estimate is within 6 standard deviations of its expected count per step (the decayed mean of Poisson-like
    counts has relative variance ~ decay / (2 lambda)), in the log."""
    rng = np.random.default_rng(1)
    p = 1.0 / np.arange(1, 41) ** 1.1
    p /= p.sum()
    decay = 2.0 ** -5
    state = reference.frequency_init(1 << 12, 2, decay)
    for _ in range(400):
        state = reference.frequency_update(state, rng.choice(40, size=200, p=p))
    expected = 200 * p
    error = np.abs(reference.frequency_log_q(state, np.arange(40)) - np.log(expected))
    assert np.all(error <= 6 * np.sqrt(decay / 2 / expected)), error


# ----------------------------------------------------------------------------------------------------------
# The torch module


def test_torch_module_train_eval_state_dict_and_devices():
    _skip_unless("torch")
    import torch
    import recloss.torch

    module = recloss.torch.FrequencyEstimator(BUCKETS, HASHES, DECAY)
    assert set(module.state_dict()) == {"counts", "norm", "decay"}
    assert module.counts.dtype == torch.float32 and module.counts.numel() * 4 == HASHES * BUCKETS * 4
    ids = torch.tensor([3, 3, 8])
    module(ids)
    module.eval()
    before = module.counts.clone()
    read = module(torch.tensor([3, 8, 99]))
    assert torch.equal(module.counts, before)                       # eval: read only
    restored = recloss.torch.FrequencyEstimator(BUCKETS, HASHES, 2.0 ** -2)
    restored.load_state_dict(module.state_dict())
    restored.eval()
    assert torch.equal(restored(torch.tensor([3, 8, 99])), read) and float(restored.decay) == DECAY
    assert "num_buckets=1024, num_hashes=2, decay=0.0625" in repr(module)
    default = recloss.torch.FrequencyEstimator()
    assert default.counts.numel() * default.counts.element_size() == 8 * 2 ** 20   # 8 MiB at the defaults
    log_q = default(np.array([1, 2, 3]))                             # NumPy ids are accepted
    assert log_q.dtype == torch.float32 and not log_q.requires_grad


# ----------------------------------------------------------------------------------------------------------
# Errors


@pytest.mark.parametrize("options, message", [
    ({"decay": 0.01}, "`decay` must be a power of two in [2**-24, 1] (1/2, 1/4, ..., 1/128, ...); got 0.01"),
    ({"decay": 0.0}, "`decay` must be a power of two in [2**-24, 1]"),
    ({"decay": 2.0 ** -25}, "`decay` must be a power of two in [2**-24, 1]"),
    ({"num_hashes": 9}, "`num_hashes` must be an integer in [1, 8]; got 9"),
    ({"num_buckets": 0}, "`num_buckets` must be an integer >= 1; got 0"),
    ({"num_buckets": 2 ** 30, "num_hashes": 2}, "`num_buckets` * `num_hashes` must be at most 2**31 - 1"),
])
def test_bad_options_get_the_same_words_in_every_form(options, message):
    with pytest.raises(OptionError) as caught:
        sampling.frequency_init(**options)
    assert str(caught.value).startswith(f"frequency_init: {message}")
    if "torch" in INSTALLED:
        import recloss.torch
        with pytest.raises(OptionError) as caught:
            recloss.torch.FrequencyEstimator(**options)
        assert str(caught.value).startswith(f"FrequencyEstimator: {message}")


def test_ids_of_another_framework_and_float_ids_are_refused():
    state = sampling.frequency_init(BUCKETS, HASHES, DECAY, backend="numpy")
    with pytest.raises(DTypeError, match=r"frequency_update: `ids` must be an integer tensor .*; got float64"):
        sampling.frequency_update(state, np.array([1.0, 2.0]))
    with pytest.raises(OptionError, match="frequency_update: `state` must be a FrequencyState"):
        sampling.frequency_update((1, 2), np.array([1]))
    others = sorted(INSTALLED - {"numpy"})
    if "torch" in INSTALLED:
        import recloss.torch
        module = recloss.torch.FrequencyEstimator(BUCKETS, HASHES, DECAY)
        for other in [b for b in others if b != "torch"]:
            with pytest.raises(BackendError) as caught:
                module(to_backend(other, np.array([1, 2])))
            assert str(caught.value).startswith(f"FrequencyEstimator: `ids` must be a torch tensor (the framework of "
                                                f"the state) or a NumPy array; got a {other} tensor"), str(caught.value)
    if len(others) >= 2:
        state = sampling.frequency_init(BUCKETS, HASHES, DECAY, backend=others[0])
        with pytest.raises(BackendError, match="frequency_update: tensors of several frameworks in one call"):
            sampling.frequency_update(state, to_backend(others[1], np.array([1, 2])))
    with pytest.raises(OptionError, match="frequency_update: `gather=True` needs a framework's distributed engine"):
        sampling.frequency_update(sampling.frequency_init(BUCKETS, HASHES, DECAY, backend="numpy"), np.array([1]),
                                  gather=True)
