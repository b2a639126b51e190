"""One PRN step: from the same teacher logits and features, the trainer, `prnseg eval`, the exported
graph (in PyTorch and in ONNX Runtime) and the PRN-variant bench write the same labels and noise."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from prnseg.export.graphs import PseudoLabeler
from prnseg.training.config import load_config
from prnseg.training.data.transforms import IMG_MEAN, IMG_STD, build_test_pipeline
from prnseg.training.evaluate import image_pseudo_labels
from prnseg.training.models.factory import create_model_from_config, create_prn_from_config
from prnseg.training.models.segmentor import SegOutput
from prnseg.training.prn_step import PRNStep

H, W = 64, 96
BENCH = Path(__file__).resolve().parents[1] / "bench" / "prn_variants.py"


class FixedTeacher(nn.Module):
    """A segmenter that returns given outputs whatever the image: evaluation then reads exactly
    the logits and features every other path is fed."""

    def __init__(self, out: SegOutput, num_classes: int):
        super().__init__()
        self.out, self.num_classes, self.output_stride = out, num_classes, 32

    def forward(self, x):
        return self.out


def _cfg(tmp_path, use_refined_labels: bool, t: float):
    return load_config("synthetic", [
        f"data.source.root={tmp_path}", f"data.target.root={tmp_path}", "uda.mode=prn", "train.device=cpu",
        "data.workers=0", f"prn.use_refined_labels={use_refined_labels}", f"prn.refine_min_confidence={t}",
        "prn.noise_threshold=0.5"])


def _as_uint8(p: torch.Tensor) -> np.ndarray:
    return torch.round(p * 255.0).clamp(0, 255).to(torch.uint8).numpy()


@pytest.mark.slow
@pytest.mark.parametrize("use_refined_labels,t", [(True, 0.0), (True, 0.6), (False, 0.6)])
def test_every_path_writes_the_same_labels_and_noise(tmp_path, use_refined_labels, t):
    from prnseg.export.onnx_export import count_layernorm_modules, export_pseudolabeler
    from prnseg.training.trainer import UDATrainer

    torch.set_num_threads(1)
    cfg = _cfg(tmp_path, use_refined_labels, t)
    torch.manual_seed(0)
    seg = create_model_from_config(cfg.model, pretrained=False).eval()
    prn = create_prn_from_config(seg, cfg.prn).eval()
    with torch.no_grad():          # a trained-looking PRN: it changes labels and flags some pixels, not all
        prn.refine_head.weight.normal_(0, 10.0)
        prn.noise_head.weight.normal_(0, 2.0)
    image = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (1, H, W, 3), dtype=np.uint8))

    # the exported graph: normalisation, segmenter and the PRN step in one module
    graph = PseudoLabeler(seg, prn, IMG_MEAN, IMG_STD, cfg.prn.noise_threshold, use_refined_labels=use_refined_labels,
                          refine_min_confidence=t).eval()
    with torch.no_grad():
        label, raw_label, noise, noise_prob, confidence = (o[0].numpy() for o in graph(image))
        out = seg(graph.normalise(image))
    if use_refined_labels:
        assert (label != raw_label).any() and (t == 0.0 or (label == raw_label).any())
    else:
        assert np.array_equal(label, raw_label)
    assert noise.any() and not noise.all()

    # the trainer: the step its target pseudo-labels come from, on the same teacher outputs
    trainer = UDATrainer(cfg, tmp_path / "run", progress=False)
    trainer.prn.load_state_dict(prn.state_dict())
    trainer.prn.eval()             # training runs it in train mode (batch statistics); the rule is what is compared
    with torch.no_grad():
        by_trainer = trainer.prn_pseudo_labels(out.features, out.logits, (H, W))

    # `prnseg eval` and the bench's variant scoring: the evaluation's per-image path
    spec = importlib.util.spec_from_file_location("bench_prn_variants", BENCH)
    variants = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(variants)
    teacher = FixedTeacher(out, seg.num_classes)
    rgb = image[0].numpy()
    _, by_eval = image_pseudo_labels(teacher, prn, PRNStep.from_config(cfg), rgb, build_test_pipeline(size=None),
                                     torch.device("cpu"), (H, W))
    bench_step = variants.scoring_step(cfg, refine_min_confidence=t)
    if not use_refined_labels:     # the bench always scores refined labels; the checkpoint's rule is compared
        bench_step = PRNStep.from_config(cfg)
    _, by_bench = image_pseudo_labels(teacher, variants._FeatureGate(prn, use_features=True), bench_step, rgb,
                                      build_test_pipeline(size=None), torch.device("cpu"), (H, W))

    for name, p in (("trainer", by_trainer._replace(**{k: v[0] for k, v in by_trainer._asdict().items()})),
                    ("eval", by_eval), ("bench", by_bench)):
        assert np.array_equal(p.label.numpy(), label), name
        assert np.array_equal(p.raw_label.numpy(), raw_label), name
        assert np.array_equal(p.noise.numpy(), noise.astype(bool)), name
        assert np.abs(_as_uint8(p.noise_prob).astype(int) - noise_prob).max() <= 1, name
        assert np.abs(_as_uint8(p.confidence).astype(int) - confidence).max() <= 1, name

    # the same graph through ONNX Runtime, as pseudolabeler.onnx ships
    path = export_pseudolabeler(graph, tmp_path / "pseudolabeler.onnx", (H, W), 17, count_layernorm_modules(seg))
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    o_label, o_raw, o_noise, o_prob, _ = (o[0] for o in sess.run(None, {"image": image.numpy()}))
    assert np.array_equal(o_label, label) and np.array_equal(o_raw, raw_label) and np.array_equal(o_noise, noise)
    assert np.abs(o_prob.astype(int) - noise_prob).max() <= 1


def test_running_bn_makes_the_trainers_labels_those_of_evaluation(tmp_path):
    """``prn.pseudo_label_bn=running``: the trainer's PRN, in training mode, writes the labels and
    noise evaluation writes (eval mode, running statistics) and is left in training mode;
    ``batch`` (its batch statistics) writes others, so the option is what makes them agree."""
    from prnseg.training.trainer import UDATrainer

    torch.set_num_threads(1)
    torch.manual_seed(0)
    written = {}
    for bn in ("running", "batch"):
        cfg = load_config("synthetic", [
            f"data.source.root={tmp_path}", f"data.target.root={tmp_path}", "uda.mode=prn", "train.device=cpu",
            "data.workers=0", "prn.refine_min_confidence=0.0", f"prn.pseudo_label_bn={bn}"])
        trainer = UDATrainer(cfg, tmp_path / f"run-{bn}", progress=False)
        seg, prn = trainer.student.eval(), trainer.prn
        torch.manual_seed(1)
        with torch.no_grad():
            prn.refine_head.weight.normal_(0, 10.0)
            prn.noise_head.weight.normal_(0, 2.0)
            for m in prn.modules():       # running statistics unlike any one batch's
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0, 1.0)
                    m.running_var.uniform_(0.5, 2.0)
            out = seg(torch.randn(2, 3, H, W))
        prn.train()
        with torch.no_grad():
            written[bn] = trainer.prn_pseudo_labels(out.features, out.logits, (H, W))
        assert prn.training
        prn.eval()
        with torch.no_grad():
            by_eval = PRNStep.from_config(cfg).infer(
                prn, out.features, out.logits,
                resize=lambda t: torch.nn.functional.interpolate(t.float(), size=(H, W), mode="bilinear",
                                                                 align_corners=False))
        same = torch.equal(written[bn].label, by_eval.label) and torch.equal(written[bn].noise, by_eval.noise)
        assert same == (bn == "running"), bn
