"""Types and packaging: the generated stubs match the catalogue and the runtime, a type checker reports a
misspelt option and a wrong type, and the package ships what a regular install needs."""

from __future__ import annotations

import ast
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import recloss
from recloss import _native, _stubs
from recloss.losses import CATALOGUE

ROOT = Path(__file__).resolve().parents[1]


def test_committed_stubs_match_the_catalogue():
    stale = [str(path.relative_to(ROOT)) for path in _stubs.stale()]
    assert not stale, f"stale stubs {stale}: regenerate them with `python -m recloss._stubs` and commit them"


def test_stubs_follow_a_new_loss_in_the_catalogue(monkeypatch):
    from toy_ranking_spec import TOY_SPEC

    monkeypatch.setitem(CATALOGUE, TOY_SPEC.name, TOY_SPEC)
    assert "class ToyListwiseLoss(LossModule):" in _stubs.render_torch()
    keras_stub = _stubs.render_keras()
    assert "class ToyListwiseLoss(ReclossLoss):" in keras_stub and "'ToyListwiseLoss'," in keras_stub


def _stub_functions(path: Path) -> dict[str, ast.FunctionDef]:
    """``name`` or ``Class.name`` -> its definition in a stub file."""
    found: dict[str, ast.FunctionDef] = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            found.update({f"{node.name}.{f.name}": f for f in node.body if isinstance(f, ast.FunctionDef)})
    return found


def _shape_of_signature(definition: ast.FunctionDef) -> list[tuple[str, str, object]]:
    args = definition.args
    positional = args.posonlyargs + args.args
    defaults = [None] * (len(positional) - len(args.defaults)) + list(args.defaults)
    shape = [(a.arg, "positional", None if d is None else ast.literal_eval(d)) for a, d in zip(positional, defaults)]
    shape += [(a.arg, "keyword", None if d is None else ast.literal_eval(d))
              for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    return [entry for entry in shape if entry[0] != "self"]


def _shape_of_runtime(function) -> list[tuple[str, str, object]]:
    kinds = {inspect.Parameter.POSITIONAL_OR_KEYWORD: "positional", inspect.Parameter.KEYWORD_ONLY: "keyword"}
    return [(name, kinds[p.kind], None if p.default is inspect.Parameter.empty else p.default)
            for name, p in inspect.signature(function).parameters.items()
            if name != "self" and p.kind in kinds]


def test_stub_signatures_equal_the_runtime_signatures():
    functions = _stub_functions(ROOT / "recloss" / "__init__.pyi")
    for name in CATALOGUE:
        assert _shape_of_signature(functions[name]) == _shape_of_runtime(getattr(recloss, name)), name
    torch = pytest.importorskip("torch")  # noqa: F841
    import recloss.torch as rt

    classes = _stub_functions(ROOT / "recloss" / "torch.pyi")
    for name in CATALOGUE:
        cls = getattr(rt, _native.class_name(name))
        for method in ("__init__", "forward"):
            assert _shape_of_signature(classes[f"{cls.__name__}.{method}"]) == \
                _shape_of_runtime(getattr(cls, method)), (name, method)


def test_keras_stub_signatures_equal_the_runtime_signatures():
    pytest.importorskip("keras")
    import recloss.keras as rk

    stub = _stub_functions(ROOT / "recloss" / "keras.pyi")
    for method in ("__init__", "call"):
        assert _shape_of_signature(stub[f"Retrieval.{method}"]) == _shape_of_runtime(getattr(rk.Retrieval, method))
    for name in rk.__all__:
        if f"{name}.__init__" in stub and name != "Retrieval":
            assert _shape_of_signature(stub[f"{name}.__init__"]) == _shape_of_runtime(getattr(rk, name)), name


def test_estimator_and_queue_stubs_equal_the_runtime_signatures():
    """The classes of recloss._torch_sampling / _keras_sampling, described in recloss._sampling_native."""
    pytest.importorskip("torch")
    import recloss.torch as rt

    stub = _stub_functions(ROOT / "recloss" / "torch.pyi")
    for cls, methods in ((rt.FrequencyEstimator, ("__init__", "forward")),
                         (rt.NegativeQueue, ("__init__", "push", "negatives", "forward"))):
        for method in methods:
            declared = [(name, kind, None if default is Ellipsis else default)
                        for name, kind, default in _shape_of_signature(stub[f"{cls.__name__}.{method}"])]
            runtime = [(name, kind, None if name == "dtype" else default)   # dtype=torch.float32: `...` in the stub
                       for name, kind, default in _shape_of_runtime(getattr(cls, method))]
            assert declared == runtime, (cls.__name__, method)
    pytest.importorskip("keras")
    import recloss.keras as rk

    stub = _stub_functions(ROOT / "recloss" / "keras.pyi")
    for cls, methods in ((rk.FrequencyEstimator, ("__init__", "call")),
                         (rk.NegativeQueue, ("__init__", "push", "negatives", "call"))):
        for method in methods:
            assert _shape_of_signature(stub[f"{cls.__name__}.{method}"]) == \
                _shape_of_runtime(getattr(cls, method)), (cls.__name__, method)


USER_SCRIPT_WITH_MISTAKES = """
    import numpy as np
    import recloss
    import recloss.keras
    import recloss.torch

    q = np.ones((4, 2), dtype=np.float32)
    a = recloss.sampled_softmax_loss(q, q, temprature=0.1)
    b = recloss.sampled_softmax_loss(q, q, temperature="0.1")
    c = recloss.softmax_loss(q[:, 0], q, reduction="avg")
    d = recloss.torch.SampledSoftmaxLoss(temprature=0.1)
    e = recloss.keras.Retrieval(num_hard_negatives=1.5)
    f = recloss.torch.FrequencyEstimator(num_bucket=1024)
"""

CORRECT_USER_SCRIPT = """
    import numpy as np
    import torch
    import recloss
    import recloss.keras
    import recloss.torch

    q = np.ones((4, 2), dtype=np.float32)
    value = float(recloss.sampled_softmax_loss(q, q, temperature=0.1, pos_ids=np.arange(4), reduction="sum"))
    t = torch.ones(4, 2, requires_grad=True)
    module = recloss.torch.SampledSoftmaxLoss(temperature=0.05, learn_temperature=True)
    module(t, t, pos_ids=torch.arange(4)).backward()
    recloss.bpr_loss([1.0, 2.0], [[0.5], [3.0]], backend="torch").backward()
    recloss.info_nce_loss(t, t, temperature=torch.tensor(0.1), symmetric=True)
    task = recloss.keras.Retrieval(temperature=0.05, num_hard_negatives=10, name="task")
    loss = recloss.keras.SoftmaxLoss(temperature=0.1, reduction="sum")
    estimator = recloss.torch.FrequencyEstimator(decay=2 ** -7)
    log_q: torch.Tensor = estimator(torch.arange(4))
    queue = recloss.torch.NegativeQueue(16, 2, track_ids=False)
    queue.push(t.detach())
    negatives = queue.negatives()
    cands = recloss.sampling.log_uniform_candidates(np.arange(4), 2, 10, seed=0)
    recloss.sampled_softmax_loss(q, q, q, pos_log_q=log_q.numpy(), neg_log_q=cands.neg_log_q)
    layer = recloss.keras.FrequencyEstimator(2 ** 10, 2, 2 ** -4, name="freq")
"""


def _mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    """mypy on a user script, reading recloss from this checkout (MYPYPATH), as an installed package would be
    read: errors inside recloss are not the script's (``follow_imports = silent``). torch's own annotations
    are skipped to keep the run short (it is the same with them, only slower)."""
    pytest.importorskip("mypy")
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(source))
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\nfollow_imports = silent\n\n[mypy-torch.*]\nfollow_imports = skip\n")
    env = {**os.environ, "MYPYPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(config), "--cache-dir",
                           str(tmp_path / "cache"), "--no-error-summary", str(script)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)


