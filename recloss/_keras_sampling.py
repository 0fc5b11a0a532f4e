"""Keras 3 layers of the streaming frequency estimator and the negative queue, on every Keras backend: their
state is non-trainable variables (saved with the model, updated inside ``model.fit`` under ``jit_compile``),
their steps are the functions of :mod:`recloss.sampling`, written once in :mod:`recloss.kernels.sampling`.
Exported by :mod:`recloss.keras`."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

from recloss import _validate_sampling as check
from recloss import sampling
from recloss.kernels.sampling import FrequencyState, Negatives, QueueState

_SERIAL_PACKAGE = "recloss"


def _backend() -> str:
    return keras.backend.backend()


def _read(variable: Any) -> Any:
    """The value of a Keras variable as a tensor of the backend (a ``tf.Variable`` is read, a snapshot)."""
    if variable is None:
        return None
    value = variable.value
    if _backend() == "tensorflow":
        import tensorflow as tf
        return tf.identity(value)
    return value


def _ids_dtype() -> str:
    if _backend() == "jax":
        import jax
        return "int64" if jax.config.jax_enable_x64 else "int32"  # type: ignore[attr-defined]
    return "int64"


@keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE, name="FrequencyEstimator")
class FrequencyEstimator(keras.layers.Layer):
    """Streaming estimate of each id's log Q (in-batch source: ``log(B p_id)``, its expected count per step)
    from the ids seen in training, as a count-min sketch of decayed counts (see
    :func:`recloss.sampling.frequency_init`), for TensorFlow, JAX and PyTorch through Keras.

    ``layer(ids, training=True)`` (as ``model.fit`` calls it) returns the ids' log Q read from the previous
    steps and counts this step's ids; with ``training=False`` it only reads. The ids are hashed by value, so
    the same stream gives the same state as the torch module and the JAX functions. With ``gather=True``
    (inside ``strategy.run`` of a ``tf.distribute`` strategy) every replica counts the global batch's ids and
    all replicas keep identical states::

        class TwoTower(keras.Model):
            def __init__(self):
                super().__init__()
                ...
                self.log_q = recloss.keras.FrequencyEstimator()
                self.task = recloss.keras.Retrieval(temperature=0.05)

            def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
                query, item = y_pred
                return self.task(query, item, pos_ids=x["item"], pos_log_q=self.log_q(x["item"], training=training))

    Variables (non-trainable, float32): ``counts`` ``[num_hashes, num_buckets]`` (8 MiB at the defaults),
    ``norm`` and ``decay``.
    """

    def __init__(self, num_buckets: int = sampling.NUM_BUCKETS, num_hashes: int = sampling.NUM_HASHES,
                 decay: float = sampling.DECAY, *, gather: Any = None, name: str | None = None,
                 **kwargs: Any) -> None:
        num_buckets, num_hashes, decay = sampling.check_frequency_options("FrequencyEstimator", num_buckets,
                                                                           num_hashes, decay)
        check.check_gather("FrequencyEstimator", gather)
        super().__init__(name=name, **kwargs)
        self.num_buckets, self.num_hashes, self.decay_value, self.gather = num_buckets, num_hashes, decay, gather
        state = dict(trainable=False, autocast=False, dtype="float32", aggregation="only_first_replica")
        self.counts = self.add_weight(shape=(num_hashes, num_buckets), initializer="zeros", name="counts", **state)
        self.norm = self.add_weight(shape=(), initializer="zeros", name="norm", **state)
        self.decay = self.add_weight(shape=(), initializer=keras.initializers.Constant(decay), name="decay", **state)
        self.built = True

    @property
    def state(self) -> FrequencyState:
        return FrequencyState(*(_read(v) for v in (self.counts, self.norm, self.decay)))

    def call(self, ids: Any, training: bool | None = None) -> Any:
        name = "FrequencyEstimator"
        backend = _backend()
        ids = ops.convert_to_tensor(ids)   # as Layer.__call__ converts its inputs (NumPy, other frameworks' tensors)
        check.check_ids(name, "ids", ids)
        log_q, new = sampling.frequency_step(name, backend, self.state, ids, self.gather, bool(training))
        if training:
            self.counts.assign(new.counts)
            self.norm.assign(new.norm)
        return log_q

    def compute_output_spec(self, ids: Any, training: bool | None = None) -> keras.KerasTensor:
        return keras.KerasTensor(ids.shape, dtype="float32")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "num_buckets": self.num_buckets, "num_hashes": self.num_hashes,
                "decay": self.decay_value, **({} if self.gather is None else {"gather": self.gather})}


@keras.saving.register_keras_serializable(package=_SERIAL_PACKAGE, name="NegativeQueue")
class NegativeQueue(keras.layers.Layer):
    """A queue of the last ``size`` candidates pushed (cross-batch memory, as MoCo's queue): their embeddings
    (without gradient), ids and log Q, handed to the softmax losses as shared negatives, on every Keras backend.

    ``push(emb, ids=None, log_q=None)`` adds a batch; ``negatives()`` returns
    :class:`recloss.sampling.Negatives` ``(neg_emb [size, D], neg_ids [size], neg_log_q [size])``, keywords of
    the losses; ``layer(emb, ids, log_q, training=True)`` returns the negatives held before the batch and pushes
    it (MoCo's order), inside ``model.fit`` too. Slots not filled yet add exactly nothing to the loss (see
    :func:`recloss.sampling.queue_negatives`); a queue of size 0 gives the plain in-batch loss. With
    ``gather=True`` (inside ``strategy.run``) every replica pushes the global batch and all queues stay
    identical. Variables (non-trainable): ``emb`` ``[size, dim]`` (the layer's variable dtype), ``ids``
    ``[size]`` (int64; int32 on JAX without x64; with ``track_ids``), ``log_q`` ``[size]`` float32, ``head``,
    ``filled``.
    """

    def __init__(self, size: int, dim: int, *, track_ids: bool = True, gather: Any = None, name: str | None = None,
                 **kwargs: Any) -> None:
        size, dim, track_ids = sampling.check_queue_options("NegativeQueue", size, dim, track_ids)
        check.check_gather("NegativeQueue", gather)
        super().__init__(name=name, **kwargs)
        self.size, self.dim, self.track_ids, self.gather = size, dim, track_ids, gather
        state = dict(trainable=False, autocast=False, aggregation="only_first_replica")
        self.emb = self.add_weight(shape=(size, dim), initializer="zeros", name="emb",
                                   dtype=self.dtype_policy.variable_dtype, **state)
        self.ids = self.add_weight(shape=(size,), initializer="zeros", name="ids", dtype=_ids_dtype(),
                                   **state) if track_ids else None
        self.log_q = self.add_weight(shape=(size,), initializer="zeros", name="log_q", dtype="float32", **state)
        self.head = self.add_weight(shape=(), initializer="zeros", name="head", dtype="int32", **state)
        self.filled = self.add_weight(shape=(), initializer="zeros", name="filled", dtype="int32", **state)
        self.built = True

    def _variables(self) -> tuple:
        return (self.emb, self.ids, self.log_q, self.head, self.filled)

    @property
    def state(self) -> QueueState:
        return QueueState(*(_read(v) for v in self._variables()))

    def push(self, emb: Any, ids: Any = None, log_q: Any = None) -> None:
        """Add a batch: ``emb`` ``[n, dim]``, ``ids`` ``[n]`` (required with ``track_ids``), ``log_q`` ``[n]``."""
        backend = _backend()
        # As Layer.__call__ does with a layer's inputs: arrays of any kind become tensors of the Keras backend.
        emb, ids, log_q = (None if x is None else ops.convert_to_tensor(x) for x in (emb, ids, log_q))
        new = sampling.queue_step("NegativeQueue.push", backend, self.state, emb, ids, log_q, self.gather)
        for variable, value in zip(self._variables(), new):
            if variable is not None:
                variable.assign(value)

    def negatives(self) -> Negatives:
        """:class:`recloss.sampling.Negatives` of every slot (empty ones add nothing to a loss)."""
        return sampling.negatives_of(_backend(), self.state)

    def call(self, emb: Any, ids: Any = None, log_q: Any = None, training: bool | None = None) -> Negatives:
        held = self.negatives()
        if training and _backend() == "torch":   # torch variables are updated in place: keep what was held
            held = Negatives(*(None if x is None else x.clone() for x in held))
        if training:
            self.push(emb, ids, log_q)
        return held

    def compute_output_spec(self, emb: Any, ids: Any = None, log_q: Any = None,
                            training: bool | None = None) -> Negatives:
        return Negatives(keras.KerasTensor((self.size, self.dim), dtype=self.dtype_policy.variable_dtype),
                         keras.KerasTensor((self.size,), dtype=_ids_dtype()) if self.track_ids else None,
                         keras.KerasTensor((self.size,), dtype="float32"))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size, "dim": self.dim, "track_ids": self.track_ids,
                **({} if self.gather is None else {"gather": self.gather})}


__all__ = ["FrequencyEstimator", "NegativeQueue"]
