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
