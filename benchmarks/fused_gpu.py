"""The fused softmax kernels on one GPU: parity on the device, then a side-by-side with Cut Cross-Entropy and Liger.

    bash benchmarks/fused_gpu.sh                     # one call on the GPU machine (installs .whl/, writes $OUT)
    python benchmarks/fused_gpu.py [--phase parity|bench|all] [--budget 480] [--out DIR]
    python benchmarks/fused_gpu.py --dry-run         # CPU: the same code at tiny sizes through the interpreters

**Parity** (phase ``parity``): the specs' own cases of ``sampled_softmax_loss``,
``unsupervised_softmax_cross_entropy_loss`` and ``info_nce_loss`` with ``implementation="fused"`` against the
float64 reference (``recloss.validate``) in float32, bfloat16 and float16, torch (Triton) and JAX (Pallas); then,
at (B, N, D) = (300, 1000, 96) (several blocks, several slices, sizes that are not multiples of a block), every
option (logQ, ids, diagonal, mixed sources, symmetric normalised InfoNCE, weights, a tensor temperature)
against the materialised path in float64 on the same device, value and every gradient; and rows whose
positive is 20 to 60 above every negative (loss ``~exp(-gap)``, which must not round to 0).

**Side-by-side** (phase ``bench``), each configuration in its own subprocess (fresh memory peaks), in priority
order until the time budget is spent:

* ``shared``: (B, N, D) = (8192, 262144, 256), ``unsupervised_softmax_cross_entropy_loss`` (own positive + N
  shared negatives, T = 0.05). Cut Cross-Entropy and Liger compute ``linear_cross_entropy(q / T, n, targets)``
  with random targets there: the same products and memory traffic, not the same loss (they have no per-row
  positive outside the classifier).
* ``in-batch``: B = 32768, D = 256, ``sampled_softmax_loss(q, p, temperature=0.05)`` (every other row's
  positive is a negative), which is exactly ``linear_cross_entropy(q / T, p, arange(B))`` for CCE and Liger:
  the same loss.
* workloads: recloss ``fused``, ``streaming`` and ``materialized``; ``plain`` (the logits block and the
  framework's cross-entropy, by hand); ``cce`` (``cut_cross_entropy.linear_cross_entropy``, its default
  ``filter_eps``; its backward needs bfloat16/float16); ``liger``
  (``liger_kernel.transformers.functional.liger_fused_linear_cross_entropy``); JAX: recloss ``fused``,
  ``streaming`` and ``plain`` under ``jax.jit``.
* float32 and bfloat16 inputs. Time: forward + backward (gradients for every embedding), median of ``--reps``
  steps after warm-up, as a ratio to the same GPU's ``[B, D] x [D, N]`` GEMM in the same framework and dtype
  (float32 at full precision, as recloss computes it) timed alternately in the same process. Memory: the peak
  device memory of one step above what was allocated before it, as a ratio to the float32 ``B x N`` logits.

Outputs in ``--out``: ``fused_gpu.json`` (everything) and ``fused_gpu.md`` (the tables), rewritten after every
configuration.

Wheels. The GPU machine has no network: Cut Cross-Entropy and Liger are installed from wheels carried in the
repository's ``.whl/`` folder (ignored by git: ``/.whl/`` in ``.gitignore``; never commit them). Both are pure
Python and need only torch and triton, which the machine has. Download them here (Python 3.12 there):

    mkdir -p .whl && python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \\
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \\
        --platform manylinux2014_x86_64 -d .whl cut-cross-entropy==25.1.1 liger-kernel==0.8.5

then run the one call with ``.whl`` carried: ``bash benchmarks/fused_gpu.sh`` (it installs them with
``pip install --no-index --no-deps --target /tmp/site .whl/*.whl``). Without the wheels the CCE and Liger rows
say "not installed" and everything else runs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
TEMPERATURE = 0.05
SHAPES = {"shared": (8192, 262144, 256), "in-batch": (32768, 32768, 256)}
DRY_SHAPES = {"shared": (48, 200, 24), "in-batch": (80, 80, 24)}
LOSSES = ("sampled_softmax_loss", "unsupervised_softmax_cross_entropy_loss", "info_nce_loss")


def _set_interpreter(dry_run: bool) -> None:
    """Before recloss is imported: the CPU dry run runs the kernels through the interpreters."""
    if dry_run:
        os.environ["RECLOSS_FUSED_INTERPRET"] = "1"


# ----------------------------------------------------------------------------------------------------------
# Parity on the device


def parity(frameworks: list[str], device: str, dtypes: tuple[str, ...], small: bool,
           budget: float = float("inf")) -> list[dict[str, Any]]:
    """Rows ``{framework, check, dtype, value_error, grad_error, ok, detail}``; checks not started within
    ``budget`` seconds are reported as skipped (not ok)."""
    import numpy as np

    import recloss
    from recloss.losses import CATALOGUE
    from recloss.parity import DIMS, make_inputs

    started = time.time()
    rows = []

    def skipped(framework: str, check: str, dtype: str) -> dict:
        return {"framework": framework, "check": check, "dtype": dtype, "value_error": float("nan"),
                "grad_error": None, "ok": False, "detail": "skipped: parity budget spent"}
    for framework in frameworks:
        for loss in LOSSES:
            for dtype in dtypes:
                if time.time() - started > budget:
                    rows.append(skipped(framework, f"spec cases of {loss}", dtype))
                    continue
                rng = np.random.default_rng(0)
                worst, failures = [0.0, 0.0], []
                for case in CATALOGUE[loss].cases:
                    if case.forms.get("neg_emb") == 1 or case.options.get("num_hard_negatives") is not None:
                        continue
                    options = {o.name: o.default for o in CATALOGUE[loss].options} | dict(case.options)
                    options["implementation"] = "fused"
                    report = recloss.validate(loss, backends=[framework], devices=[device], dtypes=[dtype],
                                              inputs=make_inputs(CATALOGUE[loss], case, rng, DIMS), options=options)
                    row = report.rows[0]
                    worst = [max(worst[0], row.value_error), max(worst[1], row.grad_error or 0.0)]
                    failures += [f"{case.name}: {f}" for f in row.failures]
                rows.append({"framework": framework, "check": f"spec cases of {loss}", "dtype": dtype,
                             "value_error": worst[0], "grad_error": worst[1], "ok": not failures,
                             "detail": "; ".join(failures)[:600]})
        sizes = (37, 61, 10) if small else (300, 1000, 96)
        rows.append(_confident_rows(framework, device))
        for dtype in dtypes:
            if time.time() - started > budget:
                rows.append(skipped(framework, f"every option at {sizes}", dtype))
                continue
            rows += _against_materialized(framework, device, dtype, sizes)
    return rows


def _against_materialized(framework: str, device: str, dtype: str, sizes: tuple[int, int, int]) -> list[dict]:
    import numpy as np

    import recloss
    from recloss._dispatch import load_backend
    from recloss.losses import CATALOGUE
    from recloss.parity import TOLERANCES, cast_inputs

    module = load_backend(framework)
    device = "cpu" if device == "cpu" else ("cuda" if framework == "torch" else "gpu")
    b, n, d = sizes
    rng = np.random.default_rng(1)
    emb = lambda rows: rng.normal(0.0, 1.0, size=(rows, d)) / d ** 0.25  # noqa: E731
    configs = {
        "mixed: in-batch + shared, logQ, ids, weights": (
            "sampled_softmax_loss", {"query_emb": emb(b), "pos_emb": emb(b), "neg_emb": emb(n),
                                     "pos_log_q": np.log(rng.uniform(0.05, 1, b)),
                                     "neg_log_q": np.log(rng.uniform(0.05, 1, n)),
                                     "pos_ids": rng.integers(0, 50, b), "neg_ids": rng.integers(0, 50, n),
                                     "sample_weight": rng.uniform(0, 2, b)}, {"in_batch": True}),
        "in-batch, diagonal": ("sampled_softmax_loss", {"query_emb": emb(b), "pos_emb": emb(b)}, {}),
        "shared, none": ("unsupervised_softmax_cross_entropy_loss",
                         {"src_emb": emb(b), "pos_emb": emb(b), "neg_emb": emb(n)}, {"reduction": "none"}),
        "info_nce symmetric, normalized, ids": ("info_nce_loss", {"query_emb": emb(b), "key_emb": emb(b),
                                                                  "ids": rng.integers(0, 50, b)},
                                                {"symmetric": True, "normalize": True}),
    }
    value_tol, grad_tol = TOLERANCES[dtype]
    rows = []
    for label, (loss, inputs, options) in configs.items():
        inputs = {**inputs, "temperature": np.asarray(0.1)}
        wrt = [k for k, v in inputs.items() if np.asarray(v).dtype.kind == "f" and k != "sample_weight"]
        rounded = cast_inputs({k: v for k, v in inputs.items() if k != "temperature"}, CATALOGUE[loss], dtype)
        rounded["temperature"] = np.asarray(0.1, np.float32)
        exact = {k: (np.asarray(v, np.float64) if np.asarray(v).dtype.kind == "f" or "float" in str(np.asarray(
            v).dtype) else v) for k, v in rounded.items()}
        function = getattr(recloss, loss)
        try:
            value, grads = module.value_and_grad(lambda **t: function(**t, **options, implementation="fused"),
                                                 rounded, wrt, device)
            value0, grads0 = module.value_and_grad(
                lambda **t: function(**t, **options, implementation="materialized"), exact, wrt, device)
            value_error = _relative(value, value0)
            grad_error = max(_relative(grads[k], grads0[k]) for k in wrt)
            ok, detail = value_error <= value_tol * 10 and grad_error <= grad_tol, ""
        except Exception as error:  # noqa: BLE001 - reported
            value_error = grad_error = float("inf")
            ok, detail = False, f"{type(error).__name__}: {error}"[:600]
        rows.append({"framework": framework, "check": f"{label} at {sizes}", "dtype": dtype,
                     "value_error": value_error, "grad_error": grad_error, "ok": ok, "detail": detail})
    return rows


def _confident_rows(framework: str, device: str) -> dict:
    import numpy as np

    import recloss
    from recloss._dispatch import load_backend

    module = load_backend(framework)
    device = "cpu" if device == "cpu" else ("cuda" if framework == "torch" else "gpu")
    gaps = np.array([20.0, 25.0, 40.0, 60.0])
    q = np.zeros((4, 16)); q[:, 0], q[:, 1] = 30.0, 1.0
    p = np.zeros((4, 16)); p[:, 0], p[:, 1] = 1.0, gaps
    n = np.zeros((2, 16)); n[0, 0], n[1, 2] = 1.0, 1.0
    exact = np.log1p(np.sum(np.exp(q @ n.T - np.sum(q * p, 1)[:, None]), 1))
    try:
        value, _ = module.value_and_grad(
            lambda **t: recloss.unsupervised_softmax_cross_entropy_loss(**t, reduction="none",
                                                                         implementation="fused"),
            {"src_emb": q.astype(np.float32), "pos_emb": p.astype(np.float32), "neg_emb": n.astype(np.float32)},
            ["src_emb"], device)
        error = float(np.max(np.abs(value - exact) / exact))
        ok, detail = error < 1e-5, f"losses {np.asarray(value).tolist()}"
    except Exception as exc:  # noqa: BLE001
        error, ok, detail = float("inf"), False, f"{type(exc).__name__}: {exc}"[:600]
    return {"framework": framework, "check": "confident rows (gap 20 to 60)", "dtype": "float32",
            "value_error": error, "grad_error": None, "ok": ok, "detail": detail}


def _relative(actual: Any, expected: Any) -> float:
    import numpy as np
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
        return float("inf")
    return float(np.max(np.abs(actual - expected), initial=0.0) / max(np.max(np.abs(expected), initial=0.0),
                                                                        1e-30))


# ----------------------------------------------------------------------------------------------------------
# The side-by-side: one configuration (in a subprocess)


def plan(frameworks: list[str]) -> list[dict[str, Any]]:
    """Priority order: the in-batch comparison the targets name, then the large shared shape, then the rest."""
    order = []
    for dtype in ("bfloat16", "float32"):
        order += [("torch", "in-batch", w, dtype) for w in ("fused", "cce", "liger")]
        order += [("torch", "shared", w, dtype) for w in ("fused", "cce", "liger")]
    for dtype in ("bfloat16", "float32"):
        order += [("torch", shape, w, dtype) for shape in ("in-batch", "shared")
                  for w in ("streaming", "materialized", "plain")]
    for dtype in ("bfloat16", "float32"):
        order += [("jax", shape, w, dtype) for shape in ("in-batch", "shared") for w in ("fused", "streaming", "plain")]
    return [{"framework": f, "shape_kind": s, "workload": w, "dtype": d} for f, s, w, d in order if f in frameworks]


def _torch_step(config: dict, q: Any, p: Any, n: Any) -> Any:
    import torch
    import torch.nn.functional as F

    import recloss

    workload, in_batch, scale = config["workload"], config["shape_kind"] == "in-batch", 1.0 / TEMPERATURE
    if workload in ("fused", "streaming", "materialized"):
        if in_batch:
            return lambda: recloss.sampled_softmax_loss(q, p, temperature=TEMPERATURE, implementation=workload)
        return lambda: recloss.unsupervised_softmax_cross_entropy_loss(q, p, n, temperature=TEMPERATURE,
                                                                       implementation=workload)
    rows = q.shape[0]
    targets = (torch.arange(rows, device=q.device) if in_batch
               else torch.randint(0, n.shape[0], (rows,), device=q.device, generator=torch.Generator(
                   device=q.device).manual_seed(1)))
    classifier = p if in_batch else n
    if workload == "plain":
        if in_batch:
            return lambda: F.cross_entropy((q @ p.T).float() * scale, targets)
        return lambda: F.cross_entropy(torch.cat([(q * p).sum(-1, keepdim=True), q @ n.T], 1).float() * scale,
                                       torch.zeros(rows, dtype=torch.long, device=q.device))
    if workload == "cce":
        from cut_cross_entropy import linear_cross_entropy
        return lambda: linear_cross_entropy(q * scale, classifier, targets)
    if workload == "liger":
        from liger_kernel.transformers.functional import liger_fused_linear_cross_entropy
        return lambda: liger_fused_linear_cross_entropy(q * scale, classifier, targets)
    raise ValueError(workload)


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    b, n, d = config["shape"]
    reps, warmup = config.get("reps", 10), 2
    if config["framework"] == "torch":
        import torch

        from recloss.backends.torch import fused as torch_fused
        torch_fused.CONFIG.update(config.get("kernel_config", {}))
        dtype = getattr(torch, config["dtype"])
        dev = config["device"]
        gen = torch.Generator(device=dev).manual_seed(0)
        make = lambda rows: (torch.randn(rows, d, device=dev, generator=gen) / d ** 0.5).to(dtype)  # noqa: E731
        q, p = make(b), make(b)
        neg = None if config["shape_kind"] == "in-batch" else make(n)
        a, b_t = make(b), make(n).T.contiguous()
        out = torch.empty(b, n, device=dev, dtype=dtype)
        inputs = [t.requires_grad_(True) for t in (q, p, neg) if t is not None]
        loss = _torch_step(config, q, p, neg)
        cuda = dev == "cuda"
        sync = torch.cuda.synchronize if cuda else (lambda: None)

        def step() -> Any:
            return torch.autograd.grad(loss(), inputs)

        def floor() -> None:
            torch.mm(a, b_t, out=out)
        sync()
        started = time.perf_counter()
        for _ in range(warmup):
            step()
        sync()
        setup = time.perf_counter() - started
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated() if cuda else 0
        result = step()
        sync()
        peak = torch.cuda.max_memory_allocated() - before if cuda else None
        del result
        device = torch.cuda.get_device_name() if cuda else "cpu (dry run)"
        versions = {"torch": torch.__version__}
    else:
        import jax
        import jax.numpy as jnp

        import recloss
        from recloss.backends.jax import fused as jax_fused
        jax_fused.CONFIG.update(config.get("kernel_config", {}))
        dtype = jnp.dtype(config["dtype"])
        keys = jax.random.split(jax.random.PRNGKey(0), 5)
        make = lambda k, rows: (jax.random.normal(k, (rows, d)) / d ** 0.5).astype(dtype)  # noqa: E731
        q, p, neg, a = make(keys[0], b), make(keys[1], b), make(keys[2], n), make(keys[3], b)
        b_t = make(keys[4], n).T
        jax.block_until_ready((q, p, neg, a, b_t))
        stats = jax.devices()[0].memory_stats() or {}
        before = stats.get("bytes_in_use", 0)
        in_batch, workload = config["shape_kind"] == "in-batch", config["workload"]
        if workload == "plain":
            def fn(q, p, neg):
                logits = (q @ p.T if in_batch else jnp.concatenate([jnp.sum(q * p, -1, keepdims=True), q @ neg.T], 1))
                logits = logits.astype(jnp.float32) / TEMPERATURE
                picked = jnp.diagonal(logits) if in_batch else logits[:, 0]
                return jnp.mean(jax.nn.logsumexp(logits, axis=-1) - picked)
        elif in_batch:
            def fn(q, p, neg):
                return recloss.sampled_softmax_loss(q, p, temperature=TEMPERATURE, implementation=workload)
        else:
            def fn(q, p, neg):
                return recloss.unsupervised_softmax_cross_entropy_loss(q, p, neg, temperature=TEMPERATURE,
                                                                       implementation=workload)
        grad = jax.jit(jax.value_and_grad(fn, argnums=(0, 1) if in_batch else (0, 1, 2)))
        precision = jax.lax.Precision.HIGHEST if config["dtype"] == "float32" else None
        matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=precision))
        sync = lambda: None  # noqa: E731

        def step() -> Any:
            return jax.block_until_ready(grad(q, p, neg))

        def floor() -> None:
            matmul(a, b_t).block_until_ready()
        started = time.perf_counter()
        for _ in range(warmup):
            step()
        result = step()
        del result
        stats = jax.devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use", 0) - before if stats else None
        floor()
        setup = time.perf_counter() - started
        device = str(jax.devices()[0].device_kind)
        versions = {"jax": jax.__version__}
    steps, floors = [], []
    for _ in range(reps):
        sync()
        start = time.perf_counter()
        floor()
        sync()
        floors.append(time.perf_counter() - start)
        start = time.perf_counter()
        step()
        sync()
        steps.append(time.perf_counter() - start)
    step_s, floor_s = statistics.median(steps), statistics.median(floors)
    return {**config, "ok": True, "device": device, "versions": versions, "step_ms": step_s * 1e3,
            "gemm_ms": floor_s * 1e3, "ratio": step_s / floor_s, "setup_s": setup, "peak_bytes": peak,
            "logits_bytes": b * n * 4, "gemm_tflops": 2 * b * n * d / floor_s / 1e12}


# ----------------------------------------------------------------------------------------------------------
# Reports


def _markdown(document: dict[str, Any]) -> str:
    lines = [f"Fused softmax kernels, {document['date']}, on {document.get('device', '?')}; "
             f"{document['seconds']:.0f} s.", ""]
    if document.get("parity"):
        lines += ["### Parity on the device", "",
                  "| framework | check | dtype | value rel. err | grad rel. err | result |",
                  "|---|---|---|---|---|---|"]
        for r in document["parity"]:
            grad = "–" if r["grad_error"] is None else f"{r['grad_error']:.1e}"
            result = "pass" if r["ok"] else f"FAIL {r['detail']}"
            lines.append(f"| {r['framework']} | {r['check']} | {r['dtype']} | {r['value_error']:.1e} | {grad} | "
                         f"{result} |")
        lines.append("")
    lines += _targets(document.get("results", []))
    if document.get("results"):
        lines += ["### Side-by-side", "",
                  "Forward+backward time as a ratio to the same GPU's `[B, D] x [D, N]` GEMM (same framework and "
                  "dtype); peak device memory of one step as a ratio to the float32 `B x N` logits.", "",
                  "| shape | framework | workload | dtype | time / GEMM | step ms | GEMM ms (TFLOP/s) | peak GiB | "
                  "peak / logits |", "|---|---|---|---|---|---|---|---|---|"]
        for r in document["results"]:
            shape = f"{r['shape_kind']} {tuple(r.get('shape', ()))}"
            if not r.get("ok"):
                lines.append(f"| {shape} | {r['framework']} | {r['workload']} | {r['dtype']} | failed: "
                             f"{str(r.get('error'))[:160]} | | | | |")
                continue
            peak = r.get("peak_bytes")
            peak_gib = "–" if peak is None else f"{peak / 2**30:.2f}"
            peak_ratio = "–" if peak is None else f"{peak / r['logits_bytes']:.3f}"
            lines.append(f"| {shape} | {r['framework']} | {r['workload']} | {r['dtype']} | {r['ratio']:.2f} | "
                         f"{r['step_ms']:.1f} | {r['gemm_ms']:.2f} ({r['gemm_tflops']:.0f}) | {peak_gib} | "
                         f"{peak_ratio} |")
    return "\n".join(lines) + "\n"


def _targets(results: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, read off the results: fused at most 3.5 x the GEMM; in-batch no slower than CCE and
    peak memory at most CCE's."""
    found = {(r["framework"], r["shape_kind"], r["workload"], r["dtype"]): r for r in results if r.get("ok")}
    lines = []
    for dtype in ("bfloat16", "float32"):
        for framework in ("torch", "jax"):
            for shape in ("in-batch", "shared"):
                fused = found.get((framework, shape, "fused", dtype))
                if fused is None:
                    continue
                line = (f"- {framework} {shape} {dtype}: fused {fused['ratio']:.2f} x GEMM (target <= 3.5: "
                        f"{'met' if fused['ratio'] <= 3.5 else 'missed'})")
                cce = found.get((framework, shape, "cce", dtype))
                if cce is not None and shape == "in-batch":
                    faster = fused["step_ms"] <= cce["step_ms"]
                    line += (f"; CCE {cce['ratio']:.2f} x, fused / CCE time {fused['step_ms'] / cce['step_ms']:.2f} "
                             f"(no slower than CCE: {'met' if faster else 'missed'})")
                    if fused.get("peak_bytes") is not None and cce.get("peak_bytes"):
                        smaller = fused["peak_bytes"] <= cce["peak_bytes"]
                        line += (f"; peak fused / CCE {fused['peak_bytes'] / cce['peak_bytes']:.2f} (at most CCE's: "
                                 f"{'met' if smaller else 'missed'})")
                lines.append(line)
    return ["### Targets", ""] + lines + [""] if lines else []


