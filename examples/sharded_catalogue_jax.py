"""The full-catalogue softmax over an item table split by rows across 4 JAX devices (``shard_map``), against the
same training with the whole table on one device.

The item table ``[N, D]`` is sharded by rows over the mesh axis ``"data"`` (each device holds ``N / 4`` rows),
the user table is replicated, and each device takes a quarter of the global batch. Inside ``jax.shard_map``
each device looks its positive items up in the split table (:func:`row_split_lookup`: gather the ids, fill in
the rows it holds, ``psum_scatter`` the rows back to their devices) and calls

    recloss.sampled_softmax_loss(query, pos_emb, shard, pos_ids=items, neg_ids=shard_ids, in_batch=False,
                                 shard_negatives="data")

which scores every device's rows against every shard (each row's own item removed by id on the shard that
holds it); the shards never move. ``jax.grad`` of the ``shard_map``ped loss gives the one-device gradient, the
item table's sharded like the table, and optax's Adam updates both as on one device: the loss curve agrees
with the one-device curve to float32 rounding.

    python examples/sharded_catalogue_jax.py [--short] [--steps N]

On a CPU the 4 devices are host devices (``XLA_FLAGS=--xla_force_host_platform_device_count=4``, set here when
no device count is given).
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

if "xla_force_host_platform_device_count" not in os.environ.get("XLA_FLAGS", ""):
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402
from jax import lax  # noqa: E402
from jax.sharding import NamedSharding, PartitionSpec as P  # noqa: E402

import recloss  # noqa: E402
from common import FULL, SHORT, Config, batches  # noqa: E402
from data import generate  # noqa: E402

WORKERS = 4
AXIS = "data"


def normalize(x: jax.Array) -> jax.Array:
    return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def row_split_lookup(shard: jax.Array, ids: jax.Array, first: jax.Array) -> jax.Array:
    """Inside ``shard_map``: the rows ``[B_r, D]`` of this device's ``ids`` from the table split by rows over
    ``AXIS`` (this device holds ``shard``, the rows from ``first`` on). JAX differentiates it: the gradient of
    each row reaches the shard that holds it."""
    every = lax.all_gather(ids, AXIS, tiled=True)                       # every device's ids, [W B_r]
    local = every - first
    held = (local >= 0) & (local < shard.shape[0])
    rows = jnp.where(held[:, None], shard[jnp.clip(local, 0, shard.shape[0] - 1)], 0.0)
    return lax.psum_scatter(rows, AXIS, scatter_dimension=0, tiled=True)   # each device its own rows, summed


def sharded_loss(mesh: Any, temperature: float) -> Any:
    """``(params, users, items) -> loss``: the global batch's full-catalogue softmax through ``shard_map``."""
    def local(user_table: jax.Array, shard: jax.Array, users: jax.Array, items: jax.Array) -> jax.Array:
        first = lax.axis_index(AXIS) * shard.shape[0]
        query = normalize(user_table[users])
        positive = normalize(row_split_lookup(shard, items, first))
        return recloss.sampled_softmax_loss(query, positive, normalize(shard), temperature=temperature,
                                            in_batch=False, pos_ids=items, neg_ids=first + jnp.arange(shard.shape[0]),
                                            shard_negatives=AXIS)   # the loss of the global batch on every device
    mapped = jax.shard_map(local, mesh=mesh, in_specs=(P(), P(AXIS), P(AXIS), P(AXIS)), out_specs=P())
    return lambda params, users, items: mapped(params["users"], params["items"], users, items)


def one_device_loss(temperature: float) -> Any:
    def loss(params: dict, users: jax.Array, items: jax.Array) -> jax.Array:
        candidates = normalize(params["items"])
        return recloss.sampled_softmax_loss(normalize(params["users"][users]), candidates[items], candidates,
                                            temperature=temperature, in_batch=False, pos_ids=items,
                                            neg_ids=jnp.arange(candidates.shape[0]))
    return loss


def train(loss: Any, params: dict, steps_data: list, config: Config, place: Any) -> list[float]:
    optimizer = optax.adam(config.learning_rate)
    state = optimizer.init(params)

    @jax.jit
    def step(params: dict, state: Any, users: jax.Array, items: jax.Array) -> tuple:
        value, grads = jax.value_and_grad(loss)(params, users, items)
        updates, state = optimizer.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    losses = []
    for batch in steps_data:
        params, state, value = step(params, state, place(batch["user"]), place(batch["item"]))
        losses.append(float(value))
    return losses


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="600 users x 400 items (a few seconds)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: 2 epochs of the data)")
    args = parser.parse_args(argv)
    config = SHORT if args.short else FULL
    data = generate(config.num_users, config.num_items, seed=config.seed)
    steps = args.steps or 2 * (len(data.train_items) // config.batch_size)
    rng = np.random.default_rng(config.seed)
    steps_data: list = []
    while len(steps_data) < steps:
        steps_data += list(batches(data, config.batch_size, rng))
    steps_data = steps_data[:steps]
    key_users, key_items = jax.random.split(jax.random.key(config.seed))
    params = {"users": jax.random.normal(key_users, (data.num_users, config.dim)) * 0.1,
              "items": jax.random.normal(key_items, (data.num_items, config.dim)) * 0.1}

    mesh = jax.make_mesh((WORKERS,), (AXIS,))
    with jax.set_mesh(mesh):
        split = {"users": jax.device_put(params["users"], NamedSharding(mesh, P())),
                 "items": jax.device_put(params["items"], NamedSharding(mesh, P(AXIS)))}   # rows over the devices
        sharded = train(sharded_loss(mesh, config.temperature), split, steps_data, config,
                        lambda x: jax.device_put(jnp.asarray(x), NamedSharding(mesh, P(AXIS))))
    single = train(one_device_loss(config.temperature), params, steps_data, config, jnp.asarray)
    difference = float(np.max(np.abs(np.subtract(sharded, single))))
    for step in sorted({0, 1, steps // 4, steps // 2, 3 * steps // 4, steps - 1}):
        print(f"step {step:5d}: {WORKERS} devices {sharded[step]:.6f}   one device {single[step]:.6f}")
    print(f"{config.num_items} items, {steps} steps of {config.batch_size} rows: largest difference between the "
          f"curves {difference:.2e}")
    result = {"framework": "jax", "workers": WORKERS, "items": config.num_items, "steps": steps,
              "sharded_losses": sharded, "one_process_losses": single, "max_difference": difference}
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
