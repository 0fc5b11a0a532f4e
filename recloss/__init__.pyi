# Generated from the catalogue by `python -m recloss._stubs`; do not edit.
"""recloss: recommendation and retrieval training losses for TensorFlow, PyTorch and JAX.

Each loss takes tensors of one framework and returns a tensor of that framework (gradients flow natively),
or takes NumPy arrays with ``backend=``. ``import recloss`` imports none of the frameworks.
"""

from typing import Literal

from recloss._typing import ArrayLike, Tensor, TensorLike
from recloss import metrics as metrics
from recloss import sampling as sampling
from recloss._dispatch import available_backends as available_backends
from recloss.errors import BackendError as BackendError
from recloss.errors import BackendUnavailableError as BackendUnavailableError
from recloss.errors import DTypeError as DTypeError
from recloss.errors import OptionError as OptionError
from recloss.errors import ReclossError as ReclossError
from recloss.errors import ShapeError as ShapeError
from recloss.losses import CATALOGUE as CATALOGUE
from recloss.parity import Report as Report
from recloss.parity import validate as validate
from recloss.parity_distributed import validate_distributed as validate_distributed

__version__: str

def sigmoid_cross_entropy_loss(
    pos_logit: ArrayLike,
    neg_logit: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Sigmoid (binary) cross-entropy of positive logits against label 1 and negative logits against 0.

    Math:
        l_i = softplus(-pos_i) + mean_k softplus(neg_ik);  with `neg_logit` [M] (M != B): loss = mean_i
        softplus(-pos_i) + mean_m softplus(neg_m)  (GraphLearn's value in every case)

    Args:
        pos_logit: ``[B]`` float. Logits of the positive pairs.
        neg_logit: ``[B] or [B, K] or [M]`` float. Logits of the negative pairs: one or K per row, or any M of them (then only the default reduction is defined).
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.sigmoid_cross_entropy_loss(pos_logit, neg_logit)

    References:
        - GraphLearn, nn/tf/loss.py::sigmoid_cross_entropy_loss
    """


def unsupervised_softmax_cross_entropy_loss(
    src_emb: ArrayLike,
    pos_emb: ArrayLike,
    neg_emb: ArrayLike,
    temperature: float | TensorLike = 1.0,
    *,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    implementation: Literal['auto', 'materialized', 'streaming', 'fused'] = 'auto',
    product_precision: Literal['input', 'float32'] = 'input',
    gather: bool | str | tuple[str, ...] | object | None = None,
    shard_negatives: bool | str | tuple[str, ...] | object | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """GraphLearn's softmax cross-entropy with negatives shared by the whole batch (two-tower models).

    Math:
        z_i = [src_i . pos_i, src_i . neg_1, ..., src_i . neg_N] / T;  l_i = logsumexp(z_i) - z_i0
        (GraphLearn: -log(softmax(z_i)[0] + 1e-12), which floors at 27.63);  label_smoothing eps: l_i = (1 -
        eps)(lse_i - s_pos) + eps (lse_i - mean of the n_i kept s);  z_loss c: l_i += c lse_i^2  (lse_i =
        logsumexp of the row's kept candidates)

    Args:
        src_emb: ``[B, D]`` float. Source (query) embeddings.
        pos_emb: ``[B, D]`` float. Embedding of each row's positive destination.
        neg_emb: ``[N, D]`` float. Negative destinations shared by every row (N is often B * neg_num).
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        temperature: default ``1.0``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        label_smoothing: default ``0.0``. Label smoothing ``eps`` in [0, 1): the target puts ``1 - eps`` on the positive and spreads ``eps`` uniformly over the row's n kept candidates, the positive included (removed candidates get none), as ``torch.nn.functional.cross_entropy(label_smoothing=)`` does over its classes: ``l_i = (1 - eps) (lse_i - s_pos) + eps (lse_i - mean of the n kept s)``. A row with only its positive left has 0 from both terms.
        z_loss: default ``0.0``. Coefficient ``c >= 0`` of the z-loss ``c lse_i^2`` added to each row, ``lse_i`` the log-sum-exp of the row's kept candidates (the positive included), as PaLM and Liger's ``lse_square_scale`` do: it keeps the softmax normaliser near 1, for bfloat16 training.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        implementation: default ``'auto'``. ``"materialized"`` builds the ``[B, N]`` logits block; ``"streaming"`` computes each row's logsumexp over chunks of 4096 negatives with a backward that recomputes each chunk's scores (kept from the forward instead when the whole block fits in 64 MiB; memory O(B x chunk), never the block); ``"fused"`` runs GPU kernels that compute each row's logsumexp over candidate blocks on chip and recompute the scores blockwise in the backward (Triton on CUDA tensors with PyTorch, Pallas on GPU arrays with JAX; float32, bfloat16 or float16 inputs read as they are, float32 accumulation; an error on TensorFlow, on a CPU, with float64 inputs, ``[B, K, D]`` negatives or ``num_hard_negatives``); ``"auto"`` picks "fused" where it applies, else streams when B times the number of candidates is at least 2**22 (under torch.compile, where the streaming path cannot keep its chunks, only above 64 MiB of block). Per-row ``[B, K, D]`` negatives and ``num_hard_negatives`` always use the materialised path.
        product_precision: default ``'input'``. For float16 and bfloat16 embeddings: ``"input"`` runs the matrix products in the inputs' precision with float32 accumulation (and a float32 result where the framework offers one: JAX everywhere, torch on CUDA; torch on the CPU and TensorFlow round bfloat16 products to bfloat16 and multiply float16 in float32, which cannot overflow); ``"float32"`` casts the embeddings to float32 first, as recloss did before. Everything after the products runs in float32 either way. No effect on float32/float64 inputs.
        gather: default ``None``. Cross-device negatives: score each local row against the candidates of every worker (the in-batch positives with `pos_log_q`/`pos_ids`, the shared ``[N, D]`` negatives with `neg_log_q`/`neg_ids`; per-row ``[B, K, D]`` negatives stay local). ``None``/``False``: the local batch only. torch: ``True`` (default process group) or a ``torch.distributed.ProcessGroup``; every rank returns the global loss (DDP's gradient averaging then gives the single-device gradient). JAX: the mesh axis name (or tuple of names) of the enclosing ``shard_map``/``pmap``; the global loss on every device. TensorFlow: ``True`` inside ``strategy.run``; each replica returns its share ``sum_i w_i l_i / sum_global w`` (sum the shares, as ``apply_gradients`` sums gradients). ``"none"`` returns the local rows, each scored against the global candidates.
        shard_negatives: default ``None``. A catalogue split across workers: `neg_emb` ``[N, D]`` (with `neg_log_q` and `neg_ids`) is this worker's shard of one candidate set, every worker's shard concatenated in worker order. Every worker's rows are scored against every shard; the shard never leaves its worker (the rows and a few numbers per row travel). The values of `gather` (torch: ``True`` or a ``torch.distributed.ProcessGroup``; JAX: the mesh axis name of the enclosing ``shard_map``; TensorFlow: ``True`` inside ``strategy.run``), and the value returned in `gather`'s convention; the shard's gradient is the global loss's, exactly (on torch not multiplied by the world size: keep the shard out of DDP). With `gather` (the same group) the in-batch candidates are every worker's positives, else the local ones. ``None``/``False``: not sharded.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.unsupervised_softmax_cross_entropy_loss(src, pos, neg, temperature=0.5)

    References:
        - GraphLearn, nn/tf/loss.py::unsupervised_softmax_cross_entropy_loss
    """


def softmax_loss(
    pos_logit: ArrayLike,
    neg_logit: ArrayLike,
    *,
    neg_mask: ArrayLike | None = None,
    temperature: float | TensorLike = 1.0,
    pos_log_q: ArrayLike | None = None,
    neg_log_q: ArrayLike | None = None,
    num_hard_negatives: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Softmax cross-entropy of each row's positive logit against its negative logits.

    Math:
        s_pos = pos_i / T - pos_log_q_i;  s_k = neg_ik / T - neg_log_q_ik;  drop k where neg_mask_ik is
        False; keep the num_hard_negatives largest s_k;  l_i = logsumexp([s_pos, kept s_k]) - s_pos;
        label_smoothing eps: l_i = (1 - eps)(lse_i - s_pos) + eps (lse_i - mean of the n_i kept s);  z_loss
        c: l_i += c lse_i^2  (lse_i = logsumexp of the row's kept candidates)

    Args:
        pos_logit: ``[B]`` float. Logit of each row's positive.
        neg_logit: ``[B, K]`` float. Logits of each row's K negatives.
        neg_mask: ``[B, K]`` bool, optional. True keeps a negative, False removes it exactly (no contribution to value or gradient).
        pos_log_q: ``[B]`` float, optional. log Q (log sampling probability) of each positive, subtracted from its logit.
        neg_log_q: ``[B, K]`` float, optional. log Q of each negative.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        temperature: default ``1.0``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        num_hard_negatives: default ``None``. Keep only the h largest remaining negative logits per row (after logQ and removal); None keeps all.
        label_smoothing: default ``0.0``. Label smoothing ``eps`` in [0, 1): the target puts ``1 - eps`` on the positive and spreads ``eps`` uniformly over the row's n kept candidates, the positive included (removed candidates get none), as ``torch.nn.functional.cross_entropy(label_smoothing=)`` does over its classes: ``l_i = (1 - eps) (lse_i - s_pos) + eps (lse_i - mean of the n kept s)``. A row with only its positive left has 0 from both terms.
        z_loss: default ``0.0``. Coefficient ``c >= 0`` of the z-loss ``c lse_i^2`` added to each row, ``lse_i`` the log-sum-exp of the row's kept candidates (the positive included), as PaLM and Liger's ``lse_square_scale`` do: it keeps the softmax normaliser near 1, for bfloat16 training.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.softmax_loss(pos_logit, neg_logit, neg_mask=mask, temperature=0.1)

    References:
        - Yi et al., Sampling-bias-corrected neural modeling for large corpus item recommendations, RecSys 2019 (logQ correction)
    """


def sampled_softmax_loss(
    query_emb: ArrayLike,
    pos_emb: ArrayLike,
    neg_emb: ArrayLike | None = None,
    *,
    temperature: float | TensorLike = 1.0,
    in_batch: bool | None = None,
    pos_log_q: ArrayLike | None = None,
    neg_log_q: ArrayLike | None = None,
    pos_ids: ArrayLike | None = None,
    neg_ids: ArrayLike | None = None,
    query_ids: ArrayLike | None = None,
    num_hard_negatives: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    implementation: Literal['auto', 'materialized', 'streaming', 'fused'] = 'auto',
    product_precision: Literal['input', 'float32'] = 'input',
    gather: bool | str | tuple[str, ...] | object | None = None,
    shard_negatives: bool | str | tuple[str, ...] | object | None = None,
    backend: str | None = None,
) -> Tensor:
    """Sampled / in-batch softmax for two-tower retrieval, with logQ correction, accidental-hit removal and hard negatives.

    Math:
        candidates of row i: pos_i; if in_batch, pos_j (j != i); if neg_emb, its negatives ([N, D] shared or
        [B, K, D] per row).  s_c = q_i . c / T - log_q(c);  drop negatives whose id equals pos_ids_i;  keep
        the num_hard_negatives largest;  with query_ids, drop the in-batch pos_j of rows j with query_ids_j
        = query_ids_i;  l_i = logsumexp([s_pos, kept s_c]) - s_pos;  label_smoothing eps: l_i = (1 -
        eps)(lse_i - s_pos) + eps (lse_i - mean of the n_i kept s);  z_loss c: l_i += c lse_i^2  (lse_i =
        logsumexp of the row's kept candidates)

    Args:
        query_emb: ``[B, D]`` float. Query-tower embeddings.
        pos_emb: ``[B, D]`` float. Embedding of each row's positive item.
        neg_emb: ``[N, D] or [B, K, D]`` float, optional. Sampled negatives, shared by all rows ([N, D]) or per row ([B, K, D]).
        pos_log_q: ``[B]`` float, optional. log Q of each `pos_emb` row: corrects the positive column and the in-batch negatives.
        neg_log_q: ``[N] or [B, K]`` float, optional. log Q of each sampled negative.
        pos_ids: ``[B]`` int, optional. Item id of each positive: in-batch and sampled negatives with the row's positive id are removed (accidental hits).
        neg_ids: ``[N] or [B, K]`` int, optional. Item id of each sampled negative.
        query_ids: ``[B]`` int, optional. Query id of each row, for a batch with several rows of one query: the in-batch candidates of the other rows with the same query id are removed from each row's negatives (with `gather`, every worker's rows are compared). Compared by value, like the item ids.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        temperature: default ``1.0``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        in_batch: default ``None``. Use the other rows' positives as negatives. Default: True when `neg_emb` is None, else False; both together is mixed negative sampling.
        num_hard_negatives: default ``None``. Keep only the h largest remaining negative logits per row (after logQ and removal); None keeps all.
        label_smoothing: default ``0.0``. Label smoothing ``eps`` in [0, 1): the target puts ``1 - eps`` on the positive and spreads ``eps`` uniformly over the row's n kept candidates, the positive included (removed candidates get none), as ``torch.nn.functional.cross_entropy(label_smoothing=)`` does over its classes: ``l_i = (1 - eps) (lse_i - s_pos) + eps (lse_i - mean of the n kept s)``. A row with only its positive left has 0 from both terms.
        z_loss: default ``0.0``. Coefficient ``c >= 0`` of the z-loss ``c lse_i^2`` added to each row, ``lse_i`` the log-sum-exp of the row's kept candidates (the positive included), as PaLM and Liger's ``lse_square_scale`` do: it keeps the softmax normaliser near 1, for bfloat16 training.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        implementation: default ``'auto'``. ``"materialized"`` builds the ``[B, N]`` logits block; ``"streaming"`` computes each row's logsumexp over chunks of 4096 negatives with a backward that recomputes each chunk's scores (kept from the forward instead when the whole block fits in 64 MiB; memory O(B x chunk), never the block); ``"fused"`` runs GPU kernels that compute each row's logsumexp over candidate blocks on chip and recompute the scores blockwise in the backward (Triton on CUDA tensors with PyTorch, Pallas on GPU arrays with JAX; float32, bfloat16 or float16 inputs read as they are, float32 accumulation; an error on TensorFlow, on a CPU, with float64 inputs, ``[B, K, D]`` negatives or ``num_hard_negatives``); ``"auto"`` picks "fused" where it applies, else streams when B times the number of candidates is at least 2**22 (under torch.compile, where the streaming path cannot keep its chunks, only above 64 MiB of block). Per-row ``[B, K, D]`` negatives and ``num_hard_negatives`` always use the materialised path.
        product_precision: default ``'input'``. For float16 and bfloat16 embeddings: ``"input"`` runs the matrix products in the inputs' precision with float32 accumulation (and a float32 result where the framework offers one: JAX everywhere, torch on CUDA; torch on the CPU and TensorFlow round bfloat16 products to bfloat16 and multiply float16 in float32, which cannot overflow); ``"float32"`` casts the embeddings to float32 first, as recloss did before. Everything after the products runs in float32 either way. No effect on float32/float64 inputs.
        gather: default ``None``. Cross-device negatives: score each local row against the candidates of every worker (the in-batch positives with `pos_log_q`/`pos_ids`, the shared ``[N, D]`` negatives with `neg_log_q`/`neg_ids`; per-row ``[B, K, D]`` negatives stay local). ``None``/``False``: the local batch only. torch: ``True`` (default process group) or a ``torch.distributed.ProcessGroup``; every rank returns the global loss (DDP's gradient averaging then gives the single-device gradient). JAX: the mesh axis name (or tuple of names) of the enclosing ``shard_map``/``pmap``; the global loss on every device. TensorFlow: ``True`` inside ``strategy.run``; each replica returns its share ``sum_i w_i l_i / sum_global w`` (sum the shares, as ``apply_gradients`` sums gradients). ``"none"`` returns the local rows, each scored against the global candidates.
        shard_negatives: default ``None``. A catalogue split across workers: `neg_emb` ``[N, D]`` (with `neg_log_q` and `neg_ids`) is this worker's shard of one candidate set, every worker's shard concatenated in worker order. Every worker's rows are scored against every shard; the shard never leaves its worker (the rows and a few numbers per row travel). The values of `gather` (torch: ``True`` or a ``torch.distributed.ProcessGroup``; JAX: the mesh axis name of the enclosing ``shard_map``; TensorFlow: ``True`` inside ``strategy.run``), and the value returned in `gather`'s convention; the shard's gradient is the global loss's, exactly (on torch not multiplied by the world size: keep the shard out of DDP). With `gather` (the same group) the in-batch candidates are every worker's positives, else the local ones. ``None``/``False``: not sharded.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.sampled_softmax_loss(query, item, temperature=0.05, pos_log_q=log_q, pos_ids=ids)

    References:
        - Yi et al., RecSys 2019 (in-batch softmax with logQ correction)
        - TensorFlow Recommenders, tasks/retrieval.py and layers/loss.py
    """


def info_nce_loss(
    query_emb: ArrayLike,
    key_emb: ArrayLike,
    *,
    temperature: float | TensorLike = 0.07,
    symmetric: bool = False,
    normalize: bool = False,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    implementation: Literal['auto', 'materialized', 'streaming', 'fused'] = 'auto',
    product_precision: Literal['input', 'float32'] = 'input',
    gather: bool | str | tuple[str, ...] | object | None = None,
    ids: ArrayLike | None = None,
    query_ids: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """In-batch contrastive InfoNCE: row i's key is its positive, the other keys its negatives.

    Math:
        l_i = logsumexp_j(q_i . k_j / T) - q_i . k_i / T over j = i and keys whose id differs from ids_i
        (and, with query_ids, whose row's query id differs from query_ids_i);  symmetric: average with the
        key-to-query direction;  normalize: cosine similarity;  label_smoothing eps: l_i = (1 - eps)(lse_i -
        s_pos) + eps (lse_i - mean of the n_i kept s);  z_loss c: l_i += c lse_i^2  (lse_i = logsumexp of
        the row's kept candidates)

    Args:
        query_emb: ``[B, D]`` float. Queries (e.g. one view / one modality).
        key_emb: ``[B, D]`` float. Keys; key i is query i's positive.
        ids: ``[B]`` int, optional. Row ids: keys sharing row i's id are removed from row i's negatives (accidental hits).
        query_ids: ``[B]`` int, optional. Query id of each row, for a batch with several rows of one query: the in-batch candidates of the other rows with the same query id are removed from each row's negatives (with `gather`, every worker's rows are compared). Compared by value, like the item ids.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        temperature: default ``0.07``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        symmetric: default ``False``. Average query-to-key and key-to-query losses (CLIP).
        normalize: default ``False``. L2-normalise both sides first, x / max(||x||, 1e-12) (cosine similarity).
        label_smoothing: default ``0.0``. Label smoothing ``eps`` in [0, 1): the target puts ``1 - eps`` on the positive and spreads ``eps`` uniformly over the row's n kept candidates, the positive included (removed candidates get none), as ``torch.nn.functional.cross_entropy(label_smoothing=)`` does over its classes: ``l_i = (1 - eps) (lse_i - s_pos) + eps (lse_i - mean of the n kept s)``. A row with only its positive left has 0 from both terms.
        z_loss: default ``0.0``. Coefficient ``c >= 0`` of the z-loss ``c lse_i^2`` added to each row, ``lse_i`` the log-sum-exp of the row's kept candidates (the positive included), as PaLM and Liger's ``lse_square_scale`` do: it keeps the softmax normaliser near 1, for bfloat16 training.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        implementation: default ``'auto'``. ``"materialized"`` builds the ``[B, N]`` logits block; ``"streaming"`` computes each row's logsumexp over chunks of 4096 negatives with a backward that recomputes each chunk's scores (kept from the forward instead when the whole block fits in 64 MiB; memory O(B x chunk), never the block); ``"fused"`` runs GPU kernels that compute each row's logsumexp over candidate blocks on chip and recompute the scores blockwise in the backward (Triton on CUDA tensors with PyTorch, Pallas on GPU arrays with JAX; float32, bfloat16 or float16 inputs read as they are, float32 accumulation; an error on TensorFlow, on a CPU, with float64 inputs, ``[B, K, D]`` negatives or ``num_hard_negatives``); ``"auto"`` picks "fused" where it applies, else streams when B times the number of candidates is at least 2**22 (under torch.compile, where the streaming path cannot keep its chunks, only above 64 MiB of block). Per-row ``[B, K, D]`` negatives and ``num_hard_negatives`` always use the materialised path.
        product_precision: default ``'input'``. For float16 and bfloat16 embeddings: ``"input"`` runs the matrix products in the inputs' precision with float32 accumulation (and a float32 result where the framework offers one: JAX everywhere, torch on CUDA; torch on the CPU and TensorFlow round bfloat16 products to bfloat16 and multiply float16 in float32, which cannot overflow); ``"float32"`` casts the embeddings to float32 first, as recloss did before. Everything after the products runs in float32 either way. No effect on float32/float64 inputs.
        gather: default ``None``. Cross-device negatives: score each local row against the candidates of every worker (the in-batch positives with `pos_log_q`/`pos_ids`, the shared ``[N, D]`` negatives with `neg_log_q`/`neg_ids`; per-row ``[B, K, D]`` negatives stay local). ``None``/``False``: the local batch only. torch: ``True`` (default process group) or a ``torch.distributed.ProcessGroup``; every rank returns the global loss (DDP's gradient averaging then gives the single-device gradient). JAX: the mesh axis name (or tuple of names) of the enclosing ``shard_map``/``pmap``; the global loss on every device. TensorFlow: ``True`` inside ``strategy.run``; each replica returns its share ``sum_i w_i l_i / sum_global w`` (sum the shares, as ``apply_gradients`` sums gradients). ``"none"`` returns the local rows, each scored against the global candidates.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.info_nce_loss(image_emb, text_emb, symmetric=True, normalize=True)

    References:
        - van den Oord et al., Representation learning with contrastive predictive coding, 2018
        - Radford et al., CLIP, 2021
    """


def multi_positive_softmax_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    mode: Literal['out', 'in'] = 'out',
    mask: ArrayLike | None = None,
    temperature: float | TensorLike = 1.0,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Softmax cross-entropy of rows with several positives (labels > 0): each positive against the row's negatives (mode "out") or all positives together (mode "in").

    Math:
        s = logits / T;  V = the row's valid entries (mask), P = {c in V: labels_c > 0}, N = V \\ P;  mode
        "out": l_i = sum_{p in P} -log(e^{s_p} / (e^{s_p} + sum_{n in N} e^{s_n})) = sum_{p in P}
        softplus(logsumexp_N(s) - s_p);  mode "in": l_i = -log(sum_P e^{s_p} / sum_V e^{s_c}) =
        softplus(logsumexp_N(s) - logsumexp_P(s));  l_i = 0 when P is empty (a row with no positive or no
        valid entry)

    Args:
        logits: ``[B, L]`` float. Score of each candidate of each row (e.g. a [B, N] block of query-item scores).
        labels: ``[B, L]`` float. Relevance >= 0: the candidates with labels > 0 are the row's positives, the others its negatives (only the sign matters). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real candidate, False = padding: it contributes nothing to the value or any gradient, whatever `logits` and `labels` hold there. Default: every candidate is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        mode: default ``'out'``. ``"out"``: each positive against the negatives alone, the other positives left out of its denominator, summed over the positives (RePlay's LogOutCE; rax's unique_softmax_loss on binary labels). ``"in"``: the positives' total probability, -log(sum_P softmax) (RePlay's LogInCE; SupCon's L_in minus log |P|). SupCon's L_out keeps the other positives in each denominator: it is listwise_softmax_loss with labels 1 / |P| on the positives.
        temperature: default ``1.0``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.multi_positive_softmax_loss(query @ items.T, labels, mode="out", temperature=0.05)

    References:
        - RePlay, replay/nn/loss: LogOutCE and LogInCE
        - Zhu and Klabjan, Listwise learning to rank by exploring unique ratings (rax.unique_softmax_loss), WSDM 2020
        - Khosla et al., Supervised contrastive learning (L_in), NeurIPS 2020
    """


def bpr_loss(
    pos_logit: ArrayLike,
    neg_logit: ArrayLike,
    *,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Bayesian personalised ranking: the positive should score above each negative.

    Math:
        l_i = mean_k softplus(neg_ik - pos_i)  (= -mean_k log sigmoid(pos_i - neg_ik))

    Args:
        pos_logit: ``[B]`` float. Score of each row's positive.
        neg_logit: ``[B] or [B, K]`` float. Scores of one or K negatives per row.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.bpr_loss(pos_score, neg_score)

    References:
        - Rendle et al., BPR: Bayesian personalized ranking from implicit feedback, UAI 2009
    """


def hinge_loss(
    pos_logit: ArrayLike,
    neg_logit: ArrayLike,
    *,
    margin: float = 1.0,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Pairwise hinge (margin ranking) loss on scores.

    Math:
        l_i = mean_k max(0, margin - pos_i + neg_ik)

    Args:
        pos_logit: ``[B]`` float. Score of each row's positive.
        neg_logit: ``[B] or [B, K]`` float. Scores of one or K negatives per row.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        margin: default ``1.0``. Margin of the hinge, a finite number.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.hinge_loss(pos_score, neg_score, margin=0.5)
    """


def triplet_margin_loss(
    src_emb: ArrayLike,
    pos_emb: ArrayLike,
    neg_emb: ArrayLike,
    *,
    margin: float = 1.0,
    distance: Literal['l2', 'squared_l2', 'l1', 'cosine'] = 'l2',
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Triplet margin loss on embeddings with a choice of distance.

    Math:
        l_i = mean_k max(0, margin + d(src_i, pos_i) - d(src_i, neg_ik)),  d in l2, squared_l2, l1, cosine
        (1 - cosine similarity); the gradient is finite where two embeddings coincide

    Args:
        src_emb: ``[B, D]`` float. Anchor embeddings.
        pos_emb: ``[B, D]`` float. Positive embeddings.
        neg_emb: ``[B, D] or [B, K, D]`` float. One or K negative embeddings per row.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        margin: default ``1.0``. Margin of the hinge, a finite number.
        distance: default ``'l2'``. The distance d.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.triplet_margin_loss(anchor, pos, neg, margin=0.2, distance="cosine")

    References:
        - Schroff et al., FaceNet, CVPR 2015
        - GraphLearn, nn/tf/loss.py (L1 and squared L2)
    """


def gbce_loss(
    pos_logit: ArrayLike,
    neg_logit: ArrayLike,
    *,
    num_items: int,
    t: float = 0.75,
    neg_mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """gSASRec's generalised binary cross-entropy (gBCE): one positive and K sampled negatives per row, the positive's probability raised to the power beta, which undoes the overconfidence that negative sampling causes.

    Math:
        alpha = K / (num_items - 1);  beta = alpha (t (1 - 1 / alpha) + 1 / alpha) = 1 - t (1 - alpha);  l_i
        = (beta softplus(-pos_i) + sum_{k kept} softplus(neg_ik)) / (1 + K_i),  K_i = the row's kept
        negatives (K without neg_mask): -log(sigmoid(pos)^beta) and -log(1 - sigmoid(neg)) averaged over the
        row's elements, as gSASRec-pytorch averages them

    Args:
        pos_logit: ``[B]`` float. Logit of each row's positive item.
        neg_logit: ``[B, K]`` float. Logits of each row's K sampled negatives.
        neg_mask: ``[B, K]`` bool, optional. True keeps a negative, False removes it exactly (no contribution to value or gradient; the row's mean is over its kept elements).
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        num_items: required. The number of items the negatives are sampled from (an integer >= 2): alpha = K / (num_items - 1) is the sampling rate. gSASRec-pytorch's training script passes its catalogue size minus one here: pass the same value to match it.
        t: default ``0.75``. Calibration ``t`` in [0, 1]: 0 gives plain binary cross-entropy (beta = 1), 1 gives beta = alpha (gSASRec's default 0.75).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.gbce_loss(pos_logit, neg_logit, num_items=3416, t=0.75)

    References:
        - Petrov and Macdonald, gSASRec: reducing overconfidence in sequential recommendation trained with negative sampling, RecSys 2023
        - gSASRec-pytorch, train_gsasrec.py (the gBCE transform of the positive logit)
    """


def listwise_softmax_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    temperature: float | TensorLike = 1.0,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Listwise softmax cross-entropy (ListNet with graded labels): each list's labels against the softmax of its scores.

    Math:
        l = -sum_{i in V} y_i log softmax_V(s / T)_i = sum_{i in V} y_i (logsumexp_V(s / T) - s_i / T)

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        temperature: default ``1.0``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.listwise_softmax_loss(scores, labels, mask=mask)

    References:
        - Cao et al., Learning to rank: from pairwise approach to listwise approach (ListNet), ICML 2007
        - rax.softmax_loss
    """


def poly1_softmax_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    epsilon: float = 1.0,
    temperature: float | TensorLike = 1.0,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Poly-1 listwise softmax: the listwise softmax loss plus epsilon (1 - p_t), rax's definition.

    Math:
        l = listwise_softmax + epsilon (1 - p_t),  p_t = sum_{i in V} (y_i / sum_V y) softmax_V(s / T)_i;  l
        = 0 when sum_V y = 0

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        epsilon: default ``1.0``. Weight of the first polynomial term, a finite number.
        temperature: default ``1.0``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.poly1_softmax_loss(scores, labels, mask=mask)

    References:
        - Leng et al., PolyLoss, ICLR 2022
        - rax.poly1_softmax_loss
    """


def listmle_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """ListMLE: the Plackett-Luce negative log-likelihood of the list's order by label (ties by position).

    Math:
        pi = V sorted by label, descending, ties by position;  l = sum_{k=1..|V|} (logsumexp_{m >= k}
        s_pi(m) - s_pi(k)),  each term computed as softplus(logsumexp_{m > k} s_pi(m) - s_pi(k))

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.listmle_loss(scores, labels, mask=mask)

    References:
        - Xia et al., Listwise approach to learning to rank (ListMLE), ICML 2008
        - rax.listmle_loss
    """


def approx_ndcg_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    temperature: float | TensorLike = 1.0,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Minus the smooth NDCG of each list: ranks replaced by sums of sigmoids of score differences.

    Math:
        r_i = 1 + sum_{j in V, j != i} sigmoid((s_j - s_i) / T);  l = -sum_{i in V} G(y_i) D(r_i) / IDCG
        (IDCG = sum over the ideal order of G(y) D(rank));  l = 0 when IDCG = 0

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        temperature: default ``1.0``. Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.approx_ndcg_loss(scores, labels, mask=mask)

    References:
        - Qin et al., A general approximation framework for direct optimization of information retrieval measures, 2010
        - rax.approx_t12n(rax.ndcg_metric)
    """


def pairwise_logistic_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Pairwise logistic (RankNet) loss over the pairs of items with different labels.

    Math:
        P = pairs (i, j) of valid items with y_i > y_j;  l = (1 / |P|) sum_P w_ij softplus(-(s_i - s_j))  (0
        when P is empty; w_ij = 1 unless lambdaweight)

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        lambdaweight: default ``None``. Pair weights ``w_ij``: None (1); ``"ndcg"``: ``|G(y_i) - G(y_j)| |D(r_i) - D(r_j)| / IDCG``, the change in NDCG when i and j swap (LambdaRank, Burges 2006); ``"ndcg2"``: ``|G(y_i) - G(y_j)| |D(|r_i - r_j|) - D(|r_i - r_j| + 1)| / IDCG`` (NDCG-Loss2 of LambdaLoss, Wang et al. 2018). r = rank by score among the valid items (ties by position), IDCG = the list's ideal DCG; the weights are constants (no gradient).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.pairwise_logistic_loss(scores, labels, mask=mask)

    References:
        - Burges et al., Learning to rank using gradient descent (RankNet), ICML 2005
        - Wang et al., The LambdaLoss framework for ranking metric optimization, CIKM 2018
        - rax.pairwise_logistic_loss
    """


def pairwise_hinge_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    margin: float = 1.0,
    lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Pairwise hinge loss over the pairs of items with different labels.

    Math:
        P = pairs (i, j) of valid items with y_i > y_j;  l = (1 / |P|) sum_P w_ij max(0, margin - (s_i -
        s_j))  (0 when P is empty; w_ij = 1 unless lambdaweight)

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        margin: default ``1.0``. Margin of the hinge, a finite number.
        lambdaweight: default ``None``. Pair weights ``w_ij``: None (1); ``"ndcg"``: ``|G(y_i) - G(y_j)| |D(r_i) - D(r_j)| / IDCG``, the change in NDCG when i and j swap (LambdaRank, Burges 2006); ``"ndcg2"``: ``|G(y_i) - G(y_j)| |D(|r_i - r_j|) - D(|r_i - r_j| + 1)| / IDCG`` (NDCG-Loss2 of LambdaLoss, Wang et al. 2018). r = rank by score among the valid items (ties by position), IDCG = the list's ideal DCG; the weights are constants (no gradient).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.pairwise_hinge_loss(scores, labels, mask=mask)

    References:
        - Burges et al., Learning to rank using gradient descent (RankNet), ICML 2005
        - Wang et al., The LambdaLoss framework for ranking metric optimization, CIKM 2018
        - rax.pairwise_hinge_loss
    """


def pairwise_soft_zero_one_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    lambdaweight: Literal[None, 'ndcg', 'ndcg2'] = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Pairwise soft zero-one loss: a sigmoid relaxation of the count of mis-ordered pairs.

    Math:
        P = pairs (i, j) of valid items with y_i > y_j;  l = (1 / |P|) sum_P w_ij sigmoid(-(s_i - s_j))  (0
        when P is empty; w_ij = 1 unless lambdaweight)

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        lambdaweight: default ``None``. Pair weights ``w_ij``: None (1); ``"ndcg"``: ``|G(y_i) - G(y_j)| |D(r_i) - D(r_j)| / IDCG``, the change in NDCG when i and j swap (LambdaRank, Burges 2006); ``"ndcg2"``: ``|G(y_i) - G(y_j)| |D(|r_i - r_j|) - D(|r_i - r_j| + 1)| / IDCG`` (NDCG-Loss2 of LambdaLoss, Wang et al. 2018). r = rank by score among the valid items (ties by position), IDCG = the list's ideal DCG; the weights are constants (no gradient).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.pairwise_soft_zero_one_loss(scores, labels, mask=mask)

    References:
        - Burges et al., Learning to rank using gradient descent (RankNet), ICML 2005
        - Wang et al., The LambdaLoss framework for ranking metric optimization, CIKM 2018
        - rax.pairwise_soft_zero_one_loss
    """


def pointwise_sigmoid_loss(
    scores: ArrayLike,
    labels: ArrayLike,
    *,
    mask: ArrayLike | None = None,
    sample_weight: ArrayLike | None = None,
    reduction: Literal['mean', 'sum', 'none'] = 'mean',
    backend: str | None = None,
) -> Tensor:
    """Pointwise sigmoid cross-entropy of each item's score against its label in [0, 1], averaged over the list.

    Math:
        l = (1 / |V|) sum_{i in V} [y_i softplus(-s_i) + (1 - y_i) softplus(s_i)]  (0 when V is empty)

    Args:
        scores: ``[B, L]`` float. Score of each item of each list.
        labels: ``[B, L]`` float. Target probability in [0, 1] of each item. A constant: no gradient flows to it. Entries where `mask` is False may hold anything.
        mask: ``[B, L]`` bool, optional. True = a real item, False = padding: it contributes nothing to the value or any gradient, whatever `scores` and `labels` hold there. Default: every item is real.
        sample_weight: ``[B]`` float, optional. Row weights ``w_i >= 0`` (default 1).
        reduction: default ``'mean'``. ``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); ``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.
        backend: "tensorflow" ("tf"), "torch" ("pytorch"), "jax" or "numpy" (float64 reference, value only); default: the tensors' framework.

    Returns:
        The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction="none"``); float32 for float16, bfloat16 and float32 inputs, float64 if any floating input is float64.

    Raises:
        ShapeError: a tensor has the wrong rank, or a size that disagrees with another argument's.
        DTypeError: a tensor's dtype is of the wrong kind (e.g. integers where floats are needed).
        OptionError: an option, or a value-checked tensor (``sample_weight >= 0``), is out of range.
        BackendError: an unknown backend, tensors of several frameworks, or a tensor of another framework than ``backend``.
        BackendUnavailableError: the backend's framework is not installed (an ``ImportError``; the others are ``ReclossError``, a ``ValueError``).

    Example:
        >>> loss = recloss.pointwise_sigmoid_loss(scores, labels, mask=mask)

    References:
        - rax.pointwise_sigmoid_loss
    """


__all__ = [
    'sigmoid_cross_entropy_loss',
    'unsupervised_softmax_cross_entropy_loss',
    'softmax_loss',
    'sampled_softmax_loss',
    'info_nce_loss',
    'multi_positive_softmax_loss',
    'bpr_loss',
    'hinge_loss',
    'triplet_margin_loss',
    'gbce_loss',
    'listwise_softmax_loss',
    'poly1_softmax_loss',
    'listmle_loss',
    'approx_ndcg_loss',
    'pairwise_logistic_loss',
    'pairwise_hinge_loss',
    'pairwise_soft_zero_one_loss',
    'pointwise_sigmoid_loss',
    'metrics',
    'sampling',
    'available_backends',
    'validate',
    'validate_distributed',
    'Report',
    'CATALOGUE',
    'ReclossError',
    'ShapeError',
    'DTypeError',
    'OptionError',
    'BackendError',
    'BackendUnavailableError',
]
