"""The catalogue: one :class:`~recloss._spec.LossSpec` per loss, the single source of truth.

Dimension names: B = batch rows, D = embedding size, K = negatives per row, N = negatives shared by all
rows, M = a free length.
"""

from __future__ import annotations

from recloss._spec import BOOL, INT, Bound, Case, LossSpec, Option, tensor
from recloss._validate import fail

# ----------------------------------------------------------------------------------------------------------
# Pieces every loss shares

SAMPLE_WEIGHT = tensor("sample_weight", "[B]", required=False, sample="weight", nonnegative=True,
                       doc="Row weights ``w_i >= 0`` (default 1).")
REDUCTION = Option("reduction", "mean", "choice", choices=("mean", "sum", "none"), annotation="str",
                   doc='``"mean"``: ``sum_i w_i l_i / sum_i w_i`` (0 when the weights sum to 0); '
                       '``"sum"``: ``sum_i w_i l_i``; ``"none"``: the ``[B]`` vector ``w_i l_i``.')
RETURNS = ("The loss: a 0-d tensor of the inputs' framework (``[B]`` with ``reduction=\"none\"``); float32 for "
           "float16, bfloat16 and float32 inputs, float64 if any floating input is float64.")


def temperature(default: float) -> Option:
    return Option("temperature", default, "positive", tensor_ok=True,
                  doc="Softmax temperature ``T > 0``; logits are divided by it. A number or a 0-d tensor.")


MARGIN = Option("margin", 1.0, "finite", doc="Margin of the hinge, a finite number.")
NUM_HARD = Option("num_hard_negatives", None, "optional_count", annotation="int | None",
                  doc="Keep only the h largest remaining negative logits per row (after logQ and removal); "
                      "None keeps all.")

IMPLEMENTATION = Option(
    "implementation", "auto", "choice", choices=("auto", "materialized", "streaming"), annotation="str",
    doc='``"materialized"`` builds the ``[B, N]`` logits block; ``"streaming"`` computes each row\'s '
        "logsumexp over chunks of 4096 negatives with a backward that recomputes each chunk's scores (kept from "
        "the forward instead when the whole block fits in 64 MiB; memory O(B x chunk), never the block); ``\"auto\"`` "
        "streams when B times the number of candidates is at least 2**22. Per-row ``[B, K, D]`` negatives and ``num_hard_negatives`` always use the materialised path.")

PAIRWISE_SHAPES = ("[B]", "[B, K]")


# ----------------------------------------------------------------------------------------------------------
# Cross-argument rules


def _sigmoid_rules(bound: Bound) -> None:
    if bound.form("neg_logit") == ("M",):
        reduction = bound.options["reduction"]
        if reduction != "mean" or "sample_weight" in bound.present:
            got = f"reduction={reduction!r}" + (" with `sample_weight`" if "sample_weight" in bound.present else "")
            fail(bound, "with `neg_logit` of shape [M] (M != B) only reduction='mean' without `sample_weight` "
                        f"is defined; got {got}")


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
    shared = bound.form("neg_emb") == ("N", "D")
    for name in ("neg_log_q", "neg_ids"):
        form = bound.form(name)
        if form is not None and (form == ("N",)) != shared:
            expected = "[N] for `neg_emb` of shape [N, D]" if shared else "[B, K] for `neg_emb` of shape [B, K, D]"
            fail(bound, f"`{name}` must have shape {expected}; got shape {list(form)}")


def _sampled_softmax_rules(bound: Bound) -> None:
    in_batch = bound.options["in_batch"]
    _negative_source_rules(bound, ("neg_emb" not in bound.present) if in_batch is None else in_batch)


# ----------------------------------------------------------------------------------------------------------
# The catalogue

