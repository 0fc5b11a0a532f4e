"""JAX calls on arrays sharded over a mesh, run by ``python tests/distributed_scripts.py jax`` (4 host devices,
float64) in the process of its other JAX checks.

* :func:`batch_sharded_checks`: ordinary calls (no ``gather`` option) on batch-sharded arrays under
  ``jax.jit`` give the one-device result on meshes of ``Auto`` and of ``Explicit`` axes (JAX 0.10's default).
* :func:`guide_sharding_examples`: the cross-device guide's JAX multi-device code blocks run as written and give the
  one-device loss and gradient.

Each raises an ``AssertionError`` naming the check that failed.
"""

from __future__ import annotations

import itertools
import pathlib
import re
from typing import Any, Callable, NamedTuple

import numpy as np

GUIDE = pathlib.Path(__file__).resolve().parents[1] / "docs" / "guide" / "cross-device.md"


def close(a: Any, b: Any, what: str, tol: float = 1e-12) -> None:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-12)
    error = float(np.max(np.abs(a - b), initial=0.0)) / scale
    assert a.shape == b.shape and error <= tol, f"{what}: relative error {error:.2e} (shapes {a.shape}, {b.shape})"


# ----------------------------------------------------------------------------------------------------------
# An independent float64 retrieval softmax: value and gradient, candidate by candidate


def retrieval_softmax_numpy(q: np.ndarray, p: np.ndarray, n: np.ndarray | None, *, in_batch: bool,
                            pos_ids: Any, neg_ids: Any, pos_log_q: Any, neg_log_q: Any, weight: Any,
                            temperature: float) -> tuple[float, dict[str, np.ndarray]]:
    """``sum_i w_i l_i / sum_i w_i`` with ``l_i = logsumexp_c(z_ic) - z_i,pos`` over row ``i``'s candidates
    (its positive; the other rows' positives if ``in_batch``, minus those with the row's id; the shared
    ``[N, D]`` or its own ``[K, D]`` negatives, minus those with the row's id), ``z = q_i . key / T - log_q``;
    and its gradient with respect to ``query_emb``, ``pos_emb`` and ``neg_emb`` (``dl_i/dz_ic = softmax_ic -
    [c is the positive]``)."""
    b = q.shape[0]
    weight = np.ones(b) if weight is None else weight
    grads = {"query_emb": np.zeros_like(q), "pos_emb": np.zeros_like(p)}
    if n is not None:
        grads["neg_emb"] = np.zeros_like(n)
    total = 0.0
    for i in range(b):
        # (logit, which tensor holds the key, the key's index there); the positive first.
        candidates = [(q[i] @ p[i] / temperature - (0.0 if pos_log_q is None else pos_log_q[i]), "pos_emb", i)]
        if in_batch:
            candidates += [(q[i] @ p[j] / temperature - (0.0 if pos_log_q is None else pos_log_q[j]), "pos_emb", j)
                           for j in range(b) if j != i and (pos_ids is None or pos_ids[j] != pos_ids[i])]
        if n is not None:
            for k in range(n.shape[-2] if n.ndim == 3 else n.shape[0]):
                at = (i, k) if n.ndim == 3 else k
                if neg_ids is None or neg_ids[at] != pos_ids[i]:
                    candidates.append((q[i] @ n[at] / temperature - (0.0 if neg_log_q is None else neg_log_q[at]),
                                       "neg_emb", at))
        logits = np.array([c[0] for c in candidates])
        top = logits.max()
        softmax = np.exp(logits - top) / np.sum(np.exp(logits - top))
        total += weight[i] * (top + np.log(np.sum(np.exp(logits - top))) - logits[0])
        share = weight[i] / np.sum(weight)
        for (_, source, at), dz in zip(candidates, softmax - np.eye(len(candidates))[0]):
            key = (p if source == "pos_emb" else n)[at]
            grads["query_emb"][i] += share * dz * key / temperature
            grads[source][at] += share * dz * q[i] / temperature
    return total / np.sum(weight), grads


# ----------------------------------------------------------------------------------------------------------
# Batch-sharded ordinary calls


class Call(NamedTuple):
    """One call to check: ``function(**tensors, **options)``; each tensor with whether its leading axis is the
    batch's (sharded) or not (replicated); the arguments to differentiate; the expected value and gradients
    (None: the same call on one device)."""

    name: str
    function: Callable[..., Any]
    tensors: dict[str, tuple[np.ndarray, bool]]
    options: dict[str, Any]
    wrt: list[str]
    expected: tuple[float, dict[str, np.ndarray]] | None


