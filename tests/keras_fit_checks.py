"""Keras ``model.fit`` checks of :mod:`recloss.keras` on one Keras backend, run by ``tests/test_keras.py`` in a
subprocess (``KERAS_BACKEND`` is read once per process): ``python tests/keras_fit_checks.py`` with
``KERAS_BACKEND`` set. Prints one JSON object: check name -> None (passed) or the failure.

Each check trains a small model with ``jit_compile`` off and on (``add_loss``: off; on, it takes the same
compiled step as ``compute_loss``). A first epoch at learning rate 0 keeps the
weights at their initial values, so every batch's loss in the history (Keras' running mean) must equal the
functional loss of the same batch computed by recloss' float64 NumPy reference from those weights; then a few
epochs at a positive learning rate must lower the loss (the gradient reaches the weights).
"""

from __future__ import annotations

import json
import os
import sys
import traceback

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras import ops  # noqa: E402

import recloss  # noqa: E402
import recloss.keras  # noqa: E402
from keras_sampling_checks import CHECKS as SAMPLING_CHECKS  # noqa: E402  (this script runs from tests/)
from toy_ranking_spec import TOY_SPEC  # noqa: E402  (this script runs from tests/)

BATCH, STEPS, FEATURES, DIM, NEGATIVES, LIST = 8, 3, 5, 4, 4, 6
ROWS = BATCH * STEPS
RNG = np.random.default_rng(0)


