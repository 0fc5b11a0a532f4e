"""The ``recloss`` command: ``recloss validate`` (cross-framework validation) and ``recloss info``."""

from __future__ import annotations

import argparse
import platform
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="recloss", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("validate", help="compare every loss (and metric) on every installed backend and "
                                                 "device with the float64 reference")
    check.add_argument("--backend", action="append", help="backend to run (repeatable; default: all installed)")
    check.add_argument("--device", action="append", help="device kind to run: cpu, gpu (repeatable; default: all)")
    check.add_argument("--loss", action="append", help="loss or metric to run (repeatable; default: the whole "
                                                        "catalogue and the metrics)")
    check.add_argument("--dtype", action="append", help="float64, float32, bfloat16, float16 "
                                                       "(repeatable; default: float32 and float64)")
    check.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    check.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH")
    check.add_argument("--quiet", action="store_true", help="no progress lines")

    commands.add_parser("info", help="versions, installed backends and their devices")

    args = parser.parse_args(argv)
    if args.command == "info":
        return _info()
    return _validate(args)


def _validate(args: argparse.Namespace) -> int:
    from recloss.parity import validate

    progress = None if args.quiet else (lambda label: print(f"  running {label}", file=sys.stderr, flush=True))
    try:
        report = validate(args.loss, backends=args.backend, devices=args.device,
                          dtypes=args.dtype or ("float32", "float64"), seed=args.seed, progress=progress)
    except (ValueError, ImportError) as error:
        print(f"recloss validate: {error}", file=sys.stderr)
        return 2
    print(report.table())
    for line in report.skipped:
        print(f"skipped {line}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            handle.write(report.to_json())
    failed = sum(not row.passed for row in report.rows)
    print(f"{len(report.rows) - failed} passed, {failed} failed")
    return 0 if report.passed else 1


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
