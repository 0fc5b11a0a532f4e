"""GraphLearn's own formulas (the seed, nn/tf/loss.py) as a second reference.

Where GraphLearn's `-log(softmax + 1e-12)` is accurate, recloss must agree with it; where the positive
logit is 30 or more below the largest negative, GraphLearn's value sticks at -log(1e-12) = 27.63 and its
gradient vanishes, while recloss keeps the true value and gradient.
"""

from __future__ import annotations

import numpy as np
import pytest

import recloss
from recloss.reference import graphlearn_softmax_cross_entropy

from helpers import to_backend, to_numpy

FLOOR = -np.log(1e-12)  # 27.631...


def graphlearn_tf_softmax(src_emb, pos_emb, neg_emb, temperature=1.0):
    """The seed's code, verbatim but for TF2 names (tf.log -> tf.math.log)."""
    import tensorflow as tf
    pos_sim = tf.reduce_sum(tf.multiply(src_emb, pos_emb), axis=-1, keepdims=True)
    neg_sim = tf.matmul(src_emb, tf.transpose(neg_emb))
    logit = tf.nn.softmax(tf.concat([pos_sim, neg_sim], axis=-1) / temperature)
    return -tf.reduce_mean(tf.math.log(logit[:, :1] + 1e-12))


def graphlearn_tf_sigmoid(pos_logit, neg_logit):
    import tensorflow as tf
    true_xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.ones_like(pos_logit), logits=pos_logit)
    negative_xent = tf.nn.sigmoid_cross_entropy_with_logits(labels=tf.zeros_like(neg_logit), logits=neg_logit)
    return tf.reduce_mean(true_xent) + 1.0 * tf.reduce_mean(negative_xent)


def _embeddings(seed=0, batch=16, negatives=48, dim=12):
    """Embeddings whose logits stay within a few units, so that softmax_0 >> 1e-12."""
    rng = np.random.default_rng(seed)
    return tuple(0.4 * rng.normal(size=(rows, dim)) for rows in (batch, batch, negatives))


@pytest.mark.parametrize("temperature", [1.0, 0.5, 3.0])
def test_softmax_agrees_with_graphlearn_where_its_floor_does_not_matter(backend, temperature):
    src, pos, neg = _embeddings()
    expected = float(graphlearn_softmax_cross_entropy(src, pos, neg, temperature))
    loss = recloss.unsupervised_softmax_cross_entropy_loss(*(to_backend(backend, x.astype(np.float32))
                                                             for x in (src, pos, neg)), temperature)
    assert abs(float(to_numpy(loss)) - expected) <= 1e-5 * expected
    assert abs(float(recloss.unsupervised_softmax_cross_entropy_loss(src, pos, neg, temperature)) - expected) \
        <= 1e-10 * expected


def test_graphlearn_tf_code_agrees_with_the_float64_graphlearn_reference():
    pytest.importorskip("tensorflow")
    src, pos, neg = _embeddings(1)
    tf_value = float(graphlearn_tf_softmax(src, pos, neg, 0.7))
    assert abs(tf_value - float(graphlearn_softmax_cross_entropy(src, pos, neg, 0.7))) < 1e-10
    assert abs(tf_value - float(recloss.unsupervised_softmax_cross_entropy_loss(src, pos, neg, 0.7))) < 1e-8


def test_extreme_regime_graphlearn_floors_recloss_does_not(backend):
    # One row: positive logit -20, one negative at +20 (40 below the largest negative).
    src, pos, neg = np.array([[1.0, 0.0]]), np.array([[-20.0, 0.0]]), np.array([[20.0, 0.0], [0.0, 1.0]])
    true_value = np.logaddexp.reduce([-20.0, 20.0, 0.0]) + 20.0  # 40.0000...
    assert abs(float(graphlearn_softmax_cross_entropy(src, pos, neg)) - FLOOR) < 1e-4

    module = pytest.importorskip(f"recloss.backends.{backend}")
    inputs = {"src_emb": src.astype(np.float32), "pos_emb": pos.astype(np.float32), "neg_emb": neg.astype(np.float32)}
    value, grads = module.value_and_grad(
        lambda **t: recloss.unsupervised_softmax_cross_entropy_loss(**t), inputs, ["pos_emb"], "cpu")
    assert abs(float(value) - true_value) < 1e-5 * true_value
    # d loss / d pos_emb[0] = (softmax_0 - 1) * src[0] = about -1 in the first coordinate.
    np.testing.assert_allclose(grads["pos_emb"], [[-1.0, 0.0]], atol=1e-6)


def test_extreme_regime_graphlearn_gradient_vanishes():
    tf = pytest.importorskip("tensorflow")
    src, pos, neg = (tf.constant(x, tf.float32) for x in ([[1.0, 0.0]], [[-20.0, 0.0]], [[20.0, 0.0], [0.0, 1.0]]))
    with tf.GradientTape() as tape:
        tape.watch(pos)
        value = graphlearn_tf_softmax(src, pos, neg)
    gradient = tape.gradient(value, pos).numpy()
    assert abs(float(value) - FLOOR) < 1e-3
    assert abs(gradient[0, 0]) < 1e-5  # GraphLearn: about -4e-6 instead of -1


@pytest.mark.parametrize("neg_shape", [(16,), (16, 5), (40,)], ids=["[B]", "[B, K]", "[M]"])
def test_sigmoid_cross_entropy_is_graphlearns(backend, neg_shape):
    rng = np.random.default_rng(2)
    pos, neg = rng.normal(size=16) * 3, rng.normal(size=neg_shape) * 3
    expected = np.mean(np.logaddexp(0, -pos)) + np.mean(np.logaddexp(0, neg))
    loss = recloss.sigmoid_cross_entropy_loss(to_backend(backend, pos), to_backend(backend, neg))
    assert abs(float(to_numpy(loss)) - expected) < 1e-6 * expected
    if backend == "tensorflow":
        assert abs(float(graphlearn_tf_sigmoid(pos, neg)) - expected) < 1e-12
