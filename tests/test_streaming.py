"""The streaming softmax path agrees with the materialised one, in value and gradients, on every backend.

Covers the three losses that stream (unsupervised softmax, sampled softmax with shared and in-batch
negatives, InfoNCE) with logQ, accidental-hit ids, weights and temperature; N smaller than the chunk and N
not a multiple of it; chunks kept from the forward and recomputed; rows with every candidate removed; half
inputs; and ``jax.jit``, ``tf.function(jit_compile=True)`` and ``torch.compile``. The float64 reference
comparison of the streaming path is in the parity tests (the specs' ``implementation="streaming"`` cases).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

import recloss
from recloss.kernels import softmax as kernels
from recloss._dispatch import load_backend

B, N, D = 6, 11, 5

CASES: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    # name: (loss, tensors to draw -> kind, options)
    "unsupervised": ("unsupervised_softmax_cross_entropy_loss",
                     {"src_emb": "B", "pos_emb": "B", "neg_emb": "N"}, {"temperature": 0.5}),
    "shared, logQ, ids, weights": ("sampled_softmax_loss",
                                   {"query_emb": "B", "pos_emb": "B", "neg_emb": "N", "neg_log_q": "qN",
                                    "pos_ids": "iB", "neg_ids": "iN", "sample_weight": "w"},
                                   {"temperature": 0.7}),
    "mixed, logQ, ids, none": ("sampled_softmax_loss",
                               {"query_emb": "B", "pos_emb": "B", "neg_emb": "N", "pos_log_q": "qB",
                                "neg_log_q": "qN", "pos_ids": "iB", "neg_ids": "iN"},
                               {"in_batch": True, "reduction": "none"}),
    "mixed, ids on positives only": ("sampled_softmax_loss",
                                     {"query_emb": "B", "pos_emb": "B", "neg_emb": "N", "pos_ids": "iB"},
                                     {"in_batch": True, "reduction": "sum"}),
    "in-batch, logQ, weights": ("sampled_softmax_loss",
                                {"query_emb": "B", "pos_emb": "B", "pos_log_q": "qB", "sample_weight": "w"}, {}),
    "info_nce symmetric, normalized, ids": ("info_nce_loss", {"query_emb": "B", "key_emb": "B", "ids": "iB"},
                                            {"symmetric": True, "normalize": True, "temperature": 0.2}),
}


def _draw(kind: str, rng: np.random.Generator, dtype: str) -> np.ndarray:
    if kind in ("B", "N"):
        return rng.normal(0.0, 0.8, size=(B if kind == "B" else N, D)).astype(dtype)
    if kind in ("qB", "qN"):
        return np.log(rng.uniform(0.05, 1.0, size=B if kind == "qB" else N)).astype(dtype)
    if kind in ("iB", "iN"):
        return rng.integers(0, 4, size=B if kind == "iB" else N).astype(np.int64)
    weights = rng.uniform(0.0, 2.0, size=B).astype(dtype)
    weights[0] = 0.0
    return weights


def _inputs(case: str, dtype: str = "float32", seed: int = 0) -> tuple[str, dict[str, Any], dict[str, Any], list]:
    loss, kinds, options = CASES[case]
    rng = np.random.default_rng(seed)
    inputs = {name: _draw(kind, rng, dtype) for name, kind in kinds.items()}
    wrt = [name for name, v in inputs.items() if v.dtype.kind == "f" and name != "sample_weight"]
    return loss, inputs, options, wrt


def _function(loss: str, options: dict[str, Any], implementation: str) -> Callable[..., Any]:
    function = getattr(recloss, loss)
    return lambda **tensors: function(**tensors, **options, implementation=implementation)


def _compare(actual: tuple, expected: tuple, rtol: float = 2e-5) -> None:
    (value, grads), (value0, grads0) = actual, expected
    np.testing.assert_allclose(value, value0, rtol=rtol, atol=rtol)
    for name in grads0:
        assert np.all(np.isfinite(grads[name])), name
        scale = max(np.abs(grads0[name]).max(), 1e-6)
        assert np.abs(grads[name] - grads0[name]).max() / scale < rtol * 10, name


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 candidates (N=11 and B+N=17 are not multiples), 2 of them kept from the forward."""
    monkeypatch.setattr(kernels, "STREAMING_CHUNK", 3)
    monkeypatch.setattr(kernels, "STREAMING_STORE_BYTES", 2 * B * 3 * 4)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunking", ["one chunk larger than N", "chunks of 3, 2 kept", "chunks of 4, none kept"])
