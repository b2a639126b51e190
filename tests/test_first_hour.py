"""What a new user meets first: one size order and parser, mistakes reported before any heavy
import (proved by running with torch made unimportable), and requests a model cannot serve
refused before anything is written."""

import json

import pytest

from conftest import run_cli, run_python_without_torch
from prnseg.errors import ConfigError
from prnseg.sizes import parse_hw


def test_one_size_parser_height_by_width():
    assert parse_hw("256x512") == (256, 512) == parse_hw(" 256 X 512 ") == parse_hw([256, 512])
    with pytest.raises(ConfigError, match=r"^--size '512by256': expected HEIGHTxWIDTH in pixels, e.g. 256x512$"):
        parse_hw("512by256")
    with pytest.raises(ConfigError, match=r"^--sizes 100x250: not a multiple of 32 .*; use 128x256$"):
        parse_hw("100x250", "--sizes", 32)
    with pytest.raises(ConfigError, match="must be positive"):
        parse_hw("0x64")


def test_config_sizes_are_height_width_and_the_old_key_migrates(capsys):
    from prnseg.training.config import config_from_dict, load_config

    cfg = load_config("synthetic", ["data.source.size=[64,256]"])
    assert cfg.data.source.size == [64, 256] and cfg.data.val.size == [128, 256] and cfg.data.crop == [128, 128]
    assert capsys.readouterr().err == ""
    old = load_config("synthetic", ["data.target.resize=[256,128]"])
    assert old.data.target.size == [128, 256]
    assert capsys.readouterr().err.strip() == (
        "prnseg: note: data.target.resize=[256, 128] is the old [WIDTH, HEIGHT] key; read as "
        "data.target.size=[128, 256] ([HEIGHT, WIDTH]); rename it")
    saved = old.to_dict()
    saved["data"]["val"]["resize"] = [1024, 512]  # a checkpoint saved before the rename
    del saved["data"]["val"]["size"]
    assert config_from_dict(saved).data.val.size == [512, 1024]
    with pytest.raises(ConfigError, match=r"^config key 'data.source.size' 0x64: height and width must be positive"):
        load_config("synthetic", ["data.source.size=[0,64]"])


def test_synth_size_is_height_by_width(tmp_path):
    from prnseg.image_io import list_images, read_image

    proc = run_cli("synth", tmp_path / "s", "--source", 1, "--target", 1, "--val", 0, "--size", "64x128",
                   "--workers", 1)
    assert "(64x128 HxW," in proc.stdout and proc.stderr.count("note:") == 0
    for img in list_images(tmp_path / "s" / "gta" / "images"):
        assert read_image(img).shape == (64, 128, 3)
    tall = run_cli("synth", tmp_path / "t", "--source", 1, "--target", 1, "--val", 0, "--size", "128x64",
                   "--workers", 1)
    assert "--size 128x64 is HEIGHTxWIDTH: portrait images 64 wide and 128 high" in tall.stderr


MAIN = "import sys\nfrom prnseg.cli import main\nsys.exit(main({argv!r}))\n"


