"""The scene's background and street surface: sky and clouds, the distant skyline, the road,
sidewalks, verges, paving joints and lane markings.

These are drawn before anything stands on them; the street's lanes and zebra crossing decide
where vehicles drive and people cross.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import cv2
import numpy as np

from .classes import BUILDING, ROAD, SIDEWALK, TERRAIN, VEGETATION
from .looks import shade
from .raster import FAR

if TYPE_CHECKING:
    from .scene import _Scene


class Backdrop:
    """What lies beyond the street: the sky with its clouds and a skyline of buildings and woods."""

    def __init__(self, scene: _Scene):
        self.scene = scene

    def draw_sky(self) -> None:
        """A gradient from the sky's top to its horizon colour, with clouds where the look has them."""
        sc = self.scene
        h, w = sc.p.h, sc.p.w
        top, hor = np.array(sc.sky_top, np.float32), np.array(sc.sky_horizon, np.float32)
        t = np.clip(np.arange(h, dtype=np.float32) / max(sc.cam.cy, 1.0), 0, 1) ** 0.7
        sc.p.img[:] = (top[None, :] * (1 - t[:, None]) + hor[None, :] * t[:, None])[:, None, :]
        if sc.look.clouds > 0.01:
            gh, gw = max(2, h // 24 + 2), max(2, w // 24 + 2)
            n = cv2.resize(sc.rng.random((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
            n2 = cv2.resize(sc.rng.random((gh * 3, gw * 3)).astype(np.float32), (w, h),
                            interpolation=cv2.INTER_CUBIC)
            cloud = np.clip((0.7 * n + 0.3 * n2 - 0.55) * 4.0, 0, 1) * sc.look.clouds
            white = np.array(sc.sky_horizon, np.float32) * 1.08
            sc.p.img[:] = sc.p.img * (1 - cloud[..., None]) + white * cloud[..., None]

    def draw_skyline(self) -> None:
        """Distant buildings and woods, 250-450 m away, along the horizon."""
        sc = self.scene
        look = sc.look
        x = -400.0
        while x < 400:
            wdt = sc.u(15, 60)
            z = sc.u(250, 450)
            if sc.rng.random() < 0.75:
                hgt = sc.u(8, 45)
                sc.vplane_z(x, x + wdt, 0, hgt, z, sc.jit(sc.pick(look.buildings)), BUILDING)
            else:
                self.crown_line(x, x + wdt, z, sc.u(6, 14))
            x += wdt * sc.u(0.7, 1.0)

    def crown_line(self, x0, x1, z, hgt) -> None:
        """A row of tree crowns in the plane Z = z (distant woods)."""
        sc = self.scene
        look = sc.look
        col = sc.jit(look.vegetation)
        sc.vplane_z(x0, x1, 0, hgt * 0.6, z, col, VEGETATION)
        x = x0
        while x < x1:
            r = sc.u(0.25, 0.45) * hgt
            u, v = sc.cam.p(x, hgt * sc.u(0.55, 0.8), z)
            s = sc.cam.f / z
            sc.p.ellipse((u, v), (r * s, r * s * sc.u(0.8, 1.1)), shade(col, sc.u(0.85, 1.1)),
                         VEGETATION, z)
            x += r * sc.u(0.8, 1.4)


class Street:
    """The ground plane: road, sidewalks, verges and kerbs, paving joints and road markings."""

    def __init__(self, scene: _Scene):
        self.scene = scene
        self.lanes: list[float] = []          # lane centres (X, metres), set by :meth:`markings`
        self.zebra_z: float | None = None     # near edge of the zebra crossing, if there is one

    def draw(self) -> None:
        """Terrain below the horizon, then road, sidewalks, verges, kerbs, paving and markings."""
        sc = self.scene
        p, cam, look = sc.p, sc.cam, sc.look
        y0 = int(math.floor(cam.cy))
        p.img[y0:] = sc.jit(look.terrain)
        p.lab[y0:] = TERRAIN
        rh, xs = sc.road_half, sc.xs
        road = sc.jit(look.road, 0.05)
        sc.ground(-rh, rh, 0, FAR, road, ROAD)
        swc = sc.jit(look.sidewalk, 0.05)
        for side in (-1.0, 1.0):
            sc.ground(side * rh, side * xs, 0, FAR, swc, SIDEWALK)
            if sc.rng.random() < sc.lay.p_verge:
                verge = sc.u(0.8, 0.5 * sc.sw)
                sc.ground(side * (rh + 0.25), side * (rh + 0.25 + verge), 0, FAR, sc.jit(look.terrain), TERRAIN)
            sc.ground(side * rh, side * (rh + 0.25), 0, FAR, sc.jit(look.curb, 0.03))
        self.paving(swc)
        self.markings()

    def paving(self, swc) -> None:
        """Paving joints on the sidewalks: a perspective grid, the sidewalk's texture signature."""
        sc = self.scene
        P, rh, xs = sc.cam.p, sc.road_half, sc.xs
        joint = shade(swc, 0.78)
        tile = sc.u(0.9, 1.6)
        w = max(0.6, sc.cam.w / 900)
        for side in (-1.0, 1.0):
            z = max(sc.cam.znear, 1.0)
            while z < 60:
                sc.p.bar(P(side * (rh + 0.25), 0, z), P(side * xs, 0, z), w, joint)
                z += tile
            for k in range(1, int(sc.sw / tile) + 1):
                x = side * (rh + 0.25 + k * tile)
                if abs(x) < xs:
                    sc.p.bar(P(x, 0, sc.cam.znear), P(x, 0, 80), w, joint)

    def markings(self) -> None:
        """Lane dashes and edge lines, patches and manholes, and maybe a zebra crossing."""
        sc = self.scene
        P, rh, look = sc.cam.p, sc.road_half, sc.look
        col = sc.jit(look.marking, 0.03)
        n_lanes = max(2, int(round(2 * rh / 3.3)))
        self.lanes = [-rh + (k + 0.5) * 2 * rh / n_lanes for k in range(n_lanes)]
        dash, period = sc.u(2.5, 4.0), sc.u(8.0, 12.0)
        for k in range(1, n_lanes):
            x = -rh + k * 2 * rh / n_lanes
            hw = 0.07 if k != n_lanes // 2 else 0.09
            z = sc.cam.znear - sc.u(0, period)
            while z < 250:
                za, zb = max(z, sc.cam.znear), z + dash
                if zb > za:
                    sc.p.poly([P(x - hw, 0, za), P(x + hw, 0, za), P(x + hw, 0, zb), P(x - hw, 0, zb)], col)
                z += period
        for side in (-1.0, 1.0):   # continuous edge lines
            x = side * (rh - 0.35)
            sc.ground(x - 0.06, x + 0.06, 0, 400, col)
        dark = shade(sc.look.road, 0.7)
        for _ in range(int(sc.rng.integers(0, 4))):  # patches and manholes
            z, x = sc.u(6, 40), sc.u(-rh + 0.5, rh - 0.5)
            if sc.rng.random() < 0.5:
                (u, v), s = P(x, 0, z), sc.cam.f / z
                sc.p.ellipse((u, v), (0.35 * s, 0.35 * s * sc.cam.height / z), dark)
            else:
                a, b = sc.u(0.5, 2.5), sc.u(1.0, 5.0)
                sc.ground(x - a, x + a, z, z + b, shade(sc.look.road, sc.u(0.8, 0.92)))
        self.zebra_z = sc.u(12, 30) if sc.rng.random() < 0.5 else None
        if self.zebra_z is not None:
            z0 = self.zebra_z
            x = -rh + 0.4
            while x < rh - 0.6:
                sc.ground(x, x + 0.5, z0, z0 + 3.0, col)
                x += 1.0
