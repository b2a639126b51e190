"""What a scene contains, per domain and per generator version, and the style of each domain.

:class:`Layout` is the content shift between domains (horizon, road width, traffic, people),
independent of ``gap``; :class:`Geometry` is what a generator version changes for both domains
alike; :func:`domain_style` pairs a domain's look (blended by ``gap``) with its layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from prnseg.errors import ConfigError

from .looks import CAMERA_LOOK, NIGHT_LOOK, SOURCE_LOOK, Look, blend_looks

SYNTH_VERSION = 4
SYNTH_VERSIONS = (2, 3, 4)
DOMAINS = ("source", "target", "night")


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
    Version 4 goes further for the classes that still capped a target-trained model on version 3
    (people, riders, two-wheelers, poles): they stand nearer, are more numerous (``crowd``) and
    broader (``body_width``), so they cover enough pixels of a small image to be learnt.
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
    crowd: float = 1.0                 # multiplier on the number of people, riders and parked two-wheelers
    body_width: float = 1.0            # width multiplier of torsos, limbs and two-wheeler frames


GEOMETRY = {
    2: Geometry(person_far=40, rider_far=35, parked_bike_far=25, furniture_far=110, tree_far=100, lane_far=120,
                parked_far=90, furniture_spacing=(10, 28), furniture_scale=1.0, stroke_scale=1.0, min_stroke_px=1.0),
    3: Geometry(person_far=22, rider_far=20, parked_bike_far=16, furniture_far=45, tree_far=70, lane_far=80,
                parked_far=60, furniture_spacing=(7, 16), furniture_scale=1.5, stroke_scale=1.6, min_stroke_px=2.0),
    4: Geometry(person_far=14, rider_far=14, parked_bike_far=11, furniture_far=32, tree_far=60, lane_far=70,
                parked_far=50, furniture_spacing=(6, 12), furniture_scale=1.8, stroke_scale=2.0, min_stroke_px=2.0,
                crowd=1.5, body_width=1.4),
}


def geometry(version: int) -> Geometry:
    """The geometry of generator ``version``; a clear error for a version that does not exist."""
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

