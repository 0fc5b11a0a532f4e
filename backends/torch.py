"""PyTorch backend: the catalogue's kernels on ``torch`` operations (autograd, ``torch.compile``, ``torch.func``)."""

from __future__ import annotations

from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from recloss import kernels
from recloss.backends.torch_streaming import streaming_row_losses as _streaming_row_losses

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64}


class TorchOps:
    """:class:`recloss.kernels.Ops` with torch operations."""

    @staticmethod
    def cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
        return x.to(DTYPES[dtype])

    @staticmethod
    def cast_int(x: torch.Tensor, dtype: str) -> torch.Tensor:
        return x.to(getattr(torch, dtype))

    @staticmethod
    def int_bits() -> int:
        return 64

    rowdot = staticmethod(lambda a, b: (a * b).sum(-1))
    dot_nt = staticmethod(lambda a, b: a @ b.transpose(-1, -2))
    batch_dot = staticmethod(lambda a, b: torch.einsum("bd,bkd->bk", a, b))
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    log1p = staticmethod(torch.log1p)
    softplus = staticmethod(F.softplus)
    relu = staticmethod(torch.relu)
    abs = staticmethod(torch.abs)
    sqrt = staticmethod(torch.sqrt)
    rsqrt = staticmethod(torch.rsqrt)
    where = staticmethod(torch.where)
    concat = staticmethod(torch.cat)
    not_equal = staticmethod(torch.ne)
    logical_and = staticmethod(torch.logical_and)
    logical_not = staticmethod(torch.logical_not)
    stop_gradient = staticmethod(torch.Tensor.detach)

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

    @staticmethod
    def first_true(mask: torch.Tensor) -> torch.Tensor:
        return mask & (mask.cumsum(-1) == 1)

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

    @staticmethod
    def collectives(loss: str, gather: Any) -> Any:
        """The ``gather`` option's collectives over a torch.distributed group (loaded only when used)."""
        from recloss.backends.torch_distributed import collectives
        return collectives(loss, gather)


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