def test_streaming_matches_materialized(backend, case, chunking, monkeypatch):
    if chunking != "one chunk larger than N":
        size = 3 if "3" in chunking else 4
        monkeypatch.setattr(kernels, "STREAMING_CHUNK", size)
        monkeypatch.setattr(kernels, "STREAMING_STORE_BYTES", 2 * B * size * 4 if "kept" in chunking else 0)
    module = load_backend(backend)
    loss, inputs, options, wrt = _inputs(case)
    expected = module.value_and_grad(_function(loss, options, "materialized"), inputs, wrt, "cpu")
    actual = module.value_and_grad(_function(loss, options, "streaming"), inputs, wrt, "cpu")
    _compare(actual, expected)


def test_streaming_float64(backend, small_chunks):
    module = load_backend(backend)
    loss, inputs, options, wrt = _inputs("mixed, logQ, ids, none", dtype="float64")
    expected = module.value_and_grad(_function(loss, options, "materialized"), inputs, wrt, "cpu")
    actual = module.value_and_grad(_function(loss, options, "streaming"), inputs, wrt, "cpu")
    _compare(actual, expected, rtol=1e-12)


def test_every_candidate_removed_gives_zero_loss_and_gradient(backend, small_chunks):
    module = load_backend(backend)
    rng = np.random.default_rng(1)
    inputs = {"query_emb": rng.normal(size=(B, D)).astype("float32"),
              "pos_emb": rng.normal(size=(B, D)).astype("float32"),
              "neg_emb": rng.normal(size=(N, D)).astype("float32"),
              "pos_ids": np.full(B, 7, np.int64), "neg_ids": np.full(N, 7, np.int64)}
    fn = _function("sampled_softmax_loss", {"in_batch": True, "reduction": "none"}, "streaming")
    value, grads = module.value_and_grad(fn, inputs, ["query_emb", "pos_emb", "neg_emb"], "cpu")
    assert np.array_equal(value, np.zeros(B))
    for grad in grads.values():
        assert np.array_equal(grad, np.zeros_like(grad))


def test_large_logits_keep_float32_accuracy(backend):
    """Rows near 1e4 stay at float32's input rounding: (m - s_pos) + log(sum exp(z - m))."""
    module = load_backend(backend)
    rng = np.random.default_rng(2)
    query = rng.normal(size=(B, D)).astype("float32")
    pos = (1e4 * query / np.sum(query * query, 1, keepdims=True)).astype("float32")  # q . pos ~ 1e4
    neg = (pos[rng.integers(0, B, N)] + rng.normal(0, 1e-3, (N, D))).astype("float32")
    inputs = {"src_emb": query, "pos_emb": pos, "neg_emb": neg}
    expected = recloss.reference.softmax.unsupervised_softmax_cross_entropy_loss(
        *(np.asarray(inputs[k], np.float64) for k in ("src_emb", "pos_emb", "neg_emb")), reduction="none")
    value, _ = module.value_and_grad(_function("unsupervised_softmax_cross_entropy_loss", {"reduction": "none"},
                                               "streaming"), inputs, ["src_emb"], "cpu")
    # Inputs are exact float32 numbers: only the products' rounding (~ eps * 1e4 * sqrt(D)) separates them.
    np.testing.assert_allclose(value, expected, atol=2e-2)


def test_half_inputs_are_upcast(backend, small_chunks):
    module = load_backend(backend)
    loss, inputs, options, wrt = _inputs("shared, logQ, ids, weights")
    half = {k: (v.astype("float16") if v.dtype.kind == "f" else v) for k, v in inputs.items()}
    upcast = {k: (v.astype("float32") if v.dtype.kind == "f" else v) for k, v in half.items()}
    out = _function(loss, options, "streaming")(**{k: module.convert(v) for k, v in half.items()})
    assert "float32" in str(out.dtype)
    expected, _ = module.value_and_grad(_function(loss, options, "materialized"), upcast, wrt, "cpu")
    np.testing.assert_allclose(np.asarray(out.numpy() if hasattr(out, "numpy") else out, np.float64), expected,
                               rtol=1e-5)


def test_auto_streams_from_the_threshold_on(backend, monkeypatch):
    module = load_backend(backend)
    calls = []
    original = type(module.OPS).streaming_row_losses

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)
    monkeypatch.setattr(type(module.OPS), "streaming_row_losses", staticmethod(spy))
    loss, inputs, options, wrt = _inputs("unsupervised")
    tensors = {k: module.convert(v) for k, v in inputs.items()}
    recloss.unsupervised_softmax_cross_entropy_loss(**tensors, **options)
    assert not calls                                   # B * N = 66 < 2**22: materialised
    monkeypatch.setattr(kernels, "STREAMING_MIN_LOGITS", B * N)
    recloss.unsupervised_softmax_cross_entropy_loss(**tensors, **options)
    assert calls                                       # at the threshold: streamed
    calls.clear()
    recloss.unsupervised_softmax_cross_entropy_loss(**tensors, **options, implementation="materialized")
    assert not calls


