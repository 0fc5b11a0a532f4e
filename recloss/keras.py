"""Keras 3 forms of the losses, on every Keras backend (TensorFlow, JAX, PyTorch).

* :class:`Retrieval`: the retrieval task layer (after TensorFlow Recommenders' ``tasks.Retrieval``) on
  :func:`recloss.sampled_softmax_loss`: the options go to the constructor, the query and candidate embeddings
  and the per-call tensors (sampled negatives, logQ, ids, row weights) to the call, which returns the loss;
  use it from ``Model.compute_loss`` or with ``add_loss``.
* One ``keras.losses.Loss`` per loss whose Keras form is ``(y_true=labels, y_pred=scores)``, generated from the
  catalogue: the ranking losses and ``MultiPositiveSoftmaxLoss`` (``y_pred`` = the scores or logits ``[B, L]``,
  ``y_true`` = ``labels`` ``[B, L]`` or ``{"labels": labels, "mask": mask}``) and the losses over a ``[B, 1 + K]``
  score block with the positive in column 0 (``SoftmaxLoss``, ``SigmoidCrossEntropyLoss``, ``BPRLoss``,
  ``HingeLoss``, ``GBCELoss``). Keras reduces them: the ``reduction`` strings and ``sample_weight`` of
  ``keras.losses.Loss`` apply as to any Keras loss.
* :mod:`recloss.keras.metrics`: the retrieval metrics as ``keras.metrics.Metric`` objects that accumulate over
  batches (and replicas), for ``model.compile(metrics=...)``.

Every class is registered for serialisation (``get_config`` / ``from_config``, package ``"recloss"``).
Importing this module imports Keras (and its backend); ``import recloss`` does not.
"""

from __future__ import annotations

import textwrap
from typing import Any, Callable, ClassVar, Mapping

import keras
import numpy as np
from keras import ops

import recloss
from recloss import _native
from recloss._dispatch import framework_of, load_backend
from recloss._api import option_default_text
from recloss._spec import LossSpec
from recloss.errors import OptionError, ReclossError, ShapeError
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
        # Keras would cast every floating input to the compute dtype (bfloat16 under mixed_bfloat16), logQ and
        # weights included: the call converts its inputs itself (_converted), the embeddings as Keras does.
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    def _loss(self, tensors: dict[str, Any]) -> Any:
        tensors = self._converted(tensors)
        for alias, name in _native.RETRIEVAL_ALIASES.items():
            value = tensors.pop(alias)
            if value is None:
                continue
            if tensors[name] is not None:
                raise ReclossError(f"{type(self).__name__}: pass `{alias}` or `{name}`, not both (they are two "
                                   f"names of one input)")
            tensors[name] = _log_probability(type(self).__name__, alias, value) if name == "pos_log_q" else value
        return recloss.sampled_softmax_loss(**tensors, **self.options)

    def _converted(self, tensors: dict[str, Any]) -> dict[str, Any]:
        """The call's inputs as tensors of the Keras backend: the embeddings cast as Keras casts any layer's
        inputs (to the compute dtype, where ``autocast``), the other floating tensors to at least float32."""
        return {name: None if x is None else
                self.dtype_policy.convert_input(x, self.autocast, self._target_dtype(name))
                for name, x in tensors.items()}

    def _target_dtype(self, name: str) -> str:
        if name.endswith("_emb"):
            return self.input_dtype
        return _at_least_float32(self.input_dtype)

    def compute_output_spec(self, query_emb: Any, *args: Any, **kwargs: Any) -> keras.KerasTensor:
        named = [("query_emb", query_emb), *zip(("pos_emb", "neg_emb"), args), *kwargs.items()]
        floats = [self._target_dtype(name) if self.autocast else keras.backend.standardize_dtype(x.dtype)
                  for name, x in named if x is not None and "float" in str(x.dtype)]
        dtype = "float64" if "float64" in floats else "float32"
        shape = (query_emb.shape[0],) if self.options["reduction"] == "none" else ()
        return keras.KerasTensor(shape, dtype=dtype)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.options}


def _at_least_float32(dtype: str) -> str:
    """``dtype``, or float32 where it is a half-precision dtype."""
    return "float32" if dtype in ("float16", "bfloat16") else dtype


def _log_probability(owner: str, name: str, probability: Any) -> Any:
    """``log p`` of a sampling probability (a tensor of at least float32), after checking, where its values are
    concrete, that they lie in (0, 1]."""
    values = _concrete(probability)
    if values is not None and values.size:
        bad = ~((values > 0) & (values <= 1))
        if bad.any():
            raise OptionError(f"{owner}: `{name}` must hold sampling probabilities in (0, 1]; got "
                              f"{float(values[bad][0])!r} (log Q values, e.g. the log of an expected count above "
                              "1, go to `pos_log_q`)")
    return ops.log(probability)


