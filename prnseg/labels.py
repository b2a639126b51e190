"""Label sets: Cityscapes trainIds, their palette, and the id -> trainId tables of the
datasets we read (GTA5 and Cityscapes share Cityscapes labelIds; SYNTHIA has its own ids).

The tables are the ones every UDA codebase uses (DAFormer's converters); the tests compare them
with ``cityscapesscripts``.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255

CITYSCAPES_CLASSES: tuple[str, ...] = (
    "road", "sidewalk", "building", "wall", "fence", "pole", "traffic light",
    "traffic sign", "vegetation", "terrain", "sky", "person", "rider", "car",
    "truck", "bus", "train", "motorcycle", "bicycle",
)
NUM_CLASSES = len(CITYSCAPES_CLASSES)

CITYSCAPES_PALETTE: tuple[tuple[int, int, int], ...] = (
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
    (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
    (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
    (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
)

# Cityscapes labelId -> trainId (GTA5 labels use the same labelIds). Unlisted ids -> 255.
LABELID_TO_TRAINID: dict[int, int] = {
    7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9,
    23: 10, 24: 11, 25: 12, 26: 13, 27: 14, 28: 15, 31: 16, 32: 17, 33: 18,
}

# SYNTHIA-RAND-CITYSCAPES class ids and names (from the dataset's README).
SYNTHIA_CLASS_NAMES: dict[int, str] = {
    0: "void", 1: "sky", 2: "building", 3: "road", 4: "sidewalk", 5: "fence",
    6: "vegetation", 7: "pole", 8: "car", 9: "traffic sign", 10: "pedestrian",
    11: "bicycle", 12: "motorcycle", 13: "parking-slot", 14: "road-work",
    15: "traffic light", 16: "terrain", 17: "rider", 18: "truck", 19: "bus",
    20: "train", 21: "wall", 22: "lanemarking",
}
# SYNTHIA id -> trainId as in the reference converters: terrain, truck and train are dropped.
SYNTHIA_TO_TRAINID: dict[int, int] = {
    3: 0, 4: 1, 2: 2, 21: 3, 5: 4, 7: 5, 15: 6, 9: 7, 6: 8, 1: 10,
    10: 11, 17: 12, 8: 13, 19: 15, 12: 17, 11: 18,
}
# Evaluation subsets (trainIds) for SYNTHIA -> Cityscapes.
SYNTHIA_16_CLASSES: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)
SYNTHIA_13_CLASSES: tuple[int, ...] = (0, 1, 2, 6, 7, 8, 10, 11, 12, 13, 15, 17, 18)

CLASS_SUBSETS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(NUM_CLASSES)),
    "synthia16": SYNTHIA_16_CLASSES,
    "synthia13": SYNTHIA_13_CLASSES,
}


def _lut(mapping: dict[int, int], size: int) -> np.ndarray:
    lut = np.full(size, IGNORE_INDEX, dtype=np.uint8)
    for src, dst in mapping.items():
        lut[src] = dst
    return lut


_LABELID_LUT = _lut(LABELID_TO_TRAINID, 256)
_SYNTHIA_LUT = _lut(SYNTHIA_TO_TRAINID, 65536)
_TRAINID_TO_LABELID_LUT = np.zeros(256, dtype=np.uint8)
for _lid, _tid in LABELID_TO_TRAINID.items():
    _TRAINID_TO_LABELID_LUT[_tid] = _lid
_PALETTE_LUT = np.zeros((256, 3), dtype=np.uint8)
_PALETTE_LUT[: NUM_CLASSES] = np.asarray(CITYSCAPES_PALETTE, dtype=np.uint8)


def labelid_to_trainid(label: np.ndarray) -> np.ndarray:
    """Map a Cityscapes/GTA5 labelId image (uint8) to trainIds; unknown ids become 255."""
    return _LABELID_LUT[np.asarray(label, dtype=np.uint8)]


def trainid_to_labelid(label: np.ndarray) -> np.ndarray:
    """Map trainIds back to Cityscapes labelIds (255 -> 0, 'unlabeled')."""
    return _TRAINID_TO_LABELID_LUT[np.asarray(label, dtype=np.uint8)]


def synthia_to_trainid(label: np.ndarray) -> np.ndarray:
    """Map SYNTHIA class ids (the last channel of its 16-bit label PNGs) to trainIds."""
    return _SYNTHIA_LUT[np.asarray(label, dtype=np.uint16)]


def colorize(label: np.ndarray) -> np.ndarray:
    """trainId map (H, W) -> RGB image (H, W, 3) in the Cityscapes palette; 255 is black."""
    return _PALETTE_LUT[np.asarray(label, dtype=np.uint8)]
