"""Typed training configuration: dataclasses loaded from YAML with ``--set a.b=c`` overrides.

A shipped config is addressed by name (``synthetic``, ``gta2cityscapes``, ...) or by a YAML path.
Unknown keys and wrongly typed values are errors that name the key, so a typo never trains a
40k-iteration run with a silently ignored setting. Defaults follow DAFormer's recipe; every
reference quirk is a named flag whose default is the reference behaviour.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from prnseg.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DatasetConfig:
    kind: str = "gta"  # gta | cityscapes | synthia | darkzurich | acdc | folder
    root: str = ""
    split: str = "train"
    size: list[int] = field(default_factory=lambda: [720, 1280])  # H, W: keep-ratio resize bound (mmseg scale)


@dataclass
class RCSConfig:
    """Rare Class Sampling (DAFormer): source images chosen by rare classes."""
    enabled: bool = False
    temperature: float = 0.01
    min_pixels: int = 3000
    min_crop_ratio: float = 0.5


@dataclass
class LabeledTargetConfig:
    """A handful of hand-labelled target images (``data.target_labeled``): the student learns
    from their labels and the PRN from the teacher's errors on them. Same kind, layout and size
    as ``data.target`` unless set; ``list`` (a file of image paths relative to ``root``, one a
    line, as ``prnseg label --suggest`` writes) limits training to those images: no other target
    label is ever opened."""
    root: str = ""
    list: str = ""
    kind: str = ""
    split: str = "train"
    # The share of these images kept from the student for the PRN alone (spread evenly over them in
    # path order). The teacher never trains on those, so its errors there are like its errors on the
    # rest of the target: what the PRN has to learn. On images the teacher has fit it sees almost no
    # error and learns to change nothing (README, Label a handful). 0: every image teaches both the
    # student and the PRN; 1: only the PRN. Above 0 needs uda.mode=prn.
    prn_fraction: float = 0.0


@dataclass
class DataConfig:
    source: DatasetConfig = field(default_factory=DatasetConfig)
    target: DatasetConfig = field(default_factory=lambda: DatasetConfig(kind="cityscapes", size=[512, 1024]))
    # Labelled target split for evaluation; an empty root means "the target root".
    val: DatasetConfig = field(default_factory=lambda: DatasetConfig(kind="cityscapes", split="val", size=[512, 1024]))
    crop: list[int] = field(default_factory=lambda: [512, 512])  # H, W
    cat_max_ratio: float = 0.75
    flip_prob: float = 0.5
    workers: int = 2
    val_max_images: int = 0  # 0 = the whole val split
    rcs: RCSConfig = field(default_factory=RCSConfig)
    target_labeled: LabeledTargetConfig = field(default_factory=LabeledTargetConfig)


@dataclass
class ModelConfig:
    arch: str = "mit_b5"  # tiny | mit_b0 .. mit_b5
    head: str = "daformer"  # daformer | segformer
    pretrained: str = ""  # local Hugging Face-format directory or hub id; empty = from scratch
    head_channels: int = 0  # 0 = the reference width for arch/head (DAFormer 256; tiny 32)
    drop_path_rate: float = 0.1
    num_classes: int = 19


@dataclass
class PRNConfig:
    channels: int = 64
    num_blocks: int = 2
    eps_low: float = 0.05  # FFT low-frequency window, eps ~ U(eps_low, eps_high)
    eps_high: float = 0.2
    noise_threshold: float = 0.5  # sigmoid(noise logit) >= threshold marks a pixel noisy (as the exported graph)
    noise_pos_weight: str = "balanced"  # "balanced" (n_neg / n_pos per batch) or a number
    start_iter: int = 0  # refined labels replace the teacher's only from this iteration on
    # False: keep the teacher's labels and use the PRN only for its noise mask
    use_refined_labels: bool = True
    # The pseudo-label rule (training/pseudo_labels.py): a refined label replaces the teacher's
    # only where the PRN's top probability reaches this; 0 = every refined label (the PRN's argmax).
    # 0.9 measured best on synthetic benchmark version 3 (README, Results)
    refine_min_confidence: float = 0.9
    # False: the PRN reads only the teacher's class probabilities, not its encoder features
    use_features: bool = True
    # What the noise head learns from. "source_fft" (the method): pixels where the FFT-perturbed
    # source logits are wrong. "target_consistency": target pixels whose teacher label changes when
    # the image is flipped, colour-jittered and blurred (a label-free proxy of the teacher's errors
    # in the domain it will be used on; costs one more teacher forward per step). "target_tta":
    # target pixels where the teacher's single-pass label differs from its label averaged over
    # scales 0.75/1/1.25 and their mirrors (training/tta.py; six more teacher forwards per step).
    noise_signal: str = "source_fft"
    # What the refine head learns from. "source_fft" (the method): the FFT-perturbed source logits
    # and their labels. "target_tta": target crops, towards the teacher's multi-scale + mirror
    # averaged labels: the PRN learns to give in one pass what test-time augmentation gives in six
    refine_signal: str = "source_fft"
    # Where the noise logit starts: "none" (the method: the noise head's output alone) or
    # "max_softmax" (logit(1 - the teacher's top probability) plus the head's zero-initialised
    # output, so the mask starts as good at ranking errors as confidence and learns a correction)
    noise_prior: str = "none"
    # The PRN's BatchNorm statistics when it writes the student's target pseudo-labels: "batch" (its
    # training mode: the target batch's own statistics, which also enter the running ones; the
    # version-3 table's runs) or "running" (eval mode, as prnseg eval and the exported graph run it)
    pseudo_label_bn: str = "batch"


@dataclass
class ContrastiveConfig:
    enabled: bool = True
    temperature: float = 0.1
    proj_channels: int = 64
    max_anchors_per_class: int = 64
    max_samples: int = 1024


@dataclass
class FeatureDistanceConfig:
    """ImageNet feature distance (DAFormer); needs ImageNet weights in model.pretrained."""
    enabled: bool = False
    classes: list[int] = field(default_factory=lambda: [6, 7, 11, 12, 13, 14, 15, 16, 17, 18])
    scale_min_ratio: float = 0.75


@dataclass
class LossWeights:
    source: float = 1.0
    target: float = 1.0
    prn_refine: float = 1.0
    prn_noise: float = 1.0
    contrastive: float = 0.1
    feature_distance: float = 0.005
    mic: float = 1.0
    target_labeled: float = 1.0


@dataclass
class MICConfig:
    """Masked image consistency (MIC): the student predicts the teacher's full-image target
    pseudo-labels from a block-masked view. MIC's recipe: 64 px blocks at 512 px crops, 70 %
    of the blocks masked, loss weight 1 (``uda.loss_weights.mic``)."""
    enabled: bool = False
    block_size: int = 64
    mask_ratio: float = 0.7


@dataclass
class UDAConfig:
    mode: str = "prn"  # source_only | self_training | prn
    ema_alpha: float = 0.999
    pseudo_threshold: float = 0.968
    pseudo_weight_mode: str = "batch_ratio"  # reference: one scalar per batch; or per_pixel
    pseudo_margins: list[int] = field(default_factory=lambda: [0, 0, 0, 0])  # top, bottom, left, right rows/cols
    classmix_scope: str = "batch"  # reference: classes drawn from the whole batch; or sample
    jitter_strength: float = 0.2
    jitter_apply_prob: float = 0.8
    blur_apply_prob: float = 0.5
    teacher_bn_mode: str = "train"  # reference: teacher BN uses batch statistics
    ema_buffers: str = "none"  # reference: BN running stats are not averaged
    ce_reduction: str = "all_pixels"  # reference: ignored pixels stay in the mean's denominator
    # The teacher's target pseudo-labels (and their confidence) from its class probabilities averaged
    # over scales 0.75/1/1.25 and their mirrors (training/tta.py) instead of one pass: better labels
    # and a better-ranked confidence on benchmark version 3, for six teacher forwards per step. In
    # prn mode the PRN's rule still writes over them where refinement is on
    pseudo_label_tta: bool = False
    # Logit adjustment of those pseudo-labels (training/class_prior.py): a pixel's label is
    # argmax_c log p_c - tau * log pi_c, pi the teacher's running mean class probability on the
    # target (momentum pseudo_label_prior_momentum per step), so rare classes are not drowned by the
    # ones the teacher already predicts most. 0 = off (the reference); 0.25 measured on version 3.
    # In prn mode the PRN's rule still writes over the adjusted labels where refinement is on
    pseudo_label_logit_adjustment: float = 0.0
    pseudo_label_prior_momentum: float = 0.99
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)
    feature_distance: FeatureDistanceConfig = field(default_factory=FeatureDistanceConfig)
    mic: MICConfig = field(default_factory=MICConfig)
    loss_weights: LossWeights = field(default_factory=LossWeights)


@dataclass
class OptimConfig:
    lr: float = 6e-5
    head_lr_mult: float = 10.0
    weight_decay: float = 0.01
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    poly_power: float = 1.0
    min_lr: float = 0.0
    grad_clip: float = 0.0  # 0 = off


@dataclass
class TrainConfig:
    iters: int = 40000
    batch_size: int = 2  # per domain: B source + B target
    seed: int = 0
    # the seed the networks' initial weights are drawn from; -1: train.seed. Runs that share it
    # start from one set of weights, as runs that share a pretrained encoder do, and differ only
    # in data order and augmentation (train.seed)
    init_seed: int = -1
    eval_every: int = 4000
    checkpoint_every: int = 1000
    log_every: int = 50
    amp: str = "auto"  # auto (bf16 on CUDA when supported, else fp16; off on CPU) | bf16 | fp16 | none
    device: str = "auto"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    # warm start: the student (and so the teacher at step 0) from a checkpoint's student weights,
    # e.g. a source_only run; the PRN, optimiser and step start fresh
    init_from: str = ""


@dataclass
class Config:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    prn: PRNConfig = field(default_factory=PRNConfig)
    uda: UDAConfig = field(default_factory=UDAConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


CHOICES = {
    "uda.mode": ("source_only", "self_training", "prn"),
    "uda.pseudo_weight_mode": ("batch_ratio", "per_pixel"),
    "uda.classmix_scope": ("batch", "sample"),
    "uda.teacher_bn_mode": ("train", "eval"),
    "uda.ema_buffers": ("none", "copy", "ema"),
    "uda.ce_reduction": ("all_pixels", "valid_pixels"),
    "model.head": ("daformer", "segformer"),
    "prn.noise_signal": ("source_fft", "target_consistency", "target_tta"),
    "prn.refine_signal": ("source_fft", "target_tta"),
    "prn.noise_prior": ("none", "max_softmax"),
    "prn.pseudo_label_bn": ("batch", "running"),
    "model.arch": ("tiny", "mit_b0", "mit_b1", "mit_b2", "mit_b3", "mit_b4", "mit_b5"),
    "train.amp": ("auto", "bf16", "fp16", "none"),
}


#: Numeric ranges: key -> (low, high, low_inclusive, high_inclusive); None = unbounded. A value
#: outside is a one-line error naming the key, instead of a division by zero, a run that does
#: nothing and exits 0, or an EMA that diverges.
RANGES = {
    "data.flip_prob": (0, 1, True, True), "data.cat_max_ratio": (0, 1, False, True),
    "data.workers": (0, None, True, True), "data.val_max_images": (0, None, True, True),
    "data.rcs.temperature": (0, None, False, True), "data.rcs.min_pixels": (0, None, True, True),
    "data.rcs.min_crop_ratio": (0, 1, True, True),
    "model.head_channels": (0, None, True, True), "model.drop_path_rate": (0, 1, True, False),
    "model.num_classes": (1, 255, True, True),
    "prn.channels": (1, None, True, True), "prn.num_blocks": (0, None, True, True),
    "prn.eps_low": (0, 1, True, True), "prn.eps_high": (0, 1, True, True),
    "prn.noise_threshold": (0, 1, True, True), "prn.start_iter": (0, None, True, True),
    "prn.refine_min_confidence": (0, 1, True, True),
    "uda.ema_alpha": (0, 1, True, True), "uda.pseudo_threshold": (0, 1, True, True),
    "uda.jitter_strength": (0, None, True, True), "uda.jitter_apply_prob": (0, 1, True, True),
    "uda.blur_apply_prob": (0, 1, True, True),
    "uda.pseudo_label_logit_adjustment": (0, None, True, True),
    "uda.pseudo_label_prior_momentum": (0, 1, True, False),
    "uda.contrastive.temperature": (0, None, False, True), "uda.contrastive.proj_channels": (1, None, True, True),
    "uda.contrastive.max_anchors_per_class": (1, None, True, True),
    "uda.contrastive.max_samples": (1, None, True, True),
    "uda.feature_distance.scale_min_ratio": (0, 1, True, True),
    "uda.mic.block_size": (1, None, True, True), "uda.mic.mask_ratio": (0, 1, True, True),
    **{f"uda.loss_weights.{k}": (0, None, True, True) for k in
       ("source", "target", "prn_refine", "prn_noise", "contrastive", "feature_distance", "mic",
        "target_labeled")},
    "optim.lr": (0, None, False, True), "optim.head_lr_mult": (0, None, False, True),
    "optim.weight_decay": (0, None, True, True), "optim.warmup_iters": (0, None, True, True),
    "optim.warmup_ratio": (0, 1, True, True), "optim.poly_power": (0, None, True, True),
    "optim.min_lr": (0, None, True, True), "optim.grad_clip": (0, None, True, True),
    "train.iters": (1, None, True, True), "train.batch_size": (1, None, True, True),
    "train.eval_every": (0, None, True, True), "train.checkpoint_every": (1, None, True, True),
    "train.log_every": (1, None, True, True), "train.threads": (0, None, True, True),
    "train.init_seed": (-1, None, True, True),
    "data.target_labeled.prn_fraction": (0, 1, True, True),
}


def _describe_range(lo, hi, lo_in: bool, hi_in: bool) -> str:
    if hi is None:
        return f"{'>=' if lo_in else '>'} {lo}"
    return f"in {'[' if lo_in else '('}{lo}, {hi}{']' if hi_in else ')'}"


def check_ranges(cfg: "Config") -> "Config":
    """Every value of ``RANGES`` (and the lists with a known shape) within its range, or a
    ConfigError naming the key, the value and the allowed range."""
    for key, (lo, hi, lo_in, hi_in) in RANGES.items():
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        ok = (value >= lo if lo_in else value > lo) and (hi is None or (value <= hi if hi_in else value < hi))
        if not ok or value != value:  # NaN compares false with everything
            raise ConfigError(f"config key '{key}' = {value!r}; must be {_describe_range(lo, hi, lo_in, hi_in)} "
                              f"(--set {key}=VALUE)")
    for key, n, lo in (("data.crop", 2, 1), ("uda.pseudo_margins", 4, 0)):
        head, _, leaf = key.partition(".")
        value = getattr(getattr(cfg, head), leaf)
        if len(value) != n or any(v < lo for v in value):
            raise ConfigError(f"config key '{key}' = {value!r}; must be {n} integers >= {lo}")
    top, bottom, left, right = cfg.uda.pseudo_margins
    (crop_h, crop_w), mode = cfg.data.crop, cfg.uda.mode
    if mode != "source_only" and (top + bottom >= crop_h or left + right >= crop_w):
        raise ConfigError(f"config key 'uda.pseudo_margins' = {cfg.uda.pseudo_margins!r} (top, bottom, left, right) "
                          f"leaves no pixel of the {crop_h}x{crop_w} 'data.crop' for the target loss; "
                          "--set uda.pseudo_margins=[0,0,0,0] or a larger crop")
    betas = cfg.optim.betas
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ConfigError(f"config key 'optim.betas' = {betas!r}; must be 2 numbers in [0, 1)")
    if cfg.prn.eps_low > cfg.prn.eps_high:
        raise ConfigError(f"config keys 'prn.eps_low' = {cfg.prn.eps_low} > 'prn.eps_high' = {cfg.prn.eps_high}; "
                          "eps is drawn from [eps_low, eps_high]")
    return cfg


def _build(cls, data: dict, prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"config key '{prefix.rstrip('.')}' must be a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"under '{prefix.rstrip('.')}'" if prefix else "at the top level"
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys {where}: {', '.join(sorted(names))}")
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(hints[name], value, prefix + name)
    obj = cls(**kwargs)
    for key, allowed in CHOICES.items():
        head, _, leaf = key.rpartition(".")
        if prefix.rstrip(".") == head and leaf in data and getattr(obj, leaf) not in allowed:
            raise ConfigError(f"config key '{key}' = {getattr(obj, leaf)!r}; choose one of: {', '.join(allowed)}")
    return obj


def _coerce(tp, value, key: str):
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    origin = typing.get_origin(tp)
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {value!r}")
        (item_tp,) = typing.get_args(tp)
        return [_coerce(item_tp, v, key) for v in value]
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if value is None:
            return ""
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a string, got {value!r}")
        return str(value)
    return value


def shipped_configs() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))


def resolve_config_path(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        return p
    shipped = CONFIG_DIR / f"{name_or_path}.yaml"
    if shipped.is_file():
        return shipped
    raise ConfigError(f"unknown config '{name_or_path}': not a YAML file and not a shipped config "
                      f"(shipped: {', '.join(shipped_configs())})")


def parse_override(text: str) -> tuple[list[str], object]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override '{text}' must look like key.sub=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _plain(value):
    """A Python value as YAML would give it: paths as strings, tuples as lists."""
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def apply_overrides(data: dict, overrides: Mapping[str, object] | Iterable[str]) -> dict:
    """``key.sub=value`` strings (the value read as YAML, as ``--set`` gives them), or a mapping of
    dotted keys to Python values (``{"train.iters": 200, "data.crop": (256, 256)}``), into ``data``."""
    if isinstance(overrides, Mapping):
        items = [(str(k), str(k).split("."), _plain(v)) for k, v in overrides.items()]
    else:
        items = [(text, *parse_override(text)) for text in ([overrides] if isinstance(overrides, str) else overrides)]
    for text, keys, value in items:
        node = data
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{text}': '{k}' is not a section")
        node[keys[-1]] = value
    return data


def _deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for k, v in update.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read_yaml(name_or_path: str, seen: tuple = ()) -> dict:
    """A config file's mapping, with ``base: other`` resolved (the file's keys win)."""
    path = resolve_config_path(name_or_path)
    if path in seen:
        raise ConfigError(f"{path}: 'base' chain loops back to itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    base = data.pop("base", None)
    if base:
        data = _deep_merge(_read_yaml(str(base), seen + (path,)), data)
    return data


def load_config(name_or_path: str | None = None, overrides: Mapping[str, object] | Iterable[str] = ()) -> Config:
    """Load a shipped config by name or a YAML file (``base: NAME`` inherits another), then
    apply overrides: ``key=value`` strings or a mapping of dotted keys (:func:`apply_overrides`)."""
    data: dict = {}
    if name_or_path:
        data = _read_yaml(name_or_path)
        data.setdefault("name", resolve_config_path(name_or_path).stem)
    data = apply_overrides(data, overrides)
    return check_ranges(_build(Config, migrate_sizes(data, notice=True), ""))


def config_from_dict(data: dict) -> Config:
    return check_ranges(_build(Config, migrate_sizes(data), ""))


def _check_attributes(obj, prefix: str) -> None:
    """No attribute of a config section that is not one of its keys (``cfg.uda.mdoe = ...``)."""
    names = {f.name for f in dataclasses.fields(obj)}
    unknown = sorted(set(vars(obj)) - names)
    if unknown:
        where = f"under '{prefix.rstrip('.')}'" if prefix else "at the top level"
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; valid keys {where}: {', '.join(sorted(names))}")
    for name in names:
        value = getattr(obj, name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            _check_attributes(value, f"{prefix}{name}.")


def check_config(cfg: Config) -> Config:
    """A Config built or edited in Python, checked as a YAML file is: an attribute that is no
    config key, a wrongly typed value, a choice or a value out of range is a ConfigError naming the
    key. Returns a new, checked Config (paths as strings, tuples as lists)."""
    if not isinstance(cfg, Config):
        raise ConfigError(f"expected a training Config (prnseg.api.load_config), got {type(cfg).__name__}")
    _check_attributes(cfg, "")
    return config_from_dict(_plain(dataclasses.asdict(cfg)))


def override_config(cfg: Config, overrides: Mapping[str, object] | Iterable[str]) -> Config:
    """A new, checked Config: ``cfg`` with ``overrides`` (as :func:`load_config` takes them) applied."""
    data = apply_overrides(_plain(dataclasses.asdict(check_config(cfg))), overrides)
    return check_ranges(_build(Config, migrate_sizes(data, notice=True), ""))


def migrate_sizes(data: dict, notice: bool = False) -> dict:
    """Sizes are [HEIGHT, WIDTH] (``data.<split>.size``, like ``data.crop``). The old key
    ``resize`` held [WIDTH, HEIGHT]: it is read as ``size`` reversed (with a one-line notice when a
    user wrote it; checkpoints saved before the rename load silently). Every size is checked."""
    from prnseg.sizes import parse_hw

    sections = data.get("data") if isinstance(data.get("data"), dict) else {}
    for split, d in sections.items():
        if not isinstance(d, dict) or split not in ("source", "target", "val"):
            continue
        if "resize" in d:
            old = d.pop("resize")
            if not isinstance(old, (list, tuple)) or len(old) != 2:
                raise ConfigError(f"config key 'data.{split}.resize' = {old!r}: renamed; write data.{split}.size="
                                  "[HEIGHT, WIDTH]")
            d["size"] = [old[1], old[0]]
            if notice:
                print(f"prnseg: note: data.{split}.resize={list(old)} is the old [WIDTH, HEIGHT] key; read as "
                      f"data.{split}.size={d['size']} ([HEIGHT, WIDTH]); rename it", file=sys.stderr)
        if "size" in d:
            d["size"] = list(parse_hw(d["size"], f"config key 'data.{split}.size'"))
    return data


def save_config(cfg: Config, path: str | Path) -> None:
    from prnseg.atomic import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False).encode())


def resume_mismatches(saved: Mapping, current: Mapping, default: Mapping, prefix: str = "") -> list[str]:
    """The keys whose value differs between a checkpoint's config and the run resuming it.

    A key the checkpoint lacks was added to prnseg after it was written; it matches when the run
    keeps that key's default, which is the behaviour the checkpoint trained under, so upgrading
    prnseg does not strand a half-finished run. Each mismatch reads ``key: saved -> current``.
    """
    out = []
    for key in sorted(set(saved) | set(current)):
        name = f"{prefix}{key}"
        if key not in current:
            out.append(f"{name}: {saved[key]!r} -> (no such key)")
        elif key not in saved:
            if current[key] != default.get(key):
                out.append(f"{name}: (not in the checkpoint, so {default.get(key)!r}) -> {current[key]!r}")
        elif isinstance(saved[key], Mapping) and isinstance(current[key], Mapping):
            out += resume_mismatches(saved[key], current[key], default.get(key) or {}, f"{name}.")
        elif saved[key] != current[key]:
            out.append(f"{name}: {saved[key]!r} -> {current[key]!r}")
    return out
