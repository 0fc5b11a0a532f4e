"""The bad-input matrix: every loss x every kind of bad input x every backend.

Each bad input must raise one exception of the documented class whose message names the loss, the argument,
what was expected and what was received -- and the same class and the same words on every backend. The
expected words are taken from the same call on the ``"numpy"`` backend (the shared validator sees NumPy
arrays there), so a backend that raised its own framework error, or phrased anything differently, fails.

The matrix is generated from the catalogue: one "full" configuration per loss (the spec case with the most
arguments, plus ``sample_weight`` where the loss accepts it), then one mutation per (argument, problem).
"""

from __future__ import annotations

import math
import subprocess
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pytest

import recloss
from recloss import (BackendError, BackendUnavailableError, DTypeError, OptionError, ReclossError,
                     ShapeError)
from recloss._spec import BOOL, FLOAT, INT, Case, LossSpec
from recloss._validate import NUMBER_RULES
from recloss.losses import SPECS
from recloss.parity import DIMS

from helpers import case_options, function_of, spec_inputs, to_backend, to_numpy

FRAMEWORKS = ("tensorflow", "torch", "jax")


def _full_case(spec: LossSpec) -> Case:
    """The spec case with the most tensor arguments, with ``sample_weight`` added if the loss accepts it."""
    case = max(spec.cases, key=lambda c: (len(c.forms), -spec.cases.index(c)))
    weighted = Case(case.name, {**case.forms, "sample_weight": 0}, case.options)
    inputs = spec_inputs(spec, weighted, np.random.default_rng(0), DIMS)
    try:
        function_of(spec.name)(**inputs, **case_options(spec, weighted), backend="numpy")
    except ReclossError:
        return case
    return weighted


FULL = {name: _full_case(spec) for name, spec in SPECS.items()}


@dataclass
class Bad:
    """One bad input: how to break the valid call, the class it must raise, words its message must hold."""

    id: str
    mutate: Callable[[dict[str, Any], dict[str, Any]], None]  # (numpy inputs, options) -> None, in place
    error: type[Exception]
    words: list[str] = field(default_factory=list)


def _set(name: str, value: Any) -> Callable[[dict, dict], None]:
    def mutate(inputs: dict, options: dict) -> None:
        (options if name in options else inputs)[name] = value
    return mutate


def _transform(name: str, fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[dict, dict], None]:
    def mutate(inputs: dict, options: dict) -> None:
        inputs[name] = fn(inputs[name])
    return mutate


