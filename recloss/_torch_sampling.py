"""``torch.nn.Module`` views of the streaming frequency estimator and the negative queue: their state is buffers
(in ``state_dict``, moved by ``.to()``), their steps are the functions of :mod:`recloss.sampling`, written once
in :mod:`recloss.kernels.sampling`. Exported by :mod:`recloss.torch`."""

from __future__ import annotations

from typing import Any

import torch

from recloss import _validate_sampling as check
from recloss import sampling
from recloss.errors import OptionError
from recloss.kernels.sampling import FrequencyState, Negatives, QueueState


class FrequencyEstimator(torch.nn.Module):
    """Streaming estimate of each id's log Q (in-batch source: ``log(B p_id)``, its expected count per step)
    from the ids seen in training, as a count-min sketch of decayed counts (see
    :func:`recloss.sampling.frequency_init`).

    ``estimator(ids)`` in training mode (``module.train()``) returns the ids' log Q read from the previous
    steps and then counts this step's ids; in ``eval()`` mode it only reads. The ids are hashed by value, so
    the same stream of ids gives the same state as :func:`recloss.sampling.frequency_update` on JAX and as the
    Keras layer. With ``gather`` (True or a process group) every rank counts the global batch's ids and all
    ranks keep identical states (each rank must call it, as for the losses)::

        estimator = recloss.torch.FrequencyEstimator()
        log_q = estimator(item_ids)                      # [B] float32, no gradient
        loss = recloss.sampled_softmax_loss(query, item, pos_log_q=log_q, pos_ids=item_ids)

    Buffers: ``counts`` ``[num_hashes, num_buckets]``, ``norm`` and ``decay``, float32 (8 MiB at the defaults).
    """

    counts: torch.Tensor
    norm: torch.Tensor
    decay: torch.Tensor

    def __init__(self, num_buckets: int = sampling.NUM_BUCKETS, num_hashes: int = sampling.NUM_HASHES,
                 decay: float = sampling.DECAY, *, gather: Any = None) -> None:
        super().__init__()
        num_buckets, num_hashes, decay = sampling.check_frequency_options("FrequencyEstimator", num_buckets,
                                                                           num_hashes, decay)
        check.check_gather("FrequencyEstimator", gather)
        self.gather = gather
        self.register_buffer("counts", torch.zeros(num_hashes, num_buckets))
        self.register_buffer("norm", torch.zeros(()))
        self.register_buffer("decay", torch.tensor(decay, dtype=torch.float32))

    @property
    def state(self) -> FrequencyState:
        return FrequencyState(self.counts, self.norm, self.decay)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """``[B]`` float32 log Q of ``ids`` ``[B]`` (any integer dtype); counts them in training mode."""
        name = "FrequencyEstimator"
        ids = sampling._array(ids)
        check.check_framework(name, "ids", ids, "torch")
        check.check_ids(name, "ids", ids)
        with torch.no_grad():
            log_q, new = sampling.frequency_step(name, "torch", self.state, ids, self.gather, self.training)
            if self.training:
                self.counts.copy_(new.counts)
                self.norm.copy_(new.norm)
        return log_q

    def extra_repr(self) -> str:
        num_hashes, num_buckets = self.counts.shape
        return (f"num_buckets={num_buckets}, num_hashes={num_hashes}, decay={float(self.decay):g}"
                + ("" if self.gather is None else f", gather={self.gather!r}"))


