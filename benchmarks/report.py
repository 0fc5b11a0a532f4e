"""Markdown table and PNG plot of a benchmark run (used by run.py; ``python benchmarks/report.py DIR`` redraws)."""

from __future__ import annotations

import json
import os
import sys
from collections import defaultdict
from typing import Any

from workloads import SMALL_STEP

MODES = {"eager": "eager", "compiled": "compiled", "native": "native"}
COMPILER = {"torch": "torch.compile", "jax": "jax.jit", "tensorflow": "tf.function(jit_compile=True)"}


def _key(r: dict[str, Any]) -> tuple:
    return (r["backend"], r["mode"], r["workload"], tuple(r["shape"]), r.get("dtype", "float32"))


def _fmt(x: Any, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _mib(x: Any) -> str:
    return "–" if x is None else f"{x / 2**20:.0f}"


def markdown(document: dict[str, Any]) -> str:
    results = [r for r in document["results"] if r.get("ok") and r["mode"] != "overhead" and r["backend"] != "numpy"
               and r["workload"] != "versus"]
    by_key = {_key(r): r for r in results}
    best = {tuple(r["shape"]): r for r in document["results"] if r.get("ok") and r["backend"] == "numpy"}
    machine = document["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    lines = [f"Run of {machine['date']} on {machine['cpu']}, {machine['cores']} cores, Python {machine['python']} "
             f"({versions}){' — quick mode' if document.get('quick') else ''}; "
             f"{document['seconds'] / 60:.1f} minutes.", "",
             "Times are forward+backward medians as a ratio to the floor (one float32 [B, D] x [D, N] NumPy matmul "
             "timed alternately in the same process); `vs GL` divides by GraphLearn's formulation in TF eager "
             "(above 1 = faster than GraphLearn); `best / best` is the fastest step over the fastest floor (less "
             "sensitive to other load on the machine); `vs plain` by the plain stable implementation in the same "
             "framework and mode. Memory is the peak RSS during one step above the inputs, in MiB, and as a "
             "ratio to the float32 logits matrix (B x N; B x B for InfoNCE).", ""]
    lines += versus_table(document)
    shapes = sorted({tuple(r["shape"]) for r in results}, key=lambda s: s[0] * s[1])
    for shape in shapes:
        floor = [r["floor_s"] for r in results if tuple(r["shape"]) == shape]
        floor_ms = sorted(floor)[len(floor) // 2] * 1e3 if floor else float("nan")
        note = ""
        if shape in best and floor:
            note = (f"; NumPy with OpenBLAS's best kernel for this processor (OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE "
                    f"unset in its own process): {best[shape]['step_s'] * 1e3:.1f} ms = "
                    f"{best[shape]['step_s'] / (floor_ms / 1e3):.2f} x the floor")
        lines += [f"### (B, N, D) = {shape} — floor {floor_ms:.1f} ms (median over configurations){note}", "",
                  "| backend | mode | workload | time / floor | best / best | vs GL eager | vs plain | peak MiB "
                  "| peak / logits | step ms |", "|---|---|---|---|---|---|---|---|---|---|"]
        gl = by_key.get(("tensorflow", "eager", "graphlearn", shape, "float32"))
        for r in sorted((r for r in results if tuple(r["shape"]) == shape),
                        key=lambda r: (r.get("dtype", "float32"), r["workload"] not in ("graphlearn", "matmul", "plain"),
                                       r["backend"], r["mode"], r["workload"])):
            mode = COMPILER.get(r["backend"], r["mode"]) if r["mode"] == "compiled" else r["mode"]
            if r["workload"] == "graphlearn" and r["mode"] == "compiled":
                mode = "tf.function"
            plain = by_key.get((r["backend"], r["mode"], "plain", shape, r.get("dtype", "float32")))
            vs_gl = gl["ratio"] / r["ratio"] if gl and r["workload"] != "matmul" else None
            vs_plain = (plain["ratio"] / r["ratio"] if plain and r["workload"] not in ("matmul", "plain", "graphlearn")
                        and r["workload"] not in ("softmax", "bpr", "hinge") else None)
            memory_ratio = (r["peak_bytes"] / r["logits_bytes"] if r.get("peak_bytes") is not None
                            and r.get("logits_bytes") else None)
            workload = r["workload"] + (f" ({r['dtype']})" if r.get("dtype", "float32") != "float32" else "")
            lines.append(f"| {r['backend']} | {mode} | {workload} | {_fmt(r['ratio'])} | "
                         f"{_fmt(r.get('ratio_min'))} | {_fmt(vs_gl)} | "
                         f"{_fmt(vs_plain)} | {_mib(r.get('peak_bytes'))} | {_fmt(memory_ratio)} | "
                         f"{r['step_s'] * 1e3:.1f} |")
        lines.append("")
    overhead = [r for r in document["results"] if r.get("mode") == "overhead" and r.get("ok")]
    if overhead:
        lines += ["### Small-batch overhead (B=32, forward only)", "",
                  "| backend | front end alone, µs/call | eager: public, µs | eager: same math written directly, µs "
                  "| eager: public − written directly, µs | eager: public − kernel alone, µs "
                  "| compiled: public − direct, µs |", "|---|---|---|---|---|---|---|"]
        for r in overhead:
            lines.append(f"| {r['backend']} | {r['front_end_us']:.1f} | {r['eager']['public_us']:.1f} | "
                         f"{r['eager'].get('plain_us', float('nan')):.1f} | "
                         f"{r['eager'].get('over_plain_us', float('nan')):.1f} | {r['eager']['overhead_us']:.1f} | "
                         f"{r['compiled']['overhead_us']:.1f} |")
        lines.append("")
    if not document.get("quick"):
        lines += targets(document)
    failed = [r for r in document["results"] if not r.get("ok")]
    if failed:
        lines += ["### Failed configurations", ""]
        lines += [f"- {r['backend']} {r['mode']} {r['workload']} {tuple(r['shape'])}: {r.get('error')}" for r in failed]
        lines.append("")
    return "\n".join(lines)



def versus_table(document: dict[str, Any]) -> list[str]:
    """recloss / plain per framework, mode and shape (``versus.py``: the two timed alternately in one process);
    below 1: recloss is faster. The small step is in-batch sampled softmax against ``cross_entropy(q @ p.T / T,
    arange(B))``, the larger shapes ``unsupervised_softmax_cross_entropy_loss`` against the plain softmax
    cross-entropy on the concatenated logits."""
    versus = [r for r in document["results"] if r.get("workload") == "versus"]
    if not versus:
        return []
    columns = sorted({(tuple(r["shape"]), r.get("threads")) for r in versus},
                     key=lambda c: (c[0][0] * c[0][1], c[1] or 0))
    cores = document["machine"].get("cores")

    def header(column: tuple) -> str:
        shape, threads = column
        what = "small step, in-batch (B, D) = (%d, %d)" % (shape[0], shape[2]) if shape == SMALL_STEP else str(shape)
        return f"{what}, {threads or cores} thread{'s' if (threads or cores) != 1 else ''}"

    lines = ["### recloss / plain, same framework and mode (below 1: recloss faster)", "",
             "Each pair timed alternately in one process (random order per round, the same number of calls per "
             "timing), ratio of the medians; `!` marks a ratio above the bound (1.2 for the small torch eager "
             "step, 1.0 elsewhere). Median ms of recloss / plain in brackets.", "",
             "| framework | mode | " + " | ".join(header(c) for c in columns) + " |",
             "|---|---|" + "---|" * len(columns)]
    by_key = {(r["backend"], _mode(r), tuple(r["shape"]), r.get("threads")): r for r in versus}
    for backend in ("torch", "jax", "tensorflow"):
        for mode in ("eager", "compiled", "compiled, guards skipped"):
            cells = []
            for shape, threads in columns:
                r = by_key.get((backend, mode, shape, threads))
                if r is None:
                    cells.append("–")
                elif not r.get("ok"):
                    cells.append("failed")
                else:
                    bound = 1.2 if (backend, mode, shape) == ("torch", "eager", SMALL_STEP) else 1.0
                    mark = " !" if r["ratio"] > bound else ""
                    cells.append(f"{r['ratio']:.2f}{mark} ({r['recloss_s'] * 1e3:.2f} / {r['plain_s'] * 1e3:.2f})")
            if any(c != "–" for c in cells):
                label = ("eager (jax.grad op by op)" if backend == "jax" else "eager") if mode == "eager" else (
                    COMPILER[backend] + ("" if mode == "compiled" else ", guards skipped (diagnostic)"))
                lines.append(f"| {backend} | {label} | " + " | ".join(cells) + " |")
    return lines + [""] + exact_table(versus, by_key)


def _mode(result: dict[str, Any]) -> str:
    """The row of a versus result: its mode, or the torch.compile diagnostic without guard checks."""
    return result["mode"] + (", guards skipped" if result.get("skip_guards") else "")


def exact_table(versus: list[dict[str, Any]], by_key: dict[tuple, dict[str, Any]]) -> list[str]:
    """At the small step: the exact form written by hand (``softplus(logsumexp(negatives) - s_pos)``) against
    the plain fused cross-entropy, and recloss against that exact form, in the same run."""
    small = sorted({r.get("threads") or 0 for r in versus if tuple(r["shape"]) == SMALL_STEP and "exact_s" in r})
    if not small:
        return []
    lines = ["### The small step: what exactness costs by hand", "",
             "The exact in-batch softmax written by hand (`softplus(logsumexp(negatives) - s_pos)`, the own column "
             "masked) timed in the same rounds: its ratio to the plain fused cross-entropy, then recloss's ratio "
             "to it (below 1: recloss faster).", "",
             "| framework | mode | " + " | ".join(f"{t} thread{'s' if t != 1 else ''}: exact / plain, recloss / exact"
                                                 for t in small) + " |",
             "|---|---|" + "---|" * len(small)]
    for backend in ("torch", "jax", "tensorflow"):
        for mode in ("eager", "compiled"):
            cells = []
            for threads in small:
                r = by_key.get((backend, mode, SMALL_STEP, threads or None))
                cells.append("–" if r is None or "exact_s" not in r else
                             f"{r['exact_ratio']:.2f}, {r['ratio_to_exact']:.2f}")
            if any(c != "–" for c in cells):
                label = COMPILER[backend] if mode == "compiled" else "eager"
                lines.append(f"| {backend} | {label} | " + " | ".join(cells) + " |")
    return lines + [""]


def targets(document: dict[str, Any]) -> list[str]:
    """The targets of the performance issue (issue 11), each with its measured number and met / missed."""
    results = [r for r in document["results"] if r.get("ok") and r["mode"] != "overhead"]
    by_key = {_key(r): r for r in results}
    medium, large = (1024, 10240, 128), (2048, 65536, 128)
    lines = ["### Targets", "", "| target | configuration | measured | result |", "|---|---|---|---|"]

    def row(target: str, where: str, value: Any, limit: float, above: bool = False, unit: str = "x") -> None:
        if value is None:
            lines.append(f"| {target} | {where} | not measured | – |")
            return
        met = value >= limit if above else value <= limit
        lines.append(f"| {target} | {where} | {value:.2f}{unit} | {'met' if met else 'MISSED'} |")

    limits = {("torch", "eager"): 4.5, ("torch", "compiled"): 4.0, ("jax", "compiled"): 3.0,
              ("tensorflow", "compiled"): 3.0}
    for shape in (medium, large):
        for (backend, mode), limit in limits.items():
            r = by_key.get((backend, mode, "unsupervised_softmax", shape, "float32"))
            label = COMPILER[backend] if mode == "compiled" else "eager"
            row(f"time <= {limit} x floor", f"{backend} {label} {shape}", r["ratio"] if r else None, limit)
    for shape in (medium, large):
        gl, ours = (by_key.get(("tensorflow", "eager", w, shape, "float32"))
                    for w in ("graphlearn", "unsupervised_softmax"))
        row(">= 1.8 x faster than GraphLearn's formulation, TF called eagerly", f"{shape}",
            gl["ratio"] / ours["ratio"] if gl and ours else None, 1.8, above=True)
    for r in document["results"]:
        if r.get("mode") == "overhead" and r.get("ok"):
            limit = 50.0 if r["backend"] == "tensorflow" else 10.0
            row(f"eager call minus the same math written directly <= {limit:.0f} us", f"{r['backend']} B=32",
                r["eager"].get("over_plain_us"), limit, unit=" us")
    for r in sorted((r for r in results if tuple(r["shape"]) == large and r["workload"] in EMBEDDING_WORKLOADS),
                    key=lambda r: (r["workload"], r["backend"], r["mode"])):
        if r.get("peak_bytes") is not None:
            row("peak memory above the inputs <= 0.5 x logits", f"{r['backend']} {r['mode']} {r['workload']} {large}",
                r["peak_bytes"] / r["logits_bytes"], 0.5)
    return lines + [""]


EMBEDDING_WORKLOADS = ("unsupervised_softmax", "sampled_softmax[logQ,ids]", "info_nce")


def plot(document: dict[str, Any], path: str) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = [r for r in document["results"] if r.get("ok") and r["mode"] in ("eager", "compiled")]
    shapes = sorted({tuple(r["shape"]) for r in results}, key=lambda s: s[0] * s[1])
    workloads = ["graphlearn", "plain", "unsupervised_softmax", "unsupervised_softmax[materialized]",
                 "sampled_softmax[logQ,ids]", "info_nce"]
    series = defaultdict(dict)
    for r in results:
        if r["workload"] in workloads:
            series[(r["backend"], r["mode"], r["workload"])][tuple(r["shape"])] = r
    fig, axes = plt.subplots(2, len(shapes), figsize=(6 * len(shapes), 9), squeeze=False)
    for column, shape in enumerate(shapes):
        labels, ratios, memory = [], [], []
        for (backend, mode, workload), points in sorted(series.items()):
            r = points.get(shape)
            if r is None:
                continue
            labels.append(f"{backend[:5]} {mode[:4]} {workload.replace('unsupervised_softmax', 'unsup')}")
            ratios.append(r["ratio"])
            memory.append((r.get("peak_bytes") or 0) / 2**20)
        colours = ["tab:red" if "graphlearn" in l else "tab:gray" if "plain" in l else "tab:blue" for l in labels]
        ax = axes[0][column]
        ax.barh(range(len(labels)), ratios, color=colours)
        ax.axvline(4.0, color="k", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_title(f"time / floor, (B, N, D) = {shape}", fontsize=9)
        ax = axes[1][column]
        ax.barh(range(len(labels)), memory, color=colours)
        ax.axvline(shape[0] * shape[1] * 4 / 2**20 * 0.5, color="k", linestyle="--", linewidth=1)
        ax.set_yticks(range(len(labels)), labels, fontsize=6)
        ax.set_title("peak memory above inputs, MiB (dashed: half the B x N logits)", fontsize=9)
    fig.suptitle(f"recloss benchmarks, {document['machine']['date']}, {document['machine']['cpu']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    folder = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
    with open(os.path.join(folder, "results.json"), encoding="utf-8") as handle:
        doc = json.load(handle)
    with open(os.path.join(folder, "results.md"), "w", encoding="utf-8") as handle:
        handle.write(markdown(doc))
    plot(doc, os.path.join(folder, "results.png"))
