"""The Cityscapes trainIds by name, as the drawers and the texture table use them."""

from __future__ import annotations

from prnseg.labels import IGNORE_INDEX, NUM_CLASSES

(ROAD, SIDEWALK, BUILDING, WALL, FENCE, POLE, LIGHT, SIGN, VEGETATION, TERRAIN, SKY, PERSON,
 RIDER, CAR, TRUCK, BUS, TRAIN, MOTORCYCLE, BICYCLE) = range(NUM_CLASSES)
VOID = IGNORE_INDEX

__all__ = [
    "ROAD", "SIDEWALK", "BUILDING", "WALL", "FENCE", "POLE", "LIGHT", "SIGN", "VEGETATION", "TERRAIN",
    "SKY", "PERSON", "RIDER", "CAR", "TRUCK", "BUS", "TRAIN", "MOTORCYCLE", "BICYCLE", "VOID",
]