class NegativeQueue(torch.nn.Module):
    """A queue of the last ``size`` candidates pushed (cross-batch memory, as MoCo's queue): their embeddings
    (without gradient), ids and log Q, handed to the softmax losses as shared negatives.

    ``push(emb, ids=None, log_q=None)`` adds a batch; ``negatives()`` returns
    :class:`recloss.sampling.Negatives` ``(neg_emb [size, D], neg_ids [size], neg_log_q [size])``, keywords of
    the losses; calling the module, ``queue(emb, ids, log_q)``, returns the negatives held before the batch
    and, in training mode, pushes it (MoCo's order)::

        queue = recloss.torch.NegativeQueue(65536, 128)
        negatives = queue(item_emb, ids=item_ids, log_q=log_q)
        loss = recloss.sampled_softmax_loss(query, item_emb, **negatives._asdict(), in_batch=True,
                                            pos_ids=item_ids, pos_log_q=log_q)

    Accidental hits against queued items are removed by id. Slots not filled yet add exactly nothing to the
    loss (see :func:`recloss.sampling.queue_negatives`); a queue of size 0 gives the plain in-batch loss.
    With ``gather`` (True or a process group) every rank pushes the global batch and all queues stay
    identical. Buffers: ``emb`` ``[size, dim]`` (``dtype``), ``ids`` ``[size]`` int64 (with ``track_ids``),
    ``log_q`` ``[size]`` float32, ``head`` and ``filled`` (int32).
    """

    emb: torch.Tensor
    ids: torch.Tensor | None
    log_q: torch.Tensor
    head: torch.Tensor
    filled: torch.Tensor

    def __init__(self, size: int, dim: int, *, dtype: torch.dtype = torch.float32, track_ids: bool = True,
                 gather: Any = None) -> None:
        super().__init__()
        name = "NegativeQueue"
        size, dim, track_ids = sampling.check_queue_options(name, size, dim, track_ids)
        if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
            raise OptionError(f"{name}: `dtype` must be a floating torch.dtype; got {dtype!r}")
        check.check_gather(name, gather)
        self.gather = gather
        self.track_ids = track_ids
        self.register_buffer("emb", torch.zeros(size, dim, dtype=dtype))
        self.register_buffer("ids", torch.zeros(size, dtype=torch.int64) if track_ids else None)
        self.register_buffer("log_q", torch.zeros(size))
        self.register_buffer("head", torch.zeros((), dtype=torch.int32))
        self.register_buffer("filled", torch.zeros((), dtype=torch.int32))

    @property
    def state(self) -> QueueState:
        return QueueState(self.emb, self.ids, self.log_q, self.head, self.filled)

    def push(self, emb: torch.Tensor, ids: torch.Tensor | None = None, log_q: torch.Tensor | None = None) -> None:
        """Add a batch: ``emb`` ``[n, dim]``, ``ids`` ``[n]`` (required with ``track_ids``), ``log_q`` ``[n]``."""
        emb, ids, log_q = (sampling._array(x) for x in (emb, ids, log_q))
        for argument, x in (("emb", emb), ("ids", ids), ("log_q", log_q)):
            if x is not None:
                check.check_framework("NegativeQueue.push", argument, x, "torch")
        with torch.no_grad():
            new = sampling.queue_step("NegativeQueue.push", "torch", self.state, emb, ids, log_q, self.gather)
            for buffer, value in zip((self.emb, self.ids, self.log_q, self.head, self.filled), new):
                if buffer is not None:
                    buffer.copy_(value)

    def negatives(self) -> Negatives:
        """:class:`recloss.sampling.Negatives` of every slot (empty ones add nothing to a loss)."""
        return sampling.negatives_of("torch", self.state)

    def forward(self, emb: torch.Tensor, ids: torch.Tensor | None = None,
                log_q: torch.Tensor | None = None) -> Negatives:
        """The negatives held before this batch; pushes the batch in training mode."""
        held = Negatives(*(None if x is None else x.clone() for x in self.negatives()))
        if self.training:
            self.push(emb, ids, log_q)
        return held

    def extra_repr(self) -> str:
        size, dim = self.emb.shape
        return (f"size={size}, dim={dim}, dtype={self.emb.dtype}, track_ids={self.track_ids}"
                + ("" if self.gather is None else f", gather={self.gather!r}"))


__all__ = ["FrequencyEstimator", "NegativeQueue"]
