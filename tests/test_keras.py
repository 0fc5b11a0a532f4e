"""``recloss.keras``: the retrieval task and the generated Keras losses.

``model.fit`` runs on each Keras backend in its own subprocess (``KERAS_BACKEND`` is read once per process):
``tests/keras_fit_checks.py`` runs every check there once and the tests below read its report. The other
tests run in this process, on the default Keras backend.
"""

from __future__ import annotations

import json
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

pytest.importorskip("keras")

CHECKS = Path(__file__).with_name("keras_fit_checks.py")
FIT_CHECKS = ["retrieval_compute_loss_nojit", "retrieval_add_loss_nojit", "block_softmax_nojit",
              "generated_ranking_nojit", "retrieval_compute_loss_jit", "block_softmax_jit", "generated_ranking_jit",
              "direct_calls", "sampling_fit_nojit", "sampling_fit_jit", "sampling_layers_direct"]


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
    assert restored.options == {"temperature": 0.2, "in_batch": True, "num_hard_negatives": 4,
                                "reduction": "mean", "implementation": "auto", "product_precision": "input", "gather": None}


def test_retrieval_on_symbolic_inputs_gives_the_loss_shape():
    q, p = keras.Input((4,)), keras.Input((4,))
    assert rk.Retrieval()(q, p).shape == ()
    assert rk.Retrieval(reduction="none")(q, p).shape == (None,)


def test_every_loss_class_round_trips_its_config():
    for cls in (getattr(rk, n) for n in rk.__all__ if n not in ("Retrieval", "ReclossLoss", "loss_class")
                and issubclass(getattr(rk, n), rk.ReclossLoss)):   # not the estimator and queue layers
        options = {o.name: o.default for o in cls.spec.options if o.name != "reduction"}
        if "temperature" in options:
            options["temperature"] = 0.25
        loss = cls(reduction="sum", name="mine", **options)
        config = loss.get_config()
        assert config == {"name": "mine", "reduction": "sum", "dtype": "float32", **options}
        assert cls.from_config(config).get_config() == config


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
