# Generated from the catalogue by `python -m recloss._stubs`; do not edit.

from typing import Any, Callable, ClassVar

import keras  # type: ignore[import-untyped]

from recloss._spec import LossSpec


class ReclossMetric(keras.metrics.Mean):
    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]
    options: dict[str, Any]
    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any: ...
    def result(self) -> Any: ...
    def reset_state(self) -> None: ...
    def get_config(self) -> dict[str, Any]: ...


def metric_class(spec: LossSpec, function: Callable[..., Any]) -> type[ReclossMetric]: ...


class NDCG(ReclossMetric):
    """The ``keras.metrics.Metric`` form of :func:`recloss.metrics.ndcg`: Normalised discounted cumulative gain at k.
    """
    def __init__(self, *, k: int | None = None, name: str | None = None, dtype: Any = None) -> None: ...


class MRR(ReclossMetric):
    """The ``keras.metrics.Metric`` form of :func:`recloss.metrics.mrr`: Reciprocal rank of the first relevant item (label >= 1) within the top k.
    """
    def __init__(self, *, k: int | None = None, name: str | None = None, dtype: Any = None) -> None: ...


class Recall(ReclossMetric):
    """The ``keras.metrics.Metric`` form of :func:`recloss.metrics.recall`: Share of the list's relevant items (label >= 1) ranked within the top k.
    """
    def __init__(self, *, k: int | None = None, name: str | None = None, dtype: Any = None) -> None: ...


class Precision(ReclossMetric):
    """The ``keras.metrics.Metric`` form of :func:`recloss.metrics.precision`: Share of relevant items (label >= 1) among the top k.
    """
    def __init__(self, *, k: int | None = None, name: str | None = None, dtype: Any = None) -> None: ...


class HitRate(ReclossMetric):
    """The ``keras.metrics.Metric`` form of :func:`recloss.metrics.hit_rate`: 1 if any relevant item (label >= 1) is ranked within the top k, else 0.
    """
    def __init__(self, *, k: int | None = None, name: str | None = None, dtype: Any = None) -> None: ...


class MAP(ReclossMetric):
    """The ``keras.metrics.Metric`` form of :func:`recloss.metrics.map`: Average precision at k (mean average precision over the lists), rax's definition.
    """
    def __init__(self, *, k: int | None = None, name: str | None = None, dtype: Any = None) -> None: ...


class DCG(ReclossMetric):
    """The ``keras.metrics.Metric`` form of :func:`recloss.metrics.dcg`: Discounted cumulative gain at k (not normalised), rax's definition.
    """
    def __init__(self, *, k: int | None = None, name: str | None = None, dtype: Any = None) -> None: ...


__all__ = [
    'ReclossMetric',
    'metric_class',
    'NDCG',
    'MRR',
    'Recall',
    'Precision',
    'HitRate',
    'MAP',
    'DCG',
]
