"""Scenarios of cross-device negatives that need their own processes, run by ``tests/test_distributed.py``:

``python tests/distributed_scripts.py ddp <rank> <init>``  torch DistributedDataParallel, 2 gloo ranks
``python tests/distributed_scripts.py torch <rank> <init>`` torch: second derivatives, learnt temperature,
                                                            ranks whose calls differ, torch.func, compile
``python tests/distributed_scripts.py jax``                 JAX on 4 host devices: sharded ordinary calls and the
                                                            docs' examples (``jax_sharding_checks.py``), shard_map, pmap
``python tests/distributed_scripts.py tensorflow``          Keras ``model.fit`` (also eager) and ``strategy.run`` under MirroredStrategy

Each prints ``OK`` and exits 0 when every check holds; an ``AssertionError`` says which did not. All math is
checked against the same loss on one device on the concatenated (global) batch, in float64 (TensorFlow's eager and
plain-tensor checks: against a formula written in this script).
"""

from __future__ import annotations

import itertools
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
    _metric_objects(rank)
    dist.destroy_process_group()


def _metric_data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lists of the metric checks: scores, graded labels, a padding mask and list weights (two batches)."""
    rng = np.random.default_rng(5)
    rows = 2 * sum(BATCH)
    scores = rng.normal(size=(rows, 6))
    labels = rng.integers(0, 3, size=(rows, 6)).astype(np.float64)
    labels[3] = 0.0
    mask = rng.random((rows, 6)) < 0.8
    return scores, labels, mask, rng.uniform(0.0, 2.0, rows)


def _metric_objects(rank: int) -> None:
    """``recloss.torch.metrics``: each rank updates with its own lists (two batches of 4 and 3 rows): compute()
    on every rank equals one process over every list; ``process_group=False`` keeps the rank's own lists."""
    import torch

    import recloss
    import recloss.torch
    from recloss._native import class_name

    scores, labels, mask, weight = (torch.tensor(x) for x in _metric_data())
    mine = [_rows(BATCH, rank), slice(sum(BATCH) + _rows(BATCH, rank).start, sum(BATCH) + _rows(BATCH, rank).stop)]
    for name, k in (("ndcg", 3), ("map", None), ("dcg", 4), ("mrr", None), ("recall", 2), ("precision", 2),
                    ("hit_rate", 1)):
        cls = getattr(recloss.torch.metrics, class_name(name))
        shared, own = cls(k=k), cls(k=k, process_group=False)
        for rows in mine:
            for metric in (shared, own):
                metric.update(scores[rows], labels[rows], mask=mask[rows], sample_weight=weight[rows])
        function = getattr(recloss.metrics, name)
        want = function(scores.numpy(), labels.numpy(), k=k, mask=mask.numpy(), sample_weight=weight.numpy(),
                        backend="numpy")
        _close(shared.compute(), want, f"{name} over 2 ranks")
        local = np.concatenate([np.arange(sum(BATCH) * 2)[rows] for rows in mine])
        _close(own.compute(), function(scores.numpy()[local], labels.numpy()[local], k=k, mask=mask.numpy()[local],
                                       sample_weight=weight.numpy()[local], backend="numpy"), f"{name} on one rank")
        shared.reset()
        assert float(shared.compute()) == 0.0, f"{name}: reset"


# ----------------------------------------------------------------------------------------------------------
# torch: second derivatives, the learnt temperature, ranks whose calls differ, torch.func and torch.compile


def _plain_losses():
    """The three losses with ``gather`` written as plain torch on one device (no ids, no logQ): the
    independent float64 formulas the gathered calls are compared with."""
    import torch
    import torch.nn.functional as F

    def sampled(q, p, n, temperature):    # in-batch and shared negatives: row i's positive is column i
        logits = q @ torch.cat([p, n]).T / temperature
        return F.cross_entropy(logits, torch.arange(q.shape[0]))

    def info_nce(q, k, temperature):      # symmetric
        target = torch.arange(q.shape[0])
        return 0.5 * (F.cross_entropy(q @ k.T / temperature, target) + F.cross_entropy(k @ q.T / temperature, target))

    def unsupervised(q, p, n, temperature):
        logits = torch.cat([(q * p).sum(-1, keepdim=True), q @ n.T], 1) / temperature
        return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.int64))

    return sampled, info_nce, unsupervised


