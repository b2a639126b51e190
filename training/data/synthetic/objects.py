"""The things that stand on the street: street furniture (poles, signs, traffic lights, street
lamps, trees) and people (pedestrians, cyclists and motorcyclists, parked two-wheelers).

Each family first plans where its members stand (``plan``), queueing one draw call per object
on the scene, which draws them far to near; the draw methods paint camera-facing sprites.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from .classes import BICYCLE, LIGHT, MOTORCYCLE, PERSON, POLE, RIDER, SIGN, VEGETATION
from .looks import shade

if TYPE_CHECKING:
    from .scene import _Scene


def _outline(m, d: float, half: float, r: float, top: float) -> list[tuple[float, float]]:
    """A two-wheeler's annotation polygon in side view: both wheels and everything up to ``top``."""
    rim = [(math.cos(t) * r, math.sin(t) * r) for t in np.linspace(math.pi, 2 * math.pi, 7)]
    bottom = [((-half + x) * d, r + y) for x, y in rim[:4]] + [((half + x) * d, r + y) for x, y in rim[3:]]
    return [m(*p) for p in bottom + [((half + r) * d, r), (half * d, top), (-half * d, top), ((-half - r) * d, r)]]


class Furniture:
    """Street lamps, signs, traffic lights, plain poles and trees along the sidewalks."""

    def __init__(self, scene: _Scene):
        self.scene = scene

    def plan(self) -> None:
        """Furniture at the kerb of each side, and on some sides a row of street trees."""
        sc = self.scene
        rh, xs = sc.road_half, sc.xs
        for side in (-1.0, 1.0):
            z = sc.u(3, 15)
            while z < sc.g.furniture_far:
                kind = sc.rng.random()
                x = side * (rh + 0.5)
                if kind < 0.3:
                    sc.add(z, lambda x=x, z=z, s=side: self.street_lamp(x, z, s))
                elif kind < 0.65:
                    sc.add(z, lambda x=x, z=z: self.sign_pole(x, z))
                elif kind < 0.78:
                    sc.add(z, lambda x=x, z=z: self.traffic_light_pole(x, z))
                else:
                    sc.add(z, lambda x=x, z=z: self.plain_pole(x, z))
                z += sc.u(*sc.g.furniture_spacing)
            if sc.rng.random() < sc.lay.p_street_trees:
                z = sc.u(4, 12)
                spacing = sc.u(8, 16)
                while z < sc.g.tree_far:
                    x = side * (xs - sc.u(0.6, 1.0))
                    sc.add(z, lambda x=x, z=z: self.tree(x, z, sc.u(5, 9)))
                    z += spacing

    def tree(self, x, z, hgt) -> None:
        """A trunk and a crown of overlapping blobs."""
        sc = self.scene
        look = sc.look
        m, s = sc.sprite(x, z)
        trunk_h = hgt * sc.u(0.3, 0.45)
        sc.p.bar(m(0, 0), m(0, trunk_h + 0.5), sc.px(0.3, s), sc.jit(look.trunk), VEGETATION, z)
        col = sc.jit(look.vegetation)
        r = sc.u(0.22, 0.35) * hgt
        cy = trunk_h + r * 0.8
        for _ in range(int(sc.rng.integers(5, 10))):
            a, d = sc.u(0, 2 * math.pi), sc.u(0, 0.7) * r
            rr = r * sc.u(0.45, 0.8)
            sc.p.ellipse(m(d * math.cos(a), cy + 0.8 * d * math.sin(a)), (rr * s, rr * s * sc.u(0.8, 1.0)),
                         shade(col, sc.u(0.8, 1.15)), VEGETATION, z)

    def _pole(self, x, z, hgt, width=0.16, scale: float = 1.0):
        """A pole standing at (x, z); returns the sprite map and scale for what it carries."""
        sc = self.scene
        m, s = sc.sprite(x, z, scale)
        sc.p.bar(m(0, 0), m(0, hgt), sc.px(width, s), sc.jit(sc.look.pole, 0.05), POLE, z)
        return m, s

    def plain_pole(self, x, z) -> None:
        sc = self.scene
        self._pole(x, z, sc.u(1.0, 4.0) if sc.rng.random() < 0.5 else sc.u(0.8, 1.1), 0.12,
                   sc.g.furniture_scale)

    def sign_pole(self, x, z) -> None:
        """A pole with a round, triangular, square or direction sign."""
        sc = self.scene
        look = sc.look
        hgt = sc.u(2.4, 3.4)
        m, s = self._pole(x, z, hgt, 0.08, sc.g.furniture_scale)
        face = sc.jit(sc.pick(look.sign_faces), 0.05)
        inner = sc.jit(look.sign_inner, 0.03)
        shape = int(sc.rng.integers(4))
        yc = hgt - 0.4
        if shape == 0:              # round prohibition sign
            sc.p.ellipse(m(0, yc), (0.35 * s, 0.35 * s), face, SIGN, z - 0.05)
            sc.p.ellipse(m(0, yc), (0.24 * s, 0.24 * s), inner)
        elif shape == 1:            # warning triangle
            pts = [m(-0.42, yc - 0.3), m(0.42, yc - 0.3), m(0, yc + 0.42)]
            sc.p.poly(pts, face, SIGN, z - 0.05)
            sc.p.poly([m(-0.26, yc - 0.2), m(0.26, yc - 0.2), m(0, yc + 0.22)], inner)
        elif shape == 2:            # square information sign
            sc.p.poly([m(-0.32, yc - 0.32), m(0.32, yc - 0.32), m(0.32, yc + 0.32), m(-0.32, yc + 0.32)],
                      face, SIGN, z - 0.05)
            sc.p.poly([m(-0.12, yc - 0.2), m(0.12, yc - 0.2), m(0.12, yc + 0.2), m(-0.12, yc + 0.2)], inner)
        else:                       # direction plate
            d = sc.pick((-1, 1))
            pts = [m(0, yc - 0.25), m(d * 1.0, yc - 0.25), m(d * 1.2, yc), m(d * 1.0, yc + 0.25), m(0, yc + 0.25)]
            sc.p.poly(pts, face, SIGN, z - 0.05)
            sc.p.bar(m(d * 0.15, yc), m(d * 0.85, yc), sc.px(0.06, s), inner)

    def _signal_head(self, m, s, xc, yc, z) -> None:
        """A traffic light's housing with one of its three lamps lit."""
        sc = self.scene
        look = sc.look
        sc.p.poly([m(xc - 0.17, yc - 0.48), m(xc + 0.17, yc - 0.48), m(xc + 0.17, yc + 0.48),
                   m(xc - 0.17, yc + 0.48)], sc.jit(look.light_housing, 0.05), LIGHT, z - 0.05)
        on = int(sc.rng.integers(3))
        lamps = ((1.0, 0.15, 0.1), (1.0, 0.7, 0.1), (0.2, 1.0, 0.45))
        for k, col in enumerate(lamps):
            y = yc + 0.3 - 0.3 * k
            lit = k == on
            c = col if lit else shade(col, 0.25)
            sc.p.ellipse(m(xc, y), (0.1 * s, 0.1 * s), c, emit=1.5 if lit else 0.0)

    def traffic_light_pole(self, x, z) -> None:
        """A pole with a signal head, and sometimes a mast arm with a second one over the road."""
        sc = self.scene
        hgt = sc.u(2.8, 4.5)
        m, s = self._pole(x, z, hgt, 0.14, sc.g.furniture_scale)
        self._signal_head(m, s, 0.0, hgt - 0.3, z)
        if sc.rng.random() < 0.5:           # a mast arm with a second head over the road
            d = -math.copysign(1.0, x) * sc.u(2.0, 4.5)
            y = hgt + sc.u(0.6, 1.5)
            sc.p.bar(m(0, hgt), m(0, y), sc.px(0.14, s), sc.jit(sc.look.pole, 0.05), POLE, z)
            sc.p.bar(m(0, y), m(d, y), sc.px(0.1, s), sc.jit(sc.look.pole, 0.05), POLE, z)
            self._signal_head(m, s, d, y - 0.55, z)

    def street_lamp(self, x, z, side) -> None:
        """A tall pole with an arm over the road; when lamps are on it glows and lights the ground."""
        sc = self.scene
        hgt = sc.u(6.0, 9.0)
        m, s = self._pole(x, z, hgt, 0.2)
        d = -side * sc.u(1.2, 2.5)
        sc.p.bar(m(0, hgt), m(d, hgt + 0.3), sc.px(0.12, s), sc.jit(sc.look.pole, 0.05), POLE, z)
        head = [m(d - 0.35, hgt + 0.15), m(d + 0.35, hgt + 0.15), m(d + 0.3, hgt + 0.4), m(d - 0.3, hgt + 0.4)]
        sc.p.poly(head, shade(sc.look.pole, 0.8), POLE, z)
        if sc.look.lamps > 0:
            u, v = m(d, hgt + 0.15)
            sc.p.ellipse((u, v), (0.3 * s, 0.12 * s + 0.5), sc.look.lamp_color, emit=3.0 * sc.look.lamps)
            sc.p.lamps.append((u, v, hgt * s, sc.look.lamps))


