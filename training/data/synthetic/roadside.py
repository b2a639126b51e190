"""The two sides of the street beyond the sidewalks: rows of buildings, open ground with walls,
fences, hedges and trees, and cross streets with a facade across them.

Each side is cut into segments along the street, planned first (in the random stream's order)
and then drawn far to near, so nearer facades cover farther ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .classes import BUILDING, FENCE, ROAD, SIDEWALK, VEGETATION, WALL
from .looks import shade

if TYPE_CHECKING:
    from .scene import _Scene


class Roadside:
    """Plans and draws the segments on both sides of the street."""

    def __init__(self, scene: _Scene):
        self.scene = scene

    def draw(self) -> None:
        """Plan the left then the right side, then draw every segment far to near."""
        segments = []
        for side in (-1.0, 1.0):
            segments += self.plan_side(side)
        for seg in sorted(segments, key=lambda s: -s[0]):
            seg[1]()


    def plan_side(self, side: float):
        """Split one side of the street into segments (buildings, open ground, cross street)."""
        sc = self.scene
        segs = []
        z = sc.cam.znear * 0.5
        z_end = sc.u(110, 250)
        cross_at = sc.u(15, 60) if sc.rng.random() < sc.lay.p_cross else None
        open_feature = None
        while z < z_end:
            if cross_at is not None and z >= cross_at:
                width = sc.u(8, 14)
                zc = z
                segs.append((zc, lambda zc=zc, width=width: self.cross_street(side, zc, width)))
                z += width + 2 * sc.sw
                cross_at = None
                continue
            if sc.rng.random() < sc.lay.p_building:
                length = sc.u(8, 28)
                hgt = sc.u(7, 28)
                col = sc.jit(sc.pick(sc.look.buildings))
                zz = z
                segs.append((zz, lambda zz=zz, length=length, hgt=hgt, col=col:
                             self.building(side, zz, zz + length, hgt, col)))
            else:
                length = sc.u(15, 50)
                if open_feature is None or sc.rng.random() < 0.5:
                    open_feature = sc.pick(("wall", "fence", "hedge", "none", "none"))
                zz, feat = z, open_feature
                segs.append((zz, lambda zz=zz, length=length, feat=feat:
                             self.open_ground(side, zz, zz + length, feat)))
            z += length
        return segs

    def building(self, side, z0, z1, hgt, col) -> None:
        """A facade with shop windows, a window grid (some lit at night), cornice and cast shadow."""
        sc = self.scene
        look, x = sc.look, side * sc.xs
        fcol = shade(col, sc.side_factor(side))
        sc.vplane_x(x, 0, hgt, z0, z1, fcol, BUILDING)
        floor = sc.u(2.8, 3.6)
        ground_floor = sc.u(3.2, 4.5)
        col_w = sc.u(2.4, 4.0)
        win_w, win_h = col_w * sc.u(0.35, 0.6), floor * sc.u(0.4, 0.6)
        glass = sc.jit(look.window, 0.08)
        if sc.rng.random() < 0.5:        # shop windows on the ground floor
            zz = z0 + 0.5
            while zz + 2.0 < z1:
                wl = sc.u(2.0, 4.0)
                sc.rect_x(x, 0.4, ground_floor - 0.7, zz, min(zz + wl, z1 - 0.3), shade(glass, 0.9))
                zz += wl + sc.u(0.6, 1.5)
        y = ground_floor
        lit = sc.night and look.lamps > 0
        while y + win_h < hgt - 0.5:
            zz = z0 + (col_w - win_w) / 2
            while zz + win_w < z1:
                sc.rect_x(x, y, y + win_h, zz, zz + win_w, glass)
                if lit and sc.rng.random() < 0.3:
                    P = sc.cam.p
                    sc.p.glow([P(x, y, zz), P(x, y, zz + win_w), P(x, y + win_h, zz + win_w),
                               P(x, y + win_h, zz)], (1.0, 0.8, 0.45), 1.2)
                zz += col_w
            y += floor
        sc.rect_x(x, hgt - 0.4, hgt, z0, z1, shade(fcol, 1.12))          # cornice
        sc.rect_x(x, 0, hgt, z1 - 0.25, z1, shade(fcol, 0.8))           # party wall edge
        if look.shadows > 0 and side != sc.sun:                            # cast shadow
            P, d = sc.cam.p, min(hgt * 0.5, sc.xs + 2)
            x_in = side * (sc.xs - d)
            a = [P(x, 0, max(z0, sc.cam.znear)), P(x_in, 0, max(z0, sc.cam.znear)),
                 P(x_in, 0, z1), P(x, 0, z1)]
            sc.p.darken(a, 1.0 - look.shadows)

    def cross_street(self, side, z0, width) -> None:
        """A cross street: road and corner sidewalks to the side, a facade across its far side."""
        sc = self.scene
        look, rh, xs, sw = sc.look, sc.road_half, sc.xs, sc.sw
        road = sc.jit(look.road, 0.05)
        swc = sc.jit(look.sidewalk, 0.05)
        far = 80.0
        sc.ground(side * rh, side * far, z0, z0 + sw, swc, SIDEWALK)
        sc.ground(side * rh, side * far, z0 + sw, z0 + sw + width, road, ROAD)
        sc.ground(side * rh, side * far, z0 + sw + width, z0 + 2 * sw + width, swc, SIDEWALK)
        zf = z0 + 2 * sw + width
        hgt = sc.u(8, 25)
        col = sc.jit(sc.pick(look.buildings))
        sc.vplane_z(side * xs, side * far, 0, hgt, zf, col, BUILDING)
        floor, colw = sc.u(2.8, 3.6), sc.u(2.5, 4.0)
        glass = sc.jit(look.window, 0.08)
        P = sc.cam.p
        y = sc.u(3.0, 4.5)
        while y + 1.5 < hgt:
            x = xs + 0.8
            while x + 1.2 < far:
                xa, xb = side * x, side * (x + 1.2)
                sc.p.poly([P(xa, y, zf), P(xb, y, zf), P(xb, y + 1.5, zf), P(xa, y + 1.5, zf)], glass)
                x += colw
            y += floor
        for zc in (z0 + sw * 0.5, z0 + 1.5 * sw + width):   # traffic lights at the corners
            sc.add(zc, lambda zc=zc: sc.furniture.traffic_light_pole(side * (rh + 0.5), zc))

    def open_ground(self, side, z0, z1, feature) -> None:
        """A stretch without buildings: woods or a set-back building behind, a few trees, and
        ``feature`` ('wall', 'fence', 'hedge' or 'none') along the back of the sidewalk."""
        sc = self.scene
        self._behind_open_ground(side, z0, z1)
        for _ in range(int(sc.rng.integers(0, 3))):   # single trees on the open ground
            z = sc.u(z0, z1)
            sc.furniture.tree(side * (sc.xs + sc.u(1.5, 6)), z, sc.u(4, 9))
        x = side * sc.xs
        if feature == "wall":
            self._wall(side, x, z0, z1)
        elif feature == "fence":
            self._fence(side, x, z0, z1)
        elif feature == "hedge":
            self._hedge(x, z0, z1)

    def _behind_open_ground(self, side, z0, z1) -> None:
        """Trees or woods further back, or now and then a building set back behind the ground."""
        sc = self.scene
        look, xs = sc.look, sc.xs
        if sc.rng.random() < 0.6:           # trees or woods further back
            d = sc.u(4, 25)
            hgt = sc.u(5, 12)
            col = sc.jit(look.vegetation)
            x = side * (xs + d)
            sc.vplane_x(x, 0, hgt * 0.55, z0, z1, col, VEGETATION)
            z = z0
            while z < z1:
                r = sc.u(0.25, 0.4) * hgt
                zc = z + r
                (u, v), s = sc.cam.p(x, hgt * sc.u(0.5, 0.75), zc), sc.cam.f / zc
                sc.p.ellipse((u, v), (r * s * sc.u(0.5, 0.9), r * s), shade(col, sc.u(0.85, 1.1)),
                             VEGETATION, zc)
                z += r * sc.u(1.0, 1.6)
        elif sc.rng.random() < 0.5:        # a building set back behind open ground
            x = side * (xs + sc.u(8, 30))
            col = sc.jit(sc.pick(look.buildings))
            sc.vplane_x(x, 0, sc.u(6, 20), z0, z1, shade(col, sc.side_factor(side)), BUILDING)

    def _wall(self, side, x, z0, z1) -> None:
        """A wall with a coping and joints."""
        sc = self.scene
        hgt = sc.u(0.8, 2.5)
        col = shade(sc.jit(sc.look.wall), sc.side_factor(side))
        sc.vplane_x(x, 0, hgt, z0, z1, col, WALL)
        sc.rect_x(x, hgt - 0.15, hgt, z0, z1, shade(col, 1.15))
        z = z0
        while z < z1:
            sc.rect_x(x, 0, hgt, z, z + 0.08, shade(col, 0.75))
            z += sc.u(2.5, 3.5)

    def _fence(self, side, x, z0, z1) -> None:
        """Rails and bars; the bars stop where they would be closer than 1.5 pixels on screen."""
        sc = self.scene
        hgt = sc.u(1.0, 2.0)
        col = shade(sc.jit(sc.look.fence), sc.side_factor(side))
        sc.vplane_x(x, 0, hgt, z0, z1, shade(col, 0.75), FENCE)
        for y in (0.15 * hgt, 0.9 * hgt):
            sc.rect_x(x, y, y + 0.08, z0, z1, shade(col, 1.25))
        z, step = z0, sc.u(0.25, 0.4)
        while z < z1:
            px = sc.cam.f * step * abs(x) / (z * z)       # on-screen spacing of the bars
            if px < 1.5:
                break
            sc.rect_x(x, 0, hgt, z, z + step * 0.4, shade(col, 1.2))
            z += step

    def _hedge(self, x, z0, z1) -> None:
        """A hedge with a bumpy top."""
        sc = self.scene
        hgt = sc.u(0.8, 1.6)
        col = sc.jit(sc.look.vegetation)
        sc.vplane_x(x, 0, hgt, z0, z1, col, VEGETATION)
        z = z0
        while z < z1:
            r = sc.u(0.3, 0.6)
            zc = max(z + r, 2.0)
            (u, v), s = sc.cam.p(x, hgt, zc), sc.cam.f / zc
            sc.p.ellipse((u, v), (r * s * abs(x) / zc + 0.5, r * s), col, VEGETATION, zc)
            z += r * 1.5
