"""How each domain looks: class palettes, lighting, texture strength and the camera pipeline.

A :class:`Look` is pure data. Colour lists of the same field have the same length in every look,
so looks blend field by field; ``gap`` scales the domain shift that way (see
:func:`prnseg.training.data.synthetic.layout.domain_style`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

RGB = tuple[float, float, float]


def _c(*rgb255: int) -> RGB:
    return tuple(v / 255.0 for v in rgb255)  # type: ignore[return-value]


def _cs(*colours: tuple[int, int, int]) -> tuple[RGB, ...]:
    return tuple(_c(*c) for c in colours)


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


def lerp(a, b, t: float):
    """Interpolate two numbers or two equally long (nested) tuples of numbers."""
    if isinstance(a, tuple):
        if len(a) != len(b):
            raise ValueError("looks to blend must have colour lists of the same length")
        return tuple(lerp(x, y, t) for x, y in zip(a, b))
    return float(a + (b - a) * t)


def blend_looks(a: Look, b: Look, t: float) -> Look:
    """Field-by-field interpolation (t may exceed 1 to exaggerate the gap)."""
    values = {f.name: lerp(getattr(a, f.name), getattr(b, f.name), t) for f in dataclasses.fields(Look)}
    return Look(**values)


def shade(color, k: float) -> RGB:
    """``color`` scaled by ``k`` (a lit or shaded face), kept in 0..1.5 so emissive parts can glow."""
    return tuple(float(min(max(c * k, 0.0), 1.5)) for c in color)  # type: ignore[return-value]


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
