"""Scenarios of ``shard_negatives`` (a catalogue split across workers), run by ``tests/test_sharded.py``:

``python tests/sharded_scripts.py torch <rank> <init>``  2 gloo ranks, local batches of 4 and 3 rows, shards of 5 and 2
``python tests/sharded_scripts.py jax``                   ``shard_map`` over 4 host devices, 2 rows and 3 items each
``python tests/sharded_scripts.py tensorflow``            ``MirroredStrategy`` over 2 logical CPUs, as torch

Each prints one line per check, ``CHECK <name>: ok`` or ``CHECK <name>: FAIL <detail>``, then ``DONE``. The
reference is one formula (:func:`plain`), written once against a small adapter per framework and differentiated
by that framework's autograd in float64: the global batch (the local batches concatenated in worker order)
against the whole table (the shards concatenated), the in-batch candidates of every worker (with ``gather``) or
of the row's own worker (without), removal by id and of the row's own positive, logQ on both sides,
``num_hard_negatives`` by ``top_k``, weights and reductions. Gradients: a worker's rows, its positives and their
logQ follow the framework's data-parallel convention (torch: ``W`` times the one-device gradient for "mean"
and "sum"; JAX ``shard_map`` and TF: once), the shard and its logQ are the one-device gradient's slice, once.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any, Callable

import numpy as np

DIM = 4
#: Norm-wise relative tolerances by input dtype: bfloat16 embeddings are multiplied in bfloat16 on the CPU
#: (``product_precision="input"``), whose results carry 2**-8 of relative rounding.
TOLERANCE = {"float64": 1e-12, "float32": 2e-5, "bfloat16": 3e-2}
EMBEDDINGS = ("q", "p", "n")


# ----------------------------------------------------------------------------------------------------------
# The data and the reference


def data(batch: tuple[int, ...], shards: tuple[int, ...], seed: int = 0, variant: str = "") -> dict[str, np.ndarray]:
    """The global inputs (float64): the local batches and the shards concatenated in worker order.

    ``variant``: ``"confident"`` (each row's positive score 30 to 50, the others a few units from 0, at T=1:
    losses of 1e-22 to 1e-12), ``"removed"`` (rows 0 and the last one have every shard's item removed by id), ``"big ids"`` (int64 ids above 2**40 that
    differ only in their low bits, and uint32 negative ids)."""
    rng = np.random.default_rng(seed)
    b, n = sum(batch), sum(shards)
    x = {"q": rng.normal(size=(b, DIM)), "p": rng.normal(size=(b, DIM)), "n": rng.normal(size=(n, DIM)),
         "pos_log_q": np.log(rng.uniform(0.05, 1.0, b)), "neg_log_q": np.log(rng.uniform(0.05, 1.0, n)),
         "pos_ids": rng.integers(0, 5, b), "neg_ids": rng.integers(0, 5, n), "weight": rng.uniform(0.0, 2.0, b),
         "worker": np.repeat(np.arange(len(batch)), batch), "item_worker": np.repeat(np.arange(len(shards)), shards)}
    if variant == "confident":   # q . p between 30 and 50, every other score within a few units of 0
        x["p"] = x["q"] * (rng.uniform(30.0, 50.0, (b, 1)) / np.sum(x["q"] ** 2, 1, keepdims=True))
    elif variant == "removed":   # rows 0 and b - 1 have the id of every item of every shard
        x["pos_ids"] = np.arange(b) + 10
        x["pos_ids"][[0, b - 1]] = 7
        x["neg_ids"][:] = 7
    elif variant == "big ids":
        x["pos_ids"] = (1 << 40) + x["pos_ids"]
        x["neg_ids"] = x["neg_ids"].astype(np.uint32)
        x["pos_ids"][::2] = x["neg_ids"][0]                 # compared by value: int64 with uint32
    return x


def plain(F: Any, x: dict, t: Any, case: dict) -> Any:
    """The loss on one device, in ordinary framework operations (``F``: the adapter), for the case's options."""
    q, p, n = x["q"], x["p"], x["n"]
    s_pos = F.rowsum(q * p) / t - (x["pos_log_q"] if case.get("logq") else 0.0)
    blocks, keeps = [], []
    if case.get("in_batch"):
        keep = ~np.eye(len(x["pos_ids"]), dtype=bool)
        if case.get("ids"):
            keep &= x["pos_ids"][:, None] != x["pos_ids"][None, :]
        if not case.get("gather"):
            keep &= x["worker"][:, None] == x["worker"][None, :]
        blocks.append(F.mm_t(q, p) / t - (F.row(x["pos_log_q"]) if case.get("logq") else 0.0))
        keeps.append(keep)
    keep = np.ones((len(x["pos_ids"]), len(x["neg_ids"])), bool)
    if case.get("ids"):
        keep = x["pos_ids"].astype(np.int64)[:, None] != x["neg_ids"].astype(np.int64)[None, :]
    blocks.append(F.mm_t(q, n) / t - (F.row(x["neg_log_q"]) if case.get("logq") else 0.0))
    keeps.append(keep)
    scores = F.where(np.concatenate(keeps, 1), F.cat(blocks), float("-inf"))
    if case.get("hard"):
        scores = F.topk(scores, case["hard"])
    # log(1 + sum_c exp(s_c - s_pos)), exact for confident rows; the column of -1e4 (exp of it is 0 in float64)
    # keeps a row with every candidate removed at loss 0 with zero gradients, where logsumexp of -infs has NaN ones.
    scores = F.cat([scores - s_pos[:, None], F.vec(np.full((len(x["pos_ids"]), 1), -1e4))])
    rows = F.softplus(F.lse(scores))
    if case.get("weight"):
        rows = rows * F.vec(x["weight"])
        total = float(np.sum(x["weight"]))
    else:
        total = float(len(rows))
    reduction = case.get("reduction", "mean")
    return rows if reduction == "none" else F.sum(rows) / (total if reduction == "mean" else 1.0)


