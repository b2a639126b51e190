"""The built-in synthetic domain-shift benchmark: procedurally rendered street scenes.

Why it exists: every command of the product must run on a fresh machine with no downloads, and
domain adaptation can only be shown on data that has a real domain gap. The generator draws
street scenes with a pinhole camera over a ground plane (road to a vanishing point, sidewalks,
facades, poles, vehicles, people, ...) covering all 19 Cityscapes trainId classes, and renders
them in two appearance styles:

* **source** ("game"): saturated, clean, flat-shaded colours and hard edges, written in the GTA5
  layout with Cityscapes labelIds;
* **target** ("camera"): a shifted, desaturated class palette, exposure/gamma/colour cast, haze
  toward the horizon, vignetting, blur, sensor noise and JPEG artefacts, different object
  statistics (more cars, fewer people, lower horizon, wider road), written in the Cityscapes
  layout; or, with ``night``, a dark, noisy Dark Zurich-style night domain lit by street lamps
  and car lights, written in the Dark Zurich layout.

Shapes and textures (window grids, blobby foliage, lane markings, paving joints, wheels, ...) are
shared by both styles, so a model can adapt; colour alone does not transfer. ``gap`` scales the
appearance difference: 0 = the target looks like the source (only the scene statistics differ),
1 = the calibrated default (see ``CAMERA_STRENGTH``), up to 2 = a harsher shift. The source
also varies its weather and time of day, as a game does, so sky colour and brightness alone do
not identify a class.

Only numpy and OpenCV are used (no torch): the benchmark is written by a CPU-only install.
Every image is seeded from (seed, domain, split, index), so the output is byte-identical for a
given seed whatever the number of worker processes.
"""

from __future__ import annotations

import dataclasses
import json
import math
import multiprocessing
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from prnseg.errors import ConfigError
from prnseg.serve.image_io import (
    atomic_write_bytes, encode_image, read_image, read_label, write_image,
)
from prnseg.serve.labels import (
    CITYSCAPES_CLASSES, IGNORE_INDEX, NUM_CLASSES, colorize, labelid_to_trainid,
    trainid_to_labelid,
)

SYNTH_VERSION = 3
SYNTH_VERSIONS = (2, 3)
SYNTH_FORMAT = "prnseg-synthetic"
DOMAINS = ("source", "target", "night")
MIN_SIZE = (32, 16)
MAX_SIZE = (8192, 8192)

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON,
 RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)
VOID = IGNORE_INDEX

_SHIFT = 3                      # sub-pixel bits for OpenCV drawing
_SCALE = 1 << _SHIFT
_FAR = 3000.0                   # depth used for sky and the ground at the horizon (metres)

RGB = tuple[float, float, float]


def _c(*rgb255: int) -> RGB:
    return tuple(v / 255.0 for v in rgb255)  # type: ignore[return-value]


def _cs(*colours: tuple[int, int, int]) -> tuple[RGB, ...]:
    return tuple(_c(*c) for c in colours)


# --------------------------------------------------------------------------------------------
# Styles
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Look:
    """Everything about how a domain looks: class colours and the camera/rendering pipeline.

    Colour lists of the same field have the same length in every look, so two looks can be
    blended field by field (:func:`blend_looks`); that is how ``gap`` scales the domain shift.
    """

    road: RGB
    sidewalk: RGB
    curb: RGB
    marking: RGB
    buildings: tuple[RGB, ...]
    window: RGB
    wall: RGB
    fence: RGB
    pole: RGB
    light_housing: RGB
    sign_faces: tuple[RGB, ...]
    sign_inner: RGB
    vegetation: RGB
    trunk: RGB
    terrain: RGB
    sky_top: RGB
    sky_horizon: RGB
    skins: tuple[RGB, ...]
    clothes: tuple[RGB, ...]
    cars: tuple[RGB, ...]
    truck_cabs: tuple[RGB, ...]
    truck_boxes: tuple[RGB, ...]
    buses: tuple[RGB, ...]
    trains: tuple[RGB, ...]
    motorcycles: tuple[RGB, ...]
    bicycles: tuple[RGB, ...]
    glass: RGB
    tyre: RGB
    hood: RGB
    colour_jitter: float     # per-instance brightness spread
    face_shade: float        # darkening of side faces relative to faces toward the camera
    texture: float           # multiplier on the class textures
    light_field: float       # amplitude of low-frequency illumination changes
    shadows: float           # darkness of cast shadows on the ground
    clouds: float
    haze: float              # extinction per metre toward the haze colour
    haze_color: RGB
    exposure: float
    cast: RGB                # per-channel gain (white balance)
    gamma: float
    saturation: float
    contrast: float
    vignette: float
    blur: float              # Gaussian sigma in pixels at 512 px width
    noise: float             # sensor noise sigma (0..1 intensity)
    chroma_noise: float
    jpeg: float              # 0 = lossless, 1 = quality 35
    lamps: float             # street lamps, car lights and lit windows switched on (night)
    lamp_color: RGB
    weather: float           # chance that an image gets another sky and light (overcast, dusk, ...)


def _lerp(a, b, t: float):
    if isinstance(a, tuple):
        if len(a) != len(b):
            raise ValueError("looks to blend must have colour lists of the same length")
        return tuple(_lerp(x, y, t) for x, y in zip(a, b))
    return float(a + (b - a) * t)


def blend_looks(a: Look, b: Look, t: float) -> Look:
    """Field-by-field interpolation (t may exceed 1 to exaggerate the gap)."""
    values = {f.name: _lerp(getattr(a, f.name), getattr(b, f.name), t) for f in dataclasses.fields(Look)}
    return Look(**values)


SOURCE_LOOK = Look(
    road=_c(86, 82, 100), sidewalk=_c(200, 166, 150), curb=_c(230, 220, 210),
    marking=_c(250, 250, 250),
    buildings=_cs((186, 104, 72), (218, 188, 130), (140, 156, 196), (206, 206, 192), (170, 112, 158)),
    window=_c(70, 140, 210), wall=_c(214, 200, 140), fence=_c(156, 106, 60), pole=_c(140, 140, 150),
    light_housing=_c(40, 40, 36), sign_faces=_cs((226, 28, 28), (28, 80, 226), (246, 204, 16)),
    sign_inner=_c(250, 250, 250), vegetation=_c(52, 170, 40), trunk=_c(110, 70, 40),
    terrain=_c(184, 192, 80), sky_top=_c(50, 130, 245), sky_horizon=_c(150, 205, 255),
    skins=_cs((236, 190, 156), (196, 140, 104), (120, 82, 56)),
    clothes=_cs((226, 40, 40), (40, 90, 226), (246, 206, 40), (40, 176, 80), (120, 120, 130),
                (166, 60, 206), (30, 30, 30), (246, 246, 246)),
    cars=_cs((216, 28, 28), (28, 70, 216), (176, 176, 184), (246, 246, 246), (24, 24, 30),
             (40, 166, 60), (110, 110, 120), (246, 206, 28)),
    truck_cabs=_cs((206, 60, 40), (40, 80, 186), (236, 236, 236)),
    truck_boxes=_cs((246, 246, 240), (206, 40, 40), (60, 60, 206)),
    buses=_cs((240, 186, 28), (206, 40, 40), (40, 156, 80)),
    trains=_cs((226, 40, 50), (40, 60, 186)),
    motorcycles=_cs((206, 30, 30), (30, 30, 30), (30, 80, 206)),
    bicycles=_cs((30, 156, 226), (226, 30, 30), (246, 246, 246), (20, 20, 20)),
    glass=_c(60, 110, 166), tyre=_c(22, 22, 22), hood=_c(40, 40, 44),
    colour_jitter=0.1, face_shade=0.25, texture=1.0, light_field=0.0, shadows=0.15, clouds=0.15,
    haze=0.002, haze_color=_c(190, 215, 245), exposure=1.0, cast=(1.0, 1.0, 1.0), gamma=1.0,
    saturation=1.15, contrast=1.05, vignette=0.0, blur=0.0, noise=0.0, chroma_noise=0.0, jpeg=0.0,
    lamps=0.0, lamp_color=_c(255, 170, 80), weather=0.6,
)

# The camera style at full strength. Every class colour is shifted and desaturated and the whole
# camera pipeline (exposure, cast, haze, vignette, blur, noise, JPEG) is on.
CAMERA_FULL_LOOK = Look(
    road=_c(122, 120, 116), sidewalk=_c(152, 150, 154), curb=_c(176, 174, 170),
    marking=_c(206, 206, 196),
    buildings=_cs((132, 118, 106), (168, 156, 138), (112, 112, 118), (188, 182, 170), (144, 116, 100)),
    window=_c(58, 64, 74), wall=_c(154, 148, 136), fence=_c(112, 106, 96), pole=_c(96, 96, 92),
    light_housing=_c(34, 34, 34), sign_faces=_cs((176, 62, 56), (56, 80, 146), (186, 164, 70)),
    sign_inner=_c(214, 214, 208), vegetation=_c(82, 102, 60), trunk=_c(80, 66, 52),
    terrain=_c(144, 132, 92), sky_top=_c(110, 150, 200), sky_horizon=_c(205, 212, 222),
    skins=_cs((206, 170, 146), (172, 130, 104), (108, 80, 62)),
    clothes=_cs((42, 42, 48), (72, 72, 84), (104, 62, 52), (52, 62, 92), (152, 152, 150),
                (122, 102, 82), (30, 30, 32), (184, 178, 172)),
    cars=_cs((126, 44, 44), (62, 72, 96), (146, 146, 152), (212, 212, 206), (36, 36, 42),
             (72, 88, 76), (92, 92, 96), (186, 176, 150)),
    truck_cabs=_cs((212, 212, 212), (102, 112, 132), (172, 172, 172)),
    truck_boxes=_cs((222, 222, 216), (152, 152, 152), (122, 132, 142)),
    buses=_cs((204, 208, 212), (82, 112, 162), (212, 202, 182)),
    trains=_cs((204, 204, 198), (152, 42, 42)),
    motorcycles=_cs((62, 62, 62), (30, 30, 30), (122, 122, 132)),
    bicycles=_cs((82, 82, 82), (40, 40, 40), (152, 152, 152), (102, 42, 42)),
    glass=_c(50, 58, 66), tyre=_c(30, 30, 30), hood=_c(30, 32, 36),
    colour_jitter=0.12, face_shade=0.45, texture=1.0, light_field=0.18, shadows=0.4, clouds=0.6,
    haze=0.005, haze_color=_c(200, 204, 210), exposure=0.95, cast=(1.05, 1.0, 0.9), gamma=1.15,
    saturation=0.75, contrast=0.88, vignette=0.35, blur=0.9, noise=0.02, chroma_noise=0.01,
    jpeg=0.6, lamps=0.0, lamp_color=_c(255, 170, 80), weather=0.15,
)

