"""Several positives, query ids, gBCE, label smoothing and z-loss, and the new metrics: against their anchors and
at their edges, on every backend.

Expected values come from the anchors where they install (rax, RePlay, ``torch.nn.functional.cross_entropy``,
keras-rs) or from small float64 formulas written here (gSASRec-pytorch's gBCE transform, SupCon, the z-loss,
the masked softmax of rows of one query), never from recloss's float64 reference. The spec cases of these
losses run through the parity engine, the gradient checks (first and second order) and the property tests
like every other loss; this file covers what those cannot: the anchors, the streaming path's two backwards at
small chunks, confident rows, padded entries holding NaN, rows with nothing to learn and 64-bit query ids.
"""

from __future__ import annotations

import contextlib
import math

import numpy as np
import pytest

import recloss
from recloss import OptionError
from recloss._dispatch import load_backend
from recloss.kernels import softmax as softmax_kernels

from helpers import to_backend, to_numpy


def _value_and_grad(backend: str, function, inputs: dict, wrt: list, **options):
    call = lambda **t: function(**t, **options, backend=backend)  # noqa: E731
    return load_backend(backend).value_and_grad(call, inputs, list(wrt), "cpu")


@contextlib.contextmanager
def float64(backend: str):
    """JAX holds float64 arrays only with x64 enabled (the other frameworks always do)."""
    if backend != "jax":
        yield
        return
    import jax
    with jax.enable_x64(True):
        yield


def _logsumexp(x: np.ndarray) -> float:
    return float(np.logaddexp.reduce(x)) if x.size else -math.inf


# ----------------------------------------------------------------------------------------------------------
# Several positives per row


def _multi_positive_rows(seed: int = 0, rows: int = 7, size: int = 6):
    """Binary labels; row 0 fully padded, row 1 without a positive, row 2 all positive, row 3 one valid entry."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 1.5, size=(rows, size))
    labels = (rng.random((rows, size)) < 0.4).astype(np.float64)
    labels[:, 0] = 1.0
    mask = rng.random((rows, size)) < 0.8
    mask[0] = False
    labels[1] = 0.0
    mask[2], labels[2] = True, 1.0
    mask[3] = False
    mask[3, 0] = True
    return logits, labels, mask


def _replay_rows(logits, labels, mask, mode: str, temperature: float) -> np.ndarray:
    """RePlay's LogOutCE and LogInCE as its docstrings write them, one row at a time, in float64."""
    rows = []
    for s, y, keep in zip(logits / temperature, labels, mask):
        positives, negatives = s[keep & (y > 0)], s[keep & (y <= 0)]
        if positives.size == 0:
            rows.append(0.0)
        elif mode == "out":   # -sum_p log(e^p / (e^p + sum_n e^n))
            rows.append(sum(-(p - np.logaddexp(p, _logsumexp(negatives))) for p in positives))
        else:                 # -log(sum_P e^p / (sum_P e^p + sum_N e^n))
            rows.append(-(_logsumexp(positives) - np.logaddexp(_logsumexp(positives), _logsumexp(negatives))))
    return np.array(rows)


@pytest.mark.parametrize("mode", ["out", "in"])
def test_multi_positive_equals_replay_formulas(backend: str, mode: str) -> None:
    """Per row, with padded entries holding NaN and inf (they must not reach the value or any gradient)."""
    logits, labels, mask = _multi_positive_rows()
    expected = _replay_rows(logits, labels, mask, mode, 0.7)
    poisoned = np.where(mask, logits, np.nan)
    poisoned[~mask & (np.arange(6) % 2 == 0)] = np.inf
    value, grads = _value_and_grad(backend, recloss.multi_positive_softmax_loss,
                                   {"logits": poisoned, "labels": np.where(mask, labels, np.nan), "mask": mask},
                                   ["logits"], mode=mode, temperature=0.7, reduction="none")
    np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-14)
    assert np.all(np.isfinite(grads["logits"])) and np.all(grads["logits"][~mask] == 0.0)
    # No positive (row 1), every valid entry positive (row 2: no negative), one entry (row 3): loss 0 and no
    # gradient; a fully padded row (0) too.
    for row in (0, 1, 2, 3):
        assert value[row] == 0.0 and np.all(grads["logits"][row] == 0.0), row


