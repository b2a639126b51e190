"""The parity gate: every exported artefact run in ONNX Runtime against the PyTorch reference.

Calibration images are real target-domain pictures (``--calib DIR``, recursive) or, by default,
a few scenes rendered in the synthetic benchmark's target style. Each image is fitted into each
size bucket exactly as ``serve`` does (``ModelSpec.fit``), so the gate measures the inputs users
will feed. Agreement is counted over the image region of the bucket (padding excluded).

mIoU delta, in mIoU points: with ground truth (synthetic calibration, or a ``--calib`` folder in
the Cityscapes or ``images/``+``labels/`` layout) it is ``|mIoU(PyTorch) - mIoU(ONNX)|`` against
that ground truth at the image's own size; without ground truth it is ``100 - mIoU(ONNX labels
scored against the PyTorch labels)``, i.e. how far the artefact is from reproducing the reference.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from prnseg.errors import PrnsegError
from prnseg.image_io import list_images, read_image
from prnseg.metrics import ConfusionMatrix
from prnseg.model_spec import ModelSpec
from prnseg.training.prn_step import PRNStep

from .graphs import FEATURE_NAMES, PSEUDOLABELER_OUTPUT_ORDER, PseudoLabeler

FP32_LABEL_AGREEMENT_MIN = 0.999
FP16_LABEL_AGREEMENT_MIN = 0.99
FP16_MIOU_DELTA_MAX = 0.5
DEFAULT_SYNTHETIC_IMAGES = 4
LABEL_DIRS = ("gtFine", "labels", "gt")


@dataclass
class CalibImage:
    name: str
    rgb: np.ndarray
    gt: np.ndarray | None


def _label_for(path: Path, root: Path) -> Path | None:
    """Ground truth next to a calibration image, in the Cityscapes or the folder layout."""
    parts = path.relative_to(root).parts
    if path.stem.endswith("_leftImg8bit"):
        stem = path.stem[: -len("_leftImg8bit")]
        for i in range(len(path.parts) - 1, -1, -1):
            if path.parts[i] == "leftImg8bit":
                cand = Path(*path.parts[:i], "gtFine", *path.parts[i + 1:-1], f"{stem}_gtFine_labelTrainIds.png")
                return cand if cand.is_file() else None
    if parts and parts[0] == "images":
        cand = root.joinpath("labels", *parts[1:-1], path.stem + ".png")
        return cand if cand.is_file() else None
    return None


def load_calibration(calib_dir: str | Path | None, max_images: int, size_wh=(512, 256),
                     seed: int = 0) -> tuple[list[CalibImage], str]:
    """(images, description). ``calib_dir=None`` renders synthetic target-style scenes with labels."""
    if calib_dir is None:
        from prnseg.training.data.synthetic import render_scene

        n = max_images or DEFAULT_SYNTHETIC_IMAGES
        out = []
        for i in range(n):
            rgb, lab = render_scene(np.random.SeedSequence([seed, 4, i]), size_wh, "target")
            out.append(CalibImage(f"synthetic_{i}", rgb, lab))
        return out, f"synthetic target-style scenes ({n} at {size_wh[0]}x{size_wh[1]}, with labels)"
    from prnseg.training.data.datasets import read_trainids

    root = Path(calib_dir)
    if not root.is_dir():
        raise PrnsegError(f"--calib {root}: not a directory; give a folder of target-domain images")
    paths = [p for p in list_images(root) if not set(p.relative_to(root).parts[:-1]) & set(LABEL_DIRS)
             and "_gtFine_" not in p.name]
    if not paths:
        raise PrnsegError(f"--calib {root}: no images found (looked for .png/.jpg/... recursively)")
    if max_images and len(paths) > max_images:
        idx = np.linspace(0, len(paths) - 1, max_images).round().astype(int)
        paths = [paths[i] for i in sorted(set(idx.tolist()))]
    out = []
    for p in paths:
        lab_path = _label_for(p, root)
        rgb = read_image(p)
        gt = read_trainids(lab_path) if lab_path is not None else None
        if gt is not None and gt.shape != rgb.shape[:2]:
            raise PrnsegError(f"{lab_path}: label is {gt.shape[1]}x{gt.shape[0]} but its image {p} is "
                              f"{rgb.shape[1]}x{rgb.shape[0]}")
        out.append(CalibImage(str(p.relative_to(root)), rgb, gt))
    n_gt = sum(c.gt is not None for c in out)
    if 0 < n_gt < len(out):
        out = [c for c in out if c.gt is not None]
    return out, f"{root} ({len(out)} images, {'with' if n_gt else 'without'} labels)"


def _ort_session(path: Path):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def _ort_runner(session):
    def run(batch):
        return dict(zip(PSEUDOLABELER_OUTPUT_ORDER, session.run(list(PSEUDOLABELER_OUTPUT_ORDER), {"image": batch})))
    return run


def _miou(cm: ConfusionMatrix) -> float:
    v = cm.miou()
    return 0.0 if math.isnan(v) else 100.0 * v


class _Agreement:
    """Streaming agreement of one pseudolabeler artefact with the reference."""

    def __init__(self, num_classes: int):
        self.n = 0
        self.same = {k: 0 for k in ("label", "raw_label", "noise")}
        self.conf_max = 0
        self.noise_prob_max = 0
        self.cm_ref = ConfusionMatrix(num_classes)  # artefact vs PyTorch labels (no GT)
        self.cm_gt_torch = ConfusionMatrix(num_classes)
        self.cm_gt_art = ConfusionMatrix(num_classes)
        self.has_gt = False

    def update(self, art: dict, ref: dict, gt, placement, spec: ModelSpec):
        rh, rw = placement.resized_hw
        self.n += rh * rw
        for k in self.same:
            self.same[k] += int((art[k][:rh, :rw] == ref[k][:rh, :rw]).sum())
        diff = np.abs(art["confidence"][:rh, :rw].astype(np.int16) - ref["confidence"][:rh, :rw].astype(np.int16))
        self.conf_max = max(self.conf_max, int(diff.max()))
        diff = np.abs(art["noise_prob"][:rh, :rw].astype(np.int16) - ref["noise_prob"][:rh, :rw].astype(np.int16))
        self.noise_prob_max = max(self.noise_prob_max, int(diff.max()))
        self.cm_ref.update(art["label"][:rh, :rw], ref["label"][:rh, :rw])
        if gt is not None:
            self.has_gt = True
            self.cm_gt_torch.update(spec.unfit(ref["label"], placement), gt)
            self.cm_gt_art.update(spec.unfit(art["label"], placement), gt)

    def result(self) -> dict:
        r = {f"{k}_agreement": self.same[k] / max(self.n, 1) for k in self.same}
        r["confidence_max_diff"] = self.conf_max
        r["noise_prob_max_diff"] = self.noise_prob_max
        r["miou_vs_reference"] = round(_miou(self.cm_ref), 4)
        if self.has_gt:
            r["miou_gt_reference"] = round(_miou(self.cm_gt_torch), 4)
            r["miou_gt_artefact"] = round(_miou(self.cm_gt_art), 4)
            r["miou_delta"] = round(abs(r["miou_gt_reference"] - r["miou_gt_artefact"]), 4)
            r["miou_delta_basis"] = "ground truth"
        else:
            r["miou_delta"] = round(100.0 - r["miou_vs_reference"], 4)
            r["miou_delta_basis"] = "pytorch labels"
        return r


def _merge_max(a: dict, b: dict) -> dict:
    """Worst case of two metric dicts: min of agreements/mIoU-vs-reference, max of diffs/deltas."""
    out = dict(a)
    for k, v in b.items():
        if not isinstance(v, (int, float)) or k not in a:
            out.setdefault(k, v)
        elif k.endswith("agreement") or k == "miou_vs_reference":
            out[k] = min(a[k], v)
        elif k.startswith("miou_gt"):
            out.pop(k, None)
        else:
            out[k] = max(a[k], v)
    return out


@torch.no_grad()
def run_parity(reference: PseudoLabeler, spec: ModelSpec, files: dict[str, Path], images: list[CalibImage],
               calib_desc: str, runners: dict | None = None) -> dict:
    """Compare every ONNX artefact in ``files`` (keys: segmenter, prn, pseudolabeler,
    pseudolabeler_fp16) and every extra pseudo-labeler in ``runners`` (name -> ``run(uint8 batch)
    -> {output: array}``, e.g. TensorRT engines) with ``reference`` on ``images`` fitted to each
    bucket. A name ending in ``fp16`` is held to the fp16 gate, any other to the fp32 gate."""
    sessions = {k: _ort_session(p) for k, p in files.items()}
    labelers = {k: _ort_runner(s) for k, s in sessions.items() if k.startswith("pseudolabeler")}
    labelers.update(runners or {})
    num_classes = spec.num_classes
    per_bucket = {}
    for bucket in spec.buckets:
        key = f"{bucket.height}x{bucket.width}"
        seg_diff = {"max_abs_logit_diff": 0.0, "max_abs_feature_diff": 0.0, "max_abs_logit": 0.0}
        prn_diff = {"max_abs_refined_logit_diff": 0.0, "max_abs_noise_logit_diff": 0.0}
        agree = {k: _Agreement(num_classes) for k in labelers}
        for img in images:
            fitted, placement = spec.fit(img.rgb, spec.place_in(*img.rgb.shape[:2], bucket))
            batch = fitted[None]
            ref = dict(zip(PSEUDOLABELER_OUTPUT_ORDER, (t[0].numpy() for t in reference(torch.from_numpy(batch)))))
            x = reference.normalise(torch.from_numpy(batch))
            seg = reference.segmentor(x)
            if "segmenter" in sessions:
                o = sessions["segmenter"].run(None, {"image": x.numpy()})
                seg_diff["max_abs_logit_diff"] = max(seg_diff["max_abs_logit_diff"],
                                                     float(np.abs(o[0] - seg.logits.numpy()).max()))
                seg_diff["max_abs_logit"] = max(seg_diff["max_abs_logit"], float(seg.logits.abs().max()))
                fd = max(float(np.abs(a - b.numpy()).max()) for a, b in zip(o[1:], seg.features))
                seg_diff["max_abs_feature_diff"] = max(seg_diff["max_abs_feature_diff"], fd)
            if "prn" in sessions and reference.prn is not None:
                feeds = {n: f.numpy() for n, f in zip(FEATURE_NAMES, seg.features)}
                feeds["logits"] = seg.logits.numpy()
                # a PRN trained with prn.use_features=false reads no feat1..feat3: its graph has no such inputs
                declared = {i.name for i in sessions["prn"].get_inputs()}
                o = sessions["prn"].run(None, {n: v for n, v in feeds.items() if n in declared})
                refined, noise = PRNStep.run(reference.prn, seg.features, seg.logits)
                prn_diff["max_abs_refined_logit_diff"] = max(prn_diff["max_abs_refined_logit_diff"],
                                                             float(np.abs(o[0] - refined.numpy()).max()))
                prn_diff["max_abs_noise_logit_diff"] = max(prn_diff["max_abs_noise_logit_diff"],
                                                           float(np.abs(o[1] - noise.numpy()).max()))
            for k, acc in agree.items():
                art = {n: o[0] for n, o in labelers[k](batch).items()}
                acc.update(art, ref, img.gt, placement, spec)
        entry = {}
        if "segmenter" in sessions:
            entry["segmenter"] = seg_diff
        if "prn" in sessions and reference.prn is not None:
            entry["prn"] = prn_diff
        entry.update({k: acc.result() for k, acc in agree.items()})
        per_bucket[key] = entry
    summary: dict = {}
    for entry in per_bucket.values():
        for art, metrics in entry.items():
            summary[art] = _merge_max(summary[art], metrics) if art in summary else dict(metrics)
    report = {
        "reference": "PyTorch PseudoLabeler (fp32, CPU) on the same bucket-fitted uint8 images",
        "runtime": "onnxruntime CPUExecutionProvider" + ("; TensorRT for the plans" if runners else ""),
        "calibration": calib_desc,
        "n_images": len(images),
        "agreement_region": "the image region of each bucket (padding excluded)",
        "miou_delta": ("mIoU points: |mIoU(PyTorch) - mIoU(ONNX)| against ground truth when the calibration "
                       "images have labels, else 100 - mIoU of the ONNX labels scored against the PyTorch labels"),
        "gate": {"fp32_label_agreement_min": FP32_LABEL_AGREEMENT_MIN,
                 "fp16_label_agreement_min": FP16_LABEL_AGREEMENT_MIN,
                 "fp16_miou_delta_max": FP16_MIOU_DELTA_MAX},
        "buckets": per_bucket,
        "summary": summary,
    }
    failures = gate_failures(summary)
    report["passed"] = not failures
    report["failures"] = failures
    return report


def gate_failures(summary: dict) -> list[str]:
    """Human-readable reasons the artefacts fail the gate (empty = ready)."""
    out = []
    for name, m in summary.items():
        if "label_agreement" not in m:
            continue
        if name.endswith("fp16"):
            if m["label_agreement"] < FP16_LABEL_AGREEMENT_MIN:
                out.append(f"{name} label agreement {100 * m['label_agreement']:.3f}% < "
                           f"{100 * FP16_LABEL_AGREEMENT_MIN:.1f}%")
            if m["miou_delta"] > FP16_MIOU_DELTA_MAX:
                out.append(f"{name} mIoU delta {m['miou_delta']:.3f} > {FP16_MIOU_DELTA_MAX} points")
        elif m["label_agreement"] < FP32_LABEL_AGREEMENT_MIN:
            out.append(f"{name} label agreement {100 * m['label_agreement']:.3f}% < "
                       f"{100 * FP32_LABEL_AGREEMENT_MIN:.1f}%")
    return out
