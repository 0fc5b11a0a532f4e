"""Keras checks of ``recloss.keras.FrequencyEstimator`` and ``recloss.keras.NegativeQueue`` on one Keras backend,
run inside ``tests/keras_fit_checks.py``'s subprocess (one per Keras backend; see ``tests/test_keras.py``).

* ``sampling_fit_nojit`` / ``sampling_fit_jit``: a two-tower model whose ``compute_loss`` feeds the estimator's
  log Q and the queue's negatives to ``Retrieval``, trained by ``fit`` for 2 epochs without shuffling: the
  estimator's state equals the float32 NumPy reference fed the same batches bit for bit, the queue holds the
  last pushed ids and the log Q the estimator returned for them, and a call with ``training=False`` changes
  nothing.
* ``sampling_layers_direct``: direct calls against the reference, the queue's order (held, then pushed),
  ``get_config`` / ``from_config`` and the weights round trip, float ids refused.
"""

from __future__ import annotations

import numpy as np

import keras
from keras import ops

import recloss.keras
from recloss.errors import DTypeError
from recloss.reference import sampling as reference

USERS, ITEMS, ROWS, BATCH, DIM, SIZE = 30, 97, 128, 32, 8, 48
BUCKETS, DECAY = 1 << 12, 2.0 ** -4


def _numpy(x) -> np.ndarray:
    return ops.convert_to_numpy(x)


class TwoTower(keras.Model):
    def __init__(self) -> None:
        super().__init__()
        self.users = keras.layers.Embedding(USERS, DIM)
        self.items = keras.layers.Embedding(ITEMS, DIM)
        self.log_q = recloss.keras.FrequencyEstimator(BUCKETS, 2, DECAY)
        self.queue = recloss.keras.NegativeQueue(SIZE, DIM)
        self.task = recloss.keras.Retrieval(temperature=0.5, in_batch=True)

    def build(self, input_shape) -> None:
        self.users.build(input_shape["user"])
        self.items.build(input_shape["item"])

    def call(self, x):
        return self.users(x["user"]), self.items(x["item"])

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        query, item = y_pred
        log_q = self.log_q(x["item"], training=training)
        negatives = self.queue(item, ids=x["item"], log_q=log_q, training=training)
        return self.task(query, item, negatives.neg_emb, pos_ids=x["item"], pos_log_q=log_q,
                         neg_ids=negatives.neg_ids, neg_log_q=negatives.neg_log_q)


def check_fit(jit: bool) -> None:
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, USERS, ROWS), rng.integers(0, ITEMS, ROWS)
    model = TwoTower()
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=jit)
    history = model.fit({"user": users, "item": items}, batch_size=BATCH, epochs=2, shuffle=False, verbose=0)
    assert np.all(np.isfinite(history.history["loss"])), history.history
    state = reference.frequency_init(BUCKETS, 2, DECAY, "float32")
    pushed_ids, pushed_log_q = [], []
    for _ in range(2):
        for start in range(0, ROWS, BATCH):
            batch = items[start:start + BATCH]
            log_q, state = reference.frequency_step(state, batch)
            pushed_ids.append(batch)
            pushed_log_q.append(log_q)
    assert np.array_equal(_numpy(model.log_q.counts), state.counts), "estimator counts differ from the reference"
    assert np.array_equal(_numpy(model.log_q.norm), state.norm), "estimator norm differs from the reference"
    queue = reference.queue_init(SIZE, DIM)
    for ids, log_q in zip(pushed_ids, pushed_log_q):
        queue = reference.queue_push(queue, np.zeros((len(ids), DIM)), ids, log_q)
    held = model.queue.negatives()
    assert np.array_equal(_numpy(held.neg_ids), queue.ids) and int(_numpy(model.queue.filled)) == SIZE
    np.testing.assert_allclose(_numpy(held.neg_log_q), queue.log_q, rtol=0, atol=1e-6)
    before = [_numpy(v).copy() for v in model.log_q.weights + model.queue.weights]
    model.log_q(items[:5], training=False)
    model.queue(_numpy(model.items(items[:5])), ids=items[:5], training=False)
    assert all(np.array_equal(a, _numpy(v)) for a, v in zip(before, model.log_q.weights + model.queue.weights))


def check_layers_direct() -> None:
    rng = np.random.default_rng(1)
    estimator = recloss.keras.FrequencyEstimator(BUCKETS, 2, DECAY, name="freq")
    state = reference.frequency_init(BUCKETS, 2, DECAY, "float32")
    for step in range(3):
        ids = rng.integers(-5, 2 ** 31 - 1, 16)
        got = estimator(ids, training=True)
        want, state = reference.frequency_step(state, ids)
        np.testing.assert_allclose(_numpy(got), want, rtol=0, atol=1e-6)
    read = _numpy(estimator(np.arange(10), training=False))
    np.testing.assert_allclose(read, reference.frequency_log_q(state, np.arange(10)), rtol=0, atol=1e-6)
    config = keras.saving.serialize_keras_object(estimator)
    restored = keras.saving.deserialize_keras_object(config)
    assert type(restored) is recloss.keras.FrequencyEstimator and restored.get_config() == estimator.get_config()
    restored.set_weights(estimator.get_weights())
    assert np.array_equal(_numpy(restored(np.arange(10), training=False)), read)
    try:
        estimator(np.ones(3, "float32"), training=True)
        raise AssertionError("float ids were accepted")
    except DTypeError as error:
        assert "FrequencyEstimator: `ids` must be an integer tensor" in str(error), str(error)   # Keras adds words

    queue = recloss.keras.NegativeQueue(5, 3)
    expected = reference.queue_init(5, 3)
    for rows in (2, 4, 7):
        emb, ids = rng.normal(size=(rows, 3)).astype("float32"), rng.integers(0, 9, rows)
        held = queue(emb, ids=ids, training=True)
        previous = reference.queue_negatives(expected)
        expected = reference.queue_push(expected, emb, ids)
        for a, b in zip(held, previous):
            assert np.array_equal(_numpy(a), b), "the held negatives are not the queue before the push"
    for a, b in zip(queue.negatives(), reference.queue_negatives(expected)):
        assert np.array_equal(_numpy(a), b)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(queue))
    restored.set_weights(queue.get_weights())
    assert restored.get_config() == queue.get_config()
    for a, b in zip(restored.negatives(), queue.negatives()):
        assert np.array_equal(_numpy(a), _numpy(b))


CHECKS = {"sampling_fit_nojit": lambda: check_fit(False), "sampling_fit_jit": lambda: check_fit(True),
          "sampling_layers_direct": check_layers_direct}
