"""Datasets in their real layouts, transforms, UDA pairing and Rare Class Sampling, on small
hand-made trees of real PNG files."""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from prnseg.errors import ConfigError, DatasetError, ImageReadError
from prnseg.image_io import encode_palette_png
from prnseg.training.data import rcs as rcs_mod
from prnseg.training.data.datasets import (
    ACDCDataset,
    CityscapesDataset,
    DarkZurichDataset,
    FolderDataset,
    GTA5Dataset,
    SynthiaDataset,
    build_dataset,
    read_trainids,
)
from prnseg.training.data.rcs import CACHE_NAME, RareClassSampler, user_cache_path
from prnseg.training.data.transforms import (
    IMG_MEAN,
    IMG_STD,
    Compose,
    Pad,
    RandomCrop,
    RandomFlip,
    Resize,
    build_test_pipeline,
    build_train_pipeline,
    rescale_size,
)
from prnseg.training.data.uda import ResumableSampler, UDADataset

H, W = 32, 64
# Cityscapes labelIds and the trainIds they must become (unknown ids -> 255).
LABEL_IDS = np.array([7, 8, 11, 26, 33, 0, 1, 34], np.uint8)
LABEL_IDS_AS_TRAIN = np.array([0, 1, 2, 13, 18, 255, 255, 255], np.uint8)


