"""Keras 3 forms of the losses, on every Keras backend (TensorFlow, JAX, PyTorch).

* :class:`Retrieval`: the retrieval task layer (after TensorFlow Recommenders' ``tasks.Retrieval``) on
  :func:`recloss.sampled_softmax_loss`: the options go to the constructor, the query and candidate embeddings
  and the per-call tensors (sampled negatives, logQ, ids, row weights) to the call, which returns the loss;
  use it from ``Model.compute_loss`` or with ``add_loss``.
* One ``keras.losses.Loss`` per loss whose Keras form is ``(y_true=labels, y_pred=scores)``, generated from the
  catalogue: the ranking losses (``y_pred`` = ``scores`` ``[B, L]``, ``y_true`` = ``labels`` ``[B, L]`` or
  ``{"labels": labels, "mask": mask}``) and the losses over a ``[B, 1 + K]`` score block with the positive in
  column 0 (``SoftmaxLoss``, ``SigmoidCrossEntropyLoss``, ``BPRLoss``, ``HingeLoss``). Keras reduces them:
  the ``reduction`` strings and ``sample_weight`` of ``keras.losses.Loss`` apply as to any Keras loss.

Every class is registered for serialisation (``get_config`` / ``from_config``, package ``"recloss"``).
Importing this module imports Keras (and its backend); ``import recloss`` does not.
"""

from __future__ import annotations

import textwrap
from typing import Any, Callable, ClassVar, Mapping

import keras
from keras import ops

import recloss
from recloss import _native
from recloss._spec import LossSpec
from recloss.errors import ReclossError, ShapeError
from recloss.losses import CATALOGUE

_SERIAL_PACKAGE = "recloss"


# ----------------------------------------------------------------------------------------------------------
# The retrieval task


class Retrieval(keras.layers.Layer):
    """Retrieval task layer on ``recloss.sampled_softmax_loss``; the docstring is generated from its spec."""

    spec: ClassVar[LossSpec] = CATALOGUE[_native.RETRIEVAL_SPEC]

    def _setup(self, options: dict[str, Any], name: str | None, kwargs: dict[str, Any]) -> None:
        _native.check_options(self.spec, options)
        super().__init__(name=name, **kwargs)
        self.options = options

    def _loss(self, tensors: dict[str, Any]) -> Any:
        return recloss.sampled_softmax_loss(**tensors, **self.options)

    def compute_output_spec(self, query_emb: Any, *args: Any, **kwargs: Any) -> keras.KerasTensor:
        floats = [x for x in (query_emb, *args, *kwargs.values()) if x is not None and "float" in str(x.dtype)]
        dtype = "float64" if any("float64" in str(x.dtype) for x in floats) else "float32"
        shape = (query_emb.shape[0],) if self.options["reduction"] == "none" else ()
        return keras.KerasTensor(shape, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.options}


RETRIEVAL_EXAMPLE = """
    class TwoTower(keras.Model):
        def __init__(self):
            super().__init__()
            self.users, self.items = keras.layers.Embedding(1000, 32), keras.layers.Embedding(5000, 32)
            self.task = recloss.keras.Retrieval(temperature=0.05)

        def call(self, x):
            return self.users(x["user"]), self.items(x["item"])

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            query, item = y_pred
            return self.task(query, item, pos_ids=x["item"], pos_log_q=x["log_q"])
"""


def _retrieval_docstring(spec: LossSpec) -> str:
    """The docstring of :class:`Retrieval`, from the spec of ``sampled_softmax_loss``."""
    lines = ["Retrieval task: in-batch and sampled softmax with logQ correction, accidental-hit removal and hard "
             "negatives, on ``recloss.sampled_softmax_loss`` (whose docstring has the math), after TensorFlow "
             "Recommenders' ``tasks.Retrieval``.", "",
             "The options go to the constructor; the query and candidate embeddings and the per-call tensors to "
             "the call, which returns the loss. Use it from ``Model.compute_loss`` or with ``add_loss``. Its "
             "``reduction`` is recloss's (``\"mean\"`` = ``sum_i w_i l_i / sum_i w_i``).", "", "Args:"]
    lines += [f"    {o.name}: default ``{o.default!r}``. {o.doc}" for o in spec.options]
    lines += ["    name: the layer's name.", "    **kwargs: other arguments of ``keras.layers.Layer`` (``dtype``, ...).",
              "", "Call:", "    ``task(query_emb, pos_emb, neg_emb=None, *, pos_log_q=None, ...)``", ""]
    lines += [f"    - ``{a.name}``: ``{a.shape_text}`` {a.kind}{'' if a.required else ', optional'}. {a.doc}"
              for a in spec.args]
    lines += [f"    - returns: {spec.returns}", "", "Example:", "    ```python"]
    lines += [f"    {line}" if line else "" for line in textwrap.dedent(RETRIEVAL_EXAMPLE).strip("\n").splitlines()]
    lines += ["    ```"]
    return "\n".join(lines)