def test_multi_positive_equals_replay_modules() -> None:
    """RePlay's own LogOutCE (the mean over every (row, positive) pair) and LogInCE (the mean over rows, with
    its 1e-6 inside the logarithm) on a catalogue of 9 items and 3 positives per row."""
    torch = pytest.importorskip("torch")
    try:   # replay-rec without lightning raises a plain ImportError (not ModuleNotFoundError) from replay.nn
        import replay.nn.loss as replay_loss
    except ImportError as error:
        pytest.skip(f"RePlay (replay-rec with lightning, an optional test dependency) does not import: {error}")
    rng = np.random.default_rng(1)
    rows, items, dim = 5, 9, 4
    query, table = rng.normal(size=(rows, dim)), rng.normal(size=(items, dim))
    positives = np.stack([rng.choice(items, 3, replace=False) for _ in range(rows)])
    labels = np.zeros((rows, items))
    np.put_along_axis(labels, positives, 1.0, axis=1)
    logits = query @ table.T
    emb, items_t = torch.tensor(query)[:, None, :], torch.tensor(table)
    pos = torch.tensor(positives)[:, None, :]
    present = torch.ones_like(pos, dtype=torch.bool)

    out = replay_loss.LogOutCE(cardinality=items)
    out.logits_callback = lambda e, ids=None: e @ items_t.T
    theirs = float(out(emb, {}, pos, None, None, present))
    ours = recloss.multi_positive_softmax_loss(logits, labels, mode="out", reduction="sum", backend="numpy")
    np.testing.assert_allclose(theirs, float(ours) / positives.size, rtol=1e-10)

    inward = replay_loss.LogInCE(cardinality=items)
    inward.logits_callback = lambda e, ids: (e[:, None, :] * items_t[ids]).sum(-1) if ids.dim() > 1 else e @ items_t[ids].T
    theirs = float(inward(emb, {}, pos, None, None, present))
    ours = recloss.multi_positive_softmax_loss(logits, labels, mode="in", backend="numpy")
    np.testing.assert_allclose(theirs, float(ours), rtol=1e-5)


def test_multi_positive_out_equals_rax_unique_softmax_loss() -> None:
    """rax's unique_softmax_loss on binary labels (gain 2^y - 1 = 1 on a positive), list by list, with padding."""
    rax, jax = pytest.importorskip("rax"), pytest.importorskip("jax")
    logits, labels, mask = _multi_positive_rows(2)
    with jax.enable_x64(True):
        theirs = np.asarray(rax.unique_softmax_loss(jax.numpy.asarray(logits), jax.numpy.asarray(labels),
                                                    where=jax.numpy.asarray(mask), reduce_fn=None), np.float64)
        ours = to_numpy(recloss.multi_positive_softmax_loss(*(to_backend("jax", x) for x in (logits, labels)),
                                                            mask=to_backend("jax", mask), reduction="none"))
    np.testing.assert_allclose(ours, theirs, rtol=1e-12, atol=1e-12)


def test_multi_positive_and_supcon(backend: str) -> None:
    """SupCon (Khosla et al. 2020), written out: L_in = -log((1/|P|) sum_P softmax) is mode "in" + log |P|;
    L_out = -(1/|P|) sum_P log softmax keeps the other positives in each denominator, which is the listwise
    softmax loss with labels 1/|P| on the positives, not mode "out" / |P|."""
    logits = np.random.default_rng(3).normal(0.0, 1.5, size=(4, 6))
    labels = np.array([[1, 1, 0, 0, 0, 0], [1, 0, 1, 0, 1, 0], [1, 1, 1, 1, 1, 0], [0, 1, 1, 0, 0, 0]], np.float64)
    count = labels.sum(1)                         # every row: two positives or more, and a negative
    log_softmax = logits - np.logaddexp.reduce(logits, axis=1, keepdims=True)
    supcon_in = -np.log(np.sum(np.exp(log_softmax) * labels, 1) / count)
    supcon_out = -np.sum(log_softmax * labels, 1) / count
    with float64(backend):
        tensors = [to_backend(backend, x) for x in (logits, labels)]
        mode_in = to_numpy(recloss.multi_positive_softmax_loss(*tensors, mode="in", reduction="none"))
        mode_out = to_numpy(recloss.multi_positive_softmax_loss(*tensors, mode="out", reduction="none"))
        listwise = to_numpy(recloss.listwise_softmax_loss(tensors[0], to_backend(backend, labels / count[:, None]),
                                                          reduction="none"))
    np.testing.assert_allclose(mode_in + np.log(count), supcon_in, rtol=1e-12)
    np.testing.assert_allclose(listwise, supcon_out, rtol=1e-12)
    assert np.all(mode_out / count < supcon_out - 1e-6)


