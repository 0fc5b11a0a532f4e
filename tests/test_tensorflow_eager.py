"""TensorFlow eager calls: forward mode through the custom-gradient paths.

Expected values come from float64 formulas written here and central differences, never from recloss.
"""

from __future__ import annotations

import numpy as np
import pytest

import recloss

tf = pytest.importorskip("tensorflow")

import recloss.backends.tensorflow as tf_backend  # noqa: E402
from recloss.kernels import ranking as ranking_kernels  # noqa: E402
from recloss.kernels import softmax as softmax_kernels  # noqa: E402


def _logsumexp(z: np.ndarray) -> float:
    top = np.max(z)
    return float(top + np.log(np.sum(np.exp(z - top))))


def _mixed_softmax_by_hand(q, p, n, neg_log_q, pos_ids, neg_ids, temperature=0.5):
    """Mean row loss of the softmax over the other rows' positives and the shared negatives (logQ on the
    negatives), without the candidates whose id equals the row's positive id."""
    rows = []
    for i in range(len(q)):
        in_batch, shared = q[i] @ p.T / temperature, q[i] @ n.T / temperature - neg_log_q
        negatives = [in_batch[j] for j in range(len(p)) if j != i and pos_ids[j] != pos_ids[i]]
        negatives += [shared[k] for k in range(len(n)) if neg_ids[k] != pos_ids[i]]
        rows.append(_logsumexp(np.array([in_batch[i], *negatives])) - in_batch[i])
    return float(np.mean(rows))


def _pairwise_logistic_by_hand(scores, labels):
    """Mean over lists of the mean of softplus(-(s_i - s_j)) over the pairs with y_i > y_j (0 without pairs)."""
    rows = []
    for s, y in zip(scores, labels):
        terms = [np.logaddexp(0.0, -(s[i] - s[j])) for i in range(len(s)) for j in range(len(s)) if y[i] > y[j]]
        rows.append(np.mean(terms) if terms else 0.0)
    return float(np.mean(rows))


def _central_difference(f, inputs, tangents, eps=1e-6):
    plus = f(*[x + eps * t for x, t in zip(inputs, tangents)])
    minus = f(*[x - eps * t for x, t in zip(inputs, tangents)])
    return (plus - minus) / (2 * eps)


def _softmax_case(monkeypatch, implementation):
    rng = np.random.default_rng(0)
    q, p, n = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)), rng.normal(size=(11, 3))
    neg_log_q = np.log(rng.uniform(0.05, 1.0, 11))
    pos_ids, neg_ids = np.array([0, 1, 2, 1, 3, 4, 5]), rng.integers(0, 6, 11)
    if implementation == "auto":     # "auto" above its threshold: the streaming path, several chunks
        monkeypatch.setattr(softmax_kernels, "STREAMING_MIN_LOGITS", 1)
        monkeypatch.setattr(softmax_kernels, "STREAMING_CHUNK", 4)

    def loss(q_, p_, n_):
        return recloss.sampled_softmax_loss(q_, p_, n_, in_batch=True, temperature=0.5, neg_log_q=neg_log_q,
                                            pos_ids=pos_ids, neg_ids=neg_ids, implementation=implementation)

    def by_hand(q_, p_, n_):
        return _mixed_softmax_by_hand(q_, p_, n_, neg_log_q, pos_ids, neg_ids)
    return loss, by_hand, (q, p, n)


def _pairwise_case(monkeypatch):
    """The pair losses over chunks of lists, each chunk's backward recomputing it (``tf.recompute_grad``)."""
    rng = np.random.default_rng(1)
    scores, labels = rng.normal(size=(6, 5)), rng.integers(0, 3, size=(6, 5)).astype(np.float64)
    monkeypatch.setattr(ranking_kernels, "PAIR_BLOCK_ELEMENTS", 50)      # 2 lists of 5 x 5 pairs per chunk

    def loss(s):
        return recloss.pairwise_logistic_loss(s, labels)

    def by_hand(s):
        return _pairwise_logistic_by_hand(s, labels)
    return loss, by_hand, (scores,)


@pytest.mark.parametrize("case", ["streaming", "auto above its threshold", "pair losses in chunks"])
def test_forward_mode_gives_the_exact_jvp(case, monkeypatch):
    """``tf.autodiff.ForwardAccumulator`` through the custom gradients: the first eager call (operation by
    operation), later calls (compiled without forward mode), a signature compiled from its first call, the
    accumulator inside the caller's ``tf.function`` and around it. It used to answer None (first call) or 0
    (in a tf.function) through the streaming path, and raise from ``recompute_grad`` for the pair chunks
    (which TensorFlow still does for an accumulator around a tf.function: see below)."""
    if case == "pair losses in chunks":
        loss, by_hand, inputs = _pairwise_case(monkeypatch)
    else:
        loss, by_hand, inputs = _softmax_case(monkeypatch, "streaming" if case == "streaming" else "auto")
    rng = np.random.default_rng(2)
    tangents = [rng.normal(size=x.shape) for x in inputs]
    want = _central_difference(by_hand, inputs, tangents)
    primals, directions = [tf.constant(x) for x in inputs], [tf.constant(t) for t in tangents]

    def jvp():
        with tf.autodiff.ForwardAccumulator(primals, directions) as accumulator:
            out = loss(*primals)
        return accumulator.jvp(out, unconnected_gradients=tf.UnconnectedGradients.ZERO)

    @tf.function
    def jvp_inside_a_function():
        return jvp()

    function = tf.function(loss)

    def accumulator_around_a_function():
        with tf.autodiff.ForwardAccumulator(primals, directions) as accumulator:
            out = function(*primals)
        return accumulator.jvp(out)

    results = {f"eager call {k}": jvp() for k in (1, 2, 3)}
    monkeypatch.setattr(tf_backend, "COMPILE_AFTER", 1)
    results["compiled from the first call"] = jvp()
    results["inside tf.function"] = jvp_inside_a_function()
    if case == "pair losses in chunks":
        # The function is traced without the accumulator in sight, so the chunks keep tf.recompute_grad, whose
        # backward TensorFlow refuses to transpose: a loud refusal (documented), never a wrong number.
        with pytest.raises(NotImplementedError, match="recompute_grad"):
            accumulator_around_a_function()
    else:
        results["around tf.function"] = accumulator_around_a_function()
    for how, got in results.items():
        assert got is not None, how
        np.testing.assert_allclose(float(got), want, rtol=1e-7, atol=1e-10, err_msg=how)


def test_forward_over_reverse_through_streaming_is_the_materialised_hessian_product():
    """A Hessian-vector product (an accumulator around a tape) through the streaming path equals the
    materialised path's, and the tape's gradient is unchanged by the accumulator."""
    rng = np.random.default_rng(3)
    q, p = tf.constant(rng.normal(size=(5, 3))), tf.constant(rng.normal(size=(5, 3)))
    direction = tf.constant(rng.normal(size=(5, 3)))
    results = {}
    for implementation in ("materialized", "streaming"):
        with tf.autodiff.ForwardAccumulator(q, direction) as accumulator:
            with tf.GradientTape() as tape:
                tape.watch(q)
                out = recloss.sampled_softmax_loss(q, p, temperature=0.5, implementation=implementation)
            grad = tape.gradient(out, q)
        results[implementation] = (grad.numpy(), accumulator.jvp(grad).numpy())
    for got, want in zip(results["streaming"], results["materialized"]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)
