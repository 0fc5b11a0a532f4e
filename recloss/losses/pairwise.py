"""The pairwise family's specs: ``sigmoid_cross_entropy_loss``, ``bpr_loss``, ``hinge_loss``,
``triplet_margin_loss`` and ``gbce_loss``."""

from __future__ import annotations

from dataclasses import replace

from recloss._spec import BOOL, REQUIRED, Bound, Case, LossSpec, Option, tensor
from recloss._validate import fail
from recloss.losses._shared import MARGIN, REDUCTION, RETURNS, SAMPLE_WEIGHT

PAIRWISE_SHAPES = ("[B]", "[B, K]")


def _sigmoid_rules(bound: Bound) -> Bound | None:
    default_reduction = bound.options["reduction"] == "mean" and "sample_weight" not in bound.present
    if bound.form("neg_logit") == ("M",) and not default_reduction:
        got = f"reduction={bound.options['reduction']!r}" + (
            " with `sample_weight`" if "sample_weight" in bound.present else "")
        fail(bound, "with `neg_logit` of shape [M] (M != B) only reduction='mean' without `sample_weight` "
                    f"is defined; got {got}")
    if bound.form("neg_logit") == ("B",) and default_reduction:
        # [B] and [M] negatives give the same value here: sizes unknown at trace time need no run-time check.
        return replace(bound, deferred=tuple(d for d in bound.deferred if d[0] != "B"))
    return None


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

GBCE = LossSpec(
    name="gbce_loss",
    summary="gSASRec's generalised binary cross-entropy (gBCE): one positive and K sampled negatives per row, the "
            "positive's probability raised to the power beta, which undoes the overconfidence that negative "
            "sampling causes.",
    math=("alpha = K / (num_items - 1);  beta = alpha (t (1 - 1 / alpha) + 1 / alpha) = 1 - t (1 - alpha);  "
          "l_i = (beta softplus(-pos_i) + sum_{k kept} softplus(neg_ik)) / (1 + K_i),  K_i = the row's kept "
          "negatives (K without neg_mask): -log(sigmoid(pos)^beta) and -log(1 - sigmoid(neg)) averaged over the "
          "row's elements, as gSASRec-pytorch averages them"),
    args=(tensor("pos_logit", "[B]", doc="Logit of each row's positive item."),
          tensor("neg_logit", "[B, K]", doc="Logits of each row's K sampled negatives."),
          tensor("neg_mask", "[B, K]", kind=BOOL, required=False, doc="True keeps a negative, False removes it "
                 "exactly (no contribution to value or gradient; the row's mean is over its kept elements)."),
          SAMPLE_WEIGHT),
    options=(Option("num_items", REQUIRED, "item_count", annotation="int",
                    doc="The number of items the negatives are sampled from (an integer >= 2): alpha = K / "
                        "(num_items - 1) is the sampling rate. gSASRec-pytorch's training script passes its "
                        "catalogue size minus one here: pass the same value to match it."),
             Option("t", 0.75, "unit",
                    doc="Calibration ``t`` in [0, 1]: 0 gives plain binary cross-entropy (beta = 1), 1 gives "
                        "beta = alpha (gSASRec's default 0.75)."),
             REDUCTION),
    positional=("pos_logit", "neg_logit"),
    keywords=("num_items", "t", "neg_mask", "sample_weight", "reduction"),
    returns=RETURNS,
    cases=(Case("plain, 100 items", {}, {"num_items": 100}),
           Case("mask, t=0.5, weights", {"neg_mask": 0, "sample_weight": 0}, {"num_items": 10, "t": 0.5}),
           Case("t=1 (beta = alpha), none", {}, {"num_items": 6, "t": 1.0, "reduction": "none"}),
           Case("t=0 (binary cross-entropy), sum", {}, {"num_items": 50, "t": 0.0, "reduction": "sum"})),
    example="loss = recloss.gbce_loss(pos_logit, neg_logit, num_items=3416, t=0.75)",
    references=("Petrov and Macdonald, gSASRec: reducing overconfidence in sequential recommendation trained "
                "with negative sampling, RecSys 2023",
                "gSASRec-pytorch, train_gsasrec.py (the gBCE transform of the positive logit)"),
)