class BatchLosses(keras.callbacks.Callback):
    """Records ``logs["loss"]`` after every batch (Keras' running mean over the epoch)."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[float] = []

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.values.append(float(logs["loss"]))


def _running_mean(values: list[float]) -> np.ndarray:
    return np.cumsum(values) / np.arange(1, len(values) + 1)


def _fit_and_compare(model: keras.Model, x, y, expected_batch_loss, jit: bool, loss=None,
                     sample_weight=None) -> None:
    """Fit one epoch at learning rate 0 and compare every batch with ``expected_batch_loss(step, weights)``;
    then train and require a lower loss."""
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss=loss, jit_compile=jit)
    model(_batch(x, 0))  # build, so the weights exist before fit
    weights = [ops.convert_to_numpy(w.value).astype(np.float64) for w in model.trainable_weights]
    recorder = BatchLosses()
    fit = dict(sample_weight=sample_weight, batch_size=BATCH, shuffle=False, verbose=0)
    model.fit(x, y, epochs=1, callbacks=[recorder], **fit)
    expected = _running_mean([expected_batch_loss(step, weights) for step in range(STEPS)])
    np.testing.assert_allclose(recorder.values, expected, rtol=2e-5, atol=1e-6,
                               err_msg="loss history != functional loss")
    model.optimizer.learning_rate.assign(0.05)
    history = model.fit(x, y, epochs=2, **fit).history["loss"]
    if not history[-1] < expected[-1]:
        raise AssertionError(f"training did not lower the loss: {expected[-1]} -> {history}")


def _batch(data, step: int):
    rows = slice(step * BATCH, (step + 1) * BATCH)
    if isinstance(data, dict):
        return {key: value[rows] for key, value in data.items()}
    return data[rows]


# ----------------------------------------------------------------------------------------------------------
# The retrieval task, from compute_loss and from add_loss


class TwoTower(keras.Model):
    def __init__(self, via_add_loss: bool) -> None:
        super().__init__()
        self.user_tower = keras.layers.Dense(DIM, use_bias=False)
        self.item_tower = keras.layers.Dense(DIM, use_bias=False)
        self.task = recloss.keras.Retrieval(temperature=0.5, num_hard_negatives=5)
        self.via_add_loss = via_add_loss

    def call(self, x):
        query, item = self.user_tower(x["user"]), self.item_tower(x["item"])
        if self.via_add_loss:
            self.add_loss(self.task(query, item, pos_ids=x["ids"], pos_log_q=x["log_q"],
                                    sample_weight=x["weight"]))
        return query, item

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if self.via_add_loss:
            return super().compute_loss(x, y, y_pred, sample_weight, training)
        query, item = y_pred
        return self.task(query, item, pos_ids=x["ids"], pos_log_q=x["log_q"], sample_weight=x["weight"])


def retrieval_data() -> dict:
    return {"user": RNG.normal(size=(ROWS, FEATURES)).astype("float32"),
            "item": RNG.normal(size=(ROWS, FEATURES)).astype("float32"),
            "ids": RNG.integers(0, 6, size=ROWS).astype("int64"),  # duplicates: accidental hits
            "log_q": np.log(RNG.uniform(0.05, 0.5, size=ROWS)).astype("float32"),
            "weight": RNG.uniform(0.0, 2.0, size=ROWS).astype("float32")}


def check_retrieval(jit: bool, via_add_loss: bool) -> None:
    x = retrieval_data()

    def expected(step, weights):
        b = _batch(x, step)
        user_w, item_w = weights
        return recloss.sampled_softmax_loss(b["user"] @ user_w, b["item"] @ item_w, temperature=0.5,
                                            num_hard_negatives=5, pos_ids=b["ids"], pos_log_q=b["log_q"],
                                            sample_weight=b["weight"])

    _fit_and_compare(TwoTower(via_add_loss), x, None, expected, jit)


# ----------------------------------------------------------------------------------------------------------
# A block loss: y_pred [B, 1 + K] with the positive in column 0


def block_data():
    features = RNG.normal(size=(ROWS, FEATURES)).astype("float32")
    mask = RNG.uniform(size=(ROWS, 1 + NEGATIVES)) > 0.3
    mask[:, 0] = True
    mask[0, 0] = False  # a padded row
    labels = np.where(mask, 0.0, -1.0).astype("float32")  # keras-rs' padding label
    labels[:, 0] = np.where(mask[:, 0], 1.0, -1.0)
    weight = RNG.uniform(0.0, 2.0, size=ROWS).astype("float32")
    return features, labels, mask, weight


def block_rows(scores, mask):
    """The functional loss per row of the block form, by the float64 reference."""
    rows = recloss.softmax_loss(scores[:, 0], scores[:, 1:], neg_mask=mask[:, 1:], temperature=0.5,
                                num_hard_negatives=2, reduction="none")
    return np.where(mask[:, 0], rows, 0.0)


def check_block(jit: bool) -> None:
    features, labels, mask, weight = block_data()
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(1 + NEGATIVES, use_bias=False)])
    loss = recloss.keras.SoftmaxLoss(temperature=0.5, num_hard_negatives=2)

    def expected(step, weights):
        rows = block_rows(_batch(features, step) @ weights[0], _batch(mask, step))
        return np.sum(rows * _batch(weight, step)) / BATCH  # "sum_over_batch_size"

    _fit_and_compare(model, features, labels, expected, jit, loss, weight)


# ----------------------------------------------------------------------------------------------------------
# The generator on a ranking-form spec declared here (scores, labels, mask, sample_weight)

def toy_listwise_loss(scores, labels, *, mask=None, temperature=1.0, sample_weight=None, reduction="mean"):
    """The toy loss in ``keras.ops``, per row (the Keras forms always ask for ``reduction="none"``)."""
    assert reduction == "none" and sample_weight is None
    z = scores / temperature
    if mask is not None:
        z = ops.where(mask, z, float("-inf"))
    log_p = ops.log_softmax(z, axis=-1)
    terms = labels * log_p if mask is None else ops.where(mask, labels * log_p, 0.0)
    return -ops.sum(terms, axis=-1)


def toy_reference(scores, labels, mask, t):
    z = np.where(mask, scores / t, -np.inf)
    top = z.max(1, keepdims=True)
    log_p = np.where(mask, z - top - np.log(np.sum(np.exp(z - top), 1, keepdims=True)), 0.0)
    return -np.sum(labels * log_p, axis=1)


def ranking_data():
    features = RNG.normal(size=(ROWS, FEATURES)).astype("float32")
    mask = RNG.uniform(size=(ROWS, LIST)) > 0.25
    mask[:, 0] = True
    labels = np.where(mask, RNG.integers(0, 3, size=(ROWS, LIST)), -1).astype("float32")
    weight = RNG.uniform(0.0, 2.0, size=ROWS).astype("float32")
    return features, labels, mask, weight


def check_generated_ranking(jit: bool) -> None:
    cls = recloss.keras.loss_class(TOY_SPEC, toy_listwise_loss)
    features, labels, mask, weight = ranking_data()
    model = keras.Sequential([keras.Input((FEATURES,)), keras.layers.Dense(LIST, use_bias=False)])
    loss = cls(temperature=2.0, reduction="mean_with_sample_weight")

    def expected(step, weights):
        rows = toy_reference(_batch(features, step) @ weights[0], np.maximum(_batch(labels, step), 0),
                             _batch(mask, step), 2.0)
        w = _batch(weight, step)
        return np.sum(rows * w) / np.sum(w)

    _fit_and_compare(model, features, labels, expected, jit, loss, weight)


def check_direct_calls() -> None:
    """Called directly: ``y_true`` as a dict equals padding labels, every Keras reduction, ``sample_weight``."""
    for cls, (_, labels, mask, weight), rows_of in (
            (recloss.keras.SoftmaxLoss, block_data(), block_rows),
            (recloss.keras.loss_class(TOY_SPEC, toy_listwise_loss), ranking_data(),
             lambda scores, mask: toy_reference(scores, np.where(mask, labels, 0.0), mask, 2.0))):
        scores = RNG.normal(size=labels.shape).astype("float32")
        options = {"temperature": 0.5, "num_hard_negatives": 2} if cls is recloss.keras.SoftmaxLoss else \
            {"temperature": 2.0}
        rows = rows_of(scores.astype(np.float64), mask) * weight
        clean = np.where(mask, np.maximum(labels, 0), 0).astype("float32")
        for reduction, want in (("sum_over_batch_size", rows.sum() / len(rows)), ("sum", rows.sum()),
                                ("mean_with_sample_weight", rows.sum() / weight.sum()), ("none", rows)):
            loss = cls(reduction=reduction, **options)
            for y_true in (labels, {"labels": clean, "mask": mask}):
                got = ops.convert_to_numpy(loss(y_true, scores, sample_weight=weight))
                np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-6, err_msg=f"{cls.__name__} {reduction}")
            restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(loss))
            assert type(restored) is cls and restored.get_config() == loss.get_config(), restored.get_config()


def main() -> None:
    checks = {}
    for jit in (False, True):
        suffix = "jit" if jit else "nojit"
        checks[f"retrieval_compute_loss_{suffix}"] = lambda jit=jit: check_retrieval(jit, via_add_loss=False)
        if not jit:  # add_loss takes the same path through the compiled step as compute_loss
            checks[f"retrieval_add_loss_{suffix}"] = lambda jit=jit: check_retrieval(jit, via_add_loss=True)
        checks[f"block_softmax_{suffix}"] = lambda jit=jit: check_block(jit)
        checks[f"generated_ranking_{suffix}"] = lambda jit=jit: check_generated_ranking(jit)
    checks["direct_calls"] = check_direct_calls
    checks.update(SAMPLING_CHECKS)   # the frequency estimator and the negative queue (keras_sampling_checks.py)
    only = sys.argv[1:]
    results = {}
    for name, check in checks.items():
        if only and name not in only:
            continue
        try:
            check()
            results[name] = None
        except Exception:  # noqa: BLE001 - reported to the test, which fails with it
            results[name] = traceback.format_exc(limit=6)
    print(json.dumps({"backend": keras.backend.backend(), "results": results}))


if __name__ == "__main__":
    main()
