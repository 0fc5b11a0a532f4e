"""Cross-framework validation: run losses on several backends and devices and compare with the reference.

For each loss, each of its spec's cases (or inputs you give), each backend, device and dtype, the loss value
and its gradient with respect to every floating input are compared with the float64 NumPy reference
evaluated on the same (dtype-rounded) inputs. Reference gradients are central finite differences of the
reference in float64. The error reported is the norm-wise relative error ``max|x - ref| / max|ref|``.
Inputs a spec declares ``constant`` (ranking labels) are not differentiated, and ``value_only`` specs (the
metrics) are compared by value only.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from recloss._dispatch import available_backends, canonical_name, load_backend
from recloss._spec import FLOAT, Case, LossSpec
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
            value_tol, grad_tol = TOLERANCES[row.dtype]
            grad = "n/a (value only)" if row.grad_error is None else f"{row.grad_error:.1e}"
            result = "pass" if row.passed else "FAIL: " + "; ".join(row.failures)
            lines.append(f"| {row.loss} | {row.backend} | {row.device} | {row.dtype} | {row.value_error:.1e} | "
                         f"{grad} | {value_tol:.0e}, {grad_tol:.0e} | {result} |")
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


def relative_error(actual: np.ndarray, expected: np.ndarray) -> float:
    """``max|actual - expected| / max|expected|`` (NaN or a shape mismatch count as infinite)."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    if actual.shape != expected.shape or not np.all(np.isfinite(actual)):
        return float("inf")
    scale = max(float(np.max(np.abs(expected), initial=0.0)), 1e-12)
    return float(np.max(np.abs(actual - expected), initial=0.0)) / scale


# ----------------------------------------------------------------------------------------------------------
# The engine


def validate(losses: str | Iterable[str] | None = None, *, backends: Iterable[str] | None = None,
             devices: Iterable[str] | None = None, dtypes: Iterable[str] = ("float32", "float64"),
             inputs: Mapping[str, Any] | None = None, options: Mapping[str, Any] | None = None,
             seed: int = 0, progress: Callable[[str], None] | None = None) -> Report:
    """Run losses on several backends/devices/dtypes and compare value and gradients with the reference.

    Args:
        losses: a loss name or names (default: the whole catalogue).
        backends: backend names (default: every installed one, ``"numpy"`` included).
        devices: device kinds to keep, e.g. ``["cpu"]`` or ``["gpu"]`` (``"cuda"`` and ``"gpu"`` are the same).
        dtypes: floating dtypes to run in: ``"float64"``, ``"float32"``, ``"bfloat16"``, ``"float16"``.
        inputs: your own NumPy inputs for one loss (its tensor arguments by name); default: the spec's cases
            with seeded random inputs.
        options: options for your inputs (``temperature``, ``reduction``, ...).
        seed: seed of the generated inputs.
        progress: called with a short label before each loss x backend x device x dtype.

    Returns:
        A :class:`Report`; ``report.passed`` is True when every row is within :data:`TOLERANCES`.
    """
    names = list(SPECS) if losses is None else [losses] if isinstance(losses, str) else list(losses)
    for name in names:
        if name not in SPECS:
            raise ValueError(f"unknown loss {name!r}; expected one of {', '.join(SPECS)}")
    if inputs is not None and len(names) != 1:
        raise ValueError("inputs= needs exactly one loss name")
    wanted = available_backends() if backends is None else [canonical_name(b) for b in backends]
    device_kinds = None if devices is None else {"gpu" if d in ("cuda", "gpu") else d for d in devices}

    rows: list[Row] = []
    skipped: list[str] = []
    modules = {}
    for backend in wanted:
        try:
            modules[backend] = load_backend(backend)
        except ImportError as error:
            skipped.append(f"{backend}: {error}")
    for name in names:
        spec = SPECS[name]
        cases = _cases(spec, inputs, options, seed)
        for dtype in dtypes:
            prepared = [_prepare(spec, case, case_inputs, dtype) for case, case_inputs in cases]
            for backend, module in modules.items():
                for device in module.devices():
                    kind = "gpu" if device in ("cuda", "gpu") else device
                    if device_kinds is not None and kind not in device_kinds:
                        continue
                    if progress is not None:
                        progress(f"{name} {backend} {device} {dtype}")
                    rows.append(_run_row(spec, backend, module, device, dtype, prepared))
    return Report(rows=rows, skipped=skipped)


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
    grads: dict[str, np.ndarray]


def _prepare(spec: LossSpec, case: Case, inputs: Mapping[str, Any], dtype: str) -> _Prepared:
    options = {o.name: o.default for o in spec.options} | dict(case.options)
    cast = cast_inputs(inputs, spec, dtype)
    wrt = differentiable(spec, cast)
    return _Prepared(case, options, cast, wrt, reference_value(spec, cast, options),
                     reference_gradients(spec, cast, options, wrt))


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
        value_error = relative_error(value, item.value)
        grad_error = max((relative_error(grads[n], item.grads[n]) for n in grads), default=0.0)
        row.value_error = max(row.value_error, value_error)
        if row.grad_error is not None:
            row.grad_error = max(row.grad_error, grad_error)
        if value_error > value_tol or grad_error > grad_tol:
            row.failures.append(f"{item.case.name}: value {value_error:.1e}, grad {grad_error:.1e}")
    row.seconds = time.perf_counter() - start
    return row


__all__ = ["validate", "Report", "Row", "TOLERANCES", "DIMS", "make_inputs", "reference_gradients",
           "relative_error", "differentiable", "public_function"]
