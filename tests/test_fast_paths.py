"""The fast paths of the retrieval softmax: each must equal the path it stands in for.

* torch, eager: the materialised block as one autograd node (``recloss.backends.torch.block``, chosen by
  ``recloss.kernels.block``) against the generic kernel (the block path switched off), float64, value and every
  gradient, over the options it takes (in-batch and shared negatives, logQ, ids with accidental hits and of two
  dtypes, rows with every candidate removed, weights, the three reductions, a tensor temperature, InfoNCE's
  symmetric and normalised forms); second derivatives; the non-finite guard; where it steps aside.
* The generic materialised rows (``softplus(lse - s_pos)``) keep confident rows (test_hardening) and are checked
  by every parity test; here: torch.compile takes them where eager streaming would keep its chunks.
* JAX: ``jax.grad`` called eagerly runs the compiled kernel; values and derivatives equal the jitted ones.
* TensorFlow: compiled eager calls with absent tensors, new temperatures and tensor temperatures.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import recloss

torch = pytest.importorskip("torch")

from recloss.backends import torch as torch_backend  # noqa: E402

RNG = np.random.default_rng(7)


def _emb(rows: int, dim: int = 5) -> np.ndarray:
    return RNG.standard_normal((rows, dim))


B, N = 6, 4
IDS = np.array([3, 1, 3, 7, 1, 9])           # rows 0 and 2, 1 and 4 hold the same item: accidental hits
NEG_IDS = np.array([9, 2, 3, 5])
CASES = {
    "in-batch": ("sampled_softmax_loss", {"query_emb": _emb(B), "pos_emb": _emb(B)}, {}),
    "in-batch, ids, logQ, weights": (
        "sampled_softmax_loss", {"query_emb": _emb(B), "pos_emb": _emb(B), "pos_ids": IDS,
                                 "pos_log_q": RNG.uniform(-4, -1, B), "sample_weight": RNG.uniform(0.5, 2, B)},
        {"reduction": "sum"}),
    "in-batch and shared, ids of two dtypes, logQ": (
        "sampled_softmax_loss", {"query_emb": _emb(B), "pos_emb": _emb(B), "neg_emb": _emb(N),
                                 "pos_ids": IDS.astype(np.int32), "neg_ids": NEG_IDS,
                                 "pos_log_q": RNG.uniform(-4, -1, B), "neg_log_q": RNG.uniform(-4, -1, N)},
        {"in_batch": True, "reduction": "none"}),
    "shared only": ("sampled_softmax_loss", {"query_emb": _emb(B), "pos_emb": _emb(B), "neg_emb": _emb(N)},
                    {"temperature": 0.3}),
    "every candidate removed in some rows": (
        "sampled_softmax_loss", {"query_emb": _emb(3), "pos_emb": _emb(3), "neg_emb": _emb(2),
                                 "pos_ids": np.array([4, 4, 5]), "neg_ids": np.array([4, 4])},
        {"reduction": "none"}),
    "one row, in-batch: no negative": ("sampled_softmax_loss", {"query_emb": _emb(1), "pos_emb": _emb(1)},
                                        {"reduction": "none"}),
    "unsupervised": ("unsupervised_softmax_cross_entropy_loss",
                     {"src_emb": _emb(B), "pos_emb": _emb(B), "neg_emb": _emb(N), "sample_weight": np.ones(B)},
                     {"temperature": 0.5}),
    "InfoNCE symmetric, normalised": ("info_nce_loss", {"query_emb": _emb(B), "key_emb": _emb(B)},
                                      {"symmetric": True, "normalize": True, "temperature": 0.2}),
    "InfoNCE with ids": ("info_nce_loss", {"query_emb": _emb(B), "key_emb": _emb(B), "ids": IDS},
                         {"reduction": "none"}),
}


def _uses_block(out) -> bool:
    """Whether the autograd graph of ``out`` holds the block path's node."""
    seen, todo = set(), [out.grad_fn]
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        if "BlockLoss" in type(node).__name__:
            return True
        seen.add(node)
        todo += [next_node for next_node, _ in node.next_functions]
    return False


def _tensors(inputs: dict) -> tuple[dict, list]:
    tensors = {k: torch.tensor(v) for k, v in inputs.items()}
    wrt = [k for k, v in tensors.items() if v.is_floating_point()]
    for name in wrt:
        tensors[name].requires_grad_(True)
    return tensors, wrt


