"""Two-tower retrieval in Keras 3 with ``recloss.keras.Retrieval``, on the backend named by ``KERAS_BACKEND``
(``tensorflow``, ``jax`` or ``torch``; Keras reads it once, when it is imported).

In-batch sampled softmax: each user's positive item is scored against the other rows' items, accidental hits
(another row holding the same item) are removed by id, and with ``--logq on`` each candidate's logit is
corrected by ``log q`` (its share of the training log; with ``--logq-source estimated``, estimated during training
by the layer ``recloss.keras.FrequencyEstimator``). The task is called from ``Model.compute_loss``, so
``compile``/``fit`` train the model as any Keras model. Run
``KERAS_BACKEND=jax python examples/two_tower_keras.py`` (add ``--short`` for a few-second run); see
``common.py`` for the data, the evaluation and the options.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import ops

import recloss.keras
from common import Config, TrainResult, Variant, main
from data import Interactions


class TwoTower(keras.Model):
    """A user tower and an item tower (id embeddings, L2-normalised) trained by the retrieval task."""

    def __init__(self, num_users: int, num_items: int, dim: int, temperature: float, variant: Variant) -> None:
        super().__init__()
        init = keras.initializers.RandomNormal(stddev=0.1)
        self.users = keras.layers.Embedding(num_users, dim, embeddings_initializer=init)
        self.items = keras.layers.Embedding(num_items, dim, embeddings_initializer=init)
        self.task = recloss.keras.Retrieval(temperature=temperature, in_batch=True)
        self.variant = variant
        # logQ estimated from the stream of training ids (non-trainable state, updated by fit), or exact.
        self.log_q = recloss.keras.FrequencyEstimator() if variant.estimated else None

    def build(self, input_shape: dict[str, Any]) -> None:
        """Create the embedding tables (``fit`` builds the model from the input shapes before the first step)."""
        self.users.build(input_shape["user"])
        self.items.build(input_shape["item"])

    def call(self, x: dict[str, Any]) -> tuple[Any, Any]:
        return ops.normalize(self.users(x["user"]), axis=-1), ops.normalize(self.items(x["item"]), axis=-1)

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None,
                     training: bool = True) -> Any:
        query, candidate = y_pred
        log_q = None
        if self.variant.log_q:
            log_q = self.log_q(x["item"], training=training) if self.log_q is not None else x["log_q"]
        item_ids = x["item"] if self.variant.remove_hits else None
        return self.task(query, candidate, pos_ids=item_ids, pos_log_q=log_q)


def train(data: Interactions, config: Config, variant: Variant) -> TrainResult:
    keras.utils.set_random_seed(config.seed)
    model = TwoTower(data.num_users, data.num_items, config.dim, config.temperature, variant)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate))
    x = {"user": data.train_users, "item": data.train_items, "log_q": data.item_log_q[data.train_items]}
    history = model.fit(x, batch_size=config.batch_size, epochs=config.epochs, shuffle=True, verbose=0)
    everyone = model({"user": np.arange(data.num_users), "item": np.arange(data.num_items)})
    return TrainResult(history.history["loss"], *(ops.convert_to_numpy(tensor) for tensor in everyone))


if __name__ == "__main__":
    main(f"Keras ({keras.backend.backend()})", train, backend=keras.backend.backend())
