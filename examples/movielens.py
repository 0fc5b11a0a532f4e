"""MovieLens-100K for the worked example, read from the RecBole wheel on the package index (NumPy only).

RecBole's wheel ships the data set as ``recbole/dataset_example/ml-100k/ml-100k.inter`` (tab-separated
``user_id``, ``item_id``, ``rating``, ``timestamp``; 100,000 ratings of 1,682 movies by 943 users, every user
with at least 20). :func:`ml100k_path` downloads the wheel once with ``pip download --no-deps
recbole==1.2.1`` (RecBole itself is never installed), copies that one file into a cache folder and returns
its path; :func:`load` reads it and makes a leave-last-out split: each user's last rating in time is held
out, the others are the training log. Every rating counts as an interaction (implicit feedback).

The cache folder is ``$RECLOSS_DATA`` if set, else ``~/.cache/recloss``. Without access to the package
index, place ``ml-100k.inter`` there yourself.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from data import Interactions

RECBOLE = "recbole==1.2.1"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
FILE_NAME = "ml-100k.inter"


class DataUnavailableError(RuntimeError):
    """The data file is not cached and could not be downloaded."""


def cache_dir() -> Path:
    """``$RECLOSS_DATA``, else ``~/.cache/recloss``."""
    return Path(os.environ.get("RECLOSS_DATA") or Path.home() / ".cache" / "recloss")


def ml100k_path(cache: Path | None = None, pip_args: tuple[str, ...] = ()) -> Path:
    """The path of ``ml-100k.inter`` in the cache, downloaded first if it is not there.

    ``pip_args`` are added to the ``pip download`` command (e.g. ``("--index-url", URL)``). Raises
    :class:`DataUnavailableError` saying what failed and where to put the file by hand.
    """
    target = (cache or cache_dir()) / FILE_NAME
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as folder:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
                   "--retries", "1", "--timeout", "15", "--dest", folder, RECBOLE, *pip_args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        except subprocess.TimeoutExpired:
            done = subprocess.CompletedProcess(command, 1, "", "no answer within 300 s")
        wheels = sorted(Path(folder).glob("recbole-*.whl"))
        if done.returncode != 0 or not wheels:
            said = (done.stderr or done.stdout).strip().splitlines()
            raise DataUnavailableError(
                f"MovieLens-100K: could not download the {RECBOLE} wheel from the package index, which ships the "
                f"data set ({' '.join(command[2:])} failed: {said[-1] if said else 'no output'}). Connect to the "
                f"package index, or put {MEMBER!r} from that wheel at {target} (or set RECLOSS_DATA to a folder "
                f"holding {FILE_NAME}).")
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(".partial")
        with zipfile.ZipFile(wheels[0]) as wheel:
            partial.write_bytes(wheel.read(MEMBER))
        partial.replace(target)   # atomic: a concurrent reader sees no file or the whole file
    return target


def read_ratings(path: Path) -> np.ndarray:
    """The ratings file as an ``[R, 4]`` int64 array: user id, item id, rating, timestamp (the file's order)."""
    with open(path, encoding="utf-8") as handle:
        header = handle.readline().split()
        if [column.split(":")[0] for column in header] != ["user_id", "item_id", "rating", "timestamp"]:
            raise ValueError(f"{path}: expected the columns user_id, item_id, rating, timestamp; got {header}")
        table = np.loadtxt(handle, dtype=np.float64, ndmin=2)
    return table.astype(np.int64)


def leave_last_out(ratings: np.ndarray) -> Interactions:
    """Each user's last interaction in time is held out (ties in time: the later line of the file); user and
    item ids are renumbered ``0..n-1`` in order of their original ids. Users need two interactions or more."""
    users, user_ids = np.unique(ratings[:, 0], return_inverse=True)
    items, item_ids = np.unique(ratings[:, 1], return_inverse=True)
    order = np.lexsort((np.arange(len(ratings)), ratings[:, 3], user_ids))   # by user, then time, then line
    user_ids, item_ids = user_ids[order], item_ids[order]
    last = np.ones(len(order), bool)
    last[:-1] = user_ids[1:] != user_ids[:-1]
    counts = np.bincount(user_ids)
    if counts.min() < 2:
        raise ValueError(f"leave-last-out needs two interactions per user; user {users[counts.argmin()]} has one")
    return Interactions(len(users), len(items), user_ids[~last], item_ids[~last], user_ids[last], item_ids[last])


def load(short: bool = False, cache: Path | None = None) -> Interactions:
    """MovieLens-100K, leave-last-out. ``short``: only the users of the five smallest ids (587 interactions
    of 457 items), for tests."""
    ratings = read_ratings(ml100k_path(cache))
    if short:
        ratings = ratings[ratings[:, 0] <= 5]
    return leave_last_out(ratings)


if __name__ == "__main__":
    data = load()
    print(f"{ml100k_path()}: {data.num_users} users, {data.num_items} items, {len(data.train_items)} training and "
          f"{len(data.test_items)} held-out interactions")
