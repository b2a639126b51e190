"""`prnseg synth` output read back through the dataset classes users train on."""

import numpy as np

from prnseg.image_io import read_image, read_label
from prnseg.labels import labelid_to_trainid
from prnseg.training.data.datasets import build_dataset
from prnseg.training.data.synthetic import write_benchmark


def test_synth_layouts_read_back_through_the_datasets(synth_root):
    gta = build_dataset("gta", synth_root / "gta")
    assert len(gta) == 10
    rgb, gt = gta.load_raw(3)
    raw_ids = read_label(synth_root / "gta" / "labels" / "00003.png")
    assert rgb.shape == (128, 256, 3) and np.array_equal(gt, labelid_to_trainid(raw_ids))
    assert np.array_equal(rgb, read_image(synth_root / "gta" / "images" / "00003.png"))

    cs_train = build_dataset("cityscapes", synth_root / "cityscapes", split="train")
    cs_val = build_dataset("cityscapes", synth_root / "cityscapes", split="val")
    assert (len(cs_train), len(cs_val)) == (8, 4)
    rgb, gt = cs_val.load_raw(0)
    assert gt.shape == rgb.shape[:2] and len(np.unique(gt[gt != 255])) >= 5
    unlabelled = build_dataset("cityscapes", synth_root / "cityscapes", split="train", load_labels=False)
    assert unlabelled.load_raw(0)[1] is None


def test_night_target_reads_back_as_dark_zurich(tmp_path):
    write_benchmark(tmp_path / "n", n_source=2, n_target=3, n_val=2, size=(128, 64), night=True, progress=False)
    train = build_dataset("darkzurich", tmp_path / "n" / "dark_zurich", split="train", load_labels=False)
    val = build_dataset("darkzurich", tmp_path / "n" / "dark_zurich", split="val")
    assert (len(train), len(val)) == (3, 2)
    rgb, gt = val.load_raw(1)
    assert rgb.shape == (64, 128, 3) and gt.shape == (64, 128)
    assert rgb.mean() < 100  # a night domain
