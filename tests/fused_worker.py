"""The fused kernels on the CPU through Triton's and Pallas's interpreters: the checks of ``test_fused.py``.

Run as ``RECLOSS_FUSED_INTERPRET=1 python tests/fused_worker.py torch|jax`` (``test_fused.py`` does, in a
subprocess: the interpreter setting is per process, and a process that imported TensorFlow must not import
triton). Prints one JSON object, check name -> ``{"ok": bool, "detail": str}``. Never imports TensorFlow.

The references: ``recloss.validate`` (the float64 NumPy reference with finite-difference gradients) on the
specs' own cases with ``implementation="fused"``, and the materialised path in float64 on the same rounded
inputs at sizes that span several blocks and slices (it is checked against the same reference by the parity
tests), plus closed forms for confident rows, ties and fully removed rows.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any, Callable

import numpy as np

FRAMEWORK = sys.argv[1]
assert os.environ.get("RECLOSS_FUSED_INTERPRET") == "1", "run with RECLOSS_FUSED_INTERPRET=1"

import recloss  # noqa: E402
from recloss._dispatch import load_backend  # noqa: E402
from recloss.errors import ReclossError  # noqa: E402
from recloss.losses import CATALOGUE  # noqa: E402
from recloss.parity import DIMS, cast_inputs, make_inputs  # noqa: E402

MODULE = load_backend(FRAMEWORK)
if FRAMEWORK == "torch":
    from recloss.backends.torch import fused as FUSED
else:
    from recloss.backends.jax import fused as FUSED
# Blocks of 16 and 4 programs: the sizes below span several row and candidate blocks and several slices.
FUSED.CONFIG.update(block_b=16, block_n=16, programs=4)

LOSSES = ("sampled_softmax_loss", "unsupervised_softmax_cross_entropy_loss", "info_nce_loss")
HALF = {"bfloat16": (1e-5, 1e-2), "float16": (1e-5, 3e-3)}
CHECKS: dict[str, Callable[[], str]] = {}


def check(name: str) -> Callable:
    def register(function: Callable[[], str]) -> Callable[[], str]:
        CHECKS[name] = function
        return function
    return register


def relative_error(actual: Any, expected: Any) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected), initial=0.0) / max(np.max(np.abs(expected), initial=0.0), 1e-30))


def run(loss: str, inputs: dict, options: dict, implementation: str, wrt: list[str], module: Any = MODULE) -> tuple:
    """Value and gradients (float64 NumPy) of ``loss`` on ``inputs``; ``temperature`` may be among them."""
    function = getattr(recloss, loss)
    return module.value_and_grad(lambda **t: function(**t, **options, implementation=implementation),
                                 inputs, wrt, "cpu")


def reference_module() -> Any:
    """The backend whose float64 materialised path is the reference at the larger sizes: torch where installed
    (eager, nothing to compile), else this one."""
    try:
        return load_backend("torch")
    except ImportError:
        return MODULE


# ----------------------------------------------------------------------------------------------------------
# The specs' cases, through the parity engine


def _fused_cases(loss: str) -> list:
    spec = CATALOGUE[loss]
    cases = []
    for case in spec.cases:
        if case.forms.get("neg_emb") == 1 or case.options.get("num_hard_negatives") is not None:
            continue   # per-row negatives and hard negatives are not the fused path's (the validator says so)
        cases.append(case)
    return cases


#: The specs' cases in every dtype on torch; in float32 on JAX (half precision there: the checks below).
PARITY_DTYPES = ("float32", "bfloat16", "float16") if FRAMEWORK == "torch" else ("float32",)

for _loss in LOSSES:
    for _dtype in PARITY_DTYPES:
        def _parity(loss: str = _loss, dtype: str = _dtype) -> str:
            rng = np.random.default_rng(0)
            lines, failures = [], []
            for case in _fused_cases(loss):
                options = {o.name: o.default for o in CATALOGUE[loss].options} | dict(case.options)
                options["implementation"] = "fused"
                report = recloss.validate(loss, backends=[FRAMEWORK], devices=["cpu"], dtypes=[dtype],
                                          inputs=make_inputs(CATALOGUE[loss], case, rng, DIMS), options=options)
                row = report.rows[0]
                lines.append(f"{case.name}: value {row.value_error:.1e}, grad {row.grad_error:.1e}")
                if not report.passed:
                    failures.append(f"{case.name}: {row.failures}")
            assert not failures, "; ".join(failures)
            return "; ".join(lines)
        check(f"parity {_loss} {_dtype}")(_parity)


# ----------------------------------------------------------------------------------------------------------
# Several blocks and slices, every option, against the materialised path in float64

B, N, D = 21, 37, 10     # neither a multiple of the 16-wide blocks

CONFIGS = {
    "in-batch, logQ, ids, weights, T": ("sampled_softmax_loss", ["query_emb", "pos_emb", "pos_log_q", "pos_ids",
                                                                 "sample_weight"], {"in_batch": True}),
    "shared, logQ, ids, T, none": ("sampled_softmax_loss", ["query_emb", "pos_emb", "neg_emb", "neg_log_q", "pos_ids",
                                                           "neg_ids"], {"reduction": "none"}),
    "mixed, logQ, ids, weights, T, sum": ("sampled_softmax_loss", ["query_emb", "pos_emb", "neg_emb", "pos_log_q",
                                                                   "neg_log_q", "pos_ids", "neg_ids", "sample_weight"],
                                          {"in_batch": True, "reduction": "sum"}),
    "in-batch, diagonal only": ("sampled_softmax_loss", ["query_emb", "pos_emb"], {}),
    "unsupervised, T": ("unsupervised_softmax_cross_entropy_loss", ["src_emb", "pos_emb", "neg_emb"], {}),
    "info_nce symmetric, normalized, ids, weights, T": ("info_nce_loss", ["query_emb", "key_emb", "ids",
                                                                          "sample_weight"],
                                                        {"symmetric": True, "normalize": True}),
    "mixed, query ids, ids, logQ, label smoothing, z-loss, T": (
        "sampled_softmax_loss", ["query_emb", "pos_emb", "neg_emb", "pos_log_q", "neg_log_q", "pos_ids", "neg_ids",
                                 "query_ids"], {"in_batch": True, "label_smoothing": 0.3, "z_loss": 0.05}),
    "info_nce symmetric, query ids, label smoothing, z-loss, T": (
        "info_nce_loss", ["query_emb", "key_emb", "query_ids", "sample_weight"],
        {"symmetric": True, "label_smoothing": 0.2, "z_loss": 0.1}),
}


def _draw(names: list[str], rng: np.random.Generator) -> dict[str, np.ndarray]:
    rows = {"query_emb", "pos_emb", "src_emb", "key_emb"}
    out: dict[str, np.ndarray] = {}
    for name in names:
        if name in rows:
            out[name] = rng.normal(0.0, 0.8, size=(B, D))
        elif name == "neg_emb":
            out[name] = rng.normal(0.0, 0.8, size=(N, D))
        elif name in ("pos_log_q", "neg_log_q"):
            out[name] = np.log(rng.uniform(0.05, 1.0, size=B if name == "pos_log_q" else N))
        elif name in ("pos_ids", "ids"):
            out[name] = rng.integers(0, 6, size=B).astype(np.int64)
        elif name == "neg_ids":
            out[name] = rng.integers(0, 6, size=N).astype(np.int64)
        elif name == "query_ids":   # several rows per query, 64-bit values
            out[name] = (rng.integers(0, 5, size=B) + (1 << 40)).astype(np.int64)
        elif name == "sample_weight":
            out[name] = rng.uniform(0.0, 2.0, size=B)
            out[name][3] = 0.0
    out["temperature"] = np.asarray(0.6)
    return out


def _against_materialized(dtype: str, tolerances: tuple[float, float], labels: tuple = tuple(CONFIGS)) -> str:
    rng = np.random.default_rng(1)
    lines = []
    for label, (loss, names, options) in CONFIGS.items():
        if label not in labels:
            continue
        drawn = _draw(names, rng)
        wrt = [n for n, v in drawn.items() if v.dtype.kind == "f" and n != "sample_weight"]
        rounded = cast_inputs({k: v for k, v in drawn.items() if k != "temperature"}, CATALOGUE[loss], dtype)
        rounded["temperature"] = drawn["temperature"].astype(np.float32)
        exact = {k: (v.astype(np.float64) if v.dtype.kind == "f" or v.dtype.name == "bfloat16" else v)
                 for k, v in rounded.items()}
        value, grads = run(loss, rounded, options, "fused", wrt)
        value0, grads0 = run(loss, exact, options, "materialized", wrt, reference_module())
        errors = [relative_error(value, value0)] + [relative_error(grads[n], grads0[n]) for n in wrt]
        lines.append(f"{label}: value {errors[0]:.1e}, grad {max(errors[1:]):.1e}")
        assert errors[0] <= tolerances[0] and max(errors[1:]) <= tolerances[1], lines[-1] + " " + str(
            dict(zip(wrt, errors[1:])))
    return "; ".join(lines)


#: On JAX, whose interpreter compiles every configuration (seconds each on the 2-core machine): in float32 the
#: four that hold every option between them (mixed covers both sources with logQ and ids), in half precision
#: the two that hold most; every configuration on torch.
FULL_LABELS = tuple(CONFIGS) if FRAMEWORK == "torch" else (
    "mixed, logQ, ids, weights, T, sum", "in-batch, diagonal only", "unsupervised, T",
    "info_nce symmetric, normalized, ids, weights, T", "mixed, query ids, ids, logQ, label smoothing, z-loss, T",
    "info_nce symmetric, query ids, label smoothing, z-loss, T")
HALF_LABELS = tuple(CONFIGS) if FRAMEWORK == "torch" else ("mixed, logQ, ids, weights, T, sum",
                                                            "mixed, query ids, ids, logQ, label smoothing, z-loss, T")
check("blocks float32")(lambda: _against_materialized("float32", (2e-6, 2e-5), FULL_LABELS))
check("blocks bfloat16")(lambda: _against_materialized("bfloat16", HALF["bfloat16"], HALF_LABELS))
check("blocks float16")(lambda: _against_materialized("float16", HALF["float16"], HALF_LABELS))


# ----------------------------------------------------------------------------------------------------------
# Closed forms at the edges


@check("confident rows keep exp(-gap)")
def _confident() -> str:
    # Row i: positive score 30 + gap_i, one negative at 30 and one at 0. In float32 the row loss
    # log1p(exp(-gap) + exp(-30 - gap)) is far below the epsilon of 1 (1e-9 to 1e-26) and must survive.
    gaps = np.array([20.0, 25.0, 40.0, 60.0])
    q = np.zeros((4, 16)); q[:, 0], q[:, 1] = 30.0, 1.0
    p = np.zeros((4, 16)); p[:, 0], p[:, 1] = 1.0, gaps
    n = np.zeros((2, 16)); n[0, 0], n[1, 2] = 1.0, 1.0
    value, grads = run("unsupervised_softmax_cross_entropy_loss",
                       {"src_emb": q.astype(np.float32), "pos_emb": p.astype(np.float32),
                        "neg_emb": n.astype(np.float32)}, {"reduction": "none"}, "fused", ["src_emb", "pos_emb"])
    s_pos, s_neg = np.sum(q * p, 1), q @ n.T
    ratio = np.exp(s_neg - s_pos[:, None])
    exact = np.log1p(ratio.sum(1))
    probs = ratio / (1.0 + ratio.sum(1, keepdims=True))
    exact_dq = probs @ n - probs.sum(1, keepdims=True) * p          # sum_j P_j n_j - (1 - P_pos) p
    exact_dp = -probs.sum(1, keepdims=True) * q
    value_error = float(np.max(np.abs(value - exact) / exact))
    grad_error = max(relative_error(grads["src_emb"][i], exact_dq[i]) for i in range(4))     # per row: scales
    grad_error = max(grad_error, *(relative_error(grads["pos_emb"][i], exact_dp[i]) for i in range(4)))
    assert value_error < 1e-5 and grad_error < 1e-5, (value, exact, grads["src_emb"][:, :3], exact_dq[:, :3])
    return f"losses {np.asarray(value).tolist()}; value rel. err {value_error:.1e}, gradients {grad_error:.1e}"


@check("every candidate removed: loss 0, gradients 0")
def _removed() -> str:
    rng = np.random.default_rng(2)
    inputs = {"query_emb": rng.normal(size=(B, D)).astype(np.float32),
              "pos_emb": rng.normal(size=(B, D)).astype(np.float32),
              "neg_emb": rng.normal(size=(N, D)).astype(np.float32),
              "neg_log_q": np.log(rng.uniform(0.1, 1.0, N)).astype(np.float32),
              "pos_ids": np.full(B, 7, np.int64), "neg_ids": np.full(N, 7, np.int64)}
    wrt = ["query_emb", "pos_emb", "neg_emb", "neg_log_q"]
    value, grads = run("sampled_softmax_loss", inputs, {"in_batch": True, "reduction": "none"}, "fused", wrt)
    assert np.array_equal(value, np.zeros(B)), value
    for name in wrt:
        assert np.array_equal(grads[name], np.zeros_like(grads[name])), name
    return "rows and gradients exactly 0"


@check("ties at the maximum")
def _ties() -> str:
    # Row 0: the positive (4) ties with three negatives in two blocks, two negatives tie above it (6).
    # Row 1: seventeen negatives tie at the maximum (2), three tie with the positive (-4).
    # Row 2: every score is 0 (loss log 21).
    q = np.zeros((3, 16)); q[0, 0], q[1, 0] = 2.0, -2.0
    p = np.zeros((3, 16)); p[:, 0] = 2.0
    n = np.zeros((20, 16)); n[:, 0] = -1.0
    n[[2, 9, 17], 0] = 2.0
    n[[4, 5], 0] = 3.0
    inputs = {"src_emb": q.astype(np.float32), "pos_emb": p.astype(np.float32), "neg_emb": n.astype(np.float32)}
    value, grads = run("unsupervised_softmax_cross_entropy_loss", inputs, {"reduction": "none"}, "fused",
                       ["src_emb", "neg_emb"])
    s = np.concatenate([np.sum(q * p, 1, keepdims=True), q @ n.T], 1)
    top = s.max(1, keepdims=True)
    exact = np.log(np.sum(np.exp(s - top), 1)) + top[:, 0] - s[:, 0]
    value_error = relative_error(value, exact)
    probs = np.exp(s - top) / np.sum(np.exp(s - top), 1, keepdims=True)
    grad_error = relative_error(grads["neg_emb"], probs[:, 1:].T @ q)
    assert value_error < 1e-6 and grad_error < 1e-5, (value, exact, value_error, grad_error)
    return f"losses {np.asarray(value).round(6).tolist()}; value rel. err {value_error:.1e}, grad {grad_error:.1e}"


@check("ids compared by value")
def _ids() -> str:
    rng = np.random.default_rng(3)
    q, p, n = (rng.normal(size=(m, 16)).astype(np.float32) for m in (2, 2, 2))
    options = {"reduction": "none"}
    pos_ids, neg_ids = np.array([2**40 + 5, 7]), np.array([5, 2**40 + 7])    # equal low 32 bits, different ids
    reference = recloss.sampled_softmax_loss(*(x.astype(np.float64) for x in (q, p, n)), pos_ids=pos_ids,
                                             neg_ids=neg_ids, in_batch=True, **options)
    if FRAMEWORK == "torch":
        import torch
        convert = torch.tensor
        context: Any = None
    else:
        import jax
        import jax.numpy as jnp
        convert, context = jnp.asarray, jax.enable_x64(True)
    import contextlib
    with context or contextlib.nullcontext():
        tensors = [convert(x) for x in (q, p, n)]
        loss = recloss.sampled_softmax_loss(*tensors, pos_ids=convert(pos_ids), neg_ids=convert(neg_ids),
                                            in_batch=True, implementation="fused", **options)
        assert relative_error(np.asarray(loss), reference) < 1e-6, (loss, reference)
        # ids of two dtypes: "auto" leaves them to the other paths, an explicit "fused" refuses them
        mixed = dict(pos_ids=convert(pos_ids.astype(np.int32) % 5), neg_ids=convert(np.array([5, 9])), in_batch=True)
        with FusedCalls() as calls:
            recloss.sampled_softmax_loss(*tensors, **mixed, **options)
        assert calls == [], calls
        try:
            recloss.sampled_softmax_loss(*tensors, **mixed, implementation="fused", **options)
        except recloss.DTypeError as error:
            refused = str(error)
        else:
            raise AssertionError("ids of two dtypes were not refused")
    return f"int64 ids 2**40 + 5 and 5 kept apart: {np.asarray(loss).round(4).tolist()}; {refused}"


# ----------------------------------------------------------------------------------------------------------
# Transforms: what works, and what is refused with a ReclossError


def _small_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(4)
    return {"src_emb": rng.normal(size=(B, D)).astype(np.float32),
            "pos_emb": rng.normal(size=(B, D)).astype(np.float32),
            "neg_emb": rng.normal(size=(N, D)).astype(np.float32)}


def _expect_refusal(function: Callable[[], Any], words: str) -> str:
    try:
        function()
    except ReclossError as error:
        assert words in str(error), str(error)
        return str(error)
    raise AssertionError(f"no ReclossError (expected {words!r})")


@check("transforms")
def _transforms() -> str:
    inputs = _small_inputs()
    loss = lambda src, pos, neg: recloss.unsupervised_softmax_cross_entropy_loss(  # noqa: E731
        src, pos, neg, temperature=0.5, implementation="fused")
    if FRAMEWORK == "torch":
        import torch
        import torch.func
        import torch.autograd.forward_ad as forward_ad
        src, pos, neg = (torch.tensor(v, requires_grad=True) for v in inputs.values())
        eager = loss(src, pos, neg)
        (grad,) = torch.autograd.grad(eager, src, create_graph=True)     # first order with create_graph: fine
        (grad0,) = torch.autograd.grad(loss(src, pos, neg), src)
        assert torch.allclose(grad, grad0)
        refused = [_expect_refusal(lambda: torch.autograd.grad((grad ** 2).sum(), src), "second derivatives")]

        def forward_mode() -> None:
            with forward_ad.dual_level():
                loss(forward_ad.make_dual(src.detach(), torch.ones_like(src)), pos, neg)
        refused.append(_expect_refusal(forward_mode, "forward-mode"))
        refused.append(_expect_refusal(lambda: torch.func.jvp(lambda s: loss(s, pos, neg), (src.detach(),),
                                                              (src.detach(),)), "forward-mode"))
        refused.append(_expect_refusal(lambda: torch.func.vmap(lambda s: loss(s, pos, neg))(
            torch.stack([src.detach()] * 2)), "vmap"))
        functional = torch.func.grad(lambda s: loss(s, pos.detach(), neg.detach()))(src.detach())
        assert torch.allclose(functional, grad0, atol=1e-6)
        with torch.no_grad():
            assert torch.allclose(loss(src, pos, neg), eager)
        compiled = torch.compile(loss)(src, pos, neg)      # a graph break around the kernels
        (grad_c,) = torch.autograd.grad(compiled, src)
        assert torch.allclose(compiled, eager) and torch.allclose(grad_c, grad0, atol=1e-6)
        return "torch.func.grad, no_grad and torch.compile agree; refused: " + " | ".join(refused)
    import jax
    import jax.numpy as jnp
    src, pos, neg = (jnp.asarray(v) for v in inputs.values())
    f = lambda s: loss(s, pos, neg)  # noqa: E731
    value, grad = jax.value_and_grad(f)(src)
    value_j, grad_j = jax.jit(jax.value_and_grad(f))(src)
    assert np.allclose(value, value_j, rtol=1e-6) and np.allclose(grad, grad_j, atol=1e-6)
    batched = jax.vmap(f)(jnp.stack([src, 0.5 * src]))
    assert np.allclose(batched, [f(src), f(0.5 * src)], rtol=1e-6)
    refused = [_expect_refusal(lambda: jax.jvp(f, (src,), (src,)), "forward-mode"),
               _expect_refusal(lambda: jax.jacfwd(f)(src), "forward-mode"),
               _expect_refusal(lambda: jax.hessian(f)(src), "second derivatives"),
               _expect_refusal(lambda: jax.grad(lambda s: jnp.sum(jax.grad(f)(s) ** 2))(src), "second derivatives")]
    return "jit and vmap agree with eager; refused: " + " | ".join(refused)


class FusedCalls:
    """Counts the calls of the backend's fused row op (by loss name) while in the ``with`` block."""

    def __enter__(self) -> list:
        self.original = type(MODULE.OPS).fused_row_losses
        self.calls: list = []

        def spy(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(kwargs.get("name"))
            return self.original(*args, **kwargs)
        type(MODULE.OPS).fused_row_losses = staticmethod(spy)
        return self.calls

    def __exit__(self, *exc: Any) -> None:
        type(MODULE.OPS).fused_row_losses = staticmethod(self.original)


@check("auto picks fused here")
def _auto() -> str:
    with FusedCalls() as calls:
        inputs = _small_inputs()
        tensors = [MODULE.convert(v) for v in inputs.values()]
        recloss.unsupervised_softmax_cross_entropy_loss(*tensors)
        recloss.info_nce_loss(*tensors[:2])
        recloss.sampled_softmax_loss(*tensors[:2])
        recloss.sampled_softmax_loss(*tensors, num_hard_negatives=2)          # not the fused path's
        recloss.sampled_softmax_loss(*tensors, implementation="streaming")
    assert calls == ["unsupervised_softmax_cross_entropy_loss", "info_nce_loss", "sampled_softmax_loss"], calls
    return f"fused calls: {calls}"


@check("recloss validate runs it here")
def _validate_command() -> str:
    import contextlib
    import io

    from recloss.cli import main

    printed = io.StringIO()
    with FusedCalls() as calls, contextlib.redirect_stdout(printed):
        status = main(["validate", "--backend", FRAMEWORK, "--loss", "unsupervised_softmax_cross_entropy_loss",
                       "--dtype", "float32", "--quiet"])
    assert status == 0 and calls, (status, calls, printed.getvalue())
    return f"exit 0, {len(calls)} fused calls: " + printed.getvalue().strip().splitlines()[-1]


if __name__ == "__main__":
    only = sys.argv[2:]
    results = {}
    for name, function in CHECKS.items():
        if only and name not in only:
            continue
        try:
            results[name] = {"ok": True, "detail": function()}
        except Exception as error:  # reported per check, with its traceback
            results[name] = {"ok": False, "detail": f"{type(error).__name__}: {error}\n{traceback.format_exc()}"}
    results["no TensorFlow"] = {"ok": "tensorflow" not in sys.modules, "detail": ""}
    print("RESULTS " + json.dumps(results))
