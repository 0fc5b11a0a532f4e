"""One two-tower model in TensorFlow (tf-keras) trained three ways: TensorFlow Recommenders'
``tfrs.tasks.Retrieval``, ``recloss.sampled_softmax_loss``, and the in-batch softmax written by hand.

The model, the initialisation, the batches and their order, the optimiser and the seeds are the same for the
three losses; only the loss call differs. All three sum the row losses over the batch (``tasks.Retrieval``'s
default reduction; recloss with ``reduction="sum"``); the reported loss is per row. ``--loss`` picks the
losses (default: all three), ``--logq``/``--hits`` the variants (TFRS: ``candidate_sampling_probability``
and ``remove_accidental_hits``). Run ``python examples/two_tower_tfrs.py --data movielens``; see ``common.py``
for the data, the evaluation and the other options. Needs ``tensorflow-recommenders`` and ``tf-keras``
(this script sets ``TF_USE_LEGACY_KERAS=1``: TFRS is written for Keras 2).
"""

from __future__ import annotations

import argparse
import os
import sys

os.environ["TF_USE_LEGACY_KERAS"] = "1"   # before TensorFlow is imported: tf.keras is then tf-keras (Keras 2)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_recommenders as tfrs  # noqa: E402

import recloss  # noqa: E402
from common import Config, TrainResult, Variant, batches, main  # noqa: E402
from data import Interactions  # noqa: E402

LOSSES = ("tfrs", "recloss", "plain")
LABELS = {"tfrs": "TFRS tasks.Retrieval", "recloss": "recloss", "plain": "softmax by hand"}


class TwoTower(tf.keras.Model):
    """A user tower and an item tower: id embeddings ``N(0, 0.1^2)`` from a seed, L2-normalised."""

    def __init__(self, num_users: int, num_items: int, dim: int, seed: int) -> None:
        super().__init__()
        self.users = tf.keras.layers.Embedding(
            num_users, dim, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.1, seed=seed))
        self.items = tf.keras.layers.Embedding(
            num_items, dim, embeddings_initializer=tf.keras.initializers.RandomNormal(stddev=0.1, seed=seed + 1))

    def call(self, users: tf.Tensor, items: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.math.l2_normalize(self.users(users), axis=-1), tf.math.l2_normalize(self.items(items), axis=-1)


def plain_softmax(query: tf.Tensor, candidate: tf.Tensor, temperature: float, log_q: tf.Tensor | None,
                  item_ids: tf.Tensor | None) -> tf.Tensor:
    """The in-batch softmax by hand, summed over the rows: logits ``q_i . c_j / T - log q_j``; another row's
    candidate with row i's item id is removed (``-inf``); ``l_i = logsumexp_j(logits_ij) - logits_ii``."""
    logits = tf.matmul(query, candidate, transpose_b=True) / temperature
    if log_q is not None:
        logits -= log_q[tf.newaxis, :]
    if item_ids is not None:
        same_item = tf.equal(item_ids[:, tf.newaxis], item_ids[tf.newaxis, :])
        hit = tf.logical_and(same_item, tf.logical_not(tf.eye(tf.shape(logits)[0], dtype=tf.bool)))
        logits = tf.where(hit, tf.constant(-np.inf, logits.dtype), logits)
    return tf.reduce_sum(tf.reduce_logsumexp(logits, axis=1) - tf.linalg.diag_part(logits))


def make_loss(name: str, temperature: float, variant: Variant):
    """``(query, candidate, items, log_q) -> the batch's summed loss`` for one of :data:`LOSSES`."""
    if name == "tfrs":
        task = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=variant.remove_hits)

        def tfrs_loss(query, candidate, items, log_q):
            return task(query, candidate, candidate_sampling_probability=tf.exp(log_q) if variant.log_q else None,
                        candidate_ids=items if variant.remove_hits else None, compute_metrics=False)
        return tfrs_loss
    if name == "recloss":
        def recloss_loss(query, candidate, items, log_q):
            return recloss.sampled_softmax_loss(query, candidate, temperature=temperature, in_batch=True,
                                                pos_log_q=log_q if variant.log_q else None,
                                                pos_ids=items if variant.remove_hits else None, reduction="sum")
        return recloss_loss

    def plain_loss(query, candidate, items, log_q):
        return plain_softmax(query, candidate, temperature, log_q if variant.log_q else None,
                             items if variant.remove_hits else None)
    return plain_loss


def trainer(loss_name: str):
    """The training function of ``main`` for one loss."""
    def train(data: Interactions, config: Config, variant: Variant) -> TrainResult:
        tf.keras.utils.set_random_seed(config.seed)
        model = TwoTower(data.num_users, data.num_items, config.dim, config.seed)
        optimizer = tf.keras.optimizers.Adam(config.learning_rate)
        loss_fn = make_loss(loss_name, config.temperature, variant)

        @tf.function(reduce_retracing=True)
        def train_step(users, items, log_q):
            with tf.GradientTape() as tape:
                query, candidate = model(users, items)
                loss = loss_fn(query, candidate, items, log_q)
            variables = model.trainable_variables
            optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
            return loss

        rng = np.random.default_rng(config.seed)
        epoch_losses = []
        for _ in range(config.epochs):
            losses = [float(train_step(batch["user"], batch["item"], batch["log_q"])) / config.batch_size
                      for batch in batches(data, config.batch_size, rng)]
            epoch_losses.append(float(np.mean(losses)))
        query, candidate = model(tf.range(data.num_users), tf.range(data.num_items))
        return TrainResult(epoch_losses, query.numpy(), candidate.numpy())
    return train


def split_losses(argv: list[str]) -> tuple[list[str], list[str]]:
    """``--loss tfrs,recloss`` (this script's option) apart from the options of ``common.main``."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--loss", default=",".join(LOSSES))
    known, rest = parser.parse_known_args(argv)
    names = [name.strip() for name in known.loss.split(",")]
    unknown = [name for name in names if name not in LOSSES]
    if unknown:
        parser.error(f"--loss: unknown {unknown}; choose from {', '.join(LOSSES)}")
    return names, rest


if __name__ == "__main__":
    losses, rest = split_losses(sys.argv[1:])
    main("tf-keras", {LABELS[name]: trainer(name) for name in losses}, backend="tensorflow", argv=rest)