#: The cases: options of the loss; the workers compare value and every gradient with :func:`plain`.
#: ``loss``: "sampled" or "unsupervised"; ``learn``: the temperature is a 0-d tensor whose gradient is checked.
BASE = {"loss": "sampled", "in_batch": True, "gather": True, "logq": True, "ids": True, "weight": True,
        "temperature": 0.7, "learn": True, "reduction": "mean", "implementation": "materialized",
        "dtype": "float64"}
CASES: dict[str, dict] = {
    "mixed, gather, logQ, ids, weights, learnt T, materialised": {},
    "mixed, gather, streaming (chunks of 2)": {"implementation": "streaming"},
    "mixed, gather, auto streams (threshold 1)": {"implementation": "auto", "auto": True},
    "in-batch local (no gather), shard, sum": {"gather": False, "reduction": "sum"},
    "shard only, none, streaming": {"in_batch": False, "gather": False, "reduction": "none",
                                    "implementation": "streaming"},
    "shard only, no logQ, no ids, no weights, T=1 float": {"in_batch": False, "gather": False, "logq": False,
                                                            "ids": False, "weight": False, "temperature": 1.0,
                                                            "learn": False},
    "unsupervised, T=0.3, weights, streaming": {"loss": "unsupervised", "in_batch": False, "gather": False,
                                                "logq": False, "ids": False, "temperature": 0.3,
                                                "implementation": "streaming"},
    "unsupervised, float32, materialised": {"loss": "unsupervised", "in_batch": False, "gather": False,
                                            "logq": False, "ids": False, "dtype": "float32"},
    "3 hard negatives, mixed, gather": {"hard": 3},
    "4 hard negatives, more than a shard holds": {"hard": 4, "in_batch": False, "gather": False},
    "confident rows, float32, none, streaming": {"variant": "confident", "in_batch": False, "gather": False,
                                                 "logq": False, "ids": False, "weight": False, "temperature": 1.0,
                                                 "learn": False, "reduction": "none", "dtype": "float32",
                                                 "implementation": "streaming"},
    "every candidate removed in two rows, streaming": {"variant": "removed", "implementation": "streaming",
                                                        "in_batch": False, "gather": False},
    "64-bit ids against uint32 ids": {"variant": "big ids", "in_batch": False, "gather": False},
}


# ----------------------------------------------------------------------------------------------------------
# Checks


#: Run only the checks whose name contains this text (when debugging by hand).
ONLY = os.environ.get("SHARDED_CHECKS", "")


def report(name: str, run: Callable[[], None]) -> None:
    if ONLY not in name:
        return
    try:
        run()
        print(f"CHECK {name}: ok", flush=True)
    except Exception as error:   # reported, not raised: the other checks still run
        detail = f"{type(error).__name__}: {error}".replace("\n", " | ")
        print(f"CHECK {name}: FAIL {detail[:1500]}", flush=True)
        traceback.print_exc()


def close(actual: Any, expected: Any, what: str, tolerance: float) -> None:
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert a.shape == b.shape, f"{what}: shape {a.shape}, expected {b.shape}"
    assert np.all(np.isfinite(a)), f"{what}: not finite: {a}"
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-30)
    error = float(np.max(np.abs(a - b), initial=0.0)) / scale
    assert error <= tolerance, f"{what}: relative error {error:.2e} > {tolerance:.0e}"


def close_rows(actual: Any, expected: Any, what: str, tolerance: float) -> None:
    """Each entry within ``tolerance`` of its own value (confident rows: losses of 1e-20 and smaller)."""
    a, b = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    error = np.abs(a - b) / np.maximum(np.abs(b), 1e-300)
    assert a.shape == b.shape and float(np.max(error)) <= tolerance, f"{what}: {a} against {b}"


def grad_names(case: dict) -> list[str]:
    """The differentiable inputs of a case."""
    names = ["q", "p", "n"] + (["pos_log_q", "neg_log_q"] if case.get("logq") and case["loss"] == "sampled" else [])
    return names + (["t"] if case.get("learn") else [])


