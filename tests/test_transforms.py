"""Compiled and transformed code: every loss under XLA/``tf.function``, ``torch.compile``, ``jax.jit``,
``jax.grad``, ``jax.vmap``, ``torch.func.grad`` and ``torch.func.vmap``, equal to the eager call.

Under tracing, validation reads shapes only: a dimension unknown at trace time (``None`` in an
``input_signature``) matches anything, while known ones are still checked with the usual message. Value
checks (``sample_weight >= 0``, a tensor temperature > 0) need concrete values and are skipped there.
"""

from __future__ import annotations

import numpy as np
import pytest

import recloss
from recloss import ShapeError
from recloss._spec import Case
from recloss.losses import SPECS

from helpers import case_options, cast_floats, float_args, function_of, spec_inputs, to_backend, to_numpy

DIMS = {"B": 4, "K": 3, "N": 5, "D": 3, "M": 6, "L": 5}
ALL_CASES = [pytest.param(name, index, id=f"{name}-{case.name}")
             for name, spec in SPECS.items() for index, case in enumerate(spec.cases)]


def _full(spec) -> int:
    """The index of the spec case with the most tensor arguments (one compiled case per loss)."""
    return max(range(len(spec.cases)), key=lambda i: (len(spec.cases[i].forms), -i))


ONE_CASE = [pytest.param(name, _full(spec), id=name) for name, spec in SPECS.items()]


def _problem(loss: str, index: int, dims=DIMS, seed: int = 0):
    spec = SPECS[loss]
    case = spec.cases[index]
    inputs = cast_floats(spec, spec_inputs(spec, case, np.random.default_rng(seed), dims), "float32")
    names = [a.name for a in spec.args if inputs[a.name] is not None]
    return spec, case, inputs, names, case_options(spec, case)


def _eager(loss, inputs, options, backend):
    tensors = {k: to_backend(backend, v) for k, v in inputs.items()}
    return to_numpy(function_of(loss)(**tensors, **options))


# ----------------------------------------------------------------------------------------------------------
# TensorFlow


@pytest.mark.parametrize("loss, index", ALL_CASES)
def test_tf_function_xla_with_unknown_batch(loss: str, index: int) -> None:
    tf = pytest.importorskip("tensorflow")
    spec, case, inputs, names, options = _problem(loss, index)
    eager = _eager(loss, inputs, options, "tensorflow")

    def signature(name, unknown):
        shape = spec.arg(name).shapes[case.forms.get(name, 0)]
        return tf.TensorSpec([None if d in unknown else DIMS[d] for d in shape], tf.as_dtype(inputs[name].dtype))

    function = function_of(loss)
    for unknown in ({"B"}, set(DIMS)):  # the batch dimension unknown; every dimension unknown
        compiled = tf.function(lambda *xs: function(**dict(zip(names, xs)), **options), jit_compile=True,
                               input_signature=[signature(n, unknown) for n in names])
        out = compiled(*[tf.constant(inputs[n]) for n in names])
        np.testing.assert_allclose(to_numpy(out), eager, rtol=2e-5, atol=1e-6)
    # The same function at another batch size: no retrace needed, still right.
    _, _, other, _, _ = _problem(loss, index, dict(DIMS, B=2), seed=1)
    np.testing.assert_allclose(to_numpy(compiled(*[tf.constant(other[n]) for n in names])),
                               _eager(loss, other, options, "tensorflow"), rtol=2e-5, atol=1e-6)


def test_tf_validation_on_partially_known_shapes() -> None:
    """A known dimension that disagrees fails at trace time with the eager message; unknown ones pass."""
    tf = pytest.importorskip("tensorflow")
    query = tf.TensorSpec([None, 8], tf.float32)
    with pytest.raises(ShapeError) as info:
        tf.function(recloss.sampled_softmax_loss,
                    input_signature=[query, tf.TensorSpec([None, 7], tf.float32)]).get_concrete_function()
    assert str(info.value) == ("sampled_softmax_loss: `pos_emb` must have shape [B, D] with D=8 from `query_emb`; "
                               "got (None, 7)")
    # Unknown rank is not checked; unknown sizes match anything.
    tf.function(recloss.sampled_softmax_loss, input_signature=[query, tf.TensorSpec(None, tf.float32)]
                ).get_concrete_function()
    with pytest.raises(ShapeError, match=r"`neg_logit` must have shape \[B, K\] with B=3"):
        tf.function(recloss.softmax_loss).get_concrete_function(tf.TensorSpec([3], tf.float32),
                                                                tf.TensorSpec([4, None], tf.float32))


def test_value_checks_are_skipped_under_tracing() -> None:
    """Negative weights are caught eagerly; inside tf.function / jax.jit their values are unknown."""
    tf = pytest.importorskip("tensorflow")
    pos, neg, weight = np.zeros(3, np.float32), np.ones(3, np.float32), np.array([1, -1, 1], np.float32)
    with pytest.raises(recloss.OptionError):
        recloss.bpr_loss(tf.constant(pos), tf.constant(neg), sample_weight=tf.constant(weight))
    traced = tf.function(lambda p, n, w: recloss.bpr_loss(p, n, sample_weight=w))
    assert np.isfinite(to_numpy(traced(tf.constant(pos), tf.constant(neg), tf.constant(weight))))


