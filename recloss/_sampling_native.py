"""The signatures of the estimator and queue classes (:mod:`recloss._torch_sampling`, :mod:`recloss._keras_sampling`),
described without importing any framework, for their type stubs (:mod:`recloss._stubs`); ``tests/test_typing.py``
checks that the classes have exactly these signatures."""

from __future__ import annotations

from dataclasses import dataclass

from recloss._native import Param, _REQUIRED
from recloss.sampling import DECAY, NUM_BUCKETS, NUM_HASHES

GATHER = "bool | str | tuple[str, ...] | object | None"


@dataclass(frozen=True)
class Method:
    name: str
    params: list[Param]
    returns: str


def _positional(name: str, annotation: str, default: object = _REQUIRED) -> Param:
    return Param(name, annotation, default, keyword_only=False)


FREQUENCY_OPTIONS = [_positional("num_buckets", "int", NUM_BUCKETS), _positional("num_hashes", "int", NUM_HASHES),
                     _positional("decay", "float", DECAY), Param("gather", GATHER, None)]
QUEUE_SIZE = [_positional("size", "int"), _positional("dim", "int")]


def torch_classes() -> dict[str, tuple[str, list[str], list[Method]]]:
    """Class name -> (docstring, attribute lines, methods) of the torch module forms."""
    tensor, optional = "torch.Tensor", "torch.Tensor | None"
    push = [_positional("emb", tensor), _positional("ids", optional, None), _positional("log_q", optional, None)]
    return {
        "FrequencyEstimator": (
            "Streaming estimate of each id's log Q from the ids seen in training (``torch.nn.Module``, state in "
            "buffers).", ["counts: torch.Tensor", "norm: torch.Tensor", "decay: torch.Tensor", "gather: Any",
                          "@property\ndef state(self) -> FrequencyState: ..."],
            [Method("__init__", FREQUENCY_OPTIONS, "None"),
             Method("forward", [_positional("ids", tensor)], tensor),
             Method("__call__", [_positional("ids", tensor)], tensor)]),
        "NegativeQueue": (
            "A queue of the last ``size`` candidates pushed, handed to the softmax losses as shared negatives "
            "(``torch.nn.Module``, state in buffers).",
            ["emb: torch.Tensor", "ids: torch.Tensor | None", "log_q: torch.Tensor", "head: torch.Tensor",
             "filled: torch.Tensor", "gather: Any", "track_ids: bool", "@property\ndef state(self) -> QueueState: ..."],
            [Method("__init__", QUEUE_SIZE + [Param("dtype", "torch.dtype", ...), Param("track_ids", "bool", True),
                                              Param("gather", GATHER, None)], "None"),
             Method("push", push, "None"), Method("negatives", [], "Negatives"),
             Method("forward", push, "Negatives"), Method("__call__", push, "Negatives")]),
    }


def keras_classes() -> dict[str, tuple[str, list[str], list[Method]]]:
    """Class name -> (docstring, attribute lines, methods) of the Keras layer forms."""
    push = [_positional("emb", "Any"), _positional("ids", "Any", None), _positional("log_q", "Any", None)]
    training = _positional("training", "bool | None", None)
    common = [Param("name", "str | None", None), Param("**kwargs", "Any")]
    return {
        "FrequencyEstimator": (
            "Streaming estimate of each id's log Q from the ids seen in training (Keras layer, state in "
            "non-trainable variables).", ["@property\ndef state(self) -> FrequencyState: ..."],
            [Method("__init__", FREQUENCY_OPTIONS + common, "None"),
             Method("call", [_positional("ids", "Any"), training], "Any"),
             Method("__call__", [_positional("ids", "Any"), training], "Any")]),
        "NegativeQueue": (
            "A queue of the last ``size`` candidates pushed, handed to the softmax losses as shared negatives "
            "(Keras layer, state in non-trainable variables).", ["@property\ndef state(self) -> QueueState: ..."],
            [Method("__init__", QUEUE_SIZE + [Param("track_ids", "bool", True), Param("gather", GATHER, None)]
                    + common, "None"),
             Method("push", push, "None"), Method("negatives", [], "Negatives"),
             Method("call", push + [training], "Negatives"), Method("__call__", push + [training], "Negatives")]),
    }


#: The stubs' import of the state and result types.
STUB_IMPORT = "from recloss.kernels.sampling import FrequencyState, Negatives, QueueState\n"
