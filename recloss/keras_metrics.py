"""Keras 3 metric objects of the retrieval metrics, generated from the metric specs: ``recloss.keras.metrics``.

``NDCG``, ``MRR``, ``Recall``, ``Precision``, ``HitRate``, ``MAP`` and ``DCG``, each ``keras.metrics.Mean``
over lists (as keras-rs's ranking metrics are): ``update_state(y_true, y_pred, sample_weight=None)`` adds
``sum_i w_i m_i`` and ``sum_i w_i`` of the batch's lists, ``result()`` is their ratio (0 before any list), so the
value after many batches is the metric of the whole set, and Keras sums the two variables across replicas under
``tf.distribute``. ``y_pred`` is the scores ``[B, L]``; ``y_true`` the labels ``[B, L]`` (an entry labelled < 0 is
padding, keras-rs' convention) or ``{"labels": labels, "mask": mask}``; ``sample_weight`` weighs lists ``[B]``.
The constructor takes the metric's cutoff ``k`` and Keras' ``name`` (default ``"ndcg"``, ``"ndcg_at_10"`` with
``k=10``, ...) and ``dtype``. Usable in ``model.compile(metrics=[recloss.keras.metrics.NDCG(k=10)])`` on every
Keras backend; every class is registered for serialisation.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import keras

import recloss.metrics
from recloss import _native
from recloss._api import option_default_text
from recloss._spec import LossSpec
from recloss.keras import check_labels_shape, padding_from_labels, split_y_true
from recloss.losses import METRICS

_SERIAL_PACKAGE = "recloss"


class ReclossMetric(keras.metrics.Mean):
    """Base class of the generated metric objects: the mean over lists of a recloss metric."""

    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]

    def _setup(self, options: dict[str, Any], name: str | None, dtype: Any) -> None:
        _native.check_options(self.spec, options)
        k = options.get("k")
        super().__init__(name=name or (self.spec.name if k is None else f"{self.spec.name}_at_{k}"), dtype=dtype)
        self.options = options

    def update_state(self, y_true: Any, y_pred: Any, sample_weight: Any = None) -> Any:
        owner = type(self).__name__
        labels, mask = split_y_true(owner, self.spec, y_true)
        check_labels_shape(owner, labels, y_pred, "[B, L]")
        labels, mask = padding_from_labels(labels, mask)
        values = type(self).function(y_pred, labels, mask=mask, reduction="none", **self.options)
        return super().update_state(values, sample_weight=sample_weight)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), **self.options}


def _docstring(spec: LossSpec) -> str:
    lines = [spec.summary, "", f"The ``keras.metrics.Metric`` form of ``recloss.metrics.{spec.name}``: its mean "
             "over every list seen since the last ``reset_state()``.", "", "Math:", f"    {spec.math}", "", "Args:"]
    lines += [f"    {o.name}: {option_default_text(o)}. {o.doc}" for o in spec.options if o.name != "reduction"]
    lines += ["    name: as every Keras metric (default: the metric's name, with ``_at_{k}`` where ``k`` is set).",
              "    dtype: as every Keras metric.", "",
              "Update:", "    ``metric.update_state(y_true, y_pred, sample_weight=None)``", "",
              "    - y_pred: the scores ``[B, L]``.",
              "    - y_true: the labels ``[B, L]`` (< 0: padding) or ``{\"labels\": labels, \"mask\": mask}``.",
              "    - sample_weight: list weights ``[B]``."]
    return "\n".join(lines)


def metric_class(spec: LossSpec, function: Callable[..., Any]) -> type[ReclossMetric]:
    """The ``keras.metrics.Mean`` class of the metric ``spec``, registered for serialisation."""
    name = _native.class_name(spec.name)
    params = _native.keras_metric_init_params(spec)
    options = "{" + ", ".join(f"{o.name!r}: {o.name}" for o in spec.options if o.name != "reduction") + "}"
    init = _native.define("__init__", params, f"self._setup({options}, name, dtype)", {}, qualname=f"{name}.__init__")
    namespace = {"__init__": init, "spec": spec, "function": staticmethod(function), "__doc__": _docstring(spec),
                 "__module__": __name__, "__qualname__": name}
    cls = type(name, (ReclossMetric,), namespace)
    return keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE, name=name)(cls)


_METRICS = {spec.name: metric_class(spec, getattr(recloss.metrics, spec.name)) for spec in METRICS.values()}
globals().update({cls.__name__: cls for cls in _METRICS.values()})

__all__ = ["ReclossMetric", "metric_class", *[cls.__name__ for cls in _METRICS.values()]]
