# Generated from the catalogue by `python -m recloss._stubs`; do not edit.

from typing import Any, Callable, Literal

from recloss._spec import LossSpec
from recloss._typing import ArrayLike


def mean(total: Any, count: Any) -> Any: ...


def metric_function(spec: LossSpec, function: Callable[..., Any]) -> Callable[..., Any]: ...


def ndcg(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int | None = None,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """``(sum_i w_i m_i, sum_i w_i)`` of :func:`recloss.metrics.ndcg`: Normalised discounted cumulative gain at k.
    """


def mrr(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int | None = None,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """``(sum_i w_i m_i, sum_i w_i)`` of :func:`recloss.metrics.mrr`: Reciprocal rank of the first relevant item (label >= 1) within the top k.
    """


def recall(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int | None = None,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """``(sum_i w_i m_i, sum_i w_i)`` of :func:`recloss.metrics.recall`: Share of the list's relevant items (label >= 1) ranked within the top k.
    """


def precision(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int | None = None,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """``(sum_i w_i m_i, sum_i w_i)`` of :func:`recloss.metrics.precision`: Share of relevant items (label >= 1) among the top k.
    """


def hit_rate(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int | None = None,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """``(sum_i w_i m_i, sum_i w_i)`` of :func:`recloss.metrics.hit_rate`: 1 if any relevant item (label >= 1) is ranked within the top k, else 0.
    """


def map(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int | None = None,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """``(sum_i w_i m_i, sum_i w_i)`` of :func:`recloss.metrics.map`: Average precision at k (mean average precision over the lists), rax's definition.
    """


def dcg(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    k: int | None = None,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
) -> tuple[Any, Any]:
    """``(sum_i w_i m_i, sum_i w_i)`` of :func:`recloss.metrics.dcg`: Discounted cumulative gain at k (not normalised), rax's definition.
    """


__all__ = [
    'mean',
    'metric_function',
    'ndcg',
    'mrr',
    'recall',
    'precision',
    'hit_rate',
    'map',
    'dcg',
]
