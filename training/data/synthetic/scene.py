"""One street scene: its random stream, camera, street dimensions and light, the 3-D drawing
primitives every part uses, and the order in which the parts are drawn.

The parts (backdrop, street surface, roadside, furniture, people, vehicles) are drawn by their
own classes, which share this scene. Layout and appearance come from one random stream, in a
fixed order, so a seed always gives the same bytes.
"""

from __future__ import annotations

import numpy as np

from .layout import GEOMETRY, SYNTH_VERSION, DomainStyle, Geometry
from .looks import RGB, WEATHER, lerp, shade
from .objects import Furniture, People
from .raster import Camera, Painter
from .roadside import Roadside
from .street import Backdrop, Street
from .vehicles import Vehicles


class _Scene:
    """Samples and draws one street scene (layout and appearance share one random stream).

    The part drawers read the stream through :meth:`u`, :meth:`pick` and :meth:`jit` at the
    moment they draw, so every part takes its numbers from ``rng`` in the same fixed order.
    """

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
        self.cam = Camera(w, h, f, cx, cy, self.u(*lay.cam_height))
        self.p = Painter(self.cam)
        self.road_half = self.u(*lay.road_half)
        self.sw = self.u(*lay.sidewalk)
        self.xs = self.road_half + self.sw          # outer edge of the sidewalk
        self.sun = 1.0 if rng.random() < 0.5 else -1.0  # the side whose facades face the sun
        self._sample_light()
        self.objects: list[tuple[float, int, object]] = []   # (depth, order, draw callable)
        self.backdrop, self.street, self.roadside = Backdrop(self), Street(self), Roadside(self)
        self.furniture, self.people, self.vehicles = Furniture(self), People(self), Vehicles(self)

    def _sample_light(self) -> None:
        """Sky colours, light tint and exposure: the domain's own, or now and then other weather."""
        rng = self.rng
        change, kind = rng.random() < self.look.weather, int(rng.integers(len(WEATHER)))
        t, ek = self.u(0.5, 1.0), self.u(-1.0, 1.0)
        self.sky_top, self.sky_horizon = self.look.sky_top, self.look.sky_horizon
        self.tint, self.exposure = (1.0, 1.0, 1.0), self.look.exposure
        if change:
            top, hor, tint = WEATHER[kind]
            self.sky_top, self.sky_horizon = lerp(self.sky_top, top, t), lerp(self.sky_horizon, hor, t)
            self.tint, self.exposure = lerp(self.tint, tint, t), self.exposure * (1.0 + 0.15 * ek)

    # the scene ----------------------------------------------------------------------------
    def draw(self) -> None:
        """Draw back to front: sky, street, skyline, roadside, then every object far to near."""
        self.backdrop.draw_sky()
        self.street.draw()
        self.backdrop.draw_skyline()
        self.roadside.draw()
        self.vehicles.plan()
        self.people.plan()
        self.furniture.plan()
        for _, _, fn in sorted(self.objects, key=lambda o: (-o[0], o[1])):
            fn()
        if self.rng.random() < self.lay.p_hood:
            self.vehicles.hood()

    def two_wheeler(self, x, z, moto: bool, rider: bool) -> None:
        """Draw one bicycle or motorcycle at ground point (x, z) now, outside the depth order."""
        self.people.two_wheeler(x, z, moto, rider)

    # random helpers -----------------------------------------------------------------------
    def u(self, lo: float, hi: float) -> float:
        """A uniform draw in [lo, hi)."""
        return float(self.rng.uniform(lo, hi))

    def pick(self, seq):
        """One element of ``seq``, uniformly."""
        return seq[int(self.rng.integers(len(seq)))]

    def jit(self, color, amount: float | None = None) -> RGB:
        """``color`` with per-instance brightness and tint jitter (default: the look's spread)."""
        a = self.look.colour_jitter if amount is None else amount
        k = 1.0 + float(self.rng.normal(0.0, a))
        tint = self.rng.normal(0.0, a * 0.3, 3)
        return tuple(float(np.clip(c * k * (1 + t), 0, 1)) for c, t in zip(color, tint))  # type: ignore

    def side_factor(self, side: float) -> float:
        """Brightness of a facade on ``side`` (-1 left, +1 right)."""
        return 1.0 if side == self.sun else 1.0 - self.look.face_shade

    def add(self, depth: float, fn) -> None:
        """Queue an object's draw call; :meth:`draw` runs the queue far to near, ties in order."""
        self.objects.append((depth, len(self.objects), fn))

    # geometry helpers ---------------------------------------------------------------------
    def ground(self, x0, x1, z0, z1, color, cls=None):
        """A rectangle on the ground plane, clipped to what the camera sees."""
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
        """A vertical rectangle in the plane Z = z (facing the camera)."""
        P = self.cam.p
        self.p.poly([P(x0, y0, z), P(x1, y0, z), P(x1, y1, z), P(x0, y1, z)], color, cls,
                    z if depth else None)

    def box(self, x0, x1, y0, y1, z0, z1, color, cls):
        """Visible faces of an axis-aligned box, far faces first."""
        P = self.cam.p
        fs = self.look.face_shade
        if y1 < self.cam.height:
            self.p.poly([P(x0, y1, z0), P(x1, y1, z0), P(x1, y1, z1), P(x0, y1, z1)],
                        shade(color, 1.0 + 0.3 * fs), cls, 0.5 * (z0 + z1))
        if x0 > 0:
            self.p.poly([P(x0, y0, z0), P(x0, y0, z1), P(x0, y1, z1), P(x0, y1, z0)],
                        shade(color, self.side_factor(-1.0) * (1 - 0.3 * fs)), cls, 0.5 * (z0 + z1))
        elif x1 < 0:
            self.p.poly([P(x1, y0, z0), P(x1, y0, z1), P(x1, y1, z1), P(x1, y1, z0)],
                        shade(color, self.side_factor(1.0) * (1 - 0.3 * fs)), cls, 0.5 * (z0 + z1))
        self.p.poly([P(x0, y0, z0), P(x1, y0, z0), P(x1, y1, z0), P(x0, y1, z0)], color, cls, z0)

    def sprite(self, x, z, scale: float = 1.0):
        """A camera-facing billboard at ground point (x, z): returns a metres -> pixels map."""
        u0, v0 = self.cam.p(x, 0.0, z)
        s = self.cam.f / z * scale
        return lambda a, b: (u0 + a * s, v0 - b * s), s

    def px(self, width: float, s: float) -> float:
        """Stroke width in pixels of a part ``width`` metres wide at ``s`` pixels per metre."""
        return max(width * s * self.g.stroke_scale, self.g.min_stroke_px)

