"""The fused GPU path (``implementation="fused"``): its kernels through the interpreters, and where it runs.

The Triton and Pallas kernels run on the CPU through their interpreters in two subprocesses started together
(``RECLOSS_FUSED_INTERPRET=1 python tests/fused_worker.py torch|jax``; a process that imported TensorFlow must
never import triton, and the interpreter setting is per process), one test per check of the worker. In this
process: explicit ``"fused"`` where it cannot run is one ``ReclossError`` with the same words on every backend,
``"auto"`` on a CPU never takes the path, and neither ``import recloss`` nor the other paths import triton.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import subprocess
import sys
from typing import Any

import numpy as np
import pytest

import recloss
from recloss.errors import BackendUnavailableError, OptionError

from helpers import to_backend

HERE = os.path.dirname(os.path.abspath(__file__))
HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS = {"torch": HAS_TRITON and importlib.util.find_spec("torch") is not None,
       "jax": importlib.util.find_spec("jax") is not None}
LOSSES = ("sampled_softmax_loss", "unsupervised_softmax_cross_entropy_loss", "info_nce_loss")

#: The worker's checks, by framework (test_the_worker_ran_every_check keeps this in step with the worker).
EDGES = ["blocks float32", "blocks bfloat16", "blocks float16", "confident rows keep exp(-gap)",
         "every candidate removed: loss 0, gradients 0", "ties at the maximum", "ids compared by value",
         "transforms", "auto picks fused here", "recloss validate runs it here", "no TensorFlow"]
CHECKS = {
    "torch": [f"parity {loss} {dtype}" for loss in LOSSES for dtype in ("float32", "bfloat16", "float16")] + EDGES,
    "jax": [f"parity {loss} float32" for loss in LOSSES] + EDGES,
}


# The workers run once per module (the fixture below): every test of this file runs in the same pytest-xdist worker.
pytestmark = pytest.mark.xdist_group("fused")


@pytest.fixture(scope="module")
def worker_results() -> dict:
    """Both workers, started at once (each takes seconds to a minute), and their parsed results."""
    # XLA's cheapest optimisation level: the Pallas interpreter compiles each kernel configuration.
    env = {**os.environ, "RECLOSS_FUSED_INTERPRET": "1", "PYTHONWARNINGS": "ignore",
           "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0").strip()}
    env.pop("TRITON_INTERPRET", None)
    running = {fw: subprocess.Popen([sys.executable, os.path.join(HERE, "fused_worker.py"), fw], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for fw, available in HAS.items() if available}
    results = {}
    for fw, process in running.items():
        out, err = process.communicate(timeout=900)
        lines = [line for line in out.splitlines() if line.startswith("RESULTS ")]
        results[fw] = (json.loads(lines[-1][len("RESULTS "):]) if lines
                       else {"worker": {"ok": False, "detail": f"exit {process.returncode}\n{err[-4000:]}"}})
    return results


@pytest.mark.parametrize("framework, check", [pytest.param(fw, c, id=f"{fw}: {c}", marks=[] if HAS[fw] else [
    pytest.mark.skip(reason=f"{'triton' if fw == 'torch' else fw} is not installed")]) for fw in CHECKS
    for c in CHECKS[fw]])
def test_interpreted_kernels(worker_results: dict, framework: str, check: str) -> None:
    results = worker_results[framework]
    assert "worker" not in results, results.get("worker", {}).get("detail")
    assert check in results, f"the worker did not run {check!r}"
    assert results[check]["ok"], results[check]["detail"]


@pytest.mark.parametrize("framework", [fw for fw in CHECKS if HAS[fw]])
def test_the_worker_ran_every_check(worker_results: dict, framework: str) -> None:
    assert set(worker_results[framework]) == set(CHECKS[framework])


# ----------------------------------------------------------------------------------------------------------
# Where the path cannot run: one message, produced in one place (recloss.kernels.fused) or by the validator


def _embeddings(backend: str, dtype: str = "float32") -> list:
    rng = np.random.default_rng(0)
    return [to_backend(backend, rng.normal(size=(m, 4)).astype(dtype)) for m in (3, 3, 5)]


PREFIX = ('implementation="fused" runs Triton kernels on CUDA tensors (PyTorch) or Pallas kernels on GPU arrays '
          '(JAX); got ')
WHAT = {"torch": "PyTorch tensors on cpu", "jax": "JAX arrays on cpu", "tensorflow": "TensorFlow tensors"}


@pytest.mark.parametrize("loss", LOSSES)
def test_fused_on_a_cpu_or_tensorflow_is_one_clear_error(backend: str, loss: str) -> None:
    q, p, n = _embeddings(backend)
    tensors = (q, p) if loss == "info_nce_loss" else (q, p, n)
    with pytest.raises(OptionError) as error:
        getattr(recloss, loss)(*tensors, implementation="fused")
    assert str(error.value) == (f"{loss}: {PREFIX}{WHAT[backend]}. implementation=\"auto\" picks \"fused\" where "
                                "it applies")


@pytest.mark.parametrize("backend_name", ["numpy", "torch", "jax", "tensorflow"])
def test_what_the_spec_can_see_is_refused_by_the_validator(backend_name: str) -> None:
    if backend_name not in recloss.available_backends():
        pytest.skip(f"{backend_name} is not installed")
    rng = np.random.default_rng(1)
    q, p = rng.normal(size=(3, 4)).astype(np.float32), rng.normal(size=(3, 4)).astype(np.float32)
    cases = [
        ((q.astype(np.float64), p.astype(np.float64)), {},
         'implementation="fused" computes in float32 from float32, bfloat16 or float16 inputs; got a float64 input'),
        ((q, p, rng.normal(size=(3, 2, 4)).astype(np.float32)), {},
         'implementation="fused" takes shared [N, D] or in-batch negatives; got `neg_emb` of shape [B, K, D]'),
        ((q, p), {"num_hard_negatives": 2}, 'implementation="fused" keeps every negative; got num_hard_negatives=2'),
    ]
    for arrays, options, words in cases:
        with _x64() if backend_name == "jax" else contextlib.nullcontext():   # JAX keeps float64 only with x64
            tensors = arrays if backend_name == "numpy" else [to_backend(backend_name, a) for a in arrays]
            with pytest.raises(OptionError, match="^sampled_softmax_loss: " + re.escape(words)):
                recloss.sampled_softmax_loss(*tensors, implementation="fused", **options)


def _x64() -> Any:
    import jax
    return jax.enable_x64(True)


def test_auto_on_a_cpu_does_not_take_the_fused_path(backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from recloss._dispatch import load_backend
    ops = type(load_backend(backend).OPS)
    if not hasattr(ops, "fused_row_losses"):
        pytest.skip(f"{backend} has no fused path")
    monkeypatch.setattr(ops, "fused_row_losses", staticmethod(lambda *a, **k: pytest.fail("fused path taken")),
                        raising=True)
    q, p, n = _embeddings(backend)
    recloss.sampled_softmax_loss(q, p, n, in_batch=True)
    recloss.info_nce_loss(q, p, symmetric=True)
    recloss.unsupervised_softmax_cross_entropy_loss(q, p, n)


@pytest.mark.skipif(not HAS["torch"], reason="triton or torch is not installed")
def test_missing_triton_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import recloss.kernels.fused as fused

    monkeypatch.setattr(fused, "INTERPRET", True)       # past the device check, on to the package check
    monkeypatch.delitem(sys.modules, "triton", raising=False)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "triton" else real_find_spec(name, *a))
    q, p, n = _embeddings("torch")
    with pytest.raises(BackendUnavailableError, match=r'needs triton, which is not installed; install it with: '
                                                      r'pip install "recloss\[fused\]"'):
        recloss.unsupervised_softmax_cross_entropy_loss(q, p, n, implementation="fused")


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    environment = {**os.environ, **env}
    environment.pop("TRITON_INTERPRET", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env=environment)


@pytest.mark.skipif(not HAS["torch"] or importlib.util.find_spec("tensorflow") is None,
                    reason="needs triton, torch and tensorflow")
def test_triton_after_tensorflow_is_an_error_not_an_abort() -> None:
    """Importing triton after TensorFlow aborts the process (LLVM options registered twice): the fused path
    refuses instead, and "auto" quietly keeps to the other paths."""
    code = ("import sys, numpy as np, tensorflow, torch, recloss\n"
            "q = torch.ones(3, 4); n = torch.ones(5, 4)\n"
            "recloss.unsupervised_softmax_cross_entropy_loss(q, q, n)\n"
            "try:\n"
            "    recloss.unsupervised_softmax_cross_entropy_loss(q, q, n, implementation='fused')\n"
            "except recloss.BackendUnavailableError as error:\n"
            "    print('refused:', error)\n"
            "print('triton imported:', 'triton' in sys.modules)\n")
    result = _python(code, RECLOSS_FUSED_INTERPRET="1", TF_CPP_MIN_LOG_LEVEL="3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert ("refused: unsupervised_softmax_cross_entropy_loss: implementation=\"fused\" needs triton, which cannot "
            "be loaded after TensorFlow in one process") in result.stdout, result.stdout
    assert "triton imported: False" in result.stdout


def test_recloss_and_the_other_paths_never_import_triton() -> None:
    code = ("import sys, numpy as np, recloss\n"
            "assert 'triton' not in sys.modules\n"
            "rng = np.random.default_rng(0)\n"
            "arrays = [rng.normal(size=(m, 4)).astype(np.float32) for m in (3, 3, 5)]\n"
            "for name in recloss.available_backends():\n"
            "    if name in ('torch', 'jax'):\n"
            "        for implementation in ('auto', 'materialized', 'streaming'):\n"
            "            recloss.sampled_softmax_loss(*arrays, in_batch=True, implementation=implementation,\n"
            "                                         backend=name)\n"
            "            recloss.info_nce_loss(*arrays[:2], implementation=implementation, backend=name)\n"
            "        try:\n"
            "            recloss.info_nce_loss(*arrays[:2], implementation='fused', backend=name)\n"
            "        except recloss.OptionError:\n"
            "            pass\n"
            "print(sorted(m for m in ('triton', 'tensorflow') if m in sys.modules))\n")
    result = _python(code)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
