"""PyTorch backend: the catalogue's kernels on ``torch`` operations (autograd, ``torch.compile``, ``torch.func``)."""

from __future__ import annotations

import importlib.util
import sys
from functools import partial
from typing import Any, Callable

import numpy as np
import torch
import torch.utils.checkpoint

from recloss import kernels
from recloss.kernels import block as block_path
from recloss.backends.torch.block import block_loss as _block_loss
from recloss.backends.torch.block import in_batch_loss as _in_batch_loss
from recloss.backends.torch.block import ready as _block_ready
from recloss.backends.torch.block import softplus as _softplus
from recloss.backends.torch.streaming import streaming_row_losses as _streaming_row_losses

#: Whether this process sees a CUDA device (so that "auto" on a CPU-only machine decides at no cost).
_CUDA = torch.cuda.is_available()

DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32,
          "float64": torch.float64}


HALF = (torch.float16, torch.bfloat16)
_FLOAT32_RESULT: dict[str, bool] = {}


def float32_result(device: torch.device) -> bool:
    """Whether ``torch.mm(a, b, out_dtype=torch.float32)`` multiplies half inputs into a float32 result on this
    device type (CUDA builds have it; the CPU has no such kernel in torch 2.13). Asked once per device type."""
    kind = device.type
    if kind not in _FLOAT32_RESULT:
        try:
            probe = torch.ones(2, 2, dtype=torch.bfloat16, device=device)
            _FLOAT32_RESULT[kind] = torch.mm(probe, probe, out_dtype=torch.float32).dtype == torch.float32
        except (NotImplementedError, RuntimeError, TypeError):
            _FLOAT32_RESULT[kind] = False
    return _FLOAT32_RESULT[kind]