def call(recloss: Any, case: dict, local: dict, t: Any, group: Any) -> Any:
    """The loss on one worker's inputs ``local``, with ``shard_negatives=group`` (and ``gather`` if asked)."""
    if case["loss"] == "unsupervised":
        return recloss.unsupervised_softmax_cross_entropy_loss(
            local["q"], local["p"], local["n"], temperature=t, reduction=case["reduction"],
            sample_weight=local["weight"] if case.get("weight") else None, implementation=case["implementation"],
            shard_negatives=group)
    logq, ids = case.get("logq"), case.get("ids")
    return recloss.sampled_softmax_loss(
        local["q"], local["p"], local["n"], temperature=t, in_batch=case["in_batch"],
        pos_log_q=local["pos_log_q"] if logq else None, neg_log_q=local["neg_log_q"] if logq else None,
        pos_ids=local["pos_ids"] if ids else None, neg_ids=local["neg_ids"] if ids else None,
        sample_weight=local["weight"] if case.get("weight") else None, num_hard_negatives=case.get("hard"),
        reduction=case["reduction"], implementation=case["implementation"],
        gather=group if case.get("gather") else None, shard_negatives=group)


def split(x: dict, rank: int, batch: tuple[int, ...], shards: tuple[int, ...]) -> dict:
    """Worker ``rank``'s rows and shard."""
    rows = slice(sum(batch[:rank]), sum(batch[:rank + 1]))
    items = slice(sum(shards[:rank]), sum(shards[:rank + 1]))
    return {k: v[items] if k in ("n", "neg_log_q", "neg_ids") else v[rows] for k, v in x.items()
            if k not in ("worker", "item_worker")}


def with_settings(case: dict) -> Callable[[], None]:
    """Streaming chunks of 2 columns, and ``"auto"`` streaming from 1 logit where the case asks: returns the
    undo."""
    from recloss.kernels import softmax
    saved = softmax.STREAMING_CHUNK, softmax.STREAMING_MIN_LOGITS
    softmax.STREAMING_CHUNK = 2
    if case.get("auto"):
        softmax.STREAMING_MIN_LOGITS = 1

    def undo() -> None:
        softmax.STREAMING_CHUNK, softmax.STREAMING_MIN_LOGITS = saved
    return undo


class Spy:
    """Records the shapes of the ``[rows, candidates]`` products and the rows handed to the streaming path."""

    def __init__(self, ops: Any) -> None:
        self.ops, self.products, self.streamed, self.fused = ops, [], [], 0
        self.dot, self.stream = type(ops).dot_nt, type(ops).streaming_row_losses
        self.kernel = getattr(type(ops), "fused_row_losses", None)

    def __enter__(self) -> "Spy":
        def dot(a: Any, b: Any) -> Any:
            self.products.append((a.shape[0], b.shape[0]))
            return self.dot(a, b)

        def stream(q: Any, *args: Any) -> Any:
            self.streamed.append((q.shape[0], args[1][0][0].shape[0]))
            return self.stream(q, *args)

        def kernel(*args: Any, **kwargs: Any) -> Any:
            self.fused += 1
            return self.kernel(*args, **kwargs)
        self.ops.dot_nt, self.ops.streaming_row_losses = dot, stream
        if self.kernel is not None:
            self.ops.fused_row_losses = kernel
        return self

    def __exit__(self, *exc: Any) -> None:
        del self.ops.dot_nt, self.ops.streaming_row_losses
        if self.kernel is not None:
            del self.ops.fused_row_losses


# ----------------------------------------------------------------------------------------------------------
# torch: 2 gloo ranks


BATCH, SHARDS = (4, 3), (5, 2)


