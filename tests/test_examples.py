"""The worked examples (``examples/``): each two-tower script runs in its short mode in a subprocess (Keras once
per Keras backend: ``KERAS_BACKEND`` is read once per process) and must train (the loss decreases) and beat
the popularity baseline, with logQ from the exact frequencies and from the streaming frequency estimator; the
generated data and the shared evaluation are checked in process.

MovieLens-100K: the reader and the leave-last-out split on a small file written here, the error where the
package index cannot be reached, and the short mode of the TFRS comparison on the real file's first users
(the file is downloaded once into the cache; without the index the test skips, unless
``RECLOSS_REQUIRE_DATA=1``, set by ``.ci/run``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _installed(*modules: str) -> bool:
    return all(importlib.util.find_spec(module) is not None for module in modules)


def _example(script: str, keras_backend: str | None, *modules: str):
    name = script + (f"-{keras_backend}" if keras_backend else "")
    marks = [] if _installed(*modules) else [pytest.mark.skip(reason=f"needs {', '.join(modules)}")]
    return pytest.param(script, keras_backend, id=name, marks=marks)


RUNS = [
    _example("two_tower_torch.py", None, "torch"),
    _example("two_tower_jax.py", None, "jax", "optax"),
    _example("two_tower_keras.py", "tensorflow", "keras", "tensorflow"),
    _example("two_tower_keras.py", "jax", "keras", "jax"),
    _example("two_tower_keras.py", "torch", "keras", "torch"),
]


def run_short(script: str, keras_backend: str | None) -> dict:
    """Run ``examples/<script> --short`` and return the JSON summary it prints last."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2",
           # The examples' steps are small (a [256, 256] logits block): on a small shared machine a second
           # intra-op thread costs more in synchronisation than it gains. XLA's flags are left as they are.
           "OMP_NUM_THREADS": "1"}
    if keras_backend is not None:
        env["KERAS_BACKEND"] = keras_backend
    out = subprocess.run([sys.executable, str(EXAMPLES / script), "--short", "--logq-source", "both"],
                         capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("script, keras_backend", RUNS)
def test_example_trains_and_beats_popularity(script, keras_backend):
    summary = run_short(script, keras_backend)
    assert summary["mode"] == "short"
    assert set(summary["runs"]) == {"no_logq", "logq", "logq_estimated"}
    popularity = summary["popularity"]
    for variant, run in summary["runs"].items():
        losses = run["epoch_losses"]
        assert len(losses) == summary["config"]["epochs"] and np.all(np.isfinite(losses)), (variant, losses)
        assert losses[-1] < losses[0], (variant, losses)
        for k in (10, 50):
            assert run["metrics"][f"recall@{k}"] > popularity[f"recall@{k}"], (variant, k, run["metrics"])
            assert run["metrics"][f"ndcg@{k}"] > popularity[f"ndcg@{k}"], (variant, k, run["metrics"])
    # logQ from the streaming frequency estimator instead of the exact frequencies: close to the exact run (the
    # full mode's ratios are in the README; short runs are noisier, hence 0.9).
    exact, estimated = (summary["runs"][key]["metrics"]["recall@10"] for key in ("logq", "logq_estimated"))
    assert estimated >= 0.9 * exact, (estimated, exact)


@pytest.fixture
def examples_modules():
    """The examples' ``data`` and ``common`` modules (imported as the scripts import them), removed again after."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import common
        import data
        yield data, common
    finally:
        sys.path.remove(str(EXAMPLES))
        for name in ("common", "data", "movielens"):
            sys.modules.pop(name, None)


def test_generated_log_is_deterministic_split_by_user_and_long_tailed(examples_modules):
    data, _ = examples_modules
    log = data.generate(300, 200, seed=3)
    again = data.generate(300, 200, seed=3)
    other = data.generate(300, 200, seed=4)
    for field in ("train_users", "train_items", "test_users", "test_items"):
        np.testing.assert_array_equal(getattr(log, field), getattr(again, field))
    assert not np.array_equal(log.train_items, other.train_items)

    train = {(u, i) for u, i in zip(log.train_users, log.train_items)}
    test = {(u, i) for u, i in zip(log.test_users, log.test_items)}
    assert len(train) == len(log.train_items) and len(test) == len(log.test_items)  # no repeated pair
    assert not train & test
    assert set(log.test_users) == set(range(300)) == set(log.train_users)  # every user has both parts

    counts = log.item_counts
    assert counts.sum() == len(log.train_items)
    np.testing.assert_allclose(log.item_probability.sum(), 1.0)
    seen = counts > 0
    np.testing.assert_allclose(np.exp(log.item_log_q[seen]), counts[seen] / counts.sum(), rtol=1e-6)
    popular = log.popular_items(0.2)
    assert popular.sum() == 40 and counts[popular].min() >= counts[~popular].max()
    assert counts[popular].sum() > 0.4 * counts.sum()  # a fifth of the items, far more than a fifth of the log


def test_evaluation_masks_training_items_and_scores_groups(examples_modules):
    data, common = examples_modules
    log = data.generate(200, 150, seed=1)
    held_out = np.zeros((200, 150))
    held_out[log.test_users, log.test_items] = 1
    trained = np.zeros((200, 150))
    trained[log.train_users, log.train_items] = 1

    # Training items scored highest must not count: they are not candidates.
    perfect = common.evaluate(held_out + 2 * trained, log, "numpy")
    assert perfect["recall@50"] == pytest.approx(1.0) and perfect["ndcg@10"] == pytest.approx(1.0)
    assert perfect["recall@50 popular"] == pytest.approx(1.0) and perfect["recall@50 rare"] == pytest.approx(1.0)

    # Popular held-out items ranked first, rare ones last: only the popular group is found.
    popular = log.popular_items(common.POPULAR_SHARE)
    split = common.evaluate(held_out * np.where(popular, 1.0, -1.0), log, "numpy")
    assert split["recall@50 popular"] == pytest.approx(1.0)
    assert split["recall@10 rare"] == 0.0

    baseline = common.evaluate(common.popularity_scores(log), log, "numpy")
    assert baseline["recall@10 rare"] == 0.0 < baseline["recall@10 popular"]


@pytest.fixture
def movielens_module():
    """The examples' ``movielens`` module, removed again after."""
    sys.path.insert(0, str(EXAMPLES))
    try:
        import movielens
        yield movielens
    finally:
        sys.path.remove(str(EXAMPLES))
        for name in ("movielens", "data"):
            sys.modules.pop(name, None)


def test_movielens_reader_and_leave_last_out_split(movielens_module, tmp_path):
    path = tmp_path / "ml-100k.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                    "7\t100\t4\t50\n"      # user 7: items 100 (t=50), 300 (t=10), 200 (t=50, a later line)
                    "9\t300\t1\t5\n"       # user 9: items 300 (t=5), 100 (t=6)
                    "7\t300\t3\t10\n"
                    "9\t100\t2\t6\n"
                    "7\t200\t5\t50\n")
    ratings = movielens_module.read_ratings(path)
    assert ratings.shape == (5, 4) and ratings.dtype == np.int64
    data = movielens_module.leave_last_out(ratings)
    # ids renumbered in order: users 7 -> 0, 9 -> 1; items 100 -> 0, 200 -> 1, 300 -> 2
    assert (data.num_users, data.num_items) == (2, 3)
    held_out = dict(zip(data.test_users.tolist(), data.test_items.tolist()))
    assert held_out == {0: 1, 1: 0}       # the last in time; a tie in time goes to the later line
    assert sorted(zip(data.train_users.tolist(), data.train_items.tolist())) == [(0, 0), (0, 2), (1, 2)]

    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t1\t1\t1\n")
    with pytest.raises(ValueError, match="two interactions per user"):
        movielens_module.leave_last_out(movielens_module.read_ratings(path))
    path.write_text("user:token\titem:token\n1\t2\n")
    with pytest.raises(ValueError, match="expected the columns user_id, item_id, rating, timestamp"):
        movielens_module.read_ratings(path)


