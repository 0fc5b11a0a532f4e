"""What each option means, checked against the same computation done by hand, on every backend.

A removed candidate changes nothing; logQ equals shifting the logits; hard negatives equal slicing the top
h; mixed sampling equals concatenating both sources; reductions and weights; the GraphLearn entry point is
the shared-negatives case; InfoNCE's options; finite triplet gradients where embeddings coincide.
"""

from __future__ import annotations

import numpy as np
import pytest

import recloss
from recloss._dispatch import load_backend

RNG = np.random.default_rng(7)
B, K, N, D = 5, 6, 7, 4


def run(backend, function, inputs, wrt=(), dtype=np.float64, **options):
    """Value and gradients (float64 NumPy) of ``function(**inputs, **options)`` on ``backend``'s CPU."""
    cast = {k: (v.astype(dtype) if isinstance(v, np.ndarray) and v.dtype.kind == "f" else v)
            for k, v in inputs.items()}
    call = lambda **t: function(**t, **options, backend=backend)  # noqa: E731
    return load_backend(backend).value_and_grad(call, cast, list(wrt), "cpu")


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=tol, atol=tol)


def embeddings():
    return {"query_emb": RNG.normal(size=(B, D)), "pos_emb": RNG.normal(size=(B, D)),
            "neg_emb": RNG.normal(size=(N, D))}


def test_removed_negative_changes_nothing(backend):
    x = embeddings()
    pos_ids = np.arange(B)
    neg_ids = np.full(N, 100)
    neg_ids[3] = pos_ids[2]  # negative 3 is row 2's positive: removed from row 2 only
    with_hit, grads = run(backend, recloss.sampled_softmax_loss, {**x, "pos_ids": pos_ids, "neg_ids": neg_ids},
                          ["query_emb", "neg_emb"], reduction="none")
    without, _ = run(backend, recloss.sampled_softmax_loss, x, reduction="none")
    row2, row2_grads = run(backend, recloss.sampled_softmax_loss,
                           {"query_emb": x["query_emb"][2:3], "pos_emb": x["pos_emb"][2:3],
                            "neg_emb": np.delete(x["neg_emb"], 3, axis=0)}, ["query_emb"], reduction="none")
    close(with_hit[2], row2[0])
    close(np.delete(with_hit, 2), np.delete(without, 2))
    close(grads["query_emb"][2], row2_grads["query_emb"][0])


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_removal_is_exact_in_half_precision(backend, dtype):
    from recloss.parity import cast_inputs
    spec = recloss.softmax_loss.spec
    pos = RNG.normal(size=B)
    neg = RNG.normal(size=(B, K)) * 3
    mask = RNG.random((B, K)) < 0.5
    mask[1] = False
    huge = np.where(mask, neg, 60000.0)  # removed entries may hold anything, even near the float16 maximum
    inputs = cast_inputs({"pos_logit": pos, "neg_logit": huge, "neg_mask": mask}, spec, dtype)
    value, grads = load_backend(backend).value_and_grad(
        lambda **t: recloss.softmax_loss(**t, reduction="none", backend=backend), inputs, ["neg_logit"], "cpu")
    kept = cast_inputs({"pos_logit": pos, "neg_logit": neg}, spec, dtype)
    expected = recloss.softmax_loss(np.asarray(kept["pos_logit"], np.float64),
                                    np.asarray(kept["neg_logit"], np.float64), neg_mask=mask, reduction="none")
    close(value, expected, 1e-5)
    assert value[1] == 0.0
    assert np.all(grads["neg_logit"][~mask] == 0.0) and np.all(np.isfinite(grads["neg_logit"]))


def test_log_q_equals_shifting_the_logits_by_hand(backend):
    pos, neg = RNG.normal(size=B), RNG.normal(size=(B, K))
    pos_q, neg_q = np.log(RNG.uniform(0.01, 1, B)), np.log(RNG.uniform(0.01, 1, (B, K)))
    t = 0.3
    corrected, _ = run(backend, recloss.softmax_loss, {"pos_logit": pos, "neg_logit": neg, "pos_log_q": pos_q,
                                                       "neg_log_q": neg_q}, temperature=t)
    by_hand, _ = run(backend, recloss.softmax_loss, {"pos_logit": pos - t * pos_q, "neg_logit": neg - t * neg_q},
                     temperature=t)
    close(corrected, by_hand)