def torch_main(rank: int, init: str) -> None:
    import torch
    import torch.distributed as dist

    import recloss
    from recloss.backends import torch as backend
    from recloss.errors import OptionError
    from recloss.kernels import fused

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    interpret = fused.INTERPRET

    class F:
        rowsum = staticmethod(lambda x: x.sum(1))
        mm_t = staticmethod(lambda a, b: a @ b.T)
        row = staticmethod(lambda v: torch.as_tensor(v)[None, :])
        vec = staticmethod(torch.as_tensor)
        softplus = staticmethod(lambda x: torch.logaddexp(x, torch.zeros_like(x)))
        where = staticmethod(lambda m, x, v: torch.where(torch.as_tensor(m), x, torch.tensor(v, dtype=x.dtype)))
        cat = staticmethod(lambda xs: torch.cat(xs, 1))
        lse = staticmethod(lambda x: torch.logsumexp(x, 1))
        topk = staticmethod(lambda x, k: x.topk(k, 1).values)
        sum = staticmethod(lambda x: x.sum())

    def reference(x: dict, case: dict, second: bool = False) -> tuple:
        leaves = {k: torch.tensor(x[k], requires_grad=True) for k in ("q", "p", "n", "pos_log_q", "neg_log_q")}
        t = torch.tensor(case["temperature"], dtype=torch.float64, requires_grad=True)
        value = plain(F, {**x, **leaves}, t if case.get("learn") else case["temperature"], case)
        wrt = [leaves[k] for k in grad_names(case) if k != "t"] + ([t] if case.get("learn") else [])
        grads = torch.autograd.grad(value.sum(), wrt, allow_unused=True, materialize_grads=True, create_graph=second)
        return value, dict(zip(grad_names(case), grads)), leaves

    def run_case(name: str, case: dict, group: Any = True, batch: tuple = BATCH, shards: tuple = SHARDS) -> None:
        case = {**BASE, **case}
        x = data(batch, shards, variant=case.get("variant", ""))
        dtype = case["dtype"]
        half = dtype == "bfloat16"
        if dtype != "float64":   # the reference sees the same rounded inputs
            x = {k: v.astype(np.float32).astype(np.float64) if v.dtype == np.float64 else v for k, v in x.items()}
        if half:
            x.update({k: torch.tensor(x[k]).bfloat16().double().numpy() for k in EMBEDDINGS})
        value, grads, _ = reference(x, case)
        local = split(x, rank, batch, shards)
        tensors = {k: torch.tensor(v.astype("float32" if half else dtype) if v.dtype == np.float64 else v)
                   for k, v in local.items()}
        if half:
            tensors.update({k: tensors[k].bfloat16() for k in EMBEDDINGS})
        leaves = {k: tensors[k].requires_grad_(True) for k in grad_names(case) if k != "t"}
        t = torch.tensor(case["temperature"], dtype=torch.float32 if half else getattr(torch, dtype),
                         requires_grad=True)
        fused.INTERPRET = interpret and case["implementation"] in ("fused", "auto") and bool(case.get("fused"))
        undo = with_settings(case)
        try:
            with Spy(backend.OPS) as spy:
                out = call(recloss, case, tensors, t if case.get("learn") else case["temperature"], group)
            out.sum().backward()
        finally:
            undo()
        summed = None
        if case.get("learn"):   # every collective before any assertion: a failing rank must not leave the other waiting
            summed = t.grad.detach().clone()
            dist.all_reduce(summed)
        tolerance = TOLERANCE[dtype]
        rows = slice(sum(batch[:rank]), sum(batch[:rank + 1]))
        items = slice(sum(shards[:rank]), sum(shards[:rank + 1]))
        expected = value.detach().numpy()
        checker = close_rows if case.get("variant") == "confident" else close
        checker(out.detach().double().numpy(), expected[rows] if case["reduction"] == "none" else expected, "value",
                tolerance)
        copies = 2 if case["reduction"] != "none" else 1   # each rank's backward counts the global loss W times
        for key, leaf in leaves.items():
            sharded = key in ("n", "neg_log_q")
            want = grads[key].numpy()[items if sharded else rows] * (1 if sharded else copies)
            got = torch.zeros_like(leaf) if leaf.grad is None else leaf.grad   # an empty shard is not used
            close(got.detach().double().numpy(), want, f"gradient of {key}", tolerance)
        if summed is not None:
            close(summed.double().numpy(), copies * grads["t"].numpy(), "gradient of the temperature (summed)",
                  tolerance)
        if case.get("auto"):   # "auto" streamed every shard's rows: no [B_global, N_w] block was formed
            assert (sum(batch), shards[rank]) in spy.streamed, spy.streamed
            assert (sum(batch), shards[rank]) not in spy.products, spy.products
        assert bool(spy.fused) == bool(case.get("fused")), f"fused kernels ran {spy.fused} times"

    for name, case in CASES.items():
        report(name, lambda name=name, case=case: run_case(name, case))
    report("a ProcessGroup as the option (gather and shard_negatives)",
           lambda: run_case("group", {"implementation": "streaming"}, group=dist.new_group([0, 1])))
    report("a shard with no item on rank 1, unequal batches", lambda: run_case("empty", {}, shards=(7, 0)))
    report("bfloat16 embeddings, gather, streaming", lambda: run_case("bf16", {"dtype": "bfloat16",
                                                                              "implementation": "streaming"}))
    report("bfloat16 embeddings, gather, 3 hard negatives", lambda: run_case("bf16 hard", {"dtype": "bfloat16",
                                                                                           "hard": 3}))

    def second_derivatives() -> None:
        """A gradient penalty ||dL/dq||^2 differentiated again: each rank's gradients are those of the sum over
        ranks of what each rank differentiates (the shard's divided by W), as for the first derivatives."""
        case = {**BASE, "implementation": "streaming"}
        x = data(BATCH, SHARDS)
        value, grads, leaves = reference(x, case, second=True)
        penalty = (grads["q"] ** 2).sum()
        want_q, want_n = torch.autograd.grad(penalty, [leaves["q"], leaves["n"]])
        local = {k: torch.tensor(v) for k, v in split(x, rank, BATCH, SHARDS).items()}
        q, n = local["q"].requires_grad_(True), local["n"].requires_grad_(True)
        undo = with_settings(case)
        try:
            out = call(recloss, case, {**local, "q": q, "n": n}, case["temperature"], True)
            (grad_q,) = torch.autograd.grad(out, [q], create_graph=True)
            got_q, got_n = torch.autograd.grad((grad_q ** 2).sum(), [q, n])
        finally:
            undo()
        rows = slice(sum(BATCH[:rank]), sum(BATCH[:rank + 1]))
        items = slice(sum(SHARDS[:rank]), sum(SHARDS[:rank + 1]))
        close(got_q.numpy(), 4 * want_q.numpy()[rows], "second derivative, queries (W^2 x)", 1e-12)
        close(got_n.numpy(), 2 * want_n.numpy()[items], "second derivative, shard (W x)", 1e-12)
    report("second derivatives through the collectives (create_graph)", second_derivatives)

    def fused_shards() -> None:
        case = {"dtype": "float32", "implementation": "fused", "fused": True, "gather": False, "in_batch": False}
        run_case("fused", case)
        run_case("fused, auto picks it", {**case, "implementation": "auto"})
        run_case("fused, in-batch local", {**case, "in_batch": True})
    if interpret:
        report("fused kernels on each shard (Triton interpreter)", fused_shards)

    def mismatch(kind: str) -> None:
        """Shards of different D or dtype: every rank's call is checked against the others' before the first
        collective (the call's description travels with the exchange of sizes), and each rank raises the
        same OptionError naming the option, the first difference and the two ranks."""
        dim = DIM if kind == "dtype" or rank == 0 else DIM - 1
        dtype = torch.float64 if kind == "D" or rank == 0 else torch.float32
        q, p, n = (torch.ones(3, dim, dtype=dtype) for _ in range(3))
        try:
            recloss.sampled_softmax_loss(q, p, n, shard_negatives=True)
        except OptionError as error:
            text = str(error)
        else:
            raise AssertionError("no error")
        words = {"D": f"got `query_emb` float64 [B, {DIM}] not requiring grad on rank 0 and float64 [B, {DIM - 1}] "
                      "not requiring grad on rank 1",
                 "dtype": f"got `query_emb` float64 [B, {DIM}] not requiring grad on rank 0 and float32 [B, {DIM}] "
                          "not requiring grad on rank 1"}[kind]
        assert text.startswith("sampled_softmax_loss: `shard_negatives=True` needs the same call on every rank") \
            and words in text, text
        dist.barrier()   # the group is still usable
    report("shards of different D: the same OptionError on every rank", lambda: mismatch("D"))
    report("shards of different dtypes: the same OptionError on every rank", lambda: mismatch("dtype"))
    dist.destroy_process_group()
    print("DONE", flush=True)


