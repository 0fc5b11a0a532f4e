"""Distributed validation: each loss with ``gather`` on several workers, against the same backend on one device.

For every loss that takes ``gather``, every case of its spec and every dtype, the global inputs are drawn once
(seeded) and split into the workers' local batches in worker order: ``[B, ...]`` arguments by the local batch
sizes, ``[N, ...]`` arguments (shared negatives) by the local negative counts. The sizes differ between
workers on torch and TensorFlow (the last batch of an epoch) and are equal on JAX (SPMD). Every floating input
is a replicated *parameter* that each worker slices its rows from, so its gradient collects every path from
the loss, and the workers' gradients are combined as each framework's data-parallel training combines them:

* torch, ``gather=True`` on a gloo group of ``W`` processes (``file://`` rendezvous): each rank's value must be
  the global loss; the gradients are averaged over the ranks (what ``DistributedDataParallel`` does);
* JAX, ``gather=<axis>`` inside ``jax.shard_map`` over ``W`` host devices
  (``--xla_force_host_platform_device_count``) on a mesh of JAX 0.10's default axis type (``Explicit``): the
  value comes out with ``out_specs=P()`` and the gradient is ``jax.grad``'s with respect to the replicated
  parameters;
* TensorFlow, ``gather=True`` inside ``MirroredStrategy.run`` over ``W`` logical CPU devices: the replicas'
  values (their shares) and gradients are summed (``strategy.reduce(SUM)``, as ``apply_gradients`` sums).

``reduction="none"`` returns each worker's rows: they are concatenated, and the gradients of their sum are
summed over workers on every backend.

The losses that take ``shard_negatives`` run a second time on every case the option takes (shared ``[N, D]``
negatives, no label smoothing, z-loss or ``query_ids``: the shared validator decides),
with ``shard_negatives`` and ``gather`` on the same workers (report rows with option ``shard_negatives``): the
shared negatives are then each worker's shard of the table, and on one device the whole table; the gradient
of a shard (``neg_emb``, ``neg_log_q``) is each worker's own slice, once, so the workers' gradients of these
two are summed on every backend (not averaged on torch: a shard is not a replicated parameter). The reference is the same backend on one device, on the concatenated
inputs, without ``gather`` (its own agreement with the float64 NumPy reference is what ``recloss validate``
checks). Each backend runs in its own subprocesses, since device counts and process groups are per process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from recloss._dispatch import FRAMEWORK_BACKENDS, available_backends, canonical_name
from recloss._spec import FLOAT, LossSpec
from recloss._validate import validate as check_call
from recloss.errors import ReclossError
from recloss.losses import CATALOGUE
from recloss.parity import (Report, Row, _choices, cast_inputs, make_inputs, names_argument, relative_error,
                            seed_argument)

#: Largest norm-wise relative error allowed between the workers' result and one device's, (value, gradient).
#: Only the order of the sums differs (float32: a few ulps of the largest term).
DISTRIBUTED_TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-12, 1e-12),
    "float32": (1e-5, 1e-5),
}
#: Local batch sizes and shared-negative counts of worker ``r`` on torch and TensorFlow (cycled): unequal,
#: like the last batch of an epoch. JAX gives every device ``EQUAL_SIZES``.
UNEQUAL_BATCH = (4, 2, 3, 1, 5, 2, 3, 4)
UNEQUAL_NEGATIVES = (2, 3, 1, 4, 2, 3, 2, 1)
EQUAL_SIZES = (3, 2)
#: Per-row negatives K and embedding size D of the generated inputs.
OTHER_DIMS = {"K": 3, "D": 5}
#: The losses that take ``gather``.
GATHER_LOSSES = tuple(name for name, spec in CATALOGUE.items() if any(o.name == "gather" for o in spec.options))
#: The losses that take ``shard_negatives``.
SHARD_LOSSES = tuple(name for name, spec in CATALOGUE.items()
                     if any(o.name == "shard_negatives" for o in spec.options))
#: The arguments that hold a worker's shard with ``shard_negatives``.
SHARD_ARGUMENTS = ("neg_emb", "neg_log_q")


@dataclass
class DistributedRow(Row):
    """One line of the distributed report: a loss on one backend and dtype with ``workers`` workers, with the
    ``gather`` option alone or with ``shard_negatives`` too (``option``)."""

    workers: int = 2
    option: str = "gather"


@dataclass
class DistributedReport(Report):
    """The result of :func:`validate_distributed`."""

    def table(self) -> str:
        header = ("| loss | option | backend | workers | dtype | cases | value rel. err | grad rel. err | "
                  "tolerance (value, grad) | result |")
        lines = [header, "|" + "---|" * 10]
        for row in self.rows:
            value_tol, grad_tol = DISTRIBUTED_TOLERANCES[row.dtype]
            grad = "n/a" if row.grad_error is None else f"{row.grad_error:.1e}"
            result = "pass" if row.passed else "FAIL: " + "; ".join(row.failures)
            lines.append(f"| {row.loss} | {row.option} | {row.backend} | {row.workers} | {row.dtype} | {row.cases} | "
                         f"{row.value_error:.1e} | {grad} | {value_tol:.0e}, {grad_tol:.0e} | {result} |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "skipped": self.skipped, "tolerances": DISTRIBUTED_TOLERANCES,
                           "rows": [{**asdict(row), "passed": row.passed} for row in self.rows]}, indent=2)


def validate_distributed(losses: str | Iterable[str] | None = None, *, backends: str | Iterable[str] | None = None,
                         workers: int = 2, dtypes: str | Iterable[str] = ("float32", "float64"), seed: int = 0,
                         streaming_chunk: int | None = None, timeout: float = 900.0,
                         progress: Callable[[str], None] | None = None) -> DistributedReport:
    """Run the losses that take ``gather`` on ``workers`` workers per backend and compare value and parameter
    gradients with the same backend on one device (see the module docstring for how).

    Args:
        losses: loss name(s); default every loss with the ``gather`` option.
        backends: ``"torch"``, ``"jax"``, ``"tensorflow"`` (default: every installed one).
        workers: number of workers, at least 2.
        dtypes: ``"float32"`` and/or ``"float64"``.
        seed: seed of the inputs.
        streaming_chunk: columns per chunk of the streaming path in the workers (default the library's 4096);
            a small value makes chunk boundaries fall inside the gathered columns.
        timeout: seconds allowed to each backend's subprocesses.
        progress: called with a short label before each backend.

    Returns:
        A :class:`DistributedReport`, one row per loss x backend x dtype (worst over the spec's cases).

    Raises:
        ValueError: an unknown or gather-less loss, an unknown backend or dtype, fewer than 2 workers, a
            negative ``seed``.
        TypeError: an argument of the wrong kind (``validate_distributed(123)``), naming it.
    """
    names = list(GATHER_LOSSES) if losses is None else names_argument("losses", losses)
    for name in names:
        if name not in GATHER_LOSSES:
            raise ValueError(f"loss {name!r} does not take gather; expected one of {', '.join(GATHER_LOSSES)}")
    dtypes = _choices("dtype", names_argument("dtypes", dtypes), tuple(DISTRIBUTED_TOLERANCES))
    seed = seed_argument(seed)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 2:
        raise ValueError(f"workers must be an integer >= 2; got {workers!r}")
    if streaming_chunk is not None and (not isinstance(streaming_chunk, int) or streaming_chunk < 1):
        raise ValueError(f"streaming_chunk must be None or an integer >= 1; got {streaming_chunk!r}")
    installed = [b for b in available_backends() if b in FRAMEWORK_BACKENDS]
    wanted = installed if backends is None else list(dict.fromkeys(
        canonical_name(b) for b in names_argument("backends", backends)))
    for backend in wanted:
        if backend not in FRAMEWORK_BACKENDS:
            raise ValueError(f"backend {backend!r} has no distributed engine; expected one of "
                             f"{', '.join(FRAMEWORK_BACKENDS)}")
    rows: list[Row] = []
    skipped: list[str] = []
    for backend in wanted:
        if backend not in installed:
            skipped.append(f"{backend}: not installed")
            continue
        if progress is not None:
            progress(f"{backend} on {workers} workers")
        job = {"losses": names, "dtypes": dtypes, "workers": workers, "seed": seed, "chunk": streaming_chunk}
        rows += _launch(backend, job, timeout)
    return DistributedReport(rows=rows, skipped=skipped)


# ----------------------------------------------------------------------------------------------------------
# The parent: one subprocess per JAX/TF run, one per torch rank


def _launch(backend: str, job: dict[str, Any], timeout: float) -> list[Row]:
    workers = job["workers"]
    with tempfile.TemporaryDirectory(prefix="recloss-distributed-") as folder:
        out = os.path.join(folder, "rows.json")
        env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        base = [sys.executable, "-m", "recloss.parity_distributed", "--backend", backend, "--out", out,
                "--job", json.dumps(job)]
        if backend == "torch":
            init = "file://" + os.path.join(folder, "rendezvous")
            commands = [base + ["--rank", str(rank), "--init", init] for rank in range(workers)]
        else:
            commands = [base]
            if backend == "jax":
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={workers}")
        start = time.perf_counter()
        processes = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                     for command in commands]
        failures = []
        for rank, process in enumerate(processes):
            try:
                _, err = process.communicate(timeout=max(1.0, timeout - (time.perf_counter() - start)))
            except subprocess.TimeoutExpired:
                for other in processes:
                    other.kill()
                failures.append(f"worker {rank} timed out after {timeout:.0f} s")
                break
            if process.returncode != 0:
                tail = " | ".join(line for line in err.strip().splitlines()[-3:])
                failures.append(f"worker {rank} exited with {process.returncode}: {tail}")
        if failures or not os.path.exists(out):
            reason = "; ".join(failures) or "no result written"
            return [DistributedRow(name, backend, "cpu", dtype, failures=[reason], workers=workers, option=option)
                    for name in job["losses"] for option in _options(name) for dtype in job["dtypes"]]
        with open(out, encoding="utf-8") as handle:
            return [DistributedRow(**row) for row in json.load(handle)]


# ----------------------------------------------------------------------------------------------------------
# The workers


@dataclass
class _Case:
    spec: LossSpec
    case: str
    dtype: str
    inputs: dict[str, Any]
    options: dict[str, Any]
    wrt: list[str]
    ranges: dict[str, list[tuple[int, int]]]     # argument -> (start, stop) of each worker's rows
    shard: bool = False                          # with shard_negatives (and gather) on the same workers

    @property
    def option(self) -> str:
        return "shard_negatives" if self.shard else "gather"

    def distributed(self, value: Any) -> dict[str, Any]:
        """The options of one worker's call: ``gather`` (and ``shard_negatives``) set to ``value``."""
        return {**self.options, "gather": value, **({"shard_negatives": value} if self.shard else {})}

    def summed(self, name: str) -> bool:
        """Whether the workers' gradients of argument ``name`` are summed rather than combined as a replicated
        parameter's: the shard's, with ``shard_negatives``."""
        return self.shard and name in SHARD_ARGUMENTS


def _options(name: str) -> tuple[str, ...]:
    return ("gather", "shard_negatives") if name in SHARD_LOSSES else ("gather",)


def _shardable(spec: LossSpec, inputs: dict[str, Any], options: dict[str, Any]) -> bool:
    """Whether ``shard_negatives`` takes a case, as the shared validator decides (shared ``[N, D]`` negatives;
    no label smoothing, z-loss or ``query_ids``)."""
    try:
        check_call(spec, inputs, options | {"shard_negatives": True}, np.asarray, False)
    except ReclossError:
        return False
    return True


def local_sizes(workers: int, equal: bool) -> tuple[list[int], list[int]]:
    """Each worker's local batch size and shared-negative count."""
    if equal:
        return [EQUAL_SIZES[0]] * workers, [EQUAL_SIZES[1]] * workers
    return ([UNEQUAL_BATCH[r % len(UNEQUAL_BATCH)] for r in range(workers)],
            [UNEQUAL_NEGATIVES[r % len(UNEQUAL_NEGATIVES)] for r in range(workers)])


def _spans(sizes: Sequence[int]) -> list[tuple[int, int]]:
    ends = np.cumsum([0, *sizes])
    return [(int(a), int(b)) for a, b in zip(ends[:-1], ends[1:])]


def plan_cases(job: dict[str, Any], equal: bool) -> list[_Case]:
    """Every case x dtype of the job's losses, with the global inputs and each argument's row spans."""
    batch, negatives = local_sizes(job["workers"], equal)
    dims = {"B": sum(batch), "N": sum(negatives), **OTHER_DIMS}
    spans = {"B": _spans(batch), "N": _spans(negatives)}
    rng = np.random.default_rng(job["seed"])
    cases = []
    for name in job["losses"]:
        spec = CATALOGUE[name]
        for case in spec.cases:
            inputs = make_inputs(spec, case, rng, dims)
            options = {o.name: o.default for o in spec.options} | dict(case.options)
            ranges = {arg.name: spans[arg.shapes[case.forms.get(arg.name, 0)][0]]
                      for arg in spec.args if inputs[arg.name] is not None}
            for dtype in job["dtypes"]:
                cast = cast_inputs(inputs, spec, dtype)
                wrt = [a.name for a in spec.args if a.kind == FLOAT and cast[a.name] is not None]
                cases.append(_Case(spec, case.name, dtype, cast, options, wrt, ranges))
                if name in SHARD_LOSSES and _shardable(spec, inputs, options):
                    cases.append(_Case(spec, case.name, dtype, cast, options, wrt, ranges, shard=True))
    return cases


def _rows(job: dict[str, Any], backend: str, results: list[tuple[_Case, Any, Any, Any, Any, float]]) -> list[dict]:
    """Report rows from ``(case, value, grads, single_value, single_grads, seconds)``: worst per loss x dtype."""
    rows: dict[tuple[str, str], DistributedRow] = {}
    for item, value, grads, single_value, single_grads, seconds in results:
        row = rows.setdefault((item.spec.name, item.option, item.dtype), DistributedRow(
            item.spec.name, backend, "cpu", item.dtype, grad_error=0.0, workers=job["workers"], option=item.option))
        row.cases += 1
        row.seconds += seconds
        if isinstance(value, str):        # the case raised
            row.failures.append(f"{item.case}: {value}")
            continue
        value_error = max(relative_error(v, single_value) for v in value)
        grad_error = max((relative_error(grads[n], single_grads[n]) for n in item.wrt), default=0.0)
        row.value_error = max(row.value_error, value_error)
        row.grad_error = max(row.grad_error, grad_error)
        value_tol, grad_tol = DISTRIBUTED_TOLERANCES[item.dtype]
        if value_error > value_tol or grad_error > grad_tol:
            row.failures.append(f"{item.case}: value {value_error:.1e}, grad {grad_error:.1e}")
    order = {(name, option, dtype): index for index, (name, option, dtype) in enumerate(
        (name, option, dtype) for name in job["losses"] for option in _options(name) for dtype in job["dtypes"])}
    return [asdict(row) for key, row in sorted(rows.items(), key=lambda item: order[item[0]])]


def _single(module: Any, item: _Case) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The loss on one device on the global inputs (the backend's own value_and_grad)."""
    import recloss

    function = getattr(recloss, item.spec.name)
    return module.value_and_grad(lambda **t: function(**t, **item.options), item.inputs, item.wrt, "cpu")


def _set_chunk(job: dict[str, Any]) -> None:
    if job["chunk"] is not None:
        from recloss.kernels import softmax
        softmax.STREAMING_CHUNK = job["chunk"]


def _timed(run: Callable[[], tuple]) -> tuple[tuple | str, float]:
    """``run()``'s result, or the error it raised as text (a failure of its case, reported in the table), and
    the seconds it took."""
    start = time.perf_counter()
    try:
        result: tuple | str = run()
    except Exception as error:
        result = f"{type(error).__name__}: {error}"
    return result, time.perf_counter() - start


def run_torch(job: dict[str, Any], rank: int, init: str) -> list[dict] | None:
    """Rank ``rank`` of a gloo group; rank 0 returns the rows."""
    import torch
    import torch.distributed as dist

    import recloss
    from recloss._dispatch import load_backend

    torch.set_num_threads(1)
    workers = job["workers"]
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=workers)
    _set_chunk(job)
    module = load_backend("torch")
    results = []
    for item in plan_cases(job, equal=False):
        function = getattr(recloss, item.spec.name)

        def run(item: _Case = item, function: Any = function) -> tuple:
            full = {n: None if v is None else torch.tensor(v) for n, v in item.inputs.items()}
            params = {n: full[n].clone().requires_grad_(True) for n in item.wrt}
            tensors = {**full, **params}
            local = {n: None if t is None else t[slice(*item.ranges[n][rank])] for n, t in tensors.items()}
            out = function(**local, **item.distributed(True))
            grads = torch.autograd.grad(out.sum(), [params[n] for n in item.wrt], allow_unused=True,
                                        materialize_grads=True)
            combined = {}
            for name, grad in zip(item.wrt, grads):
                grad = grad.detach().clone()
                dist.all_reduce(grad)
                # DDP averages over the ranks; the rows of "none" are each rank's own: their gradients add up, as
                # do the shards' (each rank's slice, once).
                averaged = item.options["reduction"] != "none" and not item.summed(name)
                combined[name] = (grad / workers if averaged else grad).double().numpy()
            pieces: list[Any] = [None] * workers
            dist.all_gather_object(pieces, out.detach().double().numpy())
            if item.options["reduction"] == "none":
                return [np.concatenate(pieces)], combined
            return pieces, combined                     # every rank's value: each must be the global loss

        result, seconds = _timed(run)
        value, grads = result if isinstance(result, tuple) else (result, {})
        dist.barrier()
        if rank == 0:
            single_value, single_grads = _single(module, item)
            results.append((item, value, grads, single_value, single_grads, seconds))
    dist.destroy_process_group()
    return _rows(job, "torch", results) if rank == 0 else None


def run_jax(job: dict[str, Any]) -> list[dict]:
    """``shard_map`` over ``workers`` host devices on an ``Explicit`` mesh (JAX 0.10's default)."""
    import jax
    import jax.numpy as jnp
    from jax import lax
    from jax.sharding import AxisType, PartitionSpec

    import recloss

    jax.config.update("jax_enable_x64", True)     # float64 cases; float32 inputs stay float32
    _set_chunk(job)
    workers = job["workers"]
    mesh = jax.make_mesh((workers,), ("workers",), axis_types=(AxisType.Explicit,))
    results = []
    for item in plan_cases(job, equal=True):
        function = getattr(recloss, item.spec.name)

        def run(item: _Case = item, function: Any = function) -> tuple:
            names = [n for n, v in item.inputs.items() if v is not None]
            arrays = {n: jnp.asarray(item.inputs[n]) for n in names}
            per_worker = {n: item.ranges[n][0][1] for n in names}
            none = item.options["reduction"] == "none"

            def local(*values: Any) -> Any:
                index = lax.axis_index("workers")
                rows = {n: lax.dynamic_slice_in_dim(v, index * per_worker[n], per_worker[n], 0)
                        for n, v in zip(names, values)}
                return function(**rows, **item.distributed("workers"))

            sharded = jax.shard_map(local, mesh=mesh, in_specs=(PartitionSpec(),) * len(names),
                                    out_specs=PartitionSpec("workers") if none else PartitionSpec())

            def total(loss: Callable[..., Any]) -> Callable[..., Any]:
                def summed(*leaves: Any) -> tuple:
                    out = loss(*[dict(zip(item.wrt, leaves)).get(n, arrays[n]) for n in names])
                    return jnp.sum(out), out
                return jax.value_and_grad(summed, argnums=tuple(range(len(item.wrt))), has_aux=True)

            one_device = total(lambda *values: function(**dict(zip(names, values)), **item.options))
            with jax.set_mesh(mesh):     # the workers and one device in one program: one compilation per case
                ((_, out), grads), ((_, single_out), single_grads) = jax.jit(
                    lambda *leaves: (total(sharded)(*leaves), one_device(*leaves)))(*[arrays[n] for n in item.wrt])
            as_numpy = lambda a: np.asarray(a, np.float64)  # noqa: E731
            return ([as_numpy(out)], {n: as_numpy(g) for n, g in zip(item.wrt, grads)}, as_numpy(single_out),
                    {n: as_numpy(g) for n, g in zip(item.wrt, single_grads)})

        result, seconds = _timed(run)
        results.append((item, *(result if isinstance(result, tuple) else (result, {}, None, None)), seconds))
    return _rows(job, "jax", results)


def run_tensorflow(job: dict[str, Any]) -> list[dict]:
    """``MirroredStrategy`` over ``workers`` logical CPU devices; ``strategy.run`` eagerly, so that every
    replica's sizes are concrete (in a ``tf.function`` the gathered size is known only at run time, and the
    streaming path then falls back to the materialised one)."""
    import tensorflow as tf

    import recloss
    from recloss._dispatch import load_backend

    workers = job["workers"]
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * workers)
    tf.get_logger().setLevel("ERROR")
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{r}" for r in range(workers)])
    _set_chunk(job)
    module = load_backend("tensorflow")
    results = []
    for item in plan_cases(job, equal=False):
        function = getattr(recloss, item.spec.name)

        def run(item: _Case = item, function: Any = function) -> tuple:
            full = {n: None if v is None else tf.constant(v) for n, v in item.inputs.items()}
            params = [full[n] for n in item.wrt]

            def step() -> tuple:
                rank = int(tf.distribute.get_replica_context().replica_id_in_sync_group)
                with tf.GradientTape() as tape:
                    tape.watch(params)
                    local = {n: None if t is None else t[slice(*item.ranges[n][rank])] for n, t in full.items()}
                    out = function(**local, **item.distributed(True))
                    total = tf.reduce_sum(out)
                return out, tape.gradient(total, params, unconnected_gradients=tf.UnconnectedGradients.ZERO)

            out, grads = strategy.run(step)
            values = [np.asarray(v, np.float64) for v in strategy.experimental_local_results(out)]
            value = np.concatenate(values) if item.options["reduction"] == "none" else np.sum(values)
            summed = {n: np.sum([np.asarray(g, np.float64) for g in strategy.experimental_local_results(grad)], 0)
                      for n, grad in zip(item.wrt, grads)}
            return [value], summed

        result, seconds = _timed(run)
        value, grads = result if isinstance(result, tuple) else (result, {})
        single_value, single_grads = _single(module, item)
        results.append((item, value, grads, single_value, single_grads, seconds))
    return _rows(job, "tensorflow", results)


def main(argv: Sequence[str] | None = None) -> int:
    """The workers' entry point (``python -m recloss.parity_distributed``), started by :func:`validate_distributed`."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m recloss.parity_distributed")
    parser.add_argument("--backend", required=True, choices=FRAMEWORK_BACKENDS)
    parser.add_argument("--job", required=True, help="the job as JSON")
    parser.add_argument("--out", required=True, help="where the rows are written (rank 0)")
    parser.add_argument("--rank", type=int, default=0)
    parser.add_argument("--init", help="torch: the process group's init_method")
    args = parser.parse_args(argv)
    job = json.loads(args.job)
    if args.backend == "torch":
        rows = run_torch(job, args.rank, args.init)
    elif args.backend == "jax":
        rows = run_jax(job)
    else:
        rows = run_tensorflow(job)
    if rows is not None:
        with open(args.out, "w", encoding="utf-8") as handle:
            json.dump(rows, handle)
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["validate_distributed", "DistributedReport", "DistributedRow", "DISTRIBUTED_TOLERANCES", "GATHER_LOSSES",
           "SHARD_LOSSES"]