def rgb(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def stripes(values: np.ndarray, h: int = H, w: int = W) -> np.ndarray:
    """A label whose columns cycle through ``values``."""
    return np.tile(values[np.arange(w) % len(values)], (h, 1)).astype(values.dtype)


def write_rgb(path: Path, img: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img[..., ::-1].copy())
    return path


def write_gray(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr)
    return path


def expected_img(img: np.ndarray) -> np.ndarray:
    norm = (img.astype(np.float32) - np.float32(IMG_MEAN)) / np.float32(IMG_STD)
    return norm.transpose(2, 0, 1)


def one_line(exc: pytest.ExceptionInfo, *parts) -> str:
    msg = str(exc.value)
    assert "\n" not in msg, msg
    for p in parts:
        assert str(p) in msg, (p, msg)
    return msg


# ---------------------------------------------------------------------------- trees

def make_gta(root: Path, n: int = 3) -> Path:
    for i in range(n):
        write_rgb(root / "images" / f"{i:05d}.png", rgb(i))
        write_gray(root / "labels" / f"{i:05d}.png", stripes(np.roll(LABEL_IDS, i)))
    return root


def make_cityscapes(root: Path) -> Path:
    for split, city in (("train", "aachen"), ("train", "bremen"), ("val", "frankfurt")):
        base = f"{city}_000000_000019"
        write_rgb(root / "leftImg8bit" / split / city / f"{base}_leftImg8bit.png", rgb(len(city)))
        write_gray(root / "gtFine" / split / city / f"{base}_gtFine_labelIds.png",
                   stripes(LABEL_IDS))
    # aachen also has the trainIds file, which wins over the labelIds one
    write_gray(root / "gtFine/train/aachen/aachen_000000_000019_gtFine_labelTrainIds.png",
               stripes(np.array([5, 6, 255, 18, 19], np.uint8)))
    return root


def make_dark_zurich(root: Path) -> Path:
    for split, seq in (("train", "GOPR0351"), ("val", "GOPR0356")):
        for f in (0, 7):
            stem = f"{seq}_frame_{f:06d}"
            write_rgb(root / "rgb_anon" / split / "night" / seq / f"{stem}_rgb_anon.png", rgb(f))
            if split == "val":
                write_gray(root / "gt" / split / "night" / seq / f"{stem}_gt_labelTrainIds.png",
                           stripes(np.array([f, 10, 255], np.uint8)))
    return root


def make_acdc(root: Path, conditions=("fog", "snow")) -> Path:
    for k, cond in enumerate(conditions):
        seq = f"GP01047{k}"
        stem = f"{seq}_frame_000041"
        write_rgb(root / "rgb_anon" / cond / "train" / seq / f"{stem}_rgb_anon.png", rgb(k))
        write_gray(root / "gt" / cond / "train" / seq / f"{stem}_gt_labelTrainIds.png",
                   stripes(np.array([k, 8, 255], np.uint8)))
    return root


# ---------------------------------------------------------------------------- datasets

def test_gta_reads_images_and_maps_label_ids(tmp_path):
    root = make_gta(tmp_path / "gta")
    ds = build_dataset("gta", root)
    assert isinstance(ds, GTA5Dataset) and len(ds) == 3 and ds.has_labels
    item = ds[1]
    assert item["name"] == "images/00001.png"
    assert item["ori_shape"] == (H, W)
    assert item["img"].dtype == torch.float32 and item["img"].shape == (3, H, W)
    np.testing.assert_allclose(item["img"].numpy(), expected_img(rgb(1)), rtol=1e-6, atol=1e-5)
    assert item["gt"].dtype == torch.int64
    np.testing.assert_array_equal(item["gt"].numpy(), stripes(np.roll(LABEL_IDS_AS_TRAIN, 1)))
    img, gt = ds.load_raw(2)
    assert img.dtype == np.uint8 and gt.dtype == np.uint8
    np.testing.assert_array_equal(img, rgb(2))
    np.testing.assert_array_equal(gt, stripes(np.roll(LABEL_IDS_AS_TRAIN, 2)))


def test_gta_indexed_png_labels_decode_to_their_indices(tmp_path):
    """Real GTA5 labels are palette PNGs, which OpenCV expands to colours."""
    root = make_gta(tmp_path / "gta", n=1)
    # Cityscapes-like palette: ids 0-4 share black (all ignored), the others are distinct.
    palette = [(0, 0, 0)] * 5 + [(i, 255 - i, (7 * i) % 256) for i in range(5, 256)]
    label = stripes(LABEL_IDS)
    (root / "labels/00000.png").write_bytes(encode_palette_png(label, palette))
    np.testing.assert_array_equal(GTA5Dataset(root).load_raw(0)[1], stripes(LABEL_IDS_AS_TRAIN))
    Image = pytest.importorskip("PIL.Image")
    np.testing.assert_array_equal(np.asarray(Image.open(root / "labels/00000.png")), label)
    # a colour shared by ids of different classes cannot be decoded
    bad = [(0, 0, 0)] * 256
    (root / "labels/00000.png").write_bytes(encode_palette_png(label, bad))
    with pytest.raises(DatasetError) as e:
        GTA5Dataset(root).load_raw(0)
    one_line(e, root / "labels/00000.png", "palette")


def test_gta_prefers_converted_trainids_and_split_lists(tmp_path):
    root = make_gta(tmp_path / "gta")
    write_gray(root / "labels/00000_labelTrainIds.png", np.full((H, W), 9, np.uint8))
    ds = GTA5Dataset(root)
    assert len(ds) == 3  # the converted label is not mistaken for an image
    assert (ds.load_raw(0)[1] == 9).all()
    (root / "val.txt").write_text("# held-out\n00002\n00000.png\n")
    val = build_dataset("gta", root, split="val")
    assert val.names == ["images/00002.png", "images/00000.png"]
    with pytest.raises(DatasetError) as e:
        build_dataset("gta", root, split="test")
    one_line(e, root / "test.txt")
    (root / "val.txt").write_text("00009\n")
    with pytest.raises(DatasetError) as e:
        build_dataset("gta", root, split="val")
    one_line(e, root / "val.txt", "00009")


def test_cityscapes_trainids_and_labelids_fallback(tmp_path):
    root = make_cityscapes(tmp_path / "cityscapes")
    ds = build_dataset("cityscapes", root, split="train")
    assert isinstance(ds, CityscapesDataset)
    assert ds.names == ["leftImg8bit/train/aachen/aachen_000000_000019_leftImg8bit.png",
                        "leftImg8bit/train/bremen/bremen_000000_000019_leftImg8bit.png"]
    # trainIds file: kept as is, values outside 0..18 become 255
    np.testing.assert_array_equal(ds.load_raw(0)[1],
                                  stripes(np.array([5, 6, 255, 18, 255], np.uint8)))
    # only labelIds: mapped through the LUT
    np.testing.assert_array_equal(ds[1]["gt"].numpy(), stripes(LABEL_IDS_AS_TRAIN))
    val = CityscapesDataset(root, split="val")
    assert len(val) == 1 and val.label_name(0).endswith("_gtFine_labelIds.png")


def test_label_mapping_matches_cityscapesscripts(tmp_path):
    labels = pytest.importorskip("cityscapesscripts.helpers.labels")
    ids = np.arange(34, dtype=np.uint8)[None]
    path = write_gray(tmp_path / "l.png", ids)
    got = read_trainids(path, "labelIds")[0]
    for lab in labels.labels:
        if 0 <= lab.id < 34:
            expect = lab.trainId if 0 <= lab.trainId < 19 else 255
            assert got[lab.id] == expect, lab.name


def test_synthia_16bit_multichannel_labels(tmp_path):
    root = tmp_path / "synthia"
    ids = np.array([3, 4, 2, 21, 1, 9, 16, 0, 10, 19], np.uint16)
    train = np.array([0, 1, 2, 3, 10, 7, 255, 255, 11, 15], np.uint8)
    lab = np.zeros((H, W, 3), np.uint16)
    lab[..., 2] = stripes(ids)              # class id: OpenCV's last channel
    lab[..., 1] = 1000 + stripes(ids)       # instance ids: must be ignored
    lab[..., 0] = 7
    write_rgb(root / "RGB/0000000.png", rgb(5))
    write_gray(root / "GT/LABELS/0000000.png", lab)
    assert cv2.imread(str(root / "GT/LABELS/0000000.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    ds = build_dataset("synthia", root)
    assert isinstance(ds, SynthiaDataset)
    np.testing.assert_array_equal(ds[0]["gt"].numpy(), stripes(train).astype(np.int64))


def test_dark_zurich_val_labels_and_unlabelled_train(tmp_path):
    root = make_dark_zurich(tmp_path / "dark_zurich")
    val = build_dataset("darkzurich", root, split="val")
    assert isinstance(val, DarkZurichDataset) and len(val) == 2
    assert val.name(1) == "rgb_anon/val/night/GOPR0356/GOPR0356_frame_000007_rgb_anon.png"
    np.testing.assert_array_equal(val.load_raw(1)[1], stripes(np.array([7, 10, 255], np.uint8)))
    with pytest.raises(DatasetError) as e:
        DarkZurichDataset(root, split="train")
    one_line(e, root / "gt/train/night", "not found", "load_labels=False")
    (root / "gt/train/night/GOPR0351").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        DarkZurichDataset(root, split="train")
    one_line(e, root / "rgb_anon/train/night/GOPR0351/GOPR0351_frame_000000_rgb_anon.png",
             root / "gt/train/night/GOPR0351/GOPR0351_frame_000000_gt_labelTrainIds.png",
             "_gt_labelIds.png", "1 more")
    shutil.rmtree(root / "gt/train")
    train = DarkZurichDataset(root, split="train", load_labels=False)
    assert len(train) == 2 and "gt" not in train[0] and train.load_raw(0)[1] is None
    # labelIds fallback
    gt = root / "gt/val/night/GOPR0356"
    (gt / "GOPR0356_frame_000000_gt_labelTrainIds.png").unlink()
    write_gray(gt / "GOPR0356_frame_000000_gt_labelIds.png", stripes(LABEL_IDS))
    np.testing.assert_array_equal(DarkZurichDataset(root, "val").load_raw(0)[1],
                                  stripes(LABEL_IDS_AS_TRAIN))


def test_acdc_conditions(tmp_path):
    root = make_acdc(tmp_path / "acdc")
    ds = build_dataset("acdc", root, split="train")
    assert isinstance(ds, ACDCDataset) and ds.conditions == ("fog", "snow") and len(ds) == 2
    assert ds.name(1) == "rgb_anon/snow/train/GP010471/GP010471_frame_000041_rgb_anon.png"
    np.testing.assert_array_equal(ds.load_raw(1)[1], stripes(np.array([1, 8, 255], np.uint8)))
    fog = ACDCDataset(root, conditions=["fog"])
    assert len(fog) == 1 and fog.name(0).startswith("rgb_anon/fog/")
    with pytest.raises(DatasetError) as e:
        ACDCDataset(root, conditions=["rain"])
    one_line(e, root / "rgb_anon/rain/train", "not found")
    with pytest.raises(DatasetError) as e:
        ACDCDataset(root, split="val")
    one_line(e, root / "rgb_anon", "'val'")


def test_folder_with_and_without_labels(tmp_path):
    root = tmp_path / "folder"
    write_rgb(root / "images/a/x.png", rgb(1))
    write_rgb(root / "images/y.jpg", rgb(2))
    write_gray(root / "labels/a/x.png", stripes(np.array([0, 18, 19, 200], np.uint8)))
    write_gray(root / "labels/y.png", stripes(np.array([3], np.uint8)))
    ds = build_dataset("folder", root)
    assert isinstance(ds, FolderDataset) and ds.names == ["images/a/x.png", "images/y.jpg"]
    np.testing.assert_array_equal(ds[0]["gt"].numpy(),
                                  stripes(np.array([0, 18, 255, 255], np.int64)))
    assert ds[1]["img"].shape == (3, H, W)
    ids = FolderDataset(root, label_format="labelIds")
    np.testing.assert_array_equal(ids.load_raw(1)[1], np.full((H, W), 255, np.uint8))

    shutil.rmtree(root / "labels")
    plain = FolderDataset(root)
    assert not plain.has_labels and "gt" not in plain[0] and plain.load_raw(0)[1] is None
    with pytest.raises(DatasetError) as e:
        FolderDataset(root, label_dir="labels")
    one_line(e, root / "labels", "not found")
    with pytest.raises(ConfigError):
        FolderDataset(root, label_format="colour")


def test_folder_images_in_root_and_suffix_mapping(tmp_path):
    root = tmp_path / "flat"
    write_rgb(root / "s1_leftImg8bit.png", rgb(3))
    write_rgb(root / "other.png", rgb(4))
    write_gray(root / "labels/s1_gtFine_labelIds.png", stripes(LABEL_IDS))
    ds = FolderDataset(root, img_suffix="_leftImg8bit", label_suffix="_gtFine_labelIds.png",
                       label_format="labelIds")
    assert ds.names == ["s1_leftImg8bit.png"]  # label folder not listed as images
    np.testing.assert_array_equal(ds.load_raw(0)[1], stripes(LABEL_IDS_AS_TRAIN))
    unlabelled = FolderDataset(root, load_labels=False)
    assert unlabelled.names == ["other.png", "s1_leftImg8bit.png"]


LAYOUTS = {
    "gta": (make_gta, "gta", {}, ["labels"]),
    "cityscapes": (make_cityscapes, "cityscapes", {"split": "train"}, ["gtFine"]),
    "darkzurich": (make_dark_zurich, "darkzurich", {"split": "val"}, ["gt"]),
    "acdc": (make_acdc, "acdc", {}, ["gt"]),
    "folder": (lambda r: make_gta(r), "folder", {}, ["labels"]),
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_load_labels_false_never_needs_labels(tmp_path, layout, monkeypatch):
    make, kind, kw, label_dirs = LAYOUTS[layout]
    root = make(tmp_path / layout)
    labelled = build_dataset(kind, root, **kw)
    for d in label_dirs:
        shutil.rmtree(root / d)

    def no_label_reads(*a, **k):
        raise AssertionError("a label was read")

    monkeypatch.setattr("prnseg.training.data.datasets.read_trainids", no_label_reads)
    ds = build_dataset(kind, root, load_labels=False, pipeline=build_train_pipeline(
        size=(24, 48), crop=(16, 16)), **kw)
    assert ds.names == labelled.names and not ds.has_labels
    item = ds[0]
    assert set(item) == {"img", "name", "ori_shape"} and item["img"].shape == (3, 16, 16)
    with pytest.raises(DatasetError):
        ds.load_label(0)


def test_synthia_load_labels_false(tmp_path):
    root = tmp_path / "synthia"
    write_rgb(root / "RGB/0000001.png", rgb(1))
    ds = SynthiaDataset(root, load_labels=False)
    assert len(ds) == 1 and "gt" not in ds[0]


# ---------------------------------------------------------------------------- errors

def test_missing_root_and_empty_folder(tmp_path):
    with pytest.raises(DatasetError) as e:
        GTA5Dataset(tmp_path / "gta")
    one_line(e, tmp_path / "gta", "not found", "images/ and labels/")
    (tmp_path / "gta").mkdir()
    with pytest.raises(DatasetError) as e:
        GTA5Dataset(tmp_path / "gta")
    one_line(e, tmp_path / "gta" / "images", "not found")
    (tmp_path / "gta/images").mkdir()
    (tmp_path / "gta/images/readme.txt").write_text("no images here")
    with pytest.raises(DatasetError) as e:
        GTA5Dataset(tmp_path / "gta")
    one_line(e, tmp_path / "gta" / "images", "*.png")
    (tmp_path / "cs/leftImg8bit/train/aachen").mkdir(parents=True)
    with pytest.raises(DatasetError) as e:
        CityscapesDataset(tmp_path / "cs")
    one_line(e, tmp_path / "cs/leftImg8bit/train", "_leftImg8bit.png")
    with pytest.raises(DatasetError) as e:
        CityscapesDataset(tmp_path / "cs", split="val")
    one_line(e, tmp_path / "cs/leftImg8bit/val", "not found")
    with pytest.raises(ConfigError) as e:
        build_dataset("mapillary", tmp_path)
    one_line(e, "mapillary", "cityscapes")


def test_image_without_label(tmp_path):
    root = make_gta(tmp_path / "gta")
    (root / "labels/00001.png").unlink()
    with pytest.raises(DatasetError) as e:
        GTA5Dataset(root)
    one_line(e, root / "images/00001.png", root / "labels/00001.png")
    shutil.rmtree(root / "labels")
    with pytest.raises(DatasetError) as e:
        GTA5Dataset(root)
    one_line(e, root / "labels", "not found")


def test_corrupt_png_raises_one_line_error(tmp_path):
    root = make_gta(tmp_path / "gta")
    bad = root / "images/00001.png"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    ds = GTA5Dataset(root, pipeline=build_train_pipeline(size=None, crop=16))
    ds[0]
    with pytest.raises(ImageReadError) as e:
        ds[1]
    one_line(e, bad)
    bad_label = root / "labels/00002.png"
    bad_label.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageReadError) as e:
        ds.load_raw(2)
    one_line(e, bad_label)


def test_label_size_mismatch(tmp_path):
    root = make_gta(tmp_path / "gta")
    write_gray(root / "labels/00002.png", np.full((H // 2, W // 2), 7, np.uint8))
    ds = GTA5Dataset(root)
    with pytest.raises(DatasetError) as e:
        ds[2]
    one_line(e, root / "labels/00002.png", root / "images/00002.png", f"{W}x{H}",
             f"{W // 2}x{H // 2}")


# ---------------------------------------------------------------------------- transforms

def test_resize_follows_mmseg_rescale():
    assert rescale_size(2048, 1024, (1024, 512)) == (1024, 512)
    assert rescale_size(1914, 1052, (1280, 720)) == (1280, 704)  # long edge bound wins
    assert rescale_size(100, 300, (1024, 512)) == (341, 1024)    # portrait: long edge <= 1024
    assert rescale_size(64, 32, (1280, 720)) == (1280, 640)      # it upsamples too
    img = np.zeros((100, 200, 3), np.uint8)
    img[:, 101:] = 200
    gt = np.zeros((100, 200), np.uint8)
    gt[:, 101:] = 7
    out = Resize((80, 120))({"img": img, "gt": gt}, np.random.default_rng(0))  # x0.6
    assert out["img"].shape == (60, 120, 3) and out["gt"].shape == (60, 120)
    assert set(np.unique(out["gt"])) == {0, 7}                      # nearest for labels
    assert len(np.unique(out["img"])) > 2                            # bilinear for images
    exact = Resize((30, 70), keep_ratio=False)({"img": img, "gt": gt}, None)
    assert exact["img"].shape == (70, 30, 3) and exact["gt"].shape == (70, 30)


def _two_class_label() -> np.ndarray:
    gt = np.zeros((10, 100), np.uint8)
    gt[:, 80:] = 1
    gt[:, :3] = 255
    return gt


def _balanced(crop: np.ndarray, ratio: float = 0.75) -> bool:
    v, c = np.unique(crop, return_counts=True)
    c = c[v != 255]
    return len(c) > 1 and c.max() / c.sum() < ratio


def test_random_crop_cat_max_ratio_and_determinism():
    gt = _two_class_label()
    img = np.dstack([gt] * 3)
    sample = {"img": img, "gt": gt}
    strict = RandomCrop((10, 20), cat_max_ratio=0.75)
    free = RandomCrop((10, 20), cat_max_ratio=1.0)
    seeds = range(300)
    strict_ok = np.mean([_balanced(strict(sample, np.random.default_rng(s))["gt"]) for s in seeds])
    free_ok = np.mean([_balanced(free(sample, np.random.default_rng(s))["gt"]) for s in seeds])
    # 9 of 81 offsets are balanced: ~11 % for one draw, 1 - (72/81)^11 ~ 73 % for 11 draws
    assert free_ok < 0.2 and strict_ok > 0.55
    a = strict(sample, np.random.default_rng(5))
    b = strict(sample, np.random.default_rng(5))
    np.testing.assert_array_equal(a["gt"], b["gt"])
    assert len({strict(sample, np.random.default_rng(s))["gt"].tobytes() for s in range(8)}) > 1
    assert sample["gt"] is gt and (gt == _two_class_label()).all()  # input untouched
    # without a label (UDA target) the crop is a single draw, never a failure
    t = strict({"img": img, "gt": None}, np.random.default_rng(1))
    assert t["img"].shape == (10, 20, 3) and t["gt"] is None


def test_flip_moves_image_and_label_together():
    gt = np.tile(np.arange(16, dtype=np.uint8), (4, 1))
    img = np.dstack([gt * 10, gt, gt])
    flipped = RandomFlip(1.0)({"img": img, "gt": gt}, np.random.default_rng(0))
    np.testing.assert_array_equal(flipped["gt"], gt[:, ::-1])
    np.testing.assert_array_equal(flipped["img"], img[:, ::-1])
    same = RandomFlip(0.0)({"img": img, "gt": gt}, np.random.default_rng(0))
    np.testing.assert_array_equal(same["gt"], gt)
    pipe = Compose([RandomCrop((4, 6), cat_max_ratio=0.75), RandomFlip(0.5)])
    flips = 0
    for s in range(40):
        out = pipe({"img": img, "gt": gt}, np.random.default_rng(s))
        np.testing.assert_array_equal(out["img"][..., 0], out["gt"].astype(np.uint16) * 10)
        flips += int(out["gt"][0, 0] > out["gt"][0, -1])
    assert 8 < flips < 32


def test_pad_and_pipelines():
    img, gt = np.full((5, 7, 3), 9, np.uint8), np.full((5, 7), 3, np.uint8)
    out = Pad((8, 10))({"img": img, "gt": gt}, None)
    assert out["img"].shape == (8, 10, 3) and out["img"][5:].max() == 0
    assert (out["gt"][5:] == 255).all() and (out["gt"][:, 7:] == 255).all()
    assert (out["gt"][:5, :7] == 3).all()
    big = {"img": np.zeros((40, 80, 3), np.uint8), "gt": np.zeros((40, 80), np.uint8)}
    train = build_train_pipeline(size=(32, 64), crop=(48, 48))
    res = train(big, np.random.default_rng(0))
    assert res["img"].shape == (48, 48, 3) and res["img"].dtype == np.float32
    assert (res["gt"][32:] == 255).all()  # padded rows of the 32-high resize are ignored
    test = build_test_pipeline(size=(32, 64))(big, None)
    assert test["img"].shape == (32, 64, 3)
    np.testing.assert_allclose(test["img"][0, 0], -np.float32(IMG_MEAN) / np.float32(IMG_STD))


def test_dataset_pipeline_and_epochs(tmp_path):
    root = make_gta(tmp_path / "gta")
    ds = GTA5Dataset(root, pipeline=build_train_pipeline(size=(64, 128), crop=(24, 40)))
    a, b = ds[0], ds[0]
    assert a["img"].shape == (3, 24, 40) and a["gt"].shape == (24, 40)
    assert torch.equal(a["img"], b["img"]) and torch.equal(a["gt"], b["gt"])
    assert a["ori_shape"] == (H, W)
    outs = set()
    for epoch in range(6):
        ds.set_epoch(epoch)
        outs.add(ds[0]["img"].numpy().tobytes())
    assert len(outs) > 1
    with pytest.raises(IndexError):
        ds[3]


# ---------------------------------------------------------------------------- UDA pairing

def _uda_pair(tmp_path, **kw):
    src = GTA5Dataset(make_gta(tmp_path / "gta"),
                      pipeline=build_train_pipeline(size=(48, 96), crop=(24, 24)))
    tgt = CityscapesDataset(make_cityscapes(tmp_path / "cs"), load_labels=False,
                            pipeline=build_train_pipeline(size=(48, 96), crop=(24, 24)))
    return src, tgt


def test_uda_pairing_is_deterministic(tmp_path):
    src, tgt = _uda_pair(tmp_path)
    uda = UDADataset(src, tgt, seed=3)
    assert len(uda) == 3 * 2
    for idx in range(len(uda)):
        item = uda[idx]
        assert item["source"]["name"] == src.name(idx // 2)
        assert item["target"]["name"] == tgt.name(idx % 2)
        assert "gt" in item["source"] and "gt" not in item["target"]
    again = UDADataset(src, tgt, seed=3)
    for idx in (0, 5):
        x, y = uda[idx], again[idx]
        for dom in ("source", "target"):
            assert torch.equal(x[dom]["img"], y[dom]["img"])
        assert torch.equal(x["source"]["gt"], y["source"]["gt"])
    other = UDADataset(src, tgt, seed=4)
    assert any(not torch.equal(uda[i]["source"]["img"], other[i]["source"]["img"])
               for i in range(len(uda)))
    with pytest.raises(IndexError):
        uda[6]
    loader = torch.utils.data.DataLoader(uda, batch_size=2,
                                         sampler=ResumableSampler(len(uda), seed=1))
    batch = next(iter(loader))
    assert batch["source"]["img"].shape == (2, 3, 24, 24)
    assert batch["source"]["gt"].shape == (2, 24, 24)
    assert batch["target"]["img"].shape == (2, 3, 24, 24)


def test_uda_refuses_labelled_target(tmp_path):
    src = GTA5Dataset(make_gta(tmp_path / "gta"))
    tgt = CityscapesDataset(make_cityscapes(tmp_path / "cs"))
    with pytest.raises(ConfigError) as e:
        UDADataset(src, tgt)
    one_line(e, "load_labels=False")


def test_resumable_sampler():
    def take(it, n):
        return [next(it) for _ in range(n)]

    full = take(iter(ResumableSampler(1000, seed=7)), 12)
    assert take(iter(ResumableSampler(1000, seed=7, start=5)), 7) == full[5:]
    assert len(set(full)) > 6 and all(0 <= i < 1000 for i in full)
    r0 = take(iter(ResumableSampler(1000, seed=7, rank=0, world_size=2)), 6)
    r1 = take(iter(ResumableSampler(1000, seed=7, rank=1, world_size=2)), 6)
    assert r0 == full[0::2] and r1 == full[1::2]
    assert take(iter(ResumableSampler(1000, seed=8)), 12) != full


# ---------------------------------------------------------------------------- RCS

RCS_COUNTS = {0: 1200, 2: 600, 5: 200, 13: 48}  # pixels per class in each 2048-pixel label


def make_rcs_source(root: Path, n: int = 4) -> Path:
    """GTA-layout labels: road/building everywhere, pole in images 0-1, car in image 0."""
    for i in range(n):
        lab = np.full(H * W, 0, np.uint8)  # labelId 0 -> ignore
        pos = 0
        for train_id, count in RCS_COUNTS.items():
            if (train_id == 5 and i > 1) or (train_id == 13 and i > 0):
                continue
            lab[pos:pos + count] = {0: 7, 2: 11, 5: 17, 13: 26}[train_id]
            pos += count
        write_rgb(root / "images" / f"{i:05d}.png", rgb(i))
        write_gray(root / "labels" / f"{i:05d}.png", lab.reshape(H, W))
    return root


def test_rcs_probabilities_follow_the_formula(tmp_path):
    root = make_rcs_source(tmp_path / "gta")
    ds = GTA5Dataset(root)
    sampler = RareClassSampler(ds, temperature=0.1, min_pixels=40, progress=False)
    totals = {0: 4 * 1200, 2: 4 * 600, 5: 2 * 200, 13: 48}
    assert sampler.counts.sum(0)[list(totals)].tolist() == list(totals.values())
    freq = np.array(list(totals.values()), float) / sum(totals.values())
    expect = np.exp((1 - freq) / 0.1) / np.exp((1 - freq) / 0.1).sum()
    assert sampler.classes.tolist() == [0, 2, 5, 13]
    np.testing.assert_allclose(sampler.probs, expect, rtol=1e-12)
    assert sampler.files_with_class[5].tolist() == [0, 1]
    assert sampler.files_with_class[13].tolist() == [0]
    # a class never above min_pixels in one image cannot be drawn
    strict = RareClassSampler(ds, temperature=0.1, min_pixels=100, progress=False)
    assert strict.classes.tolist() == [0, 2, 5]
    np.testing.assert_allclose(strict.probs, expect[:3] / expect[:3].sum(), rtol=1e-12)


def test_rcs_samples_rare_classes_more_than_their_share(tmp_path):
    ds = GTA5Dataset(make_rcs_source(tmp_path / "gta"))
    sampler = RareClassSampler(ds, min_pixels=40, progress=False)  # T = 0.01
    rng = np.random.default_rng(0)
    draws = [sampler.sample_with_class(rng) for _ in range(3000)]
    classes = np.array([c for _, c in draws])
    pixel_share = 48 / (4 * 1200 + 4 * 600 + 2 * 200 + 48)
    assert (classes == 13).mean() > 5 * pixel_share
    assert (classes == 13).mean() > (classes == 0).mean()
    assert abs((classes == 13).mean() - sampler.class_probs[13]) < 0.04
    for i, c in draws[:200]:
        assert sampler.counts[i, c] > 40
    assert sampler.sample(np.random.default_rng(1)) == sampler.sample(np.random.default_rng(1))


def test_rcs_cache_written_reused_and_refreshed(tmp_path, monkeypatch):
    root = make_rcs_source(tmp_path / "gta")
    ds = GTA5Dataset(root)
    first = RareClassSampler(ds, min_pixels=40, progress=False)
    cache = root / CACHE_NAME
    doc = json.loads(cache.read_text())
    assert set(doc["files"]) == {f"labels/{i:05d}.png" for i in range(4)}
    assert doc["files"]["labels/00000.png"]["counts"] == {"0": 1200, "2": 600, "5": 200,
                                                         "13": 48}
    calls = []
    real = GTA5Dataset.load_label

    def counting(self, i):
        calls.append(i)
        return real(self, i)

    monkeypatch.setattr(GTA5Dataset, "load_label", counting)
    mtime = cache.stat().st_mtime_ns
    second = RareClassSampler(GTA5Dataset(root), min_pixels=40, progress=False)
    assert calls == [] and cache.stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(second.counts, first.counts)
    # a changed label file is recounted, and only that one
    write_gray(root / "labels/00003.png", np.full((H, W), 26, np.uint8))
    third = RareClassSampler(GTA5Dataset(root), min_pixels=40, progress=False)
    assert calls == [3] and third.counts[3, 13] == H * W


def test_rcs_cache_falls_back_to_user_dir(tmp_path, monkeypatch, caplog):
    root = make_rcs_source(tmp_path / "gta")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    real_write = rcs_mod.atomic_write_bytes

    def read_only_root(path, data):
        if Path(path).parent == root:
            raise PermissionError(30, "Read-only file system")
        real_write(path, data)

    monkeypatch.setattr(rcs_mod, "atomic_write_bytes", read_only_root)
    with caplog.at_level(logging.WARNING, logger="prnseg"):
        RareClassSampler(GTA5Dataset(root), min_pixels=40, progress=False)
    fallback = user_cache_path(root)
    assert fallback.is_file() and str(fallback).startswith(str(tmp_path / "xdg" / "prnseg"))
    assert not (root / CACHE_NAME).exists()
    assert any(str(fallback) in r.getMessage() for r in caplog.records)
    monkeypatch.setattr(GTA5Dataset, "load_label",
                        lambda self, i: pytest.fail("statistics recomputed"))
    again = RareClassSampler(GTA5Dataset(root), min_pixels=40, progress=False)
    assert again.counts[0, 13] == 48


def test_rcs_crop_retry_finds_the_rare_class(tmp_path):
    root = tmp_path / "gta"
    lab = np.full((H, W), 7, np.uint8)
    lab[:, 48:56] = 26  # car: an 8-pixel-wide column, 256 pixels
    lab[:, :24] = 11
    write_rgb(root / "images/00000.png", rgb(0))
    write_gray(root / "labels/00000.png", lab)
    pipe = build_train_pipeline(size=None, crop=(16, 16), cat_max_ratio=1.0, flip_prob=0)
    ds = GTA5Dataset(root, pipeline=pipe)
    sampler = RareClassSampler(ds, min_pixels=200, min_crop_ratio=0.25, progress=False)
    assert sampler.min_crop_pixels == 50
    plain = [int((ds.get(0, np.random.default_rng(s))["gt"] == 13).sum()) for s in range(60)]
    rcs = [int((sampler.get_item(np.random.default_rng(s))["gt"] == 13).sum())
           for s in range(60)]
    assert np.mean(np.array(plain) > 50) < 0.5
    assert np.mean(np.array(rcs) > 50) > 0.9
    tgt = CityscapesDataset(make_cityscapes(tmp_path / "cs"), load_labels=False)
    hits = [int((UDADataset(ds, tgt, rcs=sampler, seed=s)[i]["source"]["gt"] == 13).sum()) > 50
            for s in range(15) for i in range(2)]
    assert np.mean(hits) > 0.9
    uda = UDADataset(ds, tgt, rcs=sampler, seed=0)
    assert torch.equal(uda[1]["source"]["img"], uda[1]["source"]["img"])
    with pytest.raises(ConfigError):
        UDADataset(GTA5Dataset(root), uda.target, rcs=sampler)


def test_rcs_needs_source_labels(tmp_path):
    ds = GTA5Dataset(make_gta(tmp_path / "gta"), load_labels=False)
    with pytest.raises(DatasetError) as e:
        RareClassSampler(ds)
    one_line(e, tmp_path / "gta", "load_labels=True")


def test_package_import_stays_torch_free():
    code = ("import sys, prnseg.training.data as d; assert 'torch' not in sys.modules; "
            "d.Resize; assert 'torch' not in sys.modules")
    import subprocess
    import sys
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_rcs_also_draws_the_source_only_images(tmp_path):
    """data.rcs.enabled must change what a source_only run sees, as it does for the UDA modes."""
    from prnseg.training.config import load_config
    from prnseg.training.data.builder import SourceOnly, build_uda_dataset

    root = make_rcs_source(tmp_path / "gta")
    sets = [f"data.source.root={root}", "data.source.size=[32,64]", "data.crop=[32,32]", "uda.mode=source_only"]
    plain = build_uda_dataset(load_config("synthetic", sets + ["data.rcs.enabled=false"]), with_target=False)
    rcs = build_uda_dataset(load_config("synthetic", sets + ["data.rcs.enabled=true", "data.rcs.min_pixels=40"]),
                            with_target=False)
    assert isinstance(rcs, SourceOnly) and rcs.rcs is not None and plain.rcs is None
    cars = [int((rcs[i]["source"]["gt"] == 13).any()) for i in range(40)]
    plain_cars = [int((plain[i]["source"]["gt"] == 13).any()) for i in range(40)]
    assert np.mean(cars) > 0.5 > np.mean(plain_cars)  # car is only in image 0 of 4
    assert torch.equal(rcs[3]["source"]["gt"], rcs[3]["source"]["gt"])
    with pytest.raises(ConfigError):
        SourceOnly(GTA5Dataset(root), 0, rcs=rcs.rcs)


def test_source_only_draws_a_new_crop_each_time_an_image_comes_round(tmp_path):
    from prnseg.training.config import load_config
    from prnseg.training.data.builder import build_uda_dataset

    root = make_gta(tmp_path / "gta", n=2)
    ds = build_uda_dataset(load_config("synthetic", [f"data.source.root={root}", "data.source.size=[16,32]",
                                                     "data.crop=[8,8]", "uda.mode=source_only",
                                                     "data.rcs.enabled=false"]), with_target=False)
    assert len(ds) == 2 * ds.DRAWS_PER_IMAGE
    first = ds[0]["source"]
    assert torch.equal(first["img"], ds[0]["source"]["img"])  # an index is reproducible (exact resume)
    crops = {ds[k * 2]["source"]["img"].numpy().tobytes() for k in range(12)}  # image 0, 12 draws
    assert len(crops) > 6
    with pytest.raises(IndexError):
        ds[len(ds)]