# ----------------------------------------------------------------------------------------------------------
# JAX: shard_map over 4 host devices


def jax_main() -> None:
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import PartitionSpec as P

    import recloss
    from recloss.backends import jax as backend
    from recloss.errors import OptionError
    from recloss.kernels import fused

    jax.config.update("jax_enable_x64", True)
    interpret = fused.INTERPRET
    workers, batch, shards = 4, (2,) * 4, (3,) * 4
    mesh = jax.make_mesh((workers,), ("d",))

    class F:
        rowsum = staticmethod(lambda x: x.sum(1))
        mm_t = staticmethod(lambda a, b: a @ b.T)
        row = staticmethod(lambda v: jnp.asarray(v)[None, :])
        vec = staticmethod(jnp.asarray)
        softplus = staticmethod(lambda x: jnp.logaddexp(x, 0.0))
        where = staticmethod(lambda m, x, v: jnp.where(m, x, v))
        cat = staticmethod(lambda xs: jnp.concatenate(xs, 1))
        lse = staticmethod(lambda x: jax.nn.logsumexp(x, 1))
        topk = staticmethod(lambda x, k: lax.top_k(x, k)[0])
        sum = staticmethod(jnp.sum)

    def sharded(case: dict, x: dict, vma: bool = True, inside: bool = False) -> Callable:
        """The loss of the global arrays through ``shard_map``: ``(q, p, n, pos_log_q, neg_log_q, t) -> value``
        (or, ``inside``, the gradients taken inside the ``shard_map``)."""
        names = ["q", "p", "n", "pos_log_q", "neg_log_q", "pos_ids", "neg_ids", "weight"]
        dtype = case["dtype"]
        fixed = {k: jnp.asarray(x[k]) for k in ("pos_ids", "neg_ids")}
        fixed["weight"] = jnp.asarray(x["weight"].astype(dtype))
        none = case["reduction"] == "none"

        def local(q, p, n, plq, nlq, pid, nid, w, t):
            tensors = dict(zip(names, (q, p, n, plq, nlq, pid, nid, w)))

            def loss(q, p, n, plq, nlq, t):
                out = call(recloss, case, {**tensors, "q": q, "p": p, "n": n, "pos_log_q": plq, "neg_log_q": nlq},
                           t if case.get("learn") else case["temperature"], "d")
                return jnp.sum(out) if inside else out
            if inside:
                return jax.grad(loss, argnums=(0, 2))(q, p, n, plq, nlq, t)
            return loss(q, p, n, plq, nlq, t)

        out_specs = (P("d"), P("d")) if inside else (P("d") if none else P())
        mapped = jax.shard_map(local, mesh=mesh, in_specs=(P("d"),) * 8 + (P(),), out_specs=out_specs,
                               check_vma=vma)

        def run(q, p, n, plq, nlq, t):
            arrays = [jax.reshard(a, P("d")) for a in (q, p, n, plq, nlq, fixed["pos_ids"], fixed["neg_ids"],
                                                       fixed["weight"])]
            return mapped(*arrays, t)
        return run

    def run_case(name: str, case: dict, vma: bool = True) -> None:
        case = {**BASE, **case}
        x = data(batch, shards, variant=case.get("variant", ""))
        dtype = case["dtype"]
        if dtype == "float32":
            x = {k: v.astype(np.float32).astype(np.float64) if v.dtype == np.float64 else v for k, v in x.items()}
        keys = ("q", "p", "n", "pos_log_q", "neg_log_q")
        t = jnp.asarray(case["temperature"], dtype)

        def reference(q, p, n, plq, nlq, t):
            value = plain(F, {**x, "q": q, "p": p, "n": n, "pos_log_q": plq, "neg_log_q": nlq},
                          t if case.get("learn") else case["temperature"], case)
            return jnp.sum(value), value
        (_, value), grads = jax.value_and_grad(reference, argnums=tuple(range(6)), has_aux=True)(
            *[jnp.asarray(x[k]) for k in keys], jnp.asarray(case["temperature"]))
        fused.INTERPRET = interpret and bool(case.get("fused"))
        undo = with_settings(case)
        try:
            with Spy(backend.OPS) as spy, jax.set_mesh(mesh):
                def total(*args):
                    out = sharded(case, x, vma)(*args)
                    return jnp.sum(out), out
                (_, out), got = jax.jit(jax.value_and_grad(total, argnums=tuple(range(6)), has_aux=True))(
                    *[jnp.asarray(x[k].astype(dtype)) for k in keys], t)
        finally:
            undo()
        tolerance = TOLERANCE[dtype]
        checker = close_rows if case.get("variant") == "confident" else close
        checker(out, value, "value", tolerance)
        for key, g, want in zip((*keys, "t"), got, grads):
            if key in grad_names(case):
                close(g, want, f"gradient of {key}", tolerance)
        if case.get("auto"):
            assert (sum(batch), shards[0]) in spy.streamed and (sum(batch), shards[0]) not in spy.products, spy
        assert bool(spy.fused) == bool(case.get("fused")), f"fused kernels ran {spy.fused} times"

    for name, case in CASES.items():
        report(name, lambda name=name, case=case: run_case(name, case))
    report("check_vma=False, gradient outside", lambda: run_case("no vma", {"implementation": "streaming"}, False))

    def inside() -> None:
        """``jax.grad`` inside the ``shard_map`` (check_vma on): each device's rows' and shard's gradients are
        the one-device gradient's slices, once."""
        case = {**BASE, "learn": False}
        x = data(batch, shards)
        want = jax.grad(lambda q, n: plain(F, {**x, "q": q, "n": n}, case["temperature"], case), argnums=(0, 1))(
            jnp.asarray(x["q"]), jnp.asarray(x["n"]))
        with jax.set_mesh(mesh):
            got = jax.jit(sharded(case, x, inside=True))(*[jnp.asarray(x[k]) for k in ("q", "p", "n", "pos_log_q",
                                                                                       "neg_log_q")], 0.7)
        close(got[0], want[0], "queries", 1e-12)
        close(got[1], want[1], "shard", 1e-12)
    report("gradient taken inside shard_map", inside)

    def second() -> None:
        """``jax.grad`` of a gradient penalty ``||dL/dq||^2``: the one-device second derivatives."""
        case = {**BASE, "implementation": "streaming", "learn": False}
        x = data(batch, shards)
        arrays = [jnp.asarray(x[k]) for k in ("q", "p", "n", "pos_log_q", "neg_log_q")]

        def penalty(loss: Callable) -> Callable:
            return lambda q, n: jnp.sum(jax.grad(lambda q: loss(q, n)) (q) ** 2)
        want = jax.grad(penalty(lambda q, n: plain(F, {**x, "q": q, "n": n}, 0.7, case)), argnums=(0, 1))(
            arrays[0], arrays[2])
        undo = with_settings(case)
        try:
            with jax.set_mesh(mesh):
                run = sharded(case, x)
                got = jax.jit(jax.grad(penalty(lambda q, n: run(q, arrays[1], n, arrays[3], arrays[4], 0.7)),
                                       argnums=(0, 1)))(arrays[0], arrays[2])
        finally:
            undo()
        close(got[0], want[0], "queries", 1e-11)
        close(got[1], want[1], "shard", 1e-11)
    report("second derivatives (gradient penalty)", second)

    def pmap() -> None:
        """Under ``jax.pmap`` with the gradient inside, every gradient is W times its share, the shard's too."""
        case = {**BASE, "learn": False, "gather": True}
        x = data(batch, shards)
        want = jax.grad(lambda q, n: plain(F, {**x, "q": q, "n": n}, 0.7, case), argnums=(0, 1))(
            jnp.asarray(x["q"]), jnp.asarray(x["n"]))

        def local(q, p, n, plq, nlq, pid, nid, w):
            def loss(q, n):
                return call(recloss, case, {"q": q, "p": p, "n": n, "pos_log_q": plq, "neg_log_q": nlq,
                                            "pos_ids": pid, "neg_ids": nid, "weight": w}, 0.7, "d")
            return jax.grad(loss, argnums=(0, 1))(q, n)
        per = lambda k, size: jnp.asarray(x[k]).reshape(workers, size, *x[k].shape[1:])  # noqa: E731
        got = jax.pmap(local, axis_name="d")(per("q", 2), per("p", 2), per("n", 3), per("pos_log_q", 2),
                                             per("neg_log_q", 3), per("pos_ids", 2), per("neg_ids", 3),
                                             per("weight", 2))
        close(np.asarray(got[0]).reshape(-1, DIM), workers * np.asarray(want[0]), "queries", 1e-12)
        close(np.asarray(got[1]).reshape(-1, DIM), workers * np.asarray(want[1]), "shard", 1e-12)
    report("pmap: W times, the shard included", pmap)

    def fused_shards() -> None:
        """With ``check_vma=False``: Pallas's interpreter cannot run inside a ``shard_map`` that checks varying
        axes (its grid loop's carry loses them; JAX's error names this workaround)."""
        case = {"dtype": "float32", "implementation": "fused", "fused": True, "gather": False, "in_batch": False}
        run_case("fused", case, vma=False)
        run_case("fused, auto picks it", {**case, "implementation": "auto"}, vma=False)
    if interpret:
        report("fused kernels on each shard (Pallas interpreter)", fused_shards)

    def unbound() -> None:
        q = jnp.ones((2, DIM))
        f = jax.shard_map(lambda q: recloss.sampled_softmax_loss(q, q, q, shard_negatives="model"), mesh=mesh,
                          in_specs=P("d"), out_specs=P(), check_vma=False)
        try:
            with jax.set_mesh(mesh):
                f(jax.reshard(jnp.ones((8, DIM)), P("d")))
        except OptionError as error:
            assert str(error) == (
                "sampled_softmax_loss: `shard_negatives='model'` needs a mesh axis named 'model' bound by "
                "jax.shard_map or jax.pmap around the call; got no such axis bound here (call the loss inside a "
                "shard_map or pmap over that axis, or pass the name of the axis it binds)"), str(error)
        else:
            raise AssertionError("no error")
        del q
    report("an axis the shard_map does not bind", unbound)
    print("DONE", flush=True)


