# Generated from the catalogue by `python -m recloss._stubs`; do not edit.

from typing import Any, Callable, ClassVar, Literal

import keras  # type: ignore[import-untyped]

from recloss._spec import LossSpec
from recloss.kernels.sampling import FrequencyState, Negatives, QueueState


class Retrieval(keras.layers.Layer):
    """Retrieval task layer on :func:`recloss.sampled_softmax_loss`.
    """
    spec: ClassVar[LossSpec]
    options: dict[str, Any]
    def __init__(
        self,
        *,
        temperature: float = 1.0,
        in_batch: bool | None = None,
        num_hard_negatives: int | None = None,
        reduction: Literal['mean', 'sum', 'none'] = 'mean',
        implementation: Literal['auto', 'materialized', 'streaming', 'fused'] = 'auto',
        product_precision: Literal['input', 'float32'] = 'input',
        gather: bool | str | tuple[str, ...] | object | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None: ...
    def call(
        self,
        query_emb: Any,
        pos_emb: Any,
        neg_emb: Any | None = None,
        *,
        pos_log_q: Any | None = None,
        neg_log_q: Any | None = None,
        pos_ids: Any | None = None,
        neg_ids: Any | None = None,
        sample_weight: Any | None = None,
    ) -> Any: ...
    def __call__(
        self,
        query_emb: Any,
        pos_emb: Any,
        neg_emb: Any | None = None,
        *,
        pos_log_q: Any | None = None,
        neg_log_q: Any | None = None,
        pos_ids: Any | None = None,
        neg_ids: Any | None = None,
        sample_weight: Any | None = None,
    ) -> Any: ...
    def compute_output_spec(self, query_emb: Any, *args: Any, **kwargs: Any) -> Any: ...
    def get_config(self) -> dict[str, Any]: ...


class ReclossLoss(keras.losses.Loss):
    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]
    form: ClassVar[str]
    options: dict[str, Any]
    def __call__(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any: ...
    def call(self, y_true: Any, y_pred: Any) -> Any: ...
    def get_config(self) -> dict[str, Any]: ...


def loss_class(spec: LossSpec, function: Callable[..., Any]) -> type[ReclossLoss]: ...


class SigmoidCrossEntropyLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.sigmoid_cross_entropy_loss`: Sigmoid (binary) cross-entropy of positive logits against label 1 and negative logits against 0.
    """
    def __init__(
        self,
        *,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class SoftmaxLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.softmax_loss`: Softmax cross-entropy of each row's positive logit against its negative logits.
    """
    def __init__(
        self,
        *,
        temperature: float = 1.0,
        num_hard_negatives: int | None = None,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class BPRLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.bpr_loss`: Bayesian personalised ranking: the positive should score above each negative.
    """
    def __init__(
        self,
        *,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class HingeLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.hinge_loss`: Pairwise hinge (margin ranking) loss on scores.
    """
    def __init__(
        self,
        *,
        margin: float = 1.0,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class ListwiseSoftmaxLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.listwise_softmax_loss`: Listwise softmax cross-entropy (ListNet with graded labels): each list's labels against the softmax of its scores.
    """
    def __init__(
        self,
        *,
        temperature: float = 1.0,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class Poly1SoftmaxLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.poly1_softmax_loss`: Poly-1 listwise softmax: the listwise softmax loss plus epsilon (1 - p_t), rax's definition.
    """
    def __init__(
        self,
        *,
        epsilon: float = 1.0,
        temperature: float = 1.0,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class ListmleLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.listmle_loss`: ListMLE: the Plackett-Luce negative log-likelihood of the list's order by label (ties by position).
    """
    def __init__(
        self,
        *,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class ApproxNDCGLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.approx_ndcg_loss`: Minus the smooth NDCG of each list: ranks replaced by sums of sigmoids of score differences.
    """
    def __init__(
        self,
        *,
        temperature: float = 1.0,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class PairwiseLogisticLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.pairwise_logistic_loss`: Pairwise logistic (RankNet) loss over the pairs of items with different labels.
    """
    def __init__(
        self,
        *,
        lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class PairwiseHingeLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.pairwise_hinge_loss`: Pairwise hinge loss over the pairs of items with different labels.
    """
    def __init__(
        self,
        *,
        margin: float = 1.0,
        lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class PairwiseSoftZeroOneLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.pairwise_soft_zero_one_loss`: Pairwise soft zero-one loss: a sigmoid relaxation of the count of mis-ordered pairs.
    """
    def __init__(
        self,
        *,
        lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class PointwiseSigmoidLoss(ReclossLoss):
    """The ``keras.losses.Loss`` form of :func:`recloss.pointwise_sigmoid_loss`: Pointwise sigmoid cross-entropy of each item's score against its label in [0, 1], averaged over the list.
    """
    def __init__(
        self,
        *,
        reduction: Literal['sum_over_batch_size', 'sum', 'mean', 'mean_with_sample_weight', 'none'] | None = 'sum_over_batch_size',
        name: str | None = None,
        dtype: Any = None,
    ) -> None: ...


class FrequencyEstimator(keras.layers.Layer):
    """Streaming estimate of each id's log Q from the ids seen in training (Keras layer, state in non-trainable variables).
    """
    @property
    def state(self) -> FrequencyState: ...
    def __init__(
        self,
        num_buckets: int = 1048576,
        num_hashes: int = 2,
        decay: float = 0.0078125,
        *,
        gather: bool | str | tuple[str, ...] | object | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None: ...
    def call(self, ids: Any, training: bool | None = None) -> Any: ...
    def __call__(self, ids: Any, training: bool | None = None) -> Any: ...


class NegativeQueue(keras.layers.Layer):
    """A queue of the last ``size`` candidates pushed, handed to the softmax losses as shared negatives (Keras layer, state in non-trainable variables).
    """
    @property
    def state(self) -> QueueState: ...
    def __init__(
        self,
        size: int,
        dim: int,
        *,
        track_ids: bool = True,
        gather: bool | str | tuple[str, ...] | object | None = None,
        name: str | None = None,
        **kwargs: Any,
    ) -> None: ...
    def push(self, emb: Any, ids: Any = None, log_q: Any = None) -> None: ...
    def negatives(self) -> Negatives: ...
    def call(self, emb: Any, ids: Any = None, log_q: Any = None, training: bool | None = None) -> Negatives: ...
    def __call__(
        self,
        emb: Any,
        ids: Any = None,
        log_q: Any = None,
        training: bool | None = None,
    ) -> Negatives: ...


__all__ = [
    'Retrieval',
    'ReclossLoss',
    'loss_class',
    'ApproxNDCGLoss',
    'BPRLoss',
    'HingeLoss',
    'ListmleLoss',
    'ListwiseSoftmaxLoss',
    'PairwiseHingeLoss',
    'PairwiseLogisticLoss',
    'PairwiseSoftZeroOneLoss',
    'PointwiseSigmoidLoss',
    'Poly1SoftmaxLoss',
    'SigmoidCrossEntropyLoss',
    'SoftmaxLoss',
    'FrequencyEstimator',
    'NegativeQueue',
]
