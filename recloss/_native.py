"""The framework-native views of the catalogue, described without importing any framework.

Each spec is also a ``torch.nn.Module`` (:mod:`recloss.torch`), and, where its Keras form is
``(y_true=labels, y_pred=scores)``, a ``keras.losses.Loss`` (:mod:`recloss.keras`); ``sampled_softmax_loss``
is also the Keras ``Retrieval`` task layer. This module says what those classes are called and which
parameters their constructors and calls take, so that the classes and their type stubs (:mod:`recloss._stubs`)
are generated from the same description and a new loss, or a new option such as ``gather``, reaches them all.

Keras forms of a spec:

* ``"ranking"``: tensors ``scores`` ``[B, L]``, ``labels`` ``[B, L]``, optional ``mask`` ``[B, L]`` (bool) and
  ``sample_weight`` ``[B]``: ``y_pred`` is ``scores``, ``y_true`` is ``labels`` or ``{"labels", "mask"}``.
* ``"block"``: ``pos_logit`` ``[B]`` and ``neg_logit`` ``[B, K]`` (optional ``neg_mask`` ``[B, K]``):
  ``y_pred`` is the ``[B, 1 + K]`` score block with the positive in column 0.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any, Callable

from recloss._spec import BOOL, LossSpec, Option
from recloss._validate import check_option

_REQUIRED = object()

#: Words written in capitals in class names: ``bpr_loss`` -> ``BPRLoss``, ``info_nce_loss`` -> ``InfoNCELoss``.
ACRONYMS = {"bpr": "BPR", "nce": "NCE", "ndcg": "NDCG", "mrr": "MRR", "ap": "AP", "map": "MAP"}

KERAS_REDUCTIONS = ("sum_over_batch_size", "sum", "mean", "mean_with_sample_weight", "none")

RETRIEVAL_SPEC = "sampled_softmax_loss"


def class_name(spec_name: str) -> str:
    """``"sampled_softmax_loss"`` -> ``"SampledSoftmaxLoss"``."""
    return "".join(ACRONYMS.get(part, part.capitalize()) for part in spec_name.split("_"))


@dataclass(frozen=True)
class Param:
    """One parameter of a generated constructor or call: its name, default and annotation (stub syntax)."""

    name: str
    annotation: str
    default: Any = _REQUIRED
    keyword_only: bool = True

    @property
    def required(self) -> bool:
        return self.default is _REQUIRED


def signature_text(params: list[Param], annotated: bool, first: str = "self", separator: str = ", ") -> str:
    """``"self, a, b=None, *, c=1.0"``, or with ``: type`` annotations for stubs when ``annotated`` (where a
    default has no literal form, a stub shows ``...`` and :func:`define` refers to it by name)."""
    parts = [first] if first else []
    star = False
    for param in params:
        if param.keyword_only and not star and not param.name.startswith("**"):
            parts.append("*")
            star = True
        text = param.name + (f": {param.annotation}" if annotated else "")
        if not param.required:
            default = _literal(param.default)
            if annotated:
                text += " = " + (default if default is not None else "...")
            else:
                text += "=" + (default if default is not None else f"_default_{param.name}")
        parts.append(text)
    return separator.join(parts)


def _literal(value: Any) -> str | None:
    """``repr(value)`` if it reads back as ``value`` (None, numbers, strings, tuples of them), else None."""
    text = repr(value)
    try:
        return text if ast.literal_eval(text) == value and type(ast.literal_eval(text)) is type(value) else None
    except (ValueError, SyntaxError):
        return None


def define(name: str, params: list[Param], body: str, namespace: dict[str, Any], first: str = "self",
           qualname: str = "") -> Callable[..., Any]:
    """A function with a real signature (``inspect.signature`` and ``help`` show it), built like
    :func:`recloss._api.build`. ``body`` sees the parameters and ``namespace``."""
    source = f"def {name}({signature_text(params, annotated=False, first=first)}):\n    {body}\n"
    scope = {**namespace, **{f"_default_{p.name}": p.default for p in params if not p.required}}
    exec(source, scope, scope)  # noqa: S102 - generated from the spec
    function = scope[name]
    function.__qualname__ = qualname or name
    # The stubs' annotations, as strings (``help`` and documentation tools show them; nothing evaluates them).
    function.__annotations__ = {p.name.lstrip("*"): p.annotation for p in params}
    return function


def option_annotation(option: Option, tensor_ok: bool = True) -> str:
    """The type of an option: ``Literal[...]`` of its choices, else its declared annotation (``float``,
    ``int | None``, ...), with ``| TensorLike`` where a 0-d tensor may stand for it (unless ``tensor_ok`` is
    False: a Keras config holds numbers)."""
    if option.rule == "choice":
        text = "Literal[" + ", ".join(repr(c) for c in option.choices) + "]"
    else:
        text = option.annotation
    return text + (" | TensorLike" if option.tensor_ok and tensor_ok else "")


def option_params(spec: LossSpec, skip: tuple[str, ...] = (), tensor_ok: bool = True) -> list[Param]:
    return [Param(o.name, option_annotation(o, tensor_ok), o.default) for o in spec.options if o.name not in skip]


def tensor_params(spec: LossSpec, tensor_type: str) -> list[Param]:
    """The spec's tensors as call parameters: its positional tensors first, then the rest keyword-only, in
    the order of the public function."""
    positional = [n for n in spec.positional if n in spec.tensor_names]
    rest = [n for n in spec.keyword_order if n in spec.tensor_names and n not in positional]
    params = []
    for name in positional + rest:
        arg = spec.arg(name)
        annotation = tensor_type if arg.required else f"{tensor_type} | None"
        params.append(Param(name, annotation, _REQUIRED if arg.required else None,
                            keyword_only=name not in positional))
    return params


def check_options(spec: LossSpec, options: dict[str, Any]) -> None:
    """The public function's checks of option values, run at construction so a bad option fails early."""
    for option in spec.options:
        if option.name in options:
            check_option(spec.name, option, options[option.name], lambda _: None)