def test_mypy_reports_a_misspelt_option_and_a_wrong_type(tmp_path):
    out = _mypy(tmp_path, USER_SCRIPT_WITH_MISTAKES)
    report = out.stdout + out.stderr
    assert out.returncode == 1, report
    expected = {
        8: 'Unexpected keyword argument "temprature" for "sampled_softmax_loss"; did you mean "temperature"?',
        9: 'Argument "temperature" to "sampled_softmax_loss" has incompatible type "str"; '
           'expected "float | TensorLike"',
        10: 'Argument "reduction" to "softmax_loss" has incompatible type "Literal[\'avg\']"',
        11: 'Unexpected keyword argument "temprature" for "SampledSoftmaxLoss"',
        12: 'Argument "num_hard_negatives" to "Retrieval" has incompatible type "float"; expected "int | None"',
        13: 'Unexpected keyword argument "num_bucket" for "FrequencyEstimator"',
    }
    for line, message in expected.items():
        assert f"user_script.py:{line}: error: {message}" in report, report
    assert report.count(": error:") == len(expected), report


def test_mypy_passes_a_correct_script(tmp_path):
    out = _mypy(tmp_path, CORRECT_USER_SCRIPT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_package_ships_its_subpackages_stubs_and_py_typed():
    """What a regular (non-editable) install contains: every package under recloss/, ``py.typed``, the stubs."""
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    on_disk = {"recloss"} | {"recloss." + ".".join(p.parent.relative_to(ROOT / "recloss").parts)
                             for p in (ROOT / "recloss").rglob("__init__.py") if p.parent != ROOT / "recloss"}
    backends = {"recloss.backends"} | {"recloss.backends." + p.parent.name
                                       for p in (ROOT / "backends").glob("*/__init__.py")}
    assert set(config["packages"]) == on_disk | backends
    assert set(config["package-data"]["recloss"]) == {"py.typed", "*.pyi"}
    assert (ROOT / "recloss" / "py.typed").exists()
    license_text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in license_text and "Version 2.0" in license_text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == {"text": "Apache-2.0"}
