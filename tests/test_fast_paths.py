"""The fast paths of the retrieval softmax: each must equal the path it stands in for.

* torch, eager: the materialised block as one autograd node (``recloss.backends.torch.block``, chosen by
  ``recloss.kernels.block``; in-batch negatives without options in a node of their own) against the generic kernel (the block path switched off), float64, value and every
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
from recloss import ReclossError
from recloss.losses import CATALOGUE

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
        if type(node).__name__ in ("_BlockLossBackward", "_InBatchLossBackward"):
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


@pytest.mark.parametrize("case", ["in-batch", "in-batch, ids, logQ, weights",
                                  "in-batch and shared, ids of two dtypes, logQ",
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


@pytest.mark.parametrize("reduction", ["none", "mean", "sum"])
@pytest.mark.parametrize("where", ["query_emb", "pos_emb"])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_the_in_batch_node_guards_q_and_pos(where, bad, reduction):
    """In-batch negatives only (the in-batch node): a NaN or an infinity in q or pos makes the result NaN, every
    row with "none". The hard case: pos_2 holds +inf where q_2 is positive and every other query negative, so
    row 2's positive scores +inf (its loss would be softplus(-inf) = 0) and the other rows lose that column."""
    q, p = _emb(B).astype(np.float32), _emb(B).astype(np.float32)
    q[:, 0] = -np.abs(q[:, 0]) - 0.5
    q[2, 0] = 1.0
    (q if where == "query_emb" else p)[2, 0] = bad
    q_t, p_t = torch.tensor(q, requires_grad=True), torch.tensor(p, requires_grad=True)
    for loss in (lambda: recloss.sampled_softmax_loss(q_t, p_t, reduction=reduction),
                 lambda: recloss.info_nce_loss(q_t, p_t, reduction=reduction)):
        out = loss()
        assert _uses_block(out) and type(out.grad_fn).__name__ == "_InBatchLossBackward"
        assert torch.isnan(out).all()


def test_the_in_batch_node_is_applied_as_torch_would():
    """The in-batch node is entered through Function.apply's C entry: saved-tensor hooks still see what it saves,
    and a tensor kept from an ended torch.func transform (a dead wrapper) is unwrapped as Function.apply does."""
    from recloss.backends.torch import block
    q, p = (torch.tensor(_emb(B), requires_grad=True) for _ in range(2))
    packed = []

    def pack(t):
        packed.append(t.shape)
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = recloss.sampled_softmax_loss(q, p)
    assert type(out.grad_fn).__name__ == "_InBatchLossBackward" and len(packed) == 4
    kept = []
    torch.func.grad(lambda x: kept.append(x) or x.sum())(q.detach().clone())
    assert torch._C._functorch.is_functorch_wrapped_tensor(kept[0])
    from_dead = block.in_batch_loss(kept[0], p, 1.0, "mean")
    torch.testing.assert_close(from_dead, block._InBatchLoss.apply(q.detach(), p, 1.0, "mean"), rtol=0, atol=0)


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


# ----------------------------------------------------------------------------------------------------------
# Every fast path against a float64 formula written here, independently of recloss: the softmax rows, their
# reduction and the analytic gradients ``dl/dz = softmax(z) - onehot`` pushed through the products.


def _softmax_rows(q: np.ndarray, keys: np.ndarray, shift: np.ndarray, keep: np.ndarray, t: float):
    """Rows ``l_i = logsumexp_{j kept} z_ij - z_ii`` of ``z = q keys^T / t - shift`` (column i is row i's positive,
    always kept), and their vector-Jacobian product ``c -> (dq, dkeys, dshift, dt)``."""
    raw = q @ keys.T
    z = np.where(keep, raw / t - shift[None, :], -np.inf)
    top = z.max(1, keepdims=True)
    lse = top[:, 0] + np.log(np.exp(z - top).sum(1))
    rows = lse - np.diagonal(z)
    soft = np.exp(z - lse[:, None])
    soft[:, :q.shape[0]] -= np.eye(q.shape[0])

    def vjp(c: np.ndarray) -> tuple:
        g = c[:, None] * soft                      # removed entries: soft = 0, so no gradient
        return g @ keys / t, g.T @ q / t, -g.sum(0), -(g * raw).sum() / t ** 2
    return rows, vjp


