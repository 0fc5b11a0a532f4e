"""The softmax family's specs: ``softmax_loss``, ``sampled_softmax_loss``,
``unsupervised_softmax_cross_entropy_loss``, ``info_nce_loss`` and ``multi_positive_softmax_loss``."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from recloss._spec import BOOL, INT, Bound, Case, LossSpec, Option, tensor
from recloss._validate import check_comparable_ids, fail, gather_requested
from recloss.losses._shared import REDUCTION, RETURNS, SAMPLE_WEIGHT, temperature

NUM_HARD = Option("num_hard_negatives", None, "optional_count", annotation="int | None",
                  doc="Keep only the h largest remaining negative logits per row (after logQ and removal); "
                      "None keeps all.")

IMPLEMENTATION = Option(
    "implementation", "auto", "choice", choices=("auto", "materialized", "streaming", "fused"), annotation="str",
    doc='``"materialized"`` builds the ``[B, N]`` logits block; ``"streaming"`` computes each row\'s '
        "logsumexp over chunks of 4096 negatives with a backward that recomputes each chunk's scores (kept from "
        "the forward instead when the whole block fits in 64 MiB; memory O(B x chunk), never the block); "
        '``"fused"`` runs GPU kernels that compute each row\'s logsumexp over candidate blocks on chip and '
        "recompute the scores blockwise in the backward (Triton on CUDA tensors with PyTorch, Pallas on GPU arrays "
        "with JAX; float32, bfloat16 or float16 inputs read as they are, float32 accumulation; an error on "
        'TensorFlow, on a CPU, with float64 inputs, ``[B, K, D]`` negatives or ``num_hard_negatives``); ``"auto"`` '
        "picks \"fused\" where it applies, else streams when B times the number of candidates is at least 2**22 "
        "(under torch.compile, where the streaming path cannot keep its chunks, only above 64 MiB of block). "
        "Per-row ``[B, K, D]`` negatives and ``num_hard_negatives`` always use the materialised path.")

LABEL_SMOOTHING = Option(
    "label_smoothing", 0.0, "fraction",
    doc="Label smoothing ``eps`` in [0, 1): the target puts ``1 - eps`` on the positive and spreads ``eps`` "
        "uniformly over the row's n kept candidates, the positive included (removed candidates get none), as "
        "``torch.nn.functional.cross_entropy(label_smoothing=)`` does over its classes: ``l_i = (1 - eps) (lse_i - "
        "s_pos) + eps (lse_i - mean of the n kept s)``. A row with only its positive left has 0 from both terms.")

Z_LOSS = Option(
    "z_loss", 0.0, "nonnegative",
    doc="Coefficient ``c >= 0`` of the z-loss ``c lse_i^2`` added to each row, ``lse_i`` the log-sum-exp of the "
        "row's kept candidates (the positive included), as PaLM and Liger's ``lse_square_scale`` do: it keeps "
        "the softmax normaliser near 1, for bfloat16 training.")

SMOOTHING_MATH = (";  label_smoothing eps: l_i = (1 - eps)(lse_i - s_pos) + eps (lse_i - mean of the n_i kept s);  "
                  "z_loss c: l_i += c lse_i^2  (lse_i = logsumexp of the row's kept candidates)")

QUERY_IDS = tensor(
    "query_ids", "[B]", kind=INT, required=False,
    doc="Query id of each row, for a batch with several rows of one query: the in-batch candidates of the other "
        "rows with the same query id are removed from each row's negatives (with `gather`, every worker's rows "
        "are compared). Compared by value, like the item ids.")

PRODUCT_PRECISION = Option(
    "product_precision", "input", "choice", choices=("input", "float32"), annotation="str",
    doc='For float16 and bfloat16 embeddings: ``"input"`` runs the matrix products in the inputs\' precision '
        "with float32 accumulation (and a float32 result where the framework offers one: JAX everywhere, torch "
        "on CUDA; torch on the CPU and TensorFlow round bfloat16 products to bfloat16 and multiply float16 in "
        "float32, which cannot overflow); ``\"float32\"`` casts the embeddings to float32 first, as recloss did "
        "before. Everything after the products runs in float32 either way. No effect on float32/float64 inputs.")


def product_scales(inputs: Mapping[str, Any], options: Mapping[str, Any]) -> tuple[float, float]:
    """``(max |q . c|, max sum_d |q_d c_d|) / T`` over the query rows and every candidate embedding: rounding a
    product's result to precision u moves a logit by at most u times the first; rounding its operands, by at
    most 2u times the second. The parity engine derives the tolerances of half-precision products from them."""
    rows = [np.asarray(v, np.float64).reshape(-1, np.shape(v)[-1]) for k, v in inputs.items()
            if k.endswith("_emb") and v is not None]
    if options.get("normalize"):
        rows = [x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12) for x in rows]
    query, candidates = rows[0], np.concatenate(rows, axis=0)
    temperature = float(np.asarray(options.get("temperature", 1.0)))
    return (float(np.max(np.abs(query @ candidates.T), initial=0.0)) / temperature,
            float(np.max(np.abs(query) @ np.abs(candidates).T, initial=0.0)) / temperature)


GATHER = Option(
    "gather", None, "gather", annotation="bool | str | tuple[str, ...] | object | None",
    doc="Cross-device negatives: score each local row against the candidates of every worker (the in-batch "
        "positives with `pos_log_q`/`pos_ids`, the shared ``[N, D]`` negatives with `neg_log_q`/`neg_ids`; "
        "per-row ``[B, K, D]`` negatives stay local). ``None``/``False``: the local batch only. torch: ``True`` "
        "(default process group) or a ``torch.distributed.ProcessGroup``; every rank returns the global loss "
        "(DDP's gradient averaging then gives the single-device gradient). JAX: the mesh axis name (or tuple "
        "of names) of the enclosing ``shard_map``/``pmap``; the global loss on every device. TensorFlow: "
        "``True`` inside ``strategy.run``; each replica returns its share ``sum_i w_i l_i / sum_global w`` "
        "(sum the shares, as ``apply_gradients`` sums gradients). ``\"none\"`` returns the local rows, each "
        "scored against the global candidates.")

SHARD_NEGATIVES = Option(
    "shard_negatives", None, "gather", annotation="bool | str | tuple[str, ...] | object | None",
    doc="A catalogue split across workers: `neg_emb` ``[N, D]`` (with `neg_log_q` and `neg_ids`) is this "
        "worker's shard of one candidate set, every worker's shard concatenated in worker order. Every worker's "
        "rows are scored against every shard; the shard never leaves its worker (the rows and a few numbers per "
        "row travel). The values of `gather` (torch: ``True`` or a ``torch.distributed.ProcessGroup``; JAX: the "
        "mesh axis name of the enclosing ``shard_map``; TensorFlow: ``True`` inside ``strategy.run``), and the "
        "value returned in `gather`'s convention; the shard's gradient is the global loss's, exactly (on torch "
        "not multiplied by the world size: keep the shard out of DDP). With `gather` (the same group) the "
        "in-batch candidates are every worker's positives, else the local ones. ``None``/``False``: not sharded.")

# ----------------------------------------------------------------------------------------------------------
# Cross-argument rules


def _negative_source_rules(bound: Bound, in_batch: bool) -> None:
    present = bound.present
    if "neg_emb" not in present:
        if not in_batch:
            fail(bound, "no negatives: pass `neg_emb` or in_batch=True; got neg_emb=None and in_batch=False")
        for name in ("neg_log_q", "neg_ids"):
            if name in present:
                fail(bound, f"`{name}` describes `neg_emb`, which is None; got `{name}` without `neg_emb`")
        return
    if "neg_ids" in present and "pos_ids" not in present:
        fail(bound, "`neg_ids` needs `pos_ids` (a negative is removed where its id equals the row's positive "
                    "id); got `neg_ids` without `pos_ids`")
    if "neg_ids" in present:
        check_comparable_ids(bound, "pos_ids", "neg_ids")
    shared = bound.form("neg_emb") == ("N", "D")
    for name in ("neg_log_q", "neg_ids"):
        form = bound.form(name)
        if form is not None and (form == ("N",)) != shared:
            expected = "[N] for `neg_emb` of shape [N, D]" if shared else "[B, K] for `neg_emb` of shape [B, K, D]"
            fail(bound, f"`{name}` must have shape {expected}; got shape {list(form)}")


def _sampled_softmax_rules(bound: Bound) -> None:
    in_batch = bound.options["in_batch"]
    in_batch = ("neg_emb" not in bound.present) if in_batch is None else in_batch
    _negative_source_rules(bound, in_batch)
    if "query_ids" in bound.present and not in_batch:
        fail(bound, "`query_ids` removes the in-batch candidates of rows of the same query, and there are none: "
                    "pass in_batch=True or drop `query_ids`; got `query_ids` with in_batch=False")
    _fused_rules(bound)
    _shard_rules(bound)


def _unsupervised_rules(bound: Bound) -> None:
    _fused_rules(bound)
    _shard_rules(bound)


def _shard_rules(bound: Bound) -> None:
    """What ``shard_negatives`` needs: shared ``[N, D]`` negatives to shard, and the same group as ``gather``."""
    shards = gather_requested(bound.options.get("shard_negatives"))
    if shards is None:
        return
    form = bound.form("neg_emb")
    if form is None:
        fail(bound, "`shard_negatives` splits the shared negatives `neg_emb` [N, D] across the workers; got "
                    "neg_emb=None")
    if form != ("N", "D"):
        fail(bound, "`shard_negatives` takes shared negatives `neg_emb` of shape [N, D], this worker's shard of "
                    f"one table; got `neg_emb` of shape {list(form)} (per-row negatives stay with their row: use "
                    "gather, or no option)")
    unsupported = [f"{name}={bound.options[name]!r}" for name in ("label_smoothing", "z_loss")
                   if float(bound.options.get(name) or 0.0) != 0.0] + (["`query_ids`"] if "query_ids" in bound.present
                                                                        else [])
    if unsupported:
        fail(bound, "`shard_negatives` combines the shards' row losses only (log-sum-exp parts); label smoothing, "
                    "z-loss and `query_ids` are not supported with it; got shard_negatives with "
                    + ", ".join(unsupported))
    gather = gather_requested(bound.options.get("gather"))
    if gather is not None and not _same_group(gather, shards):
        fail(bound, "`gather` and `shard_negatives` must name the same group of workers; got "
                    f"gather={_shown(gather)} and shard_negatives={_shown(shards)}")


def _same_group(a: Any, b: Any) -> bool:
    """Whether two valid ``gather`` values name the same group (True, an axis name or names, a ProcessGroup)."""
    if isinstance(a, (bool, str, tuple)) or isinstance(b, (bool, str, tuple)):
        return type(a) is type(b) and a == b
    return a is b


def _shown(value: Any) -> str:
    return "a ProcessGroup" if type(value).__name__.startswith("ProcessGroup") else repr(value)


def _fused_rules(bound: Bound) -> None:
    """What ``implementation="fused"`` cannot run, as far as the spec can tell (the device is checked where the
    path is chosen, :mod:`recloss.kernels.fused`)."""
    if bound.options.get("implementation") != "fused":
        return
    if bound.dtype == "float64":
        fail(bound, 'implementation="fused" computes in float32 from float32, bfloat16 or float16 inputs; got a '
                    'float64 input (use "streaming" or "materialized")')
    if bound.form("neg_emb") == ("B", "K", "D"):
        fail(bound, 'implementation="fused" takes shared [N, D] or in-batch negatives; got `neg_emb` of shape '
                    '[B, K, D] (use "materialized")')
    if bound.options.get("num_hard_negatives") is not None:
        fail(bound, 'implementation="fused" keeps every negative; got num_hard_negatives='
                    f'{bound.options["num_hard_negatives"]!r} (use "materialized")')


# ----------------------------------------------------------------------------------------------------------
# The catalogue

SOFTMAX = LossSpec(
    name="softmax_loss",
    summary="Softmax cross-entropy of each row's positive logit against its negative logits.",
    math=("s_pos = pos_i / T - pos_log_q_i;  s_k = neg_ik / T - neg_log_q_ik;  drop k where neg_mask_ik is False; "
          "keep the num_hard_negatives largest s_k;  l_i = logsumexp([s_pos, kept s_k]) - s_pos" + SMOOTHING_MATH),
    args=(tensor("pos_logit", "[B]", doc="Logit of each row's positive."),
          tensor("neg_logit", "[B, K]", doc="Logits of each row's K negatives."),
          tensor("neg_mask", "[B, K]", kind=BOOL, required=False, doc="True keeps a negative, False removes it "
                 "exactly (no contribution to value or gradient)."),
          tensor("pos_log_q", "[B]", required=False, sample="log_prob",
                 doc="log Q (log sampling probability) of each positive, subtracted from its logit."),
          tensor("neg_log_q", "[B, K]", required=False, sample="log_prob", doc="log Q of each negative."),
          SAMPLE_WEIGHT),
    options=(temperature(1.0), NUM_HARD, LABEL_SMOOTHING, Z_LOSS, REDUCTION),
    positional=("pos_logit", "neg_logit"),
    keywords=("neg_mask", "temperature", "pos_log_q", "neg_log_q", "num_hard_negatives", "label_smoothing",
              "z_loss", "sample_weight", "reduction"),
    returns=RETURNS,
    cases=(Case("plain"), Case("mask, logQ, T=0.5", {"neg_mask": 0, "pos_log_q": 0, "neg_log_q": 0},
                                {"temperature": 0.5}),
           Case("mask, 2 hard negatives, weights", {"neg_mask": 0, "sample_weight": 0}, {"num_hard_negatives": 2}),
           Case("none", {}, {"reduction": "none"}),
           Case("mask, 3 hard, label smoothing, z-loss, T=0.5", {"neg_mask": 0, "neg_log_q": 0},
                {"num_hard_negatives": 3, "label_smoothing": 0.2, "z_loss": 0.05, "temperature": 0.5})),
    example="loss = recloss.softmax_loss(pos_logit, neg_logit, neg_mask=mask, temperature=0.1)",
    references=("Yi et al., Sampling-bias-corrected neural modeling for large corpus item recommendations, "
                "RecSys 2019 (logQ correction)",),
)

SAMPLED_SOFTMAX = LossSpec(
    product_scales=product_scales,
    name="sampled_softmax_loss",
    summary="Sampled / in-batch softmax for two-tower retrieval, with logQ correction, accidental-hit removal "
            "and hard negatives.",
    math=("candidates of row i: pos_i; if in_batch, pos_j (j != i); if neg_emb, its negatives ([N, D] shared or "
          "[B, K, D] per row).  s_c = q_i . c / T - log_q(c);  drop negatives whose id equals pos_ids_i;  keep the "
          "num_hard_negatives largest;  with query_ids, drop the in-batch pos_j of rows j with query_ids_j = "
          "query_ids_i;  l_i = logsumexp([s_pos, kept s_c]) - s_pos" + SMOOTHING_MATH),
    args=(tensor("query_emb", "[B, D]", doc="Query-tower embeddings."),
          tensor("pos_emb", "[B, D]", doc="Embedding of each row's positive item."),
          tensor("neg_emb", "[N, D]", "[B, K, D]", required=False,
                 doc="Sampled negatives, shared by all rows ([N, D]) or per row ([B, K, D])."),
          tensor("pos_log_q", "[B]", required=False, sample="log_prob",
                 doc="log Q of each `pos_emb` row: corrects the positive column and the in-batch negatives."),
          tensor("neg_log_q", "[N]", "[B, K]", required=False, sample="log_prob",
                 doc="log Q of each sampled negative."),
          tensor("pos_ids", "[B]", kind=INT, required=False, doc="Item id of each positive: in-batch and sampled "
                 "negatives with the row's positive id are removed (accidental hits)."),
          tensor("neg_ids", "[N]", "[B, K]", kind=INT, required=False, doc="Item id of each sampled negative."),
          QUERY_IDS, SAMPLE_WEIGHT),
    options=(temperature(1.0),
             Option("in_batch", None, "optional_bool", annotation="bool | None",
                    doc="Use the other rows' positives as negatives. Default: True when `neg_emb` is None, "
                        "else False; both together is mixed negative sampling."),
             NUM_HARD, LABEL_SMOOTHING, Z_LOSS, REDUCTION, IMPLEMENTATION, PRODUCT_PRECISION, GATHER,
             SHARD_NEGATIVES),
    positional=("query_emb", "pos_emb", "neg_emb"),
    keywords=("temperature", "in_batch", "pos_log_q", "neg_log_q", "pos_ids", "neg_ids", "query_ids",
              "num_hard_negatives", "label_smoothing", "z_loss", "sample_weight", "reduction", "implementation",
              "product_precision", "gather", "shard_negatives"),
    returns=RETURNS,
    cases=(Case("in-batch"),
           Case("shared negatives, T=0.5", {"neg_emb": 0}, {"temperature": 0.5}),
           Case("per-row negatives, ids, logQ", {"neg_emb": 1, "pos_ids": 0, "neg_ids": 1, "neg_log_q": 1}),
           Case("mixed, logQ, ids", {"neg_emb": 0, "pos_log_q": 0, "neg_log_q": 0, "pos_ids": 0, "neg_ids": 0},
                {"in_batch": True}),
           Case("in-batch, ids, 3 hard, weights", {"pos_ids": 0, "sample_weight": 0}, {"num_hard_negatives": 3}),
           Case("mixed, logQ, float32 products", {"neg_emb": 0, "pos_log_q": 0, "neg_log_q": 0},
                {"in_batch": True, "product_precision": "float32"}),
           Case("shared, none", {"neg_emb": 0}, {"reduction": "none"}),
           Case("streaming: in-batch, ids, weights", {"pos_ids": 0, "sample_weight": 0},
                {"implementation": "streaming"}),
           Case("streaming: shared, logQ, ids, T=0.5", {"neg_emb": 0, "neg_log_q": 0, "pos_ids": 0, "neg_ids": 0},
                {"temperature": 0.5, "implementation": "streaming"}),
           Case("streaming: mixed, logQ, ids, none", {"neg_emb": 0, "pos_log_q": 0, "neg_log_q": 0, "pos_ids": 0,
                                                       "neg_ids": 0},
                {"in_batch": True, "reduction": "none", "implementation": "streaming"}),
           Case("in-batch, query ids, ids, label smoothing, z-loss", {"query_ids": 0, "pos_ids": 0},
                {"label_smoothing": 0.1, "z_loss": 0.02}),
           Case("streaming: mixed, query ids, ids, logQ, weights, label smoothing, z-loss, T=0.5",
                {"neg_emb": 0, "query_ids": 0, "pos_ids": 0, "neg_ids": 0, "pos_log_q": 0, "neg_log_q": 0,
                 "sample_weight": 0},
                {"in_batch": True, "label_smoothing": 0.3, "z_loss": 0.05, "temperature": 0.5,
                 "implementation": "streaming"}),
           Case("streaming: in-batch, query ids, ids, none", {"query_ids": 0, "pos_ids": 0},
                {"reduction": "none", "label_smoothing": 0.2, "implementation": "streaming"})),
    example="loss = recloss.sampled_softmax_loss(query, item, temperature=0.05, pos_log_q=log_q, pos_ids=ids)",
    references=("Yi et al., RecSys 2019 (in-batch softmax with logQ correction)",
                "TensorFlow Recommenders, tasks/retrieval.py and layers/loss.py"),
    rules=_sampled_softmax_rules,
)

UNSUPERVISED_SOFTMAX = LossSpec(
    product_scales=product_scales,
    name="unsupervised_softmax_cross_entropy_loss",
    summary="GraphLearn's softmax cross-entropy with negatives shared by the whole batch (two-tower models).",
    math=("z_i = [src_i . pos_i, src_i . neg_1, ..., src_i . neg_N] / T;  l_i = logsumexp(z_i) - z_i0  "
          "(GraphLearn: -log(softmax(z_i)[0] + 1e-12), which floors at 27.63)" + SMOOTHING_MATH),
    args=(tensor("src_emb", "[B, D]", doc="Source (query) embeddings."),
          tensor("pos_emb", "[B, D]", doc="Embedding of each row's positive destination."),
          tensor("neg_emb", "[N, D]", doc="Negative destinations shared by every row (N is often B * neg_num)."),
          SAMPLE_WEIGHT),
    options=(temperature(1.0), LABEL_SMOOTHING, Z_LOSS, REDUCTION, IMPLEMENTATION, PRODUCT_PRECISION, GATHER,
             SHARD_NEGATIVES),
    positional=("src_emb", "pos_emb", "neg_emb", "temperature"),
    returns=RETURNS,
    cases=(Case("default"), Case("T=0.3, weights", {"sample_weight": 0}, {"temperature": 0.3}),
           Case("float32 products, weights", {"sample_weight": 0}, {"product_precision": "float32"}),
           Case("streaming, T=0.3, weights", {"sample_weight": 0},
                {"temperature": 0.3, "implementation": "streaming"}),
           Case("streaming, label smoothing, z-loss", {}, {"label_smoothing": 0.25, "z_loss": 0.1,
                                                           "implementation": "streaming"})),
    example="loss = recloss.unsupervised_softmax_cross_entropy_loss(src, pos, neg, temperature=0.5)",
    references=("GraphLearn, nn/tf/loss.py::unsupervised_softmax_cross_entropy_loss",),
    rules=_unsupervised_rules,
)

INFO_NCE = LossSpec(
    product_scales=product_scales,
    name="info_nce_loss",
    summary="In-batch contrastive InfoNCE: row i's key is its positive, the other keys its negatives.",
    math=("l_i = logsumexp_j(q_i . k_j / T) - q_i . k_i / T over j = i and keys whose id differs from ids_i (and, "
          "with query_ids, whose row's query id differs from query_ids_i);  symmetric: average with the "
          "key-to-query direction;  normalize: cosine similarity" + SMOOTHING_MATH),
    args=(tensor("query_emb", "[B, D]", doc="Queries (e.g. one view / one modality)."),
          tensor("key_emb", "[B, D]", doc="Keys; key i is query i's positive."),
          tensor("ids", "[B]", kind=INT, required=False, doc="Row ids: keys sharing row i's id are removed from "
                 "row i's negatives (accidental hits)."),
          QUERY_IDS, SAMPLE_WEIGHT),
    options=(temperature(0.07),
             Option("symmetric", False, "bool", annotation="bool",
                    doc="Average query-to-key and key-to-query losses (CLIP)."),
             Option("normalize", False, "bool", annotation="bool",
                    doc="L2-normalise both sides first, x / max(||x||, 1e-12) (cosine similarity)."),
             LABEL_SMOOTHING, Z_LOSS, REDUCTION, IMPLEMENTATION, PRODUCT_PRECISION, GATHER),
    positional=("query_emb", "key_emb"),
    returns=RETURNS,
    cases=(Case("default", {}, {"temperature": 1.0}),
           Case("symmetric, normalized, ids, weights", {"ids": 0, "sample_weight": 0},
                {"symmetric": True, "normalize": True, "temperature": 0.2}),
           Case("symmetric, normalized, float32 products", {}, {"symmetric": True, "normalize": True,
                                                                "temperature": 0.2, "product_precision": "float32"}),
           Case("streaming", {}, {"temperature": 1.0, "implementation": "streaming"}),
           Case("streaming: symmetric, normalized, ids, weights", {"ids": 0, "sample_weight": 0},
                {"symmetric": True, "normalize": True, "temperature": 0.2, "implementation": "streaming"}),
           Case("symmetric, query ids, label smoothing, z-loss", {"query_ids": 0},
                {"symmetric": True, "temperature": 0.5, "label_smoothing": 0.2, "z_loss": 0.05}),
           Case("streaming: symmetric, query ids, ids, weights, label smoothing, z-loss",
                {"query_ids": 0, "ids": 0, "sample_weight": 0},
                {"symmetric": True, "temperature": 0.5, "label_smoothing": 0.1, "z_loss": 0.05,
                 "implementation": "streaming"})),
    example="loss = recloss.info_nce_loss(image_emb, text_emb, symmetric=True, normalize=True)",
    references=("van den Oord et al., Representation learning with contrastive predictive coding, 2018",
                "Radford et al., CLIP, 2021"),
    rules=_fused_rules,
)

MULTI_POSITIVE = LossSpec(
    name="multi_positive_softmax_loss",
    summary="Softmax cross-entropy of rows with several positives (labels > 0): each positive against the row's "
            "negatives (mode \"out\") or all positives together (mode \"in\").",
    math=("s = logits / T;  V = the row's valid entries (mask), P = {c in V: labels_c > 0}, N = V \\ P;  "
          "mode \"out\": l_i = sum_{p in P} -log(e^{s_p} / (e^{s_p} + sum_{n in N} e^{s_n})) = sum_{p in P} "
          "softplus(logsumexp_N(s) - s_p);  mode \"in\": l_i = -log(sum_P e^{s_p} / sum_V e^{s_c}) = "
          "softplus(logsumexp_N(s) - logsumexp_P(s));  l_i = 0 when P is empty (a row with no positive or no valid "
          "entry)"),
    args=(tensor("logits", "[B, L]", doc="Score of each candidate of each row (e.g. a [B, N] block of query-item "
                 "scores)."),
          tensor("labels", "[B, L]", sample="graded", nonnegative=True, masked_by="mask", constant=True,
                 doc="Relevance >= 0: the candidates with labels > 0 are the row's positives, the others its "
                     "negatives (only the sign matters). A constant: no gradient flows to it. Entries where "
                     "`mask` is False may hold anything."),
          tensor("mask", "[B, L]", kind=BOOL, required=False,
                 doc="True = a real candidate, False = padding: it contributes nothing to the value or any gradient, "
                     "whatever `logits` and `labels` hold there. Default: every candidate is real."),
          SAMPLE_WEIGHT),
    options=(Option("mode", "out", "choice", choices=("out", "in"), annotation="str",
                    doc='``"out"``: each positive against the negatives alone, the other positives left out of its '
                        "denominator, summed over the positives (RePlay's LogOutCE; rax's unique_softmax_loss on "
                        "binary labels). ``\"in\"``: the positives' total probability, -log(sum_P softmax) (RePlay's "
                        "LogInCE; SupCon's L_in minus log |P|). SupCon's L_out keeps the other positives in each "
                        "denominator: it is listwise_softmax_loss with labels 1 / |P| on the positives."),
             temperature(1.0), REDUCTION),
    positional=("logits", "labels"),
    keywords=("mode", "mask", "temperature", "sample_weight", "reduction"),
    returns=RETURNS,
    cases=(Case("out, mask, weights", {"mask": 0, "sample_weight": 0}),
           Case("in, mask, T=0.5", {"mask": 0}, {"mode": "in", "temperature": 0.5}),
           Case("in, no mask, none", {}, {"mode": "in", "reduction": "none"}),
           Case("out, T=2, sum", {}, {"temperature": 2.0, "reduction": "sum"})),
    example='loss = recloss.multi_positive_softmax_loss(query @ items.T, labels, mode="out", temperature=0.05)',
    references=("RePlay, replay/nn/loss: LogOutCE and LogInCE",
                "Zhu and Klabjan, Listwise learning to rank by exploring unique ratings (rax.unique_softmax_loss), "
                "WSDM 2020",
                "Khosla et al., Supervised contrastive learning (L_in), NeurIPS 2020"),
)
