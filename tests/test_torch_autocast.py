"""torch.autocast around the retrieval softmax: the streaming path computes what the materialised one does.

Under ``torch.autocast`` the materialised path's ``[B, M]`` product runs in the autocast dtype (autocast casts
``mm``); the streaming path's custom Function casts its chunks' products to that dtype too, keeps the rest of
its arithmetic in float32 (autocast is off inside it, forward and backward), and so gives the materialised
path's value (the same rounded scores) and its gradients to the autocast dtype's precision. Both are also
checked against a plain float64 formula.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

import recloss  # noqa: E402
from recloss.kernels import softmax as kernels  # noqa: E402

B, N, D = 24, 30, 8
#: Relative error of the gradients (largest entry) that products rounded to the dtype's mantissa allow.
GRADIENT_TOLERANCE = {torch.bfloat16: 3e-2, torch.float16: 4e-3}


def _data(seed: int = 0) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(seed)
    tensor = lambda *shape: torch.tensor(rng.normal(0.0, 0.7, size=shape))  # noqa: E731
    return {"query_emb": tensor(B, D), "pos_emb": tensor(B, D), "neg_emb": tensor(N, D),
            "pos_log_q": torch.tensor(np.log(rng.uniform(0.05, 1.0, B))),
            "neg_log_q": torch.tensor(np.log(rng.uniform(0.05, 1.0, N))),
            "pos_ids": torch.tensor(rng.integers(0, 6, B)), "neg_ids": torch.tensor(rng.integers(0, 6, N))}


def _plain(query_emb, pos_emb, neg_emb, pos_log_q, neg_log_q, pos_ids, neg_ids):
    """The mixed softmax (in-batch and shared negatives, logQ, accidental hits removed by id) in plain torch:
    row i's positive is column i; a candidate with row i's id (other than the positive) is removed."""
    logits = query_emb @ torch.cat([pos_emb, neg_emb]).T - torch.cat([pos_log_q, neg_log_q])
    removed = pos_ids[:, None] == torch.cat([pos_ids, neg_ids])[None, :]
    removed[torch.arange(B), torch.arange(B)] = False
    return F.cross_entropy(logits.masked_fill(removed, float("-inf")), torch.arange(B))


def _loss(data: dict, implementation: str):
    return recloss.sampled_softmax_loss(data["query_emb"], data["pos_emb"], data["neg_emb"], in_batch=True,
                                        pos_log_q=data["pos_log_q"], neg_log_q=data["neg_log_q"],
                                        pos_ids=data["pos_ids"], neg_ids=data["neg_ids"],
                                        implementation=implementation)


def _run(data: dict, implementation: str, dtype, create_graph: bool = False):
    """Value and gradients (query, positive and negative embeddings) under autocast (dtype None: without)."""
    leaves = {k: v.float().requires_grad_(k.endswith("emb")) if v.is_floating_point() else v for k, v in data.items()}
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        value = _loss(leaves, implementation)
    wrt = [leaves["query_emb"], leaves["pos_emb"], leaves["neg_emb"]]
    grads = torch.autograd.grad(value, wrt, create_graph=create_graph)
    return value, grads, wrt


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max())


@pytest.fixture(params=["chunks kept from the forward", "chunks recomputed"])
def chunking(request, monkeypatch):
    monkeypatch.setattr(kernels, "STREAMING_CHUNK", 7)    # 54 columns: 8 chunks, the last one short
    if request.param == "chunks recomputed":
        monkeypatch.setattr(kernels, "STREAMING_STORE_BYTES", 0)
    return request.param


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_streaming_under_autocast_matches_materialized(dtype, chunking) -> None:
    data = _data()
    expected = {k: v.clone().requires_grad_(k.endswith("emb")) if v.is_floating_point() else v
                for k, v in data.items()}
    plain = _plain(**expected)
    plain_grads = torch.autograd.grad(plain, [expected[k] for k in ("query_emb", "pos_emb", "neg_emb")])
    value, grads, _ = _run(data, "streaming", dtype)
    value_m, grads_m, _ = _run(data, "materialized", dtype)
    value_f32, _, _ = _run(data, "streaming", None)
    assert value.dtype == value_m.dtype == torch.float32
    value, value_m, value_f32, plain = (float(x.detach()) for x in (value, value_m, value_f32, plain))
    # The same products rounded to the autocast dtype: the same value, to float32 summation order ...
    assert abs(value - value_m) <= 2e-6 * abs(value_m)
    # ... and not the float32 products' value (the products really ran in the autocast dtype).
    assert abs(value - value_f32) > 10 * abs(value - value_m)
    assert abs(value - plain) <= 1e-3 * abs(plain)
    for got, materialized, want in zip(grads, grads_m, plain_grads):
        assert got.dtype == torch.float32
        assert _relative(got, materialized) <= GRADIENT_TOLERANCE[dtype]
        assert _relative(got, want) <= GRADIENT_TOLERANCE[dtype]


def test_second_derivatives_and_autocast_in_the_backward(chunking) -> None:
    """Gradients of gradients under autocast (the differentiable backward casts its products too), and a
    backward run inside the autocast region (CPU autograd runs it on the caller's thread, under autocast)."""
    data = _data(1)
    results = {}
    for implementation in ("streaming", "materialized"):
        _, (grad_q, _, _), wrt = _run(data, implementation, torch.bfloat16, create_graph=True)
        results[implementation] = torch.autograd.grad((grad_q ** 2).sum(), wrt)
    for got, want in zip(results["streaming"], results["materialized"]):
        assert _relative(got, want) <= 5e-2
    leaves = {k: v.float().requires_grad_(k.endswith("emb")) if v.is_floating_point() else v for k, v in data.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = torch.autograd.grad(_loss(leaves, "streaming"), leaves["query_emb"])[0]
    _, (outside, _, _), _ = _run(data, "streaming", torch.bfloat16)
    assert inside.dtype == torch.float32 and torch.equal(inside, outside)
