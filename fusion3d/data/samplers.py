"""The training sampler of a data loader built once per run: seeded per epoch, resumable mid-epoch.

``EpochSampler`` yields ``(epoch, i)`` pairs, so the epoch travels with every index to the dataset
(``TrainClips`` accepts such a pair): persistent data-loader workers, which keep the copy of the
dataset they started with, still draw the clip of item ``i`` in epoch ``e`` from (seed, e, i).

Its order is, index for index, what the loader the trainer used to build at every epoch drew:

- one process: a ``DataLoader(shuffle=True, generator=torch.Generator().manual_seed(shuffle_seed(e)))``,
  whose iterator first draws one int64 from that generator (the workers' base seed) and whose
  ``RandomSampler`` then takes ``randperm(n)`` from it;
- ``world`` processes: ``DistributedSampler(shuffle=True, seed=seed, drop_last=True)`` at epoch ``e``
  (``randperm(n)`` from a generator seeded with ``seed + e``, cut to a multiple of ``world``, every
  ``world``-th index from ``rank``).

``skip`` (set before an iterator is made, reset to 0 by that iterator) leaves out the first ``skip``
indices: a run resumed mid-epoch starts at the batch it had reached.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch


class EpochSampler(torch.utils.data.Sampler):
    def __init__(
        self, n: int, shuffle_seed: Callable[[int], int], seed: int = 0, world: int = 1, rank: int = 0
    ) -> None:
        self.n, self.shuffle_seed, self.seed, self.world, self.rank = n, shuffle_seed, seed, world, rank
        self.epoch = 0
        self.skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def order(self, epoch: int) -> list[int]:
        """The item indices of ``epoch`` on this rank, in the order they are served."""
        if self.world == 1:
            g = torch.Generator().manual_seed(self.shuffle_seed(epoch))
            torch.empty((), dtype=torch.int64).random_(generator=g)  # the old loader's worker base seed
            return torch.randperm(self.n, generator=g).tolist()
        g = torch.Generator().manual_seed(self.seed + epoch)
        total = (self.n // self.world) * self.world
        return torch.randperm(self.n, generator=g).tolist()[:total][self.rank : total : self.world]

    def __len__(self) -> int:
        return (self.n if self.world == 1 else self.n // self.world) - self.skip

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, skip = self.epoch, self.skip
        self.skip = 0
        return iter([(epoch, i) for i in self.order(epoch)[skip:]])
