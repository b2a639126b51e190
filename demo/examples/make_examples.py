"""Regenerate the demo's bundled example images (run from a source checkout, once).

They are synthetic target-domain street scenes from the built-in benchmark's renderer, two by
day and two by night, so the demo has something to show on a fresh install. They are committed
as JPEG because the camera style's sensor noise makes a 512x256 PNG about 200 KB.
"""

from __future__ import annotations

from pathlib import Path

from prnseg.atomic import atomic_write_bytes
from prnseg.image_io import encode_image
from prnseg.training.data.synthetic import image_seed, render_scene

SEED = 7
SIZE = (512, 256)
EXAMPLES = (("day_1", "target", 0), ("day_2", "target", 2), ("night_1", "night", 0), ("night_2", "night", 1))


def main() -> None:
    here = Path(__file__).resolve().parent
    for name, domain, index in EXAMPLES:
        rgb, _ = render_scene(image_seed(SEED, domain, "val", index), SIZE, domain)
        atomic_write_bytes(here / f"{name}.jpg", encode_image(rgb, ".jpg", jpeg_quality=92))
        print(here / f"{name}.jpg")


if __name__ == "__main__":
    main()
