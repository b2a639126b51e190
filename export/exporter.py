"""``export_model``: a training checkpoint -> a self-describing model directory (README, "Export").

The directory is assembled in a hidden temporary sibling and renamed into place only at the
end, so a crash or a failed step never leaves something at ``out_dir`` that looks like a model;
a directory whose artefacts fail the parity gate is still written (to inspect ``parity.json``)
but with ``ready: false``, which every runtime refuses.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from prnseg import __version__
from prnseg.atomic import atomic_write_text
from prnseg.errors import PrnsegError
from prnseg.labels import CITYSCAPES_CLASSES, CITYSCAPES_PALETTE, IGNORE_INDEX
from prnseg.model_spec import FORMAT, FORMAT_VERSION, MODEL_JSON, PSEUDOLABELER_OUTPUTS, load_model_spec, safe_name
from prnseg.sizes import parse_hw
from prnseg.training.checkpoint import file_sha256, load_checkpoint
from prnseg.training.config import shipped_configs
from prnseg.training.data.transforms import IMG_MEAN, IMG_STD
from prnseg.training.loading import checkpoint_weights, load_checkpoint_model

from . import DEFAULT_CALIB_IMAGES, DEFAULT_MAX_BATCH, DEFAULT_NOISE_FROM, DEFAULT_OPSET, DEFAULT_WEIGHTS, MIN_OPSET
from . import NOISE_FROM
from . import onnx_export
from .graphs import PRNGraph, PseudoLabeler, SegmenterGraph
from .parity import load_calibration, run_parity

STRIDE = 32


class ExportError(PrnsegError):
    """The checkpoint, the options or the output directory do not allow an export."""


class ParityGateError(ExportError):
    """The artefacts were written but disagree with PyTorch; ``model_dir`` holds them, not ready."""

    def __init__(self, message: str, model_dir: Path):
        super().__init__(message)
        self.model_dir = model_dir


def parse_size(size) -> tuple[int, int]:
    """``"HxW"`` or ``(H, W)`` -> (H, W), both positive multiples of the output stride."""
    return parse_hw(size, "--size", STRIDE, error=ExportError)


class _Steps:
    """One line per export step on stderr, with its duration."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.i = total, enabled, 0

    def run(self, what: str, fn, *args, **kwargs):
        self.i += 1
        t0 = time.perf_counter()
        if self.enabled:
            print(f"[{self.i}/{self.total}] {what} ...", end="", file=sys.stderr, flush=True)
        try:
            result = fn(*args, **kwargs)
        except BaseException:
            if self.enabled:
                print(" failed", file=sys.stderr, flush=True)
            raise
        if self.enabled:
            print(f" done ({time.perf_counter() - t0:.1f} s)", file=sys.stderr, flush=True)
        return result


def _read_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _check_out_dir(out: Path, overwrite: bool) -> None:
    """Refuse a destination that holds something we must not replace."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory; choose another --out")
    if out.is_dir() and any(out.iterdir()):
        doc = _read_json(out / MODEL_JSON)
        if doc is None or doc.get("format") != FORMAT:
            raise ExportError(f"--out {out}: exists, is not empty and is not an exported model; "
                              "choose a new or empty directory")
        if doc.get("ready") and not overwrite:
            raise ExportError(f"--out {out}: already holds a ready exported model; pass --overwrite to "
                              "replace it, or choose another --out")


def _make_staging(out: Path) -> Path:
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=parent))
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose a writable "
                          "directory") from None
    return tmp


def _move_into_place(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` with renames (same filesystem): never a half-populated ``out``."""
    if out.is_dir() and any(out.iterdir()):
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / "model")
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def _training_data(cfg) -> dict:
    """The source and target datasets the model was trained on (kind and root; a root that exists
    from here as an absolute path), so later commands (``prnseg import-labels``' train line) can
    name them instead of asking the user to."""
    out = {}
    for name in ("source", "target"):
        d = getattr(cfg.data, name)
        root = Path(str(d.root)) if str(d.root) else None
        if root is not None and root.is_dir():
            root = root.resolve()
        out[name] = {"kind": d.kind, "root": str(root) if root is not None else ""}
    return out


def _class_prior(state: dict, num_classes: int) -> list[float] | None:
    """The teacher's running mean class probability on its training target crops
    (training/class_prior.py), which ``prnseg label --tta`` logit-adjusts its labels by; None for a
    checkpoint without one (source-only training, or written before it was recorded)."""
    marginal = (state.get("class_marginal") or {}).get("marginal")
    if marginal is None or len(marginal) != num_classes:
        return None
    return [float(v) for v in marginal]


def _versions() -> dict:
    import onnx
    import onnxruntime
    import transformers

    return {"prnseg": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "transformers": transformers.__version__}


def _artefact(path: Path, precision: str, opset: int, **extra) -> dict:
    return {"file": path.name, "precision": precision, "opset": opset, "sha256": file_sha256(path),
            "bytes": path.stat().st_size, **extra}