def _reduced(rows: np.ndarray, weight: np.ndarray | None, reduction: str) -> tuple:
    """``reduction`` of ``rows`` (weighted), its coefficient per row ``d value.sum() / d rows`` and the weights'
    gradient."""
    w = np.ones_like(rows) if weight is None else weight
    if reduction == "none":
        return w * rows, w, rows
    if reduction == "sum":
        return (w * rows).sum(), w, rows
    value = (w * rows).sum() / w.sum()
    return value, w / w.sum(), (rows - value) / w.sum()


def _reference_sampled(query_emb, pos_emb, neg_emb=None, *, temperature=1.0, in_batch=None, pos_log_q=None,
                       neg_log_q=None, pos_ids=None, neg_ids=None, sample_weight=None, reduction="mean") -> tuple:
    """``sampled_softmax_loss`` (and, with no in-batch negatives, the unsupervised loss): value and gradients."""
    q, b = query_emb, query_emb.shape[0]
    in_batch = neg_emb is None if in_batch is None else in_batch
    own = np.eye(b, dtype=bool)
    keep_pos = own | (~own if pos_ids is None else pos_ids[:, None] != pos_ids[None, :]) if in_batch else own
    keys, shift, keep = pos_emb, np.zeros(b) if pos_log_q is None else pos_log_q, keep_pos
    if neg_emb is not None:
        n = neg_emb.shape[0]
        keep_neg = np.ones((b, n), bool) if neg_ids is None else pos_ids[:, None] != neg_ids[None, :]
        keys, keep = np.concatenate([pos_emb, neg_emb]), np.concatenate([keep_pos, keep_neg], 1)
        shift = np.concatenate([shift, np.zeros(n) if neg_log_q is None else neg_log_q])
    rows, vjp = _softmax_rows(q, keys, shift, keep, temperature)
    value, c, d_weight = _reduced(rows, sample_weight, reduction)
    dq, dkeys, dshift, dt = vjp(c)
    grads = {"query_emb": dq, "pos_emb": dkeys[:b], "pos_log_q": dshift[:b], "temperature": dt,
             "sample_weight": d_weight, "src_emb": dq}
    if neg_emb is not None:
        grads |= {"neg_emb": dkeys[b:], "neg_log_q": dshift[b:]}
    return value, grads


def _reference_info_nce(query_emb, key_emb, *, temperature=1.0, symmetric=False, normalize=False, ids=None,
                        sample_weight=None, reduction="mean") -> tuple:
    def unit(x):
        norm = np.linalg.norm(x, axis=1, keepdims=True)
        return x / norm, lambda du: (du - x / norm * (x / norm * du).sum(1, keepdims=True)) / norm
    (q, q_vjp), (k, k_vjp) = (unit(query_emb), unit(key_emb)) if normalize else (
        (query_emb, lambda d: d), (key_emb, lambda d: d))
    own = np.eye(q.shape[0], dtype=bool)
    keep = own | (~own if ids is None else ids[:, None] != ids[None, :])
    zero = np.zeros(q.shape[0])
    rows, vjp = _softmax_rows(q, k, zero, keep, temperature)
    if symmetric:
        back_rows, back_vjp = _softmax_rows(k, q, zero, keep, temperature)
        rows = 0.5 * (rows + back_rows)
    value, c, d_weight = _reduced(rows, sample_weight, reduction)
    dq, dk, _, dt = vjp(c * (0.5 if symmetric else 1.0))
    if symmetric:
        dk_back, dq_back, _, dt_back = back_vjp(0.5 * c)
        dq, dk, dt = dq + dq_back, dk + dk_back, dt + dt_back
    return value, {"query_emb": q_vjp(dq), "key_emb": k_vjp(dk), "temperature": dt, "sample_weight": d_weight}


