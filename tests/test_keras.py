"""``recloss.keras``: the retrieval task and the generated Keras losses.

``model.fit`` runs on each Keras backend in its own subprocess (``KERAS_BACKEND`` is read once per process):
``tests/keras_fit_checks.py`` runs every check there once and the tests below read its report. The other
tests run in this process, on the default Keras backend.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import recloss
from recloss import _native
from recloss._dispatch import available_backends
from recloss.losses import CATALOGUE

from helpers import case_options

pytest.importorskip("keras")

CHECKS = Path(__file__).with_name("keras_fit_checks.py")
FIT_CHECKS = ["retrieval_compute_loss_nojit", "retrieval_add_loss_nojit", "block_softmax_nojit",
              "generated_ranking_nojit", "metrics_evaluate_nojit", "retrieval_compute_loss_jit", "block_softmax_jit",
              "generated_ranking_jit", "metrics_evaluate_jit", "direct_calls", "sampling_fit_nojit", "sampling_fit_jit",
              "sampling_layers_direct", "mixed_bfloat16"]


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_keras_fit_matches_the_functional_loss(backend):
    """Every check of ``keras_fit_checks.py`` (``FIT_CHECKS``), run once under ``KERAS_BACKEND=<backend>``;
    the failures of all checks are reported together."""
    if backend not in available_backends():
        pytest.skip(f"{backend} is not installed")
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = subprocess.run([sys.executable, str(CHECKS)], capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report["backend"] == backend
    assert set(report["results"]) == set(FIT_CHECKS)
    failures = {check: failure for check, failure in report["results"].items() if failure is not None}
    assert not failures, failures


# ----------------------------------------------------------------------------------------------------------
# In this process (the default Keras backend)

keras = pytest.importorskip("keras")
import recloss.keras as rk  # noqa: E402


def test_every_spec_with_a_keras_form_has_a_loss_class():
    forms = {name: _native.keras_form(spec) for name, spec in CATALOGUE.items()}
    assert {n for n, f in forms.items() if f == "block"} >= {"sigmoid_cross_entropy_loss", "softmax_loss",
                                                             "bpr_loss", "hinge_loss"}
    assert forms["sampled_softmax_loss"] is None and forms["info_nce_loss"] is None
    for name, form in forms.items():
        cls = getattr(rk, _native.class_name(name), None)
        assert (cls is not None) == (form is not None), name
        if cls is not None:
            assert issubclass(cls, keras.losses.Loss) and cls.spec is CATALOGUE[name] and cls.form == form
            assert cls.__name__ in rk.__all__


def test_ranking_form_is_recognised_from_the_tensor_names_and_shapes():
    from toy_ranking_spec import TOY_SPEC

    assert _native.keras_form(TOY_SPEC) == "ranking" and _native.keras_mask_name(TOY_SPEC) == "mask"
    no_mask = type(TOY_SPEC)(**{**TOY_SPEC.__dict__, "args": tuple(a for a in TOY_SPEC.args if a.name != "mask")})
    assert _native.keras_form(no_mask) == "ranking" and _native.keras_mask_name(no_mask) is None
    with pytest.raises(ValueError, match="no \\(y_true=labels, y_pred=scores\\) form"):
        rk.loss_class(CATALOGUE["info_nce_loss"], recloss.info_nce_loss)


def test_retrieval_equals_the_function_and_round_trips():
    rng = np.random.default_rng(0)
    q, p = rng.normal(size=(6, 4)).astype("float32"), rng.normal(size=(6, 4)).astype("float32")
    neg = rng.normal(size=(9, 4)).astype("float32")
    ids, neg_ids = np.array([1, 2, 3, 3, 4, 5]), np.arange(9)
    task = rk.Retrieval(temperature=0.2, in_batch=True, num_hard_negatives=4)
    got = keras.ops.convert_to_numpy(task(q, p, neg, pos_ids=ids, neg_ids=neg_ids))
    want = recloss.sampled_softmax_loss(q.astype(np.float64), p.astype(np.float64), neg.astype(np.float64),
                                        temperature=0.2, in_batch=True, num_hard_negatives=4, pos_ids=ids,
                                        neg_ids=neg_ids)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(task))
    assert type(restored) is rk.Retrieval and restored.get_config() == task.get_config()
    assert restored.options == {"temperature": 0.2, "in_batch": True, "num_hard_negatives": 4, "label_smoothing": 0.0,
                                "z_loss": 0.0, "reduction": "mean", "implementation": "auto",
                                "product_precision": "input", "gather": None, "shard_negatives": None}


def test_retrieval_on_symbolic_inputs_gives_the_loss_shape():
    q, p = keras.Input((4,)), keras.Input((4,))
    assert rk.Retrieval()(q, p).shape == ()
    assert rk.Retrieval(reduction="none")(q, p).shape == (None,)


def test_every_loss_class_round_trips_its_config():
    for cls in (getattr(rk, n) for n in rk.__all__ if n not in ("Retrieval", "ReclossLoss", "loss_class", "metrics")
                and issubclass(getattr(rk, n), rk.ReclossLoss)):   # not the estimator and queue layers
        options = {o.name: o.default for o in cls.spec.options if o.name != "reduction"}
        given = case_options(cls.spec, cls.spec.cases[0])
        options.update({o.name: given[o.name] for o in cls.spec.options if o.required})   # num_items: no default
        if "temperature" in options:
            options["temperature"] = 0.25
        loss = cls(reduction="sum", name="mine", **options)
        config = loss.get_config()
        assert config == {"name": "mine", "reduction": "sum", "dtype": "float32", **options}
        assert cls.from_config(config).get_config() == config


def test_listmle_loss_has_keras_rs_class_name_and_the_earlier_one_as_an_alias():
    """``ListMLELoss`` (keras-rs's and TF-Ranking's spelling) saves under its name; ``ListmleLoss`` is the same
    class, and a loss saved under that earlier name still loads."""
    assert rk.ListMLELoss.__name__ == "ListMLELoss" and rk.ListmleLoss is rk.ListMLELoss
    assert "ListMLELoss" in rk.__all__ and "ListmleLoss" not in rk.__all__
    saved = keras.saving.serialize_keras_object(rk.ListMLELoss(name="mle"))
    assert saved["registered_name"] == "recloss>ListMLELoss"
    earlier = {**saved, "class_name": "ListmleLoss", "registered_name": "recloss>ListmleLoss"}
    restored = keras.saving.deserialize_keras_object(earlier)
    assert type(restored) is rk.ListMLELoss and restored.name == "mle"


def test_block_form_matches_the_function_with_keras_reductions():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(5, 4)).astype("float32")
    labels = np.eye(1, 4, dtype="float32").repeat(5, 0)
    weight = np.array([1.0, 0.0, 2.0, 1.0, 0.5], "float32")
    rows = np.asarray(recloss.bpr_loss(scores[:, 0].astype(np.float64), scores[:, 1:].astype(np.float64),
                                       reduction="none"))
    got = keras.ops.convert_to_numpy(rk.BPRLoss(reduction="mean_with_sample_weight")(labels, scores, weight))
    np.testing.assert_allclose(got, np.sum(rows * weight) / weight.sum(), rtol=1e-5)
    got = keras.ops.convert_to_numpy(rk.BPRLoss()(labels, scores))
    np.testing.assert_allclose(got, rows.mean(), rtol=1e-5)


def test_bad_inputs_are_clear_errors():
    with pytest.raises(recloss.OptionError) as from_task:
        rk.Retrieval(temperature=0.0)
    with pytest.raises(recloss.OptionError) as from_function:
        recloss.sampled_softmax_loss(np.ones((2, 2)), np.ones((2, 2)), temperature=0.0)
    assert str(from_task.value) == str(from_function.value)
    with pytest.raises(recloss.OptionError, match="num_hard_negatives"):
        rk.SoftmaxLoss(num_hard_negatives=0)
    with pytest.raises(TypeError):
        rk.SoftmaxLoss(temprature=0.1)
    scores, labels = np.zeros((3, 4), "float32"), np.zeros((3, 4), "float32")
    with pytest.raises(recloss.ReclossError, match="SoftmaxLoss: `y_true` must be the labels or a dict with "
                                                   "the key 'labels' and optionally 'mask'; got a dict with keys"):
        rk.SoftmaxLoss()({"label": labels}, scores)
    with pytest.raises(recloss.ReclossError, match="SigmoidCrossEntropyLoss: `y_true` has a 'mask', but "
                                                   "sigmoid_cross_entropy_loss cannot remove single candidates"):
        rk.SigmoidCrossEntropyLoss()({"labels": labels, "mask": labels > 0}, scores)
    with pytest.raises(recloss.ShapeError, match=r"must have the shape of `y_pred` \[B, 1 \+ K\]"):
        rk.SoftmaxLoss()(labels[:, :1], scores)


# ----------------------------------------------------------------------------------------------------------
# The names of TensorFlow Recommenders and keras-rs; padded rows of the block form. Expected values come from
# the float64 formulas below, written here (never recloss' reference).


def _retrieval_by_hand(q, candidates, positive, temperature, log_q=None, ids=None, hard=None, weight=None,
                       reduction="mean"):
    """Row i: softmax over ``candidates`` (its positive at column ``positive[i]``) of ``q_i . c / T - log_q(c)``,
    without the other columns whose id equals the positive's, keeping the ``hard`` largest negatives."""
    q, candidates = np.asarray(q, np.float64), np.asarray(candidates, np.float64)
    rows = []
    for i, column in enumerate(positive):
        s = q[i] @ candidates.T / temperature - (0.0 if log_q is None else np.asarray(log_q, np.float64))
        negatives = [s[j] for j in range(len(s)) if j != column and (ids is None or ids[j] != ids[column])]
        if hard is not None:
            negatives = sorted(negatives, reverse=True)[:hard]
        z = np.array([s[column], *negatives])
        top = z.max()
        rows.append(top + math.log(np.sum(np.exp(z - top))) - s[column])
    rows = np.array(rows) * (1.0 if weight is None else np.asarray(weight, np.float64))
    if reduction == "none":
        return rows
    return rows.sum() if reduction == "sum" else rows.sum() / (len(rows) if weight is None else np.sum(weight))