def _bad_inputs(spec: LossSpec) -> list[Bad]:
    case = FULL[spec.name]
    inputs = spec_inputs(spec, case, np.random.default_rng(0), DIMS)
    present = [a for a in spec.args if inputs[a.name] is not None]
    max_rank = max(len(shape) for a in spec.args for shape in a.shapes)
    bad: list[Bad] = []
    bound_by: dict[str, str] = {}
    for arg in present:
        form = arg.shapes[case.forms.get(arg.name, 0)]
        x = inputs[arg.name]
        # Wrong rank: one more axis than any declared shape of any argument.
        too_many = (1,) * (max_rank + 1 - x.ndim)
        bad.append(Bad(f"{arg.name}-rank", _transform(arg.name, lambda v, t=too_many: v.reshape(v.shape + t)),
                       ShapeError, [f"`{arg.name}` must have shape {arg.shape_text}",
                                    str(x.shape + too_many)]))
        if x.ndim:
            bad.append(Bad(f"{arg.name}-scalar", _transform(arg.name, lambda v: v.reshape(-1)[0]), ShapeError,
                           [f"`{arg.name}` must have shape", "got ()"]))
        # Mismatched sizes: a dimension an earlier argument already fixed, one larger here.
        for axis, dim in enumerate(form):
            if dim in bound_by:
                grown = list(x.shape)
                grown[axis] += 1

                def grow(v: np.ndarray, axis: int = axis) -> np.ndarray:
                    return np.concatenate([v, np.take(v, [0], axis=axis)], axis=axis)

                bad.append(Bad(f"{arg.name}-{dim}-mismatch", _transform(arg.name, grow), ShapeError,
                               [f"`{arg.name}` must have shape", f"{dim}={x.shape[axis]} from `{bound_by[dim]}`",
                                str(tuple(grown))]))
        for dim in form:
            bound_by.setdefault(dim, arg.name)
        # Wrong dtypes.
        if arg.kind == FLOAT:
            for dtype in ("int32", "bool", "complex64"):
                bad.append(Bad(f"{arg.name}-{dtype}", _transform(arg.name, lambda v, d=dtype: v.astype(d)),
                               DTypeError, [f"`{arg.name}` must be a floating tensor", f"got {dtype}"]))
        elif arg.kind == INT:
            for dtype in ("float32", "bool"):
                bad.append(Bad(f"{arg.name}-{dtype}", _transform(arg.name, lambda v, d=dtype: v.astype(d)),
                               DTypeError, [f"`{arg.name}` must be an integer tensor", f"got {dtype}"]))
        elif arg.kind == BOOL:
            bad.append(Bad(f"{arg.name}-float32", _transform(arg.name, lambda v: v.astype("float32")),
                           DTypeError, [f"`{arg.name}` must be a boolean tensor", "got float32"]))
    for arg in present:  # value checks: sample_weight >= 0, ranking labels >= 0 (and <= 1), finite
        if not arg.nonnegative:
            continue
        problems = [("negative", -0.5), ("nan", math.nan), ("inf", math.inf)]
        if arg.at_most is not None:
            problems.append(("above", arg.at_most + 0.5))
        expected = "finite values >= 0" if arg.at_most is None else f"finite values in [0, {arg.at_most:g}]"
        for label, value in problems:
            def poke(v: np.ndarray, value: float = value) -> np.ndarray:
                v = v.copy()
                v[-1] = value  # the last row (a list with valid items where a mask applies)
                return v
            bad.append(Bad(f"{arg.name}-{label}", _transform(arg.name, poke), OptionError,
                           [f"`{arg.name}` must hold {expected}", f"got {value!r}"]))
    # Options.
    names = {o.name for o in spec.options}
    for option in spec.options:
        if option.rule == "choice":  # reduction, distance, ...: an unknown string and a non-string
            allowed = ", ".join(repr(c) for c in option.choices)
            for value in ("avg", 3 if None in option.choices else None):
                bad.append(Bad(f"{option.name}-{value}", _set(option.name, value), OptionError,
                               [f"`{option.name}` must be one of {allowed}", f"got {value!r}"]))
        elif option.rule == "finite":  # margin, epsilon
            for value in (math.nan, math.inf, -math.inf, "1"):
                bad.append(Bad(f"{option.name}-{value}", _set(option.name, value), OptionError,
                               [f"`{option.name}` must be a finite number", f"got {value!r}"]))
        elif option.rule == "optional_count":  # num_hard_negatives, k
            for value in (0, -2, 1.5, True, "3"):
                bad.append(Bad(f"{option.name}-{value}", _set(option.name, value), OptionError,
                               [f"`{option.name}` must be None or an integer >= 1", f"got {value!r}"]))
        elif option.rule in ("nonnegative", "fraction", "unit"):  # z_loss, label_smoothing, t
            outside = {"nonnegative": (-0.5,), "fraction": (-0.1, 1.0), "unit": (-0.1, 1.5)}[option.rule]
            for value in (*outside, math.nan, math.inf, "0.1"):
                bad.append(Bad(f"{option.name}-{value}", _set(option.name, value), OptionError,
                               [f"`{option.name}` must be {NUMBER_RULES[option.rule]}", f"got {value!r}"]))
        elif option.rule == "item_count":  # num_items
            for value in (1, 0, 2.5, True, "10"):
                bad.append(Bad(f"{option.name}-{value}", _set(option.name, value), OptionError,
                               [f"`{option.name}` must be an integer >= 2", f"got {value!r}"]))
    if "temperature" in names:
        for value in (0.0, -1.0, math.nan, math.inf, -math.inf):
            bad.append(Bad(f"temperature-{value}", _set("temperature", value), OptionError,
                           ["`temperature` must be a finite number > 0", f"got {value!r}"]))
        bad.append(Bad("temperature-str", _set("temperature", "0.1"), OptionError,
                       ["`temperature` must be a finite number > 0", "got '0.1'"]))
        bad.append(Bad("temperature-tensor-nan", _set("temperature", np.float32("nan").reshape(())), OptionError,
                       ["`temperature` must be a finite number > 0", "got nan"]))
        bad.append(Bad("temperature-tensor-1d", _set("temperature", np.ones(1, np.float32)), OptionError,
                       ["`temperature` must be a finite number > 0 or a 0-d floating tensor",
                        "got a float32 tensor of shape (1,)"]))
    for name in ("symmetric", "normalize"):
        if name in names:
            bad.append(Bad(f"{name}-str", _set(name, "yes"), OptionError, [f"`{name}` must be True or False"]))
    return bad


