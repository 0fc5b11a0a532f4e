"""A catalogue split across workers (the ``shard_negatives`` option) on torch.distributed, JAX and tf.distribute.

Worker counts are per process, so the math runs in three launches of ``tests/sharded_scripts.py`` (one 2-rank
gloo launch, one JAX process with 4 host devices, one TensorFlow process with 2 logical CPUs), each checking
many cases against one float64 formula on the concatenated batch and table: values and every gradient (the
shard's, exactly its slice of the one-device gradient), with and without ``gather``, logQ, ids (64-bit against
uint32), a learnt temperature, weights, every reduction, hard negatives, the streaming path (and that "auto"
streams each shard without a ``[B_global, N_w]`` block), confident rows, rows with every candidate removed,
unequal batches and shards (torch, TF), an empty shard, second derivatives (torch, JAX), the fused kernels on
each shard through the Triton and Pallas interpreters, and TF's per-replica shard variables in training. The
refusals are checked in this process, with the same words on every backend.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import pytest

import recloss
from recloss import CATALOGUE
from recloss._dispatch import available_backends, load_backend
from recloss.errors import OptionError

INSTALLED = set(available_backends())
SCRIPTS = pathlib.Path(__file__).with_name("sharded_scripts.py")
FAST_XLA = "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true"
HAS_TRITON = importlib.util.find_spec("triton") is not None
LOSSES = ("sampled_softmax_loss", "unsupervised_softmax_cross_entropy_loss")
#: The checks every launch must report (the scripts add their own per framework).
COMMON = ("mixed, gather, logQ, ids, weights, learnt T, materialised", "mixed, gather, auto streams (threshold 1)",
          "3 hard negatives, mixed, gather", "confident rows, float32, none, streaming",
          "every candidate removed in two rows, streaming", "64-bit ids against uint32 ids")


def _installed(backend: str):
    return pytest.mark.skipif(backend not in INSTALLED, reason=f"{backend} is not installed")


def _checks(outputs: list[str], expected: tuple[str, ...]) -> None:
    """Every ``CHECK`` line of every process is ok, each process reached ``DONE``, and the expected checks ran."""
    for out in outputs:
        assert out.rstrip().endswith("DONE"), out[-3000:]
        failed = [line for line in out.splitlines() if line.startswith("CHECK ") and not line.endswith(": ok")]
        assert not failed, "\n".join(failed)
        ran = {line[6:].rsplit(": ", 1)[0] for line in out.splitlines() if line.startswith("CHECK ")}
        missing = [name for name in expected if name not in ran]
        assert not missing, f"checks that did not run: {missing}"


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONWARNINGS": "ignore", **extra}
    env.pop("SHARDED_CHECKS", None)
    env.pop("TRITON_INTERPRET", None)
    return env


@_installed("torch")
def test_torch_two_gloo_ranks() -> None:
    """Ranks of 4 and 3 rows holding shards of 5 and 2 items (7 and 0 in one case); the fused kernels run
    through Triton's interpreter where triton is installed."""
    extra = {"RECLOSS_FUSED_INTERPRET": "1"} if HAS_TRITON else {}
    with tempfile.TemporaryDirectory() as folder:
        init = "file://" + os.path.join(folder, "rendezvous")
        ranks = [subprocess.Popen([sys.executable, str(SCRIPTS), "torch", str(rank), init], env=_env(**extra),
                                  text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for rank in range(2)]
        outputs = [rank.communicate(timeout=900) for rank in ranks]
    expected = COMMON + ("second derivatives through the collectives (create_graph)",
                         "shards of different D: the same OptionError on every rank",
                         "shards of different dtypes: the same OptionError on every rank",
                         "a shard with no item on rank 1, unequal batches",
                         "bfloat16 embeddings, gather, streaming", "bfloat16 embeddings, gather, 3 hard negatives") + (
        ("fused kernels on each shard (Triton interpreter)",) if HAS_TRITON else ())
    _checks([out + (err[-3000:] if "DONE" not in out else "") for out, err in outputs], expected)


@_installed("jax")
def test_jax_shard_map_on_four_devices() -> None:
    """``shard_map`` over 4 host devices (2 rows and 3 items each), gradients outside and inside it, with
    ``check_vma`` off, second derivatives, ``pmap``, and the fused kernels through Pallas's interpreter."""
    result = subprocess.run([sys.executable, str(SCRIPTS), "jax"], capture_output=True, text=True, timeout=900,
                            env=_env(RECLOSS_FUSED_INTERPRET="1",
                                     XLA_FLAGS=f"--xla_force_host_platform_device_count=4 {FAST_XLA}"))
    _checks([result.stdout + ("" if "DONE" in result.stdout else result.stderr[-3000:])],
            COMMON + ("gradient taken inside shard_map", "second derivatives (gradient penalty)",
                      "pmap: W times, the shard included", "fused kernels on each shard (Pallas interpreter)",
                      "an axis the shard_map does not bind"))


@_installed("tensorflow")
def test_tensorflow_mirrored_strategy_on_two_cpus() -> None:
    """Replicas of 4 and 3 rows with shards of 5 and 2 items given as per-replica values, eagerly and in a
    ``tf.function``; per-replica shard variables trained next to a mirrored tower."""
    result = subprocess.run([sys.executable, str(SCRIPTS), "tensorflow"], capture_output=True, text=True,
                            timeout=900, env=_env())
    _checks([result.stdout + ("" if "DONE" in result.stdout else result.stderr[-3000:])],
            COMMON + ("tf.function: mixed, gather, auto streams (threshold 1)", "tf.function: 3 hard negatives",
                      "training: per-replica shard variables and a mirrored tower, one SGD step",
                      "shards of different D: ShapeError (eager strategy.run)"))


# ----------------------------------------------------------------------------------------------------------
# Refusals, in this process, with the same words on every backend


BACKENDS = ["numpy", "torch", "jax", "tensorflow"]


def _tensors(backend: str, neg_shape: tuple[int, ...] = (5, 3)) -> tuple:
    rng = np.random.default_rng(0)
    arrays = [rng.normal(size=shape).astype(np.float32) for shape in ((4, 3), (4, 3), neg_shape)]
    if backend != "numpy":
        arrays = [load_backend(backend).convert(x) for x in arrays]
    return tuple(arrays)


def _message(backend: str, loss: str, error: type = OptionError, neg_shape: tuple[int, ...] = (5, 3),
             **options: object) -> str:
    q, p, n = _tensors(backend, neg_shape)
    with pytest.raises(error) as raised:
        getattr(recloss, loss)(q, p, n, **options)
    return str(raised.value)


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_installed(b)) for b in BACKENDS])
def test_refusals_have_the_same_words_on_every_backend(backend: str) -> None:
    """Per-row negatives, no negatives, two different groups, a bad value, "fused" with `gather`: the same words,
    before any process group, mesh axis or replica context is looked at."""
    loss = "sampled_softmax_loss"
    assert _message(backend, loss, neg_shape=(4, 2, 3), shard_negatives=True) == (
        "sampled_softmax_loss: `shard_negatives` takes shared negatives `neg_emb` of shape [N, D], this worker's "
        "shard of one table; got `neg_emb` of shape ['B', 'K', 'D'] (per-row negatives stay with their row: use "
        "gather, or no option)")
    q, p, _ = _tensors(backend)
    with pytest.raises(OptionError) as raised:
        recloss.sampled_softmax_loss(q, p, shard_negatives=True)
    assert str(raised.value) == ("sampled_softmax_loss: `shard_negatives` splits the shared negatives `neg_emb` "
                                 "[N, D] across the workers; got neg_emb=None")
    assert _message(backend, loss, gather="data", shard_negatives="model") == (
        "sampled_softmax_loss: `gather` and `shard_negatives` must name the same group of workers; got "
        "gather='data' and shard_negatives='model'")
    assert _message(backend, loss, gather=True, shard_negatives="model") == (
        "sampled_softmax_loss: `gather` and `shard_negatives` must name the same group of workers; got "
        "gather=True and shard_negatives='model'")
    if backend != "numpy":
        assert _message(backend, loss, gather=True, shard_negatives=True, implementation="fused") == (
            'sampled_softmax_loss: implementation="fused" scores the local candidates only and does not take '
            '`gather`; use implementation="auto" (streaming or materialised over the gathered candidates); got '
            "gather=True")
    for loss_name in LOSSES:
        assert _message(backend, loss_name, shard_negatives=True, label_smoothing=0.1, z_loss=0.01) == (
            f"{loss_name}: `shard_negatives` combines the shards' row losses only (log-sum-exp parts); label "
            "smoothing, z-loss and `query_ids` are not supported with it; got shard_negatives with "
            "label_smoothing=0.1, z_loss=0.01")
    assert _message(backend, loss, shard_negatives=True, in_batch=True, query_ids=np.arange(4) % 2 if
                    backend == "numpy" else load_backend(backend).convert(np.arange(4) % 2)).endswith(
        "got shard_negatives with `query_ids`")
    for loss_name in LOSSES:
        assert _message(backend, loss_name, shard_negatives=3).startswith(
            f"{loss_name}: `shard_negatives` must be None, False, True, a mesh axis name (a str or a tuple of str) "
            "or a torch.distributed.ProcessGroup; got 3")


