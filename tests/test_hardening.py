"""Regressions of the adversarial pass (issue 13), each on every backend, checked against small formulas
written here independently of the kernels and of the float64 reference.

1. second derivatives through the streaming path (and "auto" above its threshold) equal the materialised ones;
2. entries removed by ``neg_mask`` that hold inf or 3e38 leave the temperature's gradient finite and right;
3. confident rows keep their tiny loss and the right gradient sign (float32 and float64, reference included);
4. 64-bit ids are compared by value in JAX's 32-bit mode too;
5. ids of two dtypes are compared by value, or refused with the same words everywhere;
6. odd option types and odd NumPy arrays get a value or a ``ReclossError``, never a raw framework error;
7. sizes unknown at trace time are checked when the ``tf.function`` runs (graph and XLA);
8. the sigmoid loss of an empty batch is 0, and NumPy arrays beside framework tensors follow their precision.
"""

from __future__ import annotations

import fractions
import math

import numpy as np
import pytest

import recloss
from recloss import DTypeError, ReclossError
from recloss._dispatch import load_backend
from recloss.kernels import softmax as softmax_kernels

from helpers import to_backend, to_numpy

FRAMEWORKS = ("tensorflow", "torch", "jax")


def _value_and_grad(backend, function, inputs, wrt, **options):
    call = lambda **t: function(**t, **options, backend=backend)  # noqa: E731
    return load_backend(backend).value_and_grad(call, inputs, list(wrt), "cpu")


# ----------------------------------------------------------------------------------------------------------
# 1. Second derivatives through the streaming path


def _second_order(backend, implementation, q, p, n):
    """d/dq of sum((dL/dq)^2), the gradient penalty of the issue, float64."""
    kwargs = dict(in_batch=True, implementation=implementation)
    if backend == "torch":
        import torch
        qt = torch.tensor(q, requires_grad=True)
        loss = recloss.sampled_softmax_loss(qt, torch.tensor(p), torch.tensor(n), **kwargs)
        grad, = torch.autograd.grad(loss, qt, create_graph=True)
        return torch.autograd.grad((grad ** 2).sum(), qt)[0].numpy()
    if backend == "jax":
        import jax
        with jax.enable_x64(True):
            f = lambda x: recloss.sampled_softmax_loss(x, jax.numpy.asarray(p), jax.numpy.asarray(n), **kwargs)  # noqa: E731
            return np.asarray(jax.grad(lambda x: (jax.grad(f)(x) ** 2).sum())(jax.numpy.asarray(q)))
    import tensorflow as tf
    qt = tf.constant(q)
    with tf.GradientTape() as outer:
        outer.watch(qt)
        with tf.GradientTape() as inner:
            inner.watch(qt)
            loss = recloss.sampled_softmax_loss(qt, tf.constant(p), tf.constant(n), **kwargs)
        penalty = tf.reduce_sum(inner.gradient(loss, qt) ** 2)
    return outer.gradient(penalty, qt).numpy()


def _penalty_by_hand(q, p, n, eps=1e-6):
    """Central differences of the gradient penalty, the gradient itself written out by hand (softmax - onehot)."""
    def grad_q(x):
        grads = np.zeros_like(x)
        for i in range(len(x)):
            candidates = np.concatenate([p, n])          # the positive is column i; in-batch: every p row
            logits = candidates @ x[i]
            weights = np.exp(logits - logits.max())
            weights /= weights.sum()
            grads[i] = weights @ candidates - p[i]
        return grads / len(x)

    def penalty(x):
        return np.sum(grad_q(x) ** 2)
    out = np.zeros_like(q)
    for index in np.ndindex(q.shape):
        step = np.zeros_like(q)
        step[index] = eps
        out[index] = (penalty(q + step) - penalty(q - step)) / (2 * eps)
    return out


def test_second_derivatives_through_streaming(backend):
    rng = np.random.default_rng(0)
    q, p, n = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    expected = _penalty_by_hand(q, p, n)
    for implementation in ("materialized", "streaming"):
        np.testing.assert_allclose(_second_order(backend, implementation, q, p, n), expected, rtol=1e-5, atol=1e-8,
                                   err_msg=implementation)