def test_multi_positive_confident_rows_in_float32(backend: str) -> None:
    """A positive 30 to 60 above every negative: the loss ~ exp(-gap) survives float32 (it is far below the
    epsilon of 1), in both modes, with a gradient of the right sign on the negative."""
    gaps = np.array([30.0, 45.0, 60.0])
    logits = np.stack([np.array([gap, gap - 1.0, 0.0]) for gap in gaps]).astype(np.float32)
    labels = np.array([[1.0, 1.0, 0.0]] * 3, np.float32)
    exact = {"out": np.exp(-gaps) + np.exp(-(gaps - 1.0)), "in": np.log1p(np.exp(-gaps) / (1 + np.exp(-1.0)))}
    for mode, want in exact.items():
        value, grads = _value_and_grad(backend, recloss.multi_positive_softmax_loss, {"logits": logits, "labels": labels},
                                       ["logits"], mode=mode, reduction="none")
        np.testing.assert_allclose(value, want, rtol=1e-5)
        assert np.all(grads["logits"][:, 2] > 0) and np.all(grads["logits"][:, :2] < 0), (mode, grads["logits"])


# ----------------------------------------------------------------------------------------------------------
# gBCE


def _gsasrec(pos: np.ndarray, neg: np.ndarray, num_items: int, t: float) -> np.ndarray:
    """gSASRec-pytorch's training loss per row, written out: the positive logit transformed in float64 with its
    clamps (eps = 1e-10), then binary cross-entropy with logits averaged over the row's K + 1 elements."""
    eps = 1e-10
    alpha = neg.shape[1] / (num_items - 1)
    beta = alpha * ((1 - 1 / alpha) * t + 1 / alpha)
    probs = np.clip(1.0 / (1.0 + np.exp(-pos)), eps, 1 - eps)
    adjusted = np.clip(probs ** (-beta), 1 + eps, np.finfo(np.float64).max)
    transformed = np.log(np.clip(1.0 / (adjusted - 1.0), eps, np.finfo(np.float64).max))
    logits = np.concatenate([transformed[:, None], neg], 1)
    targets = np.zeros_like(logits)
    targets[:, 0] = 1.0
    bce = np.maximum(logits, 0) - logits * targets + np.log1p(np.exp(-np.abs(logits)))
    return bce.mean(1)


@pytest.mark.parametrize("t", [0.0, 0.75, 1.0])
def test_gbce_equals_gsasrec_formula(backend: str, t: float) -> None:
    """Away from its clamps (|logits| < 8), gSASRec-pytorch's loss and recloss's agree to float64 rounding."""
    rng = np.random.default_rng(4)
    pos, neg = rng.normal(0.0, 2.0, 6), rng.normal(0.0, 2.0, (6, 5))
    value, _ = _value_and_grad(backend, recloss.gbce_loss, {"pos_logit": pos, "neg_logit": neg}, ["pos_logit"],
                               num_items=40, t=t, reduction="none")
    np.testing.assert_allclose(value, _gsasrec(pos, neg, 40, t), rtol=1e-9)


