"""Hand labels back from CVAT (``prnseg import-labels``): a "Segmentation mask 1.1" export (a zip, or
the folder it was extracted to) becomes trainId label PNGs next to the images they label.

The export holds colour masks (``SegmentationClass/<name>.png``) and ``labelmap.txt``, whose lines
``name:r,g,b:parts:actions`` say which colour is which label. CVAT lists labels in its own order,
with the colours the task gave them, so colours are read from that file and never assumed; a
label's trainId is its index among the model's classes (``background`` and the like are 255,
ignored by training). A mask is paired with its image by name: the image's path relative to the
images folder without its extension, as ``prnseg label --suggest`` names the pre-annotations, or,
where CVAT flattened the names to the file stem, the one image of that stem.

Every mask is read and checked (colours, pairing, size) before the first label is written, so an
export with a problem leaves the output folder as it was. The labels go to ``OUT/labels/`` at the
images' relative paths, so OUT with ``images/`` and ``labels/`` is a ``folder`` dataset.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import cv2
import numpy as np

from prnseg.atomic import atomic_write_bytes, fsync_dir
from prnseg.errors import PrnsegError
from prnseg.image_io import encode_gray_png, image_header_size, list_images, read_image, to_rgb_uint8
from prnseg.labels import IGNORE_INDEX

LABELMAP = "labelmap.txt"
MASK_DIR = "SegmentationClass"
#: label names that mean "no class here": their pixels become IGNORE_INDEX
IGNORE_NAMES = frozenset({"background", "ignore", "ignored", "unlabeled", "unlabelled", "void"})
#: how many names an error lists before "and N more"
SHOWN = 3


class ImportLabelsError(PrnsegError):
    """The export, the images folder or a mask cannot give a label; nothing was written."""


def normalise(name: str) -> str:
    """A label name as compared: case, spaces, underscores and hyphens aside ("Traffic_Light" is
    "traffic light"), since CVAT users rename labels freely and identifiers cannot hold spaces."""
    return re.sub(r"[\s_-]+", " ", name.lower()).strip()


def _listing(names, n: int = SHOWN) -> str:
    names = list(names)
    more = f" and {len(names) - n} more" if len(names) > n else ""
    return ", ".join(names[:n]) + more


@dataclass
class Labelmap:
    """Declared colours (packed 0xRRGGBB, sorted) and the trainId each one stands for."""

    colours: np.ndarray
    ids: np.ndarray


def _parse_colour(text: str) -> int | None:
    m = re.fullmatch(r"\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*,\s*([0-9]{1,3})\s*", text)
    if m is None or max(int(v) for v in m.groups()) > 255:
        return None
    r, g, b = (int(v) for v in m.groups())
    return (r << 16) | (g << 8) | b


def parse_labelmap(text: str, where: str, classes: list[str]) -> Labelmap:
    """Read ``labelmap.txt`` (Datumaro's reading: fields split on ':', name first, then R,G,B).
    A name that is neither one of ``classes`` nor a background name, a line without a colour, and
    one colour declared for two different trainIds are errors naming the line."""
    known = {normalise(c): i for i, c in enumerate(classes)}
    found: dict[int, tuple[int, str]] = {}
    unknown: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        name = fields[0].strip()
        colour = _parse_colour(fields[1]) if len(fields) > 1 else None
        if colour is None:
            raise ImportLabelsError(f"{where}:{n}: {line!r} has no colour; expected name:R,G,B:: with R, G, B "
                                    "in 0..255 (export again from CVAT as Segmentation mask 1.1)")
        key = normalise(name)
        tid = known.get(key, IGNORE_INDEX if key in IGNORE_NAMES else None)
        if tid is None:
            unknown.append(name)
            continue
        old = found.setdefault(colour, (tid, name))
        if old[0] != tid:
            raise ImportLabelsError(f"{where}:{n}: colour {_rgb(colour)} is declared for both {old[1]!r} and "
                                    f"{name!r}; give the labels different colours in CVAT and export again")
    if unknown:
        raise ImportLabelsError(f"{where}: label(s) {', '.join(map(repr, unknown))} are not classes of the model; "
                                f"known: {', '.join(classes)} (and background); rename them in CVAT, or pass the "
                                "model they were labelled for with --model")
    if not found:
        raise ImportLabelsError(f"{where}: declares no label; export the task from CVAT as Segmentation mask 1.1")
    order = sorted(found)
    return Labelmap(np.array(order, np.int32), np.array([found[c][0] for c in order], np.uint8))


def _rgb(packed: int) -> str:
    return f"({packed >> 16},{(packed >> 8) & 255},{packed & 255})"


class Export:
    """A CVAT export as a zip or a folder: its labelmap and its class masks by name. Files are found
    below the one shallowest ``labelmap.txt``, so a zip extracted into a folder of its own works too."""

    def __init__(self, path: Path):
        self.path = path
        self.zip = None
        if path.is_dir():
            files = [p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file()]
        elif path.is_file() and zipfile.is_zipfile(path):
            try:
                self.zip = zipfile.ZipFile(path)
            except (OSError, zipfile.BadZipFile) as exc:
                raise ImportLabelsError(f"{path}: unreadable zip ({exc}); download the export again") from None
            files = [i.filename for i in self.zip.infolist() if not i.is_dir()]
        else:
            what = "not found" if not path.exists() else "neither a zip file nor a folder"
            raise ImportLabelsError(f"{path}: {what}; pass the zip CVAT exported (Export annotations > "
                                    "Segmentation mask 1.1) or the folder it was extracted to")
        maps = sorted((f.count("/"), f) for f in files if PurePosixPath(f).name == LABELMAP)
        if not maps or (len(maps) > 1 and maps[0][0] == maps[1][0]):
            self.__exit__()
            why = "no labelmap.txt" if not maps else f"{len(maps)} labelmap.txt files at one depth"
            raise ImportLabelsError(f"{path}: {why}; not a Segmentation mask 1.1 export (export the task from "
                                    "CVAT in that format)")
        self.root = maps[0][1][: -len(LABELMAP)]
        prefix = f"{self.root}{MASK_DIR}/"
        self.masks = {f[len(prefix):-4]: f for f in sorted(files)
                      if f.startswith(prefix) and f.lower().endswith(".png")}

    def __enter__(self) -> Export:
        return self

    def __exit__(self, *exc) -> None:
        if self.zip is not None:
            self.zip.close()

    def name(self, member: str) -> str:
        """How an error names a file of the export."""
        return str(self.path / member) if self.zip is None else f"{self.path}:{member}"

    def read(self, member: str) -> bytes:
        try:
            return (self.path / member).read_bytes() if self.zip is None else self.zip.read(member)
        except (OSError, zipfile.BadZipFile, ValueError) as exc:
            raise ImportLabelsError(f"{self.name(member)}: unreadable ({exc})") from None

    def labelmap(self, classes: list[str]) -> Labelmap:
        member = self.root + LABELMAP
        try:
            text = self.read(member).decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ImportLabelsError(f"{self.name(member)}: not UTF-8 text") from None
        return parse_labelmap(text, self.name(member), classes)


class Images:
    """The images a mask may label, by key (relative path without extension) and by file stem."""

    def __init__(self, images_dir: Path, labels_dir: Path):
        if not images_dir.is_dir():
            raise ImportLabelsError(f"{images_dir}: images folder not found; pass the folder whose images were "
                                    "uploaded to CVAT (prnseg label --suggest wrote them to OUT/suggest/images)")
        labels = labels_dir.resolve()
        found = [p for p in list_images(images_dir) if labels not in p.resolve().parents]
        if not found:
            raise ImportLabelsError(f"{images_dir}: no images (jpg/png/webp/bmp/tif) in it")
        self.dir = images_dir
        self.all = [p.relative_to(images_dir).as_posix() for p in found]
        self.by_key: dict[str, list[str]] = {}
        self.by_stem: dict[str, list[str]] = {}
        for rel in self.all:
            key = rel.rsplit(".", 1)[0]
            self.by_key.setdefault(key, []).append(rel)
            self.by_stem.setdefault(key.rsplit("/", 1)[-1], []).append(rel)

    def match(self, key: str, mask: str) -> tuple[str, bool]:
        """(the image a mask labels, whether it was found by stem alone); an error unless exactly one."""
        hits = self.by_key.get(key)
        by_stem = not hits
        if by_stem:
            hits = self.by_stem.get(key.rsplit("/", 1)[-1], [])
        if len(hits) == 1:
            return hits[0], by_stem
        if hits:
            raise ImportLabelsError(f"{mask}: matches {len(hits)} images under {self.dir} ({_listing(hits)}); "
                                    "rename them apart, or create the CVAT task from a zip that keeps the folders "
                                    "so the export names each image by its path")
        raise ImportLabelsError(f"{mask}: no image named {key}.* or */{key.rsplit('/', 1)[-1]}.* under {self.dir}; "
                                "pass the folder whose images were uploaded to CVAT (--images, or --suggest)")


def image_size(path: Path) -> tuple[int, int]:
    """(height, width) of an image file, from its header when it has a readable one."""
    return image_header_size(path.read_bytes()) or read_image(path).shape[:2]


def mask_to_trainids(data: bytes, name: str, lm: Labelmap, size: tuple[int, int]) -> np.ndarray:
    """A colour mask's bytes -> (H, W) uint8 trainIds. The size is checked from the header first,
    so a mask that does not fit its image is refused before it is decoded."""
    hw = image_header_size(data)
    if hw is None:
        raise ImportLabelsError(f"{name}: not a readable PNG mask (damaged, or another kind of file)")
    if tuple(hw) != tuple(size):
        raise ImportLabelsError(f"{name}: mask is {hw[1]}x{hw[0]} but its image is {size[1]}x{size[0]} (WxH); "
                                "export the masks of this task's own images, at their size")
    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None or arr.size == 0:
        raise ImportLabelsError(f"{name}: not a decodable PNG mask")
    rgb = to_rgb_uint8(arr)
    packed = (rgb[..., 0].astype(np.int32) << 16) | (rgb[..., 1].astype(np.int32) << 8) | rgb[..., 2]
    pos = np.minimum(np.searchsorted(lm.colours, packed), len(lm.colours) - 1)
    bad = lm.colours[pos] != packed
    if bad.any():
        colours, counts = np.unique(packed[bad], return_counts=True)
        order = np.argsort(-counts, kind="stable")
        shown = ", ".join(f"{_rgb(int(colours[i]))} on {int(counts[i])}" for i in order[:SHOWN])
        more = f" and {len(colours) - SHOWN} more colours" if len(colours) > SHOWN else ""
        raise ImportLabelsError(f"{name}: {int(counts.sum())} pixels have a colour not declared in {LABELMAP} "
                                f"({shown}{more}); paint only with the labels' colours (no anti-aliasing or "
                                f"resampling), or declare the label in {LABELMAP}, and export again")
    return lm.ids[pos]


def _check_folders(images_dir: Path, out_dir: Path) -> Path:
    labels_dir = out_dir / "labels"
    lab, img = labels_dir.resolve(), images_dir.resolve()
    if img == lab or lab in img.parents:
        raise ImportLabelsError(f"{images_dir}: the images folder is inside {labels_dir}, where the labels go; "
                                "write them to another --out")
    if any(out_dir.glob("manifest*.jsonl")):
        raise ImportLabelsError(f"{out_dir}: holds a prnseg label run, whose labels/ are the model's; write the "
                                f"hand labels elsewhere (--suggest {out_dir / 'suggest'})")
    return labels_dir


def import_cvat_masks(export: str | os.PathLike, images_dir: str | os.PathLike, out_dir: str | os.PathLike,
                      classes: list[str] | tuple[str, ...], require_all: bool = True) -> dict:
    """Convert a CVAT "Segmentation mask 1.1" export into ``out_dir/labels/<image path>.png``
    (uint8 trainIds, 255 = ignore), one per mask, paired with the images under ``images_dir``.

    ``require_all``: every image under ``images_dir`` must get a label (a ``folder`` dataset
    pairs each image with one). Everything is checked before anything is written. Returns a
    summary: the labels written, how many were matched by stem alone, pixels per class, the
    ignored fraction and the images that got no label."""
    export, images_dir, out_dir = Path(export), Path(images_dir), Path(out_dir)
    classes = list(classes)
    labels_dir = _check_folders(images_dir, out_dir)
    images = Images(images_dir, labels_dir)
    with Export(export) as ex:
        lm = ex.labelmap(classes)
        if not ex.masks:
            raise ImportLabelsError(f"{export}: no {MASK_DIR}/*.png masks; export the task from CVAT as "
                                    "Segmentation mask 1.1")
        blobs: dict[str, bytes] = {}
        owner: dict[str, str] = {}
        hist = np.zeros(256, np.int64)
        by_stem = 0
        for key, member in ex.masks.items():
            name = ex.name(member)
            rel, stem_only = images.match(key, name)
            if rel in owner:
                raise ImportLabelsError(f"{name}: labels {images_dir / rel}, as {owner[rel]} does; keep one "
                                        "mask per image in the export")
            owner[rel] = name
            label = mask_to_trainids(ex.read(member), name, lm, image_size(images_dir / rel))
            hist += np.bincount(label.ravel(), minlength=256)
            blobs[rel] = encode_gray_png(label, 6)
            by_stem += stem_only
    missing = [rel for rel in images.all if rel not in blobs]
    if require_all and missing:
        raise ImportLabelsError(f"{images_dir}: {len(missing)} image(s) have no mask in {export} "
                                f"({_listing(missing)}); each image there needs a label to train on it: "
                                "annotate and export them too, or move them out of that folder")
    return _write(blobs, labels_dir, hist, classes, by_stem, missing, export, images_dir)


def _write(blobs: dict[str, bytes], labels_dir: Path, hist: np.ndarray, classes: list[str], by_stem: int,
           missing: list[str], export: Path, images_dir: Path) -> dict:
    written, folders = [], set()
    for rel, blob in blobs.items():
        path = labels_dir / (rel.rsplit(".", 1)[0] + ".png")
        atomic_write_bytes(path, blob, fsync=True)
        folders.add(path.parent)
        written.append(str(path))
    for folder in folders:
        fsync_dir(folder)
    pixels = int(hist.sum())
    return {"export": str(export), "images_dir": str(images_dir), "labels_dir": str(labels_dir),
            "imported": len(written), "matched_by_stem": by_stem, "labels": written,
            "class_pixels": {c: int(hist[i]) for i, c in enumerate(classes)},
            "ignored_pixels": int(hist[IGNORE_INDEX]), "pixels": pixels,
            "ignored_fraction": float(hist[IGNORE_INDEX]) / pixels if pixels else 0.0,
            "images_without_mask": missing}
