"""A generated interaction log that behaves like real recommendation logs, deterministic from a seed (NumPy only).

Generative model:

* Item popularity follows a power law (Zipf): the item of popularity rank r (a random permutation of the ids)
  has prior weight ``r ** -zipf_exponent``.
* Users and items have latent preference vectors ``u, v ~ N(0, I / dim)``; the affinity of user u for item i
  is ``affinity_strength * sqrt(dim) * u . v`` (standard deviation about ``affinity_strength``).
* Each user interacts with ``n_u`` distinct items (log-normal around ``mean_interactions``), drawn one after
  the other without replacement from ``p(i | u) ∝ popularity_i * exp(affinity(u, i))`` (the Gumbel-top-k
  trick draws the whole sequence at once).
* The split is by time: the last ``holdout_fraction`` of each user's sequence (at least one item) is held out
  for evaluation, the rest is the training log.

From the training log come the item sampling probabilities ``q_i`` (each item's share of the training
interactions): in-batch negatives are training positives, so an item is a negative in proportion to ``q_i``,
which is what logQ correction (``pos_log_q = log q``) compensates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """A training log and its held-out interactions, as parallel arrays of (user id, item id) pairs.

    Attributes:
        num_users, num_items: the id ranges ``[0, num_users)`` and ``[0, num_items)``.
        train_users, train_items: ``[T]`` int64, the training interactions in time order per user.
        test_users, test_items: ``[H]`` int64, the held-out interactions (each user's last ones).
    """

    num_users: int
    num_items: int
    train_users: np.ndarray
    train_items: np.ndarray
    test_users: np.ndarray
    test_items: np.ndarray

    @property
    def item_counts(self) -> np.ndarray:
        """``[num_items]`` int64: how often each item occurs in the training log."""
        return np.bincount(self.train_items, minlength=self.num_items)

    @property
    def item_probability(self) -> np.ndarray:
        """``[num_items]`` float64: each item's share of the training interactions (its in-batch sampling
        probability ``q_i``; 0 for items never seen in training)."""
        counts = self.item_counts
        return counts / counts.sum()

    @property
    def item_log_q(self) -> np.ndarray:
        """``[num_items]`` float32: ``log q_i``, the logQ correction of each item (-inf for items never seen
        in training, which never occur in a training batch)."""
        with np.errstate(divide="ignore"):
            return np.log(self.item_probability).astype(np.float32)

    def popular_items(self, share: float = 0.2) -> np.ndarray:
        """``[num_items]`` bool: True for the ``share`` most frequent items of the training log."""
        top = np.argsort(-self.item_counts, kind="stable")[: int(round(share * self.num_items))]
        popular = np.zeros(self.num_items, bool)
        popular[top] = True
        return popular


def generate(
    num_users: int = 4000,
    num_items: int = 3000,
    *,
    seed: int = 0,
    dim: int = 16,
    zipf_exponent: float = 1.0,
    affinity_strength: float = 3.0,
    mean_interactions: float = 25.0,
    holdout_fraction: float = 0.2,
) -> Interactions:
    """Generate an interaction log (see the module docstring for the model); the same seed gives the same log."""
    rng = np.random.default_rng(seed)
    popularity_rank = rng.permutation(num_items) + 1
    log_popularity = -zipf_exponent * np.log(popularity_rank)
    users = rng.normal(size=(num_users, dim)) / np.sqrt(dim)
    items = rng.normal(size=(num_items, dim)) / np.sqrt(dim)
    logits = log_popularity + affinity_strength * np.sqrt(dim) * (users @ items.T)  # [U, I]

    lengths = np.rint(rng.lognormal(np.log(mean_interactions), 0.5, size=num_users)).astype(np.int64)
    lengths = np.clip(lengths, 5, num_items // 2)
    # Gumbel-top-k: sorting logits + Gumbel noise gives a draw without replacement, in draw order.
    keys = logits + rng.gumbel(size=logits.shape)
    order = np.argsort(-keys, axis=1)[:, : lengths.max()]

    train_users, train_items, test_users, test_items = [], [], [], []
    for user, (length, sequence) in enumerate(zip(lengths, order)):
        held_out = max(1, int(round(holdout_fraction * length)))
        history = sequence[:length]
        train_items.append(history[:-held_out])
        test_items.append(history[-held_out:])
        train_users.append(np.full(length - held_out, user))
        test_users.append(np.full(held_out, user))
    return Interactions(num_users, num_items, *(np.concatenate(parts).astype(np.int64) for parts in
                                                  (train_users, train_items, test_users, test_items)))