def test_gbce_is_stable_in_bfloat16_and_masks_exactly(backend: str) -> None:
    """bfloat16 logits up to +-1e4 (where sigmoid(s)^beta underflows in float32 and gSASRec's transform clamps):
    finite loss and gradients, equal to the float64 softplus form; a masked negative holding NaN is removed."""
    pos = np.array([-1e4, -30.0, 0.0, 30.0, 1e4])
    neg = np.array([[1e4, -1e4], [3.0, np.nan], [0.5, -0.5], [-30.0, 40.0], [-1e4, 1e4]])
    mask = ~np.isnan(neg)
    bfloat16 = pytest.importorskip("ml_dtypes").bfloat16
    rounded = [np.asarray(x).astype(bfloat16).astype(np.float64) for x in (pos, np.nan_to_num(neg))]
    beta = 1 - 0.75 * (1 - 2 / 99)
    softplus = lambda x: np.logaddexp(0.0, x)  # noqa: E731
    want = (beta * softplus(-rounded[0]) + np.sum(np.where(mask, softplus(rounded[1]), 0.0), 1)) / (1 + mask.sum(1))
    module = load_backend(backend)
    tensors = {"pos_logit": module.convert(pos.astype(np.float32)), "neg_logit": module.convert(neg.astype(np.float32)),
               "neg_mask": module.convert(mask)}
    if backend == "torch":
        import torch
        tensors = {k: v.to(torch.bfloat16) if v.dtype == torch.float32 else v for k, v in tensors.items()}
    elif backend == "jax":
        tensors = {k: v.astype("bfloat16") if v.dtype == np.float32 else v for k, v in tensors.items()}
    else:
        import tensorflow as tf
        tensors = {k: tf.cast(v, tf.bfloat16) if v.dtype == tf.float32 else v for k, v in tensors.items()}
    value = to_numpy(recloss.gbce_loss(**tensors, num_items=100, reduction="none"))
    np.testing.assert_allclose(value, want, rtol=1e-3)
    _, grads = _value_and_grad(backend, recloss.gbce_loss, {"pos_logit": rounded[0].astype(np.float32),
                                                            "neg_logit": neg.astype(np.float32), "neg_mask": mask},
                               ["pos_logit", "neg_logit"], num_items=100, reduction="sum")
    assert all(np.all(np.isfinite(g)) for g in grads.values()) and grads["neg_logit"][1, 1] == 0.0


def test_gbce_options_are_checked() -> None:
    pos, neg = np.zeros(3), np.zeros((3, 2))
    with pytest.raises(OptionError, match=r"gbce_loss: `num_items` must be an integer >= 2; got 1"):
        recloss.gbce_loss(pos, neg, num_items=1, backend="numpy")
    with pytest.raises(OptionError, match=r"gbce_loss: `t` must be a finite number in \[0, 1\]; got 1.5"):
        recloss.gbce_loss(pos, neg, num_items=10, t=1.5, backend="numpy")
    with pytest.raises(TypeError, match="num_items"):
        recloss.gbce_loss(pos, neg, backend="numpy")


# ----------------------------------------------------------------------------------------------------------
# Label smoothing and z-loss


def test_label_smoothing_equals_torch_cross_entropy(backend: str) -> None:
    """``F.cross_entropy(logits, target, label_smoothing=eps)`` over each row's candidates as classes: the
    ``[B, 1 + K]`` block of ``softmax_loss`` (target 0) and the in-batch block of ``sampled_softmax_loss``
    and ``info_nce_loss`` (target i), materialised and streaming."""
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    rng = np.random.default_rng(5)
    pos, neg = rng.normal(size=6), rng.normal(size=(6, 4))
    q, p = rng.normal(size=(6, 3)), rng.normal(size=(6, 3))
    for eps in (0.1, 0.5):
        block = torch.tensor(np.concatenate([pos[:, None], neg], 1)) / 0.5
        want = F.cross_entropy(block, torch.zeros(6, dtype=torch.long), label_smoothing=eps, reduction="none")
        with float64(backend):
            got = to_numpy(recloss.softmax_loss(to_backend(backend, pos), to_backend(backend, neg), temperature=0.5,
                                                label_smoothing=eps, reduction="none"))
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12)
        logits = torch.tensor(q @ p.T) / 0.3
        want = F.cross_entropy(logits, torch.arange(6), label_smoothing=eps)
        for implementation in ("materialized", "streaming"):
            for loss in (recloss.sampled_softmax_loss, recloss.info_nce_loss):
                with float64(backend):
                    got = to_numpy(loss(to_backend(backend, q), to_backend(backend, p), temperature=0.3,
                                        label_smoothing=eps, implementation=implementation))
                np.testing.assert_allclose(float(got), float(want), rtol=1e-12, err_msg=implementation)