def _retrieval_inputs(seed=0, batch=6, dim=4):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(batch, dim)).astype("float32"), rng.normal(size=(batch, dim)).astype("float32"),
            rng.uniform(1e-4, 1.0, batch).astype("float32"), np.array([3, 1, 3, 7, 1, 9])[:batch],
            rng.uniform(0.2, 2.0, batch).astype("float32"))


def test_retrieval_takes_candidate_sampling_probability_and_candidate_ids():
    q, c, p, ids, w = _retrieval_inputs()
    task = rk.Retrieval(temperature=0.5, num_hard_negatives=3)
    got = keras.ops.convert_to_numpy(task(q, c, candidate_sampling_probability=p, candidate_ids=ids, sample_weight=w))
    want = _retrieval_by_hand(q, c, range(6), 0.5, np.log(p.astype(np.float64)), ids, 3, w)
    np.testing.assert_allclose(got, want, rtol=2e-6)
    same = keras.ops.convert_to_numpy(task(q, c, pos_log_q=np.log(p), pos_ids=ids, sample_weight=w))
    np.testing.assert_allclose(got, same, rtol=1e-6)
    # A probability of 1 is allowed (log 0); float64 probabilities beside float32 embeddings give a float32 loss.
    one = np.ones(6)
    out = task(q, c, candidate_sampling_probability=one)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    np.testing.assert_allclose(keras.ops.convert_to_numpy(out), _retrieval_by_hand(q, c, range(6), 0.5, hard=3),
                               rtol=2e-6)