SIGMOID_CROSS_ENTROPY = LossSpec(
    name="sigmoid_cross_entropy_loss",
    summary="Sigmoid (binary) cross-entropy of positive logits against label 1 and negative logits against 0.",
    math=("l_i = softplus(-pos_i) + mean_k softplus(neg_ik);  with `neg_logit` [M] (M != B): "
          "loss = mean_i softplus(-pos_i) + mean_m softplus(neg_m)  (GraphLearn's value in every case)"),
    args=(tensor("pos_logit", "[B]", doc="Logits of the positive pairs."),
          tensor("neg_logit", "[B]", "[B, K]", "[M]", doc="Logits of the negative pairs: one or K per row, or "
                 "any M of them (then only the default reduction is defined)."),
          SAMPLE_WEIGHT),
    options=(REDUCTION,),
    positional=("pos_logit", "neg_logit"),
    returns=RETURNS,
    cases=(Case("one negative per row"), Case("K per row, weighted sum", {"neg_logit": 1, "sample_weight": 0},
                                              {"reduction": "sum"}),
           Case("M negatives", {"neg_logit": 2}), Case("K per row, none", {"neg_logit": 1}, {"reduction": "none"})),
    example="loss = recloss.sigmoid_cross_entropy_loss(pos_logit, neg_logit)",
    references=("GraphLearn, nn/tf/loss.py::sigmoid_cross_entropy_loss",),
    rules=_sigmoid_rules,
)

SOFTMAX = LossSpec(
    name="softmax_loss",
    summary="Softmax cross-entropy of each row's positive logit against its negative logits.",
    math=("s_pos = pos_i / T - pos_log_q_i;  s_k = neg_ik / T - neg_log_q_ik;  drop k where neg_mask_ik is False; "
          "keep the num_hard_negatives largest s_k;  l_i = logsumexp([s_pos, kept s_k]) - s_pos"),
    args=(tensor("pos_logit", "[B]", doc="Logit of each row's positive."),
          tensor("neg_logit", "[B, K]", doc="Logits of each row's K negatives."),
          tensor("neg_mask", "[B, K]", kind=BOOL, required=False, doc="True keeps a negative, False removes it "
                 "exactly (no contribution to value or gradient)."),
          tensor("pos_log_q", "[B]", required=False, sample="log_prob",
                 doc="log Q (log sampling probability) of each positive, subtracted from its logit."),
          tensor("neg_log_q", "[B, K]", required=False, sample="log_prob", doc="log Q of each negative."),
          SAMPLE_WEIGHT),
    options=(temperature(1.0), NUM_HARD, REDUCTION),
    positional=("pos_logit", "neg_logit"),
    keywords=("neg_mask", "temperature", "pos_log_q", "neg_log_q", "num_hard_negatives", "sample_weight",
              "reduction"),
    returns=RETURNS,
    cases=(Case("plain"), Case("mask, logQ, T=0.5", {"neg_mask": 0, "pos_log_q": 0, "neg_log_q": 0},
                                {"temperature": 0.5}),
           Case("mask, 2 hard negatives, weights", {"neg_mask": 0, "sample_weight": 0}, {"num_hard_negatives": 2}),
           Case("none", {}, {"reduction": "none"})),
    example="loss = recloss.softmax_loss(pos_logit, neg_logit, neg_mask=mask, temperature=0.1)",
    references=("Yi et al., Sampling-bias-corrected neural modeling for large corpus item recommendations, "
                "RecSys 2019 (logQ correction)",),
)

SAMPLED_SOFTMAX = LossSpec(
    name="sampled_softmax_loss",
    summary="Sampled / in-batch softmax for two-tower retrieval, with logQ correction, accidental-hit removal "
            "and hard negatives.",
    math=("candidates of row i: pos_i; if in_batch, pos_j (j != i); if neg_emb, its negatives ([N, D] shared or "
          "[B, K, D] per row).  s_c = q_i . c / T - log_q(c);  drop negatives whose id equals pos_ids_i;  keep the "
          "num_hard_negatives largest;  l_i = logsumexp([s_pos, kept s_c]) - s_pos"),
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
          SAMPLE_WEIGHT),
    options=(temperature(1.0),
             Option("in_batch", None, "optional_bool", annotation="bool | None",
                    doc="Use the other rows' positives as negatives. Default: True when `neg_emb` is None, "
                        "else False; both together is mixed negative sampling."),
             NUM_HARD, REDUCTION, IMPLEMENTATION),
    positional=("query_emb", "pos_emb", "neg_emb"),
    keywords=("temperature", "in_batch", "pos_log_q", "neg_log_q", "pos_ids", "neg_ids", "num_hard_negatives",
              "sample_weight", "reduction", "implementation"),
    returns=RETURNS,
    cases=(Case("in-batch"),
           Case("shared negatives, T=0.5", {"neg_emb": 0}, {"temperature": 0.5}),
           Case("per-row negatives, ids, logQ", {"neg_emb": 1, "pos_ids": 0, "neg_ids": 1, "neg_log_q": 1}),
           Case("mixed, logQ, ids", {"neg_emb": 0, "pos_log_q": 0, "neg_log_q": 0, "pos_ids": 0, "neg_ids": 0},
                {"in_batch": True}),
           Case("in-batch, ids, 3 hard, weights", {"pos_ids": 0, "sample_weight": 0}, {"num_hard_negatives": 3}),
           Case("shared, none", {"neg_emb": 0}, {"reduction": "none"}),
           Case("streaming: in-batch, ids, weights", {"pos_ids": 0, "sample_weight": 0},
                {"implementation": "streaming"}),
           Case("streaming: shared, logQ, ids, T=0.5", {"neg_emb": 0, "neg_log_q": 0, "pos_ids": 0, "neg_ids": 0},
                {"temperature": 0.5, "implementation": "streaming"}),
           Case("streaming: mixed, logQ, ids, none", {"neg_emb": 0, "pos_log_q": 0, "neg_log_q": 0, "pos_ids": 0,
                                                       "neg_ids": 0},
                {"in_batch": True, "reduction": "none", "implementation": "streaming"})),
    example="loss = recloss.sampled_softmax_loss(query, item, temperature=0.05, pos_log_q=log_q, pos_ids=ids)",
    references=("Yi et al., RecSys 2019 (in-batch softmax with logQ correction)",
                "TensorFlow Recommenders, tasks/retrieval.py and layers/loss.py"),
    rules=_sampled_softmax_rules,
)