REFERENCES = {"sampled_softmax_loss": _reference_sampled, "unsupervised_softmax_cross_entropy_loss":
              lambda src_emb, pos_emb, neg_emb, **options: _reference_sampled(src_emb, pos_emb, neg_emb, in_batch=False,
                                                                              **options),
              "info_nce_loss": _reference_info_nce}


def _torch_run(loss, inputs, options, temperature, block):
    """Value and gradients of ``out.sum()`` on the torch block node (``block``) or the generic kernel; a
    ``temperature`` of None: the option's value, else a 0-d tensor of that value."""
    with pytest.MonkeyPatch.context() as patch:
        if not block:
            patch.setattr(torch_backend.TorchOps, "block_ready", staticmethod(lambda: False))
        tensors, wrt = _tensors(inputs)
        if temperature is not None:
            tensors["temperature"] = torch.tensor(temperature, dtype=torch.float64, requires_grad=True)
            wrt.append("temperature")
        out = getattr(recloss, loss)(**tensors, **options)
        assert _uses_block(out) == block
        grads = torch.autograd.grad(out.sum(), [tensors[n] for n in wrt], allow_unused=True, materialize_grads=True)
    return [out.detach().numpy()], {n: g.numpy() for n, g in zip(wrt, grads)}


def _jax_run(loss, inputs, options, temperature):
    """Three eager calls of ``jax.value_and_grad`` (the later ones run the compiled kernel), float64."""
    jax = pytest.importorskip("jax")
    with jax.enable_x64(True):
        arrays = {k: jax.numpy.asarray(v) for k, v in inputs.items()}
        wrt = [k for k, v in inputs.items() if v.dtype.kind == "f"]
        if temperature is not None:
            arrays["temperature"] = jax.numpy.asarray(temperature)
            wrt.append("temperature")
        fixed = {k: v for k, v in arrays.items() if k not in wrt}

        def total(*xs):
            out = getattr(recloss, loss)(**fixed, **dict(zip(wrt, xs)), **options)
            return out.sum(), out
        results = [jax.value_and_grad(total, argnums=tuple(range(len(wrt))), has_aux=True)(*[arrays[n] for n in wrt])
                   for _ in range(3)]
    return [np.asarray(out) for (_, out), _ in results], {
        n: np.asarray(results[-1][1][i]) for i, n in enumerate(wrt)}


def _tensorflow_run(loss, inputs, options, temperature):
    """Three eager calls under a tape (the later ones run the compiled kernel), float64."""
    tf = pytest.importorskip("tensorflow")
    outs = []
    for _ in range(3):
        tensors = {k: tf.constant(v) for k, v in inputs.items()}
        wrt = [k for k, v in inputs.items() if v.dtype.kind == "f"]
        if temperature is not None:
            tensors["temperature"] = tf.constant(temperature, tf.float64)
            wrt.append("temperature")
        with tf.GradientTape() as tape:
            tape.watch([tensors[n] for n in wrt])
            out = getattr(recloss, loss)(**tensors, **options)
            total = tf.reduce_sum(out)
        grads = tape.gradient(total, [tensors[n] for n in wrt],
                              unconnected_gradients=tf.UnconnectedGradients.ZERO)
        outs.append(out.numpy())
    return outs, {n: g.numpy() for n, g in zip(wrt, grads)}


#: JAX and TensorFlow run one compiled kernel whatever the options: the cases that exercise its inputs most.
COMPILED_CASES = ("in-batch, ids, logQ, weights", "in-batch and shared, ids of two dtypes, logQ",
                  "every candidate removed in some rows", "InfoNCE symmetric, normalised")


@pytest.mark.parametrize("case, path", [(case, path) for case in CASES for path in ("torch block", "torch generic")]
                         + [(case, path) for case in COMPILED_CASES for path in ("jax eager", "tensorflow eager")])
