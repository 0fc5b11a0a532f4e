"""Every rank's call agrees before the first collective of the ``gather`` option on PyTorch.

A collective whose inputs differ between ranks crashes inside the backend (gloo aborts on a dtype or size
mismatch), or waits for the process group's timeout where only some ranks run it (``pos_ids`` gathered on
one rank only; the backward's reduce-scatter on the ranks whose tower is not frozen). So each call describes
itself (:func:`describe`: the loss; every argument's presence, dtype, sizes other than the rows, and whether it
requires grad; every option) and the call's first exchange, the one of the local sizes, carries a 64-bit
digest of that description beside the sizes: still one small all-gather per call. Where the digests differ,
every rank sees it in the same table, exchanges the descriptions themselves (``all_gather_object``) and
raises the same :class:`recloss.OptionError`, naming the first difference and the two ranks.

Under ``torch.compile`` the other ranks' sizes cannot be read on the host while tracing: the traced call
assumes every rank's rows equal this rank's, and the exchange runs inside the graph as the custom operator
``recloss::agree`` (every gathered tensor depends on its output, so it runs before any of them). It raises
the same errors, and one more where the ranks' local sizes differ.
"""

from __future__ import annotations

import ast
import hashlib
import numbers
from typing import Any, Mapping, Sequence, cast

import numpy as np
import torch
import torch.distributed as dist

from recloss._spec import Bound
from recloss._validate import dtype_name, gather_error
from recloss.kernels.distributed import ROW_DIMS

#: Entries of the exchanged row of int64: the digest, the number of counts, then up to this many counts.
MAX_COUNTS = 6
_WIDTH = 2 + MAX_COUNTS

_NEEDS = ("the same call on every rank of the group (the same loss and options; the same arguments, with the same "
          "dtypes and sizes but the rows', each requiring grad on every rank or on none)")
_TODO = ("pass the same arguments and options on every rank, and freeze a tower or disable grad on every rank or "
         "on none")

Description = tuple[tuple[str, str], ...]


def describe(bound: Bound, inputs: Mapping[str, Any]) -> Description:
    """What one rank's call is, as ``(what, value)`` pairs in a fixed order: equal on every rank exactly
    when the ranks run the same collectives on tensors of the same dtypes and trailing sizes.

    ``inputs`` are the call's tensor arguments by name (to read ``requires_grad``); the rest comes from the
    validator's ``bound``. The rows (the dimensions in :data:`recloss.kernels.distributed.ROW_DIMS`) may
    differ between ranks and are shown by name; every other size is shown.
    """
    fields = [("the loss", bound.spec.name)]
    for arg in bound.spec.args:
        if arg.name not in bound.present:
            fields.append((f"`{arg.name}`", "absent"))
            continue
        sizes = ", ".join(dim if dim in ROW_DIMS else str(int(bound.dims[dim])) for dim in bound.form(arg.name) or ())
        dtype = bound.dtypes[arg.name]
        grad = "" if "float" not in dtype else (
            " requiring grad" if _requires_grad(inputs.get(arg.name)) else " not requiring grad")
        fields.append((f"`{arg.name}`", f"{dtype} [{sizes}]{grad}"))
    for option in bound.spec.options:
        if option.name != "gather":
            fields.append((f"`{option.name}`", _shown(bound.options[option.name])))
    return tuple(fields)


def _requires_grad(x: Any) -> bool:
    """Whether a backward through ``x`` will run (and with it the collectives of that backward)."""
    return isinstance(x, torch.Tensor) and x.requires_grad and torch.is_grad_enabled()