UNSUPERVISED_SOFTMAX = LossSpec(
    name="unsupervised_softmax_cross_entropy_loss",
    summary="GraphLearn's softmax cross-entropy with negatives shared by the whole batch (two-tower models).",
    math=("z_i = [src_i . pos_i, src_i . neg_1, ..., src_i . neg_N] / T;  l_i = logsumexp(z_i) - z_i0  "
          "(GraphLearn: -log(softmax(z_i)[0] + 1e-12), which floors at 27.63)"),
    args=(tensor("src_emb", "[B, D]", doc="Source (query) embeddings."),
          tensor("pos_emb", "[B, D]", doc="Embedding of each row's positive destination."),
          tensor("neg_emb", "[N, D]", doc="Negative destinations shared by every row (N is often B * neg_num)."),
          SAMPLE_WEIGHT),
    options=(temperature(1.0), REDUCTION, IMPLEMENTATION),
    positional=("src_emb", "pos_emb", "neg_emb", "temperature"),
    returns=RETURNS,
    cases=(Case("default"), Case("T=0.3, weights", {"sample_weight": 0}, {"temperature": 0.3}),
           Case("streaming, T=0.3, weights", {"sample_weight": 0},
                {"temperature": 0.3, "implementation": "streaming"})),
    example="loss = recloss.unsupervised_softmax_cross_entropy_loss(src, pos, neg, temperature=0.5)",
    references=("GraphLearn, nn/tf/loss.py::unsupervised_softmax_cross_entropy_loss",),
)

INFO_NCE = LossSpec(
    name="info_nce_loss",
    summary="In-batch contrastive InfoNCE: row i's key is its positive, the other keys its negatives.",
    math=("l_i = logsumexp_j(q_i . k_j / T) - q_i . k_i / T over j = i and keys whose id differs from ids_i;  "
          "symmetric: average with the key-to-query direction;  normalize: cosine similarity"),
    args=(tensor("query_emb", "[B, D]", doc="Queries (e.g. one view / one modality)."),
          tensor("key_emb", "[B, D]", doc="Keys; key i is query i's positive."),
          tensor("ids", "[B]", kind=INT, required=False, doc="Row ids: keys sharing row i's id are removed from "
                 "row i's negatives (accidental hits)."),
          SAMPLE_WEIGHT),
    options=(temperature(0.07),
             Option("symmetric", False, "bool", annotation="bool",
                    doc="Average query-to-key and key-to-query losses (CLIP)."),
             Option("normalize", False, "bool", annotation="bool",
                    doc="L2-normalise both sides first, x / max(||x||, 1e-12) (cosine similarity)."),
             REDUCTION, IMPLEMENTATION),
    positional=("query_emb", "key_emb"),
    returns=RETURNS,
    cases=(Case("default", {}, {"temperature": 1.0}),
           Case("symmetric, normalized, ids, weights", {"ids": 0, "sample_weight": 0},
                {"symmetric": True, "normalize": True, "temperature": 0.2}),
           Case("streaming", {}, {"temperature": 1.0, "implementation": "streaming"}),
           Case("streaming: symmetric, normalized, ids, weights", {"ids": 0, "sample_weight": 0},
                {"symmetric": True, "normalize": True, "temperature": 0.2, "implementation": "streaming"})),
    example="loss = recloss.info_nce_loss(image_emb, text_emb, symmetric=True, normalize=True)",
    references=("van den Oord et al., Representation learning with contrastive predictive coding, 2018",
                "Radford et al., CLIP, 2021"),
)

