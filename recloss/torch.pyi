# Generated from the catalogue by `python -m recloss._stubs`; do not edit.

from typing import Any, Callable, ClassVar, Literal

import torch

from recloss._spec import LossSpec
from recloss._typing import TensorLike
from recloss.kernels.sampling import FrequencyState, Negatives, QueueState


class LossModule(torch.nn.Module):
    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]
    options: dict[str, Any]
    learn_temperature: bool
    logit_scale: torch.nn.Parameter
    @property
    def temperature(self) -> Any: ...
    def extra_repr(self) -> str: ...


def module_class(spec: LossSpec, function: Callable[..., Any]) -> type[LossModule]: ...


class SigmoidCrossEntropyLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.sigmoid_cross_entropy_loss`: Sigmoid (binary) cross-entropy of positive logits against label 1 and negative logits against 0.
    """
    def __init__(self, *, reduction: Literal['mean', 'sum', 'none'] = 'mean') -> None: ...
    def forward(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class UnsupervisedSoftmaxCrossEntropyLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.unsupervised_softmax_cross_entropy_loss`: GraphLearn's softmax cross-entropy with negatives shared by the whole batch (two-tower models).
    """
    def __init__(
        self,
        *,
        temperature: float | TensorLike = 1.0,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        implementation: Literal['auto', 'materialized', 'streaming', 'fused'] = 'auto',
        product_precision: Literal['input', 'float32'] = 'input',
        gather: bool | str | tuple[str, ...] | object | None = None,
        learn_temperature: bool = False,
    ) -> None: ...
    def forward(
        self,
        src_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        src_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class SoftmaxLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.softmax_loss`: Softmax cross-entropy of each row's positive logit against its negative logits.
    """
    def __init__(
        self,
        *,
        temperature: float | TensorLike = 1.0,
        num_hard_negatives: int | None = None,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        learn_temperature: bool = False,
    ) -> None: ...
    def forward(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        neg_mask: torch.Tensor | None = None,
        pos_log_q: torch.Tensor | None = None,
        neg_log_q: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        neg_mask: torch.Tensor | None = None,
        pos_log_q: torch.Tensor | None = None,
        neg_log_q: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class SampledSoftmaxLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.sampled_softmax_loss`: Sampled / in-batch softmax for two-tower retrieval, with logQ correction, accidental-hit removal and hard negatives.
    """
    def __init__(
        self,
        *,
        temperature: float | TensorLike = 1.0,
        in_batch: bool | None = None,
        num_hard_negatives: int | None = None,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        implementation: Literal['auto', 'materialized', 'streaming', 'fused'] = 'auto',
        product_precision: Literal['input', 'float32'] = 'input',
        gather: bool | str | tuple[str, ...] | object | None = None,
        learn_temperature: bool = False,
    ) -> None: ...
    def forward(
        self,
        query_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor | None = None,
        *,
        pos_log_q: torch.Tensor | None = None,
        neg_log_q: torch.Tensor | None = None,
        pos_ids: torch.Tensor | None = None,
        neg_ids: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        query_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor | None = None,
        *,
        pos_log_q: torch.Tensor | None = None,
        neg_log_q: torch.Tensor | None = None,
        pos_ids: torch.Tensor | None = None,
        neg_ids: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class InfoNCELoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.info_nce_loss`: In-batch contrastive InfoNCE: row i's key is its positive, the other keys its negatives.
    """
    def __init__(
        self,
        *,
        temperature: float | TensorLike = 0.07,
        symmetric: bool = False,
        normalize: bool = False,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        implementation: Literal['auto', 'materialized', 'streaming', 'fused'] = 'auto',
        product_precision: Literal['input', 'float32'] = 'input',
        gather: bool | str | tuple[str, ...] | object | None = None,
        learn_temperature: bool = False,
    ) -> None: ...
    def forward(
        self,
        query_emb: torch.Tensor,
        key_emb: torch.Tensor,
        *,
        ids: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        query_emb: torch.Tensor,
        key_emb: torch.Tensor,
        *,
        ids: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class BPRLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.bpr_loss`: Bayesian personalised ranking: the positive should score above each negative.
    """
    def __init__(self, *, reduction: Literal['mean', 'sum', 'none'] = 'mean') -> None: ...
    def forward(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class HingeLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.hinge_loss`: Pairwise hinge (margin ranking) loss on scores.
    """
    def __init__(self, *, margin: float = 1.0, reduction: Literal['mean', 'sum', 'none'] = 'mean') -> None: ...
    def forward(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        pos_logit: torch.Tensor,
        neg_logit: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class TripletMarginLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.triplet_margin_loss`: Triplet margin loss on embeddings with a choice of distance.
    """
    def __init__(
        self,
        *,
        margin: float = 1.0,
        distance: Literal['l2', 'squared_l2', 'l1', 'cosine'] = 'l2',
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
    ) -> None: ...
    def forward(
        self,
        src_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...
    def __call__(
        self,
        src_emb: torch.Tensor,
        pos_emb: torch.Tensor,
        neg_emb: torch.Tensor,
        *,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor: ...


class ListwiseSoftmaxLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.listwise_softmax_loss`: Listwise softmax cross-entropy (ListNet with graded labels): each list's labels against the softmax of its scores.
    """
    def __init__(
        self,
        *,
        temperature: float | TensorLike = 1.0,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        learn_temperature: bool = False,
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


class Poly1SoftmaxLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.poly1_softmax_loss`: Poly-1 listwise softmax: the listwise softmax loss plus epsilon (1 - p_t), rax's definition.
    """
    def __init__(
        self,
        *,
        epsilon: float = 1.0,
        temperature: float | TensorLike = 1.0,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        learn_temperature: bool = False,
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


class ListmleLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.listmle_loss`: ListMLE: the Plackett-Luce negative log-likelihood of the list's order by label (ties by position).
    """
    def __init__(self, *, reduction: Literal['mean', 'sum', 'none'] = 'mean') -> None: ...
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


class ApproxNDCGLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.approx_ndcg_loss`: Minus the smooth NDCG of each list: ranks replaced by sums of sigmoids of score differences.
    """
    def __init__(
        self,
        *,
        temperature: float | TensorLike = 1.0,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        learn_temperature: bool = False,
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


class PairwiseLogisticLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.pairwise_logistic_loss`: Pairwise logistic (RankNet) loss over the pairs of items with different labels.
    """
    def __init__(
        self,
        *,
        lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
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


class PairwiseHingeLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.pairwise_hinge_loss`: Pairwise hinge loss over the pairs of items with different labels.
    """
    def __init__(
        self,
        *,
        margin: float = 1.0,
        lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
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


class PairwiseSoftZeroOneLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.pairwise_soft_zero_one_loss`: Pairwise soft zero-one loss: a sigmoid relaxation of the count of mis-ordered pairs.
    """
    def __init__(
        self,
        *,
        lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
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


class PointwiseSigmoidLoss(LossModule):
    """The ``torch.nn.Module`` form of :func:`recloss.pointwise_sigmoid_loss`: Pointwise sigmoid cross-entropy of each item's score against its label in [0, 1], averaged over the list.
    """
    def __init__(self, *, reduction: Literal['mean', 'sum', 'none'] = 'mean') -> None: ...
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


class FrequencyEstimator(torch.nn.Module):
    """Streaming estimate of each id's log Q from the ids seen in training (``torch.nn.Module``, state in buffers).
    """
    counts: torch.Tensor
    norm: torch.Tensor
    decay: torch.Tensor
    gather: Any
    @property
    def state(self) -> FrequencyState: ...
    def __init__(
        self,
        num_buckets: int = 1048576,
        num_hashes: int = 2,
        decay: float = 0.0078125,
        *,
        gather: bool | str | tuple[str, ...] | object | None = None,
    ) -> None: ...
    def forward(self, ids: torch.Tensor) -> torch.Tensor: ...
    def __call__(self, ids: torch.Tensor) -> torch.Tensor: ...


class NegativeQueue(torch.nn.Module):
    """A queue of the last ``size`` candidates pushed, handed to the softmax losses as shared negatives (``torch.nn.Module``, state in buffers).
    """
    emb: torch.Tensor
    ids: torch.Tensor | None
    log_q: torch.Tensor
    head: torch.Tensor
    filled: torch.Tensor
    gather: Any
    track_ids: bool
    @property
    def state(self) -> QueueState: ...
    def __init__(
        self,
        size: int,
        dim: int,
        *,
        dtype: torch.dtype = ...,
        track_ids: bool = True,
        gather: bool | str | tuple[str, ...] | object | None = None,
    ) -> None: ...
    def push(
        self,
        emb: torch.Tensor,
        ids: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> None: ...
    def negatives(self) -> Negatives: ...
    def forward(
        self,
        emb: torch.Tensor,
        ids: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> Negatives: ...
    def __call__(
        self,
        emb: torch.Tensor,
        ids: torch.Tensor | None = None,
        log_q: torch.Tensor | None = None,
    ) -> Negatives: ...


__all__ = [
    'LossModule',
    'ApproxNDCGLoss',
    'BPRLoss',
    'HingeLoss',
    'InfoNCELoss',
    'ListmleLoss',
    'ListwiseSoftmaxLoss',
    'PairwiseHingeLoss',
    'PairwiseLogisticLoss',
    'PairwiseSoftZeroOneLoss',
    'PointwiseSigmoidLoss',
    'Poly1SoftmaxLoss',
    'SampledSoftmaxLoss',
    'SigmoidCrossEntropyLoss',
    'SoftmaxLoss',
    'TripletMarginLoss',
    'UnsupervisedSoftmaxCrossEntropyLoss',
    'FrequencyEstimator',
    'NegativeQueue',
]
