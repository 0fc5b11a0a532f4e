"""The MovieLens-100K results table of the documentation: every two-tower script, every variant, several seeds.

Runs each script on ``--data movielens --logq both --hits both`` once per seed (a subprocess each, one
thread), then prints a Markdown table of recall@10, recall@50 and NDCG@10 (mean and standard deviation over
the seeds) and the largest difference between TensorFlow Recommenders and recloss on the same seed::

    python examples/movielens_results.py --seeds 0 1 2 3 4 --out movielens.json

``--out`` keeps the raw summaries (JSON), written after each run; an existing ``--out`` file is resumed (the
runs it holds are not repeated). ``--table-from movielens.json`` prints the table again from them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: (row label, script, environment): the scripts of the results table.
RUNS = [
    ("PyTorch, recloss", "two_tower_torch.py", {}),
    ("JAX, recloss", "two_tower_jax.py", {}),
    ("Keras 3 (TensorFlow), recloss", "two_tower_keras.py", {"KERAS_BACKEND": "tensorflow"}),
    ("tf-keras", "two_tower_tfrs.py", {}),
]
VARIANTS = {"no_logq": ("no", "yes"), "logq": ("yes", "yes"), "no_logq_hits_kept": ("no", "no"),
            "logq_hits_kept": ("yes", "no")}
METRICS = ("recall@10", "recall@50", "ndcg@10")


def run(script: str, env: dict[str, str], seed: int) -> dict:
    """One script on MovieLens-100K, all four variants, one seed: its JSON summary."""
    command = [sys.executable, str(HERE / script), "--data", "movielens", "--logq", "both", "--hits", "both",
               "--seed", str(seed)]
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **env}
    done = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=HERE)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def rows_of(label: str, summary: dict) -> dict[str, dict]:
    """``{row label: runs by variant}`` of one summary (a script with several losses gives several rows)."""
    if "trainers" in summary:
        return {f"{label}, {trainer}": runs for trainer, runs in summary["trainers"].items()}
    return {label: summary["runs"]}


def table(results: dict[str, list[dict]]) -> str:
    """The Markdown table: one line per model and variant, mean ± standard deviation over the seeds."""
    per_row: dict[str, list[dict]] = {}
    popularity = []
    for label, summaries in results.items():
        for summary in summaries:
            popularity.append(summary["popularity"])
            for row, runs in rows_of(label, summary).items():
                per_row.setdefault(row, []).append(runs)
    lines = ["| model | logQ | hits removed | " + " | ".join(METRICS) + " | loss, last epoch |",
             "|---|---|---|" + "---|" * (len(METRICS) + 1)]
    lines.append("| popularity | - | - | " + " | ".join(f"{popularity[0][m]:.4f}" for m in METRICS) + " | - |")
    for variant, (log_q, hits) in VARIANTS.items():
        for row, seeds in per_row.items():
            cells = []
            for metric in METRICS + ("loss",):
                values = np.array([runs[variant]["metrics"][metric] if metric != "loss"
                                   else runs[variant]["epoch_losses"][-1] for runs in seeds])
                cells.append(f"{values.mean():.4f} ± {values.std(ddof=1) if len(values) > 1 else 0.0:.4f}")
            lines.append(f"| {row} | {log_q} | {hits} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired_differences(results: dict[str, list[dict]]) -> str:
    """The largest |TFRS - recloss| over the seeds, per metric, for the tf-keras runs (same model and seed)."""
    worst = dict.fromkeys(METRICS + ("loss",), 0.0)
    for summary in results.get("tf-keras", []):
        trainers = summary["trainers"]
        for variant in VARIANTS:
            ours, theirs = trainers["recloss"][variant], trainers["TFRS tasks.Retrieval"][variant]
            for metric in METRICS:
                worst[metric] = max(worst[metric], abs(ours["metrics"][metric] - theirs["metrics"][metric]))
            worst["loss"] = max(worst["loss"], float(np.max(np.abs(np.subtract(ours["epoch_losses"],
                                                                                theirs["epoch_losses"])))))
    return ", ".join(f"{name} {value:.4f}" for name, value in worst.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, help="write the raw summaries here (JSON)")
    parser.add_argument("--table-from", type=Path, help="print the table of saved summaries; run nothing")
    args = parser.parse_args()
    if args.table_from:
        results = json.loads(args.table_from.read_text())
    else:
        results = json.loads(args.out.read_text()) if args.out and args.out.exists() else {}
        for label, script, env in RUNS:
            done = {summary["config"]["seed"] for summary in results.get(label, [])}
            for seed in args.seeds:
                if seed in done:
                    continue
                print(f"{label}: seed {seed}", file=sys.stderr, flush=True)
                results.setdefault(label, []).append(run(script, env, seed))
                if args.out:
                    args.out.write_text(json.dumps(results))
    print(table(results))
    print(f"\nLargest |TFRS - recloss| on the same seed: {paired_differences(results)}")


if __name__ == "__main__":
    main()
