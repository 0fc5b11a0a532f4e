"""``torch.nn.Module`` forms of the losses: one class per loss of the catalogue, generated from its spec.

The options are constructor arguments (keyword-only, the public function's defaults), the tensors go to
``forward``, ``reduction`` is ``"mean"`` | ``"sum"`` | ``"none"`` as in ``torch.nn`` (with ``sample_weight``,
``"mean"`` is the weighted mean, as ``nn.CrossEntropyLoss(weight=...)``)::

    import recloss.torch

    loss_fn = recloss.torch.SampledSoftmaxLoss(temperature=0.05, learn_temperature=True)
    loss = loss_fn(query, item, pos_ids=item_ids)
    loss.backward()          # reaches the towers and loss_fn.logit_scale

A loss with a temperature takes ``learn_temperature=True``: the temperature is then learnt as CLIP learns it,
through the log-scale parameter ``logit_scale = log(1 / temperature)`` (an ``nn.Parameter`` initialised from
``temperature``, in ``state_dict``; the loss uses ``temperature = exp(-logit_scale)``). CLIP clamps it after
each optimiser step (``logit_scale.data.clamp_(0, math.log(100))``); do so if your training needs it.
With ``gather`` the loss is the global one and each rank's gradient ``W`` times its share; the module averages
``logit_scale``'s gradient over the group in the backward (as ``DistributedDataParallel`` does, so that it is
right inside a DDP-wrapped model and outside one): every rank gets the one-process gradient and the ranks'
temperatures stay equal.

Importing this module imports PyTorch; ``import recloss`` does not.
"""

from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import torch

import recloss
from recloss import _native
from recloss._spec import LossSpec
from recloss._validate import gather_requested
from recloss.losses import CATALOGUE


class LossModule(torch.nn.Module):
    """Base class of the generated modules: keeps the options, the learnable temperature, and calls the loss."""

    spec: ClassVar[LossSpec]
    function: ClassVar[Callable[..., Any]]

    def _setup(self, options: dict[str, Any], learn_temperature: bool = False) -> None:
        super().__init__()
        _native.check_options(self.spec, options)
        if not isinstance(learn_temperature, bool):
            raise recloss.OptionError(f"{self.spec.name}: `learn_temperature` must be True or False; "
                                      f"got {learn_temperature!r}")
        self.learn_temperature = learn_temperature
        if learn_temperature:
            initial = float(options.pop("temperature"))
            self.logit_scale = torch.nn.Parameter(torch.tensor(-math.log(initial)))
        self.options = options

    @property
    def temperature(self) -> Any:
        """The temperature: the option, or ``exp(-logit_scale)`` (a 0-d tensor) when it is learnt."""
        if self.learn_temperature:
            return torch.exp(-self.logit_scale)
        return self.options["temperature"]

    def _loss(self, tensors: dict[str, Any]) -> torch.Tensor:
        options = dict(self.options)
        if self.learn_temperature:
            scale = self.logit_scale
            if gather_requested(options.get("gather")) is not None:
                # Each rank's gradient is W times its share (the "global" convention): average it over the
                # group, as DDP would, so that the ranks' temperatures stay equal outside DDP too.
                from recloss.backends.torch.distributed import average_gradient
                scale = average_gradient(scale, self.spec.name, gather_requested(options["gather"]))
            options["temperature"] = torch.exp(-scale)
        return type(self).function(**tensors, **options)

    def extra_repr(self) -> str:
        parts = [f"{name}={value!r}" for name, value in self.options.items()]
        if self.learn_temperature:
            parts.insert(0, f"temperature={float(self.temperature.detach()):.6g} (learnt)")
        return ", ".join(parts)


def _docstring(spec: LossSpec) -> str:
    lines = [spec.summary, "", f"The ``torch.nn.Module`` form of ``recloss.{spec.name}`` (its docstring has "
             "the math and the shapes).", "", "Math:", f"    {spec.math}", "", "Args:"]
    lines += [f"    {o.name}: default ``{o.default!r}``. {o.doc}" for o in spec.options]
    if _native.has_temperature(spec):
        lines.append("    learn_temperature: learn the temperature through ``logit_scale = log(1 / T)``, an "
                     "``nn.Parameter`` initialised from ``temperature``" + (
                         "; with ``gather``, its gradient is averaged over the group in the backward (every "
                         "rank gets the one-process gradient, inside DDP or not)." if _gathers(spec) else "."))
    lines += ["", "Forward:"]
    lines += [f"    - ``{a.name}``: ``{a.shape_text}`` {a.kind}{'' if a.required else ', optional'}. {a.doc}"
              for a in spec.args]
    lines += [f"    - returns: {spec.returns}"]
    return "\n".join(lines)


def _gathers(spec: LossSpec) -> bool:
    return any(o.name == "gather" for o in spec.options)


def module_class(spec: LossSpec, function: Callable[..., Any]) -> type[LossModule]:
    """The ``nn.Module`` class of ``spec``, computing with ``function`` (the public loss function)."""
    name = _native.class_name(spec.name)
    init_params = _native.torch_init_params(spec)
    options = "{" + ", ".join(f"{o.name!r}: {o.name}" for o in spec.options) + "}"
    learn = ", learn_temperature" if _native.has_temperature(spec) else ""
    init = _native.define("__init__", init_params, f"self._setup({options}{learn})", {},
                          qualname=f"{name}.__init__")
    forward_params = _native.torch_forward_params(spec)
    tensors = "{" + ", ".join(f"{p.name!r}: {p.name}" for p in forward_params) + "}"
    forward = _native.define("forward", forward_params, f"return self._loss({tensors})", {},
                             qualname=f"{name}.forward")
    namespace = {"__init__": init, "forward": forward, "spec": spec, "function": staticmethod(function),
                 "__doc__": _docstring(spec), "__module__": __name__, "__qualname__": name}
    return type(name, (LossModule,), namespace)


_CLASSES = {spec.name: module_class(spec, getattr(recloss, spec.name)) for spec in CATALOGUE.values()}
globals().update({cls.__name__: cls for cls in _CLASSES.values()})

__all__ = ["LossModule", *sorted(cls.__name__ for cls in _CLASSES.values())]

# The streaming frequency estimator and the negative queue (state in buffers; not generated from the catalogue).
from recloss._torch_sampling import FrequencyEstimator, NegativeQueue  # noqa: E402

__all__ += ["FrequencyEstimator", "NegativeQueue"]
