"""Where each image and label of the benchmark lives in the real dataset layouts.

Target images are grouped into cities (Cityscapes) or recording sequences (Dark Zurich) of at
least three images each, named as the real datasets name theirs.
"""

from __future__ import annotations

CITIES = {"train": ("arden", "brenholm", "calloway", "dunmore"), "val": ("eastvale", "fernwick")}
SEQUENCES = {"train": ("GOPR9001", "GOPR9002", "GOPR9003", "GOPR9004"), "val": ("GOPR9101", "GOPR9102")}


def _group(names: tuple[str, ...], n: int, i: int) -> tuple[str, int]:
    """(group name, index within the group) for image i of n: contiguous blocks, >= 3 per group."""
    k = min(len(names), max(1, n // 3))
    g = i * k // n
    first = -(-g * n // k)        # ceil(g * n / k): the first index of block g
    return names[g], i - first


def benchmark_paths(domain: str, split: str, n: int, i: int) -> dict[str, str]:
    """Relative output paths of image i of n in the real layout of ``domain``/``split``."""
    if domain == "source":
        return {"image": f"gta/images/{i:05d}.png", "labelIds": f"gta/labels/{i:05d}.png"}
    if domain == "target":
        city, j = _group(CITIES[split], n, i)
        stem = f"{city}_000000_{j:06d}"
        return {"image": f"cityscapes/leftImg8bit/{split}/{city}/{stem}_leftImg8bit.png",
                "labelTrainIds": f"cityscapes/gtFine/{split}/{city}/{stem}_gtFine_labelTrainIds.png",
                "labelIds": f"cityscapes/gtFine/{split}/{city}/{stem}_gtFine_labelIds.png"}
    seq, j = _group(SEQUENCES[split], n, i)
    stem = f"{seq}_frame_{j:06d}"
    return {"image": f"dark_zurich/rgb_anon/{split}/night/{seq}/{stem}_rgb_anon.png",
            "labelTrainIds": f"dark_zurich/gt/{split}/night/{seq}/{stem}_gt_labelTrainIds.png",
            "labelIds": f"dark_zurich/gt/{split}/night/{seq}/{stem}_gt_labelIds.png"}