def _retrieval_methods(spec: LossSpec) -> None:
    options = "{" + ", ".join(f"{o.name!r}: {o.name}" for o in spec.options) + "}"
    Retrieval.__init__ = _native.define(  # type: ignore[method-assign]
        "__init__", _native.retrieval_init_params(spec), f"self._setup({options}, name, kwargs)", {},
        qualname="Retrieval.__init__")
    params = _native.retrieval_call_params(spec)
    tensors = "{" + ", ".join(f"{p.name!r}: {p.name}" for p in params) + "}"
    Retrieval.call = _native.define("call", params, f"return self._loss({tensors})", {},  # type: ignore[method-assign]
                                    qualname="Retrieval.call")


_retrieval_methods(Retrieval.spec)
Retrieval.__doc__ = _retrieval_docstring(Retrieval.spec)
keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE, name="Retrieval")(Retrieval)


# ----------------------------------------------------------------------------------------------------------
# Losses of the form (y_true=labels, y_pred=scores)


class ReclossLoss(keras.losses.Loss):
    """Base class of the generated Keras losses: splits ``y_true``, calls the loss per row, lets Keras reduce."""

    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]
    form: ClassVar[str]

    def _setup(self, options: dict[str, Any], reduction: str | None, name: str | None, dtype: Any) -> None:
        _native.check_options(self.spec, options)
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        self.options = options

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels, mask = self._split(y_true)
        if tuple(labels.shape) != tuple(y_pred.shape) and None not in (*labels.shape, *y_pred.shape):
            raise ShapeError(f"{type(self).__name__}: `y_true` (labels) must have the shape of `y_pred` "
                             f"{_y_pred_shape(self.form)}; got labels {tuple(labels.shape)} and y_pred "
                             f"{tuple(y_pred.shape)}")
        if _native.keras_mask_name(self.spec) is not None:
            # As in keras-rs and TF-Ranking, an entry labelled < 0 is padding: `compile(loss=...)` pairs a
            # dict `y` with a single output and refuses it, so the labels carry the mask there.
            valid = ops.greater_equal(labels, 0)
            mask = valid if mask is None else ops.logical_and(ops.cast(mask, "bool"), valid)
            labels = ops.where(valid, labels, ops.zeros_like(labels))
        function = type(self).function
        if self.form == "ranking":
            tensors = {"scores": y_pred, "labels": labels}
            if mask is not None:
                tensors["mask"] = mask
            return function(**tensors, reduction="none", **self.options)
        tensors = {"pos_logit": y_pred[:, 0], "neg_logit": y_pred[:, 1:]}
        if mask is not None:
            tensors["neg_mask"] = mask[:, 1:]
        rows = function(**tensors, reduction="none", **self.options)
        return rows if mask is None else ops.where(mask[:, 0], rows, ops.zeros_like(rows))

    def _split(self, y_true: Any) -> tuple[Any, Any]:
        if not isinstance(y_true, Mapping):
            return y_true, None
        unknown = sorted(set(y_true) - {"labels", "mask"})
        if "labels" not in y_true or unknown:
            raise ReclossError(f"{type(self).__name__}: `y_true` must be the labels or a dict with the key "
                               f"'labels' and optionally 'mask'; got a dict with keys {sorted(y_true)}")
        mask = y_true.get("mask")
        if mask is not None and _native.keras_mask_name(self.spec) is None:
            raise ReclossError(f"{type(self).__name__}: `y_true` has a 'mask', but {self.spec.name} cannot "
                               "remove single candidates (it has no `neg_mask`); drop the mask or use "
                               "`sample_weight` to remove whole rows")
        return y_true["labels"], mask

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dtype": self.dtype, **self.options}