# ----------------------------------------------------------------------------------------------------------
# TensorFlow: MirroredStrategy over 2 logical CPUs


def tensorflow_main() -> None:
    import tensorflow as tf

    import recloss
    from recloss.backends import tensorflow as backend
    from recloss.errors import ShapeError

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    tf.get_logger().setLevel("ERROR")
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])

    class F:
        rowsum = staticmethod(lambda x: tf.reduce_sum(x, 1))
        mm_t = staticmethod(lambda a, b: tf.matmul(a, b, transpose_b=True))
        row = staticmethod(lambda v: tf.constant(v)[None, :])
        vec = staticmethod(tf.constant)
        softplus = staticmethod(tf.math.softplus)
        where = staticmethod(lambda m, x, v: tf.where(m, x, tf.constant(v, x.dtype)))
        cat = staticmethod(lambda xs: tf.concat(xs, 1))
        lse = staticmethod(lambda x: tf.reduce_logsumexp(x, 1))
        topk = staticmethod(lambda x, k: tf.math.top_k(x, k).values)
        sum = staticmethod(tf.reduce_sum)

    def per_replica(x: dict, dtype: str, batch: tuple, shards: tuple) -> dict:
        return {k: strategy.experimental_distribute_values_from_function(
            lambda ctx, k=k: tf.constant(split(x, ctx.replica_id_in_sync_group, batch, shards)[k].astype(
                dtype if x[k].dtype == np.float64 else x[k].dtype)))
            for k in ("q", "p", "n", "pos_log_q", "neg_log_q", "pos_ids", "neg_ids", "weight")}

    def run_case(name: str, case: dict, graph: bool = False, batch: tuple = BATCH, shards: tuple = SHARDS) -> None:
        case = {**BASE, **case}
        x = data(batch, shards, variant=case.get("variant", ""))
        dtype = case["dtype"]
        if dtype == "float32":
            x = {k: v.astype(np.float32).astype(np.float64) if v.dtype == np.float64 else v for k, v in x.items()}
        keys = [k for k in grad_names(case) if k != "t"]
        leaves = {k: tf.constant(x[k]) for k in ("q", "p", "n", "pos_log_q", "neg_log_q")}
        t = tf.constant(case["temperature"], tf.float64)
        with tf.GradientTape() as tape:
            tape.watch([*leaves.values(), t])
            value = plain(F, {**x, **leaves}, t if case.get("learn") else case["temperature"], case)
            total = tf.reduce_sum(value)
        grads = dict(zip(keys + ["t"], tape.gradient(total, [leaves[k] for k in keys] + [t])))

        def step(tensors: dict) -> tuple:
            local_t = tf.constant(case["temperature"], dtype)
            watched = [tensors[k] for k in keys] + [local_t]
            with tf.GradientTape() as tape:
                tape.watch(watched)
                out = call(recloss, case, tensors, local_t if case.get("learn") else case["temperature"], True)
                total = tf.reduce_sum(out)
            return (out, *tape.gradient(total, watched, unconnected_gradients=tf.UnconnectedGradients.ZERO))

        undo = with_settings(case)
        try:
            with Spy(backend.OPS) as spy:
                inputs = per_replica(x, dtype, batch, shards)
                run = (lambda i: strategy.run(step, args=(i,)))
                result = (tf.function(run) if graph else run)(inputs)
        finally:
            undo()
        parts = [strategy.experimental_local_results(r) for r in result]
        tolerance = TOLERANCE[dtype]
        checker = close_rows if case.get("variant") == "confident" else close
        got_value = np.concatenate(parts[0]) if case["reduction"] == "none" else np.sum(parts[0])
        checker(got_value, value.numpy(), "value (the replicas' shares summed)", tolerance)
        for key, pieces in zip(keys + ["t"], parts[1:]):
            if key == "t":
                if case.get("learn"):
                    close(np.sum(pieces), grads["t"].numpy(), "gradient of the temperature (summed)", tolerance)
                continue
            close(np.concatenate(pieces), grads[key].numpy(), f"gradient of {key}", tolerance)
        if case.get("auto"):
            assert any(rows in (sum(batch), None) and keys_ == shards[0] for rows, keys_ in spy.streamed), spy.streamed

    for name, case in CASES.items():
        report(name, lambda name=name, case=case: run_case(name, case))
    report("tf.function: mixed, gather, auto streams (threshold 1)",
           lambda: run_case("graph", {"implementation": "auto", "auto": True}, graph=True))
    report("tf.function: 3 hard negatives", lambda: run_case("graph hard", {"hard": 3}, graph=True))
    report("a shard with no item on replica 1", lambda: run_case("empty", {}, shards=(7, 0)))

    def training() -> None:
        """The README's pattern: one variable per replica device holds its shard, updated with its own gradient;
        a mirrored query tower updated with the gradients summed over the replicas. One SGD step equals the
        one-device step on the whole table."""
        x = data(BATCH, SHARDS)
        lr = 0.5
        constants = {k: tf.constant(v) for k, v in x.items()}
        table = tf.Variable(x["n"])
        tower = tf.Variable(np.eye(DIM) * 0.9)
        with tf.GradientTape() as tape:
            one = recloss.sampled_softmax_loss(constants["q"] @ tower, constants["p"], table.read_value(),
                                               temperature=0.7, in_batch=True, neg_log_q=constants["neg_log_q"],
                                               pos_ids=constants["pos_ids"], neg_ids=constants["neg_ids"])
        grad_table, grad_tower = tape.gradient(one, [table, tower])
        want_table, want_tower = x["n"] - lr * grad_table.numpy(), np.eye(DIM) * 0.9 - lr * grad_tower.numpy()

        shards = []
        for r in range(2):
            with tf.device(f"/cpu:{r}"):
                shards.append(tf.Variable(split(x, r, BATCH, SHARDS)["n"]))
        with strategy.scope():
            mirrored = tf.Variable(np.eye(DIM) * 0.9, aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        shard_values = strategy.experimental_distribute_values_from_function(
            lambda ctx: shards[ctx.replica_id_in_sync_group])
        inputs = per_replica(x, "float64", BATCH, SHARDS)

        @tf.function
        def train(shard_values: Any, inputs: dict) -> Any:
            def replica(shard: tf.Variable, t: dict) -> Any:
                with tf.GradientTape() as tape:
                    loss = recloss.sampled_softmax_loss(
                        t["q"] @ mirrored, t["p"], shard.read_value(), temperature=0.7, in_batch=True,
                        neg_log_q=t["neg_log_q"], pos_ids=t["pos_ids"], neg_ids=t["neg_ids"], gather=True,
                        shard_negatives=True)
                grad_shard, grad_tower = tape.gradient(loss, [shard, mirrored])
                shard.assign_sub(lr * grad_shard)                        # the shard: its own gradient, once
                summed = tf.distribute.get_replica_context().all_reduce(tf.distribute.ReduceOp.SUM, grad_tower)
                mirrored.assign_sub(lr * summed)                         # mirrored: summed over the replicas
                return loss
            return strategy.reduce(tf.distribute.ReduceOp.SUM, strategy.run(replica, args=(shard_values, inputs)),
                                   axis=None)
        loss = train(shard_values, inputs)
        close(float(loss), float(one), "loss", 1e-12)
        close(np.concatenate([s.numpy() for s in shards]), want_table, "the shards after one step", 1e-12)
        close(mirrored.numpy(), want_tower, "the mirrored tower after one step", 1e-12)
    report("training: per-replica shard variables and a mirrored tower, one SGD step", training)

    def mismatch() -> None:
        values = strategy.experimental_distribute_values_from_function(
            lambda ctx: tf.ones((3, DIM - ctx.replica_id_in_sync_group), tf.float64))
        try:
            strategy.run(lambda v: recloss.sampled_softmax_loss(v, v, v, shard_negatives=True), args=(values,))
        except ShapeError as error:
            assert f"got D={DIM} on worker 0 and D={DIM - 1} on worker 1" in str(error), str(error)
        else:
            raise AssertionError("no error")
    report("shards of different D: ShapeError (eager strategy.run)", mismatch)
    print("DONE", flush=True)


if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "torch":
        torch_main(int(sys.argv[2]), sys.argv[3])
    elif mode == "jax":
        jax_main()
    else:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        tensorflow_main()
