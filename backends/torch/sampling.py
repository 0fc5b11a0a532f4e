"""The sampling primitives on PyTorch (:class:`recloss.kernels.sampling.SamplingOps`): 32-bit hashing in int64
(values below 2**32, products split into 16-bit halves so that nothing overflows), scatter-add, random draws
from a ``torch.Generator`` (or the global generator)."""

from __future__ import annotations

from typing import Any

import torch

from recloss.backends.torch import TorchOps

_MASK = 0xFFFFFFFF
INT = {"int32": torch.int32, "int64": torch.int64}


class TorchSamplingOps(TorchOps):
    """:class:`recloss.kernels.sampling.SamplingOps` with torch operations."""

    @staticmethod
    def sampling_float() -> str:
        return "float64"

    @staticmethod
    def index_dtype() -> str:
        return "int64"

    @staticmethod
    def cast(x: torch.Tensor, dtype: str) -> torch.Tensor:
        return x.to(getattr(torch, dtype))

    @staticmethod
    def id_words(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two 32-bit words of each id's 64-bit two's complement (uint64 ids keep their bits)."""
        wide = ids.view(torch.int64) if ids.dtype == torch.uint64 else ids.to(torch.int64)
        return wide & _MASK, (wide >> 32) & _MASK

    @staticmethod
    def mul32(x: torch.Tensor, c: int) -> torch.Tensor:
        low, high = x & 0xFFFF, x >> 16     # x * c = low * c + high * c * 2**16; the second term mod 2**16 only
        return (low * c + (((high * (c & 0xFFFF)) & 0xFFFF) << 16)) & _MASK

    @staticmethod
    def xor(x: torch.Tensor, y: Any) -> torch.Tensor:
        return x ^ y

    @staticmethod
    def shift_right(x: torch.Tensor, bits: int) -> torch.Tensor:
        return x >> bits

    @staticmethod
    def mod(x: Any, n: int) -> Any:
        return x % n

    @staticmethod
    def arange(n: int, dtype: str, like: torch.Tensor) -> torch.Tensor:
        return torch.arange(n, dtype=INT[dtype], device=like.device)

    @staticmethod
    def full(shape: tuple, value: float, dtype: str, like: torch.Tensor) -> torch.Tensor:
        return torch.full(shape, value, dtype=getattr(torch, dtype), device=like.device)

    @staticmethod
    def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return x[index]

    @staticmethod
    def bincount(index: torch.Tensor, length: int, weight: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(length, dtype=weight.dtype, device=index.device)
        return out.index_add_(0, index, weight.expand(index.shape))

    @staticmethod
    def scatter_rows(x: torch.Tensor, index: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        return x.index_copy(0, index.to(x.device, torch.int64), rows.to(x.device))

    @staticmethod
    def reshape(x: torch.Tensor, shape: tuple) -> torch.Tensor:
        return x.reshape(shape)

    @staticmethod
    def stack(xs: list, axis: int) -> torch.Tensor:
        return torch.stack(xs, axis)

    @staticmethod
    def min(x: torch.Tensor, axis: int) -> torch.Tensor:
        return x.amin(axis)

    floor = staticmethod(torch.floor)

    @staticmethod
    def searchsorted(sorted_: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        return torch.searchsorted(sorted_, values, right=True)

    @staticmethod
    def uniform(rng: Any, shape: tuple, dtype: str, stream: int) -> torch.Tensor:
        generator, device = rng
        return torch.rand(shape, generator=generator, dtype=getattr(torch, dtype), device=device)

    @staticmethod
    def randint(rng: Any, shape: tuple, high: int, stream: int) -> torch.Tensor:
        generator, device = rng
        return torch.randint(0, high, shape, generator=generator, device=device)


OPS = TorchSamplingOps()


def random_state(seed: Any, like: torch.Tensor) -> tuple[Any, torch.device]:
    """``(generator, device)`` of a call: a ``torch.Generator`` as given, a new one seeded with an int (the same
    draws on every call), or None (PyTorch's global generator)."""
    device = like.device
    if isinstance(seed, torch.Generator):
        return seed, seed.device
    if seed is None:
        return None, device
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator, device


def is_random_state(seed: Any) -> bool:
    return isinstance(seed, torch.Generator)


def convert(array: Any) -> torch.Tensor:
    return torch.as_tensor(array)


def device_of(x: torch.Tensor) -> Any:
    return x.device