def _y_pred_shape(form: str) -> str:
    return "[B, L]" if form == "ranking" else "[B, 1 + K] (the positive in column 0)"


def _loss_docstring(spec: LossSpec, form: str) -> str:
    masked = _native.keras_mask_name(spec) is not None
    if form == "ranking":
        shapes = ["y_pred: the scores ``[B, L]``.",
                  "y_true: the labels ``[B, L]``" + (", or ``{\"labels\": labels, \"mask\": mask}`` with ``mask`` "
                                                     "``[B, L]`` (False removes an entry); an entry labelled < 0 "
                                                     "is padding and removed too (keras-rs' convention)."
                                                     if masked else ".")]
    else:
        shapes = ["y_pred: the score block ``[B, 1 + K]``: column 0 is each row's positive, columns 1..K its "
                  "negatives.",
                  "y_true: labels of the block's shape, 1 in column 0 and 0 elsewhere (as keras-rs' "
                  "``HardNegativeMining`` returns them)"]
        if masked:
            shapes[1] += (", or ``{\"labels\": labels, \"mask\": mask}`` with ``mask`` ``[B, 1 + K]``. A "
                          "negative labelled < 0 (or masked) is padding and removed; a row whose column 0 is "
                          "labelled < 0 (or masked) is padding and its loss is 0.")
        else:
            shapes[1] += f"; only their shape is read ({spec.name} has no mask: every column 1..K is a negative)."
    lines = [spec.summary, "", f"The ``keras.losses.Loss`` form of ``recloss.{spec.name}`` (its docstring "
             "has the math and the options).", "", "Math:", f"    {spec.math}", "", "Args:"]
    lines += [f"    {o.name}: default ``{o.default!r}``. {o.doc}" for o in spec.options if o.name != "reduction"]
    lines += ['    reduction: as every Keras loss: "sum_over_batch_size" (default; = "mean"), "sum", '
              '"mean_with_sample_weight" or "none"/None.', "    name: as every Keras loss.",
              "    dtype: as every Keras loss.", "", "Call:", "    ``loss(y_true, y_pred, sample_weight=None)``", ""]
    lines += [f"    - {line}" for line in shapes]
    lines += ["    - sample_weight: row weights ``[B]``, applied by Keras.", "",
              "With ``compile(loss=...)`` pass the labels as ``y`` (Keras 3 refuses a dict ``y`` for a single "
              "output); the dict form is for calls of your own, e.g. in ``Model.compute_loss``."]
    return "\n".join(lines)


def loss_class(spec: LossSpec, function: Callable[..., Any]) -> type[ReclossLoss]:
    """The ``keras.losses.Loss`` class of ``spec`` (which must have a Keras form), computing the per-row
    losses with ``function`` (the public loss function), registered for serialisation."""
    form = _native.keras_form(spec)
    if form is None:
        raise ValueError(f"{spec.name} has no (y_true=labels, y_pred=scores) form")
    name = _native.class_name(spec.name)
    options = "{" + ", ".join(f"{o.name!r}: {o.name}" for o in spec.options if o.name != "reduction") + "}"
    init = _native.define("__init__", _native.keras_loss_init_params(spec),
                          f"self._setup({options}, reduction, name, dtype)", {}, qualname=f"{name}.__init__")
    namespace = {"__init__": init, "spec": spec, "function": staticmethod(function), "form": form,
                 "__doc__": _loss_docstring(spec, form), "__module__": __name__, "__qualname__": name}
    cls = type(name, (ReclossLoss,), namespace)
    return keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE, name=name)(cls)


_LOSSES = {spec.name: loss_class(spec, getattr(recloss, spec.name))
           for spec in CATALOGUE.values() if _native.keras_form(spec) is not None}
globals().update({cls.__name__: cls for cls in _LOSSES.values()})

__all__ = ["Retrieval", "ReclossLoss", "loss_class", *sorted(cls.__name__ for cls in _LOSSES.values())]

# The streaming frequency estimator and the negative queue (state in variables; not generated from the catalogue).
from recloss._keras_sampling import FrequencyEstimator, NegativeQueue  # noqa: E402

__all__ += ["FrequencyEstimator", "NegativeQueue"]