def test_fast_paths_equal_independent_float64_formulas(case, path):
    """Value and every gradient (embeddings, logQ, weights, a tensor temperature) of each eager fast path in
    float64 against the formulas above: the torch block node, the generic materialised rows
    (``softplus(lse - s_pos)``), JAX's eagerly called ``jax.grad`` and TensorFlow's compiled eager kernels."""
    loss, inputs, options = CASES[case]
    number = options.get("temperature", CATALOGUE[loss].option("temperature").default)
    for tensor in (None, 0.7):   # the temperature as an option (a number), then as a 0-d tensor
        expected, expected_grads = REFERENCES[loss](**inputs, **options | {"temperature": tensor or number})
        opts = {k: v for k, v in options.items() if tensor is None or k != "temperature"}
        if path.startswith("torch"):
            outs, grads = _torch_run(loss, inputs, opts, tensor, block=path == "torch block")
        else:
            outs, grads = (_jax_run if path == "jax eager" else _tensorflow_run)(loss, inputs, opts, tensor)
        for out in outs:
            np.testing.assert_allclose(out, expected, rtol=1e-10, atol=1e-13)
        for name, grad in grads.items():
            np.testing.assert_allclose(grad, expected_grads[name], rtol=1e-9, atol=1e-12, err_msg=name)


def test_generic_materialised_rows_keep_a_confident_row():
    """The generic rows (``softplus(lse - s_pos)``, the block node switched off) in float32: a confident row keeps
    ``log1p(exp(gap))`` and its gradient's sign (``F.cross_entropy`` gives 0 and a gradient of the wrong sign)."""
    q = torch.tensor([[30.0, 0.0]], requires_grad=True)
    p, n = torch.tensor([[1.0, 0.0]], requires_grad=True), torch.tensor([[0.28, 0.0]])
    gap = float(np.float32(30.0) * np.float32(0.28)) - 30.0
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_backend.TorchOps, "block_ready", staticmethod(lambda: False))
        out = recloss.sampled_softmax_loss(q, p, n, implementation="materialized")
    assert not _uses_block(out)
    np.testing.assert_allclose(out.item(), math.log1p(math.exp(gap)), rtol=1e-5)
    dq, dp = torch.autograd.grad(out, [q, p])
    p_neg = math.exp(gap) / (1 + math.exp(gap))
    np.testing.assert_allclose(dq[0, 0].item(), p_neg * (0.28 - 1.0), rtol=1e-4)
    np.testing.assert_allclose(dp[0, 0].item(), -30.0 * p_neg, rtol=1e-4)


