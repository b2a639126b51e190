"""Vehicles: parked and moving cars, trucks, buses and a tram in their lanes, and the ego
vehicle's bonnet.

Vehicles are boxes drawn in perspective (visible faces far first), with wheels, windows and
lights; at night their lights glow. Like the other families they plan first, then draw far to
near through the scene's queue.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .classes import BUS, CAR, TRAIN, TRUCK, VOID
from .looks import shade

if TYPE_CHECKING:
    from .scene import _Scene


class Vehicles:
    """Cars, trucks, buses and trams on the road, and the ego vehicle's bonnet."""

    def __init__(self, scene: _Scene):
        self.scene = scene

    def plan(self) -> None:
        """Parked rows along the kerbs, maybe a tram, then traffic in every other lane."""
        sc = self.scene
        lanes = self._plan_parked(list(sc.street.lanes))
        tram_lane = None
        if sc.rng.random() < sc.lay.p_train:
            tram_lane = sc.pick(lanes)
            z = sc.u(8, 40)
            sc.add(z, lambda x=tram_lane, z=z: self.tram(x, z, toward=x < 0))
        for x in lanes:
            if x != tram_lane:
                self._plan_lane(x)

    def _plan_parked(self, lanes: list[float]) -> list[float]:
        """Rows of parked cars; returns the lanes left free for traffic."""
        sc = self.scene
        rh = sc.road_half
        parked = {s: sc.rng.random() < sc.lay.p_parked for s in (-1.0, 1.0)}
        for side in (-1.0, 1.0):
            if parked[side]:
                lanes = [x for x in lanes if abs(x - side * rh) > 2.0] or lanes
                z = sc.u(4, 12)
                while z < sc.g.parked_far:
                    if sc.rng.random() < 0.7:
                        x = side * (rh - 1.15)
                        sc.add(z, lambda x=x, z=z: self.car(x, z, toward=False))
                    z += sc.u(5.5, 9.0)
        return lanes

    def _plan_lane(self, x: float) -> None:
        """Cars, trucks and buses at random gaps along the lane centred at ``x`` (left lanes oncoming)."""
        sc = self.scene
        lay = sc.lay
        z = sc.u(3, 25) + sc.rng.exponential(5.0 / lay.lane_density)
        while z < sc.g.lane_far:
            kind = sc.rng.random()
            length = 4.5
            xx = x + sc.u(-0.3, 0.3)
            toward = x < 0
            if kind < lay.p_bus:
                length = 12.0
                sc.add(z, lambda xx=xx, z=z, t=toward: self.bus(xx, z, t))
            elif kind < lay.p_bus + lay.p_truck:
                length = 9.0
                sc.add(z, lambda xx=xx, z=z, t=toward: self.truck(xx, z, t))
            else:
                sc.add(z, lambda xx=xx, z=z, t=toward: self.car(xx, z, t))
            z += length + sc.rng.exponential(10.0 / lay.lane_density)

    def _wheels_side(self, xside, z0, length, r, cls) -> None:
        """Front and rear wheels on the side face X = ``xside`` that the camera sees."""
        sc = self.scene
        P = sc.cam.p
        for zc in (z0 + 0.18 * length, z0 + 0.82 * length):
            (u0, _), (u1, _) = P(xside, r, zc - r), P(xside, r, zc + r)
            (uc, vc) = P(xside, r, zc)
            sc.p.ellipse((uc, vc), (abs(u1 - u0) / 2, r * sc.cam.f / zc), sc.look.tyre, cls, zc)

    def _lights(self, x0, x1, y, z, toward: bool, cls) -> None:
        """Head lights (oncoming) or tail lights on the face Z = z; they glow when lamps are on."""
        sc = self.scene
        P = sc.cam.p
        col = (1.0, 0.95, 0.8) if toward else (0.9, 0.08, 0.05)
        k = (2.5 if toward else 1.5) * sc.look.lamps
        for xa, xb in ((x0 + 0.1, x0 + 0.4), (x1 - 0.4, x1 - 0.1)):
            pts = [P(xa, y, z), P(xb, y, z), P(xb, y + 0.15, z), P(xa, y + 0.15, z)]
            sc.p.poly(pts, col, cls, z)
            if k > 0:
                sc.p.glow(pts, col, k)

    def car(self, xc, z, toward: bool) -> None:
        """A car with its shadow, wheels, body and cabin, windows, lights and number plate."""
        sc = self.scene
        look, P = sc.look, sc.cam.p
        w, length = sc.u(1.7, 1.95), sc.u(3.9, 4.8)
        y1, y2 = sc.u(0.95, 1.1), sc.u(1.4, 1.55)
        x0, x1, z1 = xc - w / 2, xc + w / 2, z + length
        col = sc.jit(sc.pick(look.cars))
        if look.shadows > 0:
            sc.p.darken([P(x0 - 0.2, 0, z - 0.3), P(x1 + 0.2, 0, z - 0.3), P(x1 + 0.2, 0, z1), P(x0 - 0.2, 0, z1)],
                        1.0 - 0.8 * look.shadows)
        if x0 > 0:
            self._wheels_side(x0, z, length, 0.33, CAR)
        elif x1 < 0:
            self._wheels_side(x1, z, length, 0.33, CAR)
        for xa in (x0 + 0.08, x1 - 0.38):
            sc.vplane_z(xa, xa + 0.3, 0, 0.35, z + 0.6, look.tyre, CAR)
        sc.box(x0, x1, 0.28, y1, z, z1, col, CAR)
        ca, cb = (0.25, 0.72) if not toward else (0.32, 0.8)
        cx0, cx1, cz0, cz1 = x0 + 0.12, x1 - 0.12, z + ca * length, z + cb * length
        sc.box(cx0, cx1, y1, y2, cz0, cz1, col, CAR)
        glass = sc.jit(look.glass, 0.06)
        ins = 0.07
        sc.p.poly([P(cx0 + ins, y1 + 0.05, cz0), P(cx1 - ins, y1 + 0.05, cz0), P(cx1 - ins, y2 - ins, cz0),
                   P(cx0 + ins, y2 - ins, cz0)], glass)
        xsd = cx0 if cx0 > 0 else (cx1 if cx1 < 0 else None)
        if xsd is not None:
            sc.rect_x(xsd, y1 + 0.06, y2 - 0.06, cz0 + 0.1, cz1 - 0.1, shade(glass, 0.9))
            sc.rect_x(xsd, y1 + 0.06, y2 - 0.06, (cz0 + cz1) / 2 - 0.05, (cz0 + cz1) / 2 + 0.05, col)
        self._lights(x0, x1, y1 - 0.3, z, toward, CAR)
        sc.vplane_z(xc - 0.26, xc + 0.26, 0.4, 0.52, z, (0.92, 0.92, 0.9), CAR, depth=False)

    def truck(self, xc, z, toward: bool) -> None:
        """A cab and a box body, the cab in front (oncoming) or behind the box."""
        sc = self.scene
        look, P = sc.look, sc.cam.p
        w, lbox, lcab = 2.5, sc.u(6.0, 8.0), 2.2
        top = sc.u(3.2, 3.8)
        cab, boxc = sc.jit(sc.pick(look.truck_cabs)), sc.jit(sc.pick(look.truck_boxes))
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
            sc.vplane_z(xa, xa + 0.4, 0, 0.6, z + 0.8, look.tyre, TRUCK)
        parts = [(zb0, lambda: sc.box(x0, x1, 0.9, top, zb0, zb0 + lbox, boxc, TRUCK)),
                 (zc0, lambda: sc.box(x0 + 0.05, x1 - 0.05, 0.6, 2.9, zc0, zc0 + lcab, cab, TRUCK))]
        for _, fn in sorted(parts, key=lambda t: -t[0]):
            fn()
        if toward:
            glass = sc.jit(look.glass, 0.06)
            sc.p.poly([P(x0 + 0.2, 1.7, z), P(x1 - 0.2, 1.7, z), P(x1 - 0.2, 2.7, z), P(x0 + 0.2, 2.7, z)], glass)
        else:
            sc.vplane_z(xc - 0.02, xc + 0.02, 0.95, top - 0.05, z, shade(boxc, 0.7), TRUCK, depth=False)
        self._lights(x0, x1, 0.8, z, toward, TRUCK)

    def bus(self, xc, z, toward: bool) -> None:
        """A bus with a window band, a windscreen and a destination sign (lit on oncoming buses)."""
        sc = self.scene
        look, P = sc.look, sc.cam.p
        w, length, top = 2.55, sc.u(11, 13), sc.u(3.0, 3.3)
        col = sc.jit(sc.pick(look.buses))
        x0, x1, z1 = xc - w / 2, xc + w / 2, z + length
        if x0 > 0:
            self._wheels_side(x0, z, length, 0.5, BUS)
        elif x1 < 0:
            self._wheels_side(x1, z, length, 0.5, BUS)
        sc.box(x0, x1, 0.3, top, z, z1, col, BUS)
        glass = sc.jit(look.glass, 0.06)
        xsd = x0 if x0 > 0 else (x1 if x1 < 0 else None)
        if xsd is not None:
            sc.rect_x(xsd, 1.3, 2.5, z + 0.8, z1 - 0.5, glass)
            zz = z + 2.0
            while zz < z1 - 1.0:
                sc.rect_x(xsd, 1.3, 2.5, zz, zz + 0.12, col)
                zz += 1.4
        wy0 = 1.1 if toward else 1.5
        sc.p.poly([P(x0 + 0.12, wy0, z), P(x1 - 0.12, wy0, z), P(x1 - 0.12, top - 0.45, z),
                   P(x0 + 0.12, top - 0.45, z)], glass)
        sign = [P(x0 + 0.3, top - 0.38, z), P(x1 - 0.3, top - 0.38, z), P(x1 - 0.3, top - 0.1, z),
                P(x0 + 0.3, top - 0.1, z)]
        sc.p.poly(sign, (0.1, 0.1, 0.1))
        if toward:
            sc.p.glow(sign, (1.0, 0.6, 0.1), 1.0 + 2.0 * look.lamps)
        self._lights(x0, x1, 0.6, z, toward, BUS)

    def tram(self, xc, z, toward: bool) -> None:
        """A tram on its rails, with doors, windows and a pantograph."""
        sc = self.scene
        look, P = sc.look, sc.cam.p
        w, length, top = 2.65, sc.u(24, 32), sc.u(3.3, 3.6)
        col = sc.jit(sc.pick(look.trains))
        x0, x1, z1 = xc - w / 2, xc + w / 2, z + length
        rail = shade(look.road, 0.6)
        for xr in (xc - 0.72, xc + 0.72):
            sc.ground(xr - 0.04, xr + 0.04, 0, 400, rail)
        sc.box(x0, x1, 0.35, top, z, z1, col, TRAIN)
        glass = sc.jit(look.glass, 0.06)
        xsd = x0 if x0 > 0 else (x1 if x1 < 0 else None)
        if xsd is not None:
            sc.rect_x(xsd, 1.4, 2.6, z + 1.0, z1 - 1.0, glass)
            zz = z + 3.0
            while zz < z1 - 1.0:
                sc.rect_x(xsd, 0.5, 2.7, zz, zz + 0.25, shade(col, 0.7))     # doors / joints
                zz += sc.u(3.0, 5.0)
            sc.rect_x(xsd, 0.6, 0.9, z, z1, shade(col, 0.8))
        sc.p.poly([P(x0 + 0.2, 1.3, z), P(x1 - 0.2, 1.3, z), P(x1 - 0.2, top - 0.35, z),
                   P(x0 + 0.2, top - 0.35, z)], glass)
        m, s = sc.sprite(xc, z + 4.0)
        lw = sc.px(0.06, s)
        sc.p.bar(m(-0.6, top), m(0.0, top + 1.1), lw, shade(look.pole, 0.6), TRAIN, z + 4.0)
        sc.p.bar(m(0.0, top + 1.1), m(-0.5, top + 1.6), lw, shade(look.pole, 0.6), TRAIN, z + 4.0)
        self._lights(x0, x1, 0.7, z, toward, TRAIN)

    def hood(self) -> None:
        """The ego vehicle's bonnet at the bottom (void, as in Cityscapes)."""
        sc = self.scene
        w, h = sc.p.w, sc.p.h
        hh = h * sc.u(0.05, 0.1)
        xs = np.linspace(-0.05 * w, 1.05 * w, 24)
        ys = h - hh * (1 - ((xs - w / 2) / (0.62 * w)) ** 2)
        pts = list(zip(xs, ys)) + [(1.05 * w, h + 2), (-0.05 * w, h + 2)]
        sc.p.poly(pts, sc.jit(sc.look.hood, 0.05), VOID, 1.0)
        hi = shade(sc.look.hood, 2.0)
        sc.p.poly([(w * 0.3, h - hh * 0.55), (w * 0.7, h - hh * 0.55), (w * 0.66, h - hh * 0.4),
                   (w * 0.34, h - hh * 0.4)], hi)