def test_movielens_without_the_index_fails_clearly(movielens_module, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)     # only the unreachable index below
    with pytest.raises(movielens_module.DataUnavailableError) as error:
        movielens_module.ml100k_path(tmp_path, pip_args=("--index-url", "http://127.0.0.1:9/simple"))
    message = str(error.value)
    assert "could not download the recbole==1.2.1 wheel from the package index" in message
    assert str(tmp_path / "ml-100k.inter") in message and "RECLOSS_DATA" in message
    assert not (tmp_path / "ml-100k.inter").exists()
    (tmp_path / "ml-100k.inter").write_text("cached")   # a cached file is used as it is, without the index
    assert movielens_module.ml100k_path(tmp_path, pip_args=("--index-url", "http://127.0.0.1:9/simple")) \
        == tmp_path / "ml-100k.inter"


def test_movielens_short_mode_tfrs_recloss_and_softmax_by_hand_agree(movielens_module):
    """The short mode on the real file (the first five users, 587 interactions): one tf-keras model trained
    with TFRS's tasks.Retrieval, recloss and the softmax by hand on the same batches and seeds, with and
    without logQ and accidental-hit removal, gives the same losses and metrics."""
    if not _installed("tensorflow_recommenders", "tf_keras"):
        pytest.skip("needs tensorflow-recommenders and tf-keras")
    try:
        movielens_module.ml100k_path()
    except movielens_module.DataUnavailableError as error:
        if os.environ.get("RECLOSS_REQUIRE_DATA") == "1":
            raise
        pytest.skip(str(error))
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, str(EXAMPLES / "two_tower_tfrs.py"), "--data", "movielens", "--short",
                          "--hits", "both"], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert summary["data"] == "movielens" and summary["config"]["num_users"] == 5
    trainers = summary["trainers"]
    assert set(trainers) == {"TFRS tasks.Retrieval", "recloss", "softmax by hand"}
    for variant in ("no_logq", "logq", "no_logq_hits_kept", "logq_hits_kept"):
        theirs = trainers["TFRS tasks.Retrieval"][variant]
        losses = theirs["epoch_losses"]
        assert np.all(np.isfinite(losses)) and losses[-1] < losses[0], (variant, losses)
        for name in ("recloss", "softmax by hand"):
            ours = trainers[name][variant]
            np.testing.assert_allclose(ours["epoch_losses"], losses, rtol=1e-5, err_msg=f"{name} {variant}")
            for metric, value in theirs["metrics"].items():
                assert ours["metrics"][metric] == pytest.approx(value, abs=1e-6), (name, variant, metric)
