"""Projection and rasterisation: a pinhole camera over a ground plane, and the painter that fills
polygons into the four maps a scene is made of (albedo, trainIds, depth for haze, emitted light).

Drawing is in OpenCV with sub-pixel coordinates, so thin far objects keep their exact extent.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .classes import SKY

_SHIFT = 3                      # sub-pixel bits for OpenCV drawing
_SCALE = 1 << _SHIFT
FAR = 3000.0                    # depth used for sky and the ground at the horizon (metres)


class Camera:
    """Pinhole camera at height ``height`` looking along +Z; ground is Y = 0, X to the right."""

    def __init__(self, w: int, h: int, f: float, cx: float, cy: float, height: float):
        self.w, self.h, self.f, self.cx, self.cy, self.height = w, h, f, cx, cy, height
        self.znear = f * height / (h + 2.0 - cy)

    def p(self, x: float, y: float, z: float) -> tuple[float, float]:
        """The pixel (u, v) of world point (x, y, z)."""
        return self.cx + self.f * x / z, self.cy + self.f * (self.height - y) / z


class Painter:
    """Draws polygons into the albedo image, the trainId map, a depth map and an emission map."""

    def __init__(self, cam: Camera):
        w, h = cam.w, cam.h
        self.w, self.h = w, h
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.full((h, w), SKY, np.uint8)
        rows = np.arange(h, dtype=np.float32) + 0.5 - cam.cy
        ground = np.where(rows > 0, cam.f * cam.height / np.maximum(rows, 1e-3), FAR)
        self.dep = np.repeat(np.minimum(ground, FAR).astype(np.float32)[:, None], w, axis=1)
        self.emit = np.zeros((h, w, 3), np.float32)
        self.lamps: list[tuple[float, float, float, float]] = []   # u, v, radius px, strength

    def _pts(self, pts) -> np.ndarray | None:
        """Points as fixed-point pixel coordinates; None when not finite or wholly off screen."""
        a = np.asarray(pts, np.float64).reshape(-1, 2)
        if not np.all(np.isfinite(a)):
            return None
        if (a[:, 0].max() < -1 or a[:, 0].min() > self.w + 1
                or a[:, 1].max() < -1 or a[:, 1].min() > self.h + 1):
            return None
        return np.round(a * _SCALE).astype(np.int32)

    def poly(self, pts, color, cls: int | None = None, depth: float | None = None) -> None:
        """Fill a polygon with ``color``, and with ``cls`` / ``depth`` where given."""
        a = self._pts(pts)
        if a is None:
            return
        cv2.fillPoly(self.img, [a], tuple(float(c) for c in color), cv2.LINE_8, _SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lab, [a], int(cls), cv2.LINE_8, _SHIFT)
        if depth is not None:
            cv2.fillPoly(self.dep, [a], float(depth), cv2.LINE_8, _SHIFT)

    def glow(self, pts, color, strength: float = 1.0) -> None:
        """Add emitted light (lamps, lit windows) over a polygon, independent of the scene's light."""
        a = self._pts(pts)
        if a is not None:
            cv2.fillPoly(self.emit, [a], tuple(float(c) * strength for c in color), cv2.LINE_8, _SHIFT)

    def label_only(self, pts, cls: int, depth: float | None = None) -> None:
        """Claim a region for ``cls`` in the label (and depth) map without painting it.

        Cityscapes annotators outline a bicycle with one polygon, the gaps between its spokes
        and tubes included; the image still shows what lies behind those gaps.
        """
        a = self._pts(pts)
        if a is None:
            return
        cv2.fillPoly(self.lab, [a], int(cls), cv2.LINE_8, _SHIFT)
        if depth is not None:
            cv2.fillPoly(self.dep, [a], float(depth), cv2.LINE_8, _SHIFT)

    def depth_only(self, pts, depth: float) -> None:
        """Set the depth of a polygon without painting it."""
        a = self._pts(pts)
        if a is not None:
            cv2.fillPoly(self.dep, [a], float(depth), cv2.LINE_8, _SHIFT)

    def darken(self, pts, factor: float) -> None:
        """Scale the albedo inside a polygon (cast shadows); labels are unchanged."""
        a = self._pts(pts)
        if a is None or factor >= 1.0:
            return
        x0, y0, bw, bh = cv2.boundingRect(a >> _SHIFT)
        x0, y0 = max(0, x0 - 1), max(0, y0 - 1)
        x1, y1 = min(self.w, x0 + bw + 3), min(self.h, y0 + bh + 3)
        if x1 <= x0 or y1 <= y0:
            return
        mask = np.zeros((y1 - y0, x1 - x0), np.uint8)
        off = np.array([x0, y0], np.int32) * _SCALE
        cv2.fillPoly(mask, [a - off], 1, cv2.LINE_8, _SHIFT)
        region = self.img[y0:y1, x0:x1]
        region[mask.astype(bool)] *= factor

    def ellipse(self, centre, axes, color, cls: int | None = None, depth: float | None = None,
                thickness: float = -1, emit: float = 0.0) -> None:
        """A filled ellipse, or a ring of ``thickness`` pixels; ``emit`` > 0 makes it a light."""
        u, v = centre
        au, av = max(axes[0], 0.3), max(axes[1], 0.3)
        if u + au < -1 or u - au > self.w + 1 or v + av < -1 or v - av > self.h + 1:
            return
        c = (int(round(u * _SCALE)), int(round(v * _SCALE)))
        ax = (int(round(au * _SCALE)), int(round(av * _SCALE)))
        t = -1 if thickness < 0 else max(1, int(round(thickness)))
        col = tuple(float(x) for x in color)
        cv2.ellipse(self.img, c, ax, 0, 0, 360, col, t, cv2.LINE_8, _SHIFT)
        if cls is not None:
            cv2.ellipse(self.lab, c, ax, 0, 0, 360, int(cls), t, cv2.LINE_8, _SHIFT)
        if depth is not None:
            cv2.ellipse(self.dep, c, ax, 0, 0, 360, float(depth), t, cv2.LINE_8, _SHIFT)
        if emit > 0:
            cv2.ellipse(self.emit, c, ax, 0, 0, 360, tuple(x * emit for x in col), t, cv2.LINE_8, _SHIFT)

    def bar(self, p0, p1, width: float, color, cls: int | None = None, depth: float | None = None) -> None:
        """A straight stroke of ``width`` pixels (sub-pixel strokes still cover one pixel)."""
        (u0, v0), (u1, v1) = p0, p1
        du, dv = u1 - u0, v1 - v0
        n = math.hypot(du, dv)
        if n < 1e-6:
            self.ellipse(p0, (width / 2, width / 2), color, cls, depth)
            return
        if width < 1.3:
            a = self._pts([p0, p1])
            if a is None:
                return
            col = tuple(float(x) for x in color)
            cv2.line(self.img, tuple(a[0]), tuple(a[1]), col, 1, cv2.LINE_8, _SHIFT)
            if cls is not None:
                cv2.line(self.lab, tuple(a[0]), tuple(a[1]), int(cls), 1, cv2.LINE_8, _SHIFT)
            if depth is not None:
                cv2.line(self.dep, tuple(a[0]), tuple(a[1]), float(depth), 1, cv2.LINE_8, _SHIFT)
            return
        ou, ov = -dv / n * width / 2, du / n * width / 2
        self.poly([(u0 + ou, v0 + ov), (u1 + ou, v1 + ov), (u1 - ou, v1 - ov), (u0 - ou, v0 - ov)],
                  color, cls, depth)
