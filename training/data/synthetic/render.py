"""Rendering one scene: a seed, a size, a domain and a generator version in, image and label out.

Every image of the benchmark is seeded from (seed, domain, split, index) by :func:`image_seed`,
so the output is byte-identical for a given seed whatever the number of worker processes.
"""

from __future__ import annotations

import numpy as np

from prnseg.errors import ConfigError

from .develop import develop
from .layout import SYNTH_VERSION, domain_style, geometry
from .scene import _Scene

MIN_SIZE = (32, 16)
MAX_SIZE = (8192, 8192)

_DOMAIN_CODE = {"source": 0, "target": 1, "night": 2}
_SPLIT_CODE = {"train": 0, "val": 1}


def image_seed(seed: int, domain: str, split: str, index: int) -> np.random.SeedSequence:
    """The seed of one image: independent of how the work is split across processes."""
    return np.random.SeedSequence([int(seed), _DOMAIN_CODE[domain], _SPLIT_CODE[split], int(index)])


def render_scene(rng_or_seed, size: tuple[int, int], domain: str, gap: float = 1.0, version: int = SYNTH_VERSION):
    """Render one street scene of ``size`` = (W, H) in ``domain`` ('source', 'target', 'night').

    ``version`` is the generator version (:data:`SYNTH_VERSIONS`); older ones stay reachable so
    numbers measured on them can be reproduced.

    Returns ``(rgb, label)``: RGB uint8 (H, W, 3) and Cityscapes trainIds uint8 (H, W) with 255
    for void. The same seed (or an identically seeded Generator) gives identical arrays.
    """
    w, h = check_size(size)
    style = domain_style(domain, gap)
    rng = _as_rng(rng_or_seed)
    scene = _Scene(rng, (w, h), style, geometry(version))
    scene.draw()
    rgb = develop(scene, rng)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(scene.p.lab)


def _as_rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def check_size(size) -> tuple[int, int]:
    """``size`` as an int (width, height) within :data:`MIN_SIZE`..:data:`MAX_SIZE`, or a clear error."""
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be (width, height), got {size!r}") from None
    if not (MIN_SIZE[0] <= w <= MAX_SIZE[0] and MIN_SIZE[1] <= h <= MAX_SIZE[1]):
        raise ConfigError(f"size {w}x{h} out of range: width {MIN_SIZE[0]}..{MAX_SIZE[0]}, "
                          f"height {MIN_SIZE[1]}..{MAX_SIZE[1]}")
    return w, h
