"""PyTorch metric objects of the retrieval metrics, generated from the metric specs: ``recloss.torch.metrics``.

``NDCG``, ``MRR``, ``Recall``, ``Precision``, ``HitRate``, ``MAP`` and ``DCG``, each a ``torch.nn.Module`` with
``update`` / ``compute`` / ``reset`` (as TorchRec's ``RecMetric`` and torchmetrics' metrics have):
``update(scores, labels, mask=None, sample_weight=None)`` adds the batch's ``sum_i w_i m_i`` and ``sum_i w_i`` to
two float64 buffers; ``compute()`` sums the buffers over the process group (``torch.distributed.all_reduce``
where a group is initialised and has several ranks) and returns their ratio (0 before any list), the same number
on every rank as one process evaluating the whole set; ``reset()`` zeroes them. Calling the module updates it and
returns the batch's own value. The constructor takes the metric's cutoff ``k`` and ``process_group`` (None: the
default group; ``False``: never reduce across processes). No gradient flows through a metric.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

import recloss.metrics
from recloss import _native
from recloss._api import option_default_text
from recloss._spec import LossSpec
from recloss.errors import OptionError
from recloss.losses import METRICS


class MetricModule(torch.nn.Module):
    """Base class of the generated metric objects: accumulates ``sum_i w_i m_i`` and ``sum_i w_i`` over batches
    and reduces them over a process group."""

    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]
    total: torch.Tensor
    count: torch.Tensor

    def _setup(self, options: dict[str, Any], process_group: Any) -> None:
        super().__init__()
        _native.check_options(self.spec, options)
        group = getattr(torch.distributed, "ProcessGroup", None) if torch.distributed.is_available() else None
        if not (process_group is None or process_group is False
                or (isinstance(group, type) and isinstance(process_group, group))):
            raise OptionError(f"{type(self).__name__}: `process_group` must be None (the default group), False (no "
                              f"reduction) or a torch.distributed.ProcessGroup; got {process_group!r}")
        self.options = options
        self.process_group = process_group
        self.register_buffer("total", torch.zeros((), dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def _update(self, tensors: dict[str, Any]) -> torch.Tensor:
        """Add one batch; returns the batch's own value (its weighted mean over lists)."""
        total = type(self).function(**tensors, reduction="sum", **self.options)
        weight = tensors.get("sample_weight")
        count = (torch.as_tensor(tensors["scores"].shape[0], dtype=torch.float64) if weight is None
                 else torch.as_tensor(weight).detach().to(torch.float64).sum())
        total = total.detach().to(torch.float64)
        count = count.to(total.device)
        self.total += total.to(self.total.device)
        self.count += count.to(self.count.device)
        return torch.where(count > 0, total / count.clamp_min(1e-300), 0.0)

    @torch.no_grad()
    def compute(self) -> torch.Tensor:
        """``sum w m / sum w`` over every list every rank has seen (float64; 0 before any list)."""
        totals = torch.stack([self.total, self.count])
        group = None if self.process_group is None else self.process_group
        if (self.process_group is not False and torch.distributed.is_available()
                and torch.distributed.is_initialized() and torch.distributed.get_world_size(group) > 1):
            torch.distributed.all_reduce(totals, op=torch.distributed.ReduceOp.SUM, group=group)
        return torch.where(totals[1] > 0, totals[0] / totals[1].clamp_min(1e-300), 0.0)

    def reset(self) -> None:
        self.total.zero_()
        self.count.zero_()

    def extra_repr(self) -> str:
        return ", ".join(f"{name}={value!r}" for name, value in self.options.items())


def _docstring(spec: LossSpec) -> str:
    lines = [spec.summary, "", f"The accumulating form of ``recloss.metrics.{spec.name}`` (``update`` / "
             "``compute`` / ``reset``, reduced over a process group).", "", "Math:", f"    {spec.math}", "", "Args:"]
    lines += [f"    {o.name}: {option_default_text(o)}. {o.doc}" for o in spec.options if o.name != "reduction"]
    lines += ["    process_group: None (the default group, where one is initialised), False (no reduction) or a "
              "``torch.distributed.ProcessGroup``.", "", "Update:",
              "    ``metric.update(...)`` and ``metric(...)`` (which also returns the batch's own value) take:", ""]
    lines += [f"    - ``{a.name}``: ``{a.shape_text}`` {a.kind}{'' if a.required else ', optional'}. {a.doc}"
              for a in spec.args]
    return "\n".join(lines)


def metric_class(spec: LossSpec, function: Callable[..., Any]) -> type[MetricModule]:
    """The accumulating ``nn.Module`` class of the metric ``spec``."""
    name = _native.class_name(spec.name)
    options = "{" + ", ".join(f"{o.name!r}: {o.name}" for o in spec.options if o.name != "reduction") + "}"
    init = _native.define("__init__", _native.torch_metric_init_params(spec),
                          f"self._setup({options}, process_group)", {}, qualname=f"{name}.__init__")
    params = _native.metric_params(spec)
    tensors = "{" + ", ".join(f"{p.name!r}: {p.name}" for p in params) + "}"
    update = _native.define("update", params, f"self._update({tensors})", {}, qualname=f"{name}.update")
    forward = _native.define("forward", params, f"return self._update({tensors})", {}, qualname=f"{name}.forward")
    namespace = {"__init__": init, "update": update, "forward": forward, "spec": spec,
                 "function": staticmethod(function), "__doc__": _docstring(spec), "__module__": __name__,
                 "__qualname__": name}
    return type(name, (MetricModule,), namespace)


_METRICS = {spec.name: metric_class(spec, getattr(recloss.metrics, spec.name)) for spec in METRICS.values()}
globals().update({cls.__name__: cls for cls in _METRICS.values()})

__all__ = ["MetricModule", "metric_class", *[cls.__name__ for cls in _METRICS.values()]]
