"""Cross-device negatives (the ``gather`` option) on torch.distributed, JAX sharding and tf.distribute.

Worker counts, process groups and device counts are per process, so everything distributed runs in
subprocesses: the validation engine (every spec case of every loss with ``gather``, unequal local batches on
torch and TF, ids that collide across workers, logQ on both sources, weights, streaming with chunks of 2
columns, ``info_nce_loss`` symmetric; values and parameter gradients against one device), and the scenarios
of ``tests/distributed_scripts.py`` (DDP, sharded JAX calls without the option, pmap, Keras ``model.fit``,
``tf.function``). The errors are checked in this process, on every backend.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import recloss
from recloss import CATALOGUE, OptionError
from recloss._dispatch import available_backends, load_backend
from recloss.cli import main
from recloss.parity_distributed import GATHER_LOSSES, validate_distributed

INSTALLED = set(available_backends())
SCRIPTS = pathlib.Path(__file__).with_name("distributed_scripts.py")
#: XLA's CPU backend without its expensive LLVM passes: the JAX runs compile one program per case, which
#: otherwise takes most of their time; the math compared is the same (both sides are compiled alike).
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
#: "<loss>: `gather=<value>` needs <what>; got <what was found> (<what to do>)", on every backend.
STRUCTURE = re.compile(r"^(\w+): `gather=(.+?)` needs (.+); got (.+) \((.+)\)$")


def _installed(backend: str):
    return pytest.mark.skipif(backend not in INSTALLED, reason=f"{backend} is not installed")


def _run(command: list[str], env: dict[str, str] | None = None, timeout: float = 600) -> str:
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return result.stdout


# ----------------------------------------------------------------------------------------------------------
# The validation engine: every case of every loss, values and parameter gradients against one device


@pytest.mark.parametrize("backend, workers", [pytest.param("torch", 3, marks=_installed("torch")),
                                              pytest.param("jax", 2, marks=_installed("jax")),
                                              pytest.param("tensorflow", 2, marks=_installed("tensorflow"))])
def test_gather_equals_one_device_on_every_case(backend: str, workers: int, monkeypatch) -> None:
    """float64, exact to rounding; chunks of 2 columns put streaming chunk boundaries inside every worker's
    rows (and across the diagonal's offset). torch with 3 ranks of 4, 2 and 3 rows, TF with 4 and 2 rows."""
    monkeypatch.setenv("XLA_FLAGS", FAST_XLA)
    report = validate_distributed(backends=backend, workers=workers, dtypes="float64", streaming_chunk=2)
    assert report.passed, report.table()
    assert [row.loss for row in report.rows] == list(GATHER_LOSSES)
    assert all(row.cases == len(CATALOGUE[row.loss].cases) and row.workers == workers for row in report.rows)


@_installed("torch")
def test_cli_distributed_mode(tmp_path: pathlib.Path) -> None:
    """``recloss validate --distributed``: 2 gloo ranks (4 and 2 rows), float32, the table and the JSON report."""
    report = tmp_path / "report.json"
    out = _run([sys.executable, "-m", "recloss", "validate", "--distributed", "--backend", "torch", "--quiet",
                "--loss", "info_nce_loss", "--loss", "sampled_softmax_loss", "--dtype", "float32", "--json",
                str(report)])
    assert "| loss | backend | workers | dtype |" in out and "2 passed, 0 failed" in out
    saved = json.loads(report.read_text())
    assert saved["passed"] and [(r["loss"], r["workers"], r["cases"]) for r in saved["rows"]] == [
        (name, 2, len(CATALOGUE[name].cases)) for name in ("info_nce_loss", "sampled_softmax_loss")]


@pytest.mark.parametrize("argv, words", [
    (["--device", "gpu"], "--device does not apply to --distributed"),
    (["--workers", "1"], "workers must be an integer >= 2"),
    (["--loss", "bpr_loss"], "loss 'bpr_loss' does not take gather"),
    (["--backend", "numpy"], "backend 'numpy' has no distributed engine"),
    (["--dtype", "float16"], "unknown dtype 'float16'"),
])
def test_cli_distributed_refuses_bad_arguments(argv: list[str], words: str, capsys) -> None:
    assert main(["validate", "--distributed", *argv]) == 2
    assert words in capsys.readouterr().err


# ----------------------------------------------------------------------------------------------------------
# Scenarios: DDP, JAX without the option and with pmap, Keras model.fit and tf.function


@_installed("torch")
def test_ddp_gradients_equal_one_device() -> None:
    """Two ranks with 4 and 3 rows wrapped in DistributedDataParallel: every rank's loss is the global one and
    DDP's averaged gradients are the single-device ones (materialised and streaming); a ProcessGroup as the
    option; ``info_nce_loss`` symmetric per-row losses; a NaN on one rank makes both ranks' losses NaN."""
    _two_ranks("ddp")


@_installed("torch")
def test_torch_second_derivatives_temperature_mismatches_func_and_compile() -> None:
    """Two gloo ranks (4 and 3 rows), float64, against plain torch formulas on the concatenated batch: exact
    second derivatives through the gathered positives and negatives (materialised and streaming, the three
    losses); a learnt temperature's gradient equals the one-process value on every rank, outside DDP and
    inside it; ranks whose calls differ (dtype, D, an argument on one rank only, a frozen tower, an option,
    the loss) raise the same OptionError on every rank and the group stays usable; ``torch.func.grad``,
    ``vmap``, and ``torch.compile(fullgraph=True)`` with equal local sizes (unequal ones refused)."""
    _two_ranks("torch")


def _two_ranks(scenario: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        init = "file://" + os.path.join(folder, "rendezvous")
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        ranks = [subprocess.Popen([sys.executable, str(SCRIPTS), scenario, str(rank), init], env=env, text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in range(2)]
        outputs = [rank.communicate(timeout=600) for rank in ranks]
    for rank, (out, err) in zip(ranks, outputs):
        assert rank.returncode == 0 and out.strip().endswith("OK"), err[-4000:]


@_installed("jax")
def test_jax_sharded_calls_shard_map_and_pmap() -> None:
    """Batch-sharded arrays under jit without the option give the single-device result on Auto and Explicit
    meshes (Explicit used to raise ShardingTypeError in dot_general); shard_map on an Auto mesh without vma
    checks and over two mesh axes; pmap, whose pmean of the gradients is exact."""
    assert _run([sys.executable, str(SCRIPTS), "jax"],
                env={"XLA_FLAGS": f"--xla_force_host_platform_device_count=4 {FAST_XLA}"}).strip().endswith("OK")


@_installed("tensorflow")
def test_keras_fit_and_tf_function_under_mirrored_strategy() -> None:
    """``model.fit`` (loss given to compile, or compute_loss overridden) takes the single-device SGD step and
    reports the single-device loss; ``tf.function`` around ``strategy.run`` with replicas of 4 and 3 rows."""
    assert _run([sys.executable, str(SCRIPTS), "tensorflow"]).strip().endswith("OK")


# ----------------------------------------------------------------------------------------------------------
# Errors: one structure on every backend, the validator's words for bad values


def _tensors(backend: str, loss: str) -> dict:
    rng = np.random.default_rng(0)
    q, p, n = (rng.normal(size=shape).astype(np.float32) for shape in ((4, 3), (4, 3), (5, 3)))
    if backend != "numpy":
        q, p, n = (load_backend(backend).convert(x) for x in (q, p, n))
    return {"sampled_softmax_loss": (q, p), "info_nce_loss": (q, p),
            "unsupervised_softmax_cross_entropy_loss": (q, p, n)}[loss]


def _message(backend: str, loss: str, gather) -> str:
    with pytest.raises(OptionError) as error:
        getattr(recloss, loss)(*_tensors(backend, loss), gather=gather)
    return str(error.value)


#: Per backend: the option values that cannot work here, and a word of what to do that the message must give.
UNAVAILABLE = {
    "numpy": [(True, "pass torch, JAX or TensorFlow tensors"), ("data", "gather=None")],
    "torch": [(True, "torch.distributed.init_process_group"), ("data", "gather=True for the default process group")],
    "jax": [(True, 'pass the axis name of your shard_map or pmap, e.g. gather="data"'),
            ("data", "call the loss inside a shard_map or pmap over that axis"),
            (("data", "model"), "call the loss inside a shard_map or pmap over that axis")],
    "tensorflow": [(True, "call the loss inside strategy.run(...)"), ("data", "pass gather=True inside strategy.run")],
}


@pytest.mark.parametrize("loss", GATHER_LOSSES)
@pytest.mark.parametrize("backend", [pytest.param(b, marks=_installed(b)) for b in UNAVAILABLE])
def test_gather_unavailable_has_one_structure_everywhere(backend: str, loss: str) -> None:
    for gather, remedy in UNAVAILABLE[backend]:
        message = _message(backend, loss, gather)
        match = STRUCTURE.match(message)
        assert match and match.group(1) == loss and match.group(2) == repr(gather), message
        assert remedy in match.group(5), message


@_installed("tensorflow")
def test_tensorflow_strategy_scope_is_not_a_replica_context() -> None:
    import tensorflow as tf

    with tf.distribute.OneDeviceStrategy("/cpu:0").scope():
        message = _message("tensorflow", "sampled_softmax_loss", True)
    assert STRUCTURE.match(message) and "got the cross-replica context of strategy.scope()" in message, message


@pytest.mark.parametrize("value, shown", [(3, "3"), ("", "''"), (("data", ""), "('data', '')"), (("data", 1), "('data', 1)"),
                                          (1.0, "1.0"), (["data"], "['data']"), (np.ones(2), "a float64 tensor")])
def test_bad_gather_values_get_the_validator_words_on_every_backend(value, shown: str) -> None:
    expected = ("sampled_softmax_loss: `gather` must be None, False, True, a mesh axis name (a str or a tuple of "
                f"str) or a torch.distributed.ProcessGroup; got {shown}")
    for backend in ["numpy", *sorted(INSTALLED - {"numpy"})]:
        with pytest.raises(OptionError) as error:
            recloss.sampled_softmax_loss(*_tensors(backend, "sampled_softmax_loss"), gather=value)
        assert str(error.value).startswith(expected), (backend, str(error.value))


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_installed(b)) for b in ("torch", "jax", "tensorflow")])
def test_gather_none_or_false_is_the_local_batch(backend: str) -> None:
    tensors = _tensors(backend, "info_nce_loss")

    def value(**options: object) -> float:
        recloss.info_nce_loss(*tensors, **options)   # TensorFlow compiles a signature from its second eager call
        return float(np.asarray(recloss.info_nce_loss(*tensors, **options)))

    local = value()
    for gather in (None, False):
        assert value(gather=gather) == local


@pytest.mark.parametrize("loss", GATHER_LOSSES)
@pytest.mark.parametrize("backend", [pytest.param(b, marks=_installed(b)) for b in ("torch", "jax", "tensorflow")])
def test_fused_with_gather_is_refused_in_the_same_words(backend: str, loss: str) -> None:
    """The fused kernels score one device's candidates: an explicit "fused" with `gather` is an error (before
    the process group, the mesh axis or the replica context is looked at), the same on every backend."""
    with pytest.raises(OptionError) as error:
        getattr(recloss, loss)(*_tensors(backend, loss), gather=True, implementation="fused")
    assert str(error.value) == (
        f'{loss}: implementation="fused" scores the local candidates only and does not take `gather`; use '
        'implementation="auto" (streaming or materialised over the gathered candidates); got gather=True')