def test_hard_negatives_equal_slicing_the_top_h_by_hand(backend):
    pos, neg = RNG.normal(size=B), RNG.normal(size=(B, K))
    mask = RNG.random((B, K)) < 0.6
    h = 2
    mined, _ = run(backend, recloss.softmax_loss, {"pos_logit": pos, "neg_logit": neg, "neg_mask": mask},
                   num_hard_negatives=h, reduction="none")
    for i in range(B):
        top = np.sort(neg[i][mask[i]])[::-1][:h]
        row, _ = run(backend, recloss.softmax_loss, {"pos_logit": pos[i:i + 1], "neg_logit": top[None, :]},
                     reduction="none")
        close(mined[i], row[0])


def test_mixed_sampling_equals_concatenating_both_sources(backend):
    x = embeddings()
    q, p, n = x["query_emb"], x["pos_emb"], x["neg_emb"]
    mixed, _ = run(backend, recloss.sampled_softmax_loss, x, in_batch=True, temperature=0.5)
    logits = np.concatenate([q @ p.T, q @ n.T], axis=1)
    mask = np.concatenate([~np.eye(B, dtype=bool), np.ones((B, N), bool)], axis=1)
    by_hand, _ = run(backend, recloss.softmax_loss, {"pos_logit": np.sum(q * p, 1), "neg_logit": logits,
                                                     "neg_mask": mask}, temperature=0.5)
    close(mixed, by_hand)


def test_in_batch_is_the_default_without_negatives(backend):
    x = embeddings()
    del x["neg_emb"]
    default, _ = run(backend, recloss.sampled_softmax_loss, x)
    explicit, _ = run(backend, recloss.sampled_softmax_loss, x, in_batch=True)
    close(default, explicit)


def test_row_with_no_candidate_left_has_loss_zero_and_zero_gradient(backend):
    pos, neg = RNG.normal(size=B), RNG.normal(size=(B, K))
    mask = np.ones((B, K), bool)
    mask[0] = False
    rows, grads = run(backend, recloss.softmax_loss, {"pos_logit": pos, "neg_logit": neg, "neg_mask": mask},
                      ["pos_logit", "neg_logit"], reduction="none")
    assert rows[0] == 0.0 and grads["pos_logit"][0] == 0.0 and np.all(grads["neg_logit"][0] == 0.0)


def test_reductions_and_weights(backend):
    pos, neg = RNG.normal(size=B), RNG.normal(size=(B, K))
    w = RNG.uniform(0, 2, B)
    rows, _ = run(backend, recloss.bpr_loss, {"pos_logit": pos, "neg_logit": neg}, reduction="none")
    weighted, _ = run(backend, recloss.bpr_loss, {"pos_logit": pos, "neg_logit": neg, "sample_weight": w},
                      reduction="none")
    total, _ = run(backend, recloss.bpr_loss, {"pos_logit": pos, "neg_logit": neg, "sample_weight": w},
                   reduction="sum")
    mean, _ = run(backend, recloss.bpr_loss, {"pos_logit": pos, "neg_logit": neg, "sample_weight": w})
    zero, _ = run(backend, recloss.bpr_loss, {"pos_logit": pos, "neg_logit": neg, "sample_weight": 0 * w})
    close(weighted, w * rows)
    close(total, np.sum(w * rows))
    close(mean, np.sum(w * rows) / np.sum(w))
    assert zero == 0.0


def test_sigmoid_rows_average_to_graphlearns_value(backend):
    pos, neg = RNG.normal(size=B), RNG.normal(size=(B, K))
    rows, _ = run(backend, recloss.sigmoid_cross_entropy_loss, {"pos_logit": pos, "neg_logit": neg},
                  reduction="none")
    close(rows, np.logaddexp(0, -pos) + np.mean(np.logaddexp(0, neg), axis=1))
    mean, _ = run(backend, recloss.sigmoid_cross_entropy_loss, {"pos_logit": pos, "neg_logit": neg})
    close(mean, np.mean(np.logaddexp(0, -pos)) + np.mean(np.logaddexp(0, neg)))


