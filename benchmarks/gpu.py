"""GPU benchmark: torch and JAX on one large GPU, against that GPU's own GEMM time.

    bash benchmarks/gpu.sh                  # writes $OUT (default benchmarks/results/gpu) in under 5 minutes
    python benchmarks/gpu.py --out DIR [--shape 8192,262144,256] [--budget 270]

Each configuration (framework x dtype x workload x mode) runs in its own subprocess (fresh memory peaks),
in priority order, until the time budget is spent; a failure is recorded and the run goes on. For each:
forward+backward median over repetitions after warm-up, alternating with the *GEMM floor*: one
``[B, D] x [D, N]`` matmul in the same framework and dtype into a preallocated output (torch) or a jitted
matmul (JAX; float32 at ``Precision.HIGHEST``, which is what recloss uses), synchronised. Memory: peak device
memory during the step above what was allocated before it (torch ``max_memory_allocated``; JAX
``memory_stats()['peak_bytes_in_use']`` minus ``bytes_in_use`` before the first call, the process being fresh).
bfloat16 inputs are upcast to float32 inside recloss (its documented numerics), so their floor is the
bfloat16 GEMM a user would compare with. Results print as they come and are rewritten after every
configuration to ``gpu_results.json`` and ``gpu_results.md``.
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


def plan(backends: list[str]) -> list[dict[str, Any]]:
    order = [
        ("torch", "eager", "recloss", "float32"), ("jax", "jit", "recloss", "float32"),
        ("torch", "eager", "plain", "float32"), ("jax", "jit", "plain", "float32"),
        ("torch", "eager", "recloss", "bfloat16"), ("jax", "jit", "recloss", "bfloat16"),
        ("torch", "eager", "plain", "bfloat16"), ("jax", "jit", "plain", "bfloat16"),
        ("torch", "eager", "recloss[materialized]", "float32"), ("jax", "jit", "recloss[materialized]", "float32"),
        ("torch", "compile", "recloss", "float32"), ("torch", "compile", "plain", "float32"),
        ("torch", "compile", "recloss", "bfloat16"), ("jax", "eager", "recloss", "float32"),
    ]
    return [{"backend": b, "mode": m, "workload": w, "dtype": d} for b, m, w, d in order if b in backends]


# ----------------------------------------------------------------------------------------------------------
# One configuration (in a subprocess)


def _plain_torch(q, p, n):
    import torch
    import torch.nn.functional as F
    logits = torch.cat([(q * p).sum(-1, keepdim=True), q @ n.T], 1) / TEMPERATURE
    return F.cross_entropy(logits.float(), torch.zeros(logits.shape[0], dtype=torch.long, device=q.device))


def _plain_jax(q, p, n):
    import jax
    import jax.numpy as jnp
    logits = jnp.concatenate([jnp.sum(q * p, -1, keepdims=True), q @ n.T], 1) / TEMPERATURE
    return -jnp.mean(jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)[:, 0])


def _loss(workload: str):
    import recloss
    implementation = "materialized" if workload == "recloss[materialized]" else "auto"
    return lambda q, p, n: recloss.unsupervised_softmax_cross_entropy_loss(
        q, p, n, temperature=TEMPERATURE, implementation=implementation)


def run_one(config: dict[str, Any]) -> dict[str, Any]:
    b, n, d = config["shape"]
    reps, warmup = config.get("reps", 10), 2
    if config["backend"] == "torch":
        import torch
        dtype = getattr(torch, config["dtype"])
        dev = config.get("device", "cuda")
        gen = torch.Generator(device=dev).manual_seed(0)
        make = lambda rows: (torch.randn(rows, d, device=dev, generator=gen) / d ** 0.5).to(dtype)  # noqa: E731
        q, p, neg = make(b), make(b), make(n)
        a, b_t = make(b), make(n).T.contiguous()
        out = torch.empty(b, n, device=dev, dtype=dtype)
        cuda = dev == "cuda"
        for t in (q, p, neg):
            t.requires_grad_(True)
        fn = _plain_torch if config["workload"] == "plain" else _loss(config["workload"])
        if config["mode"] == "compile":
            fn = torch.compile(fn)
        sync = torch.cuda.synchronize if cuda else (lambda: None)

        def step():
            return torch.autograd.grad(fn(q, p, neg), [q, p, neg])

        def floor():
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
        dtype = jnp.dtype(config["dtype"])
        keys = jax.random.split(jax.random.PRNGKey(0), 5)
        make = lambda k, rows: (jax.random.normal(k, (rows, d)) / d ** 0.5).astype(dtype)  # noqa: E731
        q, p, neg, a = make(keys[0], b), make(keys[1], b), make(keys[2], n), make(keys[3], b)
        b_t = make(keys[4], n).T
        jax.block_until_ready((q, p, neg, a, b_t))
        stats = jax.devices()[0].memory_stats() or {}
        before = stats.get("bytes_in_use", 0)
        fn = _plain_jax if config["workload"] == "plain" else _loss(config["workload"])
        grad = jax.value_and_grad(fn, argnums=(0, 1, 2))
        if config["mode"] == "jit":
            grad = jax.jit(grad)
        precision = jax.lax.Precision.HIGHEST if config["dtype"] == "float32" else None
        matmul = jax.jit(lambda x, y: jnp.matmul(x, y, precision=precision))
        sync = lambda: None  # noqa: E731

        def step():
            return jax.block_until_ready(grad(q, p, neg))

        def floor():
            matmul(a, b_t).block_until_ready()
        started = time.perf_counter()
        for _ in range(warmup):
            step()
        result = step()
        del result
        # Read the peak before the floor runs: the jitted GEMM allocates its own [B, N] output.
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
            "gemm_ms": floor_s * 1e3, "ratio": step_s / floor_s, "setup_s": setup,
            "peak_bytes": peak, "logits_bytes": b * n * 4,
            "gemm_tflops": 2 * b * n * d / floor_s / 1e12}


# ----------------------------------------------------------------------------------------------------------
# The driver


def _markdown(document: dict[str, Any]) -> str:
    lines = [f"GPU run of {document['date']} on {document.get('device', '?')}; (B, N, D) = "
             f"{tuple(document['shape'])}; {document['seconds']:.0f} s.", "",
             "Time is forward+backward (gradients for query, positive and negative embeddings) as a ratio to the "
             "same GPU's `[B, D] x [D, N]` GEMM in the same framework and dtype; memory is the peak device memory "
             "above the inputs, in GiB and as a ratio to the float32 B x N logits.", "",
             "| backend | mode | workload | dtype | time / GEMM | step ms | GEMM ms (TFLOP/s) | peak GiB | peak / logits |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in document["results"]:
        if not r.get("ok"):
            lines.append(f"| {r['backend']} | {r['mode']} | {r['workload']} | {r['dtype']} | failed: "
                         f"{str(r.get('error'))[:120]} | | | | |")
            continue
        peak = r.get("peak_bytes")
        peak_gib = "–" if peak is None else f"{peak / 2**30:.2f}"
        peak_ratio = "–" if peak is None else f"{peak / r['logits_bytes']:.2f}"
        lines.append(f"| {r['backend']} | {r['mode']} | {r['workload']} | {r['dtype']} | {r['ratio']:.2f} | "
                     f"{r['step_ms']:.1f} | {r['gemm_ms']:.2f} ({r['gemm_tflops']:.0f}) | {peak_gib} | "
                     f"{peak_ratio} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.environ.get("OUT") or os.path.join(HERE, "results", "gpu"))
    parser.add_argument("--shape", default="8192,262144,256")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds for the whole run")
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--device", default="cuda", help="torch device (cpu: a dry run of the script)")
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        try:
            result = run_one(json.loads(args.one))
        except Exception as error:  # noqa: BLE001 - reported to the driver
            result = {**json.loads(args.one), "ok": False, "error": f"{type(error).__name__}: {error}"[:400]}
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    import importlib.util
    backends = [b for b in ("torch", "jax") if importlib.util.find_spec(b) is not None]
    shape = [int(x) for x in args.shape.split(",")]
    os.makedirs(args.out, exist_ok=True)
    started = time.time()
    document = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "shape": shape, "results": [], "seconds": 0.0}
    env = {**os.environ, "XLA_PYTHON_CLIENT_PREALLOCATE": "false", "PYTHONWARNINGS": "ignore"}
    configs = plan(backends)
    print(f"gpu benchmark: {len(configs)} configurations, budget {args.budget:.0f} s, shape {shape}", flush=True)
    for index, config in enumerate(configs, 1):
        left = args.budget - (time.time() - started)
        if left < 20:
            print(f"[{index}/{len(configs)}] skipped (budget spent): {config}", flush=True)
            document["results"].append({**config, "ok": False, "error": "skipped: time budget spent"})
            continue
        config = {**config, "shape": shape, "reps": args.reps, "device": args.device}
        try:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", json.dumps(config)],
                                  capture_output=True, text=True, timeout=min(left, 150), env=env)
            lines = [l for l in done.stdout.splitlines() if l.startswith("RESULT ")]
            result = (json.loads(lines[-1][7:]) if lines else
                      {**config, "ok": False, "error": (done.stderr or done.stdout).strip()[-400:]})
        except subprocess.TimeoutExpired:
            result = {**config, "ok": False, "error": "timed out"}
        except Exception as error:  # noqa: BLE001
            result = {**config, "ok": False, "error": f"{type(error).__name__}: {error}"}
        document["results"].append(result)
        document["device"] = result.get("device", document.get("device"))
        document["seconds"] = time.time() - started
        summary = (f"ratio {result['ratio']:.2f}, step {result['step_ms']:.1f} ms, GEMM {result['gemm_ms']:.2f} ms, "
                   f"peak {((result['peak_bytes'] or 0) / 2**30):.2f} GiB" if result.get("ok")
                   else f"FAILED {result.get('error')}")
        print(f"[{index}/{len(configs)}] {config['backend']} {config['mode']} {config['workload']} "
              f"{config['dtype']}: {summary}", flush=True)
        with open(os.path.join(args.out, "gpu_results.json"), "w", encoding="utf-8") as handle:
            json.dump(document, handle, indent=1)
        with open(os.path.join(args.out, "gpu_results.md"), "w", encoding="utf-8") as handle:
            handle.write(_markdown(document))
    print(_markdown(document), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
