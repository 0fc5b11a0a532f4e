"""What the benchmark runs: the losses, the hand-written baselines, and their inputs, per framework.

Every workload is ``forward + backward``: the loss and its gradients with respect to every embedding (or,
for losses that take logits, every logit input). Inputs are float32 (or bfloat16 where a configuration says
``"dtype": "bfloat16"``: the embeddings only), seeded, built in NumPy first.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

TEMPERATURE = 0.1

#: The recloss losses the suite runs: name -> (public function, keyword options, input builder key).
LOSSES: dict[str, tuple[str, dict[str, Any], str]] = {
    "unsupervised_softmax": ("unsupervised_softmax_cross_entropy_loss", {}, "shared"),
    "unsupervised_softmax[materialized]": ("unsupervised_softmax_cross_entropy_loss",
                                           {"implementation": "materialized"}, "shared"),
    "unsupervised_softmax[float32 products]": ("unsupervised_softmax_cross_entropy_loss",
                                               {"product_precision": "float32"}, "shared"),
    "sampled_softmax[logQ,ids]": ("sampled_softmax_loss", {}, "shared_logq_ids"),
    "info_nce": ("info_nce_loss", {}, "in_batch"),
    "softmax": ("softmax_loss", {}, "logits"),
    "bpr": ("bpr_loss", {}, "logits"),
    "hinge": ("hinge_loss", {}, "logits"),
}
#: Losses whose inputs are embeddings (the streaming family): memory is compared with their logits block.
EMBEDDING_LOSSES = ("unsupervised_softmax", "unsupervised_softmax[materialized]",
                    "unsupervised_softmax[float32 products]", "sampled_softmax[logQ,ids]", "info_nce")
#: Workloads run only with half-precision inputs (with float32 inputs they equal their plain counterpart).
HALF_ONLY = ("unsupervised_softmax[float32 products]",)
BASELINES = ("graphlearn", "plain", "matmul", "plain_in_batch", "exact_in_batch")
#: The small step most users run (workload ``sampled_in_batch``): in-batch sampled softmax
#: (``sampled_softmax_loss(q, p)``, the other rows' positives as negatives) against the hand-written
#: ``cross_entropy(q @ p.T / T, arange(B))`` (``plain_in_batch``); shape (B, B, D).
SMALL_STEP = (256, 256, 64)


def logits_elements(workload: str, shape: tuple[int, int, int]) -> int:
    """Number of logits the materialised path would hold: B*N, or B*B for the in-batch losses."""
    b, n, _ = shape
    return b * b if workload == "info_nce" else b * n


def make_inputs(kind: str, shape: tuple[int, int, int], seed: int = 0,
                dtype: str = "float32") -> tuple[dict[str, np.ndarray], list[str]]:
    """NumPy inputs by name and the names to differentiate; embeddings in ``dtype`` (bfloat16 via ml_dtypes)."""
    b, n, d = shape
    rng = np.random.default_rng(seed)
    cast = np.float32
    if dtype == "bfloat16":
        import ml_dtypes
        cast = ml_dtypes.bfloat16

    def emb(rows: int) -> np.ndarray:
        return (rng.standard_normal((rows, d), dtype=np.float32) / np.float32(np.sqrt(d))).astype(cast)
    if kind == "query_pos":
        return {"query_emb": emb(b), "pos_emb": emb(b)}, ["query_emb", "pos_emb"]
    if kind in ("shared", "plain", "graphlearn"):
        return {"src_emb": emb(b), "pos_emb": emb(b), "neg_emb": emb(n)}, ["src_emb", "pos_emb", "neg_emb"]
    if kind == "shared_logq_ids":
        inputs = {"query_emb": emb(b), "pos_emb": emb(b), "neg_emb": emb(n),
                  "neg_log_q": np.log(rng.uniform(1e-6, 1e-3, n)).astype(np.float32),
                  "pos_ids": rng.integers(0, 50 * n, b), "neg_ids": rng.integers(0, 50 * n, n)}
        return inputs, ["query_emb", "pos_emb", "neg_emb"]
    if kind == "in_batch":
        return {"query_emb": emb(b), "key_emb": emb(b)}, ["query_emb", "key_emb"]
    if kind == "logits":
        return ({"pos_logit": rng.standard_normal(b, dtype=np.float32),
                 "neg_logit": rng.standard_normal((b, n), dtype=np.float32)}, ["pos_logit", "neg_logit"])
    if kind == "matmul":
        return {"a": emb(b), "b_t": np.ascontiguousarray(emb(n).T)}, []
    raise ValueError(kind)


def input_kind(workload: str) -> str:
    if workload in ("sampled_in_batch", "plain_in_batch", "exact_in_batch"):
        return "query_pos"
    return LOSSES[workload][2] if workload in LOSSES else workload


def loss_function(workload: str) -> Callable[..., Any]:
    """``fn(**tensors) -> scalar`` for a recloss workload."""
    import recloss

    if workload == "sampled_in_batch":
        return lambda query_emb, pos_emb: recloss.sampled_softmax_loss(query_emb, pos_emb, temperature=TEMPERATURE)

    name, options, kind = LOSSES[workload]
    function = getattr(recloss, name)
    if kind == "in_batch":
        return lambda query_emb, key_emb: function(query_emb, key_emb, temperature=TEMPERATURE, **options)
    if kind == "logits":
        extra = {"temperature": TEMPERATURE} if name == "softmax_loss" else {}
        return lambda pos_logit, neg_logit: function(pos_logit, neg_logit, **extra, **options)
    if kind == "shared":
        return lambda src_emb, pos_emb, neg_emb: function(src_emb, pos_emb, neg_emb, temperature=TEMPERATURE,
                                                          **options)
    return lambda **t: function(t.pop("query_emb"), t.pop("pos_emb"), t.pop("neg_emb"), temperature=TEMPERATURE,
                                **t, **options)


# ----------------------------------------------------------------------------------------------------------
# Baselines, written as a user would write them by hand


def graphlearn_tf(src_emb: Any, pos_emb: Any, neg_emb: Any) -> Any:
    """GraphLearn's nn/tf/loss.py::unsupervised_softmax_cross_entropy_loss, as published (TF 2 names)."""
    import tensorflow as tf

    pos_sim = tf.reduce_sum(tf.multiply(src_emb, pos_emb), axis=-1, keepdims=True)
    neg_sim = tf.matmul(src_emb, tf.transpose(neg_emb))
    logit = tf.nn.softmax(tf.concat([pos_sim, neg_sim], axis=-1) / TEMPERATURE)
    return -tf.reduce_mean(tf.math.log(logit[:, :1] + 1e-12))


