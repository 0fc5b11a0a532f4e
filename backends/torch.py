"""PyTorch backend: the catalogue's kernels on ``torch`` operations (autograd, ``torch.compile``, ``torch.func``)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils.checkpoint

from recloss import kernels
from recloss.backends.torch_streaming import streaming_row_losses as _streaming_row_losses

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64}


def _stable_top_k(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest values along the last axis, descending, and their indices, equal values lower index first.

    ``torch.topk`` leaves the order of equal values unspecified (and does not keep it), so: every value above
    the k-th largest ``t`` is in any top k (its first places); the remaining places go to the first items
    equal to ``t`` (a second ``topk``, over their positions); then the k chosen indices are put in (value
    descending, index ascending) order by two sorts of k entries. No sort of the row.
    """
    values, indices = torch.topk(x, k, dim=-1)
    if k == 0:
        return values, indices
    threshold = values[..., -1:]
    above = (values > threshold).sum(-1, keepdim=True)
    size = x.shape[-1]
    position = torch.arange(size, device=x.device).expand_as(x)
    first_ties = torch.topk(torch.where(x == threshold, position, size), k, dim=-1, largest=False).values
    first_ties = first_ties.clamp(max=size - 1)  # only a NaN threshold leaves fewer ties than places
    slot = torch.arange(k, device=x.device)
    indices = torch.where(slot < above, indices, first_ties.gather(-1, (slot - above).clamp(min=0)))
    indices = indices.sort(dim=-1).values
    order = torch.sort(x.gather(-1, indices), dim=-1, descending=True, stable=True).indices
    indices = indices.gather(-1, order)
    return x.gather(-1, indices), indices

class TorchOps:
    """:class:`recloss.kernels.Ops` with torch operations."""

    @staticmethod
    def cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
        return x.to(DTYPES[dtype])

    rowdot = staticmethod(lambda a, b: (a * b).sum(-1))
    dot_nt = staticmethod(lambda a, b: a @ b.transpose(-1, -2))
    batch_dot = staticmethod(lambda a, b: torch.einsum("bd,bkd->bk", a, b))
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    softplus = staticmethod(F.softplus)
    relu = staticmethod(torch.relu)
    abs = staticmethod(torch.abs)
    sqrt = staticmethod(torch.sqrt)
    rsqrt = staticmethod(torch.rsqrt)
    where = staticmethod(torch.where)
    concat = staticmethod(torch.cat)
    not_equal = staticmethod(torch.ne)
    logical_and = staticmethod(torch.logical_and)
    stop_gradient = staticmethod(torch.Tensor.detach)
    sigmoid = staticmethod(torch.sigmoid)
    log1p = staticmethod(torch.log1p)
    expm1 = staticmethod(torch.expm1)

    @staticmethod
    def sum(x: torch.Tensor, axis: int | None = None) -> torch.Tensor:
        return x.sum() if axis is None else x.sum(axis)

    @staticmethod
    def max(x: torch.Tensor, axis: int) -> torch.Tensor:
        return x.amax(axis)

    @staticmethod
    def maximum(a: torch.Tensor, b: Any) -> torch.Tensor:
        return torch.clamp_min(a, b) if isinstance(b, (int, float)) else torch.maximum(a, b)

    @staticmethod
    def top_k(x: torch.Tensor, k: int) -> torch.Tensor:
        return torch.topk(x, k, dim=-1).values

    top_k_with_indices = staticmethod(_stable_top_k)

    @staticmethod
    def recompute(fn: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
        """A non-reentrant checkpoint (works under torch.compile); a plain call under the torch.func transforms,
        which do not support checkpoints, and where no gradient is recorded."""
        if not torch.is_grad_enabled() or torch._C._functorch.peek_interpreter_stack() is not None:
            return fn
        return lambda x: torch.utils.checkpoint.checkpoint(fn, x, use_reentrant=False)

    @staticmethod
    def cumlogsumexp_reverse(x: torch.Tensor) -> torch.Tensor:
        return torch.logcumsumexp(x.flip(-1), dim=-1).flip(-1)

    @staticmethod
    def gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, -1, indices)

    @staticmethod
    def positions(x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)

    @staticmethod
    def ones_bool(like: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(like, dtype=torch.bool)

    @staticmethod
    def row_index(x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[0], device=x.device)

    @staticmethod
    def size(x: torch.Tensor, axis: int) -> int:
        return x.shape[axis]

    @staticmethod
    def to_float(n: Any, like: torch.Tensor) -> torch.Tensor:
        return torch.as_tensor(n, dtype=like.dtype, device=like.device)

    minimum = staticmethod(min)
    streaming_row_losses = staticmethod(_streaming_row_losses)  # the streaming softmax path, custom backward


OPS = TorchOps()
KERNELS: dict[str, Callable[..., Any]] = {name: partial(kernel, OPS) for name, kernel in kernels.KERNELS.items()}


def convert(array: np.ndarray) -> torch.Tensor:
    if array.dtype.name == "bfloat16":
        return torch.tensor(array.astype(np.float32)).to(torch.bfloat16)
    return torch.tensor(array)


def tracing() -> bool:
    """True while torch.compile traces (sizes may be symbolic there): validation is then not cached."""
    return torch.compiler.is_compiling()


def concrete(x: Any) -> np.ndarray | None:
    if isinstance(x, np.ndarray):
        return x
    if torch.compiler.is_compiling():
        return None
    try:
        x = x.detach()
        return (x.float() if x.dtype == torch.bfloat16 else x).cpu().numpy()
    except (RuntimeError, TypeError, ValueError):  # functorch-wrapped or fake tensors have no values
        return None


def devices() -> list[str]:
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def value_and_grad(fn: Callable[..., Any], inputs: dict[str, Any], wrt: list[str],
                   device: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    tensors = {name: None if value is None else convert(value).to(device) for name, value in inputs.items()}
    for name in wrt:
        tensors[name].requires_grad_(True)
    out = fn(**tensors)
    # An unused input (e.g. empty negatives) has gradient 0.
    grads = torch.autograd.grad(out.sum(), [tensors[name] for name in wrt], allow_unused=True,
                                materialize_grads=True) if wrt else ()
    as_numpy = lambda t: t.detach().to(torch.float64).cpu().numpy()  # noqa: E731
    return as_numpy(out), {name: as_numpy(g) for name, g in zip(wrt, grads)}
