"""TensorFlow eager calls: forward mode through the custom-gradient paths, and the memory of the compiled-kernel
caches (TensorFlow's and JAX's) under a churn of shapes.

Expected values come from float64 formulas written here and central differences, never from recloss.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

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


# ----------------------------------------------------------------------------------------------------------
# Memory of the compiled kernels under a churn of shapes

_CHURN = r"""
import gc, importlib.util, json, os
import numpy as np
import recloss

def rss_mib():
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20

def churn(convert, rng, lengths, rounds=1):
    for _ in range(rounds):
        for length in lengths:
            scores = convert(rng.normal(size=(4, length)).astype(np.float32))
            labels = convert(rng.integers(0, 2, size=(4, length)).astype(np.float32))
            for _ in range(2):                        # a TensorFlow signature is compiled on its second call
                recloss.listwise_softmax_loss(scores, labels)
    return rss_mib()

report = {}
for framework in ("tensorflow", "jax"):
    if importlib.util.find_spec(framework) is None:
        continue
    if framework == "tensorflow":
        import tensorflow as tf
        import recloss.backends.tensorflow as backend
        backend.CACHE.size, backend.XLA_SIGNATURES, convert = 3, 2, tf.constant
    else:
        import jax.numpy as jnp
        import recloss.backends.jax as backend
        backend.CACHE.size, convert = 3, jnp.asarray
    rng = np.random.default_rng(0)
    lengths = list(range(1, 11))
    warm = churn(convert, rng, lengths, 2)           # every signature seen, the cache emptied several times
    cycled = churn(convert, rng, lengths, 3)         # 30 more compilations of the same signatures
    fresh = churn(convert, rng, list(range(11, 31)))  # 20 new signatures
    report[framework] = {"warm": warm, "cycled": cycled, "fresh": fresh}
print(json.dumps(report))
"""


def test_compiled_kernels_do_not_leak_under_a_churn_of_shapes():
    """A cache of 3 kernels cycling over 10 list lengths (30 compilations after the warm-up), then 20 new
    lengths, in one subprocess. TensorFlow: TensorFlow never frees an XLA compilation (1.2 to 2 MiB each was
    measured), so before the fix this churn grew by 60 MiB or more; the bound allows 30 for all 50
    compilations. JAX frees a dropped kernel: recompiling the same signatures must not grow; each new shape
    costs JAX about 2 MiB in its own per-shape caches (30 MiB while recloss ran a signature's first call
    operation by operation, which compiles every operation for the new shape); the bound allows 5."""
    if not any(importlib.util.find_spec(name) for name in ("tensorflow", "jax")):
        pytest.skip("neither TensorFlow nor JAX is installed")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
           "JAX_PLATFORMS": "cpu"}
    out = subprocess.run([sys.executable, "-c", _CHURN], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    if "tensorflow" in report:
        tensorflow = report["tensorflow"]
        assert tensorflow["fresh"] - tensorflow["warm"] < 30, report
        assert "triggered tf.function retracing" not in out.stderr, out.stderr[-2000:]
    if "jax" in report:
        jax = report["jax"]
        assert jax["cycled"] - jax["warm"] < 20, report
        assert (jax["fresh"] - jax["cycled"]) / 20 < 5, report
