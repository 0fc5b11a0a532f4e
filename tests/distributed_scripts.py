"""Scenarios of cross-device negatives that need their own processes, run by ``tests/test_distributed.py``:

``python tests/distributed_scripts.py ddp <rank> <init>``  torch DistributedDataParallel, 2 gloo ranks
``python tests/distributed_scripts.py jax``                 JAX on 4 host devices: sharded ordinary calls, shard_map, pmap
``python tests/distributed_scripts.py tensorflow``          Keras ``model.fit`` (also eager) and ``strategy.run`` under MirroredStrategy

Each prints ``OK`` and exits 0 when every check holds; an ``AssertionError`` says which did not. All math is
checked against the same loss on one device on the concatenated (global) batch, in float64 (TensorFlow's eager and
plain-tensor checks: against a formula written in this script).
"""

from __future__ import annotations

import os
import sys

import numpy as np

# Local sizes of the two workers, unequal as in the last batch of an epoch; ids 0..3 collide across workers.
BATCH = (4, 3)
NEGATIVES = (2, 3)
FEATURES, DIM = 5, 4


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    b, n = sum(BATCH), sum(NEGATIVES)
    return {"xq": rng.normal(size=(b, FEATURES)), "xp": rng.normal(size=(b, FEATURES)),
            "xn": rng.normal(size=(n, FEATURES)), "pos_ids": rng.integers(0, 4, b), "neg_ids": rng.integers(0, 4, n),
            "pos_log_q": np.log(rng.uniform(0.05, 1.0, b)), "neg_log_q": np.log(rng.uniform(0.05, 1.0, n)),
            "weight": rng.uniform(0.0, 2.0, b)}


def _rows(sizes: tuple[int, ...], rank: int) -> slice:
    return slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))


def _close(a, b, what: str, tol: float = 1e-12) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-12)
    error = float(np.max(np.abs(a - b), initial=0.0)) / scale
    assert a.shape == b.shape and error <= tol, f"{what}: relative error {error:.2e} (shapes {a.shape}, {b.shape})"


# ----------------------------------------------------------------------------------------------------------
# torch: DistributedDataParallel