class People:
    """Pedestrians (alone or in groups, some on the zebra crossing), riders and parked two-wheelers."""

    def __init__(self, scene: _Scene):
        self.scene = scene

    def plan(self) -> None:
        """Pedestrians on the sidewalks or the zebra crossing, riders near the kerb, parked bikes."""
        sc = self.scene
        lay, rh = sc.lay, sc.road_half
        for _ in range(self._count(lay.persons)):
            side = sc.pick((-1.0, 1.0))
            if sc.street.zebra_z is not None and sc.rng.random() < 0.25:
                x, z = sc.u(-rh, rh), sc.street.zebra_z + sc.u(0.3, 2.7)
            else:
                x, z = side * (rh + sc.u(0.5, sc.sw - 0.3)), sc.u(3, sc.g.person_far)
            group = 1 if sc.rng.random() < 0.7 else int(sc.rng.integers(2, 4))
            for g in range(group):
                xx, zz = x + g * sc.u(0.5, 0.8), z + sc.u(-0.5, 0.5)
                sc.add(zz, lambda xx=xx, zz=zz: self.person(xx, zz))
        for _ in range(self._count(lay.riders)):
            side = 1.0 if sc.rng.random() < 0.75 else -1.0
            x, z = side * (rh - sc.u(0.6, 1.6)), sc.u(4, sc.g.rider_far)
            moto = sc.rng.random() < 0.45
            sc.add(z, lambda x=x, z=z, m=moto: self.two_wheeler(x, z, m, rider=True))
        for _ in range(self._count(lay.parked_bikes)):
            side = sc.pick((-1.0, 1.0))
            x, z = side * (sc.xs - sc.u(0.4, 1.0)), sc.u(3, sc.g.parked_bike_far)
            moto = sc.rng.random() < 0.4
            sc.add(z, lambda x=x, z=z, m=moto: self.two_wheeler(x, z, m, rider=False))

    def _count(self, lo_hi: tuple[int, int]) -> int:
        """How many of a family a scene has: the layout's range scaled by the geometry's ``crowd``."""
        sc = self.scene
        c = sc.g.crowd
        return int(sc.rng.integers(round(lo_hi[0] * c), round(lo_hi[1] * c) + 1))

    def _wide(self, m):
        """The sprite map ``m`` with its horizontal offsets scaled by the geometry's ``body_width``."""
        bw = self.scene.g.body_width
        return m if bw == 1.0 else (lambda a, b: m(a * bw, b))

    def person(self, x, z) -> None:
        """A pedestrian, walking (side view) or standing (front or back view)."""
        sc = self.scene
        look = sc.look
        m, s = sc.sprite(x, z)
        m = self._wide(m)
        s_w = s * sc.g.body_width        # stroke widths follow the body's width
        hgt = sc.u(1.55, 1.95)
        skin = sc.jit(sc.pick(look.skins), 0.05)
        shirt, pants = sc.jit(sc.pick(look.clothes)), sc.jit(sc.pick(look.clothes))
        lw = sc.px(0.13, s_w)
        hip, sh = 0.5 * hgt, 0.81 * hgt
        if sc.rng.random() < 0.5:     # walking, seen from the side
            d = sc.pick((-1, 1))
            st = sc.u(0.1, 0.3)
            for a in (-st, st):
                sc.p.bar(m(0, hip), m(a, 0.03), lw, pants, PERSON, z)
            sc.p.poly([m(-0.13, hip), m(0.13, hip), m(0.14, sh), m(-0.14, sh)], shirt, PERSON, z)
            sc.p.bar(m(0, sh - 0.03), m(-d * st * 0.8, hip + 0.02), sc.px(0.09, s_w), shade(shirt, 0.9), PERSON, z)
        else:                           # standing, facing toward or away from the camera
            for a in (-0.1, 0.1):
                sc.p.bar(m(a, hip), m(a * 1.2, 0.03), lw, pants, PERSON, z)
            sc.p.poly([m(-0.18, hip - 0.03), m(0.18, hip - 0.03), m(0.22, sh), m(-0.22, sh)], shirt, PERSON, z)
            for a in (-1, 1):
                sc.p.bar(m(a * 0.21, sh - 0.03), m(a * 0.25, hip), sc.px(0.09, s_w), shade(shirt, 0.9), PERSON, z)
        r = 0.075 * hgt
        sc.p.ellipse(m(0, sh + r * 1.05), (r * 0.85 * s, r * s), skin, PERSON, z)
        sc.p.ellipse(m(0, sh + r * 1.45), (r * 0.8 * s, r * 0.55 * s), shade(sc.pick(look.clothes), 0.5))

    def two_wheeler(self, x, z, moto: bool, rider: bool) -> None:
        """A bicycle or motorcycle (side or rear view), optionally with its rider."""
        sc = self.scene
        look = sc.look
        m, s = sc.sprite(x, z)
        s_w = s * sc.g.body_width        # frame and tyre strokes follow the body's width
        cls = MOTORCYCLE if moto else BICYCLE
        frame = sc.jit(sc.pick(look.motorcycles if moto else look.bicycles))
        tyre = look.tyre
        side_view = (not rider) or sc.rng.random() < 0.5
        d = sc.pick((-1, 1))
        if side_view:
            r, half = (0.32, 0.72) if moto else (0.34, 0.52)
            tw = sc.px(0.1 if moto else 0.05, s_w)
            sc.p.label_only(_outline(m, d, half, r, 0.98 if moto else 0.9), cls, z)
            for a in (-half, half):
                sc.p.ellipse(m(a * d, r), (r * s, r * s), tyre, cls, z, thickness=tw)
            if moto:
                body = [m(-0.62 * d, 0.45), m(0.45 * d, 0.45), m(0.55 * d, 0.85), m(0.1 * d, 0.98),
                        m(-0.2 * d, 0.88), m(-0.72 * d, 0.82)]
                sc.p.poly(body, frame, cls, z)
                sc.p.bar(m(0.5 * d, 0.85), m(0.62 * d, 1.08), sc.px(0.05, s_w), tyre, cls, z)
                seat, bars = (-0.2, 0.92), (0.6, 1.08)
            else:
                bb, seat, head, bars = (0.0, 0.3), (-0.18, 0.9), (0.4, 0.86), (0.44, 1.0)
                lw = sc.px(0.04, s_w)
                pts = {"r": (-half, r), "f": (half, r), "bb": bb, "s": seat, "h": head}
                for a, b in (("r", "bb"), ("r", "s"), ("s", "bb"), ("bb", "h"), ("s", "h"), ("h", "f")):
                    (ax, ay), (bx, by) = pts[a], pts[b]
                    sc.p.bar(m(ax * d, ay), m(bx * d, by), lw, frame, cls, z)
                sc.p.bar(m(head[0] * d, head[1]), m(bars[0] * d, bars[1]), lw, frame, cls, z)
            if rider:
                self._rider_side(m, s, z, d, seat, bars)
        else:
            rw = 0.08 if moto else 0.035
            hb = 0.38 if moto else 0.3
            sc.p.label_only([m(-rw, 0), m(rw, 0), m(hb, 1.02), m(-hb, 1.02)], cls, z)
            sc.p.poly([m(-rw, 0), m(rw, 0), m(rw, 0.66), m(-rw, 0.66)], tyre, cls, z)
            sc.p.bar(m(-hb, 1.02), m(hb, 1.02), sc.px(0.05, s_w), frame, cls, z)
            if moto:
                sc.p.poly([m(-0.24, 0.45), m(0.24, 0.45), m(0.2, 0.9), m(-0.2, 0.9)], frame, cls, z)
                sc.p.ellipse(m(0, 0.62), (0.07 * s, 0.04 * s), (1.0, 0.1, 0.05), emit=1.5 * max(sc.look.lamps, 0.3))
            self._rider_rear(m, s, z, hb, moto)

    def _rider_side(self, m, s, z, d, seat, bars) -> None:
        """A rider seen from the side, seated with hands on the handlebars."""
        sc = self.scene
        look = sc.look
        shirt, pants = sc.jit(sc.pick(look.clothes)), sc.jit(sc.pick(look.clothes))
        s_w = s * sc.g.body_width
        lw = sc.px(0.14, s_w)
        hip = (seat[0] * d, seat[1] + 0.05)
        knee = ((seat[0] + 0.3) * d, seat[1] - 0.3)
        foot = ((seat[0] + 0.22) * d, 0.3)
        shoulder = ((seat[0] + 0.22) * d, seat[1] + 0.55)
        sc.p.bar(m(*hip), m(*knee), lw, pants, RIDER, z)
        sc.p.bar(m(*knee), m(*foot), lw, pants, RIDER, z)
        sc.p.bar(m(*hip), m(*shoulder), sc.px(0.3, s_w), shirt, RIDER, z)
        sc.p.bar(m(*shoulder), m(bars[0] * d, bars[1]), sc.px(0.08, s_w), shade(shirt, 0.9), RIDER, z)
        head = (shoulder[0] + 0.05 * d, shoulder[1] + 0.17)
        sc.p.ellipse(m(*head), (0.11 * s, 0.12 * s), sc.jit(sc.pick(look.clothes + look.skins)), RIDER, z)

    def _rider_rear(self, m, s, z, hb, moto) -> None:
        """A rider seen from behind (helmet on a motorcycle)."""
        sc = self.scene
        look = sc.look
        shirt, pants = sc.jit(sc.pick(look.clothes)), sc.jit(sc.pick(look.clothes))
        s_w = s * sc.g.body_width
        m = self._wide(m)
        lw = sc.px(0.13, s_w)
        for a in (-1, 1):
            sc.p.bar(m(a * 0.12, 0.95), m(a * 0.2, 0.3), lw, pants, RIDER, z)
        sc.p.poly([m(-0.17, 0.92), m(0.17, 0.92), m(0.21, 1.45), m(-0.21, 1.45)], shirt, RIDER, z)
        for a in (-1, 1):
            sc.p.bar(m(a * 0.2, 1.4), m(a * hb * 0.9, 1.04), sc.px(0.08, s_w), shade(shirt, 0.9), RIDER, z)
        helmet = sc.jit(sc.pick(look.clothes)) if moto else sc.jit(sc.pick(look.skins))
        sc.p.ellipse(m(0, 1.58), (0.11 * s, 0.12 * s), helmet, RIDER, z)