def plain(backend: str) -> Callable[..., Any]:
    """The plain stable softmax cross-entropy with shared negatives, in each framework's idiom."""
    if backend == "torch":
        import torch
        import torch.nn.functional as F

        def torch_plain(src_emb, pos_emb, neg_emb):
            logits = torch.cat([(src_emb * pos_emb).sum(-1, keepdim=True), src_emb @ neg_emb.T], 1) / TEMPERATURE
            return F.cross_entropy(logits, torch.zeros(logits.shape[0], dtype=torch.long))
        return torch_plain
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def jax_plain(src_emb, pos_emb, neg_emb):
            logits = jnp.concatenate([jnp.sum(src_emb * pos_emb, -1, keepdims=True), src_emb @ neg_emb.T], 1)
            return -jnp.mean(jax.nn.log_softmax(logits / TEMPERATURE, axis=-1)[:, 0])
        return jax_plain
    import tensorflow as tf

    def tf_plain(src_emb, pos_emb, neg_emb):
        logits = tf.concat([tf.reduce_sum(src_emb * pos_emb, -1, keepdims=True),
                            tf.matmul(src_emb, neg_emb, transpose_b=True)], 1) / TEMPERATURE
        labels = tf.zeros(tf.shape(logits)[0], tf.int32)
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return tf_plain


def plain_in_batch(backend: str) -> Callable[..., Any]:
    """The in-batch softmax cross-entropy as a user writes it: ``cross_entropy(q @ p.T / T, arange(B))``."""
    if backend == "torch":
        import torch
        import torch.nn.functional as F

        def torch_plain(query_emb, pos_emb):
            return F.cross_entropy(query_emb @ pos_emb.T / TEMPERATURE, torch.arange(query_emb.shape[0]))
        return torch_plain
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def jax_plain(query_emb, pos_emb):
            log_p = jax.nn.log_softmax(query_emb @ pos_emb.T / TEMPERATURE, axis=-1)
            return -jnp.mean(jnp.diagonal(log_p))
        return jax_plain
    import tensorflow as tf

    def tf_plain(query_emb, pos_emb):
        logits = tf.matmul(query_emb, pos_emb, transpose_b=True) / TEMPERATURE
        labels = tf.range(tf.shape(logits)[0])
        return tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
    return tf_plain


def exact_in_batch(backend: str) -> Callable[..., Any]:
    """The in-batch softmax written by hand without the fused cross-entropy, so that a confident row keeps its
    loss and gradient: ``softplus(logsumexp(negatives) - s_pos)``, the row's own column removed by a mask. The
    reference for what exactness costs in each framework and mode (recloss computes this quantity)."""
    if backend == "torch":
        import torch
        import torch.nn.functional as F

        def torch_exact(query_emb, pos_emb):
            scores = query_emb @ pos_emb.T / TEMPERATURE
            own = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
            lse = torch.logsumexp(scores.masked_fill(own, float("-inf")), 1)
            return F.softplus(lse - scores.diagonal()).mean()
        return torch_exact
    if backend == "jax":
        import jax
        import jax.numpy as jnp

        def jax_exact(query_emb, pos_emb):
            scores = query_emb @ pos_emb.T / TEMPERATURE
            own = jnp.eye(scores.shape[0], dtype=bool)
            lse = jax.nn.logsumexp(jnp.where(own, -jnp.inf, scores), axis=1)
            return jnp.mean(jax.nn.softplus(lse - jnp.diagonal(scores)))
        return jax_exact
    import tensorflow as tf

    def tf_exact(query_emb, pos_emb):
        scores = tf.matmul(query_emb, pos_emb, transpose_b=True) / TEMPERATURE
        own = tf.eye(tf.shape(scores)[0], dtype=tf.bool)
        lse = tf.reduce_logsumexp(tf.where(own, tf.constant(float("-inf"), scores.dtype), scores), 1)
        return tf.reduce_mean(tf.nn.softplus(lse - tf.linalg.diag_part(scores)))
    return tf_exact
