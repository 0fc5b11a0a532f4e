"""The ranking family's specs: losses over lists of ``L`` candidates with graded relevance labels.

Every loss here takes ``scores`` ``[B, L]`` and ``labels`` ``[B, L]`` (graded relevance >= 0, a constant: no
gradient flows to it), an optional ``mask`` ``[B, L]`` (True = a real item; a padded item contributes nothing
to the value or any gradient, whatever it holds), ``sample_weight`` ``[B]`` per list and ``reduction`` (row =
list). Ties in labels or scores are broken by position (the earlier item first); a list with no valid item,
or with nothing relevant where the loss needs relevance, has loss 0.

Notation in the math: V = the list's valid items, y = labels, s = scores, G(y) = 2^y - 1 (gain),
D(r) = 1 / log2(1 + r) (discount of the 1-based rank r).
"""

from __future__ import annotations

from recloss._spec import BOOL, Case, LossSpec, Option, tensor
from recloss.losses._shared import MARGIN, REDUCTION, RETURNS, SAMPLE_WEIGHT, temperature

SCORES = tensor("scores", "[B, L]", sample="scores", doc="Score of each item of each list.")
LABELS = tensor("labels", "[B, L]", sample="graded", nonnegative=True, masked_by="mask", constant=True,
                doc="Graded relevance >= 0 of each item (binary is the special case). A constant: no gradient "
                    "flows to it. Entries where `mask` is False may hold anything.")
MASK = tensor("mask", "[B, L]", kind=BOOL, required=False,
              doc="True = a real item, False = padding: it contributes nothing to the value or any gradient, "
                  "whatever `scores` and `labels` hold there. Default: every item is real.")

LAMBDAWEIGHT = Option(
    "lambdaweight", None, "choice", choices=(None, "ndcg", "ndcg2"), annotation="str | None",
    doc='Pair weights ``w_ij``: None (1); ``"ndcg"``: ``|G(y_i) - G(y_j)| |D(r_i) - D(r_j)| / IDCG``, the change '
        "in NDCG when i and j swap (LambdaRank, Burges 2006); ``\"ndcg2\"``: ``|G(y_i) - G(y_j)| |D(|r_i - r_j|) - "
        "D(|r_i - r_j| + 1)| / IDCG`` (NDCG-Loss2 of LambdaLoss, Wang et al. 2018). r = rank by score among the "
        "valid items (ties by position), IDCG = the list's ideal DCG; the weights are constants (no gradient).")


def _spec(name: str, summary: str, math: str, options: tuple[Option, ...] = (),
          variant: Case = Case("no mask, sum", {}, {"reduction": "sum"}),
          last: Case = Case("mask, none", {"mask": 0}, {"reduction": "none"}), labels=LABELS,
          references: tuple[str, ...] = (), example: str = "", notes: str = "") -> LossSpec:
    """One ranking loss: ``(scores, labels, *, mask, <options>, sample_weight, reduction)``, with three cases:
    padding and list weights; ``variant`` (no mask, the options set); ``last`` (padding, ``reduction="none"``)."""
    return LossSpec(
        name=name, summary=summary, math=math, args=(SCORES, labels, MASK, SAMPLE_WEIGHT),
        options=(*options, REDUCTION), positional=("scores", "labels"),
        keywords=("mask", *[o.name for o in options], "sample_weight", "reduction"),
        returns=RETURNS,
        cases=(Case("mask, weights", {"mask": 0, "sample_weight": 0}), variant, last),
        example=example or f"loss = recloss.{name}(scores, labels, mask=mask)", references=references, notes=notes)


LISTWISE_SOFTMAX = _spec(
    "listwise_softmax_loss",
    "Listwise softmax cross-entropy (ListNet with graded labels): each list's labels against the softmax of "
    "its scores.",
    "l = -sum_{i in V} y_i log softmax_V(s / T)_i = sum_{i in V} y_i (logsumexp_V(s / T) - s_i / T)",
    options=(temperature(1.0),), variant=Case("T=0.5, sum", {}, {"temperature": 0.5, "reduction": "sum"}),
    references=("Cao et al., Learning to rank: from pairwise approach to listwise approach (ListNet), ICML 2007",
                "rax.softmax_loss"))