def test_auto_above_its_threshold_keeps_second_derivatives(backend, monkeypatch):
    """The issue's case: "auto" switched to streaming at its threshold and changed a gradient penalty."""
    rng = np.random.default_rng(1)
    q, p, n = rng.normal(size=(16, 4)), rng.normal(size=(16, 4)), rng.normal(size=(48, 4))
    materialized = _second_order(backend, "materialized", q, p, n)
    monkeypatch.setattr(softmax_kernels, "STREAMING_MIN_LOGITS", 1)
    monkeypatch.setattr(softmax_kernels, "STREAMING_CHUNK", 7)      # several chunks, a remainder
    np.testing.assert_allclose(_second_order(backend, "auto", q, p, n), materialized, rtol=1e-9, atol=1e-12)


def test_jax_hessian_through_streaming():
    jax = pytest.importorskip("jax")
    rng = np.random.default_rng(2)
    q, p, n = rng.normal(size=(4, 3)), rng.normal(size=(4, 3)), rng.normal(size=(3, 3))
    with jax.enable_x64(True):
        hessians = [np.asarray(jax.hessian(lambda x: recloss.sampled_softmax_loss(
            x, jax.numpy.asarray(p), jax.numpy.asarray(n), in_batch=True, implementation=impl))(jax.numpy.asarray(q)))
            for impl in ("materialized", "streaming")]
    np.testing.assert_allclose(hessians[1], hessians[0], rtol=1e-9, atol=1e-12)


def test_forward_mode_through_streaming_is_refused_loudly():
    """jax.jvp / jacfwd of the loss itself meet the streaming path's custom_vjp: JAX raises (documented)."""
    jax = pytest.importorskip("jax")
    q = jax.numpy.ones((3, 2))
    f = lambda x: recloss.sampled_softmax_loss(x, q, implementation="streaming")  # noqa: E731
    with pytest.raises(TypeError, match="forward-mode"):
        jax.jacfwd(f)(q)


# ----------------------------------------------------------------------------------------------------------
# 2. Masked entries and the temperature's gradient


@pytest.mark.parametrize("masked", [math.inf, -math.inf, math.nan, 3e38])
def test_masked_entries_leave_the_temperature_gradient_right(backend, masked):
    pos = np.array([1.0, 2.0], np.float32)
    neg = np.array([[0.5, masked], [0.3, -1.0]], np.float32)
    mask = np.array([[True, False], [True, True]])
    inputs = {"pos_logit": pos, "neg_logit": neg, "neg_mask": mask, "temperature": np.float32(0.5),
              "neg_log_q": np.where(mask, 0.1, masked).astype(np.float32)}
    value, grads = _value_and_grad(backend, recloss.softmax_loss, inputs, ["temperature", "neg_logit", "neg_log_q"])
    # By hand: row 0 has the single negative 0.5, row 1 both; s = logit / T - log_q.
    t = 0.5
    rows = [math.log1p(math.exp((0.5 / t - 0.1) - 2.0)), math.log(1 + math.exp(0.3 / t - 0.1 - 4.0)
                                                                 + math.exp(-1.0 / t - 0.1 - 4.0))]
    np.testing.assert_allclose(value, np.mean(rows), rtol=1e-6)
    h = 1e-4
    def mean_at(temp):
        r0 = math.log1p(math.exp((0.5 / temp - 0.1) - 1.0 / temp))
        r1 = math.log(1 + math.exp(0.3 / temp - 0.1 - 2.0 / temp) + math.exp(-1.0 / temp - 0.1 - 2.0 / temp))
        return (r0 + r1) / 2
    np.testing.assert_allclose(grads["temperature"], (mean_at(t + h) - mean_at(t - h)) / (2 * h), rtol=1e-4)
    assert grads["neg_logit"][0, 1] == 0.0 and grads["neg_log_q"][0, 1] == 0.0
    assert np.all(np.isfinite(grads["neg_logit"])) and np.all(np.isfinite(grads["neg_log_q"]))


def test_masked_entries_with_hard_negatives(backend):
    """The hard-negative path selects among kept entries only, whatever the removed ones hold."""
    pos = np.array([1.0, 2.0])
    neg = np.array([[0.5, np.inf, -0.2], [0.3, -1.0, 0.7]])
    mask = np.array([[True, False, True], [True, True, False]])
    value, grads = _value_and_grad(backend, recloss.softmax_loss,
                                   {"pos_logit": pos, "neg_logit": neg, "neg_mask": mask,
                                    "temperature": np.float64(0.7)}, ["neg_logit", "temperature"],
                                   num_hard_negatives=1, reduction="none")
    expected = [math.log1p(math.exp((0.5 - 1.0) / 0.7)), math.log1p(math.exp((0.3 - 2.0) / 0.7))]
    np.testing.assert_allclose(value, expected, rtol=1e-12)
    assert grads["neg_logit"][0, 1] == 0 and grads["neg_logit"][1, 2] == 0 and np.isfinite(grads["temperature"])


