"""Multi-worker checks of the frequency estimator and the negative queue with ``gather``, run by
``tests/test_sampling_distributed.py``:

``python tests/sampling_distributed_scripts.py torch <rank> <init>``  2 gloo ranks (local batches of 5 and 3 ids)
``python tests/sampling_distributed_scripts.py jax``                  ``shard_map`` over 2 host devices
``python tests/sampling_distributed_scripts.py tensorflow``           Keras layers in ``strategy.run`` of a
                                                                       ``MirroredStrategy`` on 2 logical CPUs

Every worker must end with the state of one process fed the global batches (the workers' batches in worker
order), bit for bit against the float32 NumPy reference, and return the log Q of its own ids read from the
previous steps. Each prints ``OK`` and exits 0 when every check holds.
"""

from __future__ import annotations

import os
import sys

import numpy as np

BUCKETS, DECAY, SIZE, DIM, STEPS = 1 << 10, 2.0 ** -4, 6, 3, 4
SIZES = (5, 3)   # local batch sizes (unequal: torch and TensorFlow); JAX uses 4 and 4


def _stream(sizes: tuple[int, ...], seed: int = 0) -> list[list[dict[str, np.ndarray]]]:
    """Per step, per worker: ids (64-bit, some beyond 2**32, shared across workers), emb, log_q."""
    rng = np.random.default_rng(seed)
    steps = []
    for _ in range(STEPS):
        steps.append([{"ids": rng.integers(0, 12, n) + (1 << 33) * (rng.random(n) < 0.3),
                       "emb": rng.normal(size=(n, DIM)).astype(np.float32),
                       "log_q": rng.normal(size=n).astype(np.float32)} for n in sizes])
    return steps


def _expected(steps) -> tuple[list[list[np.ndarray]], object, object]:
    """The reference fed the global batches: per step the log Q of each worker's ids, the final estimator
    state (float32) and the final queue."""
    from recloss.reference import sampling as reference

    state = reference.frequency_init(BUCKETS, 2, DECAY, "float32")
    queue = reference.queue_init(SIZE, DIM)
    log_qs = []
    for workers in steps:
        log_qs.append([reference.frequency_log_q(state, w["ids"]) for w in workers])
        everything = np.concatenate([w["ids"] for w in workers])
        state = reference.frequency_update(state, everything)
        queue = reference.queue_push(queue, np.concatenate([w["emb"] for w in workers]), everything,
                                     np.concatenate([w["log_q"] for w in workers]))
    return log_qs, state, queue


def _check(worker: str, log_qs, state, queue, steps, rank: int | None = None) -> None:
    """``log_qs``: per step, the log Q this worker read (``rank``) or every worker's, in worker order (None)."""
    want_log_q, want_state, want_queue = _expected(steps)
    for step, (got, want) in enumerate(zip(log_qs, want_log_q)):
        want = want[rank] if rank is not None else np.concatenate(want)
        np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=1e-6,
                                   err_msg=f"{worker}: log Q of step {step}")
    assert np.array_equal(np.asarray(state[0]), want_state.counts), f"{worker}: estimator counts"
    assert np.array_equal(np.asarray(state[1]), want_state.norm), f"{worker}: estimator norm"
    for name, got, want in zip(("emb", "ids", "log_q"), queue, want_queue[:3]):
        assert np.array_equal(np.asarray(got), want), f"{worker}: queue {name}"


# ----------------------------------------------------------------------------------------------------------


