"""The recloss benchmark suite: one command, every configuration in its own subprocess.

    python benchmarks/run.py                      # full suite, about 25 minutes on 2 CPU cores
    python benchmarks/run.py --quick              # smoke run: smallest shape, fewer repetitions (~2 minutes)
    python benchmarks/run.py --backend torch --shape 1024,10240,128 --out /tmp/bench

Runs the softmax-family losses (the streaming family: unsupervised softmax, sampled softmax with logQ and
accidental-hit ids, InfoNCE; plus ``softmax_loss`` on logits) and the pairwise losses (BPR, hinge) on every
installed backend, eagerly and compiled (``torch.compile``, ``jax.jit``, ``tf.function(jit_compile=True)``),
and the baselines: GraphLearn's formulation in TF (eager and ``tf.function``), the plain stable softmax
cross-entropy in each framework (eager and compiled), and each framework's own ``[B, D] x [D, N]`` matmul.
Every time is a ratio to the *floor* (a NumPy float32 matmul of the same size, timed alternately in the same
process); see worker.py for what is measured. Writes ``results.json``, ``results.md`` and ``results.png``
(the plot needs matplotlib: ``pip install "recloss[bench]"``) under ``--out``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import sys
import time
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import protocol  # noqa: E402
import report  # noqa: E402
import workloads  # noqa: E402

SHAPES = ((256, 2560, 64), (1024, 10240, 128), (2048, 65536, 128))
QUICK_SHAPES = ((256, 2560, 64),)
BACKENDS = ("torch", "jax", "tensorflow")   # "numpy" also runs: its GEMM with OpenBLAS's best kernel
#: Repetitions and time budget of the timing loop per shape (index in SHAPES order by size).
REPS = {0: 15, 1: 5, 2: 3}
BUDGET_S = {0: 15.0, 1: 25.0, 2: 30.0}


def installed_backends() -> list[str]:
    return [b for b in BACKENDS if importlib.util.find_spec(b) is not None]


def configurations(backends: list[str], shapes: list[tuple[int, int, int]], quick: bool,
                   workload_filter: list[str] | None) -> list[dict[str, Any]]:
    configs = []
    for index, shape in enumerate(sorted(shapes, key=lambda s: s[0] * s[1])):
        size = 0 if quick else min(index, 2) if shape not in SHAPES else SHAPES.index(shape)
        # Two warm-up steps everywhere: eager TF calls compile a signature on its second call (JAX on its first), so the
        # timed steps (and the memory peak) are the steady state, not the compilation.
        common = {"shape": list(shape), "reps": 5 if quick else REPS[size], "warmup": 2,
                  "max_seconds": 10.0 if quick else BUDGET_S[size]}
        wanted = [("numpy", "native", "matmul", "float32", "best")]     # NumPy with OpenBLAS's best kernel
        if "tensorflow" in backends:
            wanted += [("tensorflow", "eager", "graphlearn", "float32", None),
                       ("tensorflow", "compiled", "graphlearn", "float32", None)]
        for backend in backends:
            wanted.append((backend, "native", "matmul", "float32", None))
            for mode in ("eager", "compiled"):
                wanted.append((backend, mode, "plain", "float32", None))
                for name in workloads.LOSSES:
                    if name in workloads.HALF_ONLY or (quick and name == "unsupervised_softmax[materialized]"):
                        continue
                    wanted.append((backend, mode, name, "float32", None))
            if not quick and shape == SHAPES[1]:    # half precision at the medium shape
                wanted.append((backend, "native", "matmul", "bfloat16", None))
                for mode in ("eager", "compiled"):
                    for name in ("unsupervised_softmax", "unsupervised_softmax[float32 products]", "plain"):
                        wanted.append((backend, mode, name, "bfloat16", None))
        for backend, mode, workload, dtype, openblas in wanted:
            if workload_filter and workload not in workload_filter:
                continue
            config = {"backend": backend, "mode": mode, "workload": workload, **common}
            if dtype != "float32":
                config["dtype"] = dtype
            if openblas:
                config["openblas"] = openblas
            configs.append(config)
    return configs


def _bar(done: int, total: int, started: float, label: str) -> None:
    width = 30
    filled = int(width * done / max(total, 1))
    elapsed = time.time() - started
    eta = elapsed / done * (total - done) if done else 0.0
    line = (f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {elapsed / 60:4.1f} min "
            f"(eta {eta / 60:4.1f} min) {label[:60]:<60}")
    sys.stderr.write(line)
    sys.stderr.flush()


def run_one(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MALLOC_MMAP_THRESHOLD_": "131072",
           "MALLOC_TRIM_THRESHOLD_": "131072", "PYTHONWARNINGS": "ignore"}
    if config.get("openblas") == "best":
        # This machine sets OPENBLAS_CORETYPE=Haswell (and OPENBLAS_L2_SIZE) for old OpenBLAS builds, which slows
        # NumPy's GEMM; this one configuration unsets both, to show how far the usual floor is from the best.
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            env.pop(name, None)
    if config["backend"] == "tensorflow":
        # oneDNN's TF ops keep freed buffers in their own pool, which hides every peak from the RSS; without
        # them TF uses Eigen kernels and malloc (the same setting for recloss and the TF baselines).
        env["TF_ENABLE_ONEDNN_OPTS"] = "0"
    return _run_script("worker.py", config, timeout, env)


def _run_script(script: str, config: dict[str, Any], timeout: float, env: dict[str, str]) -> dict[str, Any]:
    """``script`` (beside this file) run on ``config`` in a fresh process: its ``RESULT`` line, or the error."""
    return protocol.run([os.path.join(HERE, script)], config, env, timeout)


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    versions = {}
    for name in ("numpy", *BACKENDS):
        if importlib.util.find_spec(name) is not None:
            try:
                versions[name] = __import__("importlib.metadata").metadata.version(
                    {"tensorflow": _tf_distribution()}.get(name, name))
            except Exception:  # noqa: BLE001 - a version is informative only
                versions[name] = "?"
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "versions": versions,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}


def _tf_distribution() -> str:
    import importlib.metadata
    for name in ("tensorflow-cpu", "tensorflow"):
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            continue
    return "tensorflow"


def _shape(text: str) -> tuple[int, int, int]:
    parts = tuple(int(p) for p in text.replace("x", ",").split(","))
    if len(parts) != 3:
        raise argparse.ArgumentTypeError(f"expected B,N,D; got {text!r}")
    return parts  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: the smallest shape, 5 repetitions")
    parser.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable; default: all installed")
    parser.add_argument("--shape", action="append", type=_shape, help="B,N,D (repeatable); default: the three")
    parser.add_argument("--workload", action="append", help="only these workloads (loss keys or baselines)")
    parser.add_argument("--out", default=None, help="output folder (default: benchmarks/results for a full run, "
                                                    "benchmarks/results/tmp/quick for --quick, which is ignored "
                                                    "by git, so a smoke run never overwrites the committed results)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per configuration")
    parser.add_argument("--no-overhead", action="store_true", help="skip the dispatch-overhead measurement")
    parser.add_argument("--no-versus", action="store_true",
                        help="skip the recloss / plain ratios measured alternately in one process (versus.py)")
    parser.add_argument("--threads", default="1,2",
                        help="intra-op thread counts of the small-step ratios (comma-separated; default 1,2)")
    args = parser.parse_args(argv)

    if args.out is None:
        args.out = os.path.join(HERE, "results", "tmp", "quick") if args.quick else os.path.join(HERE, "results")
    backends = args.backend or installed_backends()
    shapes = args.shape or list(QUICK_SHAPES if args.quick else SHAPES)
    configs = configurations(backends, shapes, args.quick, args.workload)
    if not args.no_overhead:
        configs += [{"backend": b, "mode": "overhead", "workload": "overhead", "shape": [32, 256, 64],
                     "calls": 300 if args.quick else 2000} for b in backends]
    if not args.no_versus and (not args.workload or "versus" in args.workload):
        threads = [int(t) for t in args.threads.split(",") if t]
        configs += versus_configurations(backends, [] if args.quick else shapes, threads, args.quick)
    os.makedirs(args.out, exist_ok=True)
    results: list[dict[str, Any]] = []
    started = time.time()
    print(f"recloss benchmarks: {len(configs)} configurations, backends {', '.join(backends)}", file=sys.stderr)
    for index, config in enumerate(configs):
        label = f"{config['backend']} {config['mode']} {config['workload']} {tuple(config['shape'])}"
        if config.get("threads"):
            label += f" {config['threads']} thread(s)"
        _bar(index, len(configs), started, label)
        if config["mode"] == "overhead":
            result = run_overhead(config, args.timeout)
        elif config["workload"] == "versus":
            result = run_versus(config, args.timeout)
        else:
            result = run_one(config, args.timeout)
        results.append(result)
        if not result.get("ok"):
            sys.stderr.write(f"\n  FAILED {label}: {result.get('error')}\n")
    _bar(len(configs), len(configs), started, "done")
    sys.stderr.write("\n")

    document = {"machine": machine(), "quick": args.quick, "seconds": time.time() - started, "results": results}
    with open(os.path.join(args.out, "results.json"), "w", encoding="utf-8") as handle:
        json.dump(document, handle, indent=1)
    markdown = report.markdown(document)
    with open(os.path.join(args.out, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown)
    plotted = report.plot(document, os.path.join(args.out, "results.png"))
    print(markdown)
    print(f"wrote {args.out}/results.json, results.md" + (", results.png" if plotted else
                                                         " (no plot: matplotlib is not installed)"))
    return 0 if all(r.get("ok") for r in results) else 1


def versus_configurations(backends: list[str], shapes: list[tuple[int, int, int]], threads: list[int],
                          quick: bool) -> list[dict[str, Any]]:
    """recloss against the plain version in the same framework and mode (``versus.py``): the small step with
    each thread count (and, for torch.compile, the same without dynamo's guard checks: a diagnostic), and the
    larger shapes with the framework's default threads (every core)."""
    configs = []
    for backend in backends:
        for mode in ("eager", "compiled"):
            for count in threads:
                configs.append({"backend": backend, "mode": mode, "workload": "versus",
                                "shape": list(workloads.SMALL_STEP), "threads": count,
                                "max_seconds": 8.0 if quick else 20.0})
                if (backend, mode) == ("torch", "compiled"):   # what dynamo's per-call guard checks cost
                    configs.append({**configs[-1], "skip_guards": True})
            for shape in shapes:
                if shape == workloads.SMALL_STEP or shape[0] * shape[1] < 1 << 22:
                    continue   # the ratios cover the small step and the shapes that stream
                configs.append({"backend": backend, "mode": mode, "workload": "versus", "shape": list(shape),
                                "threads": None, "max_seconds": 60.0 if shape[1] > 20000 else 30.0})
    return configs


def run_versus(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    return _run_script("versus.py", config, timeout,
                       {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"})


def run_overhead(config: dict[str, Any], timeout: float) -> dict[str, Any]:
    return _run_script("overhead.py", config, timeout,
                       {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore"})


if __name__ == "__main__":
    sys.exit(main())