# ----------------------------------------------------------------------------------------------------------
# JAX


def _jax():
    return pytest.importorskip("jax")


@pytest.mark.parametrize("loss, index", ALL_CASES)
def test_jax_jit_grad_vmap(loss: str, index: int) -> None:
    jax = _jax()
    jnp = jax.numpy
    spec, case, inputs, names, options = _problem(loss, index)
    function = function_of(loss)
    floats = float_args(spec, inputs)
    fixed = {k: None if v is None else jnp.asarray(v) for k, v in inputs.items() if k not in floats}

    def f(*xs):
        return function(**fixed, **dict(zip(floats, xs)), **options)

    xs = [jnp.asarray(inputs[n]) for n in floats]
    np.testing.assert_allclose(np.asarray(jax.jit(f)(*xs)), _eager(loss, inputs, options, "jax"), rtol=2e-5,
                               atol=1e-6)
    total = lambda *a: jnp.sum(f(*a))  # noqa: E731
    argnums = tuple(range(len(xs)))
    eager_grads = jax.grad(total, argnums)(*xs)
    for g, h in zip(jax.jit(jax.grad(total, argnums))(*xs), eager_grads):
        assert np.all(np.isfinite(np.asarray(g)))
        np.testing.assert_allclose(np.asarray(g), np.asarray(h), rtol=2e-5, atol=1e-6)
        if spec.value_only:  # a metric: no gradient flows through it
            assert not np.any(np.asarray(g))
    # vmap over a new leading axis equals a Python loop over it.
    stacked = [jnp.stack([x, x * 0.5 + 0.1, x * 1.5]) for x in xs]
    batched = jax.jit(jax.vmap(f))(*stacked)
    looped = jnp.stack([f(*[s[i] for s in stacked]) for i in range(3)])
    np.testing.assert_allclose(np.asarray(batched), np.asarray(looped), rtol=2e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# PyTorch


def _torch():
    return pytest.importorskip("torch")


@pytest.mark.parametrize("loss, index", ALL_CASES)
def test_torch_func_grad_and_vmap(loss: str, index: int) -> None:
    torch = _torch()
    from torch.func import grad, vmap

    spec, case, inputs, names, options = _problem(loss, index)
    function = function_of(loss)
    floats = float_args(spec, inputs)
    fixed = {k: None if v is None else torch.tensor(v) for k, v in inputs.items() if k not in floats}

    def f(*xs):
        return function(**fixed, **dict(zip(floats, xs)), **options)

    xs = [torch.tensor(inputs[n], requires_grad=True) for n in floats]
    if spec.value_only:  # a metric: values only, no graph to differentiate
        assert not f(*xs).requires_grad
    else:
        expected = torch.autograd.grad(f(*xs).sum(), xs, allow_unused=True, materialize_grads=True)
        got = grad(lambda *a: f(*a).sum(), argnums=tuple(range(len(xs))))(*[x.detach() for x in xs])
        for g, h in zip(got, expected):
            torch.testing.assert_close(g, h, rtol=2e-5, atol=1e-6)
    stacked = [torch.stack([x.detach(), x.detach() * 0.5 + 0.1, x.detach() * 1.5]) for x in xs]
    batched = vmap(f)(*stacked)
    looped = torch.stack([f(*[s[i] for s in stacked]) for i in range(3)])
    torch.testing.assert_close(batched, looped, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("loss, index", ONE_CASE)
def test_torch_compile_fullgraph(loss: str, index: int) -> None:
    """``fullgraph=True``: any graph break in recloss code is an error. One compile per loss (slow)."""
    torch = _torch()
    torch._dynamo.reset()
    spec, case, inputs, names, options = _problem(loss, index)
    function = function_of(loss)
    compiled = torch.compile(lambda *xs: function(**dict(zip(names, xs)), **options), fullgraph=True,
                             dynamic=False, backend="aot_eager")
    xs = [torch.tensor(inputs[n]) for n in names]
    floats = [i for i, n in enumerate(names) if n in float_args(spec, inputs)]
    for i in floats:
        xs[i].requires_grad_(True)
    out = compiled(*xs)
    torch.testing.assert_close(out.detach().double(), torch.tensor(_eager(loss, inputs, options, "torch")),
                               rtol=2e-5, atol=1e-6)
    if spec.value_only:
        return
    grads = torch.autograd.grad(out.sum(), [xs[i] for i in floats], allow_unused=True, materialize_grads=True)
    eager_xs = [x.detach().clone().requires_grad_(x.requires_grad) for x in xs]
    eager_grads = torch.autograd.grad(function(**dict(zip(names, eager_xs)), **options).sum(),
                                      [eager_xs[i] for i in floats], allow_unused=True, materialize_grads=True)
    for g, h in zip(grads, eager_grads):
        torch.testing.assert_close(g, h, rtol=2e-5, atol=1e-6)
