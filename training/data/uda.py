"""Paired source + target data for UDA training, reproducible per index.

``UDADataset[idx]`` is a pure function of (seed, idx): which source and target images are
paired and every random choice of their pipelines come from generators seeded by
``(seed, idx)``, independent of DataLoader workers or earlier items. Together with
:class:`ResumableSampler`, whose k-th index depends only on (seed, k), a run resumed at
iteration t sees exactly the batches the uninterrupted run would have seen.

Without RCS the pair is ``(idx // len(target), idx % len(target))`` and ``len`` is
``len(source) * len(target)``, as in DAFormer. With RCS the source image is drawn by
:class:`~prnseg.training.data.rcs.RareClassSampler` and the target uniformly, both from the
index's generator (DAFormer ignores the index and uses global RNG state instead).
"""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset, Sampler

from prnseg.errors import ConfigError
from prnseg.training.data.rcs import RareClassSampler

_SAMPLER_TAG = 0x5A3D1E


class UDADataset(Dataset):
    """``{"source": labelled source item, "target": unlabelled target item}`` per index.

    The target dataset must be built with ``load_labels=False``: UDA never reads target
    labels, and this class refuses a target that would.
    """

    def __init__(self, source, target, rcs: RareClassSampler | None = None, seed: int = 0):
        if getattr(target, "load_labels", False):
            raise ConfigError(f"{target.root}: the UDA target dataset must be built with "
                              "load_labels=False (target labels are never used in training)")
        if rcs is not None:
            rcs.require_dataset(source, "UDA source")
        if len(source) == 0 or len(target) == 0:
            raise ConfigError("UDA needs a non-empty source and target dataset")
        self.source, self.target, self.rcs = source, target, rcs
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.source) * len(self.target)

    def pair(self, idx: int) -> tuple[int, int, int | None, list[np.random.Generator]]:
        """(source index, target index, RCS class or None, [source rng, target rng])."""
        n = len(self)
        if not 0 <= idx < n:
            raise IndexError(f"index {idx} out of range for a UDA dataset of {n} pairs")
        pick, src_rng, tgt_rng = (np.random.default_rng(s) for s in
                                  np.random.SeedSequence([self.seed, idx]).spawn(3))
        if self.rcs is None:
            i_s, i_t, c = idx // len(self.target), idx % len(self.target), None
        else:
            i_s, c = self.rcs.sample_with_class(pick)
            i_t = int(pick.integers(len(self.target)))
        return i_s, i_t, c, [src_rng, tgt_rng]

    def __getitem__(self, idx: int) -> dict:
        i_s, i_t, c, (src_rng, tgt_rng) = self.pair(int(idx))
        src = self.source.get(i_s, src_rng) if c is None else self.rcs.load(i_s, c, src_rng)
        return {"source": src, "target": self.target.get(i_t, tgt_rng)}


class ResumableSampler(Sampler):
    """An endless stream of indices in ``[0, length)`` drawn uniformly with replacement, the
    k-th depending only on (seed, k). ``start`` skips this rank's first ``start`` draws in O(1),
    so resuming at iteration t with a per-rank batch size B is ``start=t*B``. With
    ``world_size > 1`` rank r takes positions r, r + world_size, ... of the same stream."""

    def __init__(self, length: int, seed: int = 0, start: int = 0, rank: int = 0,
                 world_size: int = 1):
        if length <= 0:
            raise ValueError(f"ResumableSampler needs a positive length, got {length}")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} not in [0, {world_size})")
        self.length, self.seed, self.start = int(length), int(seed), int(start)
        self.rank, self.world_size = int(rank), int(world_size)

    def index_at(self, k: int) -> int:
        """The index at global position k of the stream."""
        return int(np.random.default_rng([_SAMPLER_TAG, self.seed, k]).integers(self.length))

    def __iter__(self):
        k = self.start * self.world_size + self.rank
        while True:
            yield self.index_at(k)
            k += self.world_size