def _write(document: dict[str, Any], out: str) -> None:
    with open(os.path.join(out, "fused_gpu.json"), "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
    with open(os.path.join(out, "fused_gpu.md"), "w", encoding="utf-8") as handle:
        handle.write(_markdown(document))


# ----------------------------------------------------------------------------------------------------------
# The driver


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--phase", choices=("parity", "bench", "all"), default="all")
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "results", "gpu"))
    parser.add_argument("--budget", type=float, default=480.0, help="seconds for the whole run")
    parser.add_argument("--parity-budget", type=float, default=180.0,
                        help="seconds after which no new parity check starts (the rest is reported skipped)")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--framework", action="append", choices=("torch", "jax"),
                        help="repeatable; default: every installed one")
    parser.add_argument("--workload", action="append", help="keep only these workloads (repeatable)")
    parser.add_argument("--kernel-config", default="{}",
                        help='JSON overrides of the fused kernels\' CONFIG, e.g. \'{"block_b": 128}\'')
    parser.add_argument("--dry-run", action="store_true",
                        help="on the CPU: tiny shapes, the kernels through the interpreters (checks this script)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    _set_interpreter(args.dry_run or bool(os.environ.get("RECLOSS_FUSED_INTERPRET")))
    if args.one:
        try:
            result = run_one(json.loads(args.one))
        except Exception as error:  # noqa: BLE001 - reported to the driver
            result = {**json.loads(args.one), "ok": False, "error": f"{type(error).__name__}: {error}"[:400]}
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    import importlib.util
    frameworks = args.framework or [f for f in ("torch", "jax") if importlib.util.find_spec(f) is not None]
    device = "cpu" if args.dry_run else "gpu"
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    document: dict[str, Any] = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                                "seconds": 0.0, "parity": [], "results": [], "dry_run": args.dry_run}
    if args.phase in ("parity", "all"):
        dtypes = ("float32", "bfloat16") if args.dry_run else ("float32", "bfloat16", "float16")
        for row in parity(frameworks, device, dtypes, small=args.dry_run, budget=args.parity_budget):
            document["parity"].append(row)
            print(f"parity {row['framework']} {row['check']} {row['dtype']}: "
                  f"{'pass' if row['ok'] else 'FAIL ' + row['detail']} (value {row['value_error']:.1e}, grad "
                  f"{row['grad_error'] if row['grad_error'] is None else format(row['grad_error'], '.1e')})",
                  flush=True)
        document["seconds"] = time.time() - started
        _write(document, args.out)
    if args.phase in ("bench", "all"):
        shapes = DRY_SHAPES if args.dry_run else SHAPES
        configs = [c for c in plan(frameworks) if not args.workload or c["workload"] in args.workload]
        env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONWARNINGS": "ignore",
               "JAX_COMPILATION_CACHE_DIR": os.environ.get("JAX_COMPILATION_CACHE_DIR", "/tmp/recloss-jax-cache")}
        print(f"side-by-side: {len(configs)} configurations, {args.budget - (time.time() - started):.0f} s left",
              flush=True)
        for index, config in enumerate(configs, 1):
            left = args.budget - (time.time() - started)
            config = {**config, "shape": shapes[config["shape_kind"]], "reps": 2 if args.dry_run else args.reps,
                      "device": "cpu" if args.dry_run else "cuda", "kernel_config": json.loads(args.kernel_config)}
            if left < 25:
                result = {**config, "ok": False, "error": "skipped: time budget spent"}
            else:
                try:
                    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", json.dumps(config)]
                                          + (["--dry-run"] if args.dry_run else []),
                                          capture_output=True, text=True, timeout=min(left, 150), env=env)
                    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
                    result = (json.loads(lines[-1][7:]) if lines else
                              {**config, "ok": False, "error": (done.stderr or done.stdout).strip()[-400:]})
                except subprocess.TimeoutExpired:
                    result = {**config, "ok": False, "error": "timed out"}
            document["results"].append(result)
            document["device"] = result.get("device", document.get("device"))
            document["seconds"] = time.time() - started
            summary = (f"time/GEMM {result['ratio']:.2f}, step {result['step_ms']:.1f} ms, peak/logits "
                       f"{(result['peak_bytes'] or 0) / result['logits_bytes']:.3f}" if result.get("ok")
                       else f"FAILED {result.get('error')}")
            print(f"[{index}/{len(configs)}] {config['framework']} {config['shape_kind']} {config['workload']} "
                  f"{config['dtype']}: {summary}", flush=True)
            _write(document, args.out)
    document["seconds"] = time.time() - started
    _write(document, args.out)
    print(_markdown(document), flush=True)
    failed = [r for r in document["parity"] if not r["ok"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
