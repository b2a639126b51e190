"""Developing a drawn scene into a photograph: class textures, light, haze and the camera.

The drawn albedo is flat colour; texture signatures shared by both domains (so a model can
adapt), then the domain's light, haze and camera pipeline (saturation, contrast, vignette,
gamma, blur, sensor noise, JPEG) give each domain its appearance. The stages run in a fixed
order on one random stream, after the scene has been drawn from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

from .classes import BUILDING, FENCE, PERSON, POLE, ROAD, SIDEWALK, SIGN, SKY, TERRAIN, VEGETATION, VOID, WALL
from .looks import Look

if TYPE_CHECKING:
    from .scene import _Scene

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



def develop(scene: _Scene, rng: np.random.Generator) -> np.ndarray:
    """The drawn scene as a uint8 RGB photograph (its albedo map is developed in place)."""
    p, look = scene.p, scene.look
    m = p.w / 512.0               # the looks' pixel sizes are given at 512 px width
    _texture(p.img, p.lab, look, rng, m)
    _illuminate(scene, m)
    if look.haze > 0:
        _haze(scene)
    return _camera(p.img, look, scene.exposure, rng, m)


def _texture(img: np.ndarray, lab: np.ndarray, look: Look, rng: np.random.Generator, m: float) -> None:
    """Per-class grain, blobs and patches, plant colour variation and low-frequency light."""
    h, w = lab.shape
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


def _illuminate(scene: _Scene, m: float) -> None:
    """The scene's light (exposure, white balance, weather tint); at night pools of light under
    the street lamps; and glows around every light source."""
    p, look = scene.p, scene.look
    h, w = p.h, p.w
    img = p.img
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


def _haze(scene: _Scene) -> None:
    """Fade toward the haze colour with depth (aerial perspective)."""
    p, look = scene.p, scene.look
    img = p.img
    t = np.exp(-look.haze * np.minimum(p.dep, 400.0))
    t[p.lab == SKY] = 1.0                    # the sky's own gradient already fades to the horizon
    t = t[..., None]
    img[:] = img * t + np.array(look.haze_color, np.float32) * scene.exposure * (1 - t)


def _camera(img: np.ndarray, look: Look, exposure: float, rng: np.random.Generator, m: float) -> np.ndarray:
    """The camera's rendering: saturation, contrast, vignette, gamma, blur, noise, JPEG."""
    h, w = img.shape[:2]
    lum = img @ np.array([0.299, 0.587, 0.114], np.float32)
    img[:] = lum[..., None] + (img - lum[..., None]) * look.saturation
    img[:] = 0.5 * exposure + (img - 0.5 * exposure) * look.contrast
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
