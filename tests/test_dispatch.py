"""Backend selection: inference from tensor types, explicit names and aliases, conversion, errors, laziness."""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import recloss
from recloss import _dispatch
from recloss.errors import BackendError, BackendUnavailableError
from recloss.losses import SPECS
from recloss.parity import public_function

from helpers import to_backend, to_numpy

RNG = np.random.default_rng(0)
POS, NEG = RNG.normal(size=6), RNG.normal(size=(6, 3))
EXPECTED = recloss.bpr_loss(POS, NEG)  # the float64 reference

TENSOR_TYPES = {"torch": "torch.Tensor", "jax": "jax.Array", "tensorflow": "tensorflow.Tensor"}


def _framework_tensor_type(backend):
    module, _, name = TENSOR_TYPES[backend].rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def test_backend_is_inferred_from_tensors(backend):
    loss = recloss.bpr_loss(to_backend(backend, POS), to_backend(backend, NEG))
    assert isinstance(loss, _framework_tensor_type(backend))
    assert tuple(loss.shape) == ()
    assert abs(float(to_numpy(loss)) - float(EXPECTED)) < 1e-6  # JAX without x64 computes in float32


@pytest.mark.parametrize("alias", ["tf", "pytorch", "jax", "TensorFlow", "torch"])
def test_explicit_backend_and_aliases_convert_numpy(alias):
    name = _dispatch.canonical_name(alias)
    if name not in recloss.available_backends():
        pytest.skip(f"{name} is not installed")
    loss = recloss.bpr_loss(POS.astype(np.float32), NEG.astype(np.float32), backend=alias)
    assert isinstance(loss, _framework_tensor_type(name))
    assert abs(float(to_numpy(loss)) - float(EXPECTED)) < 1e-5


def test_python_lists_are_accepted_with_an_explicit_backend(backend):
    loss = recloss.bpr_loss([1.0, 2.0], [[0.5], [3.0]], backend=backend)
    assert abs(float(to_numpy(loss)) - float(recloss.bpr_loss(np.array([1.0, 2.0]), np.array([[0.5], [3.0]])))) < 1e-6


def test_numpy_inputs_without_backend_use_the_reference():
    out = recloss.bpr_loss(POS, NEG)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64 and out.shape == ()


def test_recloss_backend_environment_variable_sets_the_default(monkeypatch, backend):
    monkeypatch.setenv("RECLOSS_BACKEND", backend)
    assert isinstance(recloss.bpr_loss(POS, NEG), _framework_tensor_type(backend))


def test_unknown_backend_name():
    with pytest.raises(BackendError, match=r"bpr_loss|unknown backend 'mxnet'; expected one of 'tensorflow'"):
        recloss.bpr_loss(POS, NEG, backend="mxnet")


def test_mixed_frameworks_are_an_error_that_lists_the_types():
    installed = [b for b in _dispatch.FRAMEWORK_BACKENDS if b in recloss.available_backends()]
    if len(installed) < 2:
        pytest.skip("needs two frameworks")
    first, second = installed[:2]
    with pytest.raises(BackendError) as error:
        recloss.bpr_loss(to_backend(first, POS), to_backend(second, NEG))
    message = str(error.value)
    assert message.startswith("bpr_loss: tensors of several frameworks in one call:")
    assert first in message and second in message


def test_a_tensor_of_another_framework_than_the_explicit_backend(backend):
    others = [b for b in recloss.available_backends() if b != backend]
    for target in others:
        with pytest.raises(BackendError, match=rf"bpr_loss: backend='{target}' but got a {backend} tensor"):
            recloss.bpr_loss(to_backend(backend, POS), to_backend(backend, NEG), backend=target)


def test_missing_framework_names_its_install_command(monkeypatch):
    """recloss is on no registry: the hint is the framework's own install command, or the checkout's extra."""
    monkeypatch.setitem(_dispatch.BACKENDS, "torch", ("recloss.backends.not_there", "framework_not_installed",
                                                     "torch"))
    with pytest.raises(BackendUnavailableError, match=r'install it with: pip install framework_not_installed '
                                                      r'\(or, in a recloss checkout: pip install -e "\.\[torch\]"\)$'):
        recloss.bpr_loss(POS, NEG, backend="torch")
    assert "torch" not in recloss.available_backends()


def test_import_recloss_and_a_numpy_call_import_no_framework():
    code = ("import sys, numpy as np, recloss\n"
            "recloss.sampled_softmax_loss(np.ones((3, 2)), np.ones((3, 2)), np.ones((4, 2)))\n"
            "recloss.available_backends()\n"
            "recloss.sampling.log_uniform_candidates(np.arange(3), 2, 10, seed=0)\n"
            "recloss.sampling.frequency_update(recloss.sampling.frequency_init(8, backend='numpy'), np.arange(3))\n"
            "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'jaxlib', 'keras', 'flax', 'optax') "
            "if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_signatures_follow_the_spec():
    for name, spec in SPECS.items():
        parameters = inspect.signature(public_function(name)).parameters
        assert list(parameters)[-1] == "backend"
        positional = [p for p, v in parameters.items() if v.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        assert tuple(positional) == spec.positional
        assert set(parameters) == set(spec.tensor_names) | {o.name for o in spec.options} | {"backend"}
        for option in spec.options:
            assert parameters[option.name].default == option.default


def test_issue_signatures():
    assert str(inspect.signature(recloss.sampled_softmax_loss)).startswith(
        "(query_emb: 'Tensor', pos_emb: 'Tensor', neg_emb: 'Tensor | None' = None, *, "
        "temperature: 'float | Tensor' = 1.0, in_batch: 'bool | None' = None, pos_log_q")
    params = list(inspect.signature(recloss.unsupervised_softmax_cross_entropy_loss).parameters)
    assert params[:4] == ["src_emb", "pos_emb", "neg_emb", "temperature"]


def _run_cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "recloss", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def test_cli_validate_writes_json_and_exits_zero(tmp_path):
    path = tmp_path / "report.json"
    out = _run_cli("validate", "--backend", "numpy", "--loss", "bpr_loss", "--json", str(path), "--quiet")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "| bpr_loss | numpy | cpu | float32 |" in out.stdout
    report = json.loads(path.read_text())
    assert report["passed"] and len(report["rows"]) == 2


def test_cli_validate_rejects_an_unknown_loss():
    out = _run_cli("validate", "--loss", "nope", "--backend", "numpy")
    assert out.returncode == 2 and "unknown loss 'nope'" in out.stderr


def test_cli_info_lists_backends():
    out = _run_cli("info")
    assert out.returncode == 0 and "numpy" in out.stdout and "losses:" in out.stdout


def test_cached_validation_still_checks_values_and_new_shapes(backend):
    from recloss.errors import OptionError, ShapeError
    pos, neg = to_backend(backend, POS), to_backend(backend, NEG)
    good = to_backend(backend, np.ones(6))
    bad = to_backend(backend, -np.ones(6))
    for _ in range(2):  # the second round is served from the validation cache
        recloss.bpr_loss(pos, neg, sample_weight=good)
        with pytest.raises(OptionError, match="`sample_weight` must hold finite values >= 0; got -1.0"):
            recloss.bpr_loss(pos, neg, sample_weight=bad)
        with pytest.raises(ShapeError, match=r"`neg_logit` must have shape \[B\] or \[B, K\] with B=6"):
            recloss.bpr_loss(pos, to_backend(backend, NEG[:5]))
        with pytest.raises(OptionError, match="`reduction` must be one of"):
            recloss.bpr_loss(pos, neg, reduction="avg")
