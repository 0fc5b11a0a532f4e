"""The negative queue: the same slots as the NumPy reference on every backend; a queue that is not full gives the
loss of the candidates it holds (value and gradients, materialised and streaming, hard negatives), size 0 the
plain in-batch loss; accidental hits against queued items removed by id; no gradient kept; the torch module;
``jax.jit``; errors."""

from __future__ import annotations

import numpy as np
import pytest

import recloss
from recloss import sampling
from recloss._dispatch import available_backends, load_backend
from recloss.errors import BackendError, DTypeError, OptionError, ShapeError
from recloss.reference import sampling as reference

from helpers import to_backend

INSTALLED = set(available_backends())
FRAMEWORKS = [pytest.param(b, marks=pytest.mark.skipif(b not in INSTALLED, reason=f"{b} is not installed"))
              for b in ("torch", "jax", "tensorflow")]
DIM = 4


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def _pushes(rng: np.random.Generator, sizes=(7, 0, 19, 5)):
    return [(rng.normal(size=(n, DIM)).astype(np.float32), rng.integers(0, 50, n), rng.normal(size=n).astype(np.float32))
            for n in sizes]


@pytest.mark.parametrize("backend", ["numpy", *FRAMEWORKS])
def test_the_slots_follow_the_reference_and_size_zero_holds_nothing(backend):
    rng = np.random.default_rng(0)
    for size in (16, 0, 1):
        state = sampling.queue_init(size, DIM, backend=backend)
        expected = reference.queue_init(size, DIM)
        for emb, ids, log_q in _pushes(rng):
            state = sampling.queue_push(state, emb if backend == "numpy" else to_backend(backend, emb), ids,
                                        log_q=None if size == 1 else log_q)
            expected = reference.queue_push(expected, emb, ids, None if size == 1 else log_q)
            got, want = sampling.queue_negatives(state), reference.queue_negatives(expected)
            for field, a, b in zip(got._fields, got, want):
                assert np.array_equal(_numpy(a), b), (backend, size, field)
        assert _numpy(sampling.queue_negatives(state).neg_emb).shape == (size, DIM)


def _loss_inputs(rng: np.random.Generator):
    query, pos = (rng.normal(size=(6, DIM)).astype(np.float32) for _ in range(2))
    pos_ids = np.array([1, 2, 3, 4, 5, 3])
    pos_log_q = np.log(rng.uniform(0.1, 1.0, 6)).astype(np.float32)
    return query, pos, pos_ids, pos_log_q


@pytest.mark.parametrize("backend", FRAMEWORKS)
def test_a_queue_that_is_not_full_gives_the_loss_of_the_candidates_it_holds(backend):
    """5 of 12 slots filled: the loss over the queue's 12 negatives equals the loss over the 5 pushed ones, in
    value and in the gradients of the query and the positives, on the materialised and the streaming path and
    with hard negatives (more than the pushed ones: the empty slots never count); a queue of size 0 gives the
    plain in-batch loss; an empty queue (nothing pushed) too."""
    rng = np.random.default_rng(1)
    module = load_backend(backend)
    query, pos, pos_ids, pos_log_q = _loss_inputs(rng)
    emb, ids, log_q = rng.normal(size=(5, DIM)).astype(np.float32), np.array([3, 9, 8, 1, 7]), \
        np.log(rng.uniform(0.1, 1.0, 5)).astype(np.float32)
    state = sampling.queue_push(sampling.queue_init(12, DIM, backend=backend), to_backend(backend, emb), ids,
                                to_backend(backend, log_q))
    negatives = sampling.queue_negatives(state)
    empty = sampling.queue_negatives(sampling.queue_init(0, DIM, backend=backend))
    nothing_pushed = sampling.queue_negatives(sampling.queue_init(12, DIM, backend=backend))
    inputs = {"query_emb": query, "pos_emb": pos}
    for options in ({"implementation": "materialized"}, {"implementation": "streaming"},
                    {"implementation": "materialized", "num_hard_negatives": 9}):
        common = dict(in_batch=True, temperature=0.5, pos_log_q=to_backend(backend, pos_log_q),
                      pos_ids=to_backend(backend, pos_ids), **options)

        def with_queue(query_emb, pos_emb, negatives=negatives):
            return recloss.sampled_softmax_loss(query_emb, pos_emb, negatives.neg_emb, neg_ids=negatives.neg_ids,
                                                neg_log_q=negatives.neg_log_q, **common)

        def pushed_only(query_emb, pos_emb):
            return recloss.sampled_softmax_loss(query_emb, pos_emb, to_backend(backend, emb),
                                                neg_ids=to_backend(backend, ids), neg_log_q=to_backend(backend, log_q),
                                                **common)

        def in_batch_only(query_emb, pos_emb):
            return recloss.sampled_softmax_loss(query_emb, pos_emb, **common)

        value, grads = module.value_and_grad(with_queue, inputs, ["query_emb", "pos_emb"], "cpu")
        want, want_grads = module.value_and_grad(pushed_only, inputs, ["query_emb", "pos_emb"], "cpu")
        np.testing.assert_allclose(value, want, rtol=1e-6, err_msg=str(options))
        for name in grads:
            np.testing.assert_allclose(grads[name], want_grads[name], rtol=1e-5, atol=1e-7, err_msg=str(options))
        plain, plain_grads = module.value_and_grad(in_batch_only, inputs, ["query_emb", "pos_emb"], "cpu")
        for queue in (empty, nothing_pushed):
            value, grads = module.value_and_grad(lambda query_emb, pos_emb: with_queue(query_emb, pos_emb, queue),
                                                 inputs, ["query_emb", "pos_emb"], "cpu")
            np.testing.assert_allclose(value, plain, rtol=1e-6, err_msg=str(options))
            for name in grads:
                np.testing.assert_allclose(grads[name], plain_grads[name], rtol=1e-5, atol=1e-7)