def test_label_smoothing_spreads_over_kept_candidates_only(backend: str) -> None:
    """Removed candidates (mask, accidental hits, rows of the same query) get no share of eps: the loss equals
    cross-entropy over the kept classes alone, and a row with only its positive left has loss 0."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    pos, neg = rng.normal(size=4), rng.normal(size=(4, 5))
    mask = rng.random((4, 5)) < 0.6
    mask[0] = False
    want = []
    for i in range(4):
        row = torch.tensor(np.concatenate([[pos[i]], neg[i][mask[i]]]))[None]
        want.append(float(torch.nn.functional.cross_entropy(row, torch.zeros(1, dtype=torch.long),
                                                            label_smoothing=0.3)))
    with float64(backend):
        got = to_numpy(recloss.softmax_loss(*(to_backend(backend, x) for x in (pos, np.where(mask, neg, np.nan))),
                                            neg_mask=to_backend(backend, mask), label_smoothing=0.3, reduction="none"))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert got[0] == 0.0


def test_z_loss_adds_the_squared_logsumexp(backend: str) -> None:
    """``c * logsumexp(row)^2`` of the kept candidates (PaLM, Liger's lse_square_scale), with label smoothing
    too; a row with only its positive left adds c * s_pos^2."""
    rng = np.random.default_rng(7)
    pos, neg = rng.normal(size=5) + 3.0, rng.normal(size=(5, 4))
    mask = rng.random((5, 4)) < 0.7
    mask[1] = False
    rows = []
    for i in range(5):
        z = np.concatenate([[pos[i]], neg[i][mask[i]]]) / 0.5
        lse = _logsumexp(z)
        rows.append((1 - 0.2) * (lse - z[0]) + 0.2 * (lse - z.mean()) + 0.01 * lse ** 2)
    value, grads = _value_and_grad(backend, recloss.softmax_loss,
                                   {"pos_logit": pos, "neg_logit": np.where(mask, neg, np.inf), "neg_mask": mask},
                                   ["pos_logit", "neg_logit"], temperature=0.5, label_smoothing=0.2, z_loss=0.01,
                                   reduction="none")
    np.testing.assert_allclose(value, rows, rtol=1e-12)
    np.testing.assert_allclose(value[1], 0.01 * (2 * pos[1]) ** 2, rtol=1e-12)
    assert np.all(grads["neg_logit"][~mask] == 0.0) and np.all(np.isfinite(grads["neg_logit"]))


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks of 3 columns (a remainder, the diagonal crossing chunk boundaries)."""
    monkeypatch.setattr(softmax_kernels, "STREAMING_CHUNK", 3)


@pytest.mark.parametrize("store", ["kept chunks", "recomputed"])
def test_streaming_partials_equal_materialized(backend: str, small_chunks, monkeypatch, store: str) -> None:
    """The streaming path's kept scores' sums and their backward (chunks kept from the forward, or recomputed),
    with label smoothing, z-loss, query ids, ids and logQ, against the materialised block: value and gradients
    of every input (the temperature included), float64."""
    if store == "recomputed":
        monkeypatch.setattr(softmax_kernels, "STREAMING_STORE_BYTES", 0)
    rng = np.random.default_rng(8)
    b, n, d = 7, 8, 3
    inputs = {"query_emb": rng.normal(size=(b, d)), "pos_emb": rng.normal(size=(b, d)), "neg_emb": rng.normal(size=(n, d)),
              "pos_log_q": np.log(rng.uniform(0.1, 1, b)), "neg_log_q": np.log(rng.uniform(0.1, 1, n)),
              "pos_ids": rng.integers(0, 4, b), "neg_ids": rng.integers(0, 4, n), "query_ids": rng.integers(0, 3, b),
              "temperature": np.asarray(0.7)}
    wrt = ["query_emb", "pos_emb", "neg_emb", "pos_log_q", "neg_log_q", "temperature"]
    options = dict(in_batch=True, label_smoothing=0.3, z_loss=0.05)
    want = _value_and_grad(backend, recloss.sampled_softmax_loss, inputs, wrt, implementation="materialized", **options)
    got = _value_and_grad(backend, recloss.sampled_softmax_loss, inputs, wrt, implementation="streaming", **options)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    for name in wrt:
        np.testing.assert_allclose(got[1][name], want[1][name], rtol=1e-10, atol=1e-13, err_msg=name)
    keys = {"query_emb": inputs["query_emb"], "key_emb": inputs["pos_emb"], "ids": inputs["pos_ids"],
            "query_ids": inputs["query_ids"]}
    options = dict(symmetric=True, label_smoothing=0.2, z_loss=0.1, temperature=0.4)
    want = _value_and_grad(backend, recloss.info_nce_loss, keys, ["query_emb", "key_emb"], implementation="materialized",
                           **options)
    got = _value_and_grad(backend, recloss.info_nce_loss, keys, ["query_emb", "key_emb"], implementation="streaming",
                          **options)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-12)
    for name in ("query_emb", "key_emb"):
        np.testing.assert_allclose(got[1][name], want[1][name], rtol=1e-10, atol=1e-13, err_msg=name)


