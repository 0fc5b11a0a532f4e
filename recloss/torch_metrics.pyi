# Generated from the catalogue by `python -m recloss._stubs`; do not edit.

from typing import Any, Callable, ClassVar

import torch

from recloss._spec import LossSpec


class MetricModule(torch.nn.Module):
    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]
    options: dict[str, Any]
    process_group: Any
    total: torch.Tensor
    count: torch.Tensor
    def compute(self) -> torch.Tensor: ...
    def reset(self) -> None: ...


def metric_class(spec: LossSpec, function: Callable[..., Any]) -> type[MetricModule]: ...


class NDCG(MetricModule):
    """The accumulating form of :func:`recloss.metrics.ndcg`: Normalised discounted cumulative gain at k.
    """
    def __init__(self, *, k: int | None = None, process_group: Any = None) -> None: ...
    def update(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None: ...
    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class MRR(MetricModule):
    """The accumulating form of :func:`recloss.metrics.mrr`: Reciprocal rank of the first relevant item (label >= 1) within the top k.
    """
    def __init__(self, *, k: int | None = None, process_group: Any = None) -> None: ...
    def update(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None: ...
    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class Recall(MetricModule):
    """The accumulating form of :func:`recloss.metrics.recall`: Share of the list's relevant items (label >= 1) ranked within the top k.
    """
    def __init__(self, *, k: int | None = None, process_group: Any = None) -> None: ...
    def update(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None: ...
    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class Precision(MetricModule):
    """The accumulating form of :func:`recloss.metrics.precision`: Share of relevant items (label >= 1) among the top k.
    """
    def __init__(self, *, k: int | None = None, process_group: Any = None) -> None: ...
    def update(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None: ...
    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class HitRate(MetricModule):
    """The accumulating form of :func:`recloss.metrics.hit_rate`: 1 if any relevant item (label >= 1) is ranked within the top k, else 0.
    """
    def __init__(self, *, k: int | None = None, process_group: Any = None) -> None: ...
    def update(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None: ...
    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class MAP(MetricModule):
    """The accumulating form of :func:`recloss.metrics.map`: Average precision at k (mean average precision over the lists), rax's definition.
    """
    def __init__(self, *, k: int | None = None, process_group: Any = None) -> None: ...
    def update(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None: ...
    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class DCG(MetricModule):
    """The accumulating form of :func:`recloss.metrics.dcg`: Discounted cumulative gain at k (not normalised), rax's definition.
    """
    def __init__(self, *, k: int | None = None, process_group: Any = None) -> None: ...
    def update(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> None: ...
    def forward(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        scores: torch.Tensor,
        labels: torch.Tensor,
        *,
        mask: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


__all__ = [
    'MetricModule',
    'metric_class',
    'NDCG',
    'MRR',
    'Recall',
    'Precision',
    'HitRate',
    'MAP',
    'DCG',
]