#: Per backend: the option values that cannot work here (no group, no axis, no replica context), and the words.
UNAVAILABLE = {
    "numpy": (True, "needs a framework's distributed engine (torch.distributed, a JAX mesh axis or tf.distribute); "
                    "got the numpy backend, one process (pass torch, JAX or TensorFlow tensors, or "
                    "shard_negatives=None)"),
    "torch": (True, "needs an initialised torch.distributed process group; got none initialised (call "
                    "torch.distributed.init_process_group first, e.g. through torchrun)"),
    "jax": (True, "needs the name of a mesh axis (a str or a tuple of str) on the jax backend; got True (pass the "
                  'axis name of your shard_map or pmap, e.g. shard_negatives="data")'),
    "tensorflow": ("data", "needs True on the tensorflow backend (the current replica context); got a mesh axis "
                           "name, which is for JAX (pass shard_negatives=True inside strategy.run(...))"),
}


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("backend", [pytest.param(b, marks=_installed(b)) for b in UNAVAILABLE])
def test_unavailable_engine_names_the_option(backend: str, loss: str) -> None:
    """The ``gather`` errors' structure, naming ``shard_negatives`` and its value."""
    value, words = UNAVAILABLE[backend]
    assert _message(backend, loss, shard_negatives=value) == f"{loss}: `shard_negatives={value!r}` {words}"


@pytest.mark.parametrize("backend", [pytest.param(b, marks=_installed(b)) for b in ("torch", "jax", "tensorflow")])
def test_shard_negatives_false_or_none_is_the_unsharded_loss(backend: str) -> None:
    q, p, n = _tensors(backend)

    def value(**options: object) -> float:
        recloss.sampled_softmax_loss(q, p, n, in_batch=True, **options)   # TF compiles a signature at its 2nd call
        return float(np.asarray(recloss.sampled_softmax_loss(q, p, n, in_batch=True, **options)))

    plain = value()
    assert value(shard_negatives=None) == plain and value(shard_negatives=False) == plain


def test_the_option_is_in_the_signatures() -> None:
    """Both losses take it, keyword-only, default None (the stubs are kept in sync by test_typing.py)."""
    import inspect

    for loss in LOSSES:
        assert CATALOGUE[loss].option("shard_negatives").default is None
        parameter = inspect.signature(getattr(recloss, loss)).parameters["shard_negatives"]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