@pytest.mark.parametrize("path", ["torch block", "torch generic", "jax eager", "jax jit", "tensorflow"])
def test_a_tied_row_has_the_gradient_of_softplus_at_zero(path):
    """A row whose one negative scores exactly its positive (x = lse - s_pos = 0, here zero queries): loss
    log 2 and d loss/d q_i = sigmoid(0) (p_j - p_i) / B, from softplus'(0) = 1/2 (a softplus written as
    relu(x) + log1p(exp(-|x|)) gives 0, or -1/2, at the kink)."""
    p = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 7.0]])
    expected = 0.5 * (p[[1, 0]] - p) / 2
    if path.startswith("torch"):
        q, pt = torch.zeros(2, 3, dtype=torch.float64, requires_grad=True), torch.tensor(p)
        with pytest.MonkeyPatch.context() as patch:
            if path == "torch generic":
                patch.setattr(torch_backend.TorchOps, "block_ready", staticmethod(lambda: False))
            out = recloss.sampled_softmax_loss(q, pt, temperature=1.0)
        assert _uses_block(out) == (path == "torch block")
        value, grad = out.item(), torch.autograd.grad(out, q)[0].numpy()
    elif path.startswith("jax"):
        jax = pytest.importorskip("jax")
        with jax.enable_x64(True):
            step = jax.value_and_grad(lambda q: recloss.sampled_softmax_loss(q, jax.numpy.asarray(p), temperature=1.0))
            value, grad = (jax.jit(step) if path == "jax jit" else step)(jax.numpy.zeros((2, 3)))
            value, grad = float(value), np.asarray(grad)
    else:
        tf = pytest.importorskip("tensorflow")
        q = tf.Variable(tf.zeros((2, 3), tf.float64))
        with tf.GradientTape() as tape:
            out = recloss.sampled_softmax_loss(q, tf.constant(p), temperature=1.0)
        value, grad = float(out), tape.gradient(out, q).numpy()
    np.testing.assert_allclose(value, math.log(2.0), rtol=1e-12)
    np.testing.assert_allclose(grad, expected, rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# The repeated-signature path of recloss._api.call: a call with the previous call's signature skips the backend
# resolution and the validation lookup, and nothing else.


@pytest.fixture
def full_paths(monkeypatch):
    """Counts the calls that take the full path (validation)."""
    import recloss._api as api
    calls = []
    validate = api.validate

    def counting(*args, **kwargs):
        calls.append(args[0].name)
        return validate(*args, **kwargs)
    monkeypatch.setattr(api, "validate", counting)
    monkeypatch.setattr(api, "_RECENT", {})
    return calls


def test_a_repeated_signature_skips_validation_but_checks_values(full_paths):
    q, p, w = torch.randn(4, 3), torch.randn(4, 3), torch.rand(4)
    first = recloss.sampled_softmax_loss(q, p, sample_weight=w, temperature=0.5)
    second = recloss.sampled_softmax_loss(q, p, sample_weight=w, temperature=0.5)
    assert full_paths == ["sampled_softmax_loss"]     # the second call took the repeated-signature path
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    bad = w.clone()
    bad[2] = -1.0
    with pytest.raises(ReclossError) as repeated:
        recloss.sampled_softmax_loss(q, p, sample_weight=bad, temperature=0.5)
    assert full_paths == ["sampled_softmax_loss"]
    with pytest.raises(ReclossError) as full:          # the same words as the full path's check
        recloss.sampled_softmax_loss(q.numpy(), p.numpy(), sample_weight=bad.numpy(), temperature=0.5)
    assert str(repeated.value) == str(full.value) and "sample_weight" in str(full.value)


@pytest.mark.parametrize("change", ["shape", "dtype", "option value", "bad option", "backend argument", "absent tensor",
                                    "numpy input"])
def test_a_changed_signature_takes_the_full_path(full_paths, change):
    q, p = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    recloss.sampled_softmax_loss(q, p, temperature=0.5)
    args, options = [q, p], {"temperature": 0.5}
    if change == "shape":
        args[1] = torch.randn(5, 3, dtype=torch.float64)
    elif change == "dtype":
        args = [q.float(), p.float()]
    elif change == "option value":
        options["temperature"] = 0.25
    elif change == "bad option":
        options["reduction"] = "avg"
    elif change == "backend argument":
        options["backend"] = "torch"     # named instead of inferred
    elif change == "absent tensor":
        args.append(torch.randn(2, 3, dtype=torch.float64))
    else:
        args[1] = p.numpy()
    if change in ("shape", "bad option"):
        with pytest.raises(ReclossError, match="pos_emb" if change == "shape" else "reduction"):
            recloss.sampled_softmax_loss(*args, **options)
        assert len(full_paths) == 2
        return
    got = recloss.sampled_softmax_loss(*args, **options)
    assert len(full_paths) == 2
    plain = [a.numpy() if hasattr(a, "numpy") else a for a in args]
    expected = recloss.sampled_softmax_loss(*plain, **options | {"backend": "numpy"})
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5 if change == "dtype" else 1e-12)
    if change == "dtype":
        assert got.dtype == torch.float32


@pytest.fixture
def kernel_calls(monkeypatch):
    """Counts the calls that reach the torch backend's decorated kernels (the ordinary route)."""
    import recloss._api as api
    calls = []
    monkeypatch.setattr(api, "_RECENT", {})
    for name in ("sampled_softmax_loss", "unsupervised_softmax_cross_entropy_loss", "info_nce_loss"):
        kernel = torch_backend.KERNELS[name]

        def counting(*args, _kernel=kernel, _name=name, **kwargs):
            calls.append(_name)
            return _kernel(*args, **kwargs)
        monkeypatch.setitem(torch_backend.KERNELS, name, counting)
    return calls


