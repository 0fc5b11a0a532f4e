"""Two-tower retrieval in PyTorch with ``recloss.torch.SampledSoftmaxLoss``.

In-batch sampled softmax: each user's positive item is scored against the other rows' items, accidental hits
(another row holding the same item) are removed by id, and with ``--logq on`` each candidate's logit is
corrected by ``log q`` (its share of the training log; with ``--logq-source estimated``, estimated during training
by ``recloss.torch.FrequencyEstimator``). Run ``python examples/two_tower_torch.py`` (add
``--short`` for a few-second run); see ``common.py`` for the data, the evaluation and the options.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

import recloss.torch
from common import Config, TrainResult, Variant, batches, main
from data import Interactions


class TwoTower(torch.nn.Module):
    """A user tower and an item tower: id embeddings, L2-normalised (dot products are cosines)."""

    def __init__(self, num_users: int, num_items: int, dim: int) -> None:
        super().__init__()
        self.users = torch.nn.Embedding(num_users, dim)
        self.items = torch.nn.Embedding(num_items, dim)
        torch.nn.init.normal_(self.users.weight, std=0.1)
        torch.nn.init.normal_(self.items.weight, std=0.1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return F.normalize(self.users(users), dim=-1), F.normalize(self.items(items), dim=-1)


def train(data: Interactions, config: Config, variant: Variant) -> TrainResult:
    torch.manual_seed(config.seed)
    model = TwoTower(data.num_users, data.num_items, config.dim)
    loss_fn = recloss.torch.SampledSoftmaxLoss(temperature=config.temperature, in_batch=True)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    # logQ estimated from the stream of training ids (log of each item's expected count per batch), or exact.
    estimator = recloss.torch.FrequencyEstimator() if variant.estimated else None
    rng = np.random.default_rng(config.seed)
    epoch_losses = []
    for _ in range(config.epochs):
        losses = []
        for batch in batches(data, config.batch_size, rng):
            users, items = torch.from_numpy(batch["user"]), torch.from_numpy(batch["item"])
            query, candidate = model(users, items)
            log_q = None
            if variant.log_q:
                log_q = estimator(items) if estimator is not None else torch.from_numpy(batch["log_q"])
            loss = loss_fn(query, candidate, pos_ids=items if variant.remove_hits else None, pos_log_q=log_q)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        epoch_losses.append(float(np.mean(losses)))
    with torch.no_grad():
        everyone = model(torch.arange(data.num_users), torch.arange(data.num_items))
    return TrainResult(epoch_losses, *(x.numpy() for x in everyone))


if __name__ == "__main__":
    main("PyTorch", train, backend="torch")
