"""The ``gather`` option on PyTorch: collectives over a ``torch.distributed`` process group.

``gather=True`` uses the default group, a ``ProcessGroup`` that group. Local batch sizes may differ between
ranks (the last batch of an epoch): each call first exchanges the sizes (one small all-gather per call,
whatever the number of tensors, which also checks that every rank's call agrees: :mod:`.agreement`), pads
every rank's rows to the largest, gathers, and trims; the gather's backward reduce-scatters the cotangents
(padded the same way) so that each rank receives its rows' gradient summed over the ranks, and the
reduce-scatter's backward gathers again. ``all_reduce_sum``'s backward all-reduces the cotangents. Every
backward is itself differentiable (gradients of gradients through the gathered candidates are exact), and
each collective has a ``vmap`` rule, so ``torch.func.grad`` and ``vmap`` work through them (forward mode
does not: dynamo cannot trace a Function with a ``jvp`` rule, and ``torch.compile`` matters more).

Convention ``"global"``: every rank returns the loss of the global batch. Each rank's backward then yields
``W`` times its share of the gradient (the cotangent of the all-reduced sum is summed over the ``W`` ranks),
so the average that ``DistributedDataParallel`` (and FSDP) takes over ranks is exactly the single-device
gradient of the global loss. Every rank must call the loss, and run its backward, the same number of times
in the same order (as DDP requires anyway); the collectives run on the group's own device (CUDA tensors with
NCCL, CPU tensors with gloo). Under ``torch.compile`` every rank's local sizes must be equal (checked).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.distributed as dist

from recloss._spec import Bound
from recloss._validate import gather_error
from recloss.backends.torch import agreement

_NEEDS = "an initialised torch.distributed process group"


def collectives(loss: str, gather: Any) -> "TorchCollectives":
    """The collectives of ``gather`` (True: the default group; or a ProcessGroup), or the shared error."""
    return TorchCollectives(loss, gather, group_of(loss, gather))


def group_of(loss: str, gather: Any) -> Any:
    """The process group of a ``gather`` value (None for the default group), or the shared error."""
    if isinstance(gather, (str, tuple)):
        raise gather_error(loss, gather, "True or a torch.distributed.ProcessGroup on the torch backend",
                           "a mesh axis name, which is for JAX",
                           "pass gather=True for the default process group, or the group itself")
    if not dist.is_available():
        raise gather_error(loss, gather, _NEEDS, "a torch build without torch.distributed",
                           "install a torch build with distributed support, or pass gather=None")
    if not dist.is_initialized():
        raise gather_error(loss, gather, _NEEDS, "none initialised",
                           "call torch.distributed.init_process_group first, e.g. through torchrun")
    return None if gather is True else gather


class TorchCollectives:
    """:class:`recloss.kernels.distributed.Collectives` over one torch.distributed group, for one call."""

    convention = "global"

    def __init__(self, loss: str, gather: Any, group: Any) -> None:
        self.loss, self.gather, self.group = loss, gather, group
        self._workers = dist.get_world_size(group)
        self._index = dist.get_rank(group)
        self._compiling = torch.compiler.is_compiling()
        self._description: agreement.Description = (("the loss", loss),)
        self._agreed = False
        self._token: torch.Tensor | None = None    # under torch.compile: the output of recloss::agree

    def describe_call(self, bound: Bound, inputs: Mapping[str, Any]) -> None:
        """Record what this rank's call is; the first collective checks it against every rank's. Under
        ``torch.compile`` the check is put into the graph here, before any collective."""
        self._description = agreement.describe(bound, inputs)
        if self._compiling:
            self._token = agreement.traced_agreement(self.group, self.loss, bound, self._description)
            self._agreed = True

    def num_workers(self) -> int:
        return self._workers

    def worker_index(self) -> int:
        return self._index

    def sizes(self, counts: Sequence[int]) -> list[list[int]]:
        """Every rank's counts, in one all-gather: ``[[c_0 of rank 0, c_0 of rank 1, ...], ...]`` (under
        ``torch.compile``, this rank's counts: the traced call checks that every rank's are equal)."""
        if self._agreed:
            if not self._compiling:
                raise AssertionError("the local sizes are exchanged once per call")
            return [[count] * self._workers for count in counts]
        self._agreed = True
        return agreement.exchange(self.group, self._workers, self.loss, self.gather, self._description, counts)

    def offset(self, sizes: list[int]) -> int:
        return sum(sizes[:self._index])

    def all_gather(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        return _AllGather.apply(self._after_agreement(x), self.group, tuple(sizes), self._index)

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(self._after_agreement(x), self.group)

    def _after_agreement(self, x: torch.Tensor) -> torch.Tensor:
        """``x``, once every rank's call is known to agree (a call that gathers nothing checks here)."""
        if not self._agreed:
            self.sizes([])
        if self._token is not None:    # traced: make the collective depend on recloss::agree
            x = x + self._token.to(x.dtype)
        return x


