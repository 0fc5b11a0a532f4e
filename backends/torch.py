"""PyTorch backend: the catalogue's kernels on ``torch`` operations (autograd, ``torch.compile``, ``torch.func``)."""

from __future__ import annotations

import importlib.util
import sys
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

from recloss import kernels
from recloss.backends.torch_streaming import streaming_row_losses as _streaming_row_losses

#: Whether this process sees a CUDA device (so that "auto" on a CPU-only machine decides at no cost).
_CUDA = torch.cuda.is_available()

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64}


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

    # The fused path (Triton kernels, recloss.backends.torch_fused, imported only when it runs).
    @staticmethod
    def fused_unavailable(tensors: tuple, interpret: bool, automatic: bool) -> tuple[str, str] | None:
        """None where the fused kernels can run on these tensors; else ``(kind, what)`` for the shared message
        (:mod:`recloss.kernels.fused`). Imports neither triton nor ``torch._dynamo`` (which imports triton):
        in a process that imported TensorFlow first, that import would abort it."""
        present = [t for t in tensors if t is not None]
        if not interpret and (not automatic or _CUDA) and not all(t.is_cuda for t in present):
            return "device", f"PyTorch tensors on {', '.join(sorted({t.device.type for t in present}))}"
        if not interpret and not _CUDA:   # "auto" on a machine without CUDA: nothing to look at
            return "device", "no CUDA device"
        if torch.compiler.is_compiling():   # "auto" keeps the paths that compile into the graph
            return ("compiling", "torch.compile") if automatic else None
        if "triton" not in sys.modules:
            try:
                missing = importlib.util.find_spec("triton") is None
            except ValueError:   # sys.modules["triton"] = None: blocked on purpose
                missing = True
            if missing:
                return "package", "triton"
            if "tensorflow" in sys.modules:   # LLVM options registered twice: the process would abort
                return "conflict", "triton"
        return None

    @staticmethod
    def fused_row_losses(*args: Any, **kwargs: Any) -> torch.Tensor:
        from recloss.backends import torch_fused
        return torch_fused.fused_row_losses(*args, **kwargs)


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
