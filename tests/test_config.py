import pytest

from prnseg.errors import ConfigError
from prnseg.training.config import load_config, resume_mismatches, shipped_configs

from conftest import run_cli


def test_shipped_configs_load_and_follow_the_recipe():
    assert {"gta2cityscapes", "synthia2cityscapes", "cityscapes2darkzurich", "synthetic"} <= set(shipped_configs())
    for name in ("gta2cityscapes", "synthia2cityscapes", "cityscapes2darkzurich"):
        cfg = load_config(name)
        assert cfg.model.arch == "mit_b5" and cfg.model.head == "daformer"
        assert cfg.train.iters == 40000 and cfg.train.batch_size == 2 and cfg.data.crop == [512, 512]
        assert cfg.optim.lr == 6e-5 and cfg.optim.head_lr_mult == 10 and cfg.optim.warmup_iters == 1500
        assert cfg.uda.ema_alpha == 0.999 and cfg.uda.pseudo_threshold == 0.968
        assert cfg.uda.jitter_apply_prob == 0.8 and cfg.uda.blur_apply_prob == 0.5 and cfg.uda.mode == "prn"
    assert load_config("synthetic").model.arch == "tiny"


def test_overrides_are_typed():
    cfg = load_config("synthetic", ["train.iters=7", "data.source.root=/d/gta", "uda.mode=self_training",
                                    "data.crop=[64,96]", "optim.lr=1e-3", "uda.contrastive.enabled=false"])
    assert cfg.train.iters == 7 and cfg.data.source.root == "/d/gta" and cfg.uda.mode == "self_training"
    assert cfg.data.crop == [64, 96] and cfg.optim.lr == 1e-3 and cfg.uda.contrastive.enabled is False


@pytest.mark.parametrize("override,message", [
    ("train.itres=5", "unknown config key 'train.itres'"),
    ("nope.x=1", "unknown config key 'nope'"),
    ("train.iters=many", "'train.iters' must be an integer"),
    ("uda.mode=magic", "choose one of: source_only, self_training, prn"),
    ("trainiters", "must look like key.sub=value"),
])
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_config("synthetic", [override])


def test_unknown_config_name_lists_the_shipped_ones():
    with pytest.raises(ConfigError, match="shipped: .*synthetic"):
        load_config("no_such_config")


def test_cli_reports_a_bad_key_in_one_line(tmp_path):
    proc = run_cli("train", "--config", "synthetic", "--set", "train.itres=5", "--out", tmp_path / "r", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "unknown config key 'train.itres'" in proc.stderr


def test_base_inheritance(tmp_path):
    night = load_config("synthetic_night")
    assert night.name == "synthetic_night" and night.data.target.kind == "darkzurich"
    assert night.model.arch == load_config("synthetic").model.arch
    own = tmp_path / "mine.yaml"
    own.write_text("base: synthetic\ntrain: {iters: 9}\n")
    cfg = load_config(str(own))
    assert cfg.name == "mine" and cfg.train.iters == 9 and cfg.train.batch_size == 2
    loop = tmp_path / "loop.yaml"
    loop.write_text(f"base: {loop}\n")
    with pytest.raises(ConfigError, match="loops back"):
        load_config(str(loop))


def test_resume_mismatches_names_each_changed_key_and_accepts_keys_added_at_their_default():
    default = {"mode": "prn", "tau": 0.0, "mic": {"enabled": False, "ratio": 0.7}}
    saved = {"mode": "prn", "mic": {"enabled": False}}                      # written before tau and mic.ratio existed
    assert resume_mismatches(saved, default, default, "uda.") == []
    changed = {"mode": "self_training", "tau": 0.5, "mic": {"enabled": False, "ratio": 0.7}}
    assert resume_mismatches(saved, changed, default, "uda.") == [
        "uda.mode: 'prn' -> 'self_training'", "uda.tau: (not in the checkpoint, so 0.0) -> 0.5"]
    assert resume_mismatches({"gone": 1}, {}, {}, "uda.") == ["uda.gone: 1 -> (no such key)"]