@pytest.mark.parametrize("argv, message", [
    (["eval", "{tmp}/missing.pt", "--data", "{tmp}"],
     "prnseg eval: error: {tmp}/missing.pt: checkpoint not found (CHECKPOINT); pass the .pt file prnseg train wrote "
     "(e.g. runs/x/last.pt)"),
    (["eval", "{tmp}/model/model.json", "--data", "{tmp}"],
     "prnseg eval: error: {tmp}/model/model.json: part of an exported model, not a training checkpoint; pass the "
     ".pt file prnseg train wrote (e.g. runs/x/last.pt)"),
    (["export", "{tmp}/model", "--out", "{tmp}/m2"],
     "prnseg export: error: {tmp}/model: an exported model folder, not a training checkpoint; pass the .pt file "
     "prnseg train wrote (e.g. runs/x/last.pt)"),
    (["export", "{tmp}/notes.pt", "--out", "{tmp}/m2"],
     "prnseg export: error: {tmp}/notes.pt: not a checkpoint written by prnseg train (not a PyTorch .pt archive); "
     "pass runs/x/last.pt or another file prnseg train wrote"),
    (["export", "{tmp}/fake.pt", "--out", "{tmp}/m2", "--size", "100x200"],
     "prnseg export: error: --size 100x200: not a multiple of 32 (the network's output stride); use 128x224"),
    (["train", "--config", "synthetic", "--set", "data.source.root={tmp}/nowhere"],
     "prnseg train: error: {tmp}/nowhere: folder not found (data.source.root); pass an existing folder"),
    (["train", "--config", "synthetic", "--set", "data.source.root={tmp}", "--set", "uda.mode=source_only",
      "--set", "train.init_from={tmp}/nowhere.pt"],
     "prnseg train: error: {tmp}/nowhere.pt: checkpoint not found (train.init_from); pass the .pt file prnseg "
     "train wrote (e.g. runs/x/last.pt)"),
    (["bench", "--model", "{tmp}/nowhere"],
     "prnseg bench: error: {tmp}/nowhere: model directory not found (--model); make one with prnseg export "
     "CHECKPOINT --out {tmp}/nowhere"),
    (["bench", "--sizes", "256x500"],
     "prnseg bench: error: --sizes 256x500: not a multiple of 32 (the network's output stride); use 256x512"),
])
def test_mistakes_are_reported_before_torch_loads(tmp_path, argv, message):
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text("{}")
    (tmp_path / "notes.pt").write_text("not a checkpoint")
    import zipfile

    with zipfile.ZipFile(tmp_path / "fake.pt", "w") as zf:
        zf.writestr("fake/data.pkl", b"")
    argv = [a.format(tmp=tmp_path) for a in argv]
    proc = run_python_without_torch(MAIN.format(argv=argv))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == message.format(tmp=tmp_path)
    assert not (tmp_path / "m2").exists() and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_label_refuses_fp16_of_an_fp32_only_model_before_writing(noise_only_model, synth_root, tmp_path):
    images = synth_root / "cityscapes" / "leftImg8bit" / "val"
    out = tmp_path / "labels"
    proc = run_cli("label", images, "--model", noise_only_model, "--out", out, "--precision", "fp16",
                   "--device", "cpu", "--no-progress", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"prnseg label: error: {noise_only_model}: this export has no pseudolabeler_fp16.onnx; re-export with "
        "--fp16 or use precision fp32")
    assert not out.exists()
    proc = run_cli("label", images, "--model", noise_only_model, "--out", out, "--device", "cpu", "--no-progress")
    assert json.loads((out / "report.json").read_text())["counts"]["ok"] == 4


def test_train_prints_commands_that_exist(synth_root, tmp_path):
    from prnseg.training.config import load_config
    from prnseg.training.train_cli import next_commands

    ckpt = tmp_path / "run" / "last.pt"
    cfg = load_config("synthetic", [f"data.source.root={synth_root / 'gta'}",
                                    f"data.target.root={synth_root / 'cityscapes'}"])
    assert next_commands(cfg, ckpt) == [f"prnseg eval {ckpt} --data {synth_root / 'cityscapes'}",
                                        f"prnseg export {ckpt} --out {tmp_path / 'run' / 'model'}"]
    pseudo = load_config("synthetic", [f"data.source.root={tmp_path}", "data.source.kind=folder",
                                       "uda.mode=source_only"])
    assert next_commands(pseudo, ckpt) == [f"prnseg export {ckpt} --out {tmp_path / 'run' / 'model'}"]


@pytest.mark.slow
def test_a_source_without_labels_is_one_line_and_leaves_no_run_folder(tmp_path):
    import numpy as np

    from prnseg.image_io import write_image

    for i in range(2):
        write_image(tmp_path / "data" / "images" / f"{i}.png", np.full((64, 128, 3), 40 * i, np.uint8))
    out = tmp_path / "run"
    proc = run_cli("train", "--config", "synthetic", "--set", f"data.source.root={tmp_path / 'data'}",
                   "--set", "data.source.kind=folder", "--set", "uda.mode=source_only", "--set", "train.iters=1",
                   "--out", out, "--no-progress", check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"prnseg train: error: {tmp_path / 'data'}: no labels found for the source (data.source.kind=folder); the "
        "source must be labelled, e.g. the output folder of prnseg label (labels/ next to images/)")
    assert "Traceback" not in proc.stderr and not out.exists()