def half_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` of float16/bfloat16 matrices as float32: products in the inputs' precision, float32 accumulation,
    and a float32 result where the device has one (CUDA), else the half result upcast (bfloat16: rounded to
    8 bits of mantissa; float16 never gets here on such a device, see ``half_products``)."""
    if float32_result(a.device):
        return torch.mm(a, b, out_dtype=torch.float32)
    return (a @ b).float()


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

    @staticmethod
    def cast_int(x: torch.Tensor, dtype: str) -> torch.Tensor:
        return x.to(getattr(torch, dtype))

    @staticmethod
    def int_bits() -> int:
        return 64

    @staticmethod
    def rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.dtype in HALF:                   # exact products, float32 sums
            a, b = a.float(), b.float()
        return (a * b).sum(-1)

    @staticmethod
    def dot_nt(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return half_mm(a, b.transpose(-1, -2)) if a.dtype in HALF else a @ b.transpose(-1, -2)

    @staticmethod
    def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.dtype in HALF:                   # per-row negatives gain nothing from a half product: float32
            a, b = a.float(), b.float()
        return torch.einsum("bd,bkd->bk", a, b)

    @staticmethod
    def half_products(x: torch.Tensor) -> bool:
        return x.dtype == torch.bfloat16 or (x.dtype == torch.float16 and float32_result(x.device))
    exp = staticmethod(torch.exp)
    log = staticmethod(torch.log)
    log1p = staticmethod(torch.log1p)
    expm1 = staticmethod(torch.expm1)
    softplus = staticmethod(_softplus)     # exact in float64 too (F.softplus's default threshold is not)
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
    def cumsum(x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=-1)

    @staticmethod
    def cumlogsumexp_reverse(x: torch.Tensor) -> torch.Tensor:
        """``logsumexp(x[:, i:])`` for every i by log2(L) doubling steps, ``x_i <- logaddexp(x_i, x_{i+2^k})``,
        with ``m = max`` (detached) inside each step: elementwise ops only, so gradients of gradients hold
        (``torch.logcumsumexp``'s backward takes the log of its cotangent; its double backward is NaN where that
        cotangent is 0, as ListMLE's is for each list's last item)."""
        size = x.shape[-1]
        positions = torch.arange(size, device=x.device)
        shift = 1
        while shift < size:
            ahead = torch.cat([x[..., shift:], x[..., -shift:]], dim=-1)      # x_{i+shift}; a placeholder past L
            top = torch.maximum(x, ahead).detach()
            merged = top + torch.log(torch.exp(x - top) + torch.exp(ahead - top))
            x = torch.where(positions < size - shift, merged, x)
            shift *= 2
        return x

    @staticmethod
    def gather(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        return torch.gather(x, -1, indices)

    @staticmethod
    def positions(x: torch.Tensor) -> torch.Tensor:
        return torch.arange(x.shape[-1], dtype=x.dtype, device=x.device)

    @staticmethod
    def max_one(x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 0:
            return x.new_full(x.shape[:1], float("-inf"))
        return x.max(1).values                # its gradient goes to one index (amax would split ties)

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
    def streaming_stores() -> bool:
        """Whether the streaming path can keep chunks from its forward for its backward: not under
        ``torch.compile`` (dynamo rejects the Function's extra saved outputs), where "auto" then materialises
        a block small enough to have been kept."""
        return not torch.compiler.is_compiling()
    block_loss = staticmethod(_block_loss)    # the materialised softmax loss in one autograd node (eager)
    in_batch_loss = staticmethod(_in_batch_loss)   # the same with in-batch negatives only (the common call)
    block_ready = staticmethod(_block_ready)  # whether it can run now (eager autograd)

    # The fused path (Triton kernels, recloss.backends.torch.fused, imported only when it runs).
    @staticmethod
    def fused_unavailable(tensors: tuple, interpret: bool, automatic: bool) -> tuple[str, str] | None:
        """None where the fused kernels can run on these tensors; else ``(kind, what)`` for the shared message
        (:mod:`recloss.kernels.fused`). Imports neither triton nor ``torch._dynamo`` (which imports triton):
        in a process that imported TensorFlow first, that import would abort it."""
        if not interpret and automatic and not _CUDA:   # "auto" on a machine without CUDA: nothing to look at
            return "device", "no CUDA device"
        present = [t for t in tensors if t is not None]
        if not interpret and not all(t.is_cuda for t in present):
            return "device", f"PyTorch tensors on {', '.join(sorted({t.device.type for t in present}))}"
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
        from recloss.backends.torch import fused as torch_fused
        return torch_fused.fused_row_losses(*args, **kwargs)

    @staticmethod
    def collectives(loss: str, gather: Any, option: str = "gather") -> Any:
        """The ``gather`` (or ``shard_negatives``) option's collectives over a torch.distributed group (loaded
        only when used)."""
        from recloss.backends.torch.distributed import collectives
        return collectives(loss, gather, option)


OPS = TorchOps()
KERNELS: dict[str, Callable[..., Any]] = {name: partial(kernel, OPS) for name, kernel in kernels.KERNELS.items()}


def repeat_kernel(name: str, bound: Any) -> Callable[[dict], Any] | None:
    """The path of a repeated call signature that skips the kernels' per-call routing (the eager block
    operation, :func:`recloss.kernels.block.repeat`), or None; see :func:`recloss._api.call`."""
    return block_path.repeat(OPS, bound)


def convert(array: np.ndarray) -> torch.Tensor:
    if array.dtype.name == "bfloat16":
        return torch.tensor(array.astype(np.float32)).to(torch.bfloat16)
    return torch.tensor(array)


def product_result_unit(dtype: str, device: str) -> float | None:
    """The rounding unit of a half-precision embedding product's result with ``product_precision="input"``:
    0 where it is float32 (CUDA's ``out_dtype``), bfloat16's 2**-8 on the CPU; None where float16 is multiplied
    in float32 (the CPU). Used by the parity engine to derive tolerances."""
    if float32_result(torch.device(device)):
        return 0.0
    return 2.0 ** -8 if dtype == "bfloat16" else None


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
