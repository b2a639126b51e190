"""Label tables against cityscapesscripts, the reference implementation of the Cityscapes ids."""

import numpy as np
import pytest

from prnseg import labels as L

csl = pytest.importorskip("cityscapesscripts.helpers.labels", reason="cityscapesscripts not installed (dev extra)")


def _train_labels():
    return sorted((lab for lab in csl.labels if 0 <= lab.trainId < 255), key=lambda lab: lab.trainId)


def test_class_names_and_palette_match_cityscapesscripts():
    ref = _train_labels()
    assert [lab.trainId for lab in ref] == list(range(L.NUM_CLASSES))
    assert tuple(lab.name for lab in ref) == L.CITYSCAPES_CLASSES
    assert tuple(tuple(lab.color) for lab in ref) == L.CITYSCAPES_PALETTE


def test_labelid_to_trainid_matches_cityscapesscripts_for_every_id():
    for lab in csl.labels:
        if lab.id < 0:
            continue
        expected = lab.trainId if 0 <= lab.trainId < 255 else 255
        assert L.LABELID_TO_TRAINID.get(lab.id, 255) == expected, lab.name
        assert int(L.labelid_to_trainid(np.array([[lab.id]], np.uint8))[0, 0]) == expected


def test_trainid_to_labelid_round_trips():
    tids = np.arange(L.NUM_CLASSES, dtype=np.uint8)[None]
    assert np.array_equal(L.labelid_to_trainid(L.trainid_to_labelid(tids)), tids)
    assert L.trainid_to_labelid(np.array([255], np.uint8))[0] == 0
    for lid in L.trainid_to_labelid(tids)[0]:
        assert csl.id2label[int(lid)].trainId == L.labelid_to_trainid(np.array([lid]))[0]


SYNTHIA_TO_CITYSCAPES_NAME = {"pedestrian": "person"}


def test_synthia_table_agrees_with_cityscapes_names():
    for sid, tid in L.SYNTHIA_TO_TRAINID.items():
        name = L.SYNTHIA_CLASS_NAMES[sid]
        name = SYNTHIA_TO_CITYSCAPES_NAME.get(name, name)
        assert csl.name2label[name].trainId == tid, name
    # terrain, truck and train exist in SYNTHIA but are dropped by the reference protocol
    mapped = set(L.SYNTHIA_TO_TRAINID.values())
    assert mapped == set(L.SYNTHIA_16_CLASSES)
    assert {9, 14, 16}.isdisjoint(mapped)


def test_synthia_subsets_are_the_protocol_ones():
    names16 = {L.CITYSCAPES_CLASSES[i] for i in L.SYNTHIA_16_CLASSES}
    assert len(names16) == 16 and {"terrain", "truck", "train"}.isdisjoint(names16)
    names13 = {L.CITYSCAPES_CLASSES[i] for i in L.SYNTHIA_13_CLASSES}
    assert names16 - names13 == {"wall", "fence", "pole"}
    for tid in L.SYNTHIA_16_CLASSES:
        assert csl.trainId2label[tid].name == L.CITYSCAPES_CLASSES[tid]


def test_synthia_lut_handles_16_bit_ids():
    ids = np.array([[3, 4, 1000, 19, 0]], np.uint16)
    assert L.synthia_to_trainid(ids).tolist() == [[0, 1, 255, 15, 255]]


def test_colorize_uses_palette_and_black_for_ignore():
    rgb = L.colorize(np.array([[0, 13, 255]], np.uint8))
    assert rgb[0, 0].tolist() == [128, 64, 128]
    assert rgb[0, 1].tolist() == [0, 0, 142]
    assert rgb[0, 2].tolist() == [0, 0, 0]
