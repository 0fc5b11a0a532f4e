"""``gather`` on the frequency estimator and the negative queue: every worker counts and pushes the global batch,
so all workers keep identical states, equal to one process fed the global batches (torch: 2 gloo ranks with
5 and 3 ids, the module and the functions, the default group and a ProcessGroup; JAX: ``shard_map`` over 2
host devices, ``out_specs=P()`` with ``check_vma`` on; TensorFlow: the Keras layers in ``strategy.run`` of a
``MirroredStrategy`` with replicas of 5 and 3 ids). Four processes in all (``tests/sampling_distributed_scripts.py``);
the errors where no distributed engine is at hand are checked in this process, in the losses' words."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

from recloss import sampling
from recloss._dispatch import available_backends
from recloss.errors import OptionError

from helpers import to_backend

INSTALLED = set(available_backends())
SCRIPTS = pathlib.Path(__file__).with_name("sampling_distributed_scripts.py")
STRUCTURE = re.compile(r"^([\w.]+): `gather=(.+?)` needs (.+); got (.+) \((.+)\)$")


def _installed(backend: str):
    return pytest.mark.skipif(backend not in INSTALLED, reason=f"{backend} is not installed")


def _run(*args: str, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(SCRIPTS), *args], text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})


@_installed("torch")
def test_torch_ranks_keep_identical_states() -> None:
    with tempfile.TemporaryDirectory() as folder:
        init = "file://" + os.path.join(folder, "rendezvous")
        ranks = [_run("torch", str(rank), init) for rank in range(2)]
        outputs = [rank.communicate(timeout=600) for rank in ranks]
    for rank, (out, err) in zip(ranks, outputs):
        assert rank.returncode == 0 and out.strip().endswith("OK"), err[-4000:]


@_installed("jax")
def test_jax_shard_map_devices_keep_identical_states() -> None:
    process = _run("jax", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"})
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0 and out.strip().endswith("OK"), err[-4000:]


@_installed("tensorflow")
def test_tensorflow_replicas_keep_identical_states() -> None:
    process = _run("tensorflow")
    out, err = process.communicate(timeout=600)
    assert process.returncode == 0 and out.strip().endswith("OK"), err[-4000:]


# ----------------------------------------------------------------------------------------------------------
# No distributed engine at hand: the losses' error structure


NEEDS = {"numpy": ("a framework's distributed engine", True),
         "torch": ("an initialised torch.distributed process group", True),
         "jax": ("a mesh axis named 'data' bound by jax.shard_map or jax.pmap around the call", "data"),
         "tensorflow": ("the replica context of a tf.distribute strategy", True)}


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_installed(b)) for b in NEEDS])
def test_gather_without_an_engine_is_refused_in_the_losses_words(backend: str) -> None:
    needs, gather = NEEDS[backend]
    ids = np.array([1, 2]) if backend == "numpy" else to_backend(backend, np.array([1, 2]))
    emb = np.ones((2, 3), np.float32) if backend == "numpy" else to_backend(backend, np.ones((2, 3), np.float32))
    calls = {"frequency_update": lambda: sampling.frequency_update(
                 sampling.frequency_init(1 << 4, backend=backend), ids, gather=gather),
             "queue_push": lambda: sampling.queue_push(sampling.queue_init(4, 3, backend=backend), emb, ids,
                                                       gather=gather)}
    if backend == "torch":
        import recloss.torch
        calls["FrequencyEstimator"] = lambda: recloss.torch.FrequencyEstimator(1 << 4, gather=True)(ids)
        calls["NegativeQueue.push"] = lambda: recloss.torch.NegativeQueue(4, 3, gather=True).push(emb, ids)
    for name, call in calls.items():
        with pytest.raises(OptionError) as caught:
            call()
        match = STRUCTURE.match(str(caught.value))
        assert match and match.group(1) == name and match.group(2) == repr(gather), str(caught.value)
        assert match.group(3).startswith(needs), str(caught.value)


def test_bad_gather_values_get_the_validator_words() -> None:
    expected = ("`gather` must be None, False, True, a mesh axis name (a str or a tuple of str) or a "
                "torch.distributed.ProcessGroup; got 3")
    state = sampling.frequency_init(1 << 4, backend="numpy")
    with pytest.raises(OptionError, match=re.escape("frequency_update: " + expected)):
        sampling.frequency_update(state, np.array([1]), gather=3)
    if "torch" in INSTALLED:
        import recloss.torch
        with pytest.raises(OptionError, match=re.escape("FrequencyEstimator: " + expected)):
            recloss.torch.FrequencyEstimator(gather=3)