def test_graphlearn_entry_point_is_sampled_softmax_with_shared_negatives(backend):
    x = embeddings()
    w = RNG.uniform(0, 1, B)
    graphlearn, _ = run(backend, recloss.unsupervised_softmax_cross_entropy_loss,
                        {"src_emb": x["query_emb"], "pos_emb": x["pos_emb"], "neg_emb": x["neg_emb"],
                         "sample_weight": w}, temperature=0.4)
    sampled, _ = run(backend, recloss.sampled_softmax_loss, {**x, "sample_weight": w}, temperature=0.4)
    close(graphlearn, sampled)


def test_info_nce_options(backend):
    q, k = RNG.normal(size=(B, D)), RNG.normal(size=(B, D))
    forward, _ = run(backend, recloss.info_nce_loss, {"query_emb": q, "key_emb": k}, reduction="none")
    backward, _ = run(backend, recloss.info_nce_loss, {"query_emb": k, "key_emb": q}, reduction="none")
    both, _ = run(backend, recloss.info_nce_loss, {"query_emb": q, "key_emb": k}, symmetric=True, reduction="none")
    close(both, 0.5 * (forward + backward))
    cosine, _ = run(backend, recloss.info_nce_loss, {"query_emb": q, "key_emb": k}, normalize=True)
    scaled, _ = run(backend, recloss.info_nce_loss, {"query_emb": 3 * q, "key_emb": 0.5 * k}, normalize=True)
    close(cosine, scaled, 1e-10)
    ids = np.array([0, 1, 0, 2, 3])  # rows 0 and 2 share an id: neither is the other's negative
    deduplicated, _ = run(backend, recloss.info_nce_loss, {"query_emb": q, "key_emb": k, "ids": ids},
                          reduction="none")
    mask = (ids[:, None] != ids[None, :])
    logits = q @ k.T / 0.07
    by_hand, _ = run(backend, recloss.softmax_loss, {"pos_logit": np.diag(logits), "neg_logit": logits,
                                                     "neg_mask": mask}, reduction="none")
    close(deduplicated, by_hand, 1e-10)


@pytest.mark.parametrize("distance", ["l2", "squared_l2", "l1", "cosine"])
def test_triplet_gradient_is_finite_where_embeddings_coincide(backend, distance):
    s = RNG.normal(size=(B, D))
    n = RNG.normal(size=(B, K, D))
    n[:, 0] = s  # a negative equal to its anchor
    value, grads = run(backend, recloss.triplet_margin_loss, {"src_emb": s, "pos_emb": s.copy(), "neg_emb": n},
                       ["src_emb", "pos_emb", "neg_emb"], distance=distance, margin=0.5)
    assert np.isfinite(value)
    assert all(np.all(np.isfinite(g)) for g in grads.values())


def test_pairwise_losses_by_hand(backend):
    pos, neg = RNG.normal(size=B), RNG.normal(size=(B, K))
    bpr, _ = run(backend, recloss.bpr_loss, {"pos_logit": pos, "neg_logit": neg}, reduction="none")
    close(bpr, np.mean(np.logaddexp(0, neg - pos[:, None]), axis=1))
    hinge, _ = run(backend, recloss.hinge_loss, {"pos_logit": pos, "neg_logit": neg}, margin=0.3,
                   reduction="none")
    close(hinge, np.mean(np.maximum(0, 0.3 - pos[:, None] + neg), axis=1))


def test_removed_entries_may_hold_anything_but_a_kept_infinity_poisons(backend):
    pos, neg = RNG.normal(size=B), RNG.normal(size=(B, K))
    mask = RNG.random((B, K)) < 0.6
    mask[:, 0] = False
    dirty = neg.copy()
    dirty[:, 0] = np.inf
    clean, _ = run(backend, recloss.softmax_loss, {"pos_logit": pos, "neg_logit": neg, "neg_mask": mask})
    masked, _ = run(backend, recloss.softmax_loss, {"pos_logit": pos, "neg_logit": dirty, "neg_mask": mask})
    close(masked, clean)
    mask[0, 0] = True  # the infinity now takes part: no silently finite loss
    poisoned, _ = run(backend, recloss.softmax_loss, {"pos_logit": pos, "neg_logit": dirty, "neg_mask": mask},
                      reduction="none")
    assert np.all(np.isnan(poisoned))