@pytest.mark.parametrize("bad", [0.0, -0.25, 1.5, np.nan])
def test_candidate_sampling_probability_outside_0_1_is_refused(bad):
    q, c, p, _, _ = _retrieval_inputs()
    p[2] = bad
    with pytest.raises(recloss.OptionError) as error:
        rk.Retrieval()(q, c, candidate_sampling_probability=p)
    # (Keras adds the call's arguments around the message)
    assert (f"Retrieval: `candidate_sampling_probability` must hold sampling probabilities in (0, 1]; got "
            f"{float(np.float32(bad))!r} (log Q values, e.g. the log of an expected count above 1, go to "
            "`pos_log_q`)") in str(error.value), error.value


def test_both_names_of_one_input_are_an_error():
    q, c, p, ids, _ = _retrieval_inputs()
    with pytest.raises(recloss.ReclossError, match="Retrieval: pass `candidate_sampling_probability` or "
                                                   "`pos_log_q`, not both"):
        rk.Retrieval()(q, c, candidate_sampling_probability=p, pos_log_q=np.log(p))
    with pytest.raises(recloss.ReclossError, match="Retrieval: pass `candidate_ids` or `pos_ids`, not both"):
        rk.Retrieval()(q, c, candidate_ids=ids, pos_ids=ids)


