"""A contact sheet of a written benchmark: source and target images next to their labels.

It reads the files back from disk, so it shows what the datasets' loaders will see.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from prnseg.errors import ConfigError
from prnseg.image_io import read_image, read_label, write_image
from prnseg.labels import colorize, labelid_to_trainid

from .paths import benchmark_paths


def _load_pair(root: Path, domain: str, split: str, n: int, i: int):
    """Image i of a split, its trainIds (decoded from labelIds where the layout has only those) and stem."""
    paths = benchmark_paths(domain, split, n, i)
    img = read_image(root / paths["image"])
    if "labelTrainIds" in paths:
        lab = read_label(root / paths["labelTrainIds"])
    else:
        lab = labelid_to_trainid(read_label(root / paths["labelIds"]))
    return img, lab, Path(paths["image"]).stem


def write_preview(out, sheet, rows: int = 3, tile_width: int = 256) -> Path:
    """Contact sheet: rows of [source image | label | target image | label] with captions."""
    root = Path(out)
    try:
        meta = json.loads((root / "synth.json").read_text())
        counts, night = meta["counts"], bool(meta["night"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{root / 'synth.json'}: missing or invalid ({exc}); expected a benchmark written "
                          f"by 'prnseg synth'") from None
    tdom = "night" if night else "target"
    columns = (("source", "train", counts["source"], "source (GTA5 layout)"),
               (tdom, "train", counts["target"],
                "target (Dark Zurich night layout)" if night else "target (Cityscapes layout)"))
    k = max(1, min(rows, counts["source"], counts["target"]))
    tiles: list[list[np.ndarray]] = []
    cap_h = 20
    for r in range(k):
        row = []
        for domain, split, n, title in columns:
            img, lab, stem = _load_pair(root, domain, split, n, r)
            th = max(1, round(img.shape[0] * tile_width / img.shape[1]))
            a = cv2.resize(img, (tile_width, th), interpolation=cv2.INTER_AREA)
            b = cv2.resize(colorize(lab), (tile_width, th), interpolation=cv2.INTER_NEAREST)
            cap = np.full((cap_h, 2 * tile_width, 3), 255, np.uint8)
            cv2.putText(cap, f"{title}  {stem}", (4, cap_h - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1,
                        cv2.LINE_AA)
            pair = np.concatenate([cap, np.concatenate([a, b], axis=1)], axis=0)
            row.append(pair)
            row.append(np.full((pair.shape[0], 6, 3), 255, np.uint8))
        tiles.append(row[:-1])
    sheet_rows = [np.concatenate(r, axis=1) for r in tiles]
    sep = np.full((6, sheet_rows[0].shape[1], 3), 255, np.uint8)
    body = [sheet_rows[0]]
    for r in sheet_rows[1:]:
        body += [sep, r]
    grid = np.concatenate(body, axis=0)
    write_image(sheet, grid)
    return Path(sheet)

