"""Two-tower retrieval in JAX with optax: a plain jitted train step calling ``recloss.sampled_softmax_loss``.

In-batch sampled softmax: each user's positive item is scored against the other rows' items, accidental hits
(another row holding the same item) are removed by id, and with ``--logq on`` each candidate's logit is
corrected by ``log q`` (its share of the training log; with ``--logq-source estimated``, estimated inside the
jitted step by ``recloss.sampling.frequency_update``). Run ``python examples/two_tower_jax.py`` (add
``--short`` for a few-second run); see ``common.py`` for the data, the evaluation and the options.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
import optax

import recloss
from common import Config, TrainResult, Variant, batches, main
from data import Interactions

Params = dict[str, jax.Array]


def init_params(key: jax.Array, num_users: int, num_items: int, dim: int) -> Params:
    """The two towers' id embedding tables, ``N(0, 0.1^2)``."""
    user_key, item_key = jax.random.split(key)
    return {"users": 0.1 * jax.random.normal(user_key, (num_users, dim)),
            "items": 0.1 * jax.random.normal(item_key, (num_items, dim))}


def towers(params: Params, users: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The user and item embeddings, L2-normalised (dot products are cosines)."""
    def normalize(x: jax.Array) -> jax.Array:
        return x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    return normalize(params["users"][users]), normalize(params["items"][items])


TrainStep = Callable[..., tuple[Params, optax.OptState, Any, jax.Array]]


def make_train_step(optimizer: optax.GradientTransformation, temperature: float) -> TrainStep:
    """The jitted step: loss and gradients of a batch, then the optimiser's update. ``log_q`` is ``[B]`` or
    None (no logQ correction), ``item_ids`` ``[B]`` or None (accidental hits kept); None is an empty pytree,
    so each choice compiles once. With a frequency estimator state ``counts``
    (``recloss.sampling.frequency_init()``), logQ is the estimate for the batch's item ids and the state is
    updated with them."""

    @jax.jit
    def train_step(params: Params, opt_state: optax.OptState, counts: recloss.sampling.FrequencyState | None,
                   users: jax.Array, items: jax.Array, log_q: jax.Array | None, item_ids: jax.Array | None
                   ) -> tuple[Params, optax.OptState, recloss.sampling.FrequencyState | None, jax.Array]:
        if counts is not None:
            log_q, counts = recloss.sampling.frequency_update(counts, items)

        def loss_fn(params: Params) -> jax.Array:
            query, candidate = towers(params, users, items)
            return recloss.sampled_softmax_loss(query, candidate, temperature=temperature, in_batch=True,
                                                pos_ids=item_ids, pos_log_q=log_q)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, counts, loss

    return train_step


def train(data: Interactions, config: Config, variant: Variant) -> TrainResult:
    params = init_params(jax.random.key(config.seed), data.num_users, data.num_items, config.dim)
    optimizer = optax.adam(config.learning_rate)
    opt_state = optimizer.init(params)
    train_step = make_train_step(optimizer, config.temperature)
    counts = recloss.sampling.frequency_init() if variant.estimated else None
    rng = np.random.default_rng(config.seed)
    epoch_losses = []
    for _ in range(config.epochs):
        losses = []
        for batch in batches(data, config.batch_size, rng):
            log_q = batch["log_q"] if variant.log_q and not variant.estimated else None
            item_ids = batch["item"] if variant.remove_hits else None
            params, opt_state, counts, loss = train_step(params, opt_state, counts, batch["user"], batch["item"],
                                                         log_q, item_ids)
            losses.append(loss)
        epoch_losses.append(float(np.mean(jax.device_get(losses))))
    everyone = towers(params, jnp.arange(data.num_users), jnp.arange(data.num_items))
    return TrainResult(epoch_losses, *(np.asarray(x) for x in everyone))


if __name__ == "__main__":
    main("JAX", train, backend="jax")
