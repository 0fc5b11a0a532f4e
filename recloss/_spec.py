"""The declaration language of the loss catalogue: tensor arguments, options and loss specs.

A :class:`LossSpec` is declared once per loss in :mod:`recloss.losses`. That one declaration drives the
public function's signature and docstring (:mod:`recloss._api`), input validation
(:mod:`recloss._validate`), the float64 reference it is compared with, the inputs of
``recloss validate`` and the parity tests (:mod:`recloss.parity`), and the benchmarks.

Shapes are written with named dimensions, e.g. ``"[B, K, D]"``. The same name in two arguments means the
same size; an argument may accept several shapes (``"[N, D]"`` or ``"[B, K, D]"``), tried in order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

FLOAT = "float"
INT = "int"
BOOL = "bool"

FLOAT_DTYPES = ("float16", "bfloat16", "float32", "float64")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")

Shape = tuple[str, ...]

_SHAPE_RE = re.compile(r"^\[\s*([A-Za-z_]\w*(\s*,\s*[A-Za-z_]\w*)*)?\s*\]$")


def parse_shape(text: str) -> Shape:
    """``"[B, K, D]"`` -> ``("B", "K", "D")``; ``"[]"`` -> ``()``."""
    match = _SHAPE_RE.match(text.strip())
    if not match:
        raise ValueError(f"bad shape declaration {text!r}: expected e.g. '[B, D]'")
    inner = match.group(1)
    return tuple(part.strip() for part in inner.split(",")) if inner else ()


def format_shape(shape: Shape) -> str:
    return "[" + ", ".join(shape) + "]"


def kind_of_dtype(name: str) -> str:
    """The dtype class of a normalised dtype name: ``"float"``, ``"int"``, ``"bool"``, or the name itself."""
    if name in FLOAT_DTYPES:
        return FLOAT
    if name in INT_DTYPES:
        return INT
    if name == "bool":
        return BOOL
    return name


def common_int_dtype(a: str, b: str, bits: int = 64) -> str | None:
    """The narrowest integer dtype (at most ``bits`` wide) that holds every value of dtypes ``a`` and ``b``,
    or None where none does (``uint64`` with a signed dtype; ``uint32`` with a signed one at 32 bits).

    ``common_int_dtype("int64", "uint32") == "int64"``; ``common_int_dtype("int8", "uint8") == "int16"``.
    """
    def split(name: str) -> tuple[bool, int]:
        return name.startswith("int"), int(name.removeprefix("u").removeprefix("int"))
    (signed_a, width_a), (signed_b, width_b) = split(a), split(b)
    if signed_a == signed_b:
        width = max(width_a, width_b)
        return (f"int{width}" if signed_a else f"uint{width}") if width <= bits else None
    signed_width, unsigned_width = (width_a, width_b) if signed_a else (width_b, width_a)
    width = max(signed_width, 2 * unsigned_width)   # a signed dtype holds an unsigned one of half its width
    return f"int{width}" if width <= bits else None


@dataclass(frozen=True)
class Arg:
    """A tensor argument.

    ``sample`` says how ``recloss validate`` draws it: ``"normal"``, ``"ids"`` (small integers, so that
    duplicates occur), ``"mask"``, ``"weight"`` (non-negative, some zero), ``"log_prob"``, ``"graded"``
    (relevance grades 0 to 3 with ties, one list with nothing relevant), ``"probability"`` (in [0, 1]) or
    ``"scores"`` (distinct within each list in every precision, so that ranks are well defined).
    ``nonnegative`` asks the validator to check the values where they are concrete (eager calls), and
    ``at_most`` to also check an upper bound; with ``masked_by`` (the name of a boolean argument) entries
    where that mask is False are not checked. ``constant`` marks an input the loss treats as a constant (no
    gradient flows to it, e.g. ranking labels): the parity engine does not differentiate with respect to it.
    """

    name: str
    shapes: tuple[Shape, ...]
    kind: str = FLOAT
    required: bool = True
    doc: str = ""
    sample: str = "normal"
    nonnegative: bool = False
    at_most: float | None = None
    masked_by: str | None = None
    constant: bool = False

    @property
    def shape_text(self) -> str:
        return " or ".join(format_shape(s) for s in self.shapes)


def tensor(name: str, *shapes: str, kind: str = FLOAT, required: bool = True, doc: str = "",
           sample: str | None = None, nonnegative: bool = False, at_most: float | None = None,
           masked_by: str | None = None, constant: bool = False) -> Arg:
    """Declare a tensor argument with one or more accepted shapes, e.g. ``tensor("neg", "[N, D]", "[B, K, D]")``."""
    default_sample = {FLOAT: "normal", INT: "ids", BOOL: "mask"}[kind]
    return Arg(name=name, shapes=tuple(parse_shape(s) for s in shapes), kind=kind, required=required,
               doc=doc, sample=sample or default_sample, nonnegative=nonnegative, at_most=at_most,
               masked_by=masked_by, constant=constant)


class _Required:
    """The default of an option the caller must give (a keyword-only parameter without a default)."""

    def __repr__(self) -> str:
        return "REQUIRED"


#: ``Option(default=REQUIRED)``: the option has no default; every call (and every spec case) must give it.
REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Option:
    """A non-tensor option.

    ``rule`` is one of ``"positive"`` (finite and > 0), ``"finite"``, ``"nonnegative"`` (finite and >= 0),
    ``"fraction"`` (finite, in [0, 1)), ``"unit"`` (finite, in [0, 1]), ``"choice"`` (one of ``choices``, which
    may include None), ``"bool"``, ``"optional_bool"`` (True, False or None), ``"optional_count"`` (None or an
    int >= 1), ``"item_count"`` (an int >= 2), ``"gather"`` (None, a bool, a mesh axis name or names, or a
    ``torch.distributed.ProcessGroup``). ``tensor_ok`` lets a 0-d floating tensor stand for a number (a learnable
    temperature). ``default=REQUIRED``: the caller must give the option (a keyword-only parameter without a
    default).
    """

    name: str
    default: Any
    rule: str
    choices: tuple[Any, ...] = ()
    doc: str = ""
    tensor_ok: bool = False
    annotation: str = "float"

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


@dataclass(frozen=True)
class Case:
    """One input configuration that ``recloss validate`` and the parity tests run.

    ``forms`` maps an argument to the index of the shape it takes (optional arguments not named are
    omitted; required ones default to their first shape). ``options`` overrides option defaults.
    """

    name: str
    forms: Mapping[str, int] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Bound:
    """What the validator learnt about one call, handed to cross-argument rules and to the kernel."""

    spec: "LossSpec"
    forms: Mapping[str, int]
    dims: Mapping[str, Any]
    present: frozenset[str]
    options: Mapping[str, Any]
    dtype: str
    dtypes: Mapping[str, str] = field(default_factory=dict)
    #: Dimensions that are unknown at trace time somewhere: ``(dim, ((argument, axis), ...))`` for every
    #: dimension named by two or more arguments, to be checked when the sizes are known (see
    #: :func:`recloss._validate.deferred_dimensions`).
    deferred: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()

    @property
    def signature(self) -> tuple:
        """Everything a kernel's Python logic may depend on (forms, present arguments, dtypes, sizes), as a
        hashable key: backends that compile a kernel once per call signature key their cache by it."""
        return (self.spec.name, tuple(sorted(self.forms.items())), self.present, self.dtype,
                tuple(sorted(self.dtypes.items())), tuple(sorted(self.dims.items())), self.deferred)

    def form(self, name: str) -> Shape | None:
        """The shape an argument matched, e.g. ``("N", "D")``, or None if it was not given."""
        if name not in self.forms:
            return None
        return self.spec.arg(name).shapes[self.forms[name]]


@dataclass(frozen=True)
class LossSpec:
    """The single declaration of one loss (or of one metric: ``value_only=True``, no gradient is defined and
    the parity engine compares values only)."""

    name: str
    summary: str
    math: str
    args: tuple[Arg, ...]
    options: tuple[Option, ...]
    positional: tuple[str, ...]
    returns: str
    cases: tuple[Case, ...]
    example: str = ""
    references: tuple[str, ...] = ()
    notes: str = ""
    rules: Callable[[Bound], Bound | None] | None = None   # cross-argument checks; may return a new Bound
    keywords: tuple[str, ...] = ()
    #: For losses with embedding matrix products: ``(inputs, options) -> (S, A)``, the largest |logit| and the
    #: largest sum of |products| behind one, which rounding the products to half precision scales with
    #: (half-precision tolerances are derived from them; see ``recloss.losses.softmax.product_scales``).
    product_scales: Callable[[Mapping[str, Any], Mapping[str, Any]], tuple[float, float]] | None = None
    value_only: bool = False

    @property
    def keyword_order(self) -> tuple[str, ...]:
        """Keyword-only parameters in signature order: ``keywords`` if declared, else options, then
        optional tensors, then ``sample_weight`` and ``reduction``."""
        if self.keywords:
            return self.keywords
        rest = [n for n in (*[o.name for o in self.options], *self.tensor_names) if n not in self.positional]
        last = [n for n in ("sample_weight", "reduction") if n in rest]
        return tuple(n for n in rest if n not in last) + tuple(last)

    def arg(self, name: str) -> Arg:
        for a in self.args:
            if a.name == name:
                return a
        raise KeyError(name)

    def option(self, name: str) -> Option:
        for o in self.options:
            if o.name == name:
                return o
        raise KeyError(name)

    @property
    def tensor_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.args)
