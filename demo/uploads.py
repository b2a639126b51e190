"""What the demo accepts: an upload is judged from its header (type, size) before any decode, and
refused with a one-line :class:`DemoInputError` naming the file. No Gradio here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from prnseg.demo import EXAMPLES_DIR
from prnseg.errors import PrnsegError
from prnseg.image_io import IMAGE_EXTENSIONS, image_header_size, read_image

DEFAULT_MAX_PIXELS = 16_000_000
# Bytes read to find an image's size: a JPEG's EXIF and ICC segments come before its size.
HEADER_BYTES = 4 << 20
ACCEPTED = ", ".join(e.lstrip(".").upper() for e in IMAGE_EXTENSIONS if e not in (".jpeg", ".tif"))


class DemoInputError(PrnsegError):
    """An upload the demo cannot use: wrong type, too large or undecodable (shown in the page)."""


def example_images() -> list[Path]:
    """The bundled synthetic target-domain examples (day, then night)."""
    return sorted(EXAMPLES_DIR.glob("*.jpg"), key=lambda p: (not p.name.startswith("day"), p.name))


def upload_size(path: str | os.PathLike, max_pixels: int) -> tuple[int, int]:
    """(height, width) of an upload from its header alone, or a one-line :class:`DemoInputError`
    naming the file: wrong type, damaged header, too many pixels."""
    p = Path(path)
    name = p.name
    if p.suffix.lower() not in IMAGE_EXTENSIONS:
        kind = f"'{p.suffix}'" if p.suffix else "without an extension"
        raise DemoInputError(f"{name}: wrong file type ({kind}); upload a {ACCEPTED} image")
    try:
        nbytes = p.stat().st_size
        with open(p, "rb") as f:
            head = f.read(HEADER_BYTES)
    except OSError as exc:
        raise DemoInputError(f"{name}: cannot read the upload ({exc.strerror}); upload it again") from None
    if nbytes > 8 * max_pixels + (1 << 20):
        raise DemoInputError(f"{name}: file too large ({nbytes / 1e6:.1f} MB for an image of at most "
                             f"{max_pixels / 1e6:.1f} MP); downscale it or start the demo with a larger --max-pixels")
    size = image_header_size(head)
    if size is None:
        raise DemoInputError(f"{name}: not a readable image (its header is damaged, or it is not really "
                             f"{p.suffix.lower()}); upload a valid {ACCEPTED} image")
    height, width = size
    if width * height > max_pixels:
        raise DemoInputError(f"{name}: image too large ({width} x {height} = {width * height / 1e6:.1f} MP; this "
                             f"demo accepts up to {max_pixels / 1e6:.1f} MP); downscale it or start the demo "
                             "with a larger --max-pixels")
    return size


def read_upload(path: str | os.PathLike, max_pixels: int) -> np.ndarray:
    """An uploaded file -> RGB uint8, or a one-line :class:`DemoInputError` naming the file.

    The size comes from the header before any decode: an oversized image, or one whose header
    cannot be read, is refused without allocating it (no fallback decode).
    """
    upload_size(path, max_pixels)
    name = Path(path).name
    try:
        return read_image(path, max_pixels=max_pixels)
    except PrnsegError as exc:
        reason = getattr(exc, "reason", str(exc))
        raise DemoInputError(f"{name}: {reason}; upload a valid {ACCEPTED} image") from None
    except Exception as exc:  # a decoder failure on a file whose header looked fine
        raise DemoInputError(f"{name}: not a decodable image ({type(exc).__name__}); upload a valid {ACCEPTED} "
                             "image") from None


def upload_path(value) -> str | None:
    """The file behind an image input. The demo's events skip Gradio's preprocessing (which opens
    every image upload with PIL and answers a failure with a bare 'Error'), so the payload comes
    raw: a FileData dict, or a path; :func:`read_upload` then judges the file as the batch tab does."""
    if value is None or isinstance(value, str):
        return value or None
    path = value.get("path") if isinstance(value, dict) else getattr(value, "path", None)
    return str(path) if path else None
