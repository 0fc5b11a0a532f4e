"""Gradients checked numerically: float64 finite differences against each backend's own autodiff.

Every loss x every spec case (so every option the catalogue exercises) x every backend, with each framework's
own tool: ``torch.autograd.gradcheck``, ``jax.test_util.check_grads`` and ``tf.test.compute_gradient``. The
gradient is taken with respect to every floating tensor argument the loss differentiates (ranking labels are
constants) and, where the loss has one, a 0-d tensor temperature. Weights are shifted away from 0 so that a
finite-difference step never makes one negative. The metrics have no gradient and are not here.
"""

from __future__ import annotations

import numpy as np
import pytest

import recloss
from recloss import CATALOGUE

from helpers import case_options, float_args, spec_inputs

DIMS = {"B": 3, "K": 3, "N": 2, "D": 3, "M": 4, "L": 4}
CASES = [pytest.param(name, index, id=f"{name}-{case.name}")
         for name, spec in CATALOGUE.items() for index, case in enumerate(spec.cases)]


def _problem(loss: str, index: int):
    """(float64 inputs, the names differentiated, a function of those tensors returning the loss)."""
    spec = CATALOGUE[loss]
    case = spec.cases[index]
    inputs = spec_inputs(spec, case, np.random.default_rng(index), DIMS)
    if inputs.get("sample_weight") is not None:
        inputs["sample_weight"] = inputs["sample_weight"] + 0.25
    options = case_options(spec, case)
    wrt = float_args(spec, inputs)
    if "temperature" in options:
        inputs["temperature"] = np.asarray(options.pop("temperature"), np.float64)
        wrt.append("temperature")
    function = getattr(recloss, loss)

    def loss_of(*tensors, fixed):
        return function(**fixed, **dict(zip(wrt, tensors)), **options)

    return inputs, wrt, loss_of


@pytest.mark.parametrize("loss, index", CASES)
def test_gradients_match_finite_differences(loss: str, index: int, backend: str) -> None:
    inputs, wrt, loss_of = _problem(loss, index)
    fixed_np = {k: v for k, v in inputs.items() if k not in wrt}
    if backend == "torch":
        import torch

        fixed = {k: None if v is None else torch.tensor(v) for k, v in fixed_np.items()}
        xs = tuple(torch.tensor(inputs[n], requires_grad=True) for n in wrt)
        assert torch.autograd.gradcheck(lambda *t: loss_of(*t, fixed=fixed), xs, eps=1e-6, atol=1e-6, rtol=1e-5)
    elif backend == "jax":
        import jax
        from jax.test_util import check_grads

        with jax.enable_x64(True):
            fixed = {k: None if v is None else jax.numpy.asarray(v) for k, v in fixed_np.items()}
            xs = tuple(jax.numpy.asarray(inputs[n]) for n in wrt)
            assert all(x.dtype == np.float64 for x in xs)
            check_grads(lambda *t: loss_of(*t, fixed=fixed), xs, order=1, modes=["rev"], eps=1e-6,
                        atol=1e-6, rtol=1e-5)
    else:
        import tensorflow as tf

        fixed = {k: None if v is None else tf.constant(v) for k, v in fixed_np.items()}
        xs = [tf.constant(inputs[n]) for n in wrt]
        theoretical, numerical = tf.test.compute_gradient(lambda *t: loss_of(*t, fixed=fixed), xs, delta=1e-6)
        for name, t, n in zip(wrt, theoretical, numerical):
            np.testing.assert_allclose(t, n, rtol=1e-5, atol=1e-6, err_msg=name)


@pytest.mark.parametrize("loss, index", CASES)
def test_second_derivatives_match_finite_differences(loss: str, index: int, backend: str) -> None:
    """Gradient penalties, Hessians and meta-learning differentiate the gradient: every loss and case (the
    forced streaming ones included, whose custom backwards must then be differentiable too), float64."""
    inputs, wrt, loss_of = _problem(loss, index)
    fixed_np = {k: v for k, v in inputs.items() if k not in wrt}
    if backend == "torch":
        import torch

        fixed = {k: None if v is None else torch.tensor(v) for k, v in fixed_np.items()}
        xs = tuple(torch.tensor(inputs[n], requires_grad=True) for n in wrt)
        assert torch.autograd.gradgradcheck(lambda *t: loss_of(*t, fixed=fixed), xs, eps=1e-6, atol=1e-5,
                                            rtol=1e-4)
    elif backend == "jax":
        import jax
        from jax.test_util import check_grads

        with jax.enable_x64(True):
            fixed = {k: None if v is None else jax.numpy.asarray(v) for k, v in fixed_np.items()}
            xs = tuple(jax.numpy.asarray(inputs[n]) for n in wrt)
            check_grads(lambda *t: loss_of(*t, fixed=fixed), xs, order=2, modes=["rev"], eps=1e-6,
                        atol=1e-5, rtol=1e-4)
    else:
        import tensorflow as tf

        fixed = {k: None if v is None else tf.constant(v) for k, v in fixed_np.items()}
        xs = [tf.constant(inputs[n]) for n in wrt]

        def gradient_norm(*t):
            with tf.GradientTape() as tape:
                tape.watch(t)
                value = loss_of(*t, fixed=fixed)
            return tf.add_n([tf.reduce_sum(g * g) for g in tape.gradient(value, t)])
        theoretical, numerical = tf.test.compute_gradient(gradient_norm, xs, delta=1e-6)
        for name, t, n in zip(wrt, theoretical, numerical):
            np.testing.assert_allclose(t, n, rtol=1e-4, atol=1e-5, err_msg=name)
