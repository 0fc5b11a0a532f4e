"""How the benchmark drivers talk to the scripts they start, each configuration in a fresh process: the
configuration goes in as one JSON argument, one ``RESULT <json>`` line comes back on stdout; an exception in
the script is reported in that line (``"ok": false`` and the error), not raised, so that one failure does not
stop a run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any, Callable

PREFIX = "RESULT "


def serve(main: Callable[[dict[str, Any]], dict[str, Any]], configuration: str) -> None:
    """The script's side: ``main`` run on the JSON ``configuration``, its outcome printed as the ``RESULT``
    line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config = json.loads(configuration)
    try:
        outcome = main(config)
    except Exception as error:  # reported, not raised
        outcome = {**config, "ok": False, "error": f"{type(error).__name__}: {error}"[:500]}
    print(PREFIX + json.dumps(outcome), flush=True)


def run(arguments: list[str], config: dict[str, Any], env: dict[str, str],
        timeout: float | None = None) -> dict[str, Any]:
    """The driver's side: ``python <arguments> <config as JSON>`` in a fresh process, and its ``RESULT``; where
    there is none, ``config`` with ``"ok": false`` and what went wrong (a timeout, the end of stderr)."""
    try:
        done = subprocess.run([sys.executable, *arguments, json.dumps(config)], capture_output=True, text=True,
                              timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {**config, "ok": False, "error": f"timed out after {timeout:.0f} s"}
    for line in reversed(done.stdout.splitlines()):
        if line.startswith(PREFIX):
            return json.loads(line[len(PREFIX):])
    tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
    return {**config, "ok": False, "error": f"exit {done.returncode}: {' | '.join(tail)}"[:500]}