def ddp(rank: int, init: str) -> None:
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import recloss
    from recloss.kernels import softmax

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    data = {k: torch.tensor(v) for k, v in _data().items()}

    class TwoTower(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.query = torch.nn.Linear(FEATURES, DIM, dtype=torch.float64)
            # No bias on the item tower: a vector added to every candidate shifts a row's logits by a constant,
            # so its gradient is 0 and would compare rounding noise only.
            self.item = torch.nn.Linear(FEATURES, DIM, bias=False, dtype=torch.float64)

        def forward(self, xq, xp, xn):
            return self.query(xq), self.item(xp), self.item(xn)

    def loss(model, rows, negs, **options):
        q, p, n = model(data["xq"][rows], data["xp"][rows], data["xn"][negs])
        return recloss.sampled_softmax_loss(
            q, p, n, in_batch=True, temperature=0.5, pos_log_q=data["pos_log_q"][rows],
            neg_log_q=data["neg_log_q"][negs], pos_ids=data["pos_ids"][rows], neg_ids=data["neg_ids"][negs],
            sample_weight=data["weight"][rows], **options)

    everything = slice(None)
    for implementation, chunk in (("materialized", 4096), ("streaming", 2)):
        softmax.STREAMING_CHUNK = chunk           # chunks of 2 columns: boundaries inside every worker's rows
        model = DistributedDataParallel(TwoTower())
        value = loss(model, _rows(BATCH, rank), _rows(NEGATIVES, rank), gather=True, implementation=implementation)
        value.backward()                          # DDP averages the parameters' gradients over the ranks here
        single = TwoTower()
        expected = loss(single, everything, everything, implementation=implementation)
        expected.backward()
        _close(value.detach(), expected.detach(), f"{implementation}: rank {rank}'s value")
        for (name, got), (_, want) in zip(model.module.named_parameters(), single.named_parameters()):
            _close(got.grad, want.grad, f"{implementation}: DDP gradient of {name}")

    # A ProcessGroup as the option; info_nce_loss symmetric, "none": the local rows of the global problem.
    group = dist.new_group([0, 1])
    q, k = (torch.tensor(np.random.default_rng(1).normal(size=(sum(BATCH), DIM))) for _ in range(2))
    q, k = q.requires_grad_(True), (k * 0.5).requires_grad_(True)
    rows = _rows(BATCH, rank)
    local = recloss.info_nce_loss(q[rows], k[rows], ids=data["pos_ids"][rows], symmetric=True, normalize=True,
                                  reduction="none", gather=group)
    local.sum().backward()
    grads = [q.grad.clone(), k.grad.clone()]
    for grad in grads:
        dist.all_reduce(grad)                     # each rank's rows are its own: their gradients add up
    q0, k0 = q.detach().clone().requires_grad_(True), k.detach().clone().requires_grad_(True)
    full = recloss.info_nce_loss(q0, k0, ids=data["pos_ids"], symmetric=True, normalize=True, reduction="none")
    full.sum().backward()
    _close(local.detach(), full.detach()[rows], "info_nce rows")
    _close(grads[0], q0.grad, "info_nce d/dq")
    _close(grads[1], k0.grad, "info_nce d/dk")

    # A NaN on one worker makes every worker's loss NaN, as one device's loss would be.
    poisoned = q.detach().clone()
    poisoned[-1, 0] = float("nan")
    mean = recloss.info_nce_loss(poisoned[rows], k.detach()[rows], gather=True)
    rows_none = recloss.info_nce_loss(poisoned[rows], k.detach()[rows], gather=True, reduction="none")
    assert bool(torch.isnan(mean)) and bool(torch.isnan(rows_none).all()), f"rank {rank}: NaN did not propagate"
    dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------
# JAX: sharded arrays without the option, shard_map on an Auto mesh, pmap, several axes


def jax_checks() -> None:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import recloss
    from recloss.kernels import softmax

    jax.config.update("jax_enable_x64", True)
    softmax.STREAMING_CHUNK = 3
    rng = np.random.default_rng(0)
    q, p = (jnp.asarray(rng.normal(size=(8, DIM))) for _ in range(2))
    n = jnp.asarray(rng.normal(size=(12, DIM)))
    ids, neg_ids = jnp.asarray(rng.integers(0, 4, 8)), jnp.asarray(rng.integers(0, 4, 12))
    pos_log_q, neg_log_q = jnp.asarray(np.log(rng.uniform(0.05, 1, 8))), jnp.asarray(np.log(rng.uniform(0.05, 1, 12)))
    losses = {
        "sampled mixed": lambda q, p, n, ids, neg_ids, lq, nlq, impl: recloss.sampled_softmax_loss(
            q, p, n, in_batch=True, pos_ids=ids, neg_ids=neg_ids, pos_log_q=lq, neg_log_q=nlq, implementation=impl),
        "unsupervised": lambda q, p, n, ids, neg_ids, lq, nlq, impl:
            recloss.unsupervised_softmax_cross_entropy_loss(q, p, n, 0.5, implementation=impl),
        "info_nce symmetric": lambda q, p, n, ids, neg_ids, lq, nlq, impl: recloss.info_nce_loss(
            q, p, ids=ids, symmetric=True, implementation=impl),
    }
    arrays = (q, p, n, ids, neg_ids, pos_log_q, neg_log_q)
    # 1. No option, batch-sharded arrays under jit: the single-device result with Auto and Explicit axes.
    # (Auto leaves the partitioning to the compiler, whatever the implementation: one path is enough there.)
    # One device, materialised: the reference of both implementations (they agree to rounding).
    single = {name: jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)), static_argnums=7)(*arrays, "materialized")
              for name, f in losses.items()}
    for axis_type, implementations in ((AxisType.Auto, ("materialized",)),
                                       (AxisType.Explicit, ("materialized", "streaming"))):
        mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
        sharded = [jax.device_put(x, NamedSharding(mesh, P("data"))) for x in arrays]
        for name, f in losses.items():
            for impl in implementations:
                with jax.set_mesh(mesh):
                    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)), static_argnums=7)(*sharded, impl)
                want, want_grads = single[name]
                _close(value, want, f"{axis_type} {name} {impl}: value")
                for got, expected in zip(grads, want_grads):
                    _close(got, expected, f"{axis_type} {name} {impl}: gradient")

    # 2. shard_map on an Auto mesh without vma checks (the validation uses Explicit and checks); two axes.
    def global_loss(q, p, n, ids, neg_ids, lq, nlq, axis, size, nsize):
        index = lax.axis_index(axis)
        rows = lambda x, s: lax.dynamic_slice_in_dim(x, index * s, s)  # noqa: E731
        return recloss.sampled_softmax_loss(rows(q, size), rows(p, size), rows(n, nsize), in_batch=True,
                                            pos_ids=rows(ids, size), neg_ids=rows(neg_ids, nsize),
                                            pos_log_q=rows(lq, size), neg_log_q=rows(nlq, nsize),
                                            implementation="streaming", gather=axis)
    want, want_grads = single["sampled mixed"]
    mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Auto,))
    f = jax.shard_map(lambda *a: global_loss(*a, "data", 2, 3), mesh=mesh, in_specs=(P(),) * 7, out_specs=P(),
                      check_vma=False)
    value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(*arrays)
    _close(value, want, "shard_map, Auto mesh, check_vma=False: value")
    for got, expected in zip(grads, want_grads):
        _close(got, expected, "shard_map, Auto mesh, check_vma=False: gradient")
    mesh = jax.make_mesh((2, 2), ("a", "b"), axis_types=(AxisType.Explicit,) * 2)
    f = jax.shard_map(lambda *a: global_loss(*a, ("a", "b"), 2, 3), mesh=mesh, in_specs=(P(),) * 7, out_specs=P())
    with jax.set_mesh(mesh):
        value, grads = jax.jit(jax.value_and_grad(f, argnums=(0, 1, 2)))(*arrays)
    _close(value, want, "two mesh axes: value")
    for got, expected in zip(grads, want_grads):
        _close(got, expected, "two mesh axes: gradient")

    # 3. pmap: the global loss on every device; each device's gradient is 4x its share, so pmean is exact.
    def per_device(params, q_rows, ids_rows):
        value, grad = jax.value_and_grad(lambda w: recloss.sampled_softmax_loss(
            q_rows @ w, q_rows, pos_ids=ids_rows, gather="devices"))(params)
        return value, lax.pmean(grad, "devices")
    weights = jnp.asarray(rng.normal(size=(DIM, DIM)))
    values, grads = jax.pmap(per_device, axis_name="devices", in_axes=(None, 0, 0))(
        weights, q.reshape(4, 2, DIM), ids.reshape(4, 2))
    want, want_grad = jax.jit(jax.value_and_grad(lambda w: recloss.sampled_softmax_loss(q @ w, q, pos_ids=ids)))(
        weights)
    for device in range(4):
        _close(values[device], want, "pmap value")
        _close(grads[device], want_grad, "pmap pmean gradient")


