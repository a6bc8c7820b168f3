"""Per-member batch order: each member sees exactly the batches its solo `TensorBatches` yields.

A solo trial shuffles its own training split (the full split, or its seeded `train_fraction`
subset) with a generator seeded by (seed, epoch). Here every member's batches are expressed as
indices into the one shared training tensor, so a step gathers all members' batches with a single
`x[index]` of shape (K, B, ...) instead of K copies of the data.
"""

from __future__ import annotations

import dataclasses

import torch
from torch import Tensor

from lrstudy.train.data import Dataset, subset_train
from lrstudy.train.module import steps_per_epoch


def subset_index(data: Dataset, fraction: float, seed: int) -> Tensor | None:
    """Rows of `data.x_train` that `subset_train(data, fraction, seed)` keeps; None for all.

    `subset_train` picks rows from the labels alone and then indexes x, so running it on a dataset
    whose x is the row number returns the chosen rows without repeating its sampling rule here.
    """
    if fraction >= 1:
        return None
    rows = torch.arange(len(data.x_train))
    return subset_train(dataclasses.replace(data, x_train=rows), fraction, seed).x_train


class MemberBatches:
    """The batch indices of K members, epoch by epoch, as one (K, steps, B) tensor.

    Args:
        n_train: rows in the shared training tensor.
        batch_size: the trials' batch size (capped at the training-set size, like TensorBatches).
        seeds: one per member.
        subsets: per member, the rows of its training subset (None: all rows). All subsets must
            have one size, so that every member has the same number of steps per epoch.
    """

    def __init__(
        self,
        n_train: int,
        batch_size: int,
        seeds: list[int],
        subsets: list[Tensor | None],
    ) -> None:
        sizes = {n_train if s is None else len(s) for s in subsets}
        if len(sizes) != 1:
            raise ValueError(f"members train on subsets of different sizes {sorted(sizes)}")
        self.n, self.n_train = sizes.pop(), n_train
        self.batch_size = min(batch_size, self.n)
        self.seeds, self.subsets = list(seeds), list(subsets)

    def __len__(self) -> int:
        return steps_per_epoch(self.n, self.batch_size)

    def add(self, seeds: list[int], subsets: list[Tensor | None]) -> None:
        """Members that join later (freed slots taking new work): indices continue from here."""
        sizes = {self.n_train if s is None else len(s) for s in subsets}
        if sizes - {self.n}:
            raise ValueError(f"joining members train on {sorted(sizes)} rows, not {self.n}")
        self.seeds += seeds
        self.subsets += subsets

    def epoch(self, epoch: int | list[int], members: list[int] | None = None) -> Tensor:
        """Indices (len(members), steps, B) into the training tensor for this epoch (0-based).

        `epoch`: one for every member, or each member's own (members that joined later are at
        an earlier epoch of their own). Same permutation as `TensorBatches.__iter__` on the
        member's own split: a CPU generator seeded with seed * 100_003 + epoch. Members that
        share a seed, a subset and an epoch share the draw.
        """
        members = list(range(len(self.seeds))) if members is None else list(members)
        epochs = [epoch] * len(members) if isinstance(epoch, int) else list(epoch)
        steps, bs = len(self), self.batch_size
        cache: dict[tuple[int, int, int], Tensor] = {}
        out = []
        for k, e in zip(members, epochs, strict=True):
            key = (self.seeds[k], id(self.subsets[k]), e)
            if key not in cache:
                gen = torch.Generator().manual_seed(self.seeds[k] * 100_003 + e)
                perm = torch.randperm(self.n, generator=gen)[: steps * bs]
                sub = self.subsets[k]
                cache[key] = (perm if sub is None else sub[perm]).view(steps, bs)
            out.append(cache[key])
        return torch.stack(out)