def _value_and_grads(loss: str, inputs: dict, options: dict, temperature: float | None = None) -> tuple:
    tensors, wrt = _tensors(inputs)
    extra = {}
    if temperature is not None:
        extra["temperature"] = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
        wrt_tensors = [tensors[n] for n in wrt] + [extra["temperature"]]
    else:
        wrt_tensors = [tensors[n] for n in wrt]
    out = getattr(recloss, loss)(**tensors, **options, **extra)
    grads = torch.autograd.grad(out.sum(), wrt_tensors, allow_unused=True, materialize_grads=True)
    return out, [out.detach().numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("case", list(CASES))
def test_block_path_equals_the_generic_kernel(case):
    loss, inputs, options = CASES[case]
    for temperature in (None, 0.7):   # a Python number (the default or the case's) and a 0-d tensor
        opts = dict(options)
        if temperature is not None:
            opts.pop("temperature", None)
        out, fast = _value_and_grads(loss, inputs, opts, temperature)
        assert _uses_block(out)
        with pytest.MonkeyPatch.context() as patch:   # the block path off: the generic kernel runs
            patch.setattr(torch_backend.TorchOps, "block_ready", staticmethod(lambda: False))
            out, generic = _value_and_grads(loss, inputs, opts, temperature)
        assert not _uses_block(out)
        for a, b in zip(fast, generic):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-13)


def test_rows_without_candidates_have_zero_loss_and_gradient():
    loss, inputs, options = CASES["every candidate removed in some rows"]
    out, (value, *grads) = _value_and_grads(loss, inputs, options)
    assert np.all(np.isfinite(value)) and value[0] == 0 and value[1] == 0 and value[2] > 0
    q_grad = grads[0]
    assert np.all(q_grad[:2] == 0) and np.all(np.isfinite(q_grad))
    _, (value, *grads) = _value_and_grads(*CASES["one row, in-batch: no negative"])
    assert value.tolist() == [0.0] and all(np.all(g == 0) for g in grads)


@pytest.mark.parametrize("case", ["in-batch, ids, logQ, weights", "in-batch and shared, ids of two dtypes, logQ",
                                  "every candidate removed in some rows", "InfoNCE symmetric, normalised"])
