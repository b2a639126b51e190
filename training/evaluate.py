"""Evaluation: target mIoU of a segmenter, and the quality of its pseudo-labels.

Images are resized to the config's test scale (keep ratio, as in training), padded to a
multiple of 32, and the logits are resized back to each label's own resolution before the
argmax, as DAFormer's whole-image test does. Pseudo-label quality scores the teacher's raw
labels against the written ones (the PRN step of training/prn_step.py, as training and export
write them), and the PRN's noise probability against the baseline detector ``1 - max softmax`` on the true error pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from dataclasses import replace
from functools import partial

from prnseg.errors import PrnsegError
from prnseg.formatting import pct
from prnseg.metrics import ConfusionMatrix
from prnseg.training.checkpoint import load_checkpoint
from prnseg.training.data.builder import build_eval_dataset, val_dataset_config
from prnseg.training.data.transforms import build_test_pipeline
from prnseg.training.distributed import select_device
from prnseg.training.loading import load_checkpoint_model
from prnseg.training.metrics import PseudoLabelQuality
from prnseg.training.models.segmentor import pad_to_multiple
from prnseg.training.prn_step import PRNStep, PseudoLabels
from prnseg.training.pseudo_labels import written_labels


def _prepare(rgb: np.ndarray, pipeline, device) -> torch.Tensor:
    sample = pipeline({"img": rgb, "gt": None}, np.random.default_rng(0))
    x = torch.from_numpy(np.ascontiguousarray(sample["img"].transpose(2, 0, 1), dtype=np.float32))
    return x[None].to(device)


def _to_label_size(t: torch.Tensor, size_hw, pad) -> torch.Tensor:
    """Stride-4 maps of a padded input -> the label's size: upsample to the padded input, crop
    the padding, resize to the label."""
    ph = size_hw[0] + pad[3]
    pw = size_hw[1] + pad[1]
    t = F.interpolate(t.float(), size=(ph, pw), mode="bilinear", align_corners=False)
    return t[..., : size_hw[0], : size_hw[1]]


@torch.no_grad()
def run_networks(model, prn, rgb: np.ndarray, pipeline, device, out_hw=None, amp_dtype=None) -> dict:
    """Logits (and, with ``prn``, the PRN's refined logits and noise logit: ``PRNStep.run``) at the
    label resolution for one image, class axis first."""
    x = _prepare(rgb, pipeline, device)
    resized_hw = x.shape[-2:]
    xp, pad = pad_to_multiple(x, model.output_stride)
    ctx = (torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None
           else torch.autocast(device.type, enabled=False))
    with ctx:
        out = model(xp)
        if prn is not None:
            ref, noise = PRNStep.run(prn, out.features, out.logits)
    out_hw = out_hw or rgb.shape[:2]

    def full(t):
        t = _to_label_size(t, resized_hw, pad)
        return F.interpolate(t, size=tuple(out_hw), mode="bilinear", align_corners=False)[0]

    result = {"logits": full(out.logits)}
    if prn is not None:
        result["refined_logits"] = full(ref)
        result["noise_logit"] = full(noise)
    return result


def image_pseudo_labels(teacher, prn, step: PRNStep, rgb: np.ndarray, pipeline, device, out_hw=None,
                        amp_dtype=None) -> tuple[dict, PseudoLabels]:
    """:func:`run_networks`' maps and the labels and noise mask the PRN step writes from them (H x W)."""
    r = run_networks(teacher, prn, rgb, pipeline, device, out_hw, amp_dtype)
    return r, step.pseudo_labels(r["logits"], r["refined_logits"], r["noise_logit"], dim=0)


def evaluate_segmentation(model, dataset, size, device, classes="all", max_images=0, progress=True,
                          amp_dtype=None) -> dict:
    from tqdm import tqdm

    model.eval()
    pipeline = build_test_pipeline(size=size)
    cm = ConfusionMatrix(model.num_classes)
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    for i in tqdm(range(n), desc="eval", unit="img", disable=not progress):
        rgb, gt = dataset.load_raw(i)
        pred = run_networks(model, None, rgb, pipeline, device, gt.shape, amp_dtype)["logits"].argmax(0)
        cm.update(pred.cpu().numpy(), gt)
    result = cm.to_dict(classes)
    result["n_images"] = n
    return result


def evaluate_pseudo_labels(teacher, prn, dataset, size, device, step: PRNStep, confidence_threshold=0.968,
                           classes="all", max_images=0, progress=True, amp_dtype=None, sweep=()) -> dict:
    """Raw (teacher argmax) vs written (``step``'s) pseudo-labels, the PRN's own argmax, and both
    noise detectors on labelled images. ``sweep``: more ``refine_min_confidence`` values whose
    written labels are scored too (``written_at``), from the same forward passes."""
    from tqdm import tqdm

    teacher.eval()
    prn.eval()
    pipeline = build_test_pipeline(size=size)
    quality = PseudoLabelQuality(teacher.num_classes, noise_threshold=step.noise_threshold,
                                 confidence_threshold=confidence_threshold)
    # per swept threshold: its step, the confusion matrix of its labels, [relabelled, pixels]
    swept = {float(t): (replace(step, use_refined_labels=True, refine_min_confidence=float(t)),
                        ConfusionMatrix(teacher.num_classes), [0, 0]) for t in sweep}
    relabelled = pixels = 0
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    for i in tqdm(range(n), desc="pseudo-labels", unit="img", disable=not progress):
        rgb, gt = dataset.load_raw(i)
        r, written = image_pseudo_labels(teacher, prn, step, rgb, pipeline, device, gt.shape, amp_dtype)
        raw, conf, _ = written_labels(r["logits"], None, 0.0, dim=0)
        relabelled, pixels = relabelled + int(written.replaced.sum()), pixels + written.replaced.numel()
        quality.update(raw.cpu().numpy(), written.label.cpu().numpy(), gt, written.noise_prob.cpu().numpy(),
                       conf.cpu().numpy(), prn_label=r["refined_logits"].argmax(0).cpu().numpy())
        for step_t, cm, counts in swept.values():
            at_t = step_t.pseudo_labels(r["logits"], r["refined_logits"], r["noise_logit"], dim=0)
            cm.update(at_t.label.cpu().numpy(), gt)
            counts[0], counts[1] = counts[0] + int(at_t.replaced.sum()), counts[1] + at_t.replaced.numel()
    summary = quality.summary(classes)
    summary["n_images"] = n
    summary["rule"] = {"use_refined_labels": bool(step.use_refined_labels),
                       "refine_min_confidence": float(step.refine_min_confidence),
                       "relabelled": relabelled / pixels if pixels else None}
    if swept:
        summary["written_at"] = {f"{t:g}": {"miou": cm.miou(classes), "relabelled": counts[0] / max(counts[1], 1)}
                                 for t, (_, cm, counts) in swept.items()}
    return summary


def load_models(path, weights: str = "student", device="cpu", with_teacher: bool = False):
    """(config, segmenter with the chosen weights, PRN or None, teacher or None) from one read of
    a training checkpoint (:func:`load_checkpoint_model` twice); the teacher only with
    ``with_teacher`` and a PRN present, as pseudo-label evaluation needs it."""
    state = load_checkpoint(path, map_location=torch.device(device))
    model, prn, cfg = load_checkpoint_model(path, weights, device, state=state)
    teacher = None
    if prn is not None and with_teacher:
        teacher = load_checkpoint_model(path, "teacher", device, state=state).segmentor
    return cfg, model, prn, teacher


def evaluate_checkpoint(path, data_root, kind=None, split="val", weights="student", classes="all",
                        max_images=0, device="auto", progress=True, sweep=()) -> dict:
    device = select_device(device)
    cfg, model, prn, teacher = load_models(path, weights, device, with_teacher=True)
    vcfg = val_dataset_config(cfg)
    dataset = build_eval_dataset(kind or vcfg.kind, data_root, split)
    if not dataset.has_labels:
        raise PrnsegError(f"{data_root}: split '{split}' has no labels to evaluate against")
    metrics = {"checkpoint": str(path), "weights": weights, "data": str(data_root), "split": split,
               "classes": classes, **evaluate_segmentation(model, dataset, vcfg.size, device, classes,
                                                          max_images, progress)}
    if prn is not None:
        metrics["pseudo_labels"] = evaluate_pseudo_labels(teacher, prn, dataset, vcfg.size, device,
                                                          PRNStep.from_config(cfg), cfg.uda.pseudo_threshold,
                                                          classes, max_images, progress, sweep=sweep)
    return metrics


def evaluate_checkpoint_models(trainer, progress=False) -> dict:
    """Periodic evaluation inside training: the student's target val mIoU, plus pseudo-label
    quality of teacher + PRN (measurement only: val labels never feed a loss)."""
    cfg = trainer.cfg
    vcfg = val_dataset_config(cfg)
    if not hasattr(trainer, "_val_dataset"):
        trainer._val_dataset = build_eval_dataset(vcfg.kind, vcfg.root, vcfg.split)
    ds = trainer._val_dataset
    metrics = evaluate_segmentation(trainer.student, ds, vcfg.size, trainer.device,
                                    max_images=cfg.data.val_max_images, progress=progress,
                                    amp_dtype=trainer.amp_dtype)
    if trainer.prn is not None and trainer.teacher is not None:
        metrics["pseudo_labels"] = evaluate_pseudo_labels(
            trainer.teacher.model, trainer.prn, ds, vcfg.size, trainer.device, trainer.prn_step,
            cfg.uda.pseudo_threshold, max_images=cfg.data.val_max_images, progress=progress,
            amp_dtype=trainer.amp_dtype)
        trainer.prn.train()
    trainer.student.train()
    return metrics


_pct = partial(pct, width=5)  # the table's column: " 45.7", "  n/a"


def format_metrics(m: dict) -> str:
    lines = [f"mIoU ({m.get('classes', 'all')}): {_pct(m['miou'])}   pixel accuracy: {_pct(m['pixel_accuracy'])}"
             f"   images: {m.get('n_images', '?')}"]
    lines += [f"  {name:<14} {_pct(v)}" for name, v in m["per_class_iou"].items()]
    pl = m.get("pseudo_labels")
    if pl:
        nd, cb = pl["noise_detector"], pl["confidence_baseline"]
        rule = pl.get("rule", {})
        lines.append(f"pseudo-labels: raw mIoU {_pct(pl['raw']['miou'])} -> written {_pct(pl['refined']['miou'])}"
                     + (f" (PRN label where its confidence >= {rule['refine_min_confidence']:g}: "
                        f"{_pct(rule['relabelled'])} % of pixels relabelled)" if rule.get("use_refined_labels") else
                        " (the teacher's labels: refinement off)"))
        if "prn_argmax" in pl:
            lines.append(f"  the PRN's own argmax everywhere: mIoU {_pct(pl['prn_argmax']['miou'])}")
        for t, w in pl.get("written_at", {}).items():
            lines.append(f"  written with refine_min_confidence {t}: mIoU {_pct(w['miou'])} "
                         f"({_pct(w['relabelled'])} % relabelled)")
        kept = pl.get("kept")
        if kept:
            lines.append(f"  on the pixels the noise mask keeps: mIoU {_pct(kept['miou'])} "
                         f"(coverage {_pct(kept['coverage'])} of labelled pixels)")
        lines.append(f"noise mask: precision {_pct(nd['precision'])} recall {_pct(nd['recall'])} "
                     f"AUROC {_pct(nd['auroc'])}   (1 - max softmax baseline AUROC {_pct(cb['auroc'])})")
    return "\n".join(lines)

