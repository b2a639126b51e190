"""A handful of labelled target images in training (``data.target_labeled``)."""

from __future__ import annotations

import csv

import pytest
import torch

from conftest import run_cli, tiny_train_args
from prnseg.errors import ConfigError
from prnseg.training.config import load_config

LISTED = ["leftImg8bit/train/arden/arden_000000_000001_leftImg8bit.png",
          "leftImg8bit/train/brenholm/brenholm_000000_000000_leftImg8bit.png"]


def _cfg(root, tmp_path, mode="prn", listed=LISTED):
    lst = tmp_path / "suggest.txt"
    lst.write_text("".join(f"{p}\n" for p in listed))
    return load_config("synthetic", [
        f"data.source.root={root / 'gta'}", f"data.target.root={root / 'cityscapes'}",
        "data.source.size=[128,256]", "data.target.size=[128,256]", "data.crop=[128,128]",
        "data.workers=0", f"uda.mode={mode}", "train.iters=2", "train.eval_every=0", "train.checkpoint_every=100",
        "prn.start_iter=1", "uda.contrastive.max_samples=256",
        f"data.target_labeled.root={root / 'cityscapes'}", f"data.target_labeled.list={lst}"])


def test_only_the_listed_target_labels_are_ever_opened(synth_root, tmp_path, monkeypatch):
    import prnseg.training.data.datasets as datasets
    from prnseg.training.trainer import UDATrainer

    opened = []
    real = datasets.read_trainids
    monkeypatch.setattr(datasets, "read_trainids", lambda path, *a: opened.append(str(path)) or real(path, *a))
    torch.set_num_threads(1)
    trainer = UDATrainer(_cfg(synth_root, tmp_path), tmp_path / "run", progress=False)
    assert [r.image.relative_to(synth_root / "cityscapes").as_posix() for r in trainer.labeled_target.records] == LISTED
    trainer.fit()
    target_labels = [p for p in opened if "cityscapes" in p]
    assert target_labels, "the listed labels were never read"
    allowed = {str(synth_root / "cityscapes" / p.replace("leftImg8bit/", "gtFine/", 1)
                   .replace("_leftImg8bit.png", "_gtFine_labelTrainIds.png")) for p in LISTED}
    assert set(target_labels) <= allowed


@pytest.mark.slow
def test_student_and_prn_learn_from_the_labelled_images(synth_root, tmp_path):
    lst = tmp_path / "suggest.txt"
    lst.write_text(LISTED[0] + "\n")
    out = tmp_path / "run"
    run_cli(*tiny_train_args(synth_root, out, mode="prn", iters=2,
                             extra=[f"data.target_labeled.root={synth_root / 'cityscapes'}",
                                    f"data.target_labeled.list={lst}"]))
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    for key in ("target_labeled", "prn_ref_labeled", "prn_noise_labeled"):
        assert all(float(r[key]) > 0 for r in rows), key


def test_a_list_naming_an_image_that_is_not_there_is_one_clear_error(synth_root, tmp_path):
    from prnseg.training.trainer import UDATrainer

    with pytest.raises(ConfigError, match=r"'leftImg8bit/train/nowhere\.png' is not an image"):
        UDATrainer(_cfg(synth_root, tmp_path, listed=["leftImg8bit/train/nowhere.png"]), tmp_path / "r",
                   progress=False)
    cfg = _cfg(synth_root, tmp_path)
    cfg.data.target_labeled.list = str(tmp_path / "missing.txt")
    with pytest.raises(ConfigError, match="missing.txt: not found"):
        UDATrainer(cfg, tmp_path / "r2", progress=False)


def test_prn_fraction_splits_the_labelled_images_between_student_and_prn(synth_root, tmp_path):
    """``prn_fraction=0.5`` of two images: the student only ever draws the first, the PRN only the
    second (the teacher never trains on it); 1 leaves the student none; too small a share, or a
    mode without a PRN, is one clear error."""
    from prnseg.training.data.builder import split_labeled_target
    from prnseg.training.trainer import UDATrainer

    torch.set_num_threads(1)
    cfg = _cfg(synth_root, tmp_path)
    cfg.data.target_labeled.prn_fraction = 0.5
    trainer = UDATrainer(cfg, tmp_path / "run", progress=False)
    names = {k: [r.image.relative_to(synth_root / "cityscapes").as_posix() for r in ds.records]
             for k, ds in (("student", trainer.labeled_student), ("prn", trainer.labeled_prn))}
    assert names == {"student": LISTED[:1], "prn": LISTED[1:]}
    drawn = {"student": set(), "prn": set()}
    for key, ds in (("student", trainer.labeled_student), ("prn", trainer.labeled_prn)):
        def get(i, rng, ds=ds, key=key, real=ds.get):
            drawn[key].add(ds.records[i].image.name)
            return real(i, rng)
        ds.get = get
    trainer.fit()
    assert drawn == {"student": {LISTED[0].rsplit("/", 1)[1]}, "prn": {LISTED[1].rsplit("/", 1)[1]}}
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert all(float(r["target_labeled"]) > 0 and float(r["prn_ref_labeled"]) > 0 for r in rows)

    only_prn = split_labeled_target(trainer.labeled_target, 1.0)
    assert only_prn[0] is None and len(only_prn[1]) == 2
    assert split_labeled_target(trainer.labeled_target, 0.0) == (trainer.labeled_target, trainer.labeled_target)
    with pytest.raises(ConfigError, match="keeps none of the 2 labelled images for the PRN"):
        split_labeled_target(trainer.labeled_target, 0.25)
    cfg = _cfg(synth_root, tmp_path, mode="self_training")
    cfg.data.target_labeled.prn_fraction = 0.5
    with pytest.raises(ConfigError, match="prn_fraction=0.5 keeps images for the PRN, which uda.mode=self_training"):
        UDATrainer(cfg, tmp_path / "run-st", progress=False)


def test_prn_fraction_1_teaches_the_prn_alone(synth_root, tmp_path):
    """``prn_fraction=1`` (bench strategy ``suggest_prn``): the labels reach the PRN every step and
    the student never; it learns them only through the PRN's written pseudo-labels."""
    from prnseg.training.trainer import UDATrainer

    torch.set_num_threads(1)
    cfg = _cfg(synth_root, tmp_path)
    cfg.data.target_labeled.prn_fraction = 1.0
    trainer = UDATrainer(cfg, tmp_path / "run", progress=False)
    assert trainer.labeled_student is None and len(trainer.labeled_prn) == 2
    trainer.fit()
    rows = list(csv.DictReader(open(tmp_path / "run" / "metrics.csv")))
    assert rows and all(float(r["prn_ref_labeled"]) > 0 and float(r["prn_noise_labeled"]) > 0 for r in rows)
    assert all(not r.get("target_labeled") for r in rows)
