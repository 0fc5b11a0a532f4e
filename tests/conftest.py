"""Shared fixtures: one `backend` fixture over the framework backends and one `device` fixture.

Test ids say which backend (and device) failed; a backend whose framework is not installed is skipped, and
GPU devices appear only where the framework sees one.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# Triton (the `fused` extra) must be loaded before TensorFlow, or the first import of triton aborts the process
# (both register LLVM's command-line options; torch.compile imports triton when it is installed). The fused
# kernels themselves are tested in subprocesses without TensorFlow (test_fused.py).
try:
    import triton  # noqa: F401
except ImportError:
    pass

from recloss._dispatch import FRAMEWORK_BACKENDS, available_backends, load_backend  # noqa: E402

INSTALLED = set(available_backends())


def pytest_xdist_auto_num_workers(config) -> int:
    """``pytest -n auto``: one worker per core, at most one per 6 GiB of memory (a worker that imports the three
    frameworks and compiles the catalogue grows to about 5 GiB), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    by_memory = max(1, memory // (6 << 30)) if memory else cores
    return max(1, min(cores, by_memory, 8))


def _backend_param(name: str):
    marks = [] if name in INSTALLED else [pytest.mark.skip(reason=f"{name} is not installed")]
    return pytest.param(name, id=name, marks=marks)


@pytest.fixture(params=[_backend_param(name) for name in FRAMEWORK_BACKENDS])
def backend(request) -> str:
    """The name of one framework backend: "tensorflow", "torch" or "jax"."""
    return request.param


@pytest.fixture
def backend_module(backend):
    return load_backend(backend)


@pytest.fixture(params=["cpu", "gpu"])
def device(request, backend_module) -> str:
    """A device the backend sees: "cpu" always; "cuda"/"gpu" only where present (else skipped)."""
    available = backend_module.devices()
    if request.param == "cpu":
        return "cpu"
    gpus = [d for d in available if d in ("cuda", "gpu")]
    if not gpus:
        pytest.skip("no GPU visible to this backend")
    return gpus[0]
