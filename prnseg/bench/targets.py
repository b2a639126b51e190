"""The models a run measures: random-weight encoders exported here, or an exported ``--model``.

A ``Target`` is one model at one size: its exported directory (what ONNX Runtime, TensorRT and
``prnseg label`` run) and, when there are weights for it, the PyTorch module the export traced,
so that every backend computes the same thing.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prnseg.bench.errors import BenchError, failure_reason
from prnseg.bench.settings import Settings


@dataclass
class Target:
    """One model to measure at one size: an exported directory plus, when available, its PyTorch reference."""

    name: str
    arch: str
    hw: tuple[int, int]
    model_dir: Path | None = None
    labeler: object = None  # export.graphs.PseudoLabeler on the bench device, or None
    export_info: dict = field(default_factory=dict)
    fp16_ready: bool = False
    fp16_reason: str | None = None


def tensorrt_state(s: Settings) -> tuple[bool, str | None]:
    """(build engines?, reason when not)."""
    if "tensorrt" not in s.backends:
        return False, None
    if importlib.util.find_spec("tensorrt") is None:
        return False, "not installed: pip install 'prnseg[tensorrt]' (TensorRT 10+)"
    if not s.on_cuda:
        return False, "skipped: TensorRT needs a CUDA device (--device cuda)"
    return True, None


def _write_calibration(folder: Path, hw: tuple[int, int]) -> Path:
    """One labelled synthetic scene in the images/ + labels/ layout: the export's parity gate on one
    image instead of its default four keeps big encoders' exports short (the bench measures parity
    on its own images anyway)."""
    from prnseg.image_io import write_image, write_palette_png
    from prnseg.training.data.synthetic import render_scene

    h, w = hw
    rgb, lab = render_scene(np.random.SeedSequence([0, 9]), (w * 3 // 2, h * 3 // 2), "target")
    write_image(folder / "images" / "calib_0.png", rgb)
    write_palette_png(folder / "labels" / "calib_0.png", lab)
    return folder


def jitter_constant_tensors(module, scale: float = 0.02) -> int:
    """Add small noise to every constant parameter/buffer (zero biases, unit norm weights, BN stats).

    A fresh initialisation is full of identical tensors, which the ONNX exporter merges into one
    shared initializer (and fp16 conversion cannot then split it between fp16 and fp32 nodes); a
    trained network has none. Returns how many tensors were changed.
    """
    import torch

    n = 0
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point() or t.numel() == 0 or not bool((t == t.flatten()[0]).all()):
                continue
            noise = torch.randn_like(t) * scale
            t.add_(noise.abs() if name.endswith("running_var") else noise)
            n += 1
    return n


def build_random_target(arch: str, hw: tuple[int, int], s: Settings, work: Path, log) -> Target:
    """Random-weight segmenter + PRN -> checkpoint -> ``export_model`` -> Target."""
    import torch

    from prnseg.export.exporter import ExportError, ParityGateError, export_model
    from prnseg.training.checkpoint import save_checkpoint
    from prnseg.training.config import load_config
    from prnseg.training.models.factory import create_model_from_config, create_prn_from_config

    h, w = hw
    name = f"{arch}_{h}x{w}"
    base = "synthetic" if arch == "tiny" else "gta2cityscapes"
    cfg = load_config(base, {"model.arch": arch, "model.pretrained": "", "uda.mode": "prn", "data.val.size": [h, w]})
    torch.manual_seed(0)
    model = create_model_from_config(cfg.model, pretrained=False).eval()
    prn = create_prn_from_config(model, cfg.prn).eval()
    jitter_constant_tensors(model)
    jitter_constant_tensors(prn)
    ckpt = work / f"{name}.pt"
    save_checkpoint({"config": cfg.to_dict(), "step": 0, "student": model.state_dict(), "prn": prn.state_dict(),
                     "meta": {"arch": arch, "head": cfg.model.head, "mode": "prn", "weights": "random"}}, ckpt)
    calib = _write_calibration(work / f"calib_{h}x{w}", hw)
    trt, _ = tensorrt_state(s)
    fp16 = s.fp16 and importlib.util.find_spec("onnxconverter_common") is not None
    kwargs = dict(sizes=[hw], max_batch=max(s.batches), tensorrt=trt, calib_dir=calib, calib_images=1,
                  progress=False)
    target = Target(name, arch, hw, labeler=None)
    out = work / f"model_{name}"
    t0 = time.perf_counter()
    try:
        export_model(ckpt, out, fp16=fp16, **kwargs)
        target.fp16_ready = fp16
    except ParityGateError as exc:
        if not fp16 or not _only_fp16_failed(exc.model_dir):
            raise
        # only the fp16 artefact failed the gate: keep its numbers, export fp32 alone to measure the rest
        target.fp16_reason = f"failed: the export parity gate ({_gate_summary(exc.model_dir)})"
    except Exception as exc:  # an fp16 conversion bug must not cost the fp32 rows
        if not fp16 or isinstance(exc, ExportError):
            raise
        target.fp16_reason = f"failed: prnseg export --fp16 raised {failure_reason(exc)}"
    if target.fp16_reason:
        log(f"      fp16 {target.fp16_reason}; exporting fp32 only")
        out = work / f"model_{name}_fp32"
        export_model(ckpt, out, fp16=False, **kwargs)
    if s.fp16 and not fp16:
        target.fp16_reason = "skipped: onnxconverter-common is not installed (pip install onnxconverter-common)"
    target.model_dir = out
    target.export_info = {"model": name, "seconds": round(time.perf_counter() - t0, 1), **_export_summary(out)}
    ckpt.unlink()
    if "pytorch" in s.backends:
        from prnseg.export.graphs import PseudoLabeler
        from prnseg.model_spec import load_model_spec

        spec = load_model_spec(out)
        target.labeler = PseudoLabeler(model, prn, spec.mean, spec.std, spec.noise_threshold,
                                       use_refined_labels=cfg.prn.use_refined_labels,
                                       refine_min_confidence=cfg.prn.refine_min_confidence).eval().to(s.device)
    return target


def model_target(s: Settings, hw: tuple[int, int], log) -> Target:
    """``--model DIR`` at one of its buckets; PyTorch from ``--checkpoint`` when given."""
    from prnseg.model_spec import load_model_spec

    spec = load_model_spec(s.model)
    arch = str(spec.raw.get("checkpoint", {}).get("arch", "model"))
    target = Target(f"{spec.name} ({arch})", arch, hw, model_dir=s.model)
    target.fp16_ready = s.fp16 and "pseudolabeler_fp16" in spec.artefacts
    if s.fp16 and not target.fp16_ready:
        target.fp16_reason = "skipped: the model has no pseudolabeler_fp16.onnx (re-export with --fp16)"
    target.export_info = {"model": target.name, **_export_summary(s.model)}
    if s.checkpoint is not None and "pytorch" in s.backends:
        from prnseg.export.graphs import PseudoLabeler
        from prnseg.training.evaluate import load_models

        weights = str(spec.raw.get("checkpoint", {}).get("weights", "student"))
        cfg, model, prn, _ = load_models(s.checkpoint, weights=weights, device="cpu")
        if (prn is None) == spec.has_prn:
            raise BenchError(f"--checkpoint {s.checkpoint}: {'has no' if prn is None else 'has a'} PRN but "
                             f"{s.model} was exported {'with' if prn is None else 'without'} one; pass the "
                             "checkpoint the model was exported from")
        target.labeler = PseudoLabeler(model, prn, spec.mean, spec.std, spec.noise_threshold,
                                       use_refined_labels=cfg.prn.use_refined_labels,
                                       refine_min_confidence=cfg.prn.refine_min_confidence,
                                       noise_from=spec.noise_source).eval().to(s.device)
    return target


def _only_fp16_failed(model_dir: Path) -> bool:
    with contextlib.suppress(OSError, ValueError, KeyError):
        failures = json.loads((Path(model_dir) / "parity.json").read_text())["failures"]
        return bool(failures) and all(f.startswith("pseudolabeler_fp16 ") for f in failures)
    return False


def _gate_summary(model_dir: Path) -> str:
    with contextlib.suppress(OSError, ValueError, KeyError):
        rep = json.loads((Path(model_dir) / "parity.json").read_text())
        m = rep["summary"].get("pseudolabeler_fp16", {})
        return (f"label agreement {100 * m['label_agreement']:.2f}%, mIoU delta {m['miou_delta']:.2f} "
                f"({m['miou_delta_basis']})")
    return "see its parity.json"


def _export_summary(model_dir: Path) -> dict:
    doc = json.loads((Path(model_dir) / "model.json").read_text())
    files = {a["file"]: a.get("bytes") for k, a in doc["artefacts"].items() if isinstance(a, dict)}
    for e in doc["artefacts"].get("tensorrt") or []:
        files[e["file"]] = (Path(model_dir) / e["file"]).stat().st_size
    gate = {k: {"label_agreement_pct": round(100 * m["label_agreement"], 4), "miou_delta": m.get("miou_delta")}
            for k, m in (doc.get("parity") or {}).get("summary", {}).items() if "label_agreement" in m}
    return {"files_mb": {f: round(b / 1e6, 2) for f, b in files.items() if b}, "export_parity_gate": gate,
            "ready": doc.get("ready")}