def test_accidental_hits_against_queued_items_are_removed_by_id():
    """Row i's positive id in the queue: that queued candidate is not a negative of row i (reference)."""
    rng = np.random.default_rng(2)
    query, pos, pos_ids, _ = (x.astype(np.float64) if x.dtype == np.float32 else x for x in _loss_inputs(rng))
    queued = rng.normal(size=(3, DIM))
    state = sampling.queue_push(sampling.queue_init(3, DIM, backend="numpy", dtype="float64"), queued,
                                np.array([2, 40, 3]))
    negatives = sampling.queue_negatives(state)
    rows = recloss.sampled_softmax_loss(query, pos, **negatives._asdict(), pos_ids=pos_ids, reduction="none")
    for i in range(6):
        keep = [c for c, item in enumerate([2, 40, 3]) if item != pos_ids[i]]
        logits = np.concatenate([[query[i] @ pos[i]], queued[keep] @ query[i]])
        np.testing.assert_allclose(rows[i], np.log(np.sum(np.exp(logits))) - logits[0], rtol=1e-12)


# ----------------------------------------------------------------------------------------------------------
# Framework forms


def test_torch_module_holds_before_pushing_keeps_no_gradient_and_compiles():
    pytest.importorskip("torch")
    import torch
    import recloss.torch

    queue = recloss.torch.NegativeQueue(5, DIM)
    assert set(queue.state_dict()) == {"emb", "ids", "log_q", "head", "filled"}
    emb = torch.randn(3, DIM, requires_grad=True)
    held = queue(emb, torch.tensor([1, 2, 3]), torch.zeros(3))
    assert torch.all(held.neg_log_q == sampling.EMPTY_LOG_Q) and int(queue.filled) == 3   # held: before the push
    assert not queue.emb.requires_grad and torch.equal(queue.emb[:3], emb.detach())
    queue.eval()
    queue(torch.randn(2, DIM), torch.tensor([4, 5]))
    assert int(queue.filled) == 3                                                      # eval: no push
    queue.train()
    compiled = torch.compile(queue, fullgraph=True)
    eager = recloss.torch.NegativeQueue(5, DIM)
    eager.load_state_dict(queue.state_dict())
    for step in range(3):
        batch, ids = torch.randn(4, DIM), torch.arange(4) + 10 * step
        got, want = compiled(batch, ids), eager(batch, ids)
        for a, b in zip(got, want):
            assert torch.equal(a, b)
    assert torch.equal(queue.emb, eager.emb) and int(queue.head) == int(eager.head)
    untracked = recloss.torch.NegativeQueue(2, DIM, track_ids=False, dtype=torch.float64)
    untracked.push(torch.randn(1, DIM))
    assert untracked.negatives().neg_ids is None and untracked.emb.dtype == torch.float64
    assert "size=5, dim=4" in repr(queue)


