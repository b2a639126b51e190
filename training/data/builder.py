"""Datasets from a training config: the paired UDA set and the labelled evaluation split."""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path

import numpy as np

from prnseg.errors import ConfigError, DatasetError
from prnseg.training.config import Config, DatasetConfig
from prnseg.training.data.datasets import SegDataset, build_dataset
from prnseg.training.data.rcs import RareClassSampler
from prnseg.training.data.transforms import build_train_pipeline
from prnseg.training.data.uda import UDADataset


def _require_root(dcfg: DatasetConfig, key: str) -> str:
    if not dcfg.root:
        raise ConfigError(f"config key '{key}.root' is empty; pass --set {key}.root=DIR")
    return dcfg.root


def _build_train_split(cfg: Config, key: str, load_labels: bool) -> SegDataset:
    d = cfg.data
    dcfg: DatasetConfig = getattr(d, key)
    pipeline = build_train_pipeline(size=dcfg.size, crop=d.crop, cat_max_ratio=d.cat_max_ratio,
                                    flip_prob=d.flip_prob)
    return build_dataset(dcfg.kind, _require_root(dcfg, f"data.{key}"), split=dcfg.split,
                         load_labels=load_labels, pipeline=pipeline, seed=cfg.train.seed)


def build_source(cfg: Config) -> SegDataset:
    """The labelled source; one without labels is a one-line error, not a failure mid-step."""
    ds = _build_train_split(cfg, "source", load_labels=True)
    if not ds.has_labels:
        raise DatasetError(f"{cfg.data.source.root}: no labels found for the source (data.source.kind="
                           f"{cfg.data.source.kind}); the source must be labelled, e.g. the output folder of "
                           "prnseg label (labels/ next to images/)")
    return ds


def build_target(cfg: Config) -> SegDataset:
    """The unlabelled target: built with ``load_labels=False`` so training never opens a target
    label, whatever is on disk."""
    return _build_train_split(cfg, "target", load_labels=False)


class SourceOnly:
    """Source items wrapped like UDA pairs, so one loop serves every mode.

    Each index is one (image, draw) pair, ``DRAWS_PER_IMAGE`` draws per image, and the draw seeds
    the random crop and flip: as in :class:`UDADataset`, whose index is a (source, target) pair,
    an image gets a fresh crop each time it comes round instead of the same one for the whole run.
    With a :class:`RareClassSampler` the source image is drawn by it, as in the UDA modes, so a
    source-only baseline sees the same class balance.
    """

    DRAWS_PER_IMAGE = 1000

    def __init__(self, source: SegDataset, seed: int, rcs: RareClassSampler | None = None):
        if rcs is not None:
            rcs.require_dataset(source, "source")
        self.source, self.seed, self.rcs = source, seed, rcs

    def __len__(self) -> int:
        return len(self.source) * self.DRAWS_PER_IMAGE

    def __getitem__(self, idx: int) -> dict:
        idx = int(idx)
        if not 0 <= idx < len(self):
            raise IndexError(f"index {idx} out of range for {len(self)} source draws")
        rng = np.random.default_rng([self.seed, idx])
        if self.rcs is None:
            return {"source": self.source.get(idx % len(self.source), rng)}
        return {"source": self.rcs.get_item(rng)}


def build_labeled_target(cfg: Config) -> SegDataset | None:
    """``data.target_labeled``: the labelled target images (those of ``list`` when set), with the
    training pipeline; None when no root is set."""
    lt = cfg.data.target_labeled
    if not lt.root:
        return None
    if lt.list and not os.path.isfile(lt.list):
        raise ConfigError(f"data.target_labeled.list={lt.list}: not found; pass a file of image paths relative "
                          f"to {lt.root}, one a line (prnseg label --suggest writes suggest.txt)")
    wanted = None
    if lt.list:
        with open(lt.list, encoding="utf-8") as f:
            wanted = [line.strip() for line in f if line.strip() and not line.startswith("#")]
        if not wanted:
            raise ConfigError(f"data.target_labeled.list={lt.list}: lists no image")
    d, t = cfg.data, cfg.data.target
    pipeline = build_train_pipeline(size=t.size, crop=d.crop, cat_max_ratio=d.cat_max_ratio, flip_prob=d.flip_prob)
    kind = lt.kind or t.kind
    # labels are paired by name here and read (opened) only for the records kept
    ds = build_dataset(kind, lt.root, split=lt.split, load_labels=True, pipeline=pipeline, seed=cfg.train.seed)
    if wanted is not None:
        names = [Path(r.image).relative_to(ds.root).as_posix() for r in ds.records]
        index = {n: i for i, n in enumerate(names)}
        keep = sorted({index[w] if w in index else _match_listed(w, names, lt, kind) for w in wanted})
        ds.records = [ds.records[i] for i in keep]
    return ds