BPR = LossSpec(
    name="bpr_loss",
    summary="Bayesian personalised ranking: the positive should score above each negative.",
    math="l_i = mean_k softplus(neg_ik - pos_i)  (= -mean_k log sigmoid(pos_i - neg_ik))",
    args=(tensor("pos_logit", "[B]", doc="Score of each row's positive."),
          tensor("neg_logit", *PAIRWISE_SHAPES, doc="Scores of one or K negatives per row."),
          SAMPLE_WEIGHT),
    options=(REDUCTION,),
    positional=("pos_logit", "neg_logit"),
    returns=RETURNS,
    cases=(Case("one negative"), Case("K negatives, weights", {"neg_logit": 1, "sample_weight": 0})),
    example="loss = recloss.bpr_loss(pos_score, neg_score)",
    references=("Rendle et al., BPR: Bayesian personalized ranking from implicit feedback, UAI 2009",),
)

HINGE = LossSpec(
    name="hinge_loss",
    summary="Pairwise hinge (margin ranking) loss on scores.",
    math="l_i = mean_k max(0, margin - pos_i + neg_ik)",
    args=(tensor("pos_logit", "[B]", doc="Score of each row's positive."),
          tensor("neg_logit", *PAIRWISE_SHAPES, doc="Scores of one or K negatives per row."),
          SAMPLE_WEIGHT),
    options=(MARGIN, REDUCTION),
    positional=("pos_logit", "neg_logit"),
    returns=RETURNS,
    cases=(Case("one negative"), Case("K negatives, margin 2, sum", {"neg_logit": 1, "sample_weight": 0},
                                      {"margin": 2.0, "reduction": "sum"})),
    example="loss = recloss.hinge_loss(pos_score, neg_score, margin=0.5)",
)

TRIPLET = LossSpec(
    name="triplet_margin_loss",
    summary="Triplet margin loss on embeddings with a choice of distance.",
    math=("l_i = mean_k max(0, margin + d(src_i, pos_i) - d(src_i, neg_ik)),  d in l2, squared_l2, l1, "
          "cosine (1 - cosine similarity); the gradient is finite where two embeddings coincide"),
    args=(tensor("src_emb", "[B, D]", doc="Anchor embeddings."),
          tensor("pos_emb", "[B, D]", doc="Positive embeddings."),
          tensor("neg_emb", "[B, D]", "[B, K, D]", doc="One or K negative embeddings per row."),
          SAMPLE_WEIGHT),
    options=(MARGIN,
             Option("distance", "l2", "choice", choices=("l2", "squared_l2", "l1", "cosine"), annotation="str",
                    doc="The distance d."),
             REDUCTION),
    positional=("src_emb", "pos_emb", "neg_emb"),
    returns=RETURNS,
    cases=(Case("l2"), Case("squared_l2, K", {"neg_emb": 1}, {"distance": "squared_l2", "margin": 4.0}),
           Case("l1, K, weights", {"neg_emb": 1, "sample_weight": 0}, {"distance": "l1", "margin": 2.0}),
           Case("cosine, K", {"neg_emb": 1}, {"distance": "cosine", "margin": 0.5})),
    example='loss = recloss.triplet_margin_loss(anchor, pos, neg, margin=0.2, distance="cosine")',
    references=("Schroff et al., FaceNet, CVPR 2015", "GraphLearn, nn/tf/loss.py (L1 and squared L2)"),
)

CATALOGUE: dict[str, LossSpec] = {spec.name: spec for spec in (
    SIGMOID_CROSS_ENTROPY, UNSUPERVISED_SOFTMAX, SOFTMAX, SAMPLED_SOFTMAX, INFO_NCE, BPR, HINGE, TRIPLET)}