def has_temperature(spec: LossSpec) -> bool:
    return any(o.name == "temperature" for o in spec.options)


# ----------------------------------------------------------------------------------------------------------
# torch


TORCH_LEARN_TEMPERATURE = Param("learn_temperature", "bool", False)


def torch_init_params(spec: LossSpec) -> list[Param]:
    """Every option as a keyword-only constructor argument, plus ``learn_temperature`` for losses with a
    temperature."""
    return option_params(spec) + ([TORCH_LEARN_TEMPERATURE] if has_temperature(spec) else [])


def torch_forward_params(spec: LossSpec) -> list[Param]:
    return tensor_params(spec, "torch.Tensor")


# ----------------------------------------------------------------------------------------------------------
# Keras


def _shapes(spec: LossSpec, name: str) -> tuple[tuple[str, ...], ...]:
    return spec.arg(name).shapes if name in spec.tensor_names else ()


def keras_form(spec: LossSpec) -> str | None:
    """``"ranking"``, ``"block"`` or None (no ``(y_true, y_pred)`` form)."""
    names = set(spec.tensor_names)
    required = {a.name for a in spec.args if a.required}
    optional_ok = all(_shapes(spec, n) == (("B",),) for n in names & {"sample_weight"})
    if ({"scores", "labels"} == required and names <= {"scores", "labels", "mask", "sample_weight"}
            and ("B", "L") in _shapes(spec, "scores") and ("B", "L") in _shapes(spec, "labels")
            and ("mask" not in names or (("B", "L") in _shapes(spec, "mask") and spec.arg("mask").kind == BOOL))
            and optional_ok):
        return "ranking"
    if ({"pos_logit", "neg_logit"} == required
            and names <= {"pos_logit", "neg_logit", "neg_mask", "pos_log_q", "neg_log_q", "sample_weight"}
            and _shapes(spec, "pos_logit") == (("B",),) and ("B", "K") in _shapes(spec, "neg_logit")
            and ("neg_mask" not in names or spec.arg("neg_mask").kind == BOOL) and optional_ok):
        return "block"
    return None


def keras_mask_name(spec: LossSpec) -> str | None:
    """The spec's tensor that the ``mask`` of ``y_true`` feeds (``mask``, ``neg_mask``), if any."""
    form = keras_form(spec)
    name = {"ranking": "mask", "block": "neg_mask"}.get(form or "")
    return name if name in spec.tensor_names else None


def keras_loss_init_params(spec: LossSpec) -> list[Param]:
    """The options but ``reduction`` (Keras reduces), then Keras' ``reduction``, ``name`` and ``dtype``."""
    reductions = "Literal[" + ", ".join(repr(r) for r in KERAS_REDUCTIONS) + "] | None"
    return option_params(spec, skip=("reduction",), tensor_ok=False) + [
        Param("reduction", reductions, "sum_over_batch_size"), Param("name", "str | None", None),
        Param("dtype", "Any", None)]


def retrieval_init_params(spec: LossSpec) -> list[Param]:
    return option_params(spec, tensor_ok=False) + [Param("name", "str | None", None), Param("**kwargs", "Any")]


def retrieval_call_params(spec: LossSpec) -> list[Param]:
    return tensor_params(spec, "Any")
