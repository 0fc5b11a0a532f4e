"""Cross-framework validation: run losses on several backends and devices and compare with the reference.

For each loss, each of its spec's cases (or inputs you give), each backend, device and dtype, the loss value
and its gradient with respect to every floating input are compared with the float64 NumPy reference
evaluated on the same (dtype-rounded) inputs. Reference gradients are central finite differences of the
reference in float64: per element for inputs of up to :data:`FULL_DIFFERENCES_UP_TO` elements in all (every
spec case), else along :data:`DIRECTIONS` random directions and along the backend's own gradient (jointly and
per input), two reference evaluations each, so a user's large inputs cost seconds, not hours. The error reported is the norm-wise relative error
``max|x - ref| / max|ref|``; along directions, ``|<g, v> - <g_ref, v>| / (||g|| ||v||)``, the worst over them.
Inputs a spec declares ``constant`` (ranking labels) are not differentiated, and ``value_only`` specs (the
metrics) are compared by value only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from recloss._dispatch import FRAMEWORK_BACKENDS, available_backends, canonical_name, load_backend
from recloss._spec import FLOAT, Case, LossSpec
from recloss._validate import validate as check_call
from recloss.losses import METRICS, SPECS
from recloss.reference import REFERENCES

#: Sizes of the named dimensions in generated inputs (small, so that finite differences stay cheap).
DIMS = {"B": 6, "K": 5, "N": 7, "D": 8, "M": 9, "L": 6}

#: Largest norm-wise relative error allowed, (value, gradient), by input dtype. float16/bfloat16 inputs are
#: computed in float32; their gradients come back in the input dtype, hence the looser gradient bounds.
TOLERANCES: dict[str, tuple[float, float]] = {
    "float64": (1e-10, 1e-6),
    "float32": (1e-5, 1e-4),
    "bfloat16": (1e-5, 1e-2),
    "float16": (1e-5, 2e-3),
}


@dataclass
class Row:
    """One line of the report: a loss on one backend, device and dtype, worst over its cases."""

    loss: str
    backend: str
    device: str
    dtype: str
    value_error: float = 0.0
    grad_error: float | None = None
    cases: int = 0
    failures: list[str] = field(default_factory=list)
    seconds: float = 0.0
    value_tolerance: float = 0.0     # the largest tolerance a case of the row had (derived ones included)
    grad_tolerance: float = 0.0

    @property
    def passed(self) -> bool:
        return not self.failures


@dataclass
class Report:
    """The result of :func:`validate`: one :class:`Row` per loss x backend x device x dtype."""

    rows: list[Row]
    skipped: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(row.passed for row in self.rows) and bool(self.rows)

    def table(self) -> str:
        """A Markdown table: loss, backend, device, dtype, errors, tolerances, pass/fail."""
        header = ("| loss | backend | device | dtype | value rel. err | grad rel. err | tolerance (value, grad) "
                  "| result |")
        lines = [header, "|" + "---|" * 8]
        for row in self.rows:
            value_tol, grad_tol = row.value_tolerance, row.grad_tolerance
            grad = "n/a (value only)" if row.grad_error is None else f"{row.grad_error:.1e}"
            result = "pass" if row.passed else "FAIL: " + "; ".join(row.failures)
            lines.append(f"| {row.loss} | {row.backend} | {row.device} | {row.dtype} | {row.value_error:.1e} | "
                         f"{grad} | {value_tol:.1g}, {grad_tol:.1g} | {result} |")
        return "\n".join(lines)

    def to_json(self) -> str:
        return json.dumps({"passed": self.passed, "skipped": self.skipped, "tolerances": TOLERANCES,
                           "rows": [{**asdict(row), "passed": row.passed} for row in self.rows]}, indent=2)


# ----------------------------------------------------------------------------------------------------------
# Inputs


def make_inputs(spec: LossSpec, case: Case, rng: np.random.Generator,
                dims: Mapping[str, int] = DIMS) -> dict[str, np.ndarray | None]:
    """Random inputs for one case, in float64 (integers and booleans as declared)."""
    inputs: dict[str, np.ndarray | None] = {}
    for arg in spec.args:
        if arg.name not in case.forms and not arg.required:
            inputs[arg.name] = None
            continue
        shape = tuple(dims[d] for d in arg.shapes[case.forms.get(arg.name, 0)])
        inputs[arg.name] = _sample(arg.sample, shape, rng)
    return inputs


def _sample(kind: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if kind == "ids":
        return rng.integers(0, 4, size=shape).astype(np.int64)
    if kind == "mask":
        mask = rng.random(shape) < 0.7
        mask[0] = False  # a row with every negative removed
        return mask
    if kind == "weight":
        weights = rng.uniform(0.0, 2.0, size=shape)
        weights[0] = 0.0
        return weights
    if kind == "log_prob":
        return np.log(rng.uniform(0.05, 1.0, size=shape))
    if kind == "scores" and len(shape) == 2:
        # Distinct values within each list, exact in every float precision (multiples of 3/32 up to 3.75):
        # no tie survives rounding to bfloat16, so ranks do not flip under a finite-difference step, and no
        # score difference is a whole number (no hinge kink at margin 0.5, 1 or 2).
        grid = np.arange(-40, 41) * (3.0 / 32.0)
        return np.stack([rng.choice(grid, size=shape[1], replace=shape[1] > grid.size) for _ in range(shape[0])]
                        ).reshape(shape)
    if kind in ("graded", "probability"):  # relevance labels: ties and zeros, a list with nothing relevant
        labels = rng.integers(0, 4, size=shape).astype(np.float64)
        if kind == "probability":
            labels = np.array([0.0, 0.25, 1.0, 1.0])[labels.astype(int)]
        if len(shape) == 2 and shape[0] > 1:
            labels[1] = 0.0
        return labels
    return rng.normal(0.0, 0.7, size=shape)


def cast_inputs(inputs: Mapping[str, Any], spec: LossSpec, dtype: str) -> dict[str, Any]:
    """Floating inputs rounded to ``dtype`` (via ml_dtypes for bfloat16); others unchanged."""
    out = {}
    for name, value in inputs.items():
        if value is not None and spec.arg(name).kind == FLOAT:
            value = np.asarray(value).astype(_numpy_dtype(dtype))
        out[name] = value
    return out


def _numpy_dtype(name: str) -> Any:
    if name == "bfloat16":
        import ml_dtypes
        return ml_dtypes.bfloat16
    return np.dtype(name)


# ----------------------------------------------------------------------------------------------------------
# The reference and its gradients


def reference_value(spec: LossSpec, inputs: Mapping[str, Any], options: Mapping[str, Any]) -> np.ndarray:
    f64 = {k: (None if v is None else (np.asarray(v, np.float64) if spec.arg(k).kind == FLOAT else v))
           for k, v in inputs.items()}
    return np.asarray(REFERENCES[spec.name](**f64, **options), dtype=np.float64)


def reference_gradients(spec: LossSpec, inputs: Mapping[str, Any], options: Mapping[str, Any],
                        wrt: Sequence[str]) -> dict[str, np.ndarray]:
    """Central finite differences of ``sum(reference)`` in float64."""
    base = {k: (None if v is None else (np.array(v, np.float64) if spec.arg(k).kind == FLOAT else v))
            for k, v in inputs.items()}
    grads = {}
    for name in wrt:
        x = base[name]
        grad = np.zeros_like(x)
        for index in np.ndindex(x.shape):
            original = x[index]
            step = 1e-6 * max(1.0, abs(original))
            x[index] = original + step
            up = np.sum(REFERENCES[spec.name](**base, **options))
            x[index] = original - step
            down = np.sum(REFERENCES[spec.name](**base, **options))
            x[index] = original
            grad[index] = (up - down) / (2 * step)
        grads[name] = grad
    return grads


#: Inputs with at most this many floating elements in all get a finite difference per element; larger ones
#: are checked along random directions (the spec cases are all far below it).
FULL_DIFFERENCES_UP_TO = 2048
#: Random directions along which a large input's gradient is checked.
DIRECTIONS = 6


def reference_directional(spec: LossSpec, inputs: Mapping[str, Any], options: Mapping[str, Any],
                          directions: Sequence[Mapping[str, np.ndarray]]) -> list[float]:
    """Central finite differences of ``sum(reference)`` along each direction (a unit tangent per input)."""
    base = {k: (None if v is None else (np.asarray(v, np.float64) if spec.arg(k).kind == FLOAT else v))
            for k, v in inputs.items()}
    scale = max(1.0, max(float(np.max(np.abs(base[name]), initial=0.0)) for name in directions[0]))
    step = 1e-6 * scale
    out = []
    for direction in directions:
        up = {**base, **{k: base[k] + step * v for k, v in direction.items()}}
        down = {**base, **{k: base[k] - step * v for k, v in direction.items()}}
        out.append(float((np.sum(REFERENCES[spec.name](**up, **options))
                          - np.sum(REFERENCES[spec.name](**down, **options))) / (2 * step)))
    return out


def random_directions(inputs: Mapping[str, Any], wrt: Sequence[str], count: int,
                      rng: np.random.Generator) -> list[dict[str, np.ndarray]]:
    """``count`` random directions over the inputs in ``wrt`` jointly, each of norm 1."""
    out = []
    for _ in range(count):
        direction = {name: rng.normal(size=np.shape(inputs[name])) for name in wrt}
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in direction.values())) or 1.0
        out.append({name: v / norm for name, v in direction.items()})
    return out


def gradient_directions(grads: Mapping[str, np.ndarray]) -> list[dict[str, np.ndarray]]:
    """Unit directions along a backend's own gradient: all inputs jointly, then each input alone. Along these a
    wrong scale, sign or misplaced mass shows in full, where a random direction sees ~1/sqrt(n) of it."""
    out = []
    for names in [list(grads)] + [[name] for name in grads] if len(grads) > 1 else [list(grads)]:
        direction = {name: np.asarray(grads[name], np.float64) for name in names}
        norm = np.sqrt(sum(float(np.sum(v * v)) for v in direction.values()))
        if np.isfinite(norm) and norm > 0:
            out.append({name: v / norm for name, v in direction.items()})
    return out


def directional_error(grads: Mapping[str, np.ndarray], directions: Sequence[Mapping[str, np.ndarray]],
                      expected: Sequence[float]) -> float:
    """``max |<g, v> - expected| / ||g||`` over the directions (unit ``v``); infinite for a non-finite ``g``."""
    if not all(np.all(np.isfinite(g)) for g in grads.values()):
        return float("inf")
    norm = max(np.sqrt(sum(float(np.sum(np.asarray(g, np.float64) ** 2)) for g in grads.values())), 1e-12)
    worst = 0.0
    for direction, reference in zip(directions, expected):
        projected = sum(float(np.sum(np.asarray(grads[k], np.float64) * v)) for k, v in direction.items())
        worst = max(worst, abs(projected - reference) / norm)
    return worst


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual - expected| / max|expected|`` (NaN or a shape mismatch count as infinite)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
        return float("inf")
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-12)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


# ----------------------------------------------------------------------------------------------------------
# The engine


def validate(losses: str | Iterable[str] | None = None, *, backends: str | Iterable[str] | None = None,
             devices: str | Iterable[str] | None = None, dtypes: str | Iterable[str] = ("float32", "float64"),
             inputs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
             seed: int = 0, progress: Callable[[str], None] | None = None) -> Report:
    """Run losses on several backends/devices/dtypes and compare value and gradients with the reference.

    Args:
        losses: a loss name or names (default: the whole catalogue, the metrics and the sampling checks of
            :mod:`recloss.parity_sampling`: the samplers' log Q, the frequency estimator, the negative queue).
        backends: backend names (default: every installed framework backend; ``"numpy"``, the reference
            itself, only when named).
        devices: device kinds to keep, ``"cpu"`` and/or ``"gpu"`` (``"cuda"`` is ``"gpu"``); default: every
            device each backend sees.
        dtypes: floating dtypes to run in: ``"float64"``, ``"float32"``, ``"bfloat16"``, ``"float16"``.
        inputs: your own NumPy inputs for one loss (its tensor arguments by name); default: the spec's cases
            with seeded random inputs.
        options: options for your inputs (``temperature``, ``reduction``, ...).
        seed: seed of the generated inputs (and of the directions large inputs are checked along).
        progress: called with a short label before each loss x backend x device x dtype.

    Returns:
        A :class:`Report`; ``report.passed`` is True when every row is within :data:`TOLERANCES` and at least
        one row ran. ``report.skipped`` says what could not run and why (a backend not installed, a device
        no backend sees).

    Raises:
        ValueError: an unknown loss, backend, device kind or dtype, a negative ``seed``, or
            ``inputs``/``options`` that do not fit the loss (recloss's ``ShapeError``, ``DTypeError`` or
            ``OptionError`` for the shapes, dtypes and values the loss itself would refuse), before any work
            is done.
        TypeError: an argument of the wrong kind (``validate(123)``), naming it.
    """
    from recloss.parity_sampling import CHECKS as SAMPLING_CHECKS, run as run_sampling_check

    known = [*SPECS, *SAMPLING_CHECKS]
    names = known if losses is None else names_argument("losses", losses)
    for name in names:
        if name not in SPECS and name not in SAMPLING_CHECKS:
            raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(known)}")
    dtypes = _choices("dtype", names_argument("dtypes", dtypes), tuple(TOLERANCES))
    device_kinds = None if devices is None else _choices(
        "device", ["gpu" if d == "cuda" else d for d in names_argument("devices", devices)],
        DEVICE_KINDS, "('cuda' is 'gpu')")
    seed = seed_argument(seed)
    if inputs is not None:
        if len(names) != 1 or names[0] in SAMPLING_CHECKS:
            raise ValueError("inputs= needs exactly one loss name")
        _check_user_inputs(SPECS[names[0]], inputs, options, dtypes)
    elif options is not None:
        raise ValueError("options= applies to inputs= (the spec cases bring their own options)")
    if backends is None:
        wanted = [b for b in available_backends() if b in FRAMEWORK_BACKENDS]
    else:
        wanted = list(dict.fromkeys(canonical_name(b) for b in names_argument("backends", backends)))

    rows: list[Row] = []
    skipped: list[str] = []
    if not wanted:
        skipped.append("no framework backend is installed (TensorFlow, PyTorch or JAX), so there is nothing to "
                       'compare with the reference: install one, e.g. pip install -e ".[torch]" in the checkout')
    modules = {}
    for backend in wanted:
        try:
            modules[backend] = load_backend(backend)
        except ImportError as error:
            skipped.append(f"{backend}: {error}")
    seen_kinds: dict[str, list[str]] = {}
    for backend, module in modules.items():
        for device in module.devices():
            seen_kinds.setdefault(backend, []).append("gpu" if device in ("cuda", "gpu") else device)
    for kind in device_kinds or ():
        if not any(kind in kinds for kinds in seen_kinds.values()):
            seen = "; ".join(f"{b}: {', '.join(k)}" for b, k in seen_kinds.items()) or "none"
            skipped.append(f"device {kind!r}: no backend here sees one (devices seen: {seen})")
    for name in names:
        if name in SAMPLING_CHECKS:   # samplers, estimator, queue: one float32 stream per backend and device
            for backend, module in modules.items():
                if backend == "numpy":   # the checks' reference itself
                    continue
                for device in module.devices():
                    if device_kinds is None or ("gpu" if device in ("cuda", "gpu") else device) in device_kinds:
                        if progress is not None:
                            progress(f"{name} {backend} {device}")
                        rows.append(run_sampling_check(name, backend, device, seed))
            continue
        spec = SPECS[name]
        cases = _cases(spec, inputs, options, seed)
        for dtype in dtypes:
            prepared = [_prepare(spec, case, case_inputs, dtype, seed) for case, case_inputs in cases]
            for backend, module in modules.items():
                for device in module.devices():
                    kind = "gpu" if device in ("cuda", "gpu") else device
                    if device_kinds is not None and kind not in device_kinds:
                        continue
                    if progress is not None:
                        progress(f"{name} {backend} {device} {dtype}")
                    rows.append(_run_row(spec, backend, module, device, dtype, prepared))
    return Report(rows=rows, skipped=skipped)


#: The device kinds ``validate`` knows.
DEVICE_KINDS = ("cpu", "gpu")


def _choices(what: str, values: str | Iterable[str], allowed: Sequence[str], note: str = "") -> list[str]:
    """``values`` (one string or several) checked against ``allowed``; ValueError naming the first bad one."""
    values = [values] if isinstance(values, str) else list(values)
    for value in values:
        if value not in allowed:
            expected = ", ".join(repr(a) for a in allowed)
            raise ValueError(f"unknown {what} {value!r}; expected one of {expected}" + (f" {note}" if note else ""))
    if not values:
        raise ValueError(f"no {what} given; expected one or more of {', '.join(repr(a) for a in allowed)}")
    return values


def names_argument(what: str, values: Any) -> list[str]:
    """``values``, one name (a str) or several (an iterable of str), as a list; a TypeError naming ``what``
    for anything else (``validate(123)``)."""
    if isinstance(values, str):
        return [values]
    if isinstance(values, Iterable) and not isinstance(values, Mapping):
        values = list(values)
        if all(isinstance(value, str) for value in values):
            return values
    raise TypeError(f"`{what}` must be a name (a str) or a list of names; got {values!r} "
                    f"({type(values).__name__})")


def seed_argument(seed: Any) -> int:
    """``seed`` as an int >= 0 (NumPy's generators take no negative seed); the error names ``seed``."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"`seed` must be an integer >= 0; got {seed!r} ({type(seed).__name__})")
    if seed < 0:
        raise ValueError(f"`seed` must be an integer >= 0; got {seed}")
    return int(seed)


def _check_user_inputs(spec: LossSpec, inputs: Mapping[str, Any], options: Mapping[str, Any] | None,
                       dtypes: Iterable[str]) -> None:
    """Every key of ``inputs`` a tensor argument of ``spec``, every required one given, likewise ``options``;
    then the call itself through the shared validator, which names the argument whose shape, dtype or values
    do not fit (``ShapeError``, ``DTypeError``, ``OptionError``)."""
    for what, value in (("inputs", inputs), ("options", options)):
        if value is not None and not isinstance(value, Mapping):
            raise TypeError(f"`{what}` must be a mapping of names to values; got {type(value).__name__}")
    unknown = [k for k in inputs if k not in spec.tensor_names]
    if unknown:
        raise ValueError(f"inputs= for {spec.name} has no argument {unknown[0]!r}; its tensor arguments are "
                         f"{', '.join(spec.tensor_names)}")
    missing = [a.name for a in spec.args if a.required and inputs.get(a.name) is None]
    if missing:
        raise ValueError(f"inputs= for {spec.name} lacks the required argument {missing[0]!r}")
    option_names = [o.name for o in spec.options]
    unknown = [k for k in options or {} if k not in option_names]
    if unknown:
        raise ValueError(f"options= for {spec.name} has no option {unknown[0]!r}; its options are "
                         f"{', '.join(option_names)}")
    numpy = load_backend("numpy")
    tensors = {arg.name: None if inputs.get(arg.name) is None else np.asarray(inputs[arg.name]) for arg in spec.args}
    for dtype in dtypes:   # as each backend will receive them: the floating inputs in the dtype being validated
        check_call(spec, cast_inputs(tensors, spec, dtype), {o.name: o.default for o in spec.options}
                   | dict(options or {}), numpy.concrete)


def _cases(spec: LossSpec, inputs: Mapping[str, Any] | None, options: Mapping[str, Any] | None,
           seed: int) -> list[tuple[Case, dict[str, Any]]]:
    if inputs is not None:
        given = {arg.name: None if inputs.get(arg.name) is None else np.asarray(inputs[arg.name])
                 for arg in spec.args}
        return [(Case("your inputs", options=dict(options or {})), given)]
    rng = np.random.default_rng(seed)
    return [(case, make_inputs(spec, case, rng)) for case in spec.cases]


@dataclass
class _Prepared:
    case: Case
    options: dict[str, Any]
    inputs: dict[str, Any]
    wrt: list[str]
    value: np.ndarray
    grads: dict[str, np.ndarray]                     # per element (small inputs) ...
    directions: list[dict[str, np.ndarray]] = field(default_factory=list)   # ... or along these
    directional: list[float] = field(default_factory=list)


def _prepare(spec: LossSpec, case: Case, inputs: Mapping[str, Any], dtype: str, seed: int = 0) -> _Prepared:
    options = {o.name: o.default for o in spec.options} | dict(case.options)
    cast = cast_inputs(inputs, spec, dtype)
    wrt = differentiable(spec, cast)
    value = reference_value(spec, cast, options)
    if sum(np.size(cast[name]) for name in wrt) <= FULL_DIFFERENCES_UP_TO:
        return _Prepared(case, options, cast, wrt, value, reference_gradients(spec, cast, options, wrt))
    directions = random_directions(cast, wrt, DIRECTIONS, np.random.default_rng(seed))
    return _Prepared(case, options, cast, wrt, value, {}, directions,
                     reference_directional(spec, cast, options, directions))


def differentiable(spec: LossSpec, inputs: Mapping[str, Any]) -> list[str]:
    """The inputs a gradient is taken with respect to: floating, present, not ``constant``; none for a
    ``value_only`` spec."""
    if spec.value_only:
        return []
    return [a.name for a in spec.args if a.kind == FLOAT and not a.constant and inputs.get(a.name) is not None]


def public_function(name: str) -> Callable[..., Any]:
    """The public function of a loss (``recloss.<name>``) or of a metric (``recloss.metrics.<name>``)."""
    import recloss.metrics  # the public functions, built from the catalogue

    return getattr(recloss.metrics if name in METRICS else recloss, name)


def _run_row(spec: LossSpec, backend: str, module: Any, device: str, dtype: str,
             prepared: list[_Prepared]) -> Row:
    function = public_function(spec.name)
    row = Row(spec.name, backend, device, dtype,
              grad_error=None if backend == "numpy" or spec.value_only else 0.0)
    value_tol, grad_tol = TOLERANCES[dtype]
    row.value_tolerance, row.grad_tolerance = value_tol, grad_tol
    start = time.perf_counter()
    for item in prepared:
        row.cases += 1

        def call(**tensors: Any) -> Any:
            return function(**tensors, **item.options, backend=backend)

        try:
            if backend == "numpy":
                value, grads = np.asarray(call(**item.inputs), np.float64), {}
            else:
                value, grads = module.value_and_grad(call, item.inputs, item.wrt, device)
        except Exception as error:  # a crash is a failure of this row, reported with its case
            row.failures.append(f"{item.case.name}: {type(error).__name__}: {error}")
            continue
        # Half-precision products add a rounding error derived from the inputs (0 where none are used).
        value_bound, grad_bound = product_rounding_bounds(spec, module, dtype, device, item.inputs, item.options)
        value_error = relative_error(value, item.value)
        case_value_tol = value_tol + value_bound / _largest(item.value)
        if item.directions and grads:
            own = gradient_directions(grads)
            grad_error = directional_error(grads, item.directions + own, item.directional + reference_directional(
                spec, item.inputs, item.options, own))
        else:
            grad_error = max((relative_error(grads[n], item.grads[n]) for n in grads), default=0.0)
        case_grad_tol = grad_tol + grad_bound
        row.value_error = max(row.value_error, value_error)
        row.value_tolerance = max(row.value_tolerance, case_value_tol)
        if row.grad_error is not None:
            row.grad_error = max(row.grad_error, grad_error)
            row.grad_tolerance = max(row.grad_tolerance, case_grad_tol)
        if value_error > case_value_tol or grad_error > case_grad_tol:
            row.failures.append(f"{item.case.name}: value {value_error:.1e}, grad {grad_error:.1e}")
    row.seconds = time.perf_counter() - start
    return row


#: Unit roundoff of the half-precision dtypes (half the distance from 1 to the next number).
UNIT_ROUNDOFF = {"bfloat16": 2.0 ** -8, "float16": 2.0 ** -11}


def product_rounding_bounds(spec: LossSpec, module: Any, dtype: str, device: str, inputs: Mapping[str, Any],
                            options: Mapping[str, Any]) -> tuple[float, float]:
    """``(value, gradient)`` bounds on what half-precision products add to the error, derived from their
    rounding: the value's as an absolute error, the gradient's relative to each entry; ``(0, 0)`` where the
    products run in float32.

    With ``product_precision="input"`` the backend multiplies float16/bfloat16 embeddings in their precision;
    ``module.product_result_unit(dtype, device)`` is the rounding unit r of the product's result (0 where it
    is float32, as in JAX; bfloat16's u = 2**-8 where it is rounded to bfloat16, as torch on the CPU does) or
    None where that dtype is multiplied in float32. With ``(S, A)`` from the spec's ``product_scales``, every
    logit moves by at most ``e = r S`` (``+ 2 u A`` where recloss rounds normalised operands back to the input
    precision), so a row loss by at most ``2 e``, and a probability by a factor ``exp(4 e) - 1 ~ 4 e``, which
    moves each gradient entry by that fraction; the backward products round their operands and result: ``2 u``.
    """
    if (dtype not in UNIT_ROUNDOFF or spec.product_scales is None
            or options.get("product_precision", "input") != "input"):
        return 0.0, 0.0
    result_unit = getattr(module, "product_result_unit", lambda *_: None)(dtype, device)
    if result_unit is None:
        return 0.0, 0.0
    unit = UNIT_ROUNDOFF[dtype]
    largest, absolute = spec.product_scales(inputs, options)
    logit = result_unit * largest + (2 * unit * absolute if options.get("normalize") else 0.0)
    return 2 * logit, 4 * logit + 2 * unit


def _largest(x: Any) -> float:
    return max(float(np.max(np.abs(np.asarray(x, np.float64)), initial=0.0)), 1e-12)


__all__ = ["validate", "Report", "Row", "TOLERANCES", "DIMS", "make_inputs", "reference_gradients",
           "reference_directional", "relative_error", "differentiable", "public_function"]
