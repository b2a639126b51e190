"""What the demo draws from one prediction: plain numpy/OpenCV, no Gradio, so it is testable alone.

Views are drawn at display size (the longest side capped) because a browser shows a 4K frame no
better than a 1280-pixel one and the annotated view ships one mask per class; the downloads keep
the image's full resolution.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

NOISE_COLOUR = np.array([255, 0, 200], dtype=np.float32)
DISPLAY_MAX_SIDE = 1280


def display_size(height: int, width: int, max_side: int = DISPLAY_MAX_SIDE) -> tuple[int, int]:
    """(h, w) scaled down so the longest side is at most ``max_side``; never scaled up."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def resize_plane(plane: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label-like plane (ids and masks must not be interpolated)."""
    if plane.shape[:2] == hw:
        return plane
    return cv2.resize(plane, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST)


def resize_image(rgb: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    if rgb.shape[:2] == hw:
        return rgb
    return cv2.resize(rgb, (hw[1], hw[0]), interpolation=cv2.INTER_AREA)


def hex_colour(rgb) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgb))


def palette_lut(palette) -> np.ndarray:
    """256 x 3 uint8 lookup table: class colours, black for ids outside the palette (ignore)."""
    lut = np.zeros((256, 3), dtype=np.uint8)
    lut[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    return lut


def class_masks(label: np.ndarray, classes, opacity: float) -> list[tuple[np.ndarray, str]]:
    """``gr.AnnotatedImage`` annotations: one (mask, class name) per class present; the mask value
    is the overlay's alpha, so the opacity slider is carried by the masks themselves."""
    present = np.flatnonzero(np.bincount(label.ravel(), minlength=256)[: len(classes)])
    alpha = float(np.clip(opacity, 0.0, 1.0))
    return [((label == c).astype(np.float32) * alpha, classes[c]) for c in present]


def blend(rgb: np.ndarray, colour: np.ndarray, mask: np.ndarray, opacity: float) -> np.ndarray:
    """``rgb`` with ``colour`` (per-pixel H x W x 3 or one RGB triple) laid over the pixels of ``mask``."""
    out = rgb.astype(np.float32)
    a = float(np.clip(opacity, 0.0, 1.0))
    colour = np.broadcast_to(np.asarray(colour, dtype=np.float32), out.shape)
    out[mask] = (1.0 - a) * out[mask] + a * colour[mask]
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def colour_overlay(rgb: np.ndarray, label: np.ndarray, palette, opacity: float) -> np.ndarray:
    """The image with every pixel tinted by its class colour (used by the batch gallery)."""
    return blend(rgb, palette_lut(palette)[label], np.ones(label.shape, dtype=bool), opacity)


def noise_overlay(rgb: np.ndarray, noisy: np.ndarray, opacity: float) -> np.ndarray:
    """The image, dimmed, with the pixels flagged noisy in magenta: where the pseudo-label is
    predicted wrong. Dimming keeps the flags visible on bright and dark (night) images alike."""
    base = (rgb.astype(np.float32) * 0.6).astype(np.uint8)
    return blend(base, NOISE_COLOUR, noisy, max(opacity, 0.35))


def difference_view(rgb: np.ndarray, raw: np.ndarray, refined: np.ndarray, palette) -> np.ndarray:
    """Grey, darkened image with only the pixels the PRN relabelled, drawn in their refined class
    colour and outlined in white, so the few changed pixels stand out."""
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    out = np.repeat((grey.astype(np.float32) * 0.45).astype(np.uint8)[:, :, None], 3, axis=2)
    changed = raw != refined
    out[changed] = palette_lut(palette)[refined[changed]]
    if changed.any():
        edges = cv2.morphologyEx(changed.astype(np.uint8), cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
        out[(edges > 0) & ~changed] = 255
    return out


def confidence_range(confidence: np.ndarray) -> tuple[float, float]:
    """(low, high) of the confidence (uint8, 255 = 1.0) that the heat map stretches over: the 1st
    and 99th percentiles, at least 1/255 apart, as fractions of 1."""
    lo, hi = (int(v) for v in np.percentile(confidence, (1, 99)))
    if hi <= lo:
        lo, hi = (lo - 1, lo) if lo > 0 else (0, 1)
    return lo / 255.0, hi / 255.0


def confidence_heatmap(confidence: np.ndarray) -> np.ndarray:
    """Confidence (uint8, 255 = 1.0) in the inferno colour map, auto-contrast over
    :func:`confidence_range` (a model whose confidence is all near 0.07 still shows its
    structure), with a colour bar below labelled with the values its ends stand for."""
    lo, hi = confidence_range(confidence)
    stretched = np.clip((confidence.astype(np.float32) / 255.0 - lo) / (hi - lo), 0.0, 1.0)
    heat = cv2.cvtColor(cv2.applyColorMap(np.round(stretched * 255).astype(np.uint8), cv2.COLORMAP_INFERNO),
                        cv2.COLOR_BGR2RGB)
    h, w = confidence.shape
    bar_h = max(10, h // 20)
    text_h = max(14, bar_h + 4)
    ramp = np.linspace(0, 255, w).astype(np.uint8)[None, :].repeat(bar_h, axis=0)
    bar = cv2.cvtColor(cv2.applyColorMap(ramp, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    strip = np.full((text_h, w, 3), 255, dtype=np.uint8)
    scale = max(0.35, min(1.0, text_h / 30))
    for text, where in ((f"{lo:.2f}", "left"), ("confidence", "centre"), (f"{hi:.2f}", "right")):
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x = {"left": 2, "centre": (w - tw) // 2, "right": w - tw - 2}[where]
        cv2.putText(strip, text, (x, (text_h + th) // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 1,
                    cv2.LINE_AA)
    return np.concatenate([heat, bar, strip], axis=0)


@dataclass(frozen=True)
class ClassRow:
    class_id: int
    name: str
    pixel_share: float
    mean_confidence: float
    noisy_share: float


def class_rows(label: np.ndarray, confidence: np.ndarray, noisy: np.ndarray, classes) -> list[ClassRow]:
    """Per class present: share of the image's pixels, mean confidence (0..1) and the share of its
    pixels flagged noisy; largest classes first."""
    ids = label.ravel().astype(np.int64)
    n = len(classes)
    valid = ids < n
    ids = ids[valid]
    counts = np.bincount(ids, minlength=n)
    conf_sum = np.bincount(ids, weights=confidence.ravel()[valid].astype(np.float64), minlength=n)
    noisy_sum = np.bincount(ids, weights=noisy.ravel()[valid].astype(np.float64), minlength=n)
    total = max(1, label.size)
    rows = [ClassRow(c, classes[c], counts[c] / total, conf_sum[c] / counts[c] / 255.0, noisy_sum[c] / counts[c])
            for c in np.flatnonzero(counts)]
    return sorted(rows, key=lambda r: (-r.pixel_share, r.class_id))
