"""The per-signature cache of compiled kernels that the JAX and TensorFlow backends share for eager calls."""

from __future__ import annotations

from typing import Any, Callable, Hashable


class SignatureCache:
    """Compiled kernels by call signature, each built on its signature's ``after``-th eager call (earlier calls
    run operation by operation, so one-off shapes never pay for a compilation). Holds at most ``size``
    kernels; when full it is emptied, call counts included."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.kernels: dict[Hashable, Callable[..., Any]] = {}
        self.calls: dict[Hashable, int] = {}

    def lookup(self, key: Hashable, after: int, build: Callable[[], Callable[..., Any]]) -> Callable[..., Any] | None:
        """The compiled kernel of ``key``, built with ``build()`` once the key has been seen ``after`` times;
        None before that (the caller then runs the kernel eagerly)."""
        function = self.kernels.get(key)
        if function is not None:
            return function
        self.calls[key] = self.calls.get(key, 0) + 1
        if self.calls[key] < after:
            return None
        if len(self.kernels) >= self.size:
            self.kernels.clear()
            self.calls.clear()
        function = self.kernels[key] = build()
        return function