def test_hard_negatives_and_per_row_negatives_fall_back(backend):
    module = load_backend(backend)
    rng = np.random.default_rng(3)
    q, p = (module.convert(rng.normal(size=(B, D)).astype("float32")) for _ in range(2))
    per_row = module.convert(rng.normal(size=(B, 4, D)).astype("float32"))
    for kwargs in ({"neg_emb": per_row}, {"num_hard_negatives": 2}):
        streamed = recloss.sampled_softmax_loss(q, p, **kwargs, implementation="streaming")
        materialized = recloss.sampled_softmax_loss(q, p, **kwargs, implementation="materialized")
        np.testing.assert_allclose(np.asarray(streamed), np.asarray(materialized), rtol=1e-6)


@pytest.mark.parametrize("case", ["shared, logQ, ids, weights", "info_nce symmetric, normalized, ids"])
def test_streaming_under_compilers(backend, case, small_chunks):
    """jax.jit, tf.function(jit_compile=True), torch.compile: same value and gradients as eager materialised."""
    module = load_backend(backend)
    loss, inputs, options, wrt = _inputs(case)
    expected = module.value_and_grad(_function(loss, options, "materialized"), inputs, wrt, "cpu")
    fn = _function(loss, options, "streaming")
    if backend == "jax":
        import jax
        others = {k: module.convert(v) for k, v in inputs.items() if k not in wrt}
        grad_fn = jax.jit(jax.value_and_grad(lambda *xs: fn(**others, **dict(zip(wrt, xs))),
                                             argnums=tuple(range(len(wrt)))))
        value, grads = grad_fn(*(module.convert(inputs[k]) for k in wrt))
    elif backend == "tensorflow":
        import tensorflow as tf
        tensors = {k: module.convert(v) for k, v in inputs.items()}

        @tf.function(jit_compile=True)
        def grad_fn(tensors):
            with tf.GradientTape() as tape:
                watched = [tensors[k] for k in wrt]
                tape.watch(watched)
                value = fn(**tensors)
            return value, tape.gradient(value, watched)
        value, grads = grad_fn(tensors)
    else:
        import torch
        tensors = {k: module.convert(v) for k, v in inputs.items()}
        for k in wrt:
            tensors[k].requires_grad_(True)
        value = torch.compile(fn, fullgraph=True)(**tensors)
        grads = torch.autograd.grad(value, [tensors[k] for k in wrt])
        value = value.detach()
    as_numpy = lambda x: np.asarray(x, np.float64)  # noqa: E731
    _compare((as_numpy(value), {k: as_numpy(g) for k, g in zip(wrt, grads)}), expected)


def test_tensorflow_compiled_eager_calls_keep_first_and_second_derivatives(small_chunks):
    """TF eager calls run compiled from a signature's second call: under a first-order tape its backward is the
    fast one (the compiled call says so: recomputing differentiably there would keep every chunk), and nested
    tapes on the same signature afterwards still get the exact second derivative (they run the kernel eagerly)."""
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(5)
    q, p, n = (tf.constant(rng.normal(size=s)) for s in ((4, 3), (4, 3), (7, 3)))

    def loss(implementation: str, q: Any) -> Any:
        return recloss.sampled_softmax_loss(q, p, n, in_batch=True, temperature=0.5, implementation=implementation)

    def gradient(implementation: str) -> np.ndarray:
        with tf.GradientTape() as tape:
            tape.watch(q)
            value = loss(implementation, q)
        return tape.gradient(value, q).numpy()

    def second(implementation: str) -> np.ndarray:
        with tf.GradientTape() as outer:
            outer.watch(q)
            with tf.GradientTape() as inner:
                inner.watch(q)
                value = loss(implementation, q)
            penalty = tf.reduce_sum(inner.gradient(value, q) ** 2)
        return outer.gradient(penalty, q).numpy()

    want, want_second = gradient("materialized"), second("materialized")
    for _ in range(3):   # op by op, then compiled (the first compiled call traces its backward under the tape)
        np.testing.assert_allclose(gradient("streaming"), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(second("streaming"), want_second, rtol=1e-10, atol=1e-12)