def test_block_path_second_derivatives(case):
    """Gradients of gradients (create_graph=True) against finite differences of the first derivatives."""
    loss, inputs, options = CASES[case]
    tensors, wrt = _tensors(inputs)
    fixed = {k: v for k, v in tensors.items() if k not in wrt}
    function = getattr(recloss, loss)

    def f(*xs):
        return function(**fixed, **dict(zip(wrt, xs)), **options).sum()
    xs = tuple(tensors[n] for n in wrt)
    assert _uses_block(function(**tensors, **options))
    assert torch.autograd.gradgradcheck(f, xs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_backward_twice_and_partial_gradients():
    """retain_graph=True gives the same gradients twice; inputs that need no gradient get none."""
    q, p, n = (torch.tensor(_emb(r)) for r in (B, B, N))
    q.requires_grad_(True)
    out = recloss.sampled_softmax_loss(q, p, n, in_batch=True, temperature=0.4)
    first = torch.autograd.grad(out, q, retain_graph=True)[0]
    second = torch.autograd.grad(out, q)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert p.grad is None and n.grad is None


@pytest.mark.parametrize("where", ["query_emb", "pos_emb", "neg_emb", "pos_log_q", "neg_log_q"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_input_makes_every_row_nan(where, bad):
    inputs = {"query_emb": _emb(B), "pos_emb": _emb(B), "neg_emb": _emb(N), "pos_log_q": np.zeros(B),
              "neg_log_q": np.zeros(N)}
    inputs[where] = inputs[where].copy()
    inputs[where].flat[1] = bad
    tensors = {k: torch.tensor(v, dtype=torch.float32) for k, v in inputs.items()}
    rows = recloss.sampled_softmax_loss(**tensors, in_batch=True, reduction="none")
    assert _uses_block(recloss.sampled_softmax_loss(
        **{k: v.requires_grad_(k.endswith("emb")) for k, v in tensors.items()}, in_batch=True))
    assert torch.isnan(rows).all()
    assert torch.isnan(recloss.sampled_softmax_loss(**tensors, in_batch=True)).item()


def test_block_path_steps_aside():
    """Half precision, per-row negatives and hard negatives take the generic kernel (same semantics there);
    under torch.func the generic kernel runs too (an old-style Function has no functorch rule)."""
    q, p = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    assert _uses_block(recloss.sampled_softmax_loss(q, p))
    assert not _uses_block(recloss.sampled_softmax_loss(q.bfloat16(), p.bfloat16()))
    assert not _uses_block(recloss.sampled_softmax_loss(q, p, num_hard_negatives=2))
    assert not _uses_block(recloss.sampled_softmax_loss(q, p, torch.randn(4, 2, 3)))
    expected = torch.autograd.grad(recloss.sampled_softmax_loss(q, p), q)[0]
    got = torch.func.grad(lambda x: recloss.sampled_softmax_loss(x, p.detach()))(q.detach())
    torch.testing.assert_close(got, expected, rtol=1e-6, atol=1e-7)


def test_torch_compile_materialises_what_eager_streaming_would_keep(monkeypatch):
    """Under torch.compile the streaming path cannot keep its chunks; "auto" then takes the materialised block
    where the block fits the keep budget (same memory, one product less), and streams above it."""
    from recloss.kernels import softmax
    monkeypatch.setattr(softmax, "STREAMING_MIN_LOGITS", 16)
    calls = []
    streaming = torch_backend.TorchOps.streaming_row_losses

    def counting(*args, **kwargs):
        calls.append(torch.compiler.is_compiling())
        return streaming(*args, **kwargs)
    monkeypatch.setattr(torch_backend.TorchOps, "streaming_row_losses", staticmethod(counting))
    q, p, n = (torch.randn(r, 3, requires_grad=True) for r in (4, 4, 8))

    def loss(q, p, n):
        return recloss.unsupervised_softmax_cross_entropy_loss(q, p, n, temperature=0.5)
    torch._dynamo.reset()
    compiled = torch.compile(loss, backend="aot_eager", fullgraph=True)
    out = compiled(q, p, n)
    assert calls == []
    eager = loss(q, p, n)
    assert calls == [False]    # eagerly it streams (and keeps the chunks)
    torch.testing.assert_close(out, eager, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.autograd.grad(out, q)[0], torch.autograd.grad(eager, q)[0], rtol=1e-5,
                               atol=1e-6)
    monkeypatch.setattr(softmax, "STREAMING_STORE_BYTES", 8)    # the block no longer fits: stream
    torch._dynamo.reset()
    torch.compile(loss, backend="aot_eager", fullgraph=True)(q, p, n)
    assert calls[-1] is True


# ----------------------------------------------------------------------------------------------------------
# JAX and TensorFlow eager calls


def test_jax_grad_called_eagerly_runs_the_compiled_kernel(monkeypatch):
    jax = pytest.importorskip("jax")
    import recloss.backends.jax as jax_backend

    compiled_builds = []
    real_jit = jax.jit

    def counting_jit(fn, *args, **kwargs):
        if "compiled.<locals>.run" in getattr(fn, "__qualname__", ""):   # the per-signature kernel
            compiled_builds.append(fn)
        return real_jit(fn, *args, **kwargs)
    monkeypatch.setattr(jax_backend.jax, "jit", counting_jit)
    q, p, n = (jax.numpy.asarray(_emb(r), dtype=np.float32) for r in (5, 5, 7))

    def loss(q, p):
        return recloss.sampled_softmax_loss(q, p, n, in_batch=True, temperature=0.3)
    grads = [jax.grad(loss, argnums=(0, 1))(q, p) for _ in range(3)]    # the second call compiles
    assert len(compiled_builds) == 1
    expected = real_jit(jax.grad(loss, argnums=(0, 1)))(q, p)
    for got in grads:
        for g, e in zip(got, expected):
            np.testing.assert_allclose(g, e, rtol=2e-5, atol=1e-6)
    hessian_diag = jax.grad(lambda x: jax.grad(loss)(x, p).sum())(q)           # second order, eagerly
    np.testing.assert_allclose(hessian_diag, real_jit(jax.grad(lambda x: jax.grad(loss)(x, p).sum()))(q),
                               rtol=2e-4, atol=1e-5)
    batched = jax.vmap(lambda x: loss(x, p))(jax.numpy.stack([q, 2 * q]))     # vmap: traced in as before
    np.testing.assert_allclose(batched, [loss(q, p), loss(2 * q, p)], rtol=2e-5)


def test_tensorflow_compiled_eager_calls_take_new_numbers_and_tensor_temperatures():
    tf = pytest.importorskip("tensorflow")
    q, p, n = (tf.constant(_emb(r), tf.float32) for r in (5, 5, 7))
    ref = {t: float(recloss.sampled_softmax_loss(q.numpy(), p.numpy(), n.numpy(), in_batch=True, temperature=t,
                                                  backend="numpy")) for t in (0.3, 0.6)}
    for _ in range(3):   # eager calls are compiled from a signature's second call
        for t in (0.3, 0.6):
            got = float(recloss.sampled_softmax_loss(q, p, n, in_batch=True, temperature=t))
            np.testing.assert_allclose(got, ref[t], rtol=1e-5)
    temperature = tf.Variable(0.3)
    for _ in range(3):
        with tf.GradientTape() as tape:
            value = recloss.sampled_softmax_loss(q, p, n, in_batch=True, temperature=temperature)
        grad = tape.gradient(value, temperature)
        np.testing.assert_allclose(float(value), ref[0.3], rtol=1e-5)
        assert grad is not None and np.isfinite(float(grad))