MATRIX = [pytest.param(spec.name, bad, id=f"{spec.name}-{bad.id}")
          for spec in SPECS.values() for bad in _bad_inputs(spec)]


def _convert(backend: str, value: Any) -> Any:
    """A NumPy array (0-d arrays included) as a tensor of ``backend``; other values unchanged."""
    return to_backend(backend, value) if isinstance(value, (np.ndarray, np.generic)) else value


def _raised(spec: LossSpec, backend: str, bad: Bad) -> Exception:
    case = FULL[spec.name]
    inputs = spec_inputs(spec, case, np.random.default_rng(0), DIMS)
    inputs = {k: None if v is None else (v.astype(np.float32) if v.dtype == np.float64 else v)
              for k, v in inputs.items()}
    options = case_options(spec, case)
    bad.mutate(inputs, options)
    if backend != "numpy":
        inputs = {k: _convert(backend, v) for k, v in inputs.items()}
        options = {k: _convert(backend, v) for k, v in options.items()}
    with pytest.raises(Exception) as info:
        function_of(spec.name)(**inputs, **options, backend=backend)
    return info.value


@pytest.mark.parametrize("loss, bad", MATRIX)
def test_bad_input(loss: str, bad: Bad, backend: str) -> None:
    spec = SPECS[loss]
    error = _raised(spec, backend, bad)
    assert type(error) is bad.error, f"{type(error).__name__}: {error}"
    message = str(error)
    assert message.startswith(f"{loss}: "), message
    for words in bad.words:
        assert words in message, message
    # The same class and the same words as the shared validator says for NumPy inputs, i.e. on every backend.
    expected = _raised(spec, "numpy", bad)
    assert (type(error), message) == (type(expected), str(expected))


def test_matrix_covers_every_loss_and_problem() -> None:
    """The generator is not silently empty for some loss or some kind of problem."""
    ids = {param.values[1].id for param in MATRIX}
    for spec in SPECS.values():
        mine = [p.values[1].id for p in MATRIX if p.values[0] == spec.name]
        assert any(i.endswith("-rank") for i in mine) and any("mismatch" in i for i in mine), spec.name
        assert any(i.endswith("-int32") for i in mine) and {"reduction-avg", "reduction-None"} <= set(mine), spec.name
    for needed in ("neg_mask-K-mismatch", "pos_emb-D-mismatch", "neg_ids-N-mismatch", "pos_ids-float32",
                   "sample_weight-nan", "temperature-0.0", "margin-nan", "num_hard_negatives-0", "distance-avg",
                   "labels-negative", "labels-nan", "labels-above", "labels-L-mismatch", "mask-B-mismatch",
                   "labels-int32", "mask-float32", "k-0", "k-1.5", "lambdaweight-avg", "lambdaweight-3",
                   "epsilon-inf", "label_smoothing-1.0", "z_loss--0.5", "t-1.5", "num_items-1", "mode-avg",
                   "query_ids-float32", "query_ids-B-mismatch"):
        assert needed in ids, needed
    ranking = [p.values[1].id for p in MATRIX if p.values[0] == "ndcg"]
    assert {"k-0", "k-True", "labels-negative", "scores-rank"} <= set(ranking)


# ----------------------------------------------------------------------------------------------------------
# Cross-argument rules, frameworks and backends


RULES = [
    ("sigmoid_cross_entropy_loss", {"neg_logit": 2}, {"reduction": "sum"}, "only reduction='mean'"),
    ("sampled_softmax_loss", {}, {"in_batch": False}, "no negatives: pass `neg_emb` or in_batch=True"),
    ("sampled_softmax_loss", {"pos_log_q": 0, "neg_log_q": 0}, {}, "`neg_log_q` describes `neg_emb`"),
    ("sampled_softmax_loss", {"neg_emb": 0, "neg_ids": 0}, {}, "`neg_ids` needs `pos_ids`"),
    ("sampled_softmax_loss", {"neg_emb": 1, "neg_log_q": 0}, {}, "`neg_log_q` must have shape [B, K]"),
    ("sampled_softmax_loss", {"neg_emb": 0, "query_ids": 0}, {}, "`query_ids` removes the in-batch candidates"),
]


