"""Segmentation datasets in their real on-disk layouts (GTA5, Cityscapes, SYNTHIA, Dark Zurich,
ACDC, a plain folder).

Every dataset lists its files once at construction and fails early with a one-line
:class:`DatasetError` naming the folder or file and the layout it expected, so a wrong path is
reported before training starts instead of as a crash in a DataLoader worker. With
``load_labels=False`` no label path is ever formed into a file-system call: UDA target labels
must stay unread.

Labels come back as Cityscapes trainIds (uint8, 255 = ignore) whatever the encoding on disk:
trainId maps, Cityscapes/GTA5 labelIds, SYNTHIA's 16-bit multi-channel ids, and indexed
("palette") PNGs such as the GTA5 labels, whose indices OpenCV would otherwise expand to colours.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from prnseg.errors import ConfigError, DatasetError
from prnseg.image_io import IMAGE_EXTENSIONS, read_image, read_trainids
from prnseg.training.data.transforms import Compose, Normalize

@dataclass(frozen=True)
class Record:
    """One image and, when labels are loaded, its label file and the label's id encoding."""

    image: Path
    label: Path | None = None
    label_format: str | None = None
    label_channel: int | None = None


def walk_files(folder: Path, suffixes: Sequence[str], exclude: Iterable[Path] = ()) -> list[Path]:
    """Files under ``folder`` whose name ends with one of ``suffixes`` (case-insensitive),
    sorted; folders in ``exclude`` are pruned without being entered (so a label folder inside
    an image folder is never listed)."""
    excluded = {os.path.normpath(str(p)) for p in exclude}
    suffixes = tuple(s.lower() for s in suffixes)
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames
                             if os.path.normpath(os.path.join(dirpath, d)) not in excluded)
        found.extend(Path(dirpath, n) for n in filenames if n.lower().endswith(suffixes))
    return sorted(found)


def _strip_suffix(name: str, suffix: str) -> str:
    return name[: len(name) - len(suffix)] if suffix and name.endswith(suffix) else name


def _pair_labels(images: list[Path], base_of: Callable[[Path], str], label_dir: Path,
                 candidates: Sequence[tuple[str, str, int | None]], layout: str,
                 primary: int = 0) -> list[Record]:
    """Pair each image with the first existing ``label_dir/<base_of(image)><suffix>`` among
    ``candidates`` (suffix, id format, channel), tried in order. ``primary`` names the
    candidate an error message shows first (the layout's canonical label)."""
    if not label_dir.is_dir():
        raise DatasetError(f"{label_dir}: not found; expected {layout} (for unlabelled "
                           "images use load_labels=False)")
    present = {os.path.relpath(p, label_dir) for p in walk_files(label_dir, [""])}
    records: list[Record] = []
    missing: list[tuple[Path, str]] = []
    for img in images:
        base = base_of(img)
        for suffix, fmt, channel in candidates:
            if base + suffix in present:
                records.append(Record(img, label_dir / (base + suffix), fmt, channel))
                break
        else:
            missing.append((img, base))
    if missing:
        img, base = missing[0]
        order = [candidates[primary]] + [c for k, c in enumerate(candidates) if k != primary]
        expected = " or ".join(str(label_dir / (base + s)) for s, _, _ in order)
        more = f" ({len(missing) - 1} more images lack labels)" if len(missing) > 1 else ""
        raise DatasetError(f"{img}: no label found; expected {expected}{more}")
    return records


def _tree_base(img_dir: Path, img_suffix: str) -> Callable[[Path], str]:
    """``img_dir/rel/<base><img_suffix>`` -> ``rel/<base>``."""
    return lambda p: _strip_suffix(os.path.relpath(p, img_dir), img_suffix)


def _as_pipeline(pipeline) -> Callable | None:
    if pipeline is None or callable(pipeline):
        return pipeline
    return Compose(pipeline)