def _gather(x: torch.Tensor, group: Any, sizes: tuple[int, ...]) -> torch.Tensor:
    """``x`` ``[n_r, ...]`` of every rank concatenated in rank order: pad to the largest ``n``, gather, trim."""
    most = max(sizes)
    if most == 0:
        return x.new_empty((0, *x.shape[1:]))
    padded = x if x.shape[0] == most else torch.cat([x, x.new_zeros((most - x.shape[0], *x.shape[1:]))])
    out = x.new_empty((len(sizes) * most, *x.shape[1:]))
    dist.all_gather_single(out, padded.contiguous(), group=group)
    if all(size == most for size in sizes):
        return out
    return torch.cat([out[r * most:r * most + size] for r, size in enumerate(sizes)])


def _reduce_scatter(x: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> torch.Tensor:
    """The adjoint of :func:`_gather`: ``x`` ``[sum_r n_r, ...]`` summed over the ranks, this rank's rows."""
    most = max(sizes)
    if most == 0:
        return x.new_zeros((0, *x.shape[1:]))
    if any(size != most for size in sizes):   # rank r's rows back to r * most, zero padding after them
        pieces, at = [], 0
        for size in sizes:
            pieces += [x[at:at + size], x.new_zeros((most - size, *x.shape[1:]))]
            at += size
        x = torch.cat(pieces)
    out = x.new_empty((most, *x.shape[1:]))
    dist.reduce_scatter_single(out, x.contiguous(), op=dist.ReduceOp.SUM, group=group)
    return out[:sizes[index]]


def _all_reduce(x: torch.Tensor, group: Any) -> torch.Tensor:
    out = x.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
    return out


def _rows_at(x: torch.Tensor, dim: int | None) -> tuple[torch.Tensor, int | None]:
    """Under ``vmap``: ``x`` with its batch dimension moved behind the rows (dimension 1), and that position."""
    return (x, None) if dim is None else (x.movedim(dim, 1), 1)


class _AllGather(torch.autograd.Function):
    """:func:`_gather`, whose backward (:class:`_ReduceScatter`) gives each rank its rows of the cotangents
    summed over the ranks."""

    @staticmethod
    def forward(x: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> torch.Tensor:
        return _gather(x, group, sizes)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, ctx.group, ctx.sizes, ctx.index = inputs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return _ReduceScatter.apply(grad, ctx.group, ctx.sizes, ctx.index), None, None, None


    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> tuple:
        x, dim = _rows_at(x, in_dims[0])
        return _AllGather.apply(x, group, sizes, index), dim


class _ReduceScatter(torch.autograd.Function):
    """:func:`_reduce_scatter`, whose backward is :class:`_AllGather`."""

    @staticmethod
    def forward(x: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> torch.Tensor:
        return _reduce_scatter(x, group, sizes, index)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, ctx.group, ctx.sizes, ctx.index = inputs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return _AllGather.apply(grad, ctx.group, ctx.sizes, ctx.index), None, None, None


    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> tuple:
        x, dim = _rows_at(x, in_dims[0])
        return _ReduceScatter.apply(x, group, sizes, index), dim


class _AllReduceSum(torch.autograd.Function):
    """Elementwise sum over the ranks; its backward is the sum of the cotangents over the ranks."""

    @staticmethod
    def forward(x: torch.Tensor, group: Any) -> torch.Tensor:
        return _all_reduce(x, group)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        ctx.group = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return _AllReduceSum.apply(grad, ctx.group), None


    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, group: Any) -> tuple:
        return _AllReduceSum.apply(x, group), in_dims[0]


def average_gradient(x: torch.Tensor, loss: str, gather: Any) -> torch.Tensor:
    """``x`` (a parameter that every rank of ``gather``'s group holds), whose gradient is averaged over the
    group in the backward, as ``DistributedDataParallel`` averages its parameters' gradients (on a parameter
    that DDP also averages, the second average changes nothing: every rank already holds the same value)."""
    group = group_of(loss, gather)
    return _AverageGradient.apply(x, group, dist.get_world_size(group))


class _AverageGradient(torch.autograd.Function):
    """The identity, whose backward averages the cotangents over the ranks (differentiably)."""

    @staticmethod
    def forward(x: torch.Tensor, group: Any, workers: int) -> torch.Tensor:
        return x.clone()

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: torch.Tensor) -> None:
        _, ctx.group, ctx.workers = inputs

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return _AllReduceSum.apply(grad, ctx.group) / ctx.workers, None, None

    @staticmethod
    def vmap(info: Any, in_dims: tuple, x: torch.Tensor, group: Any, workers: int) -> tuple:
        return _AverageGradient.apply(x, group, workers), in_dims[0]