# ----------------------------------------------------------------------------------------------------------
# TensorFlow: Keras model.fit, tf.function with per-replica batches of different sizes


def tensorflow_checks() -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    import keras

    import recloss

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.get_logger().setLevel("ERROR")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    data = _data()

    # 1. model.fit: compile(loss=...), a compute_loss override, add_loss (times the replicas); one SGD step with
    #    learning rate 1 moves the weights by exactly minus the single-device gradient, and fit reports the
    #    single-device loss (except for add_loss, whose display Keras averages over the replicas).
    batch = 8                                     # 4 rows per replica (Keras needs equal first batches)
    x, y = np.random.default_rng(3).normal(size=(2, batch, FEATURES)).astype("float32")

    def build():
        inputs = [keras.Input((FEATURES,)), keras.Input((FEATURES,))]
        towers = [keras.layers.Dense(DIM, kernel_initializer=keras.initializers.RandomNormal(seed=s), use_bias=bias)
                  for s, bias in ((1, True), (2, False))]        # an item bias has gradient 0 (see ddp)
        return keras.Model(inputs, keras.layers.Concatenate()([t(i) for t, i in zip(towers, inputs)]))

    def retrieval(y_pred, gather):
        return recloss.sampled_softmax_loss(y_pred[:, :DIM], y_pred[:, DIM:], temperature=0.5, gather=gather)

    single = build()
    with tf.GradientTape() as tape:
        want = retrieval(single([x, y]), None)
    want_grads = tape.gradient(want, single.trainable_weights)
    embeddings = tf.cast(single([x, y]), tf.float64)
    _close(want, _softmax_by_hand(tf, embeddings[:, :DIM], embeddings[:, DIM:], temperature=0.5),
           "one device: the formula", 1e-6)
    start = [w.numpy() for w in single.trainable_weights]
    dataset = tf.data.Dataset.from_tensor_slices(((x, y), np.zeros((batch, 1), "float32"))).batch(batch)
    for way in ("compile", "compute_loss", "add_loss", "compile, run_eagerly"):
        with strategy.scope():
            model = build()
            for variable, value in zip(model.trainable_weights, start):
                variable.assign(value)
            if way == "add_loss":        # Keras divides added losses by the replicas: the README's remedy
                class AddLoss(keras.layers.Layer):
                    def call(self, y_pred):
                        self.add_loss(retrieval(y_pred, True) * strategy.num_replicas_in_sync)
                        return y_pred
                inner = model
                inputs = [keras.Input((FEATURES,)), keras.Input((FEATURES,))]
                model = keras.Model(inputs, AddLoss()(inner(inputs)))
                model.compile(optimizer=keras.optimizers.SGD(1.0))
            elif way == "compute_loss":
                class Retrieval(keras.Model):
                    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
                        return retrieval(y_pred, True)
                inner = model
                inputs = [keras.Input((FEATURES,)), keras.Input((FEATURES,))]
                model = Retrieval(inputs, inner(inputs))
                model.compile(optimizer=keras.optimizers.SGD(1.0))
            else:                        # run_eagerly: eager strategy.run, where a compiled call would crash
                model.compile(optimizer=keras.optimizers.SGD(1.0), loss=lambda _, y_pred: retrieval(y_pred, True),
                              run_eagerly=way.endswith("run_eagerly"))
        history = model.fit(dataset, epochs=1, verbose=0)
        for before, after, grad in zip(start, model.trainable_weights, want_grads):
            _close(before - after.numpy(), grad, f"model.fit ({way}): SGD step", 1e-5)
        if way != "add_loss":            # fit displays the replicas' added losses averaged, not the global loss
            _close(history.history["loss"][0], float(want), f"model.fit ({way}): reported loss", 1e-6)

    # 2. tf.function around strategy.run, per-replica batches of 4 and 3 rows: shares sum to the global loss
    #    and the summed gradients are the single-device ones (the gathered size is known only at run time:
    #    the materialised path).
    tensors = {k: tf.constant(v) for k, v in data.items()}
    per_replica = {key: strategy.experimental_distribute_values_from_function(
        lambda ctx, key=key: tensors[key][_rows(BATCH if key != "neg_ids" else NEGATIVES,
                                                ctx.replica_id_in_sync_group)])
        for key in ("xq", "xp", "pos_ids", "pos_log_q", "weight", "neg_ids")}
    negatives = strategy.experimental_distribute_values_from_function(
        lambda ctx: tensors["xn"][_rows(NEGATIVES, ctx.replica_id_in_sync_group)])
    projection = tf.constant(np.random.default_rng(2).normal(size=(FEATURES, DIM)))

    def loss(w, xq, xp, xn, pos_ids, pos_log_q, weight, neg_ids, gather):
        return recloss.sampled_softmax_loss(xq @ w, xp @ w, xn @ w, in_batch=True, pos_ids=pos_ids, neg_ids=neg_ids,
                                            pos_log_q=pos_log_q, sample_weight=weight, implementation="streaming",
                                            gather=gather)

    @tf.function
    def step(inputs, xn):
        def replica(inputs, xn):
            with tf.GradientTape() as tape:
                tape.watch(projection)
                share = loss(projection, inputs["xq"], inputs["xp"], xn, inputs["pos_ids"], inputs["pos_log_q"],
                             inputs["weight"], inputs["neg_ids"], True)
            return share, tape.gradient(share, projection)
        shares, grads = strategy.run(replica, args=(inputs, xn))
        return (strategy.reduce(tf.distribute.ReduceOp.SUM, shares, axis=None),
                strategy.reduce(tf.distribute.ReduceOp.SUM, grads, axis=None))
    value, grad = step(per_replica, negatives)
    with tf.GradientTape() as tape:
        tape.watch(projection)
        want = loss(projection, tensors["xq"], tensors["xp"], tensors["xn"], tensors["pos_ids"], tensors["pos_log_q"],
                    tensors["weight"], tensors["neg_ids"], None)
    _close(value, want, "tf.function strategy.run: summed shares")
    _close(grad, tape.gradient(want, projection), "tf.function strategy.run: summed gradients")

    # 3. Eager strategy.run with gather=True (no tf.function), replicas of equal and of unequal sizes, three
    #    steps each: a signature's second eager call used to run compiled and crash in merge_call ("called
    #    while defining a new graph"). Against the formula on the concatenated batch.
    rng = np.random.default_rng(7)
    for batch, negatives in (((4, 4), (2, 2)), (BATCH, NEGATIVES)):
        b, n = sum(batch), sum(negatives)
        full = {"xq": rng.normal(size=(b, FEATURES)), "xp": rng.normal(size=(b, FEATURES)),
                "pos_ids": rng.integers(0, 4, b), "pos_log_q": np.log(rng.uniform(0.05, 1.0, b)),
                "weight": rng.uniform(0.0, 2.0, b), "xn": rng.normal(size=(n, FEATURES)),
                "neg_ids": rng.integers(0, 4, n), "neg_log_q": np.log(rng.uniform(0.05, 1.0, n))}
        full = {key: tf.constant(value) for key, value in full.items()}
        local = {key: strategy.experimental_distribute_values_from_function(
            lambda ctx, key=key, value=value: value[_rows(negatives if key.startswith(("xn", "neg")) else batch,
                                                          ctx.replica_id_in_sync_group)])
            for key, value in full.items()}
        with tf.GradientTape() as tape:
            tape.watch(projection)
            want = _softmax_by_hand(tf, full["xq"] @ projection, full["xp"] @ projection, full["xn"] @ projection,
                                    full["pos_log_q"], full["neg_log_q"], full["pos_ids"], full["neg_ids"],
                                    full["weight"], temperature=0.5)
        want_grad = tape.gradient(want, projection)

        def eager_replica(inputs, implementation):
            with tf.GradientTape() as tape:
                tape.watch(projection)
                share = recloss.sampled_softmax_loss(
                    inputs["xq"] @ projection, inputs["xp"] @ projection, inputs["xn"] @ projection, in_batch=True,
                    temperature=0.5, pos_log_q=inputs["pos_log_q"], neg_log_q=inputs["neg_log_q"],
                    pos_ids=inputs["pos_ids"], neg_ids=inputs["neg_ids"], sample_weight=inputs["weight"],
                    implementation=implementation, gather=True)
            return share, tape.gradient(share, projection)

        for implementation in ("materialized", "streaming"):
            for step in range(3):
                shares, grads = strategy.run(eager_replica, args=(local, implementation))
                what = f"eager strategy.run, replicas of {batch} rows, {implementation}, step {step + 1}"
                _close(sum(strategy.experimental_local_results(shares)), want, f"{what}: summed shares")
                _close(sum(strategy.experimental_local_results(grads)), want_grad, f"{what}: summed gradients")

    # 4. Plain tensors (not distributed values) passed to strategy.run: every replica holds the same rows, the
    #    global batch is their concatenation. TF's merge_call takes a value that is one object on every replica
    #    for one value: the all-gather returned one copy (replica 1's own positive then counted as a negative).
    q, p = (tf.constant(rng.normal(size=(4, DIM))) for _ in range(2))
    doubled = lambda x: tf.concat([x, x], 0)  # noqa: E731

    def plain_replica(q, p):
        with tf.GradientTape() as tape:
            tape.watch(q)
            share = recloss.sampled_softmax_loss(q, p, temperature=0.5, gather=True)
        rows = recloss.sampled_softmax_loss(q, p, temperature=0.5, gather=True, reduction="none")
        return share, tape.gradient(share, q), rows

    with tf.GradientTape() as tape:
        tape.watch(q)
        want_rows = _softmax_by_hand(tf, doubled(q), doubled(p), temperature=0.5, reduction="none")
        want = tf.reduce_mean(want_rows)
    want_grad = tape.gradient(want, q)
    for how, run in (("eager", lambda: strategy.run(plain_replica, args=(q, p))),
                     ("tf.function", tf.function(lambda: strategy.run(plain_replica, args=(q, p))))):
        shares, grads, rows = (strategy.experimental_local_results(v) for v in run())
        _close(sum(shares), want, f"plain tensors, {how}: summed shares")
        _close(sum(grads), want_grad, f"plain tensors, {how}: summed gradients")
        for replica, local_rows in enumerate(rows):
            _close(local_rows, want_rows[4 * replica:4 * replica + 4],
                   f"plain tensors, {how}: replica {replica}'s rows")