def _concrete(x: Any) -> Any:
    """The values of a backend tensor as float64 NumPy, or None where they are not known (while tracing)."""
    framework = framework_of(x)
    if framework is None:
        return None
    values = load_backend(framework).concrete(x)
    return None if values is None else np.asarray(values, dtype=np.float64)


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
    lines += ["    - ``candidate_sampling_probability``: ``[B]`` float, optional. The names of TensorFlow "
              "Recommenders and keras-rs: the sampling probability p of each positive, equal to ``pos_log_q = "
              "log p`` (the log taken here in at least float32). Values must lie in (0, 1], checked where they "
              "are concrete (TFRS and keras-rs clip p to [1e-6, 1] instead).",
              "    - ``candidate_ids``: ``[B]`` int, optional. Equal to ``pos_ids``. Passing both names of one "
              "input is an error.",
              f"    - returns: {spec.returns}", "",
              "Precision: the embeddings follow the layer's dtype policy as any Keras layer's inputs do (under "
              "``mixed_bfloat16`` they are cast to bfloat16); the other tensors (logQ, probabilities, weights) are "
              "never cast below float32, so a float32 ``pos_log_q`` or ``sample_weight`` reaches recloss unrounded.",
              "", "Example:", "    ```python"]
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
        # Keras converts y_true, y_pred and sample_weight to the loss's dtype and reduces in it: with a
        # half-precision dtype (dtype="mixed_bfloat16") labels and weights would be rounded and the rows summed
        # in bfloat16. recloss computes half-precision inputs in float32 and returns float32 anyway.
        self._requested_dtype = self._dtype
        self._dtype = _at_least_float32(self._dtype)

    def call(self, y_true: Any, y_pred: Any) -> Any:
        labels, mask = split_y_true(type(self).__name__, self.spec, y_true)
        check_labels_shape(type(self).__name__, labels, y_pred, _y_pred_shape(self.form))
        if _native.keras_mask_name(self.spec) is not None:
            labels, mask = padding_from_labels(labels, mask)
        function = type(self).function
        if self.form == "ranking":
            tensors = {_native.keras_scores_name(self.spec): y_pred, "labels": labels}
            if mask is not None:
                tensors["mask"] = mask
            return function(**tensors, reduction="none", **self.options)
        if mask is not None:
            # A padded row's scores (column 0 masked) are replaced before any arithmetic: a NaN there would
            # otherwise make every row NaN (a non-finite input poisons the whole loss, by design).
            y_pred = ops.where(mask[:, :1], y_pred, ops.zeros_like(y_pred))
        tensors = {"pos_logit": y_pred[:, 0], "neg_logit": y_pred[:, 1:]}
        if mask is not None:
            tensors["neg_mask"] = mask[:, 1:]
        rows = function(**tensors, reduction="none", **self.options)
        return rows if mask is None else ops.where(mask[:, 0], rows, ops.zeros_like(rows))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "dtype": self._requested_dtype, **self.options}


def split_y_true(owner: str, spec: LossSpec, y_true: Any) -> tuple[Any, Any]:
    """``(labels, mask or None)`` from ``y_true``: the labels, or ``{"labels": ..., "mask": ...}``."""
    if not isinstance(y_true, Mapping):
        return y_true, None
    unknown = sorted(set(y_true) - {"labels", "mask"})
    if "labels" not in y_true or unknown:
        raise ReclossError(f"{owner}: `y_true` must be the labels or a dict with the key 'labels' and optionally "
                           f"'mask'; got a dict with keys {sorted(y_true)}")
    mask = y_true.get("mask")
    if mask is not None and _native.keras_mask_name(spec) is None:
        raise ReclossError(f"{owner}: `y_true` has a 'mask', but {spec.name} cannot remove single candidates (it "
                           "has no `neg_mask`); drop the mask or use `sample_weight` to remove whole rows")
    return y_true["labels"], mask


def check_labels_shape(owner: str, labels: Any, y_pred: Any, expected: str) -> None:
    if tuple(labels.shape) != tuple(y_pred.shape) and None not in (*labels.shape, *y_pred.shape):
        raise ShapeError(f"{owner}: `y_true` (labels) must have the shape of `y_pred` {expected}; got labels "
                         f"{tuple(labels.shape)} and y_pred {tuple(y_pred.shape)}")


def padding_from_labels(labels: Any, mask: Any) -> tuple[Any, Any]:
    """As in keras-rs and TF-Ranking, an entry labelled < 0 is padding: ``compile(loss=...)`` pairs a dict ``y``
    with a single output and refuses it, so the labels carry the mask there. ``(labels with padding at 0,
    mask)``."""
    valid = ops.greater_equal(labels, 0)
    mask = valid if mask is None else ops.logical_and(ops.cast(mask, "bool"), valid)
    return ops.where(valid, labels, ops.zeros_like(labels)), mask


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
    lines += [f"    {o.name}: {option_default_text(o)}. {o.doc}" for o in spec.options if o.name != "reduction"]
    lines += ['    reduction: as every Keras loss: "sum_over_batch_size" (default; = "mean"), "sum", '
              '"mean_with_sample_weight" or "none"/None.', "    name: as every Keras loss.",
              "    dtype: as every Keras loss, except that a "
              "float16/bfloat16 dtype (e.g. \"mixed_bfloat16\") computes and returns float32: labels and weights are "
              "never rounded to half precision.", "", "Call:", "    ``loss(y_true, y_pred, sample_weight=None)``", ""]
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
    for alias in _native.aliases_of(name):   # models saved under an earlier name still load ...
        keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE, name=alias)(cls)
    # ... and are saved under the current one (registered last).
    return keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE, name=name)(cls)


_LOSSES = {spec.name: loss_class(spec, getattr(recloss, spec.name))
           for spec in CATALOGUE.values() if _native.keras_form(spec) is not None}
globals().update({cls.__name__: cls for cls in _LOSSES.values()})
globals().update({old: globals()[current] for old, current in _native.CLASS_ALIASES.items()})  # earlier names

__all__ = ["Retrieval", "ReclossLoss", "loss_class", "metrics", *sorted(cls.__name__ for cls in _LOSSES.values())]

# The streaming frequency estimator and the negative queue (state in variables; not generated from the catalogue).
from recloss._keras_sampling import FrequencyEstimator, NegativeQueue  # noqa: E402

__all__ += ["FrequencyEstimator", "NegativeQueue"]

from recloss import keras_metrics as metrics  # noqa: E402 - the metric objects (they use the helpers above)
