"""Parity: every loss x backend x device x dtype against the float64 reference, value and gradients.

The engine is `recloss.validate` (the same one `recloss validate` runs); each spec's cases provide the
inputs, so a new loss or case is covered here without a new test.
"""

from __future__ import annotations

import importlib

import pytest

import recloss
from recloss._dispatch import BACKENDS, FRAMEWORK_BACKENDS, load_backend
from recloss.losses import CATALOGUE, METRICS, SPECS
from recloss.parity import TOLERANCES, public_function
from recloss.reference import REFERENCES

LOSSES = list(SPECS)  # the metrics too: compared by value only


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("loss", LOSSES)
def test_value_and_gradients_match_reference(loss, backend, device, dtype):
    report = recloss.validate(loss, backends=[backend], devices=[device], dtypes=[dtype])
    assert len(report.rows) == 1, report.table()
    row = report.rows[0]
    assert row.cases == len(SPECS[loss].cases)
    assert row.passed, report.table()
    assert row.value_error <= TOLERANCES[dtype][0]
    if loss in METRICS:
        assert row.grad_error is None
    else:
        assert row.grad_error <= TOLERANCES[dtype][1]


@pytest.mark.parametrize("loss", LOSSES)
def test_numpy_backend_is_the_reference(loss):
    report = recloss.validate(loss, backends=["numpy"], dtypes=["float64"])
    assert report.passed, report.table()
    assert report.rows[0].grad_error is None


@pytest.mark.parametrize("name", list(BACKENDS))
def test_every_declared_loss_has_a_kernel_on_every_backend(name):
    if name not in recloss.available_backends():
        pytest.skip(f"{name} is not installed")
    module = load_backend(name)
    assert set(module.KERNELS) == set(SPECS), f"{name} lacks {set(SPECS) - set(module.KERNELS)}"


def test_every_declared_loss_has_a_reference_and_a_public_function():
    assert set(REFERENCES) == set(SPECS) and not set(CATALOGUE) & set(METRICS)
    for name, spec in SPECS.items():
        function = public_function(name)
        assert name in (recloss.metrics.__all__ if name in METRICS else recloss.__all__)
        assert not hasattr(recloss, name) if name in METRICS else function.__module__ == "recloss"
        assert function.spec is spec
        for arg in spec.args:
            assert f"{arg.name}: ``{arg.shape_text}``" in function.__doc__


def test_validate_reports_a_wrong_kernel(monkeypatch):
    """The engine must be able to fail: a kernel that is off by a little is caught in value and gradient."""
    module = load_backend("numpy")
    original = module.KERNELS["bpr_loss"]
    monkeypatch.setitem(module.KERNELS, "bpr_loss", lambda bound, **kw: original(bound, **kw) * (1 + 1e-6))
    report = recloss.validate("bpr_loss", backends=["numpy"], dtypes=["float64"])
    assert not report.passed and "value" in report.rows[0].failures[0]


def test_validate_checks_user_inputs(backend):
    import numpy as np
    rng = np.random.default_rng(3)
    inputs = {"query_emb": rng.normal(size=(5, 4)), "pos_emb": rng.normal(size=(5, 4)),
              "neg_emb": rng.normal(size=(9, 4))}
    report = recloss.validate("sampled_softmax_loss", backends=[backend], devices=["cpu"], inputs=inputs,
                              options={"temperature": 0.5, "in_batch": True})
    assert report.passed, report.table()
    assert report.rows[0].cases == 1


def test_framework_backends_are_importable_modules():
    for name in FRAMEWORK_BACKENDS:
        assert importlib.util.find_spec(BACKENDS[name][0].rsplit(".", 1)[0]) is not None