@pytest.mark.parametrize("case", ["in-batch", "in-batch, ids, logQ, weights",
                                  "in-batch and shared, ids of two dtypes, logQ", "unsupervised",
                                  "InfoNCE symmetric, normalised"])
def test_a_repeated_eager_torch_call_goes_straight_to_the_block_node(kernel_calls, case):
    """The second call of a signature skips the kernels' routing (recloss.kernels.block.repeat) and gives the
    first call's value and gradients bit for bit."""
    loss, inputs, options = CASES[case]
    first, first_grads = _value_and_grads(loss, inputs, options)
    second, second_grads = _value_and_grads(loss, inputs, options)
    assert kernel_calls == [loss] and _uses_block(second)
    for a, b in zip(first_grads, second_grads):
        np.testing.assert_array_equal(a, b)


def test_the_direct_path_steps_aside_where_the_routing_decides_otherwise(kernel_calls, monkeypatch):
    """A repeated signature still takes the ordinary route where the block node does not apply now: the block
    operation off, the streaming threshold lowered (the streaming path runs), under torch.autocast, and where
    the fused path is wanted."""
    from recloss.kernels import fused
    from recloss.kernels import softmax as softmax_kernels

    q, p = (torch.tensor(_emb(B), dtype=torch.float32, requires_grad=True) for _ in range(2))   # ("auto" fuses
    assert _uses_block(recloss.sampled_softmax_loss(q, p)) and len(kernel_calls) == 1          # no float64)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch_backend.TorchOps, "block_ready", staticmethod(lambda: False))
        assert not _uses_block(recloss.sampled_softmax_loss(q, p)) and len(kernel_calls) == 2
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(softmax_kernels, "STREAMING_MIN_LOGITS", 1)
        out = recloss.sampled_softmax_loss(q, p)
        assert not _uses_block(out) and len(kernel_calls) == 3
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not _uses_block(recloss.sampled_softmax_loss(q, p)) and len(kernel_calls) == 4
    asked = []

    def wanted_once(ops, bound, implementation, tensors):   # the direct path asks first: say yes, once
        asked.append(tuple(t is None or t.shape for t in tensors))
        return len(asked) == 1
    monkeypatch.setattr(fused, "chosen", wanted_once)
    out = recloss.sampled_softmax_loss(q, p)   # the ordinary route, whose own fused check says no: the block node
    assert len(kernel_calls) == 5 and _uses_block(out)
    assert asked == [((B, 5), (B, 5), True)] * 2
    assert _uses_block(recloss.sampled_softmax_loss(q, p)) and len(kernel_calls) == 5 and len(asked) == 3
    q64, p64 = q.detach().double(), p.detach().double()
    for _ in range(2):    # float64: "auto" never fuses, so the direct path (the second call) does not ask
        assert _uses_block(recloss.sampled_softmax_loss(q64.requires_grad_(), p64.requires_grad_()))
    assert len(asked) == 4 and len(kernel_calls) == 6


def test_a_graph_of_unknown_rank_after_an_eager_call():
    """TensorFlow: an eager call is remembered; a tf.function traced with tensors of unknown rank then has no
    shape to compare with it (it is not taken for a repeat) and gives the eager value."""
    tf = pytest.importorskip("tensorflow")
    q, p = tf.constant(_emb(4), tf.float32), tf.constant(_emb(4), tf.float32)
    eager = recloss.sampled_softmax_loss(q, p)
    spec = tf.TensorSpec(None, tf.float32)
    graph = tf.function(lambda a, b: recloss.sampled_softmax_loss(a, b), input_signature=[spec, spec])
    np.testing.assert_allclose(graph(q, p).numpy(), eager.numpy(), rtol=1e-6)
