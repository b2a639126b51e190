"""prnseg.api: the Python functions under the CLI, used without any CLI string."""

from __future__ import annotations

import json

import pytest

from conftest import run_python_without_torch
from prnseg import api
from prnseg.errors import ConfigError, PrnsegError


def tiny_config(root, mode: str = "prn", iters: int = 2):
    """The settings of conftest's ``tiny_train_args``, as a typed config."""
    return api.load_config("synthetic", {
        "data.source.root": root / "gta", "data.target.root": root / "cityscapes",
        "data.source.size": (128, 256), "data.target.size": (128, 256), "data.val.size": (128, 256),
        "data.crop": (128, 128), "data.workers": 0, "uda.mode": mode, "train.iters": iters, "train.eval_every": 0,
        "train.checkpoint_every": 1, "train.log_every": 1, "prn.start_iter": 1, "uda.contrastive.max_samples": 256})


@pytest.mark.slow
def test_train_evaluate_export_label_round_trip(synth_root, tmp_path, capsys):
    cfg = tiny_config(synth_root)
    cfg.prn.use_refined_labels = False  # an edit of the typed object, checked when train is called
    run = api.train(cfg, tmp_path / "run", progress=False)
    assert run.checkpoint == tmp_path / "run" / "last.pt" and run.checkpoint.is_file()
    assert run.summary["step"] == 2 and run.summary["mode"] == "prn" and run.is_main
    assert run.config.prn.use_refined_labels is False and run.config.data.source.root == str(synth_root / "gta")
    printed = capsys.readouterr().out
    assert "training 'synthetic' (prn, tiny/" in printed and f"checkpoint: {run.checkpoint}" in printed
    assert "next:" not in printed  # the CLI prints the next commands, the API does not

    cfg.train.iters = 3
    resumed = api.train(cfg, run.out, resume=True, progress=False, verbose=False)
    assert resumed.summary["step"] == 3 and capsys.readouterr().out == ""

    cityscapes = synth_root / "cityscapes"
    metrics = api.evaluate(run.checkpoint, cityscapes, max_images=2, refine_sweep=[0.0, 0.9],
                           json_path=tmp_path / "eval.json", progress=False, verbose=False)
    assert 0.0 <= metrics["miou"] <= 1.0 and metrics["n_images"] == 2 and "pseudo_labels" in metrics
    assert json.loads((tmp_path / "eval.json").read_text())["miou"] == metrics["miou"]

    model = api.export(run.checkpoint, tmp_path / "model", sizes=[(128, 256)], max_batch=2, progress=False,
                       verbose=False)
    assert model.model_dir == tmp_path / "model" and model.model["ready"] is True
    assert model.model == json.loads((model.model_dir / "model.json").read_text())

    opts = api.LabelOptions(input_dir=cityscapes / "leftImg8bit" / "val", out_dir=tmp_path / "labels",
                            model_dir=model.model_dir, gt_dir=cityscapes / "gtFine" / "val", workers=1,
                            progress=False)
    report = api.label(opts, suggest=2, verbose=False, log=lambda msg: None)
    assert report["counts"]["ok"] == report["counts"]["listed"] == 4 and report["counts"]["failed"] == 0
    assert report["gt"]["raw"]["miou"] is not None
    assert sum(1 for _ in (tmp_path / "labels" / "labels").rglob("*.png")) == 4
    assert report["suggest"]["chosen"] == 2 and len((tmp_path / "labels" / "suggest" / "suggest.txt")
                                                    .read_text().splitlines()) == 2


def test_a_misspelled_config_key_fails_when_the_api_is_called(synth_root, tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key 'uda\.mdoe'; valid keys under 'uda': .*\bmode\b"):
        api.load_config("synthetic", {"uda.mdoe": "prn"})
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'"):
        api.override(api.load_config("synthetic"), ["trian.iters=5"])
    with pytest.raises(ConfigError, match=r"config key 'train\.iters' must be an integer"):
        api.load_config("synthetic", {"train.iters": "many"})

    cfg = tiny_config(synth_root)
    cfg.uda.mdoe = "self_training"  # a typo on the object: no such key, so train must refuse it
    with pytest.raises(ConfigError, match=r"unknown config key 'uda\.mdoe'"):
        api.train(cfg, tmp_path / "run")
    cfg = tiny_config(synth_root)
    cfg.uda.mode = "prn_mic"
    with pytest.raises(ConfigError, match=r"'uda\.mode' = 'prn_mic'; choose one of"):
        api.train(cfg, tmp_path / "run")
    cfg = tiny_config(synth_root)
    cfg.data.source.root = str(tmp_path / "missing")
    with pytest.raises(PrnsegError, match=r"folder not found \(data\.source\.root\)"):
        api.train(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_the_api_imports_and_checks_configs_without_torch():
    proc = run_python_without_torch(
        "import sys\n"
        "from prnseg import api\n"
        "from prnseg.errors import ConfigError\n"
        "cfg = api.load_config('synthetic', {'train.iters': 5})\n"
        "cfg.train.itres = 6\n"
        "try:\n"
        "    api.train(cfg, 'never-written')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
        "assert 'torch' not in sys.modules\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("unknown config key 'train.itres'; valid keys under 'train':")


def test_run_isolated_returns_the_result_and_raises_the_childs_error(tmp_path):
    cfg = api.run_isolated("load_config", "synthetic", {"train.iters": 7, "data.source.root": tmp_path})
    assert cfg.train.iters == 7 and cfg.data.source.root == str(tmp_path)
    with pytest.raises(api.IsolatedRunError, match=r"^unknown config key 'uda\.mdoe'"):
        api.run_isolated("load_config", "synthetic", {"uda.mdoe": "prn"})
    with pytest.raises(PrnsegError, match="no function 'nothing'"):
        api.run_isolated("nothing")


def test_bench_settings_take_the_commands_option_names(tmp_path):
    with pytest.raises(PrnsegError, match="unknown option 'quik'"):
        api.bench_settings(quik=True)
    s = api.bench_settings(quick=True, out=tmp_path / "b", device="cpu", train=False)
    assert s.archs == ["tiny"] and s.sizes == [(128, 256)] and s.out == tmp_path / "b" and not s.train