@pytest.mark.parametrize("loss, forms, options, words", RULES, ids=[f"{r[0]}-{r[3][:20]}" for r in RULES])
def test_cross_argument_rules(loss: str, forms: dict, options: dict, words: str, backend: str) -> None:
    spec = SPECS[loss]
    case = Case("rule", forms, options)
    inputs = spec_inputs(spec, case, np.random.default_rng(0), DIMS)
    messages = []
    for name in (backend, "numpy"):
        tensors = {k: v if name == "numpy" else to_backend(name, v) for k, v in inputs.items()}
        with pytest.raises(OptionError) as info:
            function_of(loss)(**tensors, **case_options(spec, case), backend=name)
        messages.append(str(info.value))
    assert messages[0] == messages[1] and messages[0].startswith(f"{loss}: ") and words in messages[0]


def test_mixed_frameworks(backend: str) -> None:
    """Tensors of two frameworks in one call: BackendError listing both, whichever comes first."""
    other = next(f for f in FRAMEWORKS if f != backend)
    pytest.importorskip(other if other != "tensorflow" else "tensorflow")
    pos, neg = np.zeros(3, np.float32), np.zeros((3, 2), np.float32)
    for a, b in ((backend, other), (other, backend)):
        with pytest.raises(BackendError) as info:
            recloss.bpr_loss(to_backend(a, pos), to_backend(b, neg))
        message = str(info.value)
        assert message.startswith("bpr_loss: tensors of several frameworks in one call")
        assert f"{a} (" in message and f"{b} (" in message
    with pytest.raises(BackendError, match=f"backend='{other}' but got a {backend} tensor"):
        recloss.bpr_loss(to_backend(backend, pos), to_backend(backend, neg), backend=other)


def test_numpy_inputs_follow_the_explicit_backend(backend: str) -> None:
    """NumPy arrays mixed with one framework's tensors are converted to that framework (no error)."""
    pos, neg = np.zeros(3, np.float32), np.zeros((3, 2), np.float32)
    out = recloss.bpr_loss(to_backend(backend, pos), neg)
    assert np.isclose(to_numpy(out), math.log(2.0))


@pytest.mark.parametrize("name", ["nonsense", 3])
def test_unknown_backend(name: Any) -> None:
    with pytest.raises(BackendError, match="backend"):
        recloss.bpr_loss(np.zeros(3), np.zeros(3), backend=name)


def test_unplaceable_tensor_type() -> None:
    class Fake:
        shape, dtype = (3,), np.dtype("float32")

    with pytest.raises(BackendError, match="cannot tell which framework"):
        recloss.bpr_loss(Fake(), Fake())


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_backend_not_installed(framework: str) -> None:
    """A framework that cannot be imported: BackendUnavailableError (an ImportError) naming the framework's
    install command and the extra of a recloss checkout (recloss is on no registry)."""
    code = (f"import sys; sys.modules[{framework!r}] = None\n"
            "import numpy as np, recloss\n"
            "try:\n"
            f"    recloss.bpr_loss(np.zeros(3), np.zeros(3), backend={framework!r})\n"
            "except recloss.BackendUnavailableError as error:\n"
            "    assert isinstance(error, ImportError)\n"
            "    print(error)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert f"backend {framework!r} needs {framework}, which is not installed" in result.stdout
    assert f'install it with: pip install {framework} (or, in a recloss checkout: pip install -e ".[{framework}]")' \
        in result.stdout


def test_errors_are_value_errors() -> None:
    """Every input error is a ReclossError, hence a ValueError; dtype errors are also TypeErrors."""
    for error in (ShapeError, DTypeError, OptionError, BackendError):
        assert issubclass(error, ReclossError) and issubclass(error, ValueError)
    assert issubclass(DTypeError, TypeError) and issubclass(BackendUnavailableError, ImportError)