POLY1_SOFTMAX = _spec(
    "poly1_softmax_loss",
    "Poly-1 listwise softmax: the listwise softmax loss plus epsilon (1 - p_t), rax's definition.",
    "l = listwise_softmax + epsilon (1 - p_t),  p_t = sum_{i in V} (y_i / sum_V y) softmax_V(s / T)_i;  "
    "l = 0 when sum_V y = 0",
    options=(Option("epsilon", 1.0, "finite", doc="Weight of the first polynomial term, a finite number."),
             temperature(1.0)),
    variant=Case("epsilon -0.5, T=2", {}, {"epsilon": -0.5, "temperature": 2.0}),
    references=("Leng et al., PolyLoss, ICLR 2022", "rax.poly1_softmax_loss"))

LISTMLE = _spec(
    "listmle_loss",
    "ListMLE: the Plackett-Luce negative log-likelihood of the list's order by label (ties by position).",
    "pi = V sorted by label, descending, ties by position;  l = sum_{k=1..|V|} (logsumexp_{m >= k} s_pi(m) - "
    "s_pi(k)),  each term computed as softplus(logsumexp_{m > k} s_pi(m) - s_pi(k))",
    references=("Xia et al., Listwise approach to learning to rank (ListMLE), ICML 2008", "rax.listmle_loss"))

APPROX_NDCG = _spec(
    "approx_ndcg_loss",
    "Minus the smooth NDCG of each list: ranks replaced by sums of sigmoids of score differences.",
    "r_i = 1 + sum_{j in V, j != i} sigmoid((s_j - s_i) / T);  l = -sum_{i in V} G(y_i) D(r_i) / IDCG  "
    "(IDCG = sum over the ideal order of G(y) D(rank));  l = 0 when IDCG = 0",
    options=(temperature(1.0),), variant=Case("T=0.1", {}, {"temperature": 0.1}),
    references=("Qin et al., A general approximation framework for direct optimization of information "
                "retrieval measures, 2010", "rax.approx_t12n(rax.ndcg_metric)"))


def _pairwise(name: str, summary: str, pair: str, options: tuple[Option, ...] = (), variant: dict | None = None
              ) -> LossSpec:
    return _spec(
        name, summary,
        f"P = pairs (i, j) of valid items with y_i > y_j;  l = (1 / |P|) sum_P w_ij {pair}  (0 when P is empty; "
        "w_ij = 1 unless lambdaweight)",
        options=(*options, LAMBDAWEIGHT),
        variant=Case(", ".join(f"{k} {v}" for k, v in (variant or {"lambdaweight": "ndcg"}).items()), {},
                     variant or {"lambdaweight": "ndcg"}),
        last=Case("lambdaweight ndcg2, mask, none", {"mask": 0}, {"lambdaweight": "ndcg2", "reduction": "none"}),
        references=("Burges et al., Learning to rank using gradient descent (RankNet), ICML 2005",
                    "Wang et al., The LambdaLoss framework for ranking metric optimization, CIKM 2018",
                    f"rax.{name}"))


PAIRWISE_LOGISTIC = _pairwise("pairwise_logistic_loss", "Pairwise logistic (RankNet) loss over the pairs of "
                              "items with different labels.", "softplus(-(s_i - s_j))")
PAIRWISE_HINGE = _pairwise("pairwise_hinge_loss", "Pairwise hinge loss over the pairs of items with different "
                           "labels.", "max(0, margin - (s_i - s_j))", options=(MARGIN,),
                           variant={"lambdaweight": "ndcg", "margin": 0.5})
PAIRWISE_SOFT_ZERO_ONE = _pairwise("pairwise_soft_zero_one_loss", "Pairwise soft zero-one loss: a sigmoid "
                                   "relaxation of the count of mis-ordered pairs.", "sigmoid(-(s_i - s_j))")

POINTWISE_SIGMOID = _spec(
    "pointwise_sigmoid_loss",
    "Pointwise sigmoid cross-entropy of each item's score against its label in [0, 1], averaged over the list.",
    "l = (1 / |V|) sum_{i in V} [y_i softplus(-s_i) + (1 - y_i) softplus(s_i)]  (0 when V is empty)",
    labels=tensor("labels", "[B, L]", sample="probability", nonnegative=True, at_most=1.0, masked_by="mask",
                  constant=True, doc="Target probability in [0, 1] of each item. A constant: no gradient flows to "
                                     "it. Entries where `mask` is False may hold anything."),
    references=("rax.pointwise_sigmoid_loss",))

LOSSES = (LISTWISE_SOFTMAX, POLY1_SOFTMAX, LISTMLE, APPROX_NDCG, PAIRWISE_LOGISTIC, PAIRWISE_HINGE,
          PAIRWISE_SOFT_ZERO_ONE, POINTWISE_SIGMOID)
