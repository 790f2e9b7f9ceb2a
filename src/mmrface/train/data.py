"""Deterministic training batches: batch t of rank r is a pure function of (seed, t, r).

Each rank reads an endless stream of sample indices: epoch e's order is the DistributedSampler
permutation for (seed, e), restricted to this rank's shard; the stream concatenates the epochs.
Batch t is positions t·B … t·B + B − 1 of that stream, and each sample is loaded with the
dataset's random draws of its own epoch (flips, jitter, degradation). So resuming at step t needs
no saved sampler or loader state, and a data set smaller than a batch still works.

Colour-balanced batches (`data.colour_share`): the colour and the greyscale faces are two such
streams, each with its own epochs; batch t takes round(share·B·(t+1)) − round(share·B·t) faces
from the colour stream and the rest from the grey one, so the share holds exactly over steps and
batch t is still a pure function of (seed, t, r).
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from torch.utils.data import default_collate

from mmrface.errors import UserError


class _EpochItems(Dataset):
    """Index by (epoch, index): sets the wrapped data set's epoch, then returns its item."""

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        epoch, index = key
        self.dataset.set_epoch(epoch)
        return self.dataset[index]


class _Stream:
    """Endless shuffled stream of data set indices (`members`), epoch by epoch, this rank's shard."""

    def __init__(self, members: list[int], seed: int, rank: int, world: int):
        self.members = members
        self.sampler = DistributedSampler(range(len(members)), num_replicas=world, rank=rank,
                                          shuffle=True, seed=seed, drop_last=False)
        self._epoch_cache: tuple[int, list[int]] | None = None

    def _order(self, epoch: int) -> list[int]:
        if self._epoch_cache is None or self._epoch_cache[0] != epoch:
            self.sampler.set_epoch(epoch)
            self._epoch_cache = (epoch, [self.members[i] for i in self.sampler])
        return self._epoch_cache[1]

    def keys(self, start: int, stop: int) -> list[tuple[int, int]]:
        """(epoch, index) at stream positions start … stop − 1."""
        n = len(self.sampler)
        return [(epoch, self._order(epoch)[within]) for epoch, within in (divmod(p, n) for p in range(start, stop))]


class StepBatches:
    """Batches of `batch_size` items for steps start, start + 1, … (see the module docstring).

    `colour` (one flag per item) with `colour_share` draws that share of every batch from the
    colour items (colour-balanced sampling); None samples all items alike.
    """

    def __init__(self, dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world: int = 1,
                 num_workers: int = 0, colour: list[bool] | None = None, colour_share: float | None = None):
        self.dataset, self.batch_size = dataset, int(batch_size)
        self.seed, self.rank, self.world, self.num_workers = int(seed), rank, world, int(num_workers)
        self.share = None if colour_share is None or colour is None else float(colour_share)
        if self.share is None:
            self.streams = [_Stream(list(range(len(dataset))), self.seed, rank, world)]
        else:
            groups = [[i for i, c in enumerate(colour) if c], [i for i, c in enumerate(colour) if not c]]
            for name, group, share in (("colour", groups[0], self.share), ("greyscale", groups[1], 1 - self.share)):
                if share > 0 and not group:
                    raise UserError(f"data.colour_share = {self.share:g} but the training folder has no "
                                    f"{name} face (colour: mean saturation >= 40)")
            self.streams = [_Stream(g, self.seed + k, rank, world) if g else None for k, g in enumerate(groups)]

    def _colour_pos(self, step: int) -> int:
        return round(self.share * self.batch_size * step)

    def keys(self, step: int) -> list[tuple[int, int]]:
        """(epoch, index) of the samples of batch `step` on this rank."""
        b = self.batch_size
        if self.share is None:
            return self.streams[0].keys(step * b, (step + 1) * b)
        c0, c1 = self._colour_pos(step), self._colour_pos(step + 1)
        colour = self.streams[0].keys(c0, c1) if c1 > c0 else []
        rest = self.streams[1].keys(step * b - c0, (step + 1) * b - c1) if b > c1 - c0 else []
        return colour + rest

    def batch(self, step: int) -> dict[str, Any]:
        items = _EpochItems(self.dataset)
        return default_collate([items[k] for k in self.keys(step)])

    def iterate(self, start: int) -> Iterator[dict[str, Any]]:
        """Batches of steps start, start + 1, …; with workers, loaded in the background."""
        if self.num_workers <= 0:
            step = start
            while True:
                yield self.batch(step)
                step += 1
        loader = DataLoader(_EpochItems(self.dataset), batch_sampler=_KeySampler(self, start),
                            num_workers=self.num_workers, collate_fn=default_collate,
                            persistent_workers=False, generator=torch.Generator().manual_seed(self.seed))
        try:
            yield from loader
        except UserError as exc:  # raised in a worker: torch wraps the worker's whole traceback into it
            lines = [ln for ln in str(exc).splitlines() if ln.strip()]
            raise UserError(lines[-1].split("UserError: ", 1)[-1] if lines else "a data worker failed") from None


class _KeySampler:
    """Endless batch sampler of (epoch, index) keys starting at a step."""

    def __init__(self, batches: StepBatches, start: int):
        self.batches, self.start = batches, start

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        step = self.start
        while True:
            yield self.batches.keys(step)
            step += 1