def test_retrieval_matches_keras_rs_where_they_compute_the_same():
    """keras-rs composes the task from layers; with unique ids (its RemoveAccidentalHits adds about 1e-40 to
    the logits, which removes nothing) its loss is recloss' for the same probabilities and hard negatives."""
    keras_rs = pytest.importorskip("keras_rs")
    q, c, p, _, w = _retrieval_inputs(seed=1)
    ids = np.arange(6)
    for hard in (None, 2):
        logits = keras.ops.matmul(q, keras.ops.transpose(c)) / 0.5
        labels = keras.ops.eye(6)
        logits = keras_rs.layers.RemoveAccidentalHits()(logits, labels, ids)
        logits = keras_rs.layers.SamplingProbabilityCorrection()(logits, p)
        if hard is not None:
            logits, labels = keras_rs.layers.HardNegativeMining(hard)(logits, labels)
        theirs = keras.losses.CategoricalCrossentropy(from_logits=True, reduction="sum")(labels, logits,
                                                                                         sample_weight=w)
        ours = rk.Retrieval(temperature=0.5, num_hard_negatives=hard, reduction="sum")(
            q, c, candidate_sampling_probability=p, candidate_ids=ids, sample_weight=w)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), keras.ops.convert_to_numpy(theirs), rtol=2e-6)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours),
                                   _retrieval_by_hand(q, c, range(6), 0.5, np.log(p.astype(np.float64)), hard=hard,
                                                      weight=w, reduction="sum"), rtol=2e-6)


_TFRS_SCRIPT = r"""
import json, os, sys
import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

data = np.load(sys.argv[1])
results = {}
for name, extra, hard in (("in-batch", False, None), ("in-batch, 2 hard", False, 2), ("extra negatives", True, None)):
    candidates, p, ids = data["c"], data["p"], data["ids"]
    if extra:
        candidates = np.concatenate([candidates, data["neg"]])
        p, ids = np.concatenate([p, data["neg_p"]]), np.concatenate([ids, data["neg_ids"]])
    for reduction in ("sum", "none"):
        loss = tf.keras.losses.CategoricalCrossentropy(
            from_logits=True, reduction=tf.keras.losses.Reduction.SUM if reduction == "sum" else "none")
        task = tfrs.tasks.Retrieval(loss=loss, temperature=0.5, num_hard_negatives=hard, remove_accidental_hits=True)
        value = task(tf.constant(data["q"]), tf.constant(candidates), sample_weight=tf.constant(data["w"]),
                     candidate_sampling_probability=tf.constant(p), candidate_ids=tf.constant(ids),
                     compute_metrics=False, compute_batch_metrics=False)
        results[f"{name}, {reduction}"] = np.asarray(value, np.float64).tolist()
print(json.dumps(results))
"""


