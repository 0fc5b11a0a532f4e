"""The recloss command: "recloss validate" compares every loss on every installed backend and device with the
float64 NumPy reference; "recloss info" lists versions, backends and devices."""

from __future__ import annotations

import argparse
import os
import platform
import sys
from typing import Any, Sequence

#: Exit codes of ``recloss validate``.
PASSED, FAILED, BAD_ARGUMENTS = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recloss", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser(
        "validate", help="compare every loss (and metric) on every installed backend and device with the float64 "
                         "reference",
        description="Compare every loss and metric on every installed framework backend and device with the "
                    "float64 NumPy reference, in value and gradient. Exit status: 0 all passed, 1 a failure or nothing "
                    "compared, 2 bad arguments.")
    check.add_argument("--backend", action="append",
                       help="tensorflow, torch or jax (repeatable; default: every installed one); numpy runs the "
                            "reference against itself")
    check.add_argument("--device", action="append", help="cpu or gpu (repeatable; default: every device seen)")
    check.add_argument("--loss", action="append", help="loss, metric or sampling check (uniform_candidates, "
                                                        "log_uniform_candidates, unigram_candidates, "
                                                        "frequency_estimator, negative_queue) to run (repeatable; "
                                                        "default: all of them)")
    check.add_argument("--dtype", action="append", help="float64, float32, bfloat16 or float16 "
                                                       "(repeatable; default: float32 and float64)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    check.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    check.add_argument("--quiet", action="store_true", help="no progress lines")
    check.add_argument("--distributed", action="store_true",
                       help="run the losses that take gather on several workers per backend (torch: gloo "
                            "processes, JAX: host devices under shard_map, TF: MirroredStrategy on logical CPUs) "
                            "and compare value and parameter gradients with one device")
    check.add_argument("--workers", type=int, default=2, help="workers per backend with --distributed (default 2)")

    commands.add_parser("info", help="versions, installed backends and their devices")

    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    return _validate(args)


def _validate(args: argparse.Namespace) -> int:
    from recloss.parity import validate

    if args.json and not _writable(args.json):
        print(f"recloss validate: --json {args.json}: cannot write there (is the folder missing or read-only?)",
              file=sys.stderr)
        return BAD_ARGUMENTS
    progress = None if args.quiet else (lambda label: print(f"  running {label}", file=sys.stderr, flush=True))
    try:
        if args.distributed:
            report = _validate_distributed(args, progress)
        else:
            report = validate(args.loss, backends=args.backend, devices=args.device,
                              dtypes=args.dtype or ("float32", "float64"), seed=args.seed, progress=progress)
    except (ValueError, ImportError) as error:
        print(f"recloss validate: {error}", file=sys.stderr)
        return BAD_ARGUMENTS
    if report.rows:
        print(report.table())
    for line in report.skipped:
        print(f"skipped {line}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(report.to_json())
    if not report.rows:
        print("nothing was compared: see the lines above", file=sys.stderr)
        return FAILED
    failed = sum(not row.passed for row in report.rows)
    print(f"{len(report.rows) - failed} passed, {failed} failed")
    return PASSED if report.passed else FAILED


def _validate_distributed(args: argparse.Namespace, progress: Any) -> Any:
    from recloss.parity_distributed import validate_distributed

    if args.device:
        raise ValueError("--device does not apply to --distributed: its workers run on CPU devices of this machine")
    return validate_distributed(args.loss, backends=args.backend, workers=args.workers,
                                dtypes=args.dtype or ("float32", "float64"), seed=args.seed, progress=progress)


def _writable(path: str) -> bool:
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.exists(path):
        return os.path.isfile(path) and os.access(path, os.W_OK)
    return os.path.isdir(folder) and os.access(folder, os.W_OK)


def _info() -> int:
    import recloss
    from recloss._dispatch import load_backend

    print(f"recloss {recloss.__version__} on Python {platform.python_version()} ({platform.machine()})")
    for name in recloss.available_backends():
        module = load_backend(name)
        framework = sys.modules.get({"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}.get(name, "numpy"))
        version = getattr(framework, "__version__", "?")
        print(f"  {name:<10} {version:<14} devices: {', '.join(module.devices())}")
    print(f"losses: {', '.join(recloss.CATALOGUE)}")
    print(f"metrics (recloss.metrics): {', '.join(recloss.metrics.__all__)}")
    return 0
