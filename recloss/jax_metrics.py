"""The retrieval metrics as sums and counts for JAX, generated from the metric specs: ``recloss.jax.metrics``.

``ndcg``, ``mrr``, ``recall``, ``precision``, ``hit_rate``, ``map`` and ``dcg`` each take the arguments of the
metric in :mod:`recloss.metrics` but ``reduction`` and return ``(total, count)``: ``sum_i w_i m_i`` and ``sum_i
w_i`` over the batch's lists (``count`` = the number of lists without ``sample_weight``), pure functions that
``jit``, ``vmap`` and ``shard_map`` trace. Sum them over batches and devices (``jax.lax.psum`` inside
``shard_map``/``pmap``) and divide with :func:`mean`: the metric of the whole set::

    total, count = jax.lax.psum(recloss.jax.metrics.ndcg(scores, labels, k=10), "data")
    value = recloss.jax.metrics.mean(total, count)
"""

from __future__ import annotations

from typing import Any, Callable

import jax.numpy as jnp

import recloss.metrics
from recloss import _native
from recloss._api import option_default_text
from recloss._spec import LossSpec
from recloss.losses import METRICS


def mean(total: Any, count: Any) -> Any:
    """``total / count``, 0 where ``count`` is 0 (no list seen)."""
    total, count = jnp.asarray(total), jnp.asarray(count)
    positive = count > 0
    return jnp.where(positive, total / jnp.where(positive, count, 1), 0)


def _totals(function: Callable[..., Any], tensors: dict[str, Any], options: dict[str, Any]) -> tuple[Any, Any]:
    total = function(**tensors, reduction="sum", **options, backend="jax")
    weight = tensors.get("sample_weight")
    count = (jnp.asarray(jnp.shape(tensors["scores"])[0], total.dtype) if weight is None
             else jnp.sum(jnp.asarray(weight, total.dtype)))
    return total, count


def metric_function(spec: LossSpec, function: Callable[..., Any]) -> Callable[..., Any]:
    """``spec``'s metric as ``(...) -> (total, count)``, with the public metric's parameters but ``reduction``
    and ``backend``."""
    params = _native.call_params(spec, "ArrayLike", skip=("reduction",))
    tensors = "{" + ", ".join(f"{a.name!r}: {a.name}" for a in spec.args) + "}"
    options = "{" + ", ".join(f"{o.name!r}: {o.name}" for o in spec.options if o.name != "reduction") + "}"
    out = _native.define(spec.name, params, f"return _totals(_function, {tensors}, {options})",
                         {"_totals": _totals, "_function": function}, first="", qualname=spec.name)
    out.__module__ = __name__
    args = [f"    {a.name}: ``{a.shape_text}`` {a.kind}{'' if a.required else ', optional'}. {a.doc}"
            for a in spec.args]
    args += [f"    {o.name}: {option_default_text(o)}. {o.doc}" for o in spec.options if o.name != "reduction"]
    out.__doc__ = "\n".join([
        f"``(sum_i w_i m_i, sum_i w_i)`` of ``recloss.metrics.{spec.name}`` over the batch's lists: {spec.summary}",
        "", "Math:", f"    {spec.math}", "", "Args:", *args, "", "Returns:",
        "    ``(total, count)``, two 0-d JAX arrays (float32, float64 for float64 inputs), to be summed over "
        "batches and devices (``jax.lax.psum``) and divided with ``mean``."])
    out.__annotations__["return"] = "tuple[Any, Any]"
    out.spec = spec
    return out


_FUNCTIONS = {spec.name: metric_function(spec, getattr(recloss.metrics, spec.name)) for spec in METRICS.values()}
globals().update(_FUNCTIONS)

__all__ = ["mean", "metric_function", *_FUNCTIONS]
