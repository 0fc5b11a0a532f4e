"""The ``gather`` option on TensorFlow: collectives over the replica context of ``strategy.run``.

``gather=True`` inside ``strategy.run(...)`` of a ``tf.distribute`` strategy (``MirroredStrategy``,
``MultiWorkerMirroredStrategy``, ``TPUStrategy``). The gathers are ``ReplicaContext.all_gather``, which
accepts local batches of different sizes (the last batch of an epoch) and whose gradient gives each replica
its rows of the cotangents summed over the replicas; the sums are ``ReplicaContext.all_reduce(SUM)``, whose
gradient is the all-reduced cotangent. Each replica's offset comes from one all-gather of the local sizes.

Convention ``"share"``: each replica returns ``sum_{i local} w_i l_i / sum_{global} w`` (what
``tf.nn.compute_average_loss`` returns for a per-replica batch with the global batch size), so that
``strategy.reduce(SUM, ...)`` of the values is the global loss and the replicas' gradients, summed as
``optimizer.apply_gradients`` sums them, are the single-device gradient.
"""

from __future__ import annotations

import sys
from typing import Any, Sequence

import tensorflow as tf

from recloss._validate import gather_error

_NEEDS = "the replica context of a tf.distribute strategy"
_TODO = "call the loss inside strategy.run(...)"


def collectives(loss: str, gather: Any, option: str = "gather") -> "TensorFlowCollectives | None":
    """The collectives of the current replica context (``gather=True``), or the shared error (naming ``option``,
    the option that asked for them); None (the local batch) while Keras traces the loss only for its output's
    shape (``model.fit`` builds its compiled loss once in a scratch graph, in the cross-replica context: no
    value of that trace is ever computed)."""
    if gather is not True:
        raise gather_error(loss, gather, "True on the tensorflow backend (the current replica context)",
                           "a mesh axis name, which is for JAX" if isinstance(gather, (str, tuple))
                           else "a ProcessGroup, which is for torch", "pass gather=True inside strategy.run(...)",
                           option)
    if _keras_shape_trace():
        return None
    if not tf.distribute.has_strategy():
        raise gather_error(loss, gather, _NEEDS, "no strategy", _TODO, option)
    if tf.distribute.in_cross_replica_context():
        raise gather_error(loss, gather, _NEEDS, "the cross-replica context of strategy.scope(), outside "
                           "strategy.run", _TODO, option)
    return TensorFlowCollectives(tf.distribute.get_replica_context())


def _keras_shape_trace() -> bool:
    """True inside Keras's ``SymbolicScope`` (``backend.compute_output_spec``), looked up without importing Keras."""
    scope = sys.modules.get("keras.src.backend.common.symbolic_scope")
    return scope is not None and scope.in_symbolic_scope()


class TensorFlowCollectives:
    """:class:`recloss.kernels.distributed.Collectives` over a ``tf.distribute.ReplicaContext``."""

    convention = "share"

    def __init__(self, context: Any) -> None:
        self.context = context

    def num_workers(self) -> int:
        return self.context.num_replicas_in_sync

    def worker_index(self) -> Any:
        return tf.cast(self.context.replica_id_in_sync_group, tf.int32)

    def sizes(self, counts: Sequence[Any]) -> list[tf.Tensor]:
        """Every replica's counts, in one all-gather: per count an int32 ``[W]`` tensor."""
        local = tf.stack([tf.cast(count, tf.int32) for count in counts])[None, :]
        table = self.context.all_gather(local, axis=0)           # [W, len(counts)]
        return [table[:, k] for k in range(len(counts))]

    def offset(self, sizes: tf.Tensor) -> tf.Tensor:
        return tf.reduce_sum(sizes[:self.worker_index()])

    def all_gather(self, x: tf.Tensor, sizes: tf.Tensor) -> tf.Tensor:
        gathered = self.context.all_gather(_own(x), axis=0)
        # In a graph the gathered shape is unknown; every replica's trailing dimensions are the local ones.
        gathered.set_shape([None, *x.shape[1:]])
        return gathered

    def all_reduce_sum(self, x: tf.Tensor) -> tf.Tensor:
        return self.context.all_reduce(tf.distribute.ReduceOp.SUM, _own(x))

    def all_reduce_max(self, x: tf.Tensor) -> tf.Tensor:
        """``ReplicaContext.all_reduce`` has no maximum: every replica's values are gathered and reduced here."""
        return tf.reduce_max(self.context.all_gather(_own(tf.stop_gradient(x))[None], axis=0), axis=0)

    def local_rows(self, x: tf.Tensor, offset: Any, count: Any) -> tf.Tensor:
        return x[offset:offset + count]

    #: Each replica differentiates its own share; the collectives' gradients bring the others' cotangents.
    backward_copies = 1

    def scale_gradient(self, x: tf.Tensor, factor: float) -> tf.Tensor:
        return tf.stop_gradient(x) + (x - tf.stop_gradient(x)) * factor


def _own(x: tf.Tensor) -> tf.Tensor:
    """``x`` as a tensor of this replica's own. ``strategy.run`` hands every replica the same object for a plain
    (non-distributed) argument, and ``merge_call`` takes a value that is the same object on every replica for
    one value, not one per replica: its all-gather would return one copy (replica 1's offset then points past
    the gathered rows) and its sum would not add the copies."""
    return tf.identity(x)
