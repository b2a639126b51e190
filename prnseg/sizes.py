"""The one image-size parser: ``HEIGHTxWIDTH`` everywhere (CLI, configs, model.json), as PyTorch,
ONNX and the model buckets order them. Torch-free, so a bad size is reported at once."""

from __future__ import annotations

import re

from prnseg.errors import ConfigError

_HW = re.compile(r"\s*(\d+)\s*[xX*]\s*(\d+)\s*")


def format_hw(hw) -> str:
    """(H, W) -> ``"HxW"``."""
    h, w = hw
    return f"{int(h)}x{int(w)}"


def parse_hw(size, option: str = "--size", multiple: int = 1, error=ConfigError) -> tuple[int, int]:
    """``"HxW"`` or ``(H, W)`` -> (H, W): positive, and multiples of ``multiple`` when it is > 1.

    Any other value is a one-line ``error`` naming ``option`` and the fix.
    """
    if isinstance(size, str):
        m = _HW.fullmatch(size)
        if not m:
            raise error(f"{option} {size!r}: expected HEIGHTxWIDTH in pixels, e.g. 256x512")
        h, w = int(m.group(1)), int(m.group(2))
    else:
        try:
            h, w = (int(v) for v in size)
        except (TypeError, ValueError):
            raise error(f"{option} {size!r}: expected [HEIGHT, WIDTH] in pixels, e.g. [256, 512]") from None
    if h <= 0 or w <= 0:
        raise error(f"{option} {h}x{w}: height and width must be positive (HEIGHTxWIDTH, e.g. 256x512)")
    if multiple > 1 and (h % multiple or w % multiple):
        ph, pw = -(-h // multiple) * multiple, -(-w // multiple) * multiple
        raise error(f"{option} {h}x{w}: not a multiple of {multiple} (the network's output stride); "
                    f"use {ph}x{pw}")
    return h, w