# ----------------------------------------------------------------------------------------------------------
# 3. Confident rows


@pytest.mark.parametrize("implementation", ["materialized", "streaming"])
def test_confident_row_keeps_its_loss_and_gradient_sign(backend, implementation):
    """q = [[30, 0]], p = [[1, 0]], n = [[0.28, 0]]: l = log1p(exp(8.4 - 30)), dl/dq0 = p_n (0.28 - 1)."""
    inputs = {"query_emb": np.array([[30.0, 0.0]], np.float32), "pos_emb": np.array([[1.0, 0.0]], np.float32),
              "neg_emb": np.array([[0.28, 0.0]], np.float32)}
    value, grads = _value_and_grad(backend, recloss.sampled_softmax_loss, inputs, ["query_emb", "pos_emb"],
                                   implementation=implementation)
    gap = float(np.float32(30.0) * np.float32(0.28)) - 30.0
    exact = math.log1p(math.exp(gap))
    np.testing.assert_allclose(value, exact, rtol=1e-5)
    p_neg = math.exp(gap) / (1 + math.exp(gap))
    np.testing.assert_allclose(grads["query_emb"][0, 0], p_neg * (0.28 - 1.0), rtol=1e-4)
    np.testing.assert_allclose(grads["pos_emb"][0, 0], -30.0 * p_neg, rtol=1e-4)


@pytest.mark.parametrize("loss", ["softmax_loss", "sampled_softmax_loss", "info_nce_loss",
                                  "unsupervised_softmax_cross_entropy_loss"])