def torch_checks(rank: int, init: str) -> None:
    import torch
    import torch.distributed as dist

    import recloss.torch
    from recloss import sampling

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    steps = _stream(SIZES)
    group = dist.new_group([0, 1])
    for gather in (True, group):       # the default group, and a ProcessGroup as the option
        estimator = recloss.torch.FrequencyEstimator(BUCKETS, 2, DECAY, gather=gather)
        queue = recloss.torch.NegativeQueue(SIZE, DIM, gather=gather)
        log_qs = []
        for workers in steps:
            mine = workers[rank]
            log_qs.append(estimator(torch.from_numpy(mine["ids"])).numpy())
            queue.push(torch.from_numpy(mine["emb"]), torch.from_numpy(mine["ids"]), torch.from_numpy(mine["log_q"]))
        _check(f"torch rank {rank}", log_qs, (estimator.counts.numpy(), estimator.norm.numpy()),
               [x.numpy() for x in (queue.emb, queue.ids, queue.log_q)], steps, rank)
    # The functions, with torch tensors.
    state, qstate, log_qs = sampling.frequency_init(BUCKETS, 2, DECAY, backend="torch"), sampling.queue_init(
        SIZE, DIM, backend="torch"), []
    for workers in steps:
        mine = workers[rank]
        log_q, state = sampling.frequency_update(state, torch.from_numpy(mine["ids"]), gather=True)
        log_qs.append(log_q.numpy())
        qstate = sampling.queue_push(qstate, torch.from_numpy(mine["emb"]), torch.from_numpy(mine["ids"]),
                                     torch.from_numpy(mine["log_q"]), gather=True)
    _check(f"torch functions rank {rank}", log_qs, (state.counts.numpy(), state.norm.numpy()),
           [x.numpy() for x in qstate[:3]], steps, rank)
    dist.destroy_process_group()


def jax_checks() -> None:
    import jax
    from jax.sharding import NamedSharding, PartitionSpec as P

    from recloss import sampling

    jax.config.update("jax_enable_x64", True)   # 64-bit ids inside shard_map
    steps = _stream((4, 4))
    mesh = jax.make_mesh((2,), ("data",))

    def local(state, queue, ids, emb, log_q):
        log_q_read, state = sampling.frequency_update(state, ids, gather="data")
        queue = sampling.queue_push(queue, emb, ids, log_q, gather="data")
        return log_q_read, state, queue

    state_spec = sampling.FrequencyState(P(), P(), P())
    queue_spec = sampling.QueueState(P(), P(), P(), P(), P())
    step = jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(state_spec, queue_spec, P("data"), P("data"), P("data")),
                                 out_specs=(P("data"), state_spec, queue_spec)))
    state, queue, log_qs = sampling.frequency_init(BUCKETS, 2, DECAY), sampling.queue_init(SIZE, DIM), []
    rows, everywhere = NamedSharding(mesh, P("data")), NamedSharding(mesh, P())
    state, queue = (jax.tree.map(lambda x: jax.device_put(x, everywhere), tree) for tree in (state, queue))
    with jax.set_mesh(mesh):
        for workers in steps:
            ids, emb, log_q = (jax.device_put(np.concatenate([w[k] for w in workers]), rows)
                               for k in ("ids", "emb", "log_q"))
            log_q_read, state, queue = step(state, queue, ids, emb, log_q)
            log_qs.append(np.asarray(log_q_read))
    _check("jax shard_map", log_qs, (state.counts, state.norm), queue[:3], steps)


def tensorflow_checks() -> None:
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import recloss.keras

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    steps = _stream(SIZES)
    with strategy.scope():
        estimator = recloss.keras.FrequencyEstimator(BUCKETS, 2, DECAY, gather=True)
        queue = recloss.keras.NegativeQueue(SIZE, DIM, gather=True)

    @tf.function
    def step(ids, emb, log_q):
        def replica(ids, emb, log_q):
            read = estimator(ids, training=True)
            queue.push(emb, ids, log_q)
            return read
        return strategy.run(replica, args=(ids, emb, log_q))

    log_qs = []
    for workers in steps:
        values = {key: strategy.experimental_distribute_values_from_function(
            lambda ctx, key=key: tf.constant(workers[ctx.replica_id_in_sync_group][key])) for key in workers[0]}
        reads = step(values["ids"], values["emb"], values["log_q"])
        log_qs.append(np.concatenate([r.numpy() for r in strategy.experimental_local_results(reads)]))
    for replica in range(2):
        def local(variable):
            value = variable.value
            return (strategy.experimental_local_results(value)[replica] if hasattr(value, "values") else value).numpy()
        _check(f"tensorflow replica {replica}", log_qs, (local(estimator.counts), local(estimator.norm)),
               [local(v) for v in (queue.emb, queue.ids, queue.log_q)], steps)


if __name__ == "__main__":
    scenario = sys.argv[1]
    if scenario == "torch":
        torch_checks(int(sys.argv[2]), sys.argv[3])
    elif scenario == "jax":
        jax_checks()
    elif scenario == "tensorflow":
        tensorflow_checks()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print("OK")