class SegDataset(Dataset):
    """Base class: a list of :class:`Record` s, reading, the transform pipeline and tensors.

    Items are dicts: ``img`` (float32 3xHxW, normalised), ``gt`` (int64 HxW trainIds, only when
    labels are loaded), ``name`` (image path relative to the root) and ``ori_shape`` (H, W of
    the file). Augmentation draws from a generator seeded by (seed, epoch, index) unless the
    caller passes its own to :meth:`get` (the UDA dataset does, so pairs are reproducible).
    """

    kind = "dataset"
    layout = "a dataset root"

    def __init__(self, root: str | os.PathLike, load_labels: bool = True, pipeline=None,
                 seed: int = 0):
        self.root = Path(root)
        self.load_labels = bool(load_labels)
        self.pipeline = _as_pipeline(pipeline)
        self.seed = int(seed)
        self.epoch = 0
        self._normalize = Normalize()
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: not found; expected {self.layout}")
        self.records: list[Record] = self._scan()

    def _scan(self) -> list[Record]:
        raise NotImplementedError(f"{type(self).__name__} must list its files in _scan()")

    def _require_dir(self, folder: Path) -> Path:
        if not folder.is_dir():
            raise DatasetError(f"{folder}: not found; expected {self.layout}")
        return folder

    def _list_images(self, folder: Path, suffixes: Sequence[str], pattern: str,
                     exclude: Iterable[Path] = ()) -> list[Path]:
        images = walk_files(self._require_dir(folder), suffixes, exclude)
        if not images:
            raise DatasetError(f"{folder}: no images matching '{pattern}'")
        return images

    def _select_split(self, images: list[Path], img_dir: Path, split: str | None) -> list[Path]:
        """Layouts without split folders: all images for split None/'all'/'train', or the
        images named in ``root/<split>.txt`` (one path relative to the image folder per line,
        extension optional) when that file exists."""
        list_file = self.root / f"{split}.txt" if split not in (None, "", "all") else None
        if list_file is None or not list_file.is_file():
            if split in (None, "", "all", "train"):
                return images
            raise DatasetError(f"{list_file}: not found; {self.kind} has no split folders: use "
                               "split='all' or list the split's images in that file, one per line")
        by_key: dict[str, Path] = {}
        for p in images:
            rel = os.path.relpath(p, img_dir)
            by_key[rel] = p
            by_key.setdefault(os.path.splitext(rel)[0], p)
        chosen = []
        for n, line in enumerate(list_file.read_text().splitlines(), 1):
            entry = line.strip()
            if not entry or entry.startswith("#"):
                continue
            if entry not in by_key:
                raise DatasetError(f"{list_file}:{n}: '{entry}' is not an image under {img_dir}")
            chosen.append(by_key[entry])
        if not chosen:
            raise DatasetError(f"{list_file}: lists no images")
        return chosen

    def __len__(self) -> int:
        return len(self.records)

    @property
    def has_labels(self) -> bool:
        return self.load_labels and bool(self.records) and self.records[0].label is not None

    @property
    def names(self) -> list[str]:
        return [self.name(i) for i in range(len(self))]

    def name(self, i: int) -> str:
        return Path(os.path.relpath(self.records[i].image, self.root)).as_posix()

    def label_name(self, i: int) -> str:
        rec = self._labelled(i)
        return Path(os.path.relpath(rec.label, self.root)).as_posix()

    def set_epoch(self, epoch: int) -> None:
        """Vary the augmentation of standalone indexing per epoch (still deterministic)."""
        self.epoch = int(epoch)

    def _labelled(self, i: int) -> Record:
        rec = self.records[i]
        if not self.load_labels or rec.label is None:
            raise DatasetError(f"{self.root}: {self.kind} dataset was built without labels "
                               "(load_labels=False or no label folder)")
        return rec

    def load_label(self, i: int) -> np.ndarray:
        """The label of item ``i`` as uint8 trainIds at the file's resolution."""
        rec = self._labelled(i)
        return read_trainids(rec.label, rec.label_format, rec.label_channel)

    def load_raw(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """(RGB uint8 image, uint8 trainId label or None) at the files' resolution."""
        rec = self.records[i]
        img = read_image(rec.image)
        if not self.load_labels or rec.label is None:
            return img, None
        gt = read_trainids(rec.label, rec.label_format, rec.label_channel)
        if gt.shape != img.shape[:2]:
            raise DatasetError(
                f"{rec.label}: label is {gt.shape[1]}x{gt.shape[0]} but image {rec.image} is "
                f"{img.shape[1]}x{img.shape[0]} (WxH); they must match")
        return img, gt

    def get(self, i: int, rng: np.random.Generator, require_class: int | None = None,
            min_class_pixels: float = 0, max_tries: int = 10) -> dict:
        """Item ``i`` transformed with ``rng``. With ``require_class`` the pipeline (its random
        crop) is re-run on the same decoded sample up to ``max_tries`` more times until the
        label holds more than ``min_class_pixels`` pixels of that class (Rare Class Sampling)."""
        img, gt = self.load_raw(i)
        raw = {"img": img, "gt": gt}
        out = self.pipeline(raw, rng) if self.pipeline is not None else raw
        if require_class is not None and gt is not None and self.pipeline is not None:
            for _ in range(max_tries):
                if np.count_nonzero(out["gt"] == require_class) > min_class_pixels:
                    break
                out = self.pipeline(raw, rng)
        return self._to_item(out, i, img.shape[:2])

    def _to_item(self, sample: dict, i: int, ori_shape: tuple[int, int]) -> dict:
        if sample["img"].dtype == np.uint8:
            sample = self._normalize(sample, None)
        img = np.ascontiguousarray(sample["img"].transpose(2, 0, 1), dtype=np.float32)
        item = {"img": torch.from_numpy(img), "name": self.name(i),
                "ori_shape": (int(ori_shape[0]), int(ori_shape[1]))}
        if sample.get("gt") is not None:
            item["gt"] = torch.from_numpy(np.ascontiguousarray(sample["gt"], dtype=np.int64))
        return item

    def __getitem__(self, i: int) -> dict:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {self.kind} dataset of {n} images")
        i %= n
        return self.get(i, np.random.default_rng([self.seed, self.epoch, i]))

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(root={str(self.root)!r}, images={len(self)}, "
                f"labels={self.has_labels})")


class GTA5Dataset(SegDataset):
    """GTA5: ``images/*.png`` and ``labels/*.png`` (Cityscapes labelIds, usually indexed PNGs).
    A converted ``labels/<stem>_labelTrainIds.png`` beside it is used when present. There are no
    split folders: see :meth:`SegDataset._select_split`."""

    kind = "gta"
    layout = "a GTA5 root with images/ and labels/"

    def __init__(self, root, split: str | None = "all", load_labels: bool = True,
                 pipeline=None, seed: int = 0):
        self.split = split
        super().__init__(root, load_labels, pipeline, seed)

    def _scan(self) -> list[Record]:
        img_dir = self.root / "images"
        images = [p for p in self._list_images(img_dir, [".png"], "images/*.png")
                  if p.parent == img_dir]
        images = self._select_split(images, img_dir, self.split)
        if not self.load_labels:
            return [Record(p) for p in images]
        return _pair_labels(images, _tree_base(img_dir, ".png"), self.root / "labels",
                            [("_labelTrainIds.png", "trainIds", None),
                             (".png", "labelIds", None)], self.layout, primary=1)


class CityscapesDataset(SegDataset):
    """Cityscapes: ``leftImg8bit/<split>/<city>/*_leftImg8bit.png`` with
    ``gtFine/<split>/<city>/*_gtFine_labelTrainIds.png``, or ``*_gtFine_labelIds.png`` mapped to
    trainIds when the trainIds file (made by cityscapesscripts) is absent."""

    kind = "cityscapes"
    layout = "a Cityscapes root with leftImg8bit/<split>/<city>/*_leftImg8bit.png and gtFine/"
    img_suffix = "_leftImg8bit.png"

    def __init__(self, root, split: str = "train", load_labels: bool = True, pipeline=None,
                 seed: int = 0):
        self.split = split
        super().__init__(root, load_labels, pipeline, seed)

    def _scan(self) -> list[Record]:
        img_dir = self.root / "leftImg8bit" / self.split
        images = self._list_images(img_dir, [self.img_suffix], f"<city>/*{self.img_suffix}")
        if not self.load_labels:
            return [Record(p) for p in images]
        return _pair_labels(images, _tree_base(img_dir, self.img_suffix),
                            self.root / "gtFine" / self.split,
                            [("_gtFine_labelTrainIds.png", "trainIds", None),
                             ("_gtFine_labelIds.png", "labelIds", None)], self.layout)


class SynthiaDataset(SegDataset):
    """SYNTHIA-RAND-CITYSCAPES: ``RGB/*.png`` and ``GT/LABELS/*.png``, 16-bit multi-channel
    labels whose class id is the last OpenCV channel (as the reference reads them); a converted
    ``GT/LABELS/<stem>_labelTrainIds.png`` is used when present."""

    kind = "synthia"
    layout = "a SYNTHIA-RAND-CITYSCAPES root with RGB/ and GT/LABELS/"

    def __init__(self, root, split: str | None = "all", load_labels: bool = True,
                 pipeline=None, seed: int = 0):
        self.split = split
        super().__init__(root, load_labels, pipeline, seed)

    def _scan(self) -> list[Record]:
        img_dir = self.root / "RGB"
        images = [p for p in self._list_images(img_dir, [".png"], "RGB/*.png")
                  if p.parent == img_dir]
        images = self._select_split(images, img_dir, self.split)
        if not self.load_labels:
            return [Record(p) for p in images]
        return _pair_labels(images, _tree_base(img_dir, ".png"), self.root / "GT" / "LABELS",
                            [("_labelTrainIds.png", "trainIds", None),
                             (".png", "synthia", -1)], self.layout, primary=1)


class DarkZurichDataset(SegDataset):
    """Dark Zurich: ``rgb_anon/<split>/<time>/<seq>/*_rgb_anon.png`` with
    ``gt/<split>/<time>/<seq>/*_gt_labelTrainIds.png`` (or ``_gt_labelIds.png``). Only val/test
    have labels; the train split is the unlabelled UDA target."""

    kind = "darkzurich"
    layout = "a Dark Zurich root with rgb_anon/<split>/night/<seq>/*_rgb_anon.png and gt/"
    img_suffix = "_rgb_anon.png"

    def __init__(self, root, split: str = "train", load_labels: bool = True, pipeline=None,
                 seed: int = 0, time_of_day: str = "night"):
        self.split = split
        self.time_of_day = time_of_day
        super().__init__(root, load_labels, pipeline, seed)

    def _scan(self) -> list[Record]:
        img_dir = self.root / "rgb_anon" / self.split / self.time_of_day
        images = self._list_images(img_dir, [self.img_suffix], f"**/*{self.img_suffix}")
        if not self.load_labels:
            return [Record(p) for p in images]
        return _pair_labels(images, _tree_base(img_dir, self.img_suffix),
                            self.root / "gt" / self.split / self.time_of_day,
                            [("_gt_labelTrainIds.png", "trainIds", None),
                             ("_gt_labelIds.png", "labelIds", None)], self.layout)


ACDC_CONDITIONS = ("fog", "night", "rain", "snow")


class ACDCDataset(SegDataset):
    """ACDC: ``rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png`` with
    ``gt/<condition>/<split>/<seq>/*_gt_labelTrainIds.png`` (or ``_gt_labelIds.png``);
    ``conditions`` defaults to every one of fog/night/rain/snow present for the split."""

    kind = "acdc"
    layout = "an ACDC root with rgb_anon/<condition>/<split>/<seq>/*_rgb_anon.png and gt/"
    img_suffix = "_rgb_anon.png"

    def __init__(self, root, split: str = "train", load_labels: bool = True, pipeline=None,
                 seed: int = 0, conditions: Sequence[str] | None = None):
        self.split = split
        self.conditions = None if conditions is None else tuple(conditions)
        super().__init__(root, load_labels, pipeline, seed)

    def _scan(self) -> list[Record]:
        rgb = self.root / "rgb_anon"
        conditions = self.conditions
        if conditions is None:
            conditions = tuple(c for c in ACDC_CONDITIONS if (rgb / c / self.split).is_dir())
            if not conditions:
                raise DatasetError(f"{rgb}: no {'/'.join(ACDC_CONDITIONS)} folder with a "
                                   f"'{self.split}' split; expected {self.layout}")
            self.conditions = conditions
        records: list[Record] = []
        for cond in conditions:
            img_dir = rgb / cond / self.split
            images = self._list_images(img_dir, [self.img_suffix], f"**/*{self.img_suffix}")
            if not self.load_labels:
                records.extend(Record(p) for p in images)
                continue
            records.extend(_pair_labels(images, _tree_base(img_dir, self.img_suffix),
                                        self.root / "gt" / cond / self.split,
                                        [("_gt_labelTrainIds.png", "trainIds", None),
                                         ("_gt_labelIds.png", "labelIds", None)], self.layout))
        return records


class FolderDataset(SegDataset):
    """A plain folder: images (any common format, recursive) in ``img_dir`` (default
    ``root/images`` if it exists, else ``root``) and optional label PNGs in ``label_dir``
    (default ``root/labels`` if it exists) at the same relative path. A label is named
    ``<image stem minus img_suffix><label_suffix>``; ``label_format`` is "trainIds" or
    "labelIds". Without a label folder the dataset is unlabelled."""

    kind = "folder"
    layout = "a folder of images (optionally images/ and labels/)"

    def __init__(self, root, split: str | None = "all", load_labels: bool = True,
                 pipeline=None, seed: int = 0, img_dir: str | os.PathLike | None = None,
                 label_dir: str | os.PathLike | None = None, img_suffix: str = "",
                 label_suffix: str = ".png", label_format: str = "trainIds"):
        if label_format not in ("trainIds", "labelIds"):
            raise ConfigError(f"label_format {label_format!r} unknown; expected 'trainIds' or "
                              "'labelIds'")
        self.split = split
        self.img_dir_arg, self.label_dir_arg = img_dir, label_dir
        self.img_suffix, self.label_suffix = img_suffix, label_suffix
        self.label_format = label_format
        super().__init__(root, load_labels, pipeline, seed)

    def _scan(self) -> list[Record]:
        if self.img_dir_arg is not None:
            img_dir = self.root / self.img_dir_arg
        else:
            img_dir = self.root / "images" if (self.root / "images").is_dir() else self.root
        label_dir = self.root / (self.label_dir_arg if self.label_dir_arg is not None else "labels")
        self.img_dir = img_dir
        images = self._list_images(img_dir, IMAGE_EXTENSIONS,
                                   "**/*{" + ",".join(IMAGE_EXTENSIONS) + "}",
                                   exclude=[label_dir])
        if self.img_suffix:
            images = [p for p in images if p.stem.endswith(self.img_suffix)]
            if not images:
                raise DatasetError(f"{img_dir}: no images whose name ends with "
                                   f"'{self.img_suffix}' before the extension")
        images = self._select_split(images, img_dir, self.split)
        if not self.load_labels:
            return [Record(p) for p in images]
        if self.label_dir_arg is None and not label_dir.is_dir():
            return [Record(p) for p in images]
        def base_of(p: Path) -> str:
            return _strip_suffix(os.path.splitext(os.path.relpath(p, img_dir))[0],
                                 self.img_suffix)

        seen: dict[str, Path] = {}
        for p in images:
            other = seen.setdefault(base_of(p), p)
            if other is not p:
                raise DatasetError(f"{p}: shares its label name with {other}; labels are "
                                   "matched by path without extension, rename one")
        return _pair_labels(images, base_of, label_dir,
                            [(self.label_suffix, self.label_format, None)], self.layout)


DATASETS: dict[str, type[SegDataset]] = {
    "gta": GTA5Dataset,
    "cityscapes": CityscapesDataset,
    "synthia": SynthiaDataset,
    "darkzurich": DarkZurichDataset,
    "acdc": ACDCDataset,
    "folder": FolderDataset,
}
_ALIASES = {"gta5": "gta", "dark_zurich": "darkzurich", "dark-zurich": "darkzurich"}


def build_dataset(kind: str, root: str | os.PathLike, split: str | None = "train",
                  load_labels: bool = True, pipeline=None, **kw) -> SegDataset:
    """Build a dataset by name: gta, cityscapes, synthia, darkzurich, acdc or folder.

    ``split`` is a split folder for Cityscapes/Dark Zurich/ACDC; GTA5, SYNTHIA and folders have
    none ('train' or 'all' = every image, another name reads ``root/<split>.txt``).
    """
    key = _ALIASES.get(kind.lower(), kind.lower())
    if key not in DATASETS:
        raise ConfigError(f"dataset kind {kind!r} unknown; expected one of {', '.join(DATASETS)}")
    return DATASETS[key](root, split=split, load_labels=load_labels, pipeline=pipeline, **kw)
