"""Evaluation: target mIoU of a segmenter, and the quality of its pseudo-labels.

Images are resized to the config's test scale (keep ratio, as in training), padded to a
multiple of 32, and the logits are resized back to each label's own resolution before the
argmax, as DAFormer's whole-image test does. Pseudo-label quality scores the teacher's raw
labels against the written ones (the pseudo-label rule of training/pseudo_labels.py), and the
PRN's noise probability against the baseline detector ``1 - max softmax`` on the true error pixels.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from prnseg.errors import PrnsegError
from prnseg.training.checkpoint import load_checkpoint
from prnseg.training.config import Config, config_from_dict
from prnseg.training.data.builder import build_eval_dataset, val_dataset_config
from prnseg.training.data.transforms import build_test_pipeline
from prnseg.training.metrics import ConfusionMatrix, PseudoLabelQuality
from prnseg.training.distributed import select_device
from prnseg.training.models.factory import create_model_from_config, create_prn_from_config
from prnseg.training.models.segmentor import pad_to_multiple
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
    """Logits (and PRN outputs when ``prn`` is given) at the label resolution for one image."""
    x = _prepare(rgb, pipeline, device)
    resized_hw = x.shape[-2:]
    xp, pad = pad_to_multiple(x, model.output_stride)
    ctx = torch.autocast(device.type, dtype=amp_dtype) if amp_dtype is not None else torch.autocast(device.type, enabled=False)
    with ctx:
        out = model(xp)
        ref = noise = None
        if prn is not None:
            ref, noise = prn([f.detach() for f in out.features], out.logits)
    out_hw = out_hw or rgb.shape[:2]

    def full(t):
        t = _to_label_size(t, resized_hw, pad)
        return F.interpolate(t, size=tuple(out_hw), mode="bilinear", align_corners=False)[0]

    result = {"logits": full(out.logits)}
    if prn is not None:
        result["refined_logits"] = full(ref)
        result["noise_prob"] = torch.sigmoid(full(noise))[0]
    return result


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


def evaluate_pseudo_labels(teacher, prn, dataset, size, device, noise_threshold=0.5, confidence_threshold=0.968,
                           classes="all", max_images=0, progress=True, amp_dtype=None, use_refined_labels=True,
                           refine_min_confidence=0.0, sweep=()) -> dict:
    """Raw (teacher argmax) vs written (the pseudo-label rule's) pseudo-labels, the PRN's own
    argmax, and both noise detectors on labelled images. ``sweep``: more ``refine_min_confidence``
    values whose written labels are scored too (``written_at``), from the same forward passes."""
    from tqdm import tqdm

    teacher.eval()
    prn.eval()
    pipeline = build_test_pipeline(size=size)
    quality = PseudoLabelQuality(teacher.num_classes, noise_threshold=noise_threshold,
                                 confidence_threshold=confidence_threshold)
    swept = {float(t): [ConfusionMatrix(teacher.num_classes), 0, 0] for t in sweep}
    relabelled = pixels = 0
    n = len(dataset) if max_images <= 0 else min(max_images, len(dataset))
    for i in tqdm(range(n), desc="pseudo-labels", unit="img", disable=not progress):
        rgb, gt = dataset.load_raw(i)
        r = run_networks(teacher, prn, rgb, pipeline, device, gt.shape, amp_dtype)
        raw, conf, _ = written_labels(r["logits"], None, 0.0, dim=0)
        refined_logits = r["refined_logits"] if use_refined_labels else None
        label, _, replaced = written_labels(r["logits"], refined_logits, refine_min_confidence, dim=0)
        relabelled, pixels = relabelled + int(replaced.sum()), pixels + replaced.numel()
        quality.update(raw.cpu().numpy(), label.cpu().numpy(), gt, r["noise_prob"].cpu().numpy(),
                       conf.cpu().numpy(), prn_label=r["refined_logits"].argmax(0).cpu().numpy())
        for t, acc in swept.items():
            lab_t, _, rep_t = written_labels(r["logits"], r["refined_logits"], t, dim=0)
            acc[0].update(lab_t.cpu().numpy(), gt)
            acc[1], acc[2] = acc[1] + int(rep_t.sum()), acc[2] + rep_t.numel()
    summary = quality.summary(classes)
    summary["n_images"] = n
    summary["rule"] = {"use_refined_labels": bool(use_refined_labels),
                       "refine_min_confidence": float(refine_min_confidence),
                       "relabelled": relabelled / pixels if pixels else None}
    if swept:
        summary["written_at"] = {f"{t:g}": {"miou": acc[0].miou(classes), "relabelled": acc[1] / max(acc[2], 1)}
                                 for t, acc in swept.items()}
    return summary


def _build_loaded(cfg: Config, state: dict, weights: str, device, path):
    model = create_model_from_config(cfg.model, pretrained=False).to(device)
    if weights == "teacher":
        if "teacher" not in state:
            raise PrnsegError(f"{path}: holds no EMA teacher (mode {cfg.uda.mode}); use --weights student")
        sd = state["teacher"]["model"]
    else:
        sd = state["student"]
    try:
        model.load_state_dict(sd)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise PrnsegError(f"{path}: weights do not fit the model its config describes "
                          f"({cfg.model.arch}/{cfg.model.head}): {first[:160]}") from None
    return model.eval()


def load_models(path, weights: str = "student", device="cpu", with_teacher: bool = False):
    """(config, segmenter with the chosen weights, PRN or None, teacher or None) from one read of
    a training checkpoint; the teacher only with ``with_teacher`` and a PRN present."""
    device = torch.device(device)
    state = load_checkpoint(path, map_location=device)
    cfg = config_from_dict(state["config"])
    model = _build_loaded(cfg, state, weights, device, path)
    prn = teacher = None
    if cfg.uda.mode == "prn":
        prn = create_prn_from_config(model, cfg.prn).to(device)
        try:
            prn.load_state_dict(state["prn"])
        except (RuntimeError, KeyError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise PrnsegError(f"{path}: PRN weights do not fit its config: {first[:160]}") from None
        prn.eval()
        if with_teacher:
            teacher = _build_loaded(cfg, state, "teacher", device, path)
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
                                                          cfg.prn.noise_threshold, cfg.uda.pseudo_threshold,
                                                          classes, max_images, progress,
                                                          use_refined_labels=cfg.prn.use_refined_labels,
                                                          refine_min_confidence=cfg.prn.refine_min_confidence,
                                                          sweep=sweep)
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
            trainer.teacher.model, trainer.prn, ds, vcfg.size, trainer.device, cfg.prn.noise_threshold,
            cfg.uda.pseudo_threshold, max_images=cfg.data.val_max_images, progress=progress,
            amp_dtype=trainer.amp_dtype, use_refined_labels=cfg.prn.use_refined_labels,
            refine_min_confidence=cfg.prn.refine_min_confidence)
        trainer.prn.train()
    trainer.student.train()
    return metrics


def _pct(v) -> str:
    return "  n/a" if v is None else f"{100 * v:5.1f}"


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