def _softmax_by_hand(tf, q, p, n=None, pos_log_q=None, neg_log_q=None, pos_ids=None, neg_ids=None, weight=None,
                     temperature=1.0, reduction="mean"):
    """The loss in plain TensorFlow operations, written here: each row's softmax over every row's positive
    (its own in column i) and the shared negatives, log Q subtracted from every column, the candidates whose id
    equals the row's positive id removed (its own positive kept); the weighted mean, or the rows."""
    rows_in = tf.matmul(q, p, transpose_b=True) / temperature
    if pos_log_q is not None:
        rows_in -= pos_log_q[None, :]
    keep = tf.eye(tf.shape(q)[0], dtype=tf.bool)
    keep = keep | (pos_ids[:, None] != pos_ids[None, :]) if pos_ids is not None else tf.ones_like(keep)
    blocks, keeps = [rows_in], [keep]
    if n is not None:
        blocks.append(tf.matmul(q, n, transpose_b=True) / temperature - neg_log_q[None, :])
        keeps.append(pos_ids[:, None] != neg_ids[None, :])
    scores = tf.where(tf.concat(keeps, 1), tf.concat(blocks, 1), tf.constant(-np.inf, q.dtype))
    rows = tf.reduce_logsumexp(scores, 1) - tf.linalg.diag_part(rows_in)
    if reduction == "none":
        return rows
    weight = tf.ones_like(rows) if weight is None else weight
    return tf.reduce_sum(rows * weight) / tf.reduce_sum(weight)


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "ddp":
        ddp(int(sys.argv[2]), sys.argv[3])
    elif scenario == "jax":
        jax_checks()
    elif scenario == "tensorflow":
        tensorflow_checks()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print("OK")
