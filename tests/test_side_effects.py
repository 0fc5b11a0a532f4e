"""No side effects: inputs are never modified, concurrent calls equal serial ones, and importing recloss is
silent and imports no framework."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from recloss._dispatch import FRAMEWORK_BACKENDS, available_backends, load_backend
from recloss.losses import SPECS
from recloss.parity import DIMS

from helpers import case_options, cast_floats, float_args, function_of, grad_args, spec_inputs, to_backend, to_numpy

FRAMEWORKS = ("torch", "tensorflow", "jax", "jaxlib")


def _full(spec):
    return max(spec.cases, key=lambda c: (len(c.forms), -spec.cases.index(c)))


def _inputs(loss: str, seed: int = 0):
    spec = SPECS[loss]
    case = _full(spec)
    inputs = cast_floats(spec, spec_inputs(spec, case, np.random.default_rng(seed), DIMS), "float32")
    return spec, inputs, case_options(spec, case)


@pytest.mark.parametrize("loss", list(SPECS))
def test_inputs_are_not_modified(loss: str, backend: str) -> None:
    """Values (and, for torch, the in-place version counters) of every input are unchanged by a forward and
    a backward pass."""
    spec, inputs, options = _inputs(loss)
    tensors = {k: to_backend(backend, v) for k, v in inputs.items()}
    versions = {k: v._version for k, v in tensors.items() if hasattr(v, "_version")}
    module = load_backend(backend)
    module.value_and_grad(lambda **t: function_of(loss)(**t, **options), inputs, grad_args(spec, inputs), "cpu")
    out = function_of(loss)(**tensors, **options)
    if backend == "torch" and not spec.value_only:
        for name in float_args(spec, inputs):
            tensors[name].requires_grad_(True)
        function_of(loss)(**tensors, **options).sum().backward()
    assert np.all(np.isfinite(to_numpy(out)))
    for name, value in inputs.items():
        if value is None:
            assert tensors[name] is None
            continue
        after = to_numpy(tensors[name])
        np.testing.assert_array_equal(after, np.asarray(value, np.float64), err_msg=name)
        if name in versions:
            assert tensors[name]._version == versions[name], name
    fresh = _inputs(loss)[1]
    for name, value in inputs.items():  # the NumPy arrays handed to value_and_grad, too
        np.testing.assert_array_equal(value, fresh[name], err_msg=name)


def test_threads_give_the_same_results_as_serial_calls() -> None:
    """8 threads calling every loss on every installed framework at once (value and gradients)."""
    backends = [b for b in FRAMEWORK_BACKENDS if b in available_backends()]
    tasks = [(loss, backend, seed) for loss in SPECS for backend in backends for seed in (0, 1)]

    def run(task):
        loss, backend, seed = task
        spec, inputs, options = _inputs(loss, seed)
        return load_backend(backend).value_and_grad(lambda **t: function_of(loss)(**t, **options), inputs,
                                                    grad_args(spec, inputs), "cpu")

    serial = [run(task) for task in tasks]
    with ThreadPoolExecutor(max_workers=8) as pool:
        concurrent = list(pool.map(run, tasks * 2))
    for index, (value, grads) in enumerate(concurrent):
        expected_value, expected_grads = serial[index % len(tasks)]
        label = str(tasks[index % len(tasks)])
        np.testing.assert_allclose(value, expected_value, rtol=1e-6, atol=1e-7, err_msg=label)
        for name, grad in grads.items():
            np.testing.assert_allclose(grad, expected_grads[name], rtol=1e-6, atol=1e-7, err_msg=f"{label} {name}")


def _python(code: str, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *flags, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_is_silent_and_imports_no_framework() -> None:
    code = ("import sys, recloss\n"
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n")
    result = _python(code, "-W", "error")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]" and result.stderr == "", result.stdout + result.stderr


def test_numpy_backend_call_imports_no_framework() -> None:
    code = ("import sys, numpy as np, recloss\n"
            "from recloss.parity import make_inputs\n"
            "from recloss.losses import SPECS\n"
            "from recloss.parity import public_function\n"
            "for name, spec in SPECS.items():\n"
            "    inputs = make_inputs(spec, spec.cases[-1], np.random.default_rng(0))\n"
            "    options = dict(spec.cases[-1].options)\n"
            "    assert np.all(np.isfinite(public_function(name)(**inputs, **options)))\n"
            "recloss.available_backends()\n"
            f"print(sorted(m for m in {FRAMEWORKS!r} if m in sys.modules))\n")
    result = _python(code, "-W", "error")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout + result.stderr