def _penalty_gradient(backend: str, implementation: str, q, p, n, qids):
    """d/dq of sum((dL/dq)^2) with label smoothing, z-loss and query ids (a second derivative), float64."""
    kwargs = dict(in_batch=True, query_ids=None, label_smoothing=0.25, z_loss=0.05, implementation=implementation)
    if backend == "torch":
        import torch
        kwargs["query_ids"] = torch.tensor(qids)
        x = torch.tensor(q, requires_grad=True)
        grad, = torch.autograd.grad(recloss.sampled_softmax_loss(x, torch.tensor(p), torch.tensor(n), **kwargs), x,
                                    create_graph=True)
        return torch.autograd.grad((grad ** 2).sum(), x)[0].numpy()
    if backend == "jax":
        import jax
        with jax.enable_x64(True):
            kwargs["query_ids"] = jax.numpy.asarray(qids)
            f = lambda x: recloss.sampled_softmax_loss(x, jax.numpy.asarray(p), jax.numpy.asarray(n), **kwargs)  # noqa: E731
            return np.asarray(jax.grad(lambda x: (jax.grad(f)(x) ** 2).sum())(jax.numpy.asarray(q)))
    import tensorflow as tf
    kwargs["query_ids"] = tf.constant(qids)
    x = tf.constant(q)
    with tf.GradientTape() as outer:
        outer.watch(x)
        with tf.GradientTape() as inner:
            inner.watch(x)
            loss = recloss.sampled_softmax_loss(x, tf.constant(p), tf.constant(n), **kwargs)
        penalty = tf.reduce_sum(inner.gradient(loss, x) ** 2)
    return outer.gradient(penalty, x).numpy()


def test_streaming_second_derivatives_with_label_smoothing(backend: str, small_chunks, monkeypatch) -> None:
    rng = np.random.default_rng(9)
    q, p, n = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.normal(size=(5, 3))
    qids = np.array([0, 1, 0, 2, 1, 0])
    want = _penalty_gradient(backend, "materialized", q, p, n, qids)
    for store in (64 << 20, 0):
        monkeypatch.setattr(softmax_kernels, "STREAMING_STORE_BYTES", store)
        np.testing.assert_allclose(_penalty_gradient(backend, "streaming", q, p, n, qids), want, rtol=1e-9, atol=1e-12)


def test_regularisers_are_checked() -> None:
    q = np.ones((3, 2))
    for value in (-0.1, 1.0, math.nan):
        with pytest.raises(OptionError, match=rf"sampled_softmax_loss: `label_smoothing` must be a finite number in "
                                              rf"\[0, 1\); got {value!r}"):
            recloss.sampled_softmax_loss(q, q, label_smoothing=value, backend="numpy")
    with pytest.raises(OptionError, match=r"info_nce_loss: `z_loss` must be a finite number >= 0; got -1.0"):
        recloss.info_nce_loss(q, q, z_loss=-1.0, backend="numpy")


# ----------------------------------------------------------------------------------------------------------
# Rows of the same query


def test_query_ids_remove_the_rows_of_the_same_query(backend: str) -> None:
    """Each row's softmax written out over its kept columns: its own positive, the other rows' positives whose
    item id and query id both differ from its own, and the sampled negatives whose item id differs."""
    rng = np.random.default_rng(10)
    q, p, n = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    pos_ids, neg_ids, query_ids = np.array([5, 6, 7, 5, 8, 9]), np.array([6, 1, 2, 9]), np.array([0, 0, 1, 2, 2, 2])
    want = []
    for i in range(6):
        kept = [q[i] @ p[j] for j in range(6) if j == i or (pos_ids[j] != pos_ids[i] and query_ids[j] != query_ids[i])]
        kept += [q[i] @ n[k] for k in range(4) if neg_ids[k] != pos_ids[i]]
        want.append(_logsumexp(np.array(kept) / 0.5) - q[i] @ p[i] / 0.5)
    with float64(backend):
        tensors = {k: to_backend(backend, v) for k, v in dict(query_emb=q, pos_emb=p, neg_emb=n, pos_ids=pos_ids,
                                                              neg_ids=neg_ids, query_ids=query_ids).items()}
        for implementation in ("materialized", "streaming"):
            got = recloss.sampled_softmax_loss(**tensors, in_batch=True, temperature=0.5, reduction="none",
                                               implementation=implementation)
            np.testing.assert_allclose(to_numpy(got), want, rtol=1e-12, err_msg=implementation)
        # info_nce_loss: the same rule (here in the query-to-key direction).
        keys = to_numpy(recloss.info_nce_loss(tensors["query_emb"], tensors["pos_emb"], query_ids=tensors["query_ids"],
                                              temperature=0.5, reduction="none"))
    want = [_logsumexp(np.array([q[i] @ p[j] for j in range(6) if j == i or query_ids[j] != query_ids[i]]) / 0.5)
            - q[i] @ p[i] / 0.5 for i in range(6)]
    np.testing.assert_allclose(keys, want, rtol=1e-12)


