"""The functions are the JAX API (as optax's and rax's losses): a Flax NNX two-tower model trained with optax
calls ``recloss.sampled_softmax_loss`` like any JAX function, inside ``nnx.jit`` and ``nnx.value_and_grad``."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
optax = pytest.importorskip("optax")
nnx = pytest.importorskip("flax.nnx")

import jax.numpy as jnp  # noqa: E402

import recloss  # noqa: E402

USERS, ITEMS, DIM, BATCH = 40, 60, 8, 32


class TwoTower(nnx.Module):
    def __init__(self, rngs: nnx.Rngs) -> None:
        self.users = nnx.Embed(USERS, DIM, rngs=rngs)
        self.items = nnx.Embed(ITEMS, DIM, rngs=rngs)

    def __call__(self, users: jax.Array, items: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.users(users), self.items(items)


def loss_fn(model: TwoTower, users: jax.Array, items: jax.Array, log_q: jax.Array) -> jax.Array:
    query, item = model(users, items)
    return recloss.sampled_softmax_loss(query, item, temperature=0.1, pos_ids=items, pos_log_q=log_q)


@nnx.jit
def train_step(model: TwoTower, optimizer: nnx.Optimizer, users, items, log_q) -> jax.Array:
    loss, grads = nnx.value_and_grad(loss_fn)(model, users, items, log_q)
    optimizer.update(model, grads)
    return loss


def test_one_nnx_jit_step_with_optax_adam_lowers_the_loss():
    rng = np.random.default_rng(0)
    users = jnp.asarray(rng.integers(0, USERS, BATCH))
    items = jnp.asarray(rng.integers(0, ITEMS, BATCH))  # repeated items: accidental hits are removed
    log_q = jnp.log(jnp.asarray(rng.uniform(0.01, 0.2, BATCH), jnp.float32))
    model = TwoTower(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2)), wrt=nnx.Param)

    query, item = (np.asarray(x, np.float64) for x in model(users, items))
    reference = recloss.sampled_softmax_loss(query, item, temperature=0.1, pos_ids=np.asarray(items),
                                             pos_log_q=np.asarray(log_q, np.float64))
    first = train_step(model, optimizer, users, items, log_q)
    np.testing.assert_allclose(float(first), reference, rtol=1e-5)
    after = loss_fn(model, users, items, log_q)
    assert float(after) < float(first)