def test_float64_gap_of_40_is_not_rounded_to_zero(backend, loss):
    """exp(-40) = 4.25e-18 is below float64's resolution of 1: log1p keeps it, on every path and in NumPy."""
    pos, neg = np.array([[40.0, 0.0]]), np.array([[0.0, 1.0]])
    args = {"softmax_loss": (np.array([40.0]), np.array([[0.0]])),
            "sampled_softmax_loss": (np.array([[1.0, 0.0]]), pos, neg),
            "info_nce_loss": (np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[40.0, 0.0], [0.0, 40.0]])),
            "unsupervised_softmax_cross_entropy_loss": (np.array([[1.0, 0.0]]), pos, neg)}[loss]
    function = getattr(recloss, loss)
    options = {"temperature": 1.0} if loss == "info_nce_loss" else {}
    expected = math.exp(-40.0)
    np.testing.assert_allclose(float(function(*args, **options)), expected, rtol=1e-12)   # the reference
    tensors = [to_backend(backend, a) for a in args]
    if backend == "jax":
        import jax
        with jax.enable_x64(True):
            out = function(*[jax.numpy.asarray(a) for a in args], **options)
    else:
        out = function(*tensors, **options)
    np.testing.assert_allclose(float(to_numpy(out)), expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# 4 and 5. Ids compared by value


def _in_batch_rows(backend, pos_ids, neg_ids):
    zeros = np.zeros((2, 3), np.float32)
    return to_numpy(recloss.sampled_softmax_loss(zeros, zeros, zeros, pos_ids=pos_ids, neg_ids=neg_ids,
                                                 in_batch=True, reduction="none", backend=backend))


@pytest.mark.parametrize("backend_name", ("numpy",) + FRAMEWORKS)
def test_64_bit_ids_are_compared_by_value(backend_name):
    if backend_name not in recloss.available_backends():
        pytest.skip(f"{backend_name} is not installed")
    # 2**32 + 5 and 5 differ; JAX without x64 used to truncate the first to 5 and remove a real negative.
    rows = _in_batch_rows(backend_name, np.array([2**32 + 5, 7]), np.array([5, 9]))
    np.testing.assert_allclose(rows, [math.log(4)] * 2, rtol=1e-6)
    rows = _in_batch_rows(backend_name, np.array([2**40, 7]), np.array([2**40, 2**40 + 1]))
    np.testing.assert_allclose(rows, [math.log(3), math.log(4)], rtol=1e-6)


def test_jax_refuses_big_numpy_ids_beside_jax_ids():
    jax = pytest.importorskip("jax")
    if jax.config.jax_enable_x64:
        pytest.skip("x64 is on: JAX holds int64")
    zeros = np.zeros((2, 3), np.float32)
    with pytest.raises(DTypeError, match=r"`neg_ids` holds ids beyond int32.*beside the JAX array `pos_ids`"):
        recloss.sampled_softmax_loss(zeros, zeros, zeros, pos_ids=jax.numpy.array([1, 2]),
                                     neg_ids=np.array([2**33, 1]), backend="jax")


@pytest.mark.parametrize("backend_name", ("numpy",) + FRAMEWORKS)
@pytest.mark.parametrize("pos_dtype, neg_dtype", [("int64", "uint32"), ("int8", "uint8"), ("uint16", "int32"),
                                                  ("int32", "int64"), ("uint8", "uint64")])
def test_ids_of_two_dtypes_are_compared_by_value(backend_name, pos_dtype, neg_dtype):
    if backend_name not in recloss.available_backends():
        pytest.skip(f"{backend_name} is not installed")
    pos_ids = np.array([7, 100], pos_dtype)
    neg_ids = np.array([7, 200 if np.iinfo(neg_dtype).max >= 200 else 99], neg_dtype)
    rows = _in_batch_rows(backend_name, pos_ids, neg_ids)   # row 0 loses negative 0; row 1 keeps all
    np.testing.assert_allclose(rows, [math.log(3), math.log(4)], rtol=1e-6)


@pytest.mark.parametrize("pos_dtype, neg_dtype", [("uint64", "int64"), ("int8", "uint64")])
def test_ids_no_dtype_holds_are_refused_with_the_same_words(pos_dtype, neg_dtype):
    messages = set()
    for backend_name in ("numpy",) + FRAMEWORKS:
        if backend_name not in recloss.available_backends():
            continue
        with pytest.raises(DTypeError) as info:
            _in_batch_rows(backend_name, np.array([np.iinfo(pos_dtype).max, 5], pos_dtype),
                           np.array([-1, 5]).astype(neg_dtype))
        messages.add(str(info.value))
    assert messages == {f"sampled_softmax_loss: `pos_ids` and `neg_ids` are compared by value, which needs an "
                        f"integer dtype holding both; got {pos_dtype} and {neg_dtype} (convert them to one dtype)"}


# ----------------------------------------------------------------------------------------------------------
# 6. Odd option types and odd arrays


@pytest.mark.parametrize("value", [fractions.Fraction(1, 2), np.float16(0.5), np.array(0.5), 1])
def test_any_real_number_is_a_temperature(backend, value):
    pos, neg = np.array([1.0, -0.5], np.float32), np.array([[0.2, 0.1], [0.3, -0.7]], np.float32)
    expected = recloss.softmax_loss(pos.astype(np.float64), neg.astype(np.float64), temperature=float(value))
    out = recloss.softmax_loss(to_backend(backend, pos), to_backend(backend, neg), temperature=value)
    np.testing.assert_allclose(to_numpy(out), expected, rtol=1e-6)
    out = recloss.hinge_loss(to_backend(backend, pos), to_backend(backend, neg), margin=value)
    np.testing.assert_allclose(to_numpy(out), recloss.hinge_loss(pos, neg, margin=float(value)), rtol=1e-6)


@pytest.mark.parametrize("bad", [np.array(["a", "b"]), np.array([object(), object()], dtype=object),
                                 ["x", "y"]])
def test_arrays_of_strings_or_objects_get_the_same_dtype_error(bad):
    messages = set()
    for backend_name in FRAMEWORKS:
        if backend_name not in recloss.available_backends():
            continue
        pos = to_backend(backend_name, np.ones(2, np.float32))
        with pytest.raises(DTypeError) as info:
            recloss.bpr_loss(pos, bad)
        messages.add(str(info.value))
    assert len(messages) == 1 and next(iter(messages)).startswith("bpr_loss: `neg_logit` must be a floating tensor")


# ----------------------------------------------------------------------------------------------------------
# 7. tf.function with sizes unknown at trace time


@pytest.mark.parametrize("jit_compile", [False, True])
def test_unknown_sizes_are_checked_when_the_function_runs(jit_compile):
    tf = pytest.importorskip("tensorflow")
    vector = tf.TensorSpec([None], tf.float32)
    bpr = tf.function(lambda p, n: recloss.bpr_loss(p, n, reduction="none"), input_signature=[vector, vector],
                      jit_compile=jit_compile)
    np.testing.assert_allclose(bpr(tf.ones(3), tf.zeros(3)).numpy(), [math.log1p(math.exp(-1.0))] * 3, rtol=1e-6)
    # XLA drops assertions: its refusal names the check instead of repeating the message.
    words = "bpr_loss_neg_logit_needs_B_of_pos_logit" if jit_compile else (
        "bpr_loss: `neg_logit` must have shape [B] or [B, K] with B from `pos_logit`")
    with pytest.raises(tf.errors.InvalidArgumentError, match=re_escape(words)):
        bpr(tf.ones(3), tf.zeros(1))
    sigmoid = tf.function(lambda p, n: recloss.sigmoid_cross_entropy_loss(p, n, reduction="none"),
                          input_signature=[vector, vector], jit_compile=jit_compile)
    with pytest.raises(tf.errors.InvalidArgumentError):
        sigmoid(tf.ones(3), tf.zeros(5))
    # Under the default reduction [B] and [M] negatives mean the same: nothing to check, GraphLearn's value.
    mean = tf.function(lambda p, n: recloss.sigmoid_cross_entropy_loss(p, n), input_signature=[vector, vector],
                       jit_compile=jit_compile)
    np.testing.assert_allclose(mean(tf.ones(3), tf.zeros(5)).numpy(),
                               recloss.sigmoid_cross_entropy_loss(np.ones(3), np.zeros(5)), rtol=1e-6)


def re_escape(text: str) -> str:
    import re
    return re.escape(text)


# ----------------------------------------------------------------------------------------------------------
# 8. An empty batch; NumPy beside framework tensors


def test_sigmoid_of_an_empty_batch_is_zero(backend):
    for neg in (np.zeros(3, np.float32), np.zeros((0, 4), np.float32)):
        out = recloss.sigmoid_cross_entropy_loss(to_backend(backend, np.zeros(0, np.float32)), to_backend(backend, neg))
        assert float(to_numpy(out)) == 0.0
    assert float(recloss.sigmoid_cross_entropy_loss(np.zeros(0), np.zeros(3))) == 0.0


def test_numpy_beside_framework_tensors_takes_their_precision(backend):
    """A float64 NumPy log_q beside float32 tensors keeps the loss (and its [B, N] block) float32."""
    rng = np.random.default_rng(3)
    q, p = (to_backend(backend, rng.normal(size=(4, 3)).astype(np.float32)) for _ in range(2))
    log_q = np.log(rng.uniform(0.1, 1.0, size=4))
    out = recloss.sampled_softmax_loss(q, p, pos_log_q=log_q)
    assert "float32" in str(out.dtype)
    reference = recloss.sampled_softmax_loss(to_numpy(q), to_numpy(p), pos_log_q=log_q.astype(np.float32))
    np.testing.assert_allclose(to_numpy(out), reference, rtol=1e-6)
    # Alone, NumPy arrays keep their dtype (float64 where the framework has it).
    if backend != "jax":
        alone = recloss.sampled_softmax_loss(to_numpy(q), to_numpy(p), pos_log_q=log_q, backend=backend)
        assert "float64" in str(alone.dtype)


def test_validate_errors_before_any_work(tmp_path):
    pos = np.ones(3)
    with pytest.raises(ValueError, match="lacks the required argument 'neg_logit'"):
        recloss.validate("bpr_loss", inputs={"pos_logit": pos})
    with pytest.raises(ValueError, match="has no argument 'neg'"):
        recloss.validate("bpr_loss", inputs={"pos_logit": pos, "neg": pos})
    with pytest.raises(ValueError, match="has no option 'temprature'"):
        recloss.validate("softmax_loss", inputs={"pos_logit": pos, "neg_logit": np.ones((3, 2))},
                         options={"temprature": 0.1})
    with pytest.raises(ValueError, match="unknown dtype 'int32'"):
        recloss.validate("bpr_loss", dtypes=["int32"])
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        recloss.validate("bpr_loss", devices="tpu")
    report = recloss.validate("bpr_loss", backends="numpy", dtypes="float64")   # a string is one dtype
    assert [row.dtype for row in report.rows] == ["float64"] and report.passed


def test_validate_names_the_argument_it_refuses():
    """Arguments of the wrong kind, a negative seed and inputs the loss would refuse get recloss's words naming
    the argument (they used to surface as `'int' object is not iterable`, NumPy's seed error or NumPy's matmul
    error), in ``validate`` and ``validate_distributed`` alike."""
    from recloss.errors import OptionError, ShapeError
    for call, argument in ((lambda: recloss.validate(123), "losses"), (lambda: recloss.validate(backends=5), "backends"),
                           (lambda: recloss.validate(devices=0), "devices"), (lambda: recloss.validate(dtypes=3), "dtypes"),
                           (lambda: recloss.validate(seed=1.5), "seed"),
                           (lambda: recloss.validate("bpr_loss", inputs=[1.0]), "inputs"),
                           (lambda: recloss.validate_distributed(123), "losses")):
        with pytest.raises(TypeError, match=f"^`{argument}` must be"):
            call()
    for validate in (recloss.validate, recloss.validate_distributed):
        with pytest.raises(ValueError, match=r"^`seed` must be an integer >= 0; got -1$"):
            validate(seed=-1)
    q = np.ones((4, 8))
    with pytest.raises(ShapeError, match=r"^sampled_softmax_loss: `pos_emb` must have shape \[B, D\] with B=4 from "
                                         r"`query_emb`, D=8 from `query_emb`; got \(4, 7\)$"):
        recloss.validate("sampled_softmax_loss", inputs={"query_emb": q, "pos_emb": np.ones((4, 7))})
    with pytest.raises(OptionError, match=r"^sampled_softmax_loss: `temperature` must be a finite number > 0"):
        recloss.validate("sampled_softmax_loss", inputs={"query_emb": q, "pos_emb": q}, options={"temperature": 0.0})


def test_validate_with_no_framework_compares_nothing_and_says_so(monkeypatch):
    from recloss import parity
    monkeypatch.setattr(parity, "available_backends", lambda: ["numpy"])
    report = recloss.validate("bpr_loss")
    assert not report.rows and not report.passed
    assert "no framework backend is installed" in report.skipped[0]


def test_large_user_inputs_are_checked_along_directions(monkeypatch):
    """64x32 + 200x32 inputs: a handful of reference evaluations, not two per element (it took 500 s)."""
    from recloss import parity
    calls = []
    original = parity.REFERENCES["unsupervised_softmax_cross_entropy_loss"]
    monkeypatch.setitem(parity.REFERENCES, "unsupervised_softmax_cross_entropy_loss",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    rng = np.random.default_rng(4)
    inputs = {"src_emb": rng.normal(size=(64, 32)), "pos_emb": rng.normal(size=(64, 32)),
              "neg_emb": rng.normal(size=(200, 32))}
    backend = next(b for b in FRAMEWORKS if b in recloss.available_backends())
    report = recloss.validate("unsupervised_softmax_cross_entropy_loss", backends=[backend], inputs=inputs,
                              dtypes=["float64"])
    assert report.passed, report.table()
    assert len(calls) < 40


def test_cli_refuses_bad_arguments_before_running(tmp_path):
    from recloss.cli import main
    assert main(["validate", "--dtype", "int32", "--quiet"]) == 2
    assert main(["validate", "--device", "tpu", "--quiet"]) == 2
    assert main(["validate", "--json", str(tmp_path / "missing" / "x.json"), "--quiet"]) == 2
    from recloss._dispatch import load_backend as load
    gpu = any(d != "cpu" for b in FRAMEWORKS if b in recloss.available_backends() for d in load(b).devices())
    assert main(["validate", "--device", "gpu", "--loss", "bpr_loss", "--quiet"]) == (0 if gpu else 1)


def test_cli_version_and_seed(capsys):
    """``recloss --version`` prints the package's version (the one pyproject.toml declares); ``--seed -1`` is
    refused naming the option, before any work."""
    import re
    from pathlib import Path
    from recloss.cli import main
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    declared = re.search(r'^version = "(.+)"$', pyproject, flags=re.MULTILINE).group(1)
    assert exit_.value.code == 0 and capsys.readouterr().out == f"recloss {declared}\n" == f"recloss {recloss.__version__}\n"
    for bad in ("-1", "x"):
        with pytest.raises(SystemExit) as exit_:
            main(["validate", "--seed", bad, "--quiet"])
        assert exit_.value.code == 2
        assert f"argument --seed: must be an integer >= 0; got '{bad}'" in capsys.readouterr().err


def test_reclosserror_not_raw_framework_errors_for_mixed_id_dtypes_on_torch():
    """torch used to raise `RuntimeError: Promotion for uint16, uint32, uint64 types is not supported`."""
    pytest.importorskip("torch")
    rows = _in_batch_rows("torch", np.array([7, 100], np.int64), np.array([7, 9], np.uint32))
    assert np.all(np.isfinite(rows))
    with pytest.raises(ReclossError):
        _in_batch_rows("torch", np.array([7, 100], np.int8), np.array([7, 9], np.uint64))
