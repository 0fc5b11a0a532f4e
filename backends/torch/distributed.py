"""The ``gather`` option on PyTorch: collectives over a ``torch.distributed`` process group.

``gather=True`` uses the default group, a ``ProcessGroup`` that group. Local batch sizes may differ between
ranks (the last batch of an epoch): each gather first exchanges the sizes (one small all-gather per call,
whatever the number of tensors), pads every rank's rows to the largest, gathers, and trims; its backward
reduce-scatters the cotangents (padded the same way) so that each rank receives its rows' gradient summed
over the ranks. ``all_reduce_sum``'s backward all-reduces the cotangents. Both backwards are differentiable
(with ``create_graph=True``), so second derivatives through the collectives are exact.

Convention ``"global"``: every rank returns the loss of the global batch. Each rank's backward then yields
``W`` times its share of the gradient (the cotangent of the all-reduced sum is summed over the ``W`` ranks),
so the average that ``DistributedDataParallel`` (and FSDP) takes over ranks is exactly the single-device
gradient of the global loss. Every rank must call the loss, and run its backward, the same number of times
in the same order (as DDP requires anyway); the collectives run on the group's own device (CUDA tensors with
NCCL, CPU tensors with gloo).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.distributed as dist

from recloss._validate import gather_error

_NEEDS = "an initialised torch.distributed process group"


def collectives(loss: str, gather: Any, option: str = "gather") -> "TorchCollectives":
    """The collectives of ``gather`` (True: the default group; or a ProcessGroup), or the shared error (naming
    ``option``, the option that asked for them)."""
    if isinstance(gather, (str, tuple)):
        raise gather_error(loss, gather, "True or a torch.distributed.ProcessGroup on the torch backend",
                           "a mesh axis name, which is for JAX",
                           "pass gather=True for the default process group, or the group itself", option)
    if not dist.is_available():
        raise gather_error(loss, gather, _NEEDS, "a torch build without torch.distributed",
                           "install a torch build with distributed support, or pass gather=None", option)
    if not dist.is_initialized():
        raise gather_error(loss, gather, _NEEDS, "none initialised",
                           "call torch.distributed.init_process_group first, e.g. through torchrun", option)
    group = None if gather is True else gather
    return TorchCollectives(group)


class TorchCollectives:
    """:class:`recloss.kernels.distributed.Collectives` over one torch.distributed group."""

    convention = "global"

    def __init__(self, group: Any) -> None:
        self.group = group
        self._workers = dist.get_world_size(group)
        self._index = dist.get_rank(group)

    def num_workers(self) -> int:
        return self._workers

    def worker_index(self) -> int:
        return self._index

    def sizes(self, counts: Sequence[int]) -> list[list[int]]:
        """Every rank's counts, in one all-gather: ``[[c_0 of rank 0, c_0 of rank 1, ...], ...]``."""
        device = _device(self.group)
        local = torch.tensor([int(c) for c in counts], dtype=torch.int64, device=device)
        table = torch.empty(self._workers * len(counts), dtype=torch.int64, device=device)
        dist.all_gather_single(table, local, group=self.group)
        rows = table.view(self._workers, len(counts)).tolist()
        return [[row[k] for row in rows] for k in range(len(counts))]

    def offset(self, sizes: list[int]) -> int:
        return sum(sizes[:self._index])

    def all_gather(self, x: torch.Tensor, sizes: list[int]) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _AllGather.apply(x, self.group, tuple(sizes), self._index)
        return _gather(x, self.group, tuple(sizes))

    def all_reduce_sum(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _AllReduceSum.apply(x, self.group)
        return _all_reduce(x, self.group)

    def all_reduce_max(self, x: torch.Tensor) -> torch.Tensor:
        return _all_reduce(x, self.group, dist.ReduceOp.MAX)

    def local_rows(self, x: torch.Tensor, offset: int, count: int) -> torch.Tensor:
        return x[offset:offset + count]

    @property
    def backward_copies(self) -> int:
        """Every rank's backward of the global loss sums the cotangents of all ranks: W times its share."""
        return self._workers

    def scale_gradient(self, x: torch.Tensor, factor: float) -> torch.Tensor:
        if x.requires_grad and torch.is_grad_enabled():
            return _ScaleGradient.apply(x, factor)
        return x


def _device(group: Any) -> torch.device:
    """The device a group's collectives take their tensors on: CUDA for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


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


def _all_reduce(x: torch.Tensor, group: Any, op: Any = None) -> torch.Tensor:
    out = x.detach().clone().contiguous()
    dist.all_reduce(out, op=dist.ReduceOp.SUM if op is None else op, group=group)
    return out


class _AllGather(torch.autograd.Function):
    """:func:`_gather` whose backward gives each rank its rows of the cotangents summed over the ranks."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> torch.Tensor:
        ctx.group, ctx.sizes, ctx.index = group, sizes, index
        return _gather(x.detach(), group, sizes)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        if torch.is_grad_enabled() and grad.requires_grad:   # create_graph=True: a differentiable backward
            return _ReduceScatter.apply(grad, ctx.group, ctx.sizes, ctx.index), None, None, None
        return _reduce_scatter(grad, ctx.group, ctx.sizes, ctx.index), None, None, None


def _reduce_scatter(grad: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> torch.Tensor:
    """This rank's rows of ``grad`` ``[sum(sizes), ...]`` summed over the ranks (the transpose of :func:`_gather`)."""
    most = max(sizes)
    if most == 0:
        return grad.new_zeros((0, *grad.shape[1:]))
    if any(size != most for size in sizes):   # rank r's rows back to r * most, zero padding after them
        pieces, at = [], 0
        for size in sizes:
            pieces += [grad[at:at + size], grad.new_zeros((most - size, *grad.shape[1:]))]
            at += size
        grad = torch.cat(pieces)
    out = grad.new_empty((most, *grad.shape[1:]))
    dist.reduce_scatter_single(out, grad.detach().contiguous(), op=dist.ReduceOp.SUM, group=group)
    return out[:sizes[index]]


class _ReduceScatter(torch.autograd.Function):
    """:func:`_reduce_scatter` whose backward is the gather (second derivatives through ``_AllGather``)."""

    @staticmethod
    def forward(ctx: Any, grad: torch.Tensor, group: Any, sizes: tuple[int, ...], index: int) -> torch.Tensor:
        ctx.group, ctx.sizes, ctx.index = group, sizes, index
        return _reduce_scatter(grad, group, sizes, index)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        if torch.is_grad_enabled() and grad.requires_grad:
            return _AllGather.apply(grad, ctx.group, ctx.sizes, ctx.index), None, None, None
        return _gather(grad, ctx.group, ctx.sizes), None, None, None


class _AllReduceSum(torch.autograd.Function):
    """Elementwise sum over the ranks; its backward is the sum of the cotangents over the ranks (itself
    differentiable, for second derivatives)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, group: Any) -> torch.Tensor:
        ctx.group = group
        return _all_reduce(x, group)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        if torch.is_grad_enabled() and grad.requires_grad:
            return _AllReduceSum.apply(grad, ctx.group), None
        return _all_reduce(grad, ctx.group), None


class _ScaleGradient(torch.autograd.Function):
    """The identity whose gradient is the cotangent times ``factor`` (itself differentiable)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, factor: float) -> torch.Tensor:
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple:
        return grad * ctx.factor, None