def test_jax_jit_and_no_gradient_through_the_queue():
    jax = pytest.importorskip("jax")
    import jax.numpy as jnp

    state = sampling.queue_init(6, DIM)

    @jax.jit
    def step(state, query, pos, ids):
        def loss(query, pos):
            new = sampling.queue_push(state, pos, ids)
            return recloss.sampled_softmax_loss(query, pos, **sampling.queue_negatives(new)._asdict(), in_batch=True,
                                                pos_ids=ids), new
        (value, new), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(query, pos)
        return value, grads, new
    rng = np.random.default_rng(3)
    query, pos = (jnp.asarray(rng.normal(size=(4, DIM)).astype(np.float32)) for _ in range(2))
    ids = jnp.arange(4)
    value, (g_query, g_pos), state = step(state, query, pos, ids)
    # The queue holds copies of pos without gradient (row i's own removed by id): the loss with pos as constant
    # shared negatives, whose gradient reaches pos through the in-batch columns only.
    want, want_pos = jax.value_and_grad(lambda p: recloss.sampled_softmax_loss(query, p, pos, in_batch=True,
                                                                               pos_ids=ids, neg_ids=ids))(pos)
    np.testing.assert_allclose(value, want, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(g_pos), np.asarray(want_pos), rtol=1e-5, atol=1e-7)
    assert int(state.filled) == 4 and np.array_equal(np.asarray(state.ids[:4]), np.arange(4))


# ----------------------------------------------------------------------------------------------------------
# Errors


def test_bad_pushes_and_options_are_refused_in_the_same_words():
    state = sampling.queue_init(4, DIM, backend="numpy")
    cases = [
        (lambda: sampling.queue_push(state, np.ones((2, DIM + 1), np.float32), np.arange(2)), ShapeError,
         "queue_push: `emb` must have shape [n, D] with D=4 from the queue; got (2, 5)"),
        (lambda: sampling.queue_push(state, np.ones((2, DIM), np.float32)), OptionError,
         "queue_push: `ids` must be given: the queue keeps ids (track_ids=True); got None"),
        (lambda: sampling.queue_push(state, np.ones((2, DIM), np.float32), np.arange(3)), ShapeError,
         "queue_push: `ids` must have shape [n] with n=2 from `emb`; got (3,)"),
        (lambda: sampling.queue_push(state, np.ones((2, DIM), np.float32), np.ones(2)), DTypeError,
         "queue_push: `ids` must be an integer tensor"),
        (lambda: sampling.queue_push(state, np.ones((2, DIM), np.int32), np.arange(2)), DTypeError,
         "queue_push: `emb` must be a floating tensor"),
        (lambda: sampling.queue_push(sampling.queue_init(4, DIM, track_ids=False, backend="numpy"),
                                     np.ones((2, DIM), np.float32), np.arange(2)), OptionError,
         "queue_push: `ids` must be None: the queue keeps no ids (track_ids=False)"),
        (lambda: sampling.queue_init(-1, DIM), OptionError, "queue_init: `size` must be an integer >= 0; got -1"),
        (lambda: sampling.queue_init(4, 0), OptionError, "queue_init: `dim` must be an integer >= 1; got 0"),
        (lambda: sampling.queue_push(state, np.ones((2, DIM), np.float32), np.arange(2), gather="data"), OptionError,
         "queue_push: `gather='data'` needs a framework's distributed engine"),
    ]
    for call, error, message in cases:
        with pytest.raises(error) as caught:
            call()
        assert str(caught.value).startswith(message), str(caught.value)
    if "torch" in INSTALLED:
        import torch
        import recloss.torch
        queue = recloss.torch.NegativeQueue(4, DIM)
        with pytest.raises(ShapeError, match=r"NegativeQueue.push: `emb` must have shape \[n, D\] with D=4"):
            queue.push(torch.ones(2, 3), torch.arange(2))
        for other in sorted(INSTALLED - {"numpy", "torch"}):
            with pytest.raises(BackendError, match="NegativeQueue.push: `emb` must be a torch tensor"):
                queue.push(to_backend(other, np.ones((2, DIM), np.float32)), torch.arange(2))
        with pytest.raises(OptionError, match="NegativeQueue: `dtype` must be a floating torch.dtype"):
            recloss.torch.NegativeQueue(4, DIM, dtype=torch.int32)