# The calibrated target style (gap = 1): this fraction of the way from the source look to the full
# camera look. Measured with a small CNN trained on 300 images: at this point a source-only model
# keeps about half of a target-trained (oracle) model's mIoU on target val, as GTA5 -> Cityscapes
# does; the full camera look leaves it under a third.
CAMERA_STRENGTH = 0.6
CAMERA_LOOK = blend_looks(SOURCE_LOOK, CAMERA_FULL_LOOK, CAMERA_STRENGTH)

NIGHT_LOOK = dataclasses.replace(
    CAMERA_LOOK,
    sky_top=_c(6, 8, 20), sky_horizon=_c(40, 30, 28), haze=0.004, haze_color=_c(14, 12, 14),
    face_shade=0.2, light_field=0.1, shadows=0.0, clouds=0.0, exposure=0.22, cast=(0.85, 0.92, 1.3),
    gamma=1.15, saturation=0.6, contrast=0.8, vignette=0.45, blur=1.1, noise=0.05,
    chroma_noise=0.03, jpeg=0.7, lamps=1.0, weather=0.0,
)


# Alternative skies and light (sky top, sky at the horizon, light tint): the weather and time of
# day vary within a domain, so sky and brightness alone do not identify a class.
WEATHER = (
    (_c(160, 168, 180), _c(215, 218, 222), (0.92, 0.94, 0.98)),    # overcast
    (_c(130, 175, 225), _c(232, 234, 236), (1.05, 1.03, 1.0)),     # bright haze
    (_c(70, 95, 160), _c(245, 185, 130), (1.08, 0.95, 0.82)),      # evening
    (_c(30, 100, 220), _c(120, 180, 250), (1.0, 1.0, 1.04)),       # deep clear sky
)


@dataclass(frozen=True)
class Layout:
    """Scene statistics of a domain (content shift, independent of ``gap``)."""

    horizon: tuple[float, float]       # horizon row as a fraction of the height
    focal: tuple[float, float]         # focal length as a fraction of the width
    cam_height: tuple[float, float]    # metres
    road_half: tuple[float, float]     # half road width, metres
    sidewalk: tuple[float, float]      # sidewalk width, metres
    p_building: float                  # a side segment is a building row (else open ground)
    p_cross: float                     # chance of a cross street per side
    lane_density: float                # moving vehicles per 10 m of lane
    p_parked: float                    # a side has a row of parked cars
    p_truck: float                     # a moving vehicle is a truck
    p_bus: float                       # a moving vehicle is a bus
    p_train: float                     # a scene has a tram
    persons: tuple[int, int]
    riders: tuple[int, int]
    parked_bikes: tuple[int, int]
    p_street_trees: float
    p_verge: float                     # a grass verge (terrain) between kerb and sidewalk
    p_hood: float                      # the ego vehicle's bonnet is visible (void)


SOURCE_LAYOUT = Layout(
    horizon=(0.34, 0.44), focal=(0.9, 1.1), cam_height=(1.4, 1.9), road_half=(3.5, 5.5),
    sidewalk=(2.5, 4.5), p_building=0.6, p_cross=0.35, lane_density=0.12, p_parked=0.3,
    p_truck=0.18, p_bus=0.12, p_train=0.12, persons=(4, 12), riders=(1, 3), parked_bikes=(1, 4),
    p_street_trees=0.4, p_verge=0.25, p_hood=0.0,
)
TARGET_LAYOUT = Layout(
    horizon=(0.42, 0.52), focal=(1.0, 1.2), cam_height=(1.2, 1.5), road_half=(4.5, 7.5),
    sidewalk=(3.0, 5.0), p_building=0.7, p_cross=0.3, lane_density=0.2, p_parked=0.45,
    p_truck=0.12, p_bus=0.08, p_train=0.08, persons=(2, 8), riders=(0, 2), parked_bikes=(1, 3),
    p_street_trees=0.55, p_verge=0.35, p_hood=0.5,
)


@dataclass(frozen=True)
class Geometry:
    """What a generator version changes in scene geometry, for both domains alike.

    Version 3 puts the benchmark in the paper's regime for a small CPU model: people, two-wheelers
    and street furniture stand nearer (v2 drew them up to 35-110 m away, where a person is a few
    pixels tall and a pole under a pixel wide, so even a target-trained model never learnt them),
    signs and traffic lights are larger, and no stroke is thinner than ``min_stroke_px``.
    """

    person_far: float                  # people stand at most this far (metres)
    rider_far: float
    parked_bike_far: float
    furniture_far: float               # poles, signs, traffic lights, street lamps
    tree_far: float
    lane_far: float                    # moving vehicles
    parked_far: float
    furniture_spacing: tuple[float, float]
    furniture_scale: float             # size of signs, traffic lights and plain poles
    stroke_scale: float                # width multiplier of every thin part
    min_stroke_px: float


GEOMETRY = {
    2: Geometry(person_far=40, rider_far=35, parked_bike_far=25, furniture_far=110, tree_far=100, lane_far=120,
                parked_far=90, furniture_spacing=(10, 28), furniture_scale=1.0, stroke_scale=1.0, min_stroke_px=1.0),
    3: Geometry(person_far=22, rider_far=20, parked_bike_far=16, furniture_far=45, tree_far=70, lane_far=80,
                parked_far=60, furniture_spacing=(7, 16), furniture_scale=1.5, stroke_scale=1.6, min_stroke_px=2.0),
}


def geometry(version: int) -> Geometry:
    try:
        return GEOMETRY[int(version)]
    except (KeyError, TypeError, ValueError):
        raise ConfigError(f"unknown synthetic generator version {version!r}; "
                          f"choose one of {', '.join(map(str, SYNTH_VERSIONS))}") from None


@dataclass(frozen=True)
class DomainStyle:
    """A domain: its name, the appearance-gap strength, its look and its scene statistics."""

    domain: str
    gap: float
    look: Look
    layout: Layout