#: The factors of ``sampled_softmax_loss``'s candidate sets: negatives (none, shared ``[N, D]`` replicated,
#: shared and sharded over the batch's axis, per-row ``[B, K, D]``), in-batch negatives, ids, logQ, weights,
#: implementation.
FACTORS = {"negatives": ("none", "shared", "shared, sharded", "per-row"), "in_batch": (True, False),
           "ids": ("none", "pos", "both"), "log_q": ("none", "pos", "neg", "both"), "weights": (False, True),
           "implementation": ("materialized", "streaming")}


#: The catalogue's other softmax losses over embeddings.
EMBEDDING_SOFTMAX = ("unsupervised_softmax_cross_entropy_loss", "info_nce_loss")


def _possible(combination: dict[str, Any]) -> bool:
    if combination["negatives"] == "none" and (not combination["in_batch"] or combination["ids"] == "both"
                                               or combination["log_q"] in ("neg", "both")):
        return False     # in-batch only: no negatives to carry ids or logQ
    return not (combination["implementation"] == "streaming" and combination["negatives"] == "per-row")


def pairwise_cover(combinations: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A subset of ``combinations`` in which every pair of factor levels that occurs together in one of them
    occurs in one chosen (greedy: the combination covering most uncovered pairs first)."""
    def pairs(c: dict[str, Any]) -> set:
        return set(itertools.combinations(sorted(c.items(), key=lambda item: item[0]), 2))
    uncovered, chosen = set().union(*map(pairs, combinations)), []
    while uncovered:
        best = max(combinations, key=lambda c: len(pairs(c) & uncovered))
        chosen.append(best)
        uncovered -= pairs(best)
    return chosen


def sampled_softmax_calls(rng: np.random.Generator, batch: int, dim: int) -> list[tuple[dict[str, Any], Call]]:
    """Every possible combination of :data:`FACTORS` and its call, valued by :func:`retrieval_softmax_numpy`."""
    import recloss

    n, k = 12, 3
    data = {"query_emb": rng.normal(size=(batch, dim)), "pos_emb": rng.normal(size=(batch, dim)),
            "pos_ids": rng.integers(0, 4, batch), "pos_log_q": np.log(rng.uniform(0.05, 1, batch)),
            "sample_weight": rng.uniform(0.0, 2.0, batch)}
    negatives = {"shared": {"neg_emb": rng.normal(size=(n, dim)), "neg_ids": rng.integers(0, 4, n),
                            "neg_log_q": np.log(rng.uniform(0.05, 1, n))},
                 "per-row": {"neg_emb": rng.normal(size=(batch, k, dim)), "neg_ids": rng.integers(0, 4, (batch, k)),
                             "neg_log_q": np.log(rng.uniform(0.05, 1, (batch, k)))}}
    calls = []
    for levels in itertools.product(*FACTORS.values()):
        c = dict(zip(FACTORS, levels))
        if not _possible(c):
            continue
        wanted = {"query_emb", "pos_emb"} | ({"pos_ids"} if c["ids"] != "none" else set()) | (
            {"pos_log_q"} if c["log_q"] in ("pos", "both") else set()) | ({"sample_weight"} if c["weights"] else set())
        tensors = {name: (data[name], True) for name in wanted}
        if c["negatives"] != "none":
            source = negatives[c["negatives"].split(",")[0]]
            batch_led = c["negatives"] != "shared"      # per-row, or shared and sharded over the batch's axis
            extra = {"neg_emb"} | ({"neg_ids"} if c["ids"] == "both" else set()) | (
                {"neg_log_q"} if c["log_q"] in ("neg", "both") else set())
            tensors.update({name: (source[name], batch_led) for name in extra})
        plain = {name: value for name, (value, _) in tensors.items()}
        expected = retrieval_softmax_numpy(
            plain["query_emb"], plain["pos_emb"], plain.get("neg_emb"), in_batch=c["in_batch"],
            pos_ids=plain.get("pos_ids"), neg_ids=plain.get("neg_ids"), pos_log_q=plain.get("pos_log_q"),
            neg_log_q=plain.get("neg_log_q"), weight=plain.get("sample_weight"), temperature=0.5)
        calls.append((c, Call("sampled_softmax_loss " + ", ".join(f"{key}={value}" for key, value in c.items()),
                              recloss.sampled_softmax_loss, tensors,
                              {"in_batch": c["in_batch"], "implementation": c["implementation"], "temperature": 0.5},
                              [x for x in ("query_emb", "pos_emb", "neg_emb") if x in tensors], expected)))
    return calls


def catalogue_calls(rng: np.random.Generator) -> list[Call]:
    """Every case of every other loss and metric of the catalogue, each tensor sharded along its leading axis
    (B, N or M, all 8 rows)."""
    import recloss
    from recloss import CATALOGUE
    from recloss.losses import METRICS
    from recloss.parity import make_inputs

    dims = {"B": 8, "K": 3, "N": 8, "D": 4, "M": 8, "L": 5}
    calls = []
    for spec in (*CATALOGUE.values(), *METRICS.values()):
        if spec.name == "sampled_softmax_loss":
            continue
        function = getattr(recloss.metrics if spec.value_only else recloss, spec.name)
        for case in spec.cases:
            inputs = make_inputs(spec, case, rng, dims)
            tensors = {name: (value, True) for name, value in inputs.items() if value is not None}
            wrt = [] if spec.value_only else [arg.name for arg in spec.args
                                              if arg.name in tensors and arg.kind == "float" and not arg.constant]
            calls.append(Call(f"{spec.name} ({case.name})", function, tensors, dict(case.options), wrt, None))
    return calls


def _values_and_grads(calls: list[Call]) -> Callable[..., Any]:
    """One jitted program: each call's ``(sum of its loss, [its gradients])`` from its tensors."""
    import jax
    import jax.numpy as jnp

    def one(call: Call, tensors: dict[str, Any]) -> tuple[Any, list[Any]]:
        def total(differentiated: list[Any]) -> Any:
            return jnp.sum(call.function(**{**tensors, **dict(zip(call.wrt, differentiated))}, **call.options))
        if not call.wrt:
            return total([]), []
        return jax.value_and_grad(total)([tensors[name] for name in call.wrt])
    return jax.jit(lambda placed: [one(call, tensors) for call, tensors in zip(calls, placed)])


def reference_expectation(call: Call) -> tuple[float, dict[str, np.ndarray]]:
    """The float64 reference's value and its gradients by central differences."""
    from recloss import CATALOGUE
    from recloss.losses import METRICS
    from recloss.parity import reference_gradients, reference_value

    spec = {**CATALOGUE, **METRICS}[call.function.__name__]
    inputs = {arg.name: call.tensors[arg.name][0] if arg.name in call.tensors else None for arg in spec.args}
    return (float(np.sum(reference_value(spec, inputs, call.options))),
            {name: grad for name, grad in reference_gradients(spec, inputs, call.options, call.wrt).items()})


def batch_sharded_checks() -> None:
    """On an ``Explicit`` mesh, where a sharding mismatch is an error when the function is traced, every
    combination of :data:`FACTORS` and every case of every other loss and metric traces under ``jax.jit``
    (value and gradient). Run and compared: a pairwise cover of the combinations against the float64 formula,
    on ``Explicit`` and ``Auto`` meshes; every case of :data:`EMBEDDING_SOFTMAX` and the first case of every
    other loss and metric against the float64 reference (central differences for the gradients) on the
    ``Explicit`` mesh. One program per mesh."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import AxisType, NamedSharding, PartitionSpec as P

    rng = np.random.default_rng(3)
    sampled = sampled_softmax_calls(rng, 8, 4)
    catalogue = catalogue_calls(rng)
    chosen = pairwise_cover([combination for combination, _ in sampled])
    # Run on both meshes: the cover. On the Explicit mesh also: every case of the other softmax losses over
    # embeddings (their candidates are resharded like sampled_softmax_loss's), the first case of each other one.
    cover = [call for combination, call in sampled if combination in chosen]
    run = cover + [call for index, call in enumerate(catalogue) if call.function.__name__ in EMBEDDING_SOFTMAX
                   or index == 0 or call.function is not catalogue[index - 1].function]
    expected = [call.expected or reference_expectation(call) for call in run]

    def placed(call: Call, mesh: Any) -> dict[str, Any]:
        return {name: jax.device_put(jnp.asarray(value), NamedSharding(mesh, P("data") if sharded else P()))
                for name, (value, sharded) in call.tensors.items()}

    for axis_type in (AxisType.Explicit, AxisType.Auto):
        mesh = jax.make_mesh((4,), ("data",), axis_types=(axis_type,))
        with jax.set_mesh(mesh):
            if axis_type == AxisType.Explicit:
                ran = {id(call) for call in run}        # traced when they run below
                for call in [call for _, call in sampled] + catalogue:
                    if id(call) in ran:
                        continue
                    try:
                        _values_and_grads([call]).trace([placed(call, mesh)])
                    except Exception as error:
                        raise AssertionError(f"Explicit mesh, {call.name}: {type(error).__name__}: {error}"
                                             ) from error
                # Eager calls, the first operation by operation, the second compiled by recloss, of the case that
                # used to fail (in-batch and shared negatives with pos_ids only).
                issue_case = next(call for combination, call in sampled if combination == dict(
                    negatives="shared", in_batch=True, ids="pos", log_q="none", weights=False,
                    implementation="materialized"))
                for _ in range(2):
                    close(issue_case.function(**placed(issue_case, mesh), **issue_case.options),
                          issue_case.expected[0], f"Explicit mesh, eager, {issue_case.name}: value")
            calls = run if axis_type == AxisType.Explicit else cover
            results = _values_and_grads(calls)([placed(call, mesh) for call in calls])
        for call, (value, grads), (want_value, want_grads) in zip(calls, results, expected):
            tol = 1e-12 if call.expected else 1e-7       # central differences of the reference: ~1e-9
            close(value, want_value, f"{axis_type} mesh, {call.name}: value")
            for name, got in zip(call.wrt, grads):
                close(got, want_grads[name], f"{axis_type} mesh, {call.name}: gradient of {name}", tol)


# ----------------------------------------------------------------------------------------------------------
# The cross-device guide's JAX multi-device examples, as written


def guide_python_blocks(text: str) -> list[str]:
    """The cross-device guide's ```python blocks (those indented inside a list item dedented)."""
    import textwrap
    blocks = re.findall(r"^([ \t]*)```python\n(.*?)^\1```$", text, flags=re.MULTILINE | re.DOTALL)
    return [textwrap.dedent(body) for _, body in blocks]


def _check_shard_map_example(namespace: dict[str, Any]) -> None:
    """The loss and the parameters' gradient equal the same loss on one device over the whole batch."""
    import jax
    import recloss
    tower, params = namespace["tower"], namespace["params"]
    features, items, ids = (np.asarray(namespace[name]) for name in ("features", "items", "item_ids"))

    def one_device(params: Any) -> Any:
        return recloss.info_nce_loss(tower(params, features), tower(params, items), ids=ids, symmetric=True,
                                     normalize=True)
    want, want_grad = jax.jit(jax.value_and_grad(one_device))(params)
    close(namespace["loss"], want, "guide shard_map example: loss", 1e-5)
    close(namespace["grads"], want_grad, "guide shard_map example: gradient", 1e-5)


def _check_sharded_call_example(namespace: dict[str, Any]) -> None:
    """The loss of batch-sharded arrays equals the same call on one device."""
    import jax
    want = jax.jit(namespace["loss_fn"])(*(np.asarray(namespace[name]) for name in ("query", "item", "neg", "item_ids")))
    close(namespace["loss"], want, "guide batch-sharded call example: loss", 1e-5)


#: The cross-device guide's JAX multi-device examples, recognised by a line of theirs, and how each result is checked.
GUIDE_EXAMPLES = {"return jax.shard_map(local, mesh=mesh": _check_shard_map_example,
                   "loss = jax.jit(loss_fn)(query, item, neg, item_ids)": _check_sharded_call_example}


def guide_sharding_examples() -> None:
    """Each example runs as written (in JAX's default 32-bit mode, on the process's 4 devices) and its result
    equals the one-device computation."""
    import jax
    assert jax.device_count() > 1, "the guide's sharding examples need several devices"
    blocks = guide_python_blocks(GUIDE.read_text(encoding="utf-8"))
    multi_device = [block for block in blocks if "make_mesh" in block]
    found = {marker: [block for block in multi_device if marker in block] for marker in GUIDE_EXAMPLES}
    assert all(len(hits) == 1 for hits in found.values()), f"guide examples found: {found}"
    assert len(multi_device) == len(GUIDE_EXAMPLES), "a guide JAX multi-device example without a check"
    with jax.enable_x64(False):
        for marker, (block,) in found.items():
            namespace: dict[str, Any] = {"__name__": "guide_example"}
            exec(compile(block, f"cross-device.md example ({marker})", "exec"), namespace)  # noqa: S102
            GUIDE_EXAMPLES[marker](namespace)
