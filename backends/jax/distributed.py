"""The ``gather`` option on JAX: collectives over a mesh axis bound by ``jax.shard_map`` (or ``jax.pmap``).

``gather`` is the axis name (or a tuple of names) the enclosing ``shard_map``/``pmap`` binds. Shapes are the
same on every device (SPMD), so the local sizes need no exchange and device ``r``'s rows start at
``r * B`` (``lax.axis_index``). The gathers are ``lax.all_gather(..., tiled=True)`` and the sums
``lax.psum``: JAX differentiates them itself (the gather's transpose is a reduce-scatter, each device's
slice of the summed cotangents).

Convention ``"global"``: every device returns the loss of the global batch (an axis-invariant value that
``shard_map`` may return with ``out_specs=P()``). With ``shard_map``'s default ``check_vma=True`` the
gradient with respect to replicated parameters is then exactly the single-device gradient (the transpose of
``psum`` passes each device its own cotangent; the transpose of the parameters' replication sums over
devices). Under ``jax.pmap`` the transpose of ``psum`` sums the cotangents over devices, so each device's
gradient is ``W`` times its share and ``lax.pmean`` of the gradients (the usual pmap recipe) is exact.
"""

from __future__ import annotations

from typing import Any, Sequence

from jax import lax

from recloss._validate import gather_error


def collectives(loss: str, gather: Any, option: str = "gather") -> "JaxCollectives":
    """The collectives of the mesh axis ``gather`` (a name or a tuple of names), or the shared error (naming
    ``option``, the option that asked for them)."""
    if not isinstance(gather, (str, tuple)):
        raise gather_error(loss, gather, "the name of a mesh axis (a str or a tuple of str) on the jax backend",
                           f"{gather!r}" if isinstance(gather, bool) else "a ProcessGroup",
                           'pass the axis name of your shard_map or pmap, e.g. gather="data"', option)
    try:
        index = lax.axis_index(gather)
    except NameError:
        raise gather_error(loss, gather, f"a mesh axis named {gather!r} bound by jax.shard_map or jax.pmap around "
                           "the call", "no such axis bound here",
                           "call the loss inside a shard_map or pmap over that axis, or pass the name of the "
                           "axis it binds", option) from None
    return JaxCollectives(gather, index)


class JaxCollectives:
    """:class:`recloss.kernels.distributed.Collectives` over a bound mesh axis (or axes)."""

    convention = "global"

    def __init__(self, axis: str | tuple[str, ...], index: Any) -> None:
        self.axis = axis
        self._index = index
        self._workers = lax.axis_size(axis)

    def num_workers(self) -> int:
        return self._workers

    def worker_index(self) -> Any:
        return self._index

    def sizes(self, counts: Sequence[int]) -> list[list[int]]:
        return [[int(count)] * self._workers for count in counts]

    def offset(self, sizes: list[int]) -> Any:
        return self._index * sizes[0]

    def all_gather(self, x: Any, sizes: list[int]) -> Any:
        return lax.all_gather(x, self.axis, axis=0, tiled=True)

    def all_reduce_sum(self, x: Any) -> Any:
        return lax.psum(x, self.axis)

    def all_reduce_max(self, x: Any) -> Any:
        return lax.pmax(lax.stop_gradient(x), self.axis)

    def local_rows(self, x: Any, offset: Any, count: int) -> Any:
        return lax.dynamic_slice_in_dim(x, offset, count, 0)

    #: ``jax.grad`` of a ``shard_map``ped function counts the global loss once on every device (with
    #: ``check_vma`` on, also when the gradient is taken inside the ``shard_map``).
    backward_copies = 1

    def scale_gradient(self, x: Any, factor: float) -> Any:
        return lax.stop_gradient(x) + (x - lax.stop_gradient(x)) * factor