def torch_checks(rank: int, init: str) -> None:
    import datetime

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    import recloss
    import recloss.torch
    from recloss.kernels import softmax

    torch.set_num_threads(1)
    # A short timeout: a check that hangs fails in a minute, not in the default 30.
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2, timeout=datetime.timedelta(seconds=60))
    sampled, info_nce, unsupervised = _plain_losses()
    rng = np.random.default_rng(4)
    Q, P = (torch.tensor(rng.normal(size=(sum(BATCH), DIM))) for _ in range(2))
    NEG = torch.tensor(rng.normal(size=(sum(NEGATIVES), DIM)))
    rows, negs, workers = _rows(BATCH, rank), _rows(NEGATIVES, rank), 2
    # (name, recloss call on the local rows with gather, plain formula on the global batch, takes negatives)
    losses = [
        ("sampled_softmax_loss mixed", lambda q, p, n, t, **o: recloss.sampled_softmax_loss(
            q, p, n, in_batch=True, temperature=t, gather=True, **o), sampled),
        ("info_nce_loss symmetric", lambda q, p, n, t, **o: recloss.info_nce_loss(
            q, p, temperature=t, symmetric=True, gather=True, **o), lambda q, p, n, t: info_nce(q, p, t)),
        ("unsupervised_softmax_cross_entropy_loss", lambda q, p, n, t, **o:
            recloss.unsupervised_softmax_cross_entropy_loss(q, p, n, t, gather=True, **o), unsupervised),
    ]

    def leaves(*tensors):
        return [t.detach().clone().requires_grad_(True) for t in tensors]

    # 1. Second derivatives through the gathered candidates (the construction): g = dL/dp with
    #    create_graph, then the gradient of sum(g**2). Each rank's g is W times its share of the global
    #    gradient, and the second backward differentiates the sum of every rank's penalty.
    softmax.STREAMING_CHUNK = 2
    gathered = {"sampled_softmax_loss mixed": (1, 2), "info_nce_loss symmetric": (1,),
                "unsupervised_softmax_cross_entropy_loss": (2,)}     # positions in (q, p, n)
    for (name, call, plain), implementation in itertools.product(losses, ("materialized", "streaming")):
        for wrt in gathered[name]:
            want_q, want_p, want_n = leaves(Q, P, NEG)
            (g_all,) = torch.autograd.grad(workers * plain(want_q, want_p, want_n, 0.5),
                                           (want_q, want_p, want_n)[wrt], create_graph=True)
            want = torch.autograd.grad((g_all ** 2).sum(), (want_q, want_p, want_n), allow_unused=True,
                                       materialize_grads=True)
            q, p, n = leaves(Q[rows], P[rows], NEG[negs])
            loss = call(q, p, n, 0.5, implementation=implementation)
            (g,) = torch.autograd.grad(loss, (q, p, n)[wrt], create_graph=True)
            got = torch.autograd.grad((g ** 2).sum(), (q, p, n), allow_unused=True, materialize_grads=True)
            what = f"{name} {implementation}, penalty on {'qpn'[wrt]}"
            _close(g.detach(), g_all.detach()[(rows, rows, negs)[wrt]], f"{what}: first derivative")
            for label, a, b, part in zip("qpn", got, want, (rows, rows, negs)):
                _close(a, b[part], f"{what}: second derivative in {label}")
    softmax.STREAMING_CHUNK = 4096

    # 2. A learnt temperature (recloss.torch modules) gets the one-process gradient on every rank, outside
    #    DistributedDataParallel and inside a DDP-wrapped model.
    classes = {"sampled_softmax_loss mixed": (recloss.torch.SampledSoftmaxLoss, dict(in_batch=True)),
               "info_nce_loss symmetric": (recloss.torch.InfoNCELoss, dict(symmetric=True)),
               "unsupervised_softmax_cross_entropy_loss": (recloss.torch.UnsupervisedSoftmaxCrossEntropyLoss, {})}
    for name, _, plain in losses:
        cls, options = classes[name]
        plain_module = cls(temperature=0.5, learn_temperature=True, gather=True, **options).double()
        (scale,) = leaves(plain_module.logit_scale)     # log 2, as the module holds it (from float32)
        (want,) = torch.autograd.grad(plain(Q, P, NEG, torch.exp(-scale)), scale)
        inputs = (Q[rows], P[rows]) + ((NEG[negs],) if name != "info_nce_loss symmetric" else ())
        plain_module(*inputs).backward()

        class Wrapped(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.tower = torch.nn.Linear(DIM, DIM, dtype=torch.float64)
                self.loss = cls(temperature=0.5, learn_temperature=True, gather=True, **options).double()

            def forward(self, *x):
                return self.loss(*x) + 0.0 * self.tower(x[0]).sum()
        wrapped = DistributedDataParallel(Wrapped())
        wrapped(*inputs).backward()
        for where, module in (("outside DDP", plain_module), ("inside DDP", wrapped.module.loss)):
            _close(module.logit_scale.grad, want, f"{name}: learnt temperature's gradient {where}")

    # 3. Ranks whose calls differ: every rank raises the same OptionError before any collective of the call
    #    (nothing crashes or waits), and the group stays usable.
    q, p = leaves(Q[rows], P[rows])
    n = NEG[negs]
    ids, neg_ids, log_q = torch.arange(len(q)), torch.arange(len(n)), torch.zeros(len(q), dtype=torch.float64)
    second = rank == 1
    mismatches = {
        "`query_emb` float64 [B, 4] requiring grad on rank 0 and float32 [B, 4] requiring grad on rank 1":
            lambda: recloss.sampled_softmax_loss(*(leaves(q.float(), p.float()) if second else (q, p)), gather=True),
        "`query_emb` float64 [B, 4] requiring grad on rank 0 and float64 [B, 3] requiring grad on rank 1":
            lambda: recloss.sampled_softmax_loss(*(leaves(q[:, :3], p[:, :3]) if second else (q, p)), gather=True),
        "`pos_emb` float64 [B, 4] requiring grad on rank 0 and float64 [B, 4] not requiring grad on rank 1":
            lambda: recloss.sampled_softmax_loss(q, p.detach() if second else p, gather=True),
        "`neg_emb` absent on rank 0 and float64 [N, 4] not requiring grad on rank 1":
            lambda: recloss.sampled_softmax_loss(q, p, n if second else None, in_batch=True, gather=True),
        "`pos_log_q` absent on rank 0 and float64 [B] not requiring grad on rank 1":
            lambda: recloss.sampled_softmax_loss(q, p, pos_log_q=log_q if second else None, gather=True),
        "`pos_ids` int64 [B] on rank 0 and absent on rank 1":
            lambda: recloss.sampled_softmax_loss(q, p, pos_ids=None if second else ids, gather=True),
        "`neg_ids` absent on rank 0 and int64 [N] on rank 1":
            lambda: recloss.sampled_softmax_loss(q, p, n, pos_ids=ids, neg_ids=neg_ids if second else None,
                                                 gather=True),
        "`sample_weight` absent on rank 0 and float64 [B] not requiring grad on rank 1":
            lambda: recloss.info_nce_loss(q, p, sample_weight=log_q + 1 if second else None, gather=True),
        "`symmetric` False on rank 0 and True on rank 1": lambda: recloss.info_nce_loss(q, p, symmetric=second,
                                                                                        gather=True),
        "`reduction` 'mean' on rank 0 and 'none' on rank 1":
            lambda: recloss.unsupervised_softmax_cross_entropy_loss(q, p, n, reduction="none" if second else "mean",
                                                                    gather=True),
        "the loss info_nce_loss on rank 0 and sampled_softmax_loss on rank 1":
            lambda: (recloss.sampled_softmax_loss if second else recloss.info_nce_loss)(q, p, gather=True),
    }
    for words, call in mismatches.items():
        try:
            call()
        except recloss.OptionError as error:
            message = str(error)
        else:
            raise AssertionError(f"rank {rank}: no error for {words}")
        assert words in message and "`gather=True` needs the same call on every rank" in message, message
        messages = [None, None]           # the same words on both ranks, after each one's own loss name
        dist.all_gather_object(messages, message.split(":", 1)[1])
        assert messages[0] == messages[1], messages
    with torch.no_grad():                 # grad disabled on every rank: they agree
        value = recloss.sampled_softmax_loss(q, p, gather=True)
    _close(value, sampled(Q, P, P[:0], 1.0).detach(), "a call after the refused ones")

    # 4. torch.func.grad, vmap, and torch.compile(fullgraph=True) (equal local sizes under compile).
    name, call, plain = losses[0]
    want_q, want_p, want_n = leaves(Q, P, NEG)
    want = plain(want_q, want_p, want_n, 0.5)
    want_grads = torch.autograd.grad(workers * want, (want_q, want_p, want_n))
    got_grads = torch.func.grad(lambda *x: call(*x, 0.5), argnums=(0, 1, 2))(Q[rows], P[rows], NEG[negs])
    for label, a, b, part in zip("qpn", got_grads, want_grads, (rows, rows, negs)):
        _close(a, b[part], f"torch.func.grad: gradient in {label}")
    scales = torch.tensor([1.0, 2.0], dtype=torch.float64)      # two problems: the inputs scaled by 1 and by 2
    values = torch.func.vmap(lambda c: call(Q[rows] * c, P[rows], NEG[negs] * c, 0.5))(scales)
    _close(values, torch.stack([plain(Q * c, P, NEG * c, 0.5) for c in scales]).detach(), "vmap: values")
    # c is replicated: each rank's gradient is W times its share, and their average (DDP's) the global one.
    per_problem = torch.func.vmap(torch.func.grad(lambda c: call(Q[rows] * c, P[rows], NEG[negs] * c, 0.5)))(scales)
    dist.all_reduce(per_problem)
    want_scale = torch.stack([torch.autograd.grad(plain(Q * c, P, NEG * c, 0.5), c)[0]
                              for c in scales.clone().requires_grad_(True).unbind()])
    _close(per_problem / workers, want_scale, "vmap of torch.func.grad")

    half, half_negs = _rows((4, 4), rank), _rows((2, 2), rank)     # equal local sizes
    Q8, P8, NEG4 = (torch.tensor(rng.normal(size=(size, DIM))) for size in (8, 8, 4))
    # dynamic=False: a call of other sizes recompiles with static sizes (recloss's validation does not trace
    # with symbolic sizes under fullgraph=True; see the README's torch.compile notes).
    compiled = torch.compile(lambda q, p, n: call(q, p, n, 0.5), fullgraph=True, dynamic=False)
    q, p, n = leaves(Q8[half], P8[half], NEG4[half_negs])
    value = compiled(q, p, n)
    value.backward()
    want_q, want_p, want_n = leaves(Q8, P8, NEG4)
    want = plain(want_q, want_p, want_n, 0.5)
    (workers * want).backward()
    _close(value.detach(), want.detach(), "torch.compile(fullgraph=True): value")
    for label, a, b, part in zip("qpn", (q.grad, p.grad, n.grad), (want_q.grad, want_p.grad, want_n.grad),
                                 (half, half, half_negs)):
        _close(a, b[part], f"torch.compile(fullgraph=True): gradient in {label}")
    try:                                  # unequal local sizes: the traced call refuses them at run time
        compiled(*leaves(Q[rows], P[rows], NEG[negs]))
    except recloss.OptionError as error:
        message = str(error)
    else:
        raise AssertionError(f"rank {rank}: torch.compile with unequal local sizes did not refuse them")
    assert message == ("sampled_softmax_loss: `gather=True` needs the same local sizes on every rank under "
                       "torch.compile (the traced call cannot read the other ranks' sizes); got B = 4 on rank 0 "
                       "and 3 on rank 1 (drop the last incomplete batch, e.g. DataLoader(drop_last=True), or call "
                       "the loss outside the compiled function, e.g. through torch.compiler.disable)"), message
    dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------
# JAX: sharded arrays without the option, shard_map on an Auto mesh, pmap, several axes


def jax_checks() -> None:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    import jax_sharding_checks  # beside this script
    import recloss
    from recloss.kernels import softmax

    jax.config.update("jax_enable_x64", True)
    softmax.STREAMING_CHUNK = 3
    rng = np.random.default_rng(0)
    q, p = (jnp.asarray(rng.normal(size=(8, DIM))) for _ in range(2))
    n = jnp.asarray(rng.normal(size=(12, DIM)))
    ids, neg_ids = jnp.asarray(rng.integers(0, 4, 8)), jnp.asarray(rng.integers(0, 4, 12))
    pos_log_q, neg_log_q = jnp.asarray(np.log(rng.uniform(0.05, 1, 8))), jnp.asarray(np.log(rng.uniform(0.05, 1, 12)))
    def sampled_mixed(q, p, n, ids, neg_ids, lq, nlq, impl):
        return recloss.sampled_softmax_loss(q, p, n, in_batch=True, pos_ids=ids, neg_ids=neg_ids, pos_log_q=lq,
                                            neg_log_q=nlq, implementation=impl)
    arrays = (q, p, n, ids, neg_ids, pos_log_q, neg_log_q)
    # 1. No option, batch-sharded arrays under jit (Auto and Explicit axes); the cross-device guide's sharding examples.
    jax_sharding_checks.batch_sharded_checks()
    jax_sharding_checks.guide_sharding_examples()
    single = jax.jit(jax.value_and_grad(sampled_mixed, argnums=(0, 1, 2)), static_argnums=7)(*arrays, "materialized")

    # 2. shard_map on an Auto mesh without vma checks (the validation uses Explicit and checks); two axes.
    def global_loss(q, p, n, ids, neg_ids, lq, nlq, axis, size, nsize):
        index = lax.axis_index(axis)
        rows = lambda x, s: lax.dynamic_slice_in_dim(x, index * s, s)  # noqa: E731
        return recloss.sampled_softmax_loss(rows(q, size), rows(p, size), rows(n, nsize), in_batch=True,
                                            pos_ids=rows(ids, size), neg_ids=rows(neg_ids, nsize),
                                            pos_log_q=rows(lq, size), neg_log_q=rows(nlq, nsize),
                                            implementation="streaming", gather=axis)
    want, want_grads = single
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

    # 4. recloss.jax.metrics: each device's (total, count), psum'd inside shard_map, is the metric of every list.
    import recloss.jax

    scores, labels, mask, weight = _metric_data()
    scores, labels, mask, weight = (x[:12] for x in (scores, labels, mask, weight))    # 3 lists per device
    mesh = jax.make_mesh((4,), ("data",), axis_types=(AxisType.Explicit,))
    for name, k in (("ndcg", 3), ("map", None), ("dcg", 4), ("recall", 2)):
        function = getattr(recloss.jax.metrics, name)
        shard = jax.shard_map(
            lambda s, y, m, w, function=function, k=k: lax.psum(function(s, y, k=k, mask=m, sample_weight=w), "data"),
            mesh=mesh, in_specs=(P("data"),) * 4, out_specs=P())
        with jax.set_mesh(mesh):
            total, count = jax.jit(shard)(*(jax.device_put(jnp.asarray(x), NamedSharding(mesh, P("data")))
                                            for x in (scores, labels, mask, weight)))
        want = getattr(recloss.metrics, name)(scores, labels, k=k, mask=mask, sample_weight=weight, backend="numpy")
        _close(recloss.jax.metrics.mean(total, count), want, f"jax metrics {name}: psum over 4 devices")
        _close(count, weight.sum(), f"jax metrics {name}: count")


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
    elif scenario == "torch":
        torch_checks(int(sys.argv[2]), sys.argv[3])
    elif scenario == "jax":
        jax_checks()
    elif scenario == "tensorflow":
        tensorflow_checks()
    else:
        raise SystemExit(f"unknown scenario {scenario!r}")
    print("OK")