def test_retrieval_matches_tensorflow_recommenders(tmp_path):
    """TFRS' ``tasks.Retrieval`` (on tf-keras, in a subprocess: it needs ``TF_USE_LEGACY_KERAS=1``) with
    ``candidate_sampling_probability``, ``candidate_ids`` and ``remove_accidental_hits=True``: in-batch, with hard
    negatives, and with extra candidates (recloss: ``neg_emb`` with ``neg_log_q = log p`` and ``neg_ids``)."""
    import importlib.util

    if importlib.util.find_spec("tensorflow_recommenders") is None or importlib.util.find_spec("tf_keras") is None:
        pytest.skip("tensorflow-recommenders with tf-keras is not installed")
    q, c, p, ids, w = _retrieval_inputs(seed=2)
    rng = np.random.default_rng(3)
    neg, neg_p, neg_ids = (rng.normal(size=(4, 4)).astype("float32"), rng.uniform(1e-3, 1.0, 4).astype("float32"),
                           np.array([1, 5, 9, 11]))
    np.savez(tmp_path / "inputs.npz", q=q, c=c, p=p, ids=ids, w=w, neg=neg, neg_p=neg_p, neg_ids=neg_ids)
    env = {**os.environ, "TF_USE_LEGACY_KERAS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    out = subprocess.run([sys.executable, "-c", _TFRS_SCRIPT, str(tmp_path / "inputs.npz")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-4000:]
    theirs = json.loads(out.stdout.strip().splitlines()[-1])
    log_p, all_log_p = np.log(p.astype(np.float64)), np.log(np.concatenate([p, neg_p]).astype(np.float64))
    for key, value in theirs.items():
        case, reduction = key.rsplit(", ", 1)
        hard = 2 if "hard" in case else None
        task = rk.Retrieval(temperature=0.5, num_hard_negatives=hard, reduction=reduction,
                            in_batch=True)
        if case == "extra negatives":
            ours = task(q, c, neg, candidate_sampling_probability=p, candidate_ids=ids, neg_log_q=np.log(neg_p),
                        neg_ids=neg_ids, sample_weight=w)
            by_hand = _retrieval_by_hand(q, np.concatenate([c, neg]), range(6), 0.5, all_log_p,
                                         np.concatenate([ids, neg_ids]), hard, w, reduction)
        else:
            ours = task(q, c, candidate_sampling_probability=p, candidate_ids=ids, sample_weight=w)
            by_hand = _retrieval_by_hand(q, c, range(6), 0.5, log_p, ids, hard, w, reduction)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(ours), value, rtol=2e-6, atol=1e-6, err_msg=key)
        np.testing.assert_allclose(value, by_hand, rtol=2e-6, atol=1e-6, err_msg=key)


def test_a_nan_in_a_padded_row_stays_in_that_row():
    """A row whose column 0 is labelled -1 (or masked) is padding: whatever its scores hold (NaN, inf), the
    other rows keep their losses and the padded row gets loss 0 and gradient 0; a NaN in a valid row still
    makes every valid row NaN. The classes without a mask have no padding (every column 1..K is a negative)."""
    rng = np.random.default_rng(4)
    scores = rng.normal(size=(4, 5)).astype("float32")
    labels = np.zeros((4, 5), "float32")
    labels[:, 0], labels[2, 0], labels[1, 3] = 1.0, -1.0, -1.0       # row 2 padded; row 1's negative 3 padded
    scores[2] = [np.nan, np.inf, np.nan, -np.inf, 1.0]
    scores[1, 3] = np.nan
    want = np.zeros(4)
    for i in (0, 1, 3):
        z = np.array([scores[i, k] for k in range(5) if labels[i, k] >= 0], np.float64) / 0.5
        want[i] = z.max() + math.log(np.sum(np.exp(z - z.max()))) - z[0]
    loss = rk.SoftmaxLoss(temperature=0.5, reduction="none")
    for y_true in (labels, {"labels": np.maximum(labels, 0), "mask": labels >= 0}):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loss(y_true, scores)), want, rtol=2e-6)
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        x = tf.constant(scores)
        with tf.GradientTape() as tape:
            tape.watch(x)
            total = tf.reduce_sum(rk.SoftmaxLoss(temperature=0.5)(labels, x))
        grad = tape.gradient(total, x).numpy()
        assert np.all(np.isfinite(grad)) and np.all(grad[2] == 0) and grad[1, 3] == 0, grad
    nan_in_valid_row = scores.copy()
    nan_in_valid_row[0, 1] = np.nan
    rows = keras.ops.convert_to_numpy(loss(labels, nan_in_valid_row))
    assert np.all(np.isnan(rows[[0, 1, 3]])) and rows[2] == 0, rows
