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

The package follows the generator's seams: ``looks`` (how a domain looks) and ``layout`` (what
a domain's scenes contain, per generator version, and :func:`domain_style`); ``raster`` (camera
and painter) and ``scene`` (one scene's state and primitives, and the drawing order) with the
parts it draws: ``street`` (sky, skyline, road surface), ``roadside``, ``objects`` (street
furniture, people) and ``vehicles``; ``develop`` (texture, light, haze, camera pipeline) and
``render`` (one image); ``paths``, ``write`` and ``preview`` (the benchmark on disk).
"""

from .classes import (
    BICYCLE, BUILDING, BUS, CAR, FENCE, LIGHT, MOTORCYCLE, PERSON, POLE, RIDER, ROAD, SIDEWALK, SIGN, SKY,
    TERRAIN, TRAIN, TRUCK, VEGETATION, VOID, WALL,
)
from .layout import (
    DOMAINS, GEOMETRY, SOURCE_LAYOUT, SYNTH_VERSION, SYNTH_VERSIONS, TARGET_LAYOUT, DomainStyle, Geometry, Layout,
    domain_style, geometry,
)
from .looks import CAMERA_FULL_LOOK, CAMERA_LOOK, CAMERA_STRENGTH, NIGHT_LOOK, SOURCE_LOOK, Look, blend_looks
from .paths import CITIES, SEQUENCES, benchmark_paths
from .preview import write_preview
from .render import MAX_SIZE, MIN_SIZE, image_seed, render_scene
from .scene import _Scene as _Scene  # not public API; the tests draw single objects into a scene
from .write import SYNTH_FORMAT, write_benchmark

__all__ = [
    "DOMAINS", "CITIES", "SEQUENCES", "SYNTH_VERSION", "SYNTH_VERSIONS", "Geometry", "GEOMETRY", "geometry",
    "SYNTH_FORMAT", "Look", "Layout", "DomainStyle", "MIN_SIZE", "MAX_SIZE",
    "SOURCE_LOOK", "CAMERA_LOOK", "CAMERA_FULL_LOOK", "CAMERA_STRENGTH", "NIGHT_LOOK", "SOURCE_LAYOUT", "TARGET_LAYOUT",
    "blend_looks", "domain_style", "render_scene", "image_seed", "benchmark_paths", "write_benchmark", "write_preview",
    "ROAD", "SIDEWALK", "BUILDING", "WALL", "FENCE", "POLE", "LIGHT", "SIGN", "VEGETATION", "TERRAIN", "SKY",
    "PERSON", "RIDER", "CAR", "TRUCK", "BUS", "TRAIN", "MOTORCYCLE", "BICYCLE", "VOID",
]