def _shown(value: Any) -> str:
    """An option's value, written the same way for equal values (``1`` and ``1.0``, NumPy scalars)."""
    if isinstance(value, torch.Tensor):
        grad = "requiring grad" if _requires_grad(value) else "not requiring grad"
        return f"a {dtype_name(value.dtype)} tensor {grad}"
    if isinstance(value, (bool, np.bool_)):
        return repr(bool(value))
    if isinstance(value, numbers.Integral):
        return repr(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    return repr(value)


def digest(description: Description) -> int:
    """A 64-bit digest of a description, as a signed int64."""
    raw = hashlib.blake2b(repr(description).encode(), digest_size=8).digest()
    return int.from_bytes(raw, "little", signed=True)


def exchange(group: Any, workers: int, loss: str, gather: Any, description: Description,
             counts: Sequence[int]) -> list[list[int]]:
    """Every rank's ``counts`` (``[[c_0 of rank 0, c_0 of rank 1, ...], ...]``) in one all-gather, after
    checking that every rank's call has the same description (else the shared error, on every rank)."""
    if len(counts) > MAX_COUNTS:
        raise AssertionError(f"{len(counts)} counts exceed the {MAX_COUNTS} that the exchange holds")
    row = [digest(description), len(counts), *[int(c) for c in counts]]
    table = _all_gather_row(torch.tensor(row + [0] * (_WIDTH - len(row)), dtype=torch.int64), group, workers)
    check(table, group, workers, loss, gather, description)
    return [[table[rank][2 + k] for rank in range(workers)] for k in range(len(counts))]


def _all_gather_row(row: torch.Tensor, group: Any, workers: int) -> list[list[int]]:
    device = _device(group)
    table = torch.empty(workers * row.numel(), dtype=torch.int64, device=device)
    dist.all_gather_single(table, row.to(device), group=group)
    return table.view(workers, row.numel()).tolist()


def check(table: list[list[int]], group: Any, workers: int, loss: str, gather: Any,
          description: Description) -> None:
    """Raise the shared error on every rank where the digests in ``table`` (column 0) differ."""
    if all(row[0] == table[0][0] for row in table):
        return
    descriptions: list[Any] = [None] * workers
    dist.all_gather_object(descriptions, description, group=group)
    raise difference(loss, gather, descriptions)


def difference(loss: str, gather: Any, descriptions: Sequence[Description]) -> Exception:
    """The error naming the first field in which the ranks' descriptions differ, rank 0's value and the
    first rank with another one (the same words on every rank)."""
    longest = max(len(d) for d in descriptions)
    for index in range(longest):
        values = [d[index] if index < len(d) else ("", "nothing") for d in descriptions]
        other = next((rank for rank, value in enumerate(values) if value != values[0]), None)
        if other is not None:
            what = values[0][0] or values[other][0]
            got = f"{what} {values[0][1]} on rank 0 and {values[other][1]} on rank {other}"
            return gather_error(loss, gather, _NEEDS, got, _TODO)
    raise AssertionError("the descriptions' digests differ but the descriptions do not")


def _device(group: Any) -> torch.device:
    """The device a group's collectives take their tensors on: CUDA for NCCL, else the CPU."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------------------------------------
# Under torch.compile


def traced_agreement(group: Any, loss: str, bound: Bound, description: Description) -> torch.Tensor:
    """The ``recloss::agree`` operator of a traced call: a 0-d int64 zero computed after every rank's call
    has been found to agree, rows included (add it to each tensor before its collective)."""
    rows = [int(bound.dims[dim]) if dim in bound.dims else -1 for dim in sorted(ROW_DIMS)]
    name = cast(Any, dist.group.WORLD if group is None else group).group_name
    return torch.ops.recloss.agree(torch.tensor(rows, dtype=torch.int64), name, group is None, loss,
                                   repr(description))


@torch.library.custom_op("recloss::agree", mutates_args=())
def _agree(rows: torch.Tensor, group_name: str, default_group: bool, loss: str, description: str) -> torch.Tensor:
    """Run by a compiled graph: exchange the digest of the call's description and its rows, raise the
    shared errors where they differ between ranks."""
    from torch.distributed.distributed_c10d import _resolve_process_group

    group = _resolve_process_group(cast(Any, group_name))
    workers = dist.get_world_size(group)
    fields: Description = ast.literal_eval(description)
    shown = True if default_group else group   # the `gather` value, as the error shows it
    row = torch.cat([torch.tensor([digest(fields), rows.numel()]), rows.cpu()])
    table = _all_gather_row(torch.cat([row, row.new_zeros(_WIDTH - row.numel())]), group, workers)
    check(table, group, workers, loss, shown, fields)
    for index, dim in enumerate(sorted(ROW_DIMS)):
        sizes = [table[rank][2 + index] for rank in range(workers)]
        other = next((rank for rank, size in enumerate(sizes) if size != sizes[0]), None)
        if other is not None:
            raise gather_error(loss, shown, "the same local sizes on every rank under torch.compile (the traced "
                               "call cannot read the other ranks' sizes)",
                               f"{dim} = {sizes[0]} on rank 0 and {sizes[other]} on rank {other}",
                               "drop the last incomplete batch, e.g. DataLoader(drop_last=True), or call the loss "
                               "outside the compiled function, e.g. through torch.compiler.disable")
    return rows.new_zeros(())


@_agree.register_fake
def _(rows: torch.Tensor, group_name: str, default_group: bool, loss: str, description: str) -> torch.Tensor:
    return rows.new_zeros(())