@dataclass
class _Job:
    """Everything one export needs, resolved and validated before anything is written."""

    checkpoint: Path
    out: Path
    cfg: object
    state: dict
    segmentor: torch.nn.Module
    prn: torch.nn.Module | None
    reference: PseudoLabeler
    weights: str
    buckets: list[tuple[int, int]]
    max_batch: int
    fp16: bool
    tensorrt: bool
    triton: bool
    calib_dir: object
    calib_images: int
    opset: int
    overwrite: bool


def export_model(checkpoint, out_dir, *, weights: str = DEFAULT_WEIGHTS, sizes=None,
                 max_batch: int = DEFAULT_MAX_BATCH, fp16: bool = False, tensorrt: bool = False, triton: bool = False,
                 calib_dir=None, progress: bool = True, opset: int = DEFAULT_OPSET, overwrite: bool = False,
                 calib_images: int = DEFAULT_CALIB_IMAGES, noise_from: str = DEFAULT_NOISE_FROM) -> Path:
    """Export ``checkpoint`` into ``out_dir`` and gate it on parity; returns ``out_dir``.

    ``weights="auto"`` takes the EMA teacher when the checkpoint has one (it makes the
    pseudo-labels during training), else the student. ``sizes=None`` exports one bucket, the
    config's val resize as (H, W). ``noise_from``: the noise output of a PRN checkpoint's fused
    graph, ``confidence`` (1 - the written label's confidence, cut at ``1 - uda.pseudo_threshold``
    as a model without a PRN is) or ``prn`` (the PRN's noise head at ``prn.noise_threshold``).
    Raises ``ParityGateError`` after writing a not-ready directory when the artefacts disagree with
    PyTorch, ``ExportError`` for bad inputs.
    """
    checkpoint, out = Path(checkpoint), Path(out_dir)
    if int(opset) < MIN_OPSET:
        raise ExportError(f"--opset {opset}: must be >= {MIN_OPSET} (LayerNormalization is a single node only "
                          "from opset 17; older opsets decompose it and overflow in fp16)")
    if int(max_batch) < 1:
        raise ExportError(f"--max-batch {max_batch}: must be >= 1")
    if noise_from not in NOISE_FROM:
        raise ExportError(f"--noise-from {noise_from!r}: use {' or '.join(NOISE_FROM)}")
    buckets = [parse_size(s) for s in sizes] if sizes else None
    if tensorrt:
        from .tensorrt import require_tensorrt

        require_tensorrt()
    _check_out_dir(out, overwrite)
    state = load_checkpoint(checkpoint, map_location="cpu")
    segmentor, prn, cfg = load_checkpoint_model(checkpoint, weights, "cpu", state=state)
    weights = checkpoint_weights(state, weights)
    if buckets is None:
        buckets = [parse_size(cfg.data.val.size)]
    from_prn = prn is not None and noise_from == "prn"
    noise_threshold = cfg.prn.noise_threshold if from_prn else round(1.0 - cfg.uda.pseudo_threshold, 6)
    job = _Job(checkpoint, out, cfg, state, segmentor, prn,
               PseudoLabeler(segmentor, prn, IMG_MEAN, IMG_STD, noise_threshold,
                             use_refined_labels=cfg.prn.use_refined_labels,
                             refine_min_confidence=cfg.prn.refine_min_confidence,
                             noise_from=noise_from).eval(), weights,
               list(dict.fromkeys(buckets)), int(max_batch), bool(fp16), bool(tensorrt), bool(triton), calib_dir,
               int(calib_images), int(opset), bool(overwrite))
    tmp = _make_staging(out)
    try:
        steps = _Steps(3 + (prn is not None) + job.fp16 + job.tensorrt + job.triton, progress)
        return _export_into(tmp, job, steps)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _export_into(tmp: Path, job: _Job, steps: _Steps) -> Path:
    h0, w0 = job.buckets[0]
    n_ln = onnx_export.count_layernorm_modules(job.segmentor)
    files: dict[str, Path] = {}
    files["segmenter"] = steps.run("segmenter.onnx", onnx_export.export_segmenter, SegmenterGraph(job.segmentor),
                                   tmp / "segmenter.onnx", (h0, w0), job.opset, n_ln)
    if job.prn is not None:
        files["prn"] = steps.run("prn.onnx", onnx_export.export_prn, PRNGraph(job.prn), job.segmentor,
                                 tmp / "prn.onnx", (h0, w0), job.opset)
    files["pseudolabeler"] = steps.run("pseudolabeler.onnx", onnx_export.export_pseudolabeler, job.reference,
                                       tmp / "pseudolabeler.onnx", (h0, w0), job.opset, n_ln)
    if job.fp16:
        from .fp16 import convert_pseudolabeler_fp16

        files["pseudolabeler_fp16"] = steps.run("pseudolabeler_fp16.onnx", convert_pseudolabeler_fp16,
                                                files["pseudolabeler"], tmp / "pseudolabeler_fp16.onnx", n_ln)
    doc = _model_doc(job, files)
    if job.tensorrt:
        from .tensorrt import build_engines

        doc["artefacts"]["tensorrt"] = steps.run("TensorRT engines", build_engines, files, tmp, job.buckets,
                                                 job.max_batch, job.fp16)
    _write_json(tmp / MODEL_JSON, doc)
    spec = load_model_spec(tmp, require_ready=False)

    # synthetic scenes at 1.5x the first bucket, so the gate exercises the resize in ModelSpec.fit
    images, desc = load_calibration(job.calib_dir, job.calib_images if job.calib_dir is not None else 0,
                                    size_wh=(w0 * 3 // 2, h0 * 3 // 2))
    runners = _engine_runners(spec, doc["artefacts"].get("tensorrt") or [])
    report = steps.run(f"parity gate ({len(images)} images x {len(job.buckets)} buckets)", run_parity,
                       job.reference, spec, files, images, desc, runners)
    _write_json(tmp / "parity.json", report)
    doc["parity"] = {"passed": report["passed"], "failures": report["failures"], "summary": report["summary"],
                     "calibration": desc, "file": "parity.json"}
    if job.triton:
        from .triton import write_triton_repository

        steps.run("Triton model repository", write_triton_repository, tmp, doc)
    doc["ready"] = report["passed"]
    doc["not_ready_reason"] = None if report["passed"] else "parity gate failed: " + "; ".join(report["failures"])
    _write_json(tmp / MODEL_JSON, doc)

    if report["passed"]:
        _check_out_dir(job.out, job.overwrite)
        _move_into_place(tmp, job.out)
        return job.out
    # Never replace a working model with a rejected one: it goes next to it instead.
    current = _read_json(job.out / MODEL_JSON) if job.out.is_dir() else None
    dest = job.out.with_name(job.out.name + ".rejected") if current and current.get("ready") else job.out
    if dest == job.out:
        _check_out_dir(dest, overwrite=True)
    elif dest.exists():
        shutil.rmtree(dest)
    _move_into_place(tmp, dest)
    raise ParityGateError(f"parity gate failed: {'; '.join(report['failures'])}; the artefacts are in {dest} "
                          "marked not ready (see parity.json)", dest)


def _engine_runners(spec, entries: list[dict]) -> dict:
    """The TensorRT plans as parity runners (one runner over all buckets per precision)."""
    if not entries:
        return {}
    from prnseg.model_spec import Bucket
    from prnseg.serve.trt_runtime import TensorRTRunner

    runners = {}
    for precision in sorted({e["precision"] for e in entries}):
        plans = {Bucket(e["bucket"]["height"], e["bucket"]["width"]): e for e in entries if e["precision"] == precision}
        runners[f"tensorrt_{precision}"] = TensorRTRunner(spec, plans).run
    return runners


def _write_json(path: Path, doc: dict) -> None:
    atomic_write_text(path, json.dumps(doc, indent=2) + "\n")


def _model_doc(job: _Job, files: dict[str, Path]) -> dict:
    cfg = job.cfg
    artefacts = {key: _artefact(path, "fp16" if key.endswith("_fp16") else "fp32", job.opset)
                 for key, path in files.items()}
    num_classes = cfg.model.num_classes
    classes = (list(CITYSCAPES_CLASSES) if num_classes == len(CITYSCAPES_CLASSES)
               else [str(i) for i in range(num_classes)])
    palette = [list(map(int, c)) for c in CITYSCAPES_PALETTE[:num_classes]]
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "name": safe_name(job.out.resolve().name),
        "ready": False, "not_ready_reason": "export in progress",
        "classes": classes, "palette": palette, "ignore_index": IGNORE_INDEX,
        "input": {"name": "image", "dtype": "uint8", "layout": "NHWC", "color": "RGB",
                  "mean": list(IMG_MEAN), "std": list(IMG_STD),
                  "buckets": [{"height": h, "width": w} for h, w in job.buckets],
                  "max_batch": job.max_batch, "dynamic": {"batch": True, "height_width": "any multiple of 32"},
                  "resize": "keep-ratio fit + bottom/right pad with mean colour; see prnseg/model_spec.py"},
        "outputs": {name: {"dtype": "uint8", "shape": ["N", "H", "W"], "meaning": meaning}
                    for name, meaning in PSEUDOLABELER_OUTPUTS.items()},
        "noise": {"source": job.reference.noise_source, "threshold": job.reference.noise_threshold},
        "label_source": ("prn_refined" if job.prn is not None and job.reference.use_refined_labels
                         else "segmenter"),
        "refine_min_confidence": job.reference.refine_min_confidence,
        "class_prior": _class_prior(job.state, num_classes),
        "artefacts": artefacts,
        "opset": job.opset,
        "precision": ["fp32", "fp16"] if "pseudolabeler_fp16" in files else ["fp32"],
        "producer": _versions(),
        "checkpoint": {"file": job.checkpoint.name, "sha256": file_sha256(job.checkpoint), "weights": job.weights,
                       "iteration": int(job.state.get("step", 0)), "config": cfg.name,
                       "config_shipped": cfg.name in shipped_configs(), "arch": cfg.model.arch,
                       "head": cfg.model.head, "mode": cfg.uda.mode, "data": _training_data(cfg)},
    }