def split_labeled_target(ds: SegDataset | None, prn_fraction: float) -> tuple[SegDataset | None, SegDataset | None]:
    """(the student's images, the PRN's) of ``data.target_labeled``: with ``prn_fraction`` 0 one
    set serves both; else ``floor(n * prn_fraction)`` images, spread evenly in path order (image j
    where floor((j + 1) f) > floor(j f)), go to the PRN alone and the rest to the student alone
    (None when that leaves the student none)."""
    if ds is None or prn_fraction <= 0:
        return ds, ds
    n = len(ds.records)
    to_prn = [math.floor((j + 1) * prn_fraction) > math.floor(j * prn_fraction) for j in range(n)]
    if not any(to_prn):
        raise ConfigError(f"data.target_labeled.prn_fraction={prn_fraction:g} keeps none of the {n} labelled "
                          f"images for the PRN; raise it to at least {1 / n:.2g} or label more images")
    parts = []
    for wanted in (False, True):
        part = copy.copy(ds)
        part.records = [r for r, p in zip(ds.records, to_prn) if p == wanted]
        parts.append(part if part.records else None)
    return parts[0], parts[1]


def _match_listed(entry: str, names: list[str], lt, kind: str) -> int:
    """The record a list entry names: its path relative to the root, or (as ``prnseg label --suggest``
    writes them, relative to the folder that was labelled) the one path ending in it."""
    hits = [i for i, n in enumerate(names) if n.endswith("/" + entry)]
    if len(hits) == 1:
        return hits[0]
    if hits:
        raise ConfigError(f"data.target_labeled.list={lt.list}: {entry!r} matches {len(hits)} images under "
                          f"{lt.root} ({names[hits[0]]}, {names[hits[1]]}, ...); give its path relative to "
                          f"data.target_labeled.root")
    raise ConfigError(f"data.target_labeled.list={lt.list}: {entry!r} is not an image of the {kind} split "
                      f"'{lt.split}' under {lt.root}; paths are relative to data.target_labeled.root (or to "
                      f"the folder prnseg label --suggest labelled)")


def build_rcs(cfg: Config, source: SegDataset, progress: bool = True) -> RareClassSampler | None:
    if not cfg.data.rcs.enabled:
        return None
    r = cfg.data.rcs
    return RareClassSampler(source, temperature=r.temperature, min_pixels=r.min_pixels,
                            min_crop_ratio=r.min_crop_ratio, num_classes=cfg.model.num_classes, progress=progress)


def build_uda_dataset(cfg: Config, with_target: bool = True, progress: bool = True):
    """The training dataset; ``progress``: the bar of RCS's first pass over the source labels."""
    source = build_source(cfg)
    rcs = build_rcs(cfg, source, progress)
    if not with_target:
        return SourceOnly(source, cfg.train.seed, rcs=rcs)
    return UDADataset(source, build_target(cfg), rcs=rcs, seed=cfg.train.seed)


def val_dataset_config(cfg: Config) -> DatasetConfig:
    """The labelled evaluation split; an empty val root means the target root."""
    v = cfg.data.val
    return DatasetConfig(kind=v.kind, root=v.root or cfg.data.target.root, split=v.split, size=v.size)


def build_eval_dataset(kind: str, root: str, split: str) -> SegDataset:
    """Labelled images at file resolution; the evaluator resizes and maps back itself."""
    return build_dataset(kind, root, split=split, load_labels=True, pipeline=None)