def test_query_ids_are_compared_by_value_at_64_bits(backend: str) -> None:
    """Query ids beyond 2**32 that differ only in their high bits are different queries (JAX's 32-bit mode
    included: NumPy ids are coded exactly); the same call with small ids of the same pattern is equal."""
    rng = np.random.default_rng(11)
    q, p = rng.normal(size=(5, 3)).astype(np.float32), rng.normal(size=(5, 3)).astype(np.float32)
    small = np.array([0, 1, 0, 2, 1])
    wide = np.array([1 << 40, (1 << 40) + (1 << 33), 1 << 40, 3, (1 << 40) + (1 << 33)], np.int64)
    values = [to_numpy(recloss.sampled_softmax_loss(to_backend(backend, q), to_backend(backend, p), query_ids=ids,
                                                    reduction="none"))
              for ids in (small, wide)]
    np.testing.assert_allclose(values[1], values[0], rtol=1e-6)
    collapsed = wide & 0xFFFFFFFF     # what a truncation to 32 bits would compare: rows 0, 1, 2 and 4 alike
    truncated = to_numpy(recloss.sampled_softmax_loss(to_backend(backend, q), to_backend(backend, p),
                                                      query_ids=collapsed, reduction="none"))
    assert not np.allclose(truncated, values[0])


def test_query_ids_need_in_batch_candidates() -> None:
    q, n = np.ones((3, 2)), np.ones((4, 2))
    with pytest.raises(OptionError, match=r"sampled_softmax_loss: `query_ids` removes the in-batch candidates of "
                                          r"rows of the same query, and there are none"):
        recloss.sampled_softmax_loss(q, q, n, query_ids=np.arange(3), backend="numpy")


# ----------------------------------------------------------------------------------------------------------
# map and dcg beyond rax (test_ranking compares them with rax list by list)


def test_map_matches_tf_ranking_docstring_example(backend: str) -> None:
    """TF-Ranking's ``MeanAveragePrecisionMetric(topn=2)`` on labels [0, 1, 1] and scores [3, 1, 2]: 0.25."""
    value = recloss.metrics.map(to_backend(backend, np.array([[3.0, 1.0, 2.0]])),
                                to_backend(backend, np.array([[0.0, 1.0, 1.0]])), k=2)
    assert abs(float(to_numpy(value)) - 0.25) < 1e-7


def test_map_and_dcg_equal_keras_rs_per_list() -> None:
    keras_rs = pytest.importorskip("keras_rs")
    rng = np.random.default_rng(12)
    scores = rng.normal(size=(5, 6)).astype(np.float32)
    labels = rng.integers(0, 3, size=(5, 6)).astype(np.float32)
    for k in (None, 3):
        for theirs_cls, name, options in ((keras_rs.metrics.MeanAveragePrecision, "map", {"shuffle_ties": False}),
                                          (keras_rs.metrics.DCG, "dcg", {})):
            ours = np.asarray(getattr(recloss.metrics, name)(scores.astype(np.float64), labels.astype(np.float64),
                                                             k=k, reduction="none", backend="numpy"))
            for i in range(5):
                theirs = float(theirs_cls(k=k, **options)(labels[i:i + 1], scores[i:i + 1]))
                np.testing.assert_allclose(theirs, ours[i], rtol=1e-5, atol=1e-6, err_msg=f"{name} k={k} list {i}")
