"""Retrieval and ranking metrics on every backend: ``ndcg``, ``mrr``, ``recall``, ``precision``, ``hit_rate``.

Each takes ``scores`` ``[B, L]`` and ``labels`` ``[B, L]`` of one framework (or NumPy with ``backend=``), a
cutoff ``k``, an optional ``mask`` ``[B, L]``, ``sample_weight`` ``[B]`` and ``reduction``, and returns a tensor
of that framework (values only: no gradient). ``L`` may be a whole catalogue: with a ``[B, N]`` block of
query-item scores and a few relevant items per row, only each row's top ``k`` is selected, never a sort::

    scores = query_emb @ item_emb.T                       # [B, N]
    recloss.metrics.recall(scores, labels, k=100)         # labels [B, N]: 1 for each row's relevant items
    recloss.metrics.ndcg(scores, labels, k=10)

Definitions (as rax defines them; relevant = label >= 1; ranks by score among the valid items, ties by
position): see each function's docstring and the documentation's guide "Ranking losses and metrics" (docs/guide/ranking.md).
"""

from __future__ import annotations

from recloss._api import build as _build
from recloss.losses import METRICS


def _public(name: str):
    function = _build(METRICS[name])
    function.__module__ = __name__
    return function


ndcg = _public("ndcg")
mrr = _public("mrr")
recall = _public("recall")
precision = _public("precision")
hit_rate = _public("hit_rate")

__all__ = ["ndcg", "mrr", "recall", "precision", "hit_rate"]