def domain_style(domain: str, gap: float = 1.0) -> DomainStyle:
    """The style of ``domain`` ('source', 'target' or 'night') at appearance-gap ``gap``."""
    if domain not in DOMAINS:
        raise ConfigError(f"unknown synthetic domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if not (0.0 <= gap <= 2.0):
        raise ConfigError(f"gap must be in [0, 2], got {gap}")
    if domain == "source":
        return DomainStyle(domain, gap, SOURCE_LOOK, SOURCE_LAYOUT)
    end = CAMERA_LOOK if domain == "target" else NIGHT_LOOK
    return DomainStyle(domain, gap, blend_looks(SOURCE_LOOK, end, gap), TARGET_LAYOUT)


# --------------------------------------------------------------------------------------------
# Rasterisation
# --------------------------------------------------------------------------------------------

class _Camera:
    """Pinhole camera at height ``height`` looking along +Z; ground is Y = 0, X to the right."""

    def __init__(self, w: int, h: int, f: float, cx: float, cy: float, height: float):
        self.w, self.h, self.f, self.cx, self.cy, self.height = w, h, f, cx, cy, height
        self.znear = f * height / (h + 2.0 - cy)

    def p(self, x: float, y: float, z: float) -> tuple[float, float]:
        return self.cx + self.f * x / z, self.cy + self.f * (self.height - y) / z


class _Painter:
    """Draws polygons into the albedo image, the trainId map, a depth map and an emission map."""

    def __init__(self, cam: _Camera):
        w, h = cam.w, cam.h
        self.w, self.h = w, h
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.full((h, w), SKY, np.uint8)
        rows = np.arange(h, dtype=np.float32) + 0.5 - cam.cy
        ground = np.where(rows > 0, cam.f * cam.height / np.maximum(rows, 1e-3), _FAR)
        self.dep = np.repeat(np.minimum(ground, _FAR).astype(np.float32)[:, None], w, axis=1)
        self.emit = np.zeros((h, w, 3), np.float32)
        self.lamps: list[tuple[float, float, float, float]] = []   # u, v, radius px, strength

    def _pts(self, pts) -> np.ndarray | None:
        a = np.asarray(pts, np.float64).reshape(-1, 2)
        if not np.all(np.isfinite(a)):
            return None
        if (a[:, 0].max() < -1 or a[:, 0].min() > self.w + 1
                or a[:, 1].max() < -1 or a[:, 1].min() > self.h + 1):
            return None
        return np.round(a * _SCALE).astype(np.int32)

    def poly(self, pts, color, cls: int | None = None, depth: float | None = None) -> None:
        a = self._pts(pts)
        if a is None:
            return
        cv2.fillPoly(self.img, [a], tuple(float(c) for c in color), cv2.LINE_8, _SHIFT)
        if cls is not None:
            cv2.fillPoly(self.lab, [a], int(cls), cv2.LINE_8, _SHIFT)
        if depth is not None:
            cv2.fillPoly(self.dep, [a], float(depth), cv2.LINE_8, _SHIFT)

    def glow(self, pts, color, strength: float = 1.0) -> None:
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
        a = self._pts(pts)
        if a is not None:
            cv2.fillPoly(self.dep, [a], float(depth), cv2.LINE_8, _SHIFT)

    def darken(self, pts, factor: float) -> None:
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


# --------------------------------------------------------------------------------------------
# Scene
# --------------------------------------------------------------------------------------------

def _outline(m, d: float, half: float, r: float, top: float) -> list[tuple[float, float]]:
    """A two-wheeler's annotation polygon in side view: both wheels and everything up to ``top``."""
    rim = [(math.cos(t) * r, math.sin(t) * r) for t in np.linspace(math.pi, 2 * math.pi, 7)]
    bottom = [((-half + x) * d, r + y) for x, y in rim[:4]] + [((half + x) * d, r + y) for x, y in rim[3:]]
    return [m(*p) for p in bottom + [((half + r) * d, r), (half * d, top), (-half * d, top), ((-half - r) * d, r)]]


def _shade(color, k: float) -> RGB:
    return tuple(float(min(max(c * k, 0.0), 1.5)) for c in color)  # type: ignore[return-value]


class _Scene:
    """Samples and draws one street scene (layout and appearance share one random stream)."""

    def __init__(self, rng: np.random.Generator, size: tuple[int, int], style: DomainStyle,
                 geom: Geometry = GEOMETRY[SYNTH_VERSION]):
        self.rng = rng
        self.g = geom
        self.look = style.look
        self.lay = style.layout
        self.night = style.look.lamps > 0.5
        w, h = size
        lay = self.lay
        cy = h * self.u(*lay.horizon)
        f = w * self.u(*lay.focal)
        cx = w * self.u(0.4, 0.6)
        self.cam = _Camera(w, h, f, cx, cy, self.u(*lay.cam_height))
        self.p = _Painter(self.cam)
        self.road_half = self.u(*lay.road_half)
        self.sw = self.u(*lay.sidewalk)
        self.xs = self.road_half + self.sw          # outer edge of the sidewalk
        self.sun = 1.0 if rng.random() < 0.5 else -1.0  # the side whose facades face the sun
        change, kind = rng.random() < self.look.weather, int(rng.integers(len(WEATHER)))
        t, ek = self.u(0.5, 1.0), self.u(-1.0, 1.0)
        self.sky_top, self.sky_horizon = self.look.sky_top, self.look.sky_horizon
        self.tint, self.exposure = (1.0, 1.0, 1.0), self.look.exposure
        if change:
            top, hor, tint = WEATHER[kind]
            self.sky_top, self.sky_horizon = _lerp(self.sky_top, top, t), _lerp(self.sky_horizon, hor, t)
            self.tint, self.exposure = _lerp(self.tint, tint, t), self.exposure * (1.0 + 0.15 * ek)
        self.objects: list[tuple[float, int, object]] = []   # (depth, order, draw callable)

    # random helpers -----------------------------------------------------------------------
    def u(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def pick(self, seq):
        return seq[int(self.rng.integers(len(seq)))]

    def jit(self, color, amount: float | None = None) -> RGB:
        a = self.look.colour_jitter if amount is None else amount
        k = 1.0 + float(self.rng.normal(0.0, a))
        tint = self.rng.normal(0.0, a * 0.3, 3)
        return tuple(float(np.clip(c * k * (1 + t), 0, 1)) for c, t in zip(color, tint))  # type: ignore

    def side_factor(self, side: float) -> float:
        """Brightness of a facade on ``side`` (-1 left, +1 right)."""
        return 1.0 if side == self.sun else 1.0 - self.look.face_shade

    def add(self, depth: float, fn) -> None:
        self.objects.append((depth, len(self.objects), fn))

    # geometry helpers ---------------------------------------------------------------------
    def ground(self, x0, x1, z0, z1, color, cls=None):
        cam = self.cam
        z0 = max(z0, cam.znear)
        if z1 <= z0:
            return
        P = cam.p
        self.p.poly([P(x0, 0, z0), P(x1, 0, z0), P(x1, 0, z1), P(x0, 0, z1)], color, cls)

    def vplane_x(self, x, y0, y1, z0, z1, color, cls):
        """A vertical rectangle in the plane X = x (a facade along the street)."""
        z0 = max(z0, 2.0)
        if z1 <= z0:
            return
        P = self.cam.p
        self.p.poly([P(x, y0, z0), P(x, y0, z1), P(x, y1, z1), P(x, y1, z0)], color, cls)
        z = z0
        while z < z1:                          # depth in chunks so haze varies along the facade
            zn = min(z1, z * 1.25 + 1.0)
            self.p.depth_only([P(x, y0, z), P(x, y0, zn), P(x, y1, zn), P(x, y1, z)], 0.5 * (z + zn))
            z = zn

    def rect_x(self, x, y0, y1, z0, z1, color):
        """Paint (no label change) a rectangle in the plane X = x."""
        P = self.cam.p
        self.p.poly([P(x, y0, z0), P(x, y0, z1), P(x, y1, z1), P(x, y1, z0)], color)

    def vplane_z(self, x0, x1, y0, y1, z, color, cls, depth=True):
        P = self.cam.p
        self.p.poly([P(x0, y0, z), P(x1, y0, z), P(x1, y1, z), P(x0, y1, z)], color, cls,
                    z if depth else None)

    def box(self, x0, x1, y0, y1, z0, z1, color, cls):
        """Visible faces of an axis-aligned box, far faces first."""
        P = self.cam.p
        fs = self.look.face_shade
        if y1 < self.cam.height:
            self.p.poly([P(x0, y1, z0), P(x1, y1, z0), P(x1, y1, z1), P(x0, y1, z1)],
                        _shade(color, 1.0 + 0.3 * fs), cls, 0.5 * (z0 + z1))
        if x0 > 0:
            self.p.poly([P(x0, y0, z0), P(x0, y0, z1), P(x0, y1, z1), P(x0, y1, z0)],
                        _shade(color, self.side_factor(-1.0) * (1 - 0.3 * fs)), cls, 0.5 * (z0 + z1))
        elif x1 < 0:
            self.p.poly([P(x1, y0, z0), P(x1, y0, z1), P(x1, y1, z1), P(x1, y1, z0)],
                        _shade(color, self.side_factor(1.0) * (1 - 0.3 * fs)), cls, 0.5 * (z0 + z1))
        self.p.poly([P(x0, y0, z0), P(x1, y0, z0), P(x1, y1, z0), P(x0, y1, z0)], color, cls, z0)

    def sprite(self, x, z, scale: float = 1.0):
        """A camera-facing billboard at ground point (x, z): returns a metres -> pixels map."""
        u0, v0 = self.cam.p(x, 0.0, z)
        s = self.cam.f / z * scale
        return lambda a, b: (u0 + a * s, v0 - b * s), s

    def px(self, width: float, s: float) -> float:
        """Stroke width in pixels of a part ``width`` metres wide at ``s`` pixels per metre."""
        return max(width * s * self.g.stroke_scale, self.g.min_stroke_px)

    # the scene ----------------------------------------------------------------------------
    def draw(self) -> None:
        self.draw_sky()
        self.draw_ground()
        self.draw_skyline()
        segments = []
        for side in (-1.0, 1.0):
            segments += self.plan_side(side)
        for seg in sorted(segments, key=lambda s: -s[0]):
            seg[1]()
        self.plan_vehicles()
        self.plan_people()
        self.plan_street_furniture()
        for _, _, fn in sorted(self.objects, key=lambda o: (-o[0], o[1])):
            fn()
        if self.rng.random() < self.lay.p_hood:
            self.draw_hood()

    def draw_sky(self) -> None:
        h, w = self.p.h, self.p.w
        top, hor = np.array(self.sky_top, np.float32), np.array(self.sky_horizon, np.float32)
        t = np.clip(np.arange(h, dtype=np.float32) / max(self.cam.cy, 1.0), 0, 1) ** 0.7
        self.p.img[:] = (top[None, :] * (1 - t[:, None]) + hor[None, :] * t[:, None])[:, None, :]
        if self.look.clouds > 0.01:
            gh, gw = max(2, h // 24 + 2), max(2, w // 24 + 2)
            n = cv2.resize(self.rng.random((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
            n2 = cv2.resize(self.rng.random((gh * 3, gw * 3)).astype(np.float32), (w, h),
                            interpolation=cv2.INTER_CUBIC)
            cloud = np.clip((0.7 * n + 0.3 * n2 - 0.55) * 4.0, 0, 1) * self.look.clouds
            white = np.array(self.sky_horizon, np.float32) * 1.08
            self.p.img[:] = self.p.img * (1 - cloud[..., None]) + white * cloud[..., None]

    def draw_ground(self) -> None:
        p, cam, look = self.p, self.cam, self.look
        y0 = int(math.floor(cam.cy))
        p.img[y0:] = self.jit(look.terrain)
        p.lab[y0:] = TERRAIN
        rh, xs = self.road_half, self.xs
        road = self.jit(look.road, 0.05)
        self.ground(-rh, rh, 0, _FAR, road, ROAD)
        swc = self.jit(look.sidewalk, 0.05)
        for side in (-1.0, 1.0):
            self.ground(side * rh, side * xs, 0, _FAR, swc, SIDEWALK)
            if self.rng.random() < self.lay.p_verge:
                verge = self.u(0.8, 0.5 * self.sw)
                self.ground(side * (rh + 0.25), side * (rh + 0.25 + verge), 0, _FAR, self.jit(look.terrain), TERRAIN)
            self.ground(side * rh, side * (rh + 0.25), 0, _FAR, self.jit(look.curb, 0.03))
        self.paving(swc)
        self.markings()

    def paving(self, swc) -> None:
        """Paving joints on the sidewalks: a perspective grid, the sidewalk's texture signature."""
        P, rh, xs = self.cam.p, self.road_half, self.xs
        joint = _shade(swc, 0.78)
        tile = self.u(0.9, 1.6)
        w = max(0.6, self.cam.w / 900)
        for side in (-1.0, 1.0):
            z = max(self.cam.znear, 1.0)
            while z < 60:
                self.p.bar(P(side * (rh + 0.25), 0, z), P(side * xs, 0, z), w, joint)
                z += tile
            for k in range(1, int(self.sw / tile) + 1):
                x = side * (rh + 0.25 + k * tile)
                if abs(x) < xs:
                    self.p.bar(P(x, 0, self.cam.znear), P(x, 0, 80), w, joint)

    def markings(self) -> None:
        P, rh, look = self.cam.p, self.road_half, self.look
        col = self.jit(look.marking, 0.03)
        n_lanes = max(2, int(round(2 * rh / 3.3)))
        self.lanes = [-rh + (k + 0.5) * 2 * rh / n_lanes for k in range(n_lanes)]
        dash, period = self.u(2.5, 4.0), self.u(8.0, 12.0)
        for k in range(1, n_lanes):
            x = -rh + k * 2 * rh / n_lanes
            hw = 0.07 if k != n_lanes // 2 else 0.09
            z = self.cam.znear - self.u(0, period)
            while z < 250:
                za, zb = max(z, self.cam.znear), z + dash
                if zb > za:
                    self.p.poly([P(x - hw, 0, za), P(x + hw, 0, za), P(x + hw, 0, zb), P(x - hw, 0, zb)], col)
                z += period
        for side in (-1.0, 1.0):   # continuous edge lines
            x = side * (rh - 0.35)
            self.ground(x - 0.06, x + 0.06, 0, 400, col)
        dark = _shade(self.look.road, 0.7)
        for _ in range(int(self.rng.integers(0, 4))):  # patches and manholes
            z, x = self.u(6, 40), self.u(-rh + 0.5, rh - 0.5)
            if self.rng.random() < 0.5:
                (u, v), s = P(x, 0, z), self.cam.f / z
                self.p.ellipse((u, v), (0.35 * s, 0.35 * s * self.cam.height / z), dark)
            else:
                a, b = self.u(0.5, 2.5), self.u(1.0, 5.0)
                self.ground(x - a, x + a, z, z + b, _shade(self.look.road, self.u(0.8, 0.92)))
        self.zebra_z = self.u(12, 30) if self.rng.random() < 0.5 else None
        if self.zebra_z is not None:
            z0 = self.zebra_z
            x = -rh + 0.4
            while x < rh - 0.6:
                self.ground(x, x + 0.5, z0, z0 + 3.0, col)
                x += 1.0

    def draw_skyline(self) -> None:
        look = self.look
        x = -400.0
        while x < 400:
            wdt = self.u(15, 60)
            z = self.u(250, 450)
            if self.rng.random() < 0.75:
                hgt = self.u(8, 45)
                self.vplane_z(x, x + wdt, 0, hgt, z, self.jit(self.pick(look.buildings)), BUILDING)
            else:
                self.crown_line(x, x + wdt, z, self.u(6, 14))
            x += wdt * self.u(0.7, 1.0)

    def crown_line(self, x0, x1, z, hgt) -> None:
        """A row of tree crowns in the plane Z = z (distant woods)."""
        look = self.look
        col = self.jit(look.vegetation)
        self.vplane_z(x0, x1, 0, hgt * 0.6, z, col, VEGETATION)
        x = x0
        while x < x1:
            r = self.u(0.25, 0.45) * hgt
            u, v = self.cam.p(x, hgt * self.u(0.55, 0.8), z)
            s = self.cam.f / z
            self.p.ellipse((u, v), (r * s, r * s * self.u(0.8, 1.1)), _shade(col, self.u(0.85, 1.1)),
                           VEGETATION, z)
            x += r * self.u(0.8, 1.4)

    # sides --------------------------------------------------------------------------------
    def plan_side(self, side: float):
        """Split one side of the street into segments (buildings, open ground, cross street)."""
        segs = []
        z = self.cam.znear * 0.5
        z_end = self.u(110, 250)
        cross_at = self.u(15, 60) if self.rng.random() < self.lay.p_cross else None
        open_feature = None
        while z < z_end:
            if cross_at is not None and z >= cross_at:
                width = self.u(8, 14)
                zc = z
                segs.append((zc, lambda zc=zc, width=width: self.draw_cross(side, zc, width)))
                z += width + 2 * self.sw
                cross_at = None
                continue
            if self.rng.random() < self.lay.p_building:
                length = self.u(8, 28)
                hgt = self.u(7, 28)
                col = self.jit(self.pick(self.look.buildings))
                zz = z
                segs.append((zz, lambda zz=zz, length=length, hgt=hgt, col=col:
                             self.draw_building(side, zz, zz + length, hgt, col)))
            else:
                length = self.u(15, 50)
                if open_feature is None or self.rng.random() < 0.5:
                    open_feature = self.pick(("wall", "fence", "hedge", "none", "none"))
                zz, feat = z, open_feature
                segs.append((zz, lambda zz=zz, length=length, feat=feat:
                             self.draw_open(side, zz, zz + length, feat)))
            z += length
        return segs

    def draw_building(self, side, z0, z1, hgt, col) -> None:
        look, x = self.look, side * self.xs
        fcol = _shade(col, self.side_factor(side))
        self.vplane_x(x, 0, hgt, z0, z1, fcol, BUILDING)
        floor = self.u(2.8, 3.6)
        ground_floor = self.u(3.2, 4.5)
        col_w = self.u(2.4, 4.0)
        win_w, win_h = col_w * self.u(0.35, 0.6), floor * self.u(0.4, 0.6)
        glass = self.jit(look.window, 0.08)
        if self.rng.random() < 0.5:        # shop windows on the ground floor
            zz = z0 + 0.5
            while zz + 2.0 < z1:
                wl = self.u(2.0, 4.0)
                self.rect_x(x, 0.4, ground_floor - 0.7, zz, min(zz + wl, z1 - 0.3), _shade(glass, 0.9))
                zz += wl + self.u(0.6, 1.5)
        y = ground_floor
        lit = self.night and look.lamps > 0
        while y + win_h < hgt - 0.5:
            zz = z0 + (col_w - win_w) / 2
            while zz + win_w < z1:
                self.rect_x(x, y, y + win_h, zz, zz + win_w, glass)
                if lit and self.rng.random() < 0.3:
                    P = self.cam.p
                    self.p.glow([P(x, y, zz), P(x, y, zz + win_w), P(x, y + win_h, zz + win_w),
                                 P(x, y + win_h, zz)], (1.0, 0.8, 0.45), 1.2)
                zz += col_w
            y += floor
        self.rect_x(x, hgt - 0.4, hgt, z0, z1, _shade(fcol, 1.12))          # cornice
        self.rect_x(x, 0, hgt, z1 - 0.25, z1, _shade(fcol, 0.8))           # party wall edge
        if look.shadows > 0 and side != self.sun:                            # cast shadow
            P, d = self.cam.p, min(hgt * 0.5, self.xs + 2)
            x_in = side * (self.xs - d)
            a = [P(x, 0, max(z0, self.cam.znear)), P(x_in, 0, max(z0, self.cam.znear)),
                 P(x_in, 0, z1), P(x, 0, z1)]
            self.p.darken(a, 1.0 - look.shadows)

    def draw_open(self, side, z0, z1, feature) -> None:
        look, xs = self.look, self.xs
        if self.rng.random() < 0.6:           # trees or woods further back
            d = self.u(4, 25)
            hgt = self.u(5, 12)
            col = self.jit(look.vegetation)
            x = side * (xs + d)
            self.vplane_x(x, 0, hgt * 0.55, z0, z1, col, VEGETATION)
            z = z0
            while z < z1:
                r = self.u(0.25, 0.4) * hgt
                zc = z + r
                (u, v), s = self.cam.p(x, hgt * self.u(0.5, 0.75), zc), self.cam.f / zc
                self.p.ellipse((u, v), (r * s * self.u(0.5, 0.9), r * s), _shade(col, self.u(0.85, 1.1)),
                               VEGETATION, zc)
                z += r * self.u(1.0, 1.6)
        elif self.rng.random() < 0.5:        # a building set back behind open ground
            x = side * (xs + self.u(8, 30))
            col = self.jit(self.pick(look.buildings))
            self.vplane_x(x, 0, self.u(6, 20), z0, z1, _shade(col, self.side_factor(side)), BUILDING)
        for _ in range(int(self.rng.integers(0, 3))):   # single trees on the open ground
            z = self.u(z0, z1)
            self.tree(side * (xs + self.u(1.5, 6)), z, self.u(4, 9))
        x = side * xs
        if feature == "wall":
            hgt = self.u(0.8, 2.5)
            col = _shade(self.jit(look.wall), self.side_factor(side))
            self.vplane_x(x, 0, hgt, z0, z1, col, WALL)
            self.rect_x(x, hgt - 0.15, hgt, z0, z1, _shade(col, 1.15))
            z = z0
            while z < z1:
                self.rect_x(x, 0, hgt, z, z + 0.08, _shade(col, 0.75))
                z += self.u(2.5, 3.5)
        elif feature == "fence":
            hgt = self.u(1.0, 2.0)
            col = _shade(self.jit(look.fence), self.side_factor(side))
            self.vplane_x(x, 0, hgt, z0, z1, _shade(col, 0.75), FENCE)
            for y in (0.15 * hgt, 0.9 * hgt):
                self.rect_x(x, y, y + 0.08, z0, z1, _shade(col, 1.25))
            z, step = z0, self.u(0.25, 0.4)
            while z < z1:
                px = self.cam.f * step * abs(x) / (z * z)       # on-screen spacing of the bars
                if px < 1.5:
                    break
                self.rect_x(x, 0, hgt, z, z + step * 0.4, _shade(col, 1.2))
                z += step
        elif feature == "hedge":
            hgt = self.u(0.8, 1.6)
            col = self.jit(look.vegetation)
            self.vplane_x(x, 0, hgt, z0, z1, col, VEGETATION)
            z = z0
            while z < z1:
                r = self.u(0.3, 0.6)
                zc = max(z + r, 2.0)
                (u, v), s = self.cam.p(x, hgt, zc), self.cam.f / zc
                self.p.ellipse((u, v), (r * s * abs(x) / zc + 0.5, r * s), col, VEGETATION, zc)
                z += r * 1.5

    def draw_cross(self, side, z0, width) -> None:
        """A cross street: road and corner sidewalks to the side, a facade across its far side."""
        look, rh, xs, sw = self.look, self.road_half, self.xs, self.sw
        road = self.jit(look.road, 0.05)
        swc = self.jit(look.sidewalk, 0.05)
        far = 80.0
        self.ground(side * rh, side * far, z0, z0 + sw, swc, SIDEWALK)
        self.ground(side * rh, side * far, z0 + sw, z0 + sw + width, road, ROAD)
        self.ground(side * rh, side * far, z0 + sw + width, z0 + 2 * sw + width, swc, SIDEWALK)
        zf = z0 + 2 * sw + width
        hgt = self.u(8, 25)
        col = self.jit(self.pick(look.buildings))
        self.vplane_z(side * xs, side * far, 0, hgt, zf, col, BUILDING)
        floor, colw = self.u(2.8, 3.6), self.u(2.5, 4.0)
        glass = self.jit(look.window, 0.08)
        P = self.cam.p
        y = self.u(3.0, 4.5)
        while y + 1.5 < hgt:
            x = xs + 0.8
            while x + 1.2 < far:
                xa, xb = side * x, side * (x + 1.2)
                self.p.poly([P(xa, y, zf), P(xb, y, zf), P(xb, y + 1.5, zf), P(xa, y + 1.5, zf)], glass)
                x += colw
            y += floor
        for zc in (z0 + sw * 0.5, z0 + 1.5 * sw + width):   # traffic lights at the corners
            self.add(zc, lambda zc=zc: self.traffic_light_pole(side * (rh + 0.5), zc))

    # objects ------------------------------------------------------------------------------
    def plan_vehicles(self) -> None:
        lay, rh = self.lay, self.road_half
        lanes = list(self.lanes)
        parked = {s: self.rng.random() < lay.p_parked for s in (-1.0, 1.0)}
        for side in (-1.0, 1.0):
            if parked[side]:
                lanes = [x for x in lanes if abs(x - side * rh) > 2.0] or lanes
                z = self.u(4, 12)
                while z < self.g.parked_far:
                    if self.rng.random() < 0.7:
                        x = side * (rh - 1.15)
                        self.add(z, lambda x=x, z=z: self.car(x, z, toward=False))
                    z += self.u(5.5, 9.0)
        tram_lane = None
        if self.rng.random() < lay.p_train:
            tram_lane = self.pick(lanes)
            z = self.u(8, 40)
            self.add(z, lambda x=tram_lane, z=z: self.tram(x, z, toward=x < 0))
        for x in lanes:
            if x == tram_lane:
                continue
            z = self.u(3, 25) + self.rng.exponential(5.0 / lay.lane_density)
            while z < self.g.lane_far:
                kind = self.rng.random()
                length = 4.5
                xx = x + self.u(-0.3, 0.3)
                toward = x < 0
                if kind < lay.p_bus:
                    length = 12.0
                    self.add(z, lambda xx=xx, z=z, t=toward: self.bus(xx, z, t))
                elif kind < lay.p_bus + lay.p_truck:
                    length = 9.0
                    self.add(z, lambda xx=xx, z=z, t=toward: self.truck(xx, z, t))
                else:
                    self.add(z, lambda xx=xx, z=z, t=toward: self.car(xx, z, t))
                z += length + self.rng.exponential(10.0 / lay.lane_density)

    def plan_people(self) -> None:
        lay, rh = self.lay, self.road_half
        for _ in range(int(self.rng.integers(lay.persons[0], lay.persons[1] + 1))):
            side = self.pick((-1.0, 1.0))
            if self.zebra_z is not None and self.rng.random() < 0.25:
                x, z = self.u(-rh, rh), self.zebra_z + self.u(0.3, 2.7)
            else:
                x, z = side * (rh + self.u(0.5, self.sw - 0.3)), self.u(3, self.g.person_far)
            group = 1 if self.rng.random() < 0.7 else int(self.rng.integers(2, 4))
            for g in range(group):
                xx, zz = x + g * self.u(0.5, 0.8), z + self.u(-0.5, 0.5)
                self.add(zz, lambda xx=xx, zz=zz: self.person(xx, zz))
        for _ in range(int(self.rng.integers(lay.riders[0], lay.riders[1] + 1))):
            side = 1.0 if self.rng.random() < 0.75 else -1.0
            x, z = side * (rh - self.u(0.6, 1.6)), self.u(4, self.g.rider_far)
            moto = self.rng.random() < 0.45
            self.add(z, lambda x=x, z=z, m=moto: self.two_wheeler(x, z, m, rider=True))
        for _ in range(int(self.rng.integers(lay.parked_bikes[0], lay.parked_bikes[1] + 1))):
            side = self.pick((-1.0, 1.0))
            x, z = side * (self.xs - self.u(0.4, 1.0)), self.u(3, self.g.parked_bike_far)
            moto = self.rng.random() < 0.4
            self.add(z, lambda x=x, z=z, m=moto: self.two_wheeler(x, z, m, rider=False))

    def plan_street_furniture(self) -> None:
        rh, xs = self.road_half, self.xs
        for side in (-1.0, 1.0):
            z = self.u(3, 15)
            while z < self.g.furniture_far:
                kind = self.rng.random()
                x = side * (rh + 0.5)
                if kind < 0.3:
                    self.add(z, lambda x=x, z=z, s=side: self.street_lamp(x, z, s))
                elif kind < 0.65:
                    self.add(z, lambda x=x, z=z: self.sign_pole(x, z))
                elif kind < 0.78:
                    self.add(z, lambda x=x, z=z: self.traffic_light_pole(x, z))
                else:
                    self.add(z, lambda x=x, z=z: self.plain_pole(x, z))
                z += self.u(*self.g.furniture_spacing)
            if self.rng.random() < self.lay.p_street_trees:
                z = self.u(4, 12)
                spacing = self.u(8, 16)
                while z < self.g.tree_far:
                    x = side * (xs - self.u(0.6, 1.0))
                    self.add(z, lambda x=x, z=z: self.tree(x, z, self.u(5, 9)))
                    z += spacing

    def tree(self, x, z, hgt) -> None:
        look = self.look
        m, s = self.sprite(x, z)
        trunk_h = hgt * self.u(0.3, 0.45)
        self.p.bar(m(0, 0), m(0, trunk_h + 0.5), self.px(0.3, s), self.jit(look.trunk), VEGETATION, z)
        col = self.jit(look.vegetation)
        r = self.u(0.22, 0.35) * hgt
        cy = trunk_h + r * 0.8
        for _ in range(int(self.rng.integers(5, 10))):
            a, d = self.u(0, 2 * math.pi), self.u(0, 0.7) * r
            rr = r * self.u(0.45, 0.8)
            self.p.ellipse(m(d * math.cos(a), cy + 0.8 * d * math.sin(a)), (rr * s, rr * s * self.u(0.8, 1.0)),
                           _shade(col, self.u(0.8, 1.15)), VEGETATION, z)

    def _pole(self, x, z, hgt, width=0.16, scale: float = 1.0):
        m, s = self.sprite(x, z, scale)
        self.p.bar(m(0, 0), m(0, hgt), self.px(width, s), self.jit(self.look.pole, 0.05), POLE, z)
        return m, s

    def plain_pole(self, x, z) -> None:
        self._pole(x, z, self.u(1.0, 4.0) if self.rng.random() < 0.5 else self.u(0.8, 1.1), 0.12,
                   self.g.furniture_scale)

    def sign_pole(self, x, z) -> None:
        look = self.look
        hgt = self.u(2.4, 3.4)
        m, s = self._pole(x, z, hgt, 0.08, self.g.furniture_scale)
        face = self.jit(self.pick(look.sign_faces), 0.05)
        inner = self.jit(look.sign_inner, 0.03)
        shape = int(self.rng.integers(4))
        yc = hgt - 0.4
        if shape == 0:              # round prohibition sign
            self.p.ellipse(m(0, yc), (0.35 * s, 0.35 * s), face, SIGN, z - 0.05)
            self.p.ellipse(m(0, yc), (0.24 * s, 0.24 * s), inner)
        elif shape == 1:            # warning triangle
            pts = [m(-0.42, yc - 0.3), m(0.42, yc - 0.3), m(0, yc + 0.42)]
            self.p.poly(pts, face, SIGN, z - 0.05)
            self.p.poly([m(-0.26, yc - 0.2), m(0.26, yc - 0.2), m(0, yc + 0.22)], inner)
        elif shape == 2:            # square information sign
            self.p.poly([m(-0.32, yc - 0.32), m(0.32, yc - 0.32), m(0.32, yc + 0.32), m(-0.32, yc + 0.32)],
                        face, SIGN, z - 0.05)
            self.p.poly([m(-0.12, yc - 0.2), m(0.12, yc - 0.2), m(0.12, yc + 0.2), m(-0.12, yc + 0.2)], inner)
        else:                       # direction plate
            d = self.pick((-1, 1))
            pts = [m(0, yc - 0.25), m(d * 1.0, yc - 0.25), m(d * 1.2, yc), m(d * 1.0, yc + 0.25), m(0, yc + 0.25)]
            self.p.poly(pts, face, SIGN, z - 0.05)
            self.p.bar(m(d * 0.15, yc), m(d * 0.85, yc), self.px(0.06, s), inner)

    def _signal_head(self, m, s, xc, yc, z) -> None:
        look = self.look
        self.p.poly([m(xc - 0.17, yc - 0.48), m(xc + 0.17, yc - 0.48), m(xc + 0.17, yc + 0.48),
                     m(xc - 0.17, yc + 0.48)], self.jit(look.light_housing, 0.05), LIGHT, z - 0.05)
        on = int(self.rng.integers(3))
        lamps = ((1.0, 0.15, 0.1), (1.0, 0.7, 0.1), (0.2, 1.0, 0.45))
        for k, col in enumerate(lamps):
            y = yc + 0.3 - 0.3 * k
            lit = k == on
            c = col if lit else _shade(col, 0.25)
            self.p.ellipse(m(xc, y), (0.1 * s, 0.1 * s), c, emit=1.5 if lit else 0.0)

    def traffic_light_pole(self, x, z) -> None:
        hgt = self.u(2.8, 4.5)
        m, s = self._pole(x, z, hgt, 0.14, self.g.furniture_scale)
        self._signal_head(m, s, 0.0, hgt - 0.3, z)
        if self.rng.random() < 0.5:           # a mast arm with a second head over the road
            d = -math.copysign(1.0, x) * self.u(2.0, 4.5)
            y = hgt + self.u(0.6, 1.5)
            self.p.bar(m(0, hgt), m(0, y), self.px(0.14, s), self.jit(self.look.pole, 0.05), POLE, z)
            self.p.bar(m(0, y), m(d, y), self.px(0.1, s), self.jit(self.look.pole, 0.05), POLE, z)
            self._signal_head(m, s, d, y - 0.55, z)

    def street_lamp(self, x, z, side) -> None:
        hgt = self.u(6.0, 9.0)
        m, s = self._pole(x, z, hgt, 0.2)
        d = -side * self.u(1.2, 2.5)
        self.p.bar(m(0, hgt), m(d, hgt + 0.3), self.px(0.12, s), self.jit(self.look.pole, 0.05), POLE, z)
        head = [m(d - 0.35, hgt + 0.15), m(d + 0.35, hgt + 0.15), m(d + 0.3, hgt + 0.4), m(d - 0.3, hgt + 0.4)]
        self.p.poly(head, _shade(self.look.pole, 0.8), POLE, z)
        if self.look.lamps > 0:
            u, v = m(d, hgt + 0.15)
            self.p.ellipse((u, v), (0.3 * s, 0.12 * s + 0.5), self.look.lamp_color, emit=3.0 * self.look.lamps)
            self.p.lamps.append((u, v, hgt * s, self.look.lamps))

    def person(self, x, z) -> None:
        look = self.look
        m, s = self.sprite(x, z)
        hgt = self.u(1.55, 1.95)
        skin = self.jit(self.pick(look.skins), 0.05)
        shirt, pants = self.jit(self.pick(look.clothes)), self.jit(self.pick(look.clothes))
        lw = self.px(0.13, s)
        hip, sh = 0.5 * hgt, 0.81 * hgt
        if self.rng.random() < 0.5:     # walking, seen from the side
            d = self.pick((-1, 1))
            st = self.u(0.1, 0.3)
            for a in (-st, st):
                self.p.bar(m(0, hip), m(a, 0.03), lw, pants, PERSON, z)
            self.p.poly([m(-0.13, hip), m(0.13, hip), m(0.14, sh), m(-0.14, sh)], shirt, PERSON, z)
            self.p.bar(m(0, sh - 0.03), m(-d * st * 0.8, hip + 0.02), self.px(0.09, s), _shade(shirt, 0.9), PERSON, z)
        else:                           # standing, facing toward or away from the camera
            for a in (-0.1, 0.1):
                self.p.bar(m(a, hip), m(a * 1.2, 0.03), lw, pants, PERSON, z)
            self.p.poly([m(-0.18, hip - 0.03), m(0.18, hip - 0.03), m(0.22, sh), m(-0.22, sh)], shirt, PERSON, z)
            for a in (-1, 1):
                self.p.bar(m(a * 0.21, sh - 0.03), m(a * 0.25, hip), self.px(0.09, s), _shade(shirt, 0.9), PERSON, z)
        r = 0.075 * hgt
        self.p.ellipse(m(0, sh + r * 1.05), (r * 0.85 * s, r * s), skin, PERSON, z)
        self.p.ellipse(m(0, sh + r * 1.45), (r * 0.8 * s, r * 0.55 * s), _shade(self.pick(look.clothes), 0.5))

    def two_wheeler(self, x, z, moto: bool, rider: bool) -> None:
        """A bicycle or motorcycle (side or rear view), optionally with its rider."""
        look = self.look
        m, s = self.sprite(x, z)
        cls = MOTORCYCLE if moto else BICYCLE
        frame = self.jit(self.pick(look.motorcycles if moto else look.bicycles))
        tyre = look.tyre
        side_view = (not rider) or self.rng.random() < 0.5
        d = self.pick((-1, 1))
        if side_view:
            r, half = (0.32, 0.72) if moto else (0.34, 0.52)
            tw = self.px(0.1 if moto else 0.05, s)
            self.p.label_only(_outline(m, d, half, r, 0.98 if moto else 0.9), cls, z)
            for a in (-half, half):
                self.p.ellipse(m(a * d, r), (r * s, r * s), tyre, cls, z, thickness=tw)
            if moto:
                body = [m(-0.62 * d, 0.45), m(0.45 * d, 0.45), m(0.55 * d, 0.85), m(0.1 * d, 0.98),
                        m(-0.2 * d, 0.88), m(-0.72 * d, 0.82)]
                self.p.poly(body, frame, cls, z)
                self.p.bar(m(0.5 * d, 0.85), m(0.62 * d, 1.08), self.px(0.05, s), tyre, cls, z)
                seat, bars = (-0.2, 0.92), (0.6, 1.08)
            else:
                bb, seat, head, bars = (0.0, 0.3), (-0.18, 0.9), (0.4, 0.86), (0.44, 1.0)
                lw = self.px(0.04, s)
                pts = {"r": (-half, r), "f": (half, r), "bb": bb, "s": seat, "h": head}
                for a, b in (("r", "bb"), ("r", "s"), ("s", "bb"), ("bb", "h"), ("s", "h"), ("h", "f")):
                    (ax, ay), (bx, by) = pts[a], pts[b]
                    self.p.bar(m(ax * d, ay), m(bx * d, by), lw, frame, cls, z)
                self.p.bar(m(head[0] * d, head[1]), m(bars[0] * d, bars[1]), lw, frame, cls, z)
            if rider:
                self._rider_side(m, s, z, d, seat, bars)
        else:
            rw = 0.08 if moto else 0.035
            hb = 0.38 if moto else 0.3
            self.p.label_only([m(-rw, 0), m(rw, 0), m(hb, 1.02), m(-hb, 1.02)], cls, z)
            self.p.poly([m(-rw, 0), m(rw, 0), m(rw, 0.66), m(-rw, 0.66)], tyre, cls, z)
            self.p.bar(m(-hb, 1.02), m(hb, 1.02), self.px(0.05, s), frame, cls, z)
            if moto:
                self.p.poly([m(-0.24, 0.45), m(0.24, 0.45), m(0.2, 0.9), m(-0.2, 0.9)], frame, cls, z)
                self.p.ellipse(m(0, 0.62), (0.07 * s, 0.04 * s), (1.0, 0.1, 0.05), emit=1.5 * max(self.look.lamps, 0.3))
            self._rider_rear(m, s, z, hb, moto)

    def _rider_side(self, m, s, z, d, seat, bars) -> None:
        look = self.look
        shirt, pants = self.jit(self.pick(look.clothes)), self.jit(self.pick(look.clothes))
        lw = self.px(0.14, s)
        hip = (seat[0] * d, seat[1] + 0.05)
        knee = ((seat[0] + 0.3) * d, seat[1] - 0.3)
        foot = ((seat[0] + 0.22) * d, 0.3)
        shoulder = ((seat[0] + 0.22) * d, seat[1] + 0.55)
        self.p.bar(m(*hip), m(*knee), lw, pants, RIDER, z)
        self.p.bar(m(*knee), m(*foot), lw, pants, RIDER, z)
        self.p.bar(m(*hip), m(*shoulder), self.px(0.3, s), shirt, RIDER, z)
        self.p.bar(m(*shoulder), m(bars[0] * d, bars[1]), self.px(0.08, s), _shade(shirt, 0.9), RIDER, z)
        head = (shoulder[0] + 0.05 * d, shoulder[1] + 0.17)
        self.p.ellipse(m(*head), (0.11 * s, 0.12 * s), self.jit(self.pick(look.clothes + look.skins)), RIDER, z)

    def _rider_rear(self, m, s, z, hb, moto) -> None:
        look = self.look
        shirt, pants = self.jit(self.pick(look.clothes)), self.jit(self.pick(look.clothes))
        lw = self.px(0.13, s)
        for a in (-1, 1):
            self.p.bar(m(a * 0.12, 0.95), m(a * 0.2, 0.3), lw, pants, RIDER, z)
        self.p.poly([m(-0.17, 0.92), m(0.17, 0.92), m(0.21, 1.45), m(-0.21, 1.45)], shirt, RIDER, z)
        for a in (-1, 1):
            self.p.bar(m(a * 0.2, 1.4), m(a * hb * 0.9, 1.04), self.px(0.08, s), _shade(shirt, 0.9), RIDER, z)
        helmet = self.jit(self.pick(look.clothes)) if moto else self.jit(self.pick(look.skins))
        self.p.ellipse(m(0, 1.58), (0.11 * s, 0.12 * s), helmet, RIDER, z)

    def _wheels_side(self, xside, z0, length, r, cls) -> None:
        P = self.cam.p
        for zc in (z0 + 0.18 * length, z0 + 0.82 * length):
            (u0, _), (u1, _) = P(xside, r, zc - r), P(xside, r, zc + r)
            (uc, vc) = P(xside, r, zc)
            self.p.ellipse((uc, vc), (abs(u1 - u0) / 2, r * self.cam.f / zc), self.look.tyre, cls, zc)

    def _lights(self, x0, x1, y, z, toward: bool, cls) -> None:
        P = self.cam.p
        col = (1.0, 0.95, 0.8) if toward else (0.9, 0.08, 0.05)
        k = (2.5 if toward else 1.5) * self.look.lamps
        for xa, xb in ((x0 + 0.1, x0 + 0.4), (x1 - 0.4, x1 - 0.1)):
            pts = [P(xa, y, z), P(xb, y, z), P(xb, y + 0.15, z), P(xa, y + 0.15, z)]
            self.p.poly(pts, col, cls, z)
            if k > 0:
                self.p.glow(pts, col, k)

    def car(self, xc, z, toward: bool) -> None:
        look, P = self.look, self.cam.p
        w, length = self.u(1.7, 1.95), self.u(3.9, 4.8)
        y1, y2 = self.u(0.95, 1.1), self.u(1.4, 1.55)
        x0, x1, z1 = xc - w / 2, xc + w / 2, z + length
        col = self.jit(self.pick(look.cars))
        if look.shadows > 0:
            self.p.darken([P(x0 - 0.2, 0, z - 0.3), P(x1 + 0.2, 0, z - 0.3), P(x1 + 0.2, 0, z1), P(x0 - 0.2, 0, z1)],
                          1.0 - 0.8 * look.shadows)
        if x0 > 0:
            self._wheels_side(x0, z, length, 0.33, CAR)
        elif x1 < 0:
            self._wheels_side(x1, z, length, 0.33, CAR)
        for xa in (x0 + 0.08, x1 - 0.38):
            self.vplane_z(xa, xa + 0.3, 0, 0.35, z + 0.6, look.tyre, CAR)
        self.box(x0, x1, 0.28, y1, z, z1, col, CAR)
        ca, cb = (0.25, 0.72) if not toward else (0.32, 0.8)
        cx0, cx1, cz0, cz1 = x0 + 0.12, x1 - 0.12, z + ca * length, z + cb * length
        self.box(cx0, cx1, y1, y2, cz0, cz1, col, CAR)
        glass = self.jit(look.glass, 0.06)
        ins = 0.07
        self.p.poly([P(cx0 + ins, y1 + 0.05, cz0), P(cx1 - ins, y1 + 0.05, cz0), P(cx1 - ins, y2 - ins, cz0),
                     P(cx0 + ins, y2 - ins, cz0)], glass)
        xsd = cx0 if cx0 > 0 else (cx1 if cx1 < 0 else None)
        if xsd is not None:
            self.rect_x(xsd, y1 + 0.06, y2 - 0.06, cz0 + 0.1, cz1 - 0.1, _shade(glass, 0.9))
            self.rect_x(xsd, y1 + 0.06, y2 - 0.06, (cz0 + cz1) / 2 - 0.05, (cz0 + cz1) / 2 + 0.05, col)
        self._lights(x0, x1, y1 - 0.3, z, toward, CAR)
        self.vplane_z(xc - 0.26, xc + 0.26, 0.4, 0.52, z, (0.92, 0.92, 0.9), CAR, depth=False)

    def truck(self, xc, z, toward: bool) -> None:
        look, P = self.look, self.cam.p
        w, lbox, lcab = 2.5, self.u(6.0, 8.0), 2.2
        top = self.u(3.2, 3.8)
        cab, boxc = self.jit(self.pick(look.truck_cabs)), self.jit(self.pick(look.truck_boxes))
        x0, x1 = xc - w / 2, xc + w / 2
        if toward:
            zc0, zb0 = z, z + lcab + 0.3
        else:
            zb0, zc0 = z, z + lbox + 0.3
        if x0 > 0:
            self._wheels_side(x0, z, lbox + lcab, 0.5, TRUCK)
        elif x1 < 0:
            self._wheels_side(x1, z, lbox + lcab, 0.5, TRUCK)
        for xa in (x0 + 0.1, x1 - 0.5):
            self.vplane_z(xa, xa + 0.4, 0, 0.6, z + 0.8, look.tyre, TRUCK)
        parts = [(zb0, lambda: self.box(x0, x1, 0.9, top, zb0, zb0 + lbox, boxc, TRUCK)),
                 (zc0, lambda: self.box(x0 + 0.05, x1 - 0.05, 0.6, 2.9, zc0, zc0 + lcab, cab, TRUCK))]
        for _, fn in sorted(parts, key=lambda t: -t[0]):
            fn()
        if toward:
            glass = self.jit(look.glass, 0.06)
            self.p.poly([P(x0 + 0.2, 1.7, z), P(x1 - 0.2, 1.7, z), P(x1 - 0.2, 2.7, z), P(x0 + 0.2, 2.7, z)], glass)
        else:
            self.vplane_z(xc - 0.02, xc + 0.02, 0.95, top - 0.05, z, _shade(boxc, 0.7), TRUCK, depth=False)
        self._lights(x0, x1, 0.8, z, toward, TRUCK)

    def bus(self, xc, z, toward: bool) -> None:
        look, P = self.look, self.cam.p
        w, length, top = 2.55, self.u(11, 13), self.u(3.0, 3.3)
        col = self.jit(self.pick(look.buses))
        x0, x1, z1 = xc - w / 2, xc + w / 2, z + length
        if x0 > 0:
            self._wheels_side(x0, z, length, 0.5, BUS)
        elif x1 < 0:
            self._wheels_side(x1, z, length, 0.5, BUS)
        self.box(x0, x1, 0.3, top, z, z1, col, BUS)
        glass = self.jit(look.glass, 0.06)
        xsd = x0 if x0 > 0 else (x1 if x1 < 0 else None)
        if xsd is not None:
            self.rect_x(xsd, 1.3, 2.5, z + 0.8, z1 - 0.5, glass)
            zz = z + 2.0
            while zz < z1 - 1.0:
                self.rect_x(xsd, 1.3, 2.5, zz, zz + 0.12, col)
                zz += 1.4
        wy0 = 1.1 if toward else 1.5
        self.p.poly([P(x0 + 0.12, wy0, z), P(x1 - 0.12, wy0, z), P(x1 - 0.12, top - 0.45, z),
                     P(x0 + 0.12, top - 0.45, z)], glass)
        sign = [P(x0 + 0.3, top - 0.38, z), P(x1 - 0.3, top - 0.38, z), P(x1 - 0.3, top - 0.1, z),
                P(x0 + 0.3, top - 0.1, z)]
        self.p.poly(sign, (0.1, 0.1, 0.1))
        if toward:
            self.p.glow(sign, (1.0, 0.6, 0.1), 1.0 + 2.0 * look.lamps)
        self._lights(x0, x1, 0.6, z, toward, BUS)

    def tram(self, xc, z, toward: bool) -> None:
        look, P = self.look, self.cam.p
        w, length, top = 2.65, self.u(24, 32), self.u(3.3, 3.6)
        col = self.jit(self.pick(look.trains))
        x0, x1, z1 = xc - w / 2, xc + w / 2, z + length
        rail = _shade(look.road, 0.6)
        for xr in (xc - 0.72, xc + 0.72):
            self.ground(xr - 0.04, xr + 0.04, 0, 400, rail)
        self.box(x0, x1, 0.35, top, z, z1, col, TRAIN)
        glass = self.jit(look.glass, 0.06)
        xsd = x0 if x0 > 0 else (x1 if x1 < 0 else None)
        if xsd is not None:
            self.rect_x(xsd, 1.4, 2.6, z + 1.0, z1 - 1.0, glass)
            zz = z + 3.0
            while zz < z1 - 1.0:
                self.rect_x(xsd, 0.5, 2.7, zz, zz + 0.25, _shade(col, 0.7))     # doors / joints
                zz += self.u(3.0, 5.0)
            self.rect_x(xsd, 0.6, 0.9, z, z1, _shade(col, 0.8))
        self.p.poly([P(x0 + 0.2, 1.3, z), P(x1 - 0.2, 1.3, z), P(x1 - 0.2, top - 0.35, z),
                     P(x0 + 0.2, top - 0.35, z)], glass)
        m, s = self.sprite(xc, z + 4.0)
        lw = self.px(0.06, s)
        self.p.bar(m(-0.6, top), m(0.0, top + 1.1), lw, _shade(look.pole, 0.6), TRAIN, z + 4.0)
        self.p.bar(m(0.0, top + 1.1), m(-0.5, top + 1.6), lw, _shade(look.pole, 0.6), TRAIN, z + 4.0)
        self._lights(x0, x1, 0.7, z, toward, TRAIN)

    def draw_hood(self) -> None:
        """The ego vehicle's bonnet at the bottom (void, as in Cityscapes)."""
        w, h = self.p.w, self.p.h
        hh = h * self.u(0.05, 0.1)
        xs = np.linspace(-0.05 * w, 1.05 * w, 24)
        ys = h - hh * (1 - ((xs - w / 2) / (0.62 * w)) ** 2)
        pts = list(zip(xs, ys)) + [(1.05 * w, h + 2), (-0.05 * w, h + 2)]
        self.p.poly(pts, self.jit(self.look.hood, 0.05), VOID, 1.0)
        hi = _shade(self.look.hood, 2.0)
        self.p.poly([(w * 0.3, h - hh * 0.55), (w * 0.7, h - hh * 0.55), (w * 0.66, h - hh * 0.4),
                     (w * 0.34, h - hh * 0.4)], hi)


# --------------------------------------------------------------------------------------------
# Developing: textures, light, camera
# --------------------------------------------------------------------------------------------

# Per-class texture amplitudes (fine grain, medium blobs, coarse patches): a texture signature
# shared by both domains.
_TEXTURE = np.zeros((256, 3), np.float32)
_TEXTURE[ROAD] = (0.07, 0.03, 0.08)
_TEXTURE[SIDEWALK] = (0.05, 0.02, 0.05)
_TEXTURE[BUILDING] = (0.03, 0.03, 0.06)
_TEXTURE[WALL] = (0.05, 0.07, 0.05)
_TEXTURE[FENCE] = (0.1, 0.03, 0.03)
_TEXTURE[POLE] = (0.02, 0.0, 0.02)
_TEXTURE[SIGN] = (0.02, 0.0, 0.0)
_TEXTURE[VEGETATION] = (0.16, 0.38, 0.15)
_TEXTURE[TERRAIN] = (0.2, 0.1, 0.12)
_TEXTURE[SKY] = (0.0, 0.0, 0.03)
_TEXTURE[PERSON:] = (0.03, 0.0, 0.03)
_TEXTURE[VOID] = (0.02, 0.0, 0.02)
_CHROMA = np.zeros(256, np.float32)     # yellow/green variation of plants
_CHROMA[VEGETATION] = 1.0
_CHROMA[TERRAIN] = 0.7


def _noise(rng: np.random.Generator, w: int, h: int, cell: float) -> np.ndarray:
    """Smooth value noise with features of about ``cell`` pixels, zero mean, unit-ish range."""
    gw, gh = max(2, int(w / cell) + 2), max(2, int(h / cell) + 2)
    g = rng.standard_normal((gh, gw)).astype(np.float32)
    return cv2.resize(g, (w, h), interpolation=cv2.INTER_CUBIC)


def _develop(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    p, look = scene.p, scene.look
    h, w = p.h, p.w
    m = w / 512.0
    img, lab = p.img, p.lab
    fine = cv2.GaussianBlur(rng.standard_normal((h, w)).astype(np.float32), (0, 0), 0.6 * max(m, 0.5))
    fine *= 1.6
    med = _noise(rng, w, h, 4.0 * m)
    coarse = _noise(rng, w, h, 20.0 * m)
    amp = _TEXTURE[lab]
    tex = look.texture * (amp[..., 0] * fine + amp[..., 1] * med + amp[..., 2] * coarse)
    img *= (1.0 + tex)[..., None]
    chroma = _CHROMA[lab] * _noise(rng, w, h, 6.0 * m) * 0.06
    img += chroma[..., None] * np.array([1.0, 0.6, -0.4], np.float32)
    if look.light_field > 0:
        field = _noise(rng, w, h, 80.0 * m)
        img *= (1.0 + look.light_field * np.clip(field, -2, 2) * 0.5)[..., None]
    np.clip(img, 0, 1.5, out=img)

    # lamps (night): pools of light around street lamps, and glows around every light source
    light = np.full((h, w, 3), scene.exposure, np.float32) * (np.array(look.cast, np.float32)
                                                               * np.array(scene.tint, np.float32))
    if p.lamps:
        pool = np.zeros((max(1, h // 4), max(1, w // 4)), np.float32)
        for u, v, radius, strength in p.lamps:
            r = max(1.0, radius / 4.0)
            cv2.ellipse(pool, (int(u / 4), int(v / 4 + r * 0.9)), (int(r * 1.2) + 1, int(r * 0.7) + 1), 0, 0, 360,
                        float(strength), -1)
        pool = cv2.resize(cv2.GaussianBlur(pool, (0, 0), max(1.0, 4.0 * m)), (w, h), interpolation=cv2.INTER_LINEAR)
        light += np.minimum(pool, 1.0)[..., None] * 0.75 * np.array(look.lamp_color, np.float32)
    img *= light
    img += p.emit
    if float(p.emit.max()) > 0:
        img += cv2.GaussianBlur(p.emit, (0, 0), 4.0 * m) * (0.6 + 0.8 * look.lamps)
        if look.lamps > 0:
            img += cv2.GaussianBlur(p.emit, (0, 0), 14.0 * m) * 1.2 * look.lamps

    if look.haze > 0:
        t = np.exp(-look.haze * np.minimum(p.dep, 400.0))
        t[lab == SKY] = 1.0                      # the sky's own gradient already fades to the horizon
        t = t[..., None]
        img[:] = img * t + np.array(look.haze_color, np.float32) * scene.exposure * (1 - t)

    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img[:] = lum[..., None] + (img - lum[..., None]) * look.saturation
    img[:] = 0.5 * scene.exposure + (img - 0.5 * scene.exposure) * look.contrast
    if look.vignette > 0:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx - w / 2) / (w / 2)) ** 2 * 0.6 + ((yy - h / 2) / (h / 2)) ** 2 * 0.4
        img *= (1.0 - look.vignette * 0.6 * r2)[..., None]
    np.clip(img, 0, 1, out=img)
    if abs(look.gamma - 1.0) > 1e-3:
        np.power(img, look.gamma, out=img)
    if look.blur > 0.05:
        img[:] = cv2.GaussianBlur(img, (0, 0), look.blur * m)
    if look.noise > 0 or look.chroma_noise > 0:
        n = rng.standard_normal((h, w, 1)).astype(np.float32) * look.noise
        n = n * np.sqrt(np.clip(img, 0.02, 1) + 0.1)
        img += n + rng.standard_normal((h, w, 3)).astype(np.float32) * look.chroma_noise
    out = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
    if look.jpeg > 0.02:
        q = int(round(95 - 60 * min(look.jpeg, 1.0)))
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, q])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def _as_rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)


def render_scene(rng_or_seed, size: tuple[int, int], domain: str, gap: float = 1.0, version: int = SYNTH_VERSION):
    """Render one street scene of ``size`` = (W, H) in ``domain`` ('source', 'target', 'night').

    ``version`` is the generator version (:data:`SYNTH_VERSIONS`); older ones stay reachable so
    numbers measured on them can be reproduced.

    Returns ``(rgb, label)``: RGB uint8 (H, W, 3) and Cityscapes trainIds uint8 (H, W) with 255
    for void. The same seed (or an identically seeded Generator) gives identical arrays.
    """
    w, h = _check_size(size)
    style = domain_style(domain, gap)
    rng = _as_rng(rng_or_seed)
    scene = _Scene(rng, (w, h), style, geometry(version))
    scene.draw()
    rgb = _develop(scene, rng)
    return np.ascontiguousarray(rgb), np.ascontiguousarray(scene.p.lab)


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ConfigError(f"size must be (width, height), got {size!r}") from None
    if not (MIN_SIZE[0] <= w <= MAX_SIZE[0] and MIN_SIZE[1] <= h <= MAX_SIZE[1]):
        raise ConfigError(f"size {w}x{h} out of range: width {MIN_SIZE[0]}..{MAX_SIZE[0]}, "
                          f"height {MIN_SIZE[1]}..{MAX_SIZE[1]}")
    return w, h


# --------------------------------------------------------------------------------------------
# Dataset writing
# --------------------------------------------------------------------------------------------

_DOMAIN_CODE = {"source": 0, "target": 1, "night": 2}
_SPLIT_CODE = {"train": 0, "val": 1}
CITIES = {"train": ("arden", "brenholm", "calloway", "dunmore"), "val": ("eastvale", "fernwick")}
SEQUENCES = {"train": ("GOPR9001", "GOPR9002", "GOPR9003", "GOPR9004"), "val": ("GOPR9101", "GOPR9102")}


def image_seed(seed: int, domain: str, split: str, index: int) -> np.random.SeedSequence:
    """The seed of one image: independent of how the work is split across processes."""
    return np.random.SeedSequence([int(seed), _DOMAIN_CODE[domain], _SPLIT_CODE[split], int(index)])


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


def _job(task) -> tuple[str, str, np.ndarray]:
    out, domain, split, n, index, seed, size, gap, version = task
    rgb, lab = render_scene(image_seed(seed, domain, split, index), size, domain, gap, version)
    root = Path(out)
    paths = benchmark_paths(domain, split, n, index)
    write_image(root / paths["image"], rgb)
    atomic_write_bytes(root / paths["labelIds"], encode_image(trainid_to_labelid(lab)))
    if "labelTrainIds" in paths:
        atomic_write_bytes(root / paths["labelTrainIds"], encode_image(lab))
    hist = np.bincount(lab.ravel(), minlength=256)
    counts = np.append(hist[:NUM_CLASSES], hist[VOID]).astype(np.int64)
    return domain, split, counts


def _init_worker() -> None:
    cv2.setNumThreads(1)


def _prepare_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a directory; expected a new or empty output folder")
    if out.is_dir() and any(out.iterdir()):
        marker = out / "synth.json"
        if not overwrite:
            raise ConfigError(f"{out}: folder is not empty; expected a new or empty folder "
                              f"(pass --overwrite to replace a previous synthetic benchmark)")
        if not marker.is_file():
            raise ConfigError(f"{out}: not empty and has no synth.json; refusing to overwrite a folder "
                              f"that was not written by 'prnseg synth'")
        try:
            previous = json.loads(marker.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{marker}: unreadable ({exc}); expected the JSON written by 'prnseg synth'") from None
        if not isinstance(previous, dict) or previous.get("format") != SYNTH_FORMAT:
            raise ConfigError(f"{marker}: not a 'prnseg synth' description; refusing to overwrite {out}")
        marker.unlink()
        for name in ("gta", "cityscapes", "dark_zurich"):
            if (out / name).is_dir():
                shutil.rmtree(out / name)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{out}: cannot create the output folder ({exc.strerror})") from None


def _describe(seed, counts, size, night, gap, complete, class_pixels=None, version=SYNTH_VERSION) -> bytes:
    target = "dark_zurich" if night else "cityscapes"
    doc = {
        "format": SYNTH_FORMAT, "version": int(version), "seed": int(seed),
        "counts": counts, "size": list(size), "night": bool(night), "gap": float(gap),
        "layouts": {"source": "gta", "target": target},
        "source": {"images": "gta/images", "labels": "gta/labels", "encoding": "cityscapes labelIds"},
        "target": ({"images": "dark_zurich/rgb_anon/{split}/night", "labels": "dark_zurich/gt/{split}/night",
                    "encoding": "*_gt_labelTrainIds.png and *_gt_labelIds.png"} if night else
                   {"images": "cityscapes/leftImg8bit/{split}", "labels": "cityscapes/gtFine/{split}",
                    "encoding": "*_gtFine_labelTrainIds.png and *_gtFine_labelIds.png"}),
        "classes": list(CITYSCAPES_CLASSES), "complete": bool(complete),
    }
    if class_pixels is not None:
        doc["class_pixels"] = class_pixels
    return (json.dumps(doc, indent=2) + "\n").encode()


def write_benchmark(out, n_source: int, n_target: int, n_val: int, size: tuple[int, int] = (512, 256),
                    seed: int = 0, night: bool = False, preview=None, workers: int = 1,
                    progress: bool = True, gap: float = 1.0, overwrite: bool = False,
                    version: int = SYNTH_VERSION) -> dict:
    """Write the synthetic benchmark under ``out`` and return a summary.

    Source images go to the GTA5 layout, target train/val to the Cityscapes layout (Dark Zurich
    with ``night``); ``synth.json`` describes the run (written first with ``complete: false``,
    rewritten at the end). ``workers`` > 1 renders in that many spawned processes (so a calling
    script needs the usual ``if __name__ == "__main__":`` guard); the files do not depend on it.
    Returns a dict with the output folder, counts, files written, per-split class pixel counts,
    seconds and images per second.
    """
    out = Path(out)
    w, h = _check_size(size)
    for name, n, lo in (("source", n_source, 1), ("target", n_target, 1), ("val", n_val, 0)):
        if int(n) != n or n < lo:
            raise ConfigError(f"number of {name} images must be an integer >= {lo}, got {n}")
    if int(workers) != workers or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers}")
    domain_style("night" if night else "target", gap)
    geometry(version)
    if preview is not None and Path(preview).suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise ConfigError(f"{preview}: preview must be a .png or .jpg file")
    _prepare_out(out, overwrite)
    counts = {"source": int(n_source), "target": int(n_target), "val": int(n_val)}
    atomic_write_bytes(out / "synth.json", _describe(seed, counts, (w, h), night, gap, complete=False,
                                                       version=version))

    tdom = "night" if night else "target"
    plan = [("source", "train", n_source), (tdom, "train", n_target), (tdom, "val", n_val)]
    tasks = [(str(out), d, split, n, i, int(seed), (w, h), float(gap), int(version)) for d, split, n in plan for i in range(n)]
    totals = {f"{d}/{split}": np.zeros(NUM_CLASSES + 1, np.int64) for d, split, _ in plan}
    t0 = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(tasks), unit="img", desc="synth", disable=None)
    try:
        if workers == 1:
            results = map(_job, tasks)
            pool = None
        else:
            pool = multiprocessing.get_context("spawn").Pool(min(workers, len(tasks)), initializer=_init_worker)
            results = pool.imap_unordered(_job, tasks, chunksize=max(1, min(8, len(tasks) // (4 * workers))))
        try:
            for d, split, c in results:
                totals[f"{d}/{split}"] += c
                if bar is not None:
                    bar.update(1)
        except OSError as exc:
            where = exc.filename or out
            raise ConfigError(f"{where}: cannot write the benchmark ({exc.strerror or exc})") from None
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()
    finally:
        if bar is not None:
            bar.close()
    seconds = time.perf_counter() - t0

    class_pixels = {k: {"classes": v[:NUM_CLASSES].tolist(), "void": int(v[NUM_CLASSES])} for k, v in totals.items()}
    atomic_write_bytes(out / "synth.json", _describe(seed, counts, (w, h), night, gap, True, class_pixels,
                                                       version))
    if preview is not None:
        write_preview(out, preview)
    n_files = n_source * 2 + (n_target + n_val) * 3
    present = {k: int(np.count_nonzero(v[:NUM_CLASSES])) for k, v in totals.items()}
    return {
        "out": str(out), "counts": counts, "size": [w, h], "seed": int(seed), "night": bool(night),
        "gap": float(gap), "version": int(version), "files": n_files + 1, "images": len(tasks), "seconds": seconds,
        "images_per_second": len(tasks) / seconds if seconds > 0 else float("inf"),
        "workers": int(workers), "classes_present": present, "class_pixels": class_pixels,
        "layouts": {"source": str(out / "gta"), "target": str(out / ("dark_zurich" if night else "cityscapes"))},
        "preview": None if preview is None else str(preview),
    }


def _load_pair(root: Path, domain: str, split: str, n: int, i: int):
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


__all__ = [
    "DOMAINS", "CITIES", "SEQUENCES", "SYNTH_VERSION", "SYNTH_VERSIONS", "Geometry", "GEOMETRY", "geometry", "SYNTH_FORMAT", "Look", "Layout", "DomainStyle",
    "SOURCE_LOOK", "CAMERA_LOOK", "NIGHT_LOOK", "SOURCE_LAYOUT", "TARGET_LAYOUT", "blend_looks",
    "domain_style", "render_scene", "image_seed", "benchmark_paths", "write_benchmark", "write_preview",
]

