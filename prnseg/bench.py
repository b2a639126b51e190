"""``prnseg bench``: speed and accuracy of every inference backend, and the training step cost, here.

Like ``yolo benchmark``: for each encoder (random weights, or an exported model as is), size and
batch it exports the model with ``prnseg export`` (fp32 + fp16, TensorRT plans where TensorRT and
a GPU are present) and measures, per backend and precision:

- **engine**: the pseudo-labelling graph alone on pre-decoded, bucket-sized uint8 batches (host
  to device and back included, warm-up excluded): median and p90 latency per batch, images/s;
- **end to end**: real PNG files on disk through the ``prnseg label`` pipeline (decode + resize
  + infer + encode + write), images/s;
- **parity**: label / raw-label / noise agreement with PyTorch fp32 on the same inputs
  (synthetic target-style scenes from the built-in benchmark's renderer).

PyTorch eager runs ``export.graphs.PseudoLabeler``, the module the export traces and its parity
gate compares against, so every backend computes the same thing. The training part times a few
``UDATrainer`` steps of ``self_training`` and ``prn`` in separate ``prnseg train`` processes (so
each one's peak memory is its own) and reads their ``summary.json``.

Results go to ``OUT/bench.json`` and ``OUT/bench.md`` (rewritten atomically after every step, so
an interrupted run keeps what it measured). Nothing is faked: a backend that cannot run here is
a row that says why.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prnseg import __version__
from prnseg import sizes
from prnseg.checks import check_checkpoint, check_model_dir
from prnseg.errors import PrnsegError

DEFAULT_ARCHS = ("mit_b0", "mit_b5")
# The Cityscapes test scale on every device. On a 2-core CPU the default run takes ~5.5 min when
# the machine is idle (MiT-B5 + DAFormer head: ~3.5 s per image, ~2 min to export) and more when
# the cores are shared; --sizes 256x512 takes ~2.5 min.
DEFAULT_SIZE_CUDA = "512x1024"
DEFAULT_SIZE_CPU = "512x1024"
QUICK = {"arch": ["tiny"], "sizes": ["128x256"], "images": 2, "iters": 2, "train_steps": 3, "train_crop": 128}
WORK_MARKER = ".prnseg-bench-work"
BACKENDS = ("pytorch", "onnxruntime", "tensorrt")
# Relative cost of one image forward per encoder at 512x1024 (measured ratios on a CPU, the
# DAFormer head included); only used to estimate the remaining time before a step has run.
ARCH_COST = {"tiny": 0.04, "mit_b0": 1.0, "mit_b1": 1.3, "mit_b2": 1.9, "mit_b3": 2.3, "mit_b4": 2.7,
             "mit_b5": 3.0}
AUTO_MIN_SECONDS = 2.0
AUTO_MAX_ITERS = 200


class BenchError(PrnsegError):
    """Bad ``prnseg bench`` arguments or an output folder it cannot use."""


# ----------------------------------------------------------------------------------------- CLI

def add_bench_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--model", default=None, metavar="MODEL_DIR",
                     help="benchmark this exported model (prnseg export) as it is, instead of random-weight encoders")
    src.add_argument("--arch", nargs="+", default=None, metavar="ARCH",
                     help="encoders to build with random weights: tiny, mit_b0 .. mit_b5 "
                          f"(default: {' '.join(DEFAULT_ARCHS)})")
    p.add_argument("--checkpoint", default=None, metavar="CKPT",
                   help="with --model: the checkpoint it was exported from, for the PyTorch rows and a PyTorch "
                        "parity reference (without it, parity is measured against ONNX Runtime fp32)")
    p.add_argument("--sizes", nargs="+", default=None, metavar="HxW",
                   help=f"input sizes, HEIGHTxWIDTH in multiples of 32 (default {DEFAULT_SIZE_CPU}, the Cityscapes "
                        "test scale; with --model: its buckets)")
    p.add_argument("--batch", nargs="+", type=int, default=[1], metavar="N", help="batch sizes (default 1)")
    p.add_argument("--iters", type=int, default=0, metavar="N",
                   help=f"timed iterations per row (default 0 = auto: at least 3 and one pass over the images, "
                        f"more while a row has run under {AUTO_MIN_SECONDS:g} s)")
    p.add_argument("--warmup", type=int, default=None, metavar="N",
                   help="untimed iterations before each row (default 1 on a CPU, 3 on a GPU)")
    p.add_argument("--images", type=int, default=None, metavar="N",
                   help="synthetic target-style scenes per size: the engine rows cycle through them, parity is "
                        "measured on all of them, the end-to-end run labels them as PNG files (default 4 on a CPU, "
                        "32 on a GPU)")
    p.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS), metavar="NAME",
                   help=f"which backends to measure, from {', '.join(BACKENDS)} (default: all)")
    p.add_argument("--no-fp16", dest="fp16", action="store_false", help="measure fp32 only")
    p.add_argument("--train", action=argparse.BooleanOptionalAction, default=True,
                   help="also time training steps of self_training vs prn and their peak memory (default: on)")
    p.add_argument("--train-arch", default=None, metavar="ARCH",
                   help="encoder for the training part (default: tiny on a CPU, mit_b5 on a GPU)")
    p.add_argument("--train-crop", type=int, default=None, metavar="PX",
                   help="training crop size (default 256 on a CPU, 512 on a GPU; batch 2+2 as in DAFormer)")
    p.add_argument("--train-steps", type=int, default=None, metavar="N",
                   help="training steps per mode, >= 3; the median step time is reported, so the first (warm-up) "
                        "step does not count (default 6)")
    p.add_argument("--device", default="auto", help="auto (a CUDA GPU when there is one), cpu, cuda or cuda:N")
    p.add_argument("--threads", type=int, default=None, metavar="T",
                   help="CPU threads for PyTorch and ONNX Runtime (default: the libraries' choice)")
    p.add_argument("--out", default="runs/bench", metavar="DIR", help="where bench.json and bench.md go "
                   "(default runs/bench)")
    p.add_argument("--keep", action="store_true", help="keep the exported models, images and label outputs in "
                   "OUT/work (default: removed at the end)")
    p.add_argument("--quick", action="store_true",
                   help="a seconds-long smoke run: tiny encoder, 128x256, 2 images, 2 iterations, 3 training steps")


# ------------------------------------------------------------------------------------ settings

@dataclass
class Settings:
    device: str  # "cpu" or "cuda:i"
    archs: list[str]
    sizes: list[tuple[int, int]]
    batches: list[int]
    iters: int
    warmup: int
    images: int
    backends: list[str]
    fp16: bool
    train: bool
    train_arch: str
    train_crop: int
    train_steps: int
    threads: int | None
    out: Path
    keep: bool
    quick: bool
    model: Path | None = None
    checkpoint: Path | None = None

    @property
    def on_cuda(self) -> bool:
        return self.device.startswith("cuda")


def parse_hw(text: str) -> tuple[int, int]:
    return sizes.parse_hw(text, "--sizes", 32, error=BenchError)


def resolve_device(spec: str) -> str:
    import torch

    from prnseg.serve.predictor import BackendError, parse_device

    if str(spec).strip().lower() == "auto":
        return "cuda:0" if torch.cuda.is_available() else "cpu"
    try:
        kind, idx = parse_device(spec)
    except BackendError:
        raise BenchError(f"--device {spec!r}: use auto, cpu, cuda or cuda:N") from None
    if kind == "cpu":
        return "cpu"
    if not torch.cuda.is_available():
        raise BenchError(f"--device {spec}: no CUDA GPU is visible to PyTorch here; use --device cpu")
    if idx >= torch.cuda.device_count():
        raise BenchError(f"--device {spec}: only {torch.cuda.device_count()} CUDA device(s) here")
    return f"cuda:{idx}"


def settings_from_args(args: argparse.Namespace) -> Settings:
    for text in args.sizes or []:
        parse_hw(text)
    if args.model:
        check_model_dir(args.model)
    if args.checkpoint:
        check_checkpoint(args.checkpoint, "--checkpoint")
    from prnseg.training.models.factory import ENCODERS

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    archs = list(args.arch or (QUICK["arch"] if args.quick else DEFAULT_ARCHS))
    for a in archs:
        if a not in ENCODERS:
            raise BenchError(f"--arch {a}: unknown encoder; choose from {', '.join(ENCODERS)}")
    train_arch = args.train_arch or ("tiny" if args.quick or not cuda else "mit_b5")
    if train_arch not in ENCODERS:
        raise BenchError(f"--train-arch {train_arch}: unknown encoder; choose from {', '.join(ENCODERS)}")
    default_sizes = QUICK["sizes"] if args.quick else [DEFAULT_SIZE_CUDA if cuda else DEFAULT_SIZE_CPU]
    sizes = [parse_hw(s) for s in (args.sizes or ([] if args.model else default_sizes))]
    train_steps = args.train_steps or (QUICK["train_steps"] if args.quick else 6)
    for name, value, low in (("--batch", min(args.batch), 1), ("--iters", args.iters, 0),
                             ("--train-steps", train_steps, 3)):
        if value < low:
            raise BenchError(f"{name} must be >= {low}, got {value}")
    if args.images is not None and args.images < 1:
        raise BenchError(f"--images must be >= 1, got {args.images}")
    if args.warmup is not None and args.warmup < 0:
        raise BenchError(f"--warmup must be >= 0, got {args.warmup}")
    if args.threads is not None and args.threads < 1:
        raise BenchError(f"--threads must be >= 1, got {args.threads}")
    if args.checkpoint and not args.model:
        raise BenchError("--checkpoint goes with --model (the checkpoint that model was exported from)")
    crop = args.train_crop or (QUICK["train_crop"] if args.quick else (512 if cuda else 256))
    if crop < 32 or crop % 32:
        raise BenchError(f"--train-crop {crop}: must be a positive multiple of 32")
    return Settings(
        device=device, archs=archs, sizes=sizes, batches=list(dict.fromkeys(args.batch)),
        iters=args.iters or (QUICK["iters"] if args.quick else 0),
        warmup=args.warmup if args.warmup is not None else (3 if cuda else 1),
        images=args.images or (QUICK["images"] if args.quick else (32 if cuda else 4)),
        backends=list(dict.fromkeys(args.backends)), fp16=args.fp16, train=args.train, train_arch=train_arch,
        train_crop=crop, train_steps=train_steps,
        threads=args.threads, out=Path(args.out), keep=args.keep, quick=args.quick,
        model=Path(args.model) if args.model else None,
        checkpoint=Path(args.checkpoint) if args.checkpoint else None)


# ------------------------------------------------------------------------------------- machine

def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram_gb() -> float | None:
    with contextlib.suppress(ValueError, OSError, AttributeError):
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    return None


def _version(module: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return None
    try:
        mod = __import__(module)
    except Exception as exc:  # a broken install is worth reporting, not crashing on
        return f"import failed: {type(exc).__name__}"
    return str(getattr(mod, "__version__", "unknown"))


def machine_info(device: str) -> dict:
    """CPU, cores, RAM, GPU and the versions of everything that runs a row."""
    import onnxruntime as ort
    import torch

    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    info = {
        "cpu": _cpu_model(), "cpu_cores_logical": os.cpu_count(), "cpu_cores_usable": usable, "ram_gb": _ram_gb(),
        "os": platform.platform(), "python": platform.python_version(),
        "gpus": [], "device": device,
        "versions": {"prnseg": __version__, "torch": torch.__version__, "onnxruntime": ort.__version__,
                     "onnx": _version("onnx"), "transformers": _version("transformers"),
                     "tensorrt": _version("tensorrt") or "not installed", "numpy": np.__version__,
                     "torch_cuda": torch.version.cuda},
        "onnxruntime_providers": ort.get_available_providers(),
        "load_average_start": _loadavg(),
    }
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            prop = torch.cuda.get_device_properties(i)
            info["gpus"].append({"index": i, "name": prop.name, "memory_gb": round(prop.total_memory / 2**30, 1),
                                 "compute_capability": f"{prop.major}.{prop.minor}"})
    return info


def _loadavg() -> list[float] | None:
    with contextlib.suppress(OSError, AttributeError):
        return [round(v, 2) for v in os.getloadavg()]
    return None


# ---------------------------------------------------------------------------------- progress

class Progress:
    """One line per step on stderr, with its duration and an estimate of the time left.

    Each step has a weight (image-forward equivalents x the encoder's relative cost x pixels);
    seconds per weight unit are calibrated on the steps already run.
    """

    def __init__(self, weights: list[float]):
        self.weights = weights
        self.done_w = 0.0
        self.done_s = 0.0
        self.i = 0
        self.t_start = time.perf_counter()

    def skip(self, what: str) -> None:
        """A planned step that will not run (a backend not available here), said as such."""
        print(f"[{self.i + 1}/{max(len(self.weights), self.i + 1)}] {what}", file=sys.stderr, flush=True)
        self.i += 1

    def left_s(self) -> float | None:
        if self.done_w <= 0:
            return None
        return self.done_s / self.done_w * sum(self.weights[self.i:])

    @contextlib.contextmanager
    def step(self, what: str):
        n = len(self.weights)
        print(f"[{self.i + 1}/{n}] {what} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        status = "done"
        try:
            yield
        except BaseException:
            status = "failed"
            raise
        finally:
            dt = time.perf_counter() - t0
            self.done_w += self.weights[self.i] if self.i < n else 0.0
            n = max(n, self.i + 1)
            self.done_s += dt
            self.i += 1
            left = self.left_s()
            eta = f"; about {_fmt_s(left)} left (estimate)" if left is not None and self.i < n else ""
            print(f"      {status} in {_fmt_s(dt)}{eta}", file=sys.stderr, flush=True)


def _fmt_s(s: float) -> str:
    if s < 90:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min"


def unit_cost(arch: str, hw: tuple[int, int], batch: int = 1) -> float:
    return ARCH_COST.get(arch, 1.0) * hw[0] * hw[1] / (512 * 1024) * batch


# -------------------------------------------------------------------------------- measurement

def timed_runs(run, batches: list[np.ndarray], warmup: int, iters: int) -> tuple[list[float], list[dict]]:
    """(seconds per timed call, outputs of the first pass over ``batches``).

    ``iters=0`` is auto: at least 3 calls and one pass over the batches, continued while the
    row has run under ``AUTO_MIN_SECONDS`` (up to ``AUTO_MAX_ITERS``).
    """
    for i in range(warmup):
        run(batches[i % len(batches)])
    need = max(iters or 3, len(batches))
    times, first = [], []
    while len(times) < need or (not iters and sum(times) < AUTO_MIN_SECONDS and len(times) < AUTO_MAX_ITERS):
        b = batches[len(times) % len(batches)]
        t0 = time.perf_counter()
        out = run(b)
        times.append(time.perf_counter() - t0)
        if len(first) < len(batches):
            first.append(out)
    return times, first


def latency_stats(times: list[float], batch: int) -> dict:
    t = np.asarray(times)
    return {"latency_ms_median": round(float(np.median(t)) * 1e3, 3),
            "latency_ms_p90": round(float(np.percentile(t, 90)) * 1e3, 3),
            "images_per_s": round(batch * len(t) / float(t.sum()), 3), "iters": len(t)}


def parity(outputs: list[dict], reference: list[dict]) -> dict:
    """Agreement of a backend's uint8 outputs with the reference's on the same batches."""
    n = same_label = same_raw = same_noise = 0
    conf_max = prob_max = 0
    for out, ref in zip(outputs, reference):
        n += ref["label"].size
        same_label += int(np.count_nonzero(out["label"] == ref["label"]))
        same_raw += int(np.count_nonzero(out["raw_label"] == ref["raw_label"]))
        same_noise += int(np.count_nonzero(out["noise"] == ref["noise"]))
        conf_max = max(conf_max, int(np.abs(out["confidence"].astype(np.int16) - ref["confidence"]).max()))
        prob_max = max(prob_max, int(np.abs(out["noise_prob"].astype(np.int16) - ref["noise_prob"]).max()))
    return {"label_agreement_pct": round(100.0 * same_label / max(n, 1), 4),
            "raw_label_agreement_pct": round(100.0 * same_raw / max(n, 1), 4),
            "noise_agreement_pct": round(100.0 * same_noise / max(n, 1), 4),
            "confidence_max_diff": conf_max, "noise_prob_max_diff": prob_max, "pixels": n}


def render_images(hw: tuple[int, int], n: int, seed: int = 0) -> list[np.ndarray]:
    """``n`` synthetic target-style street scenes, RGB uint8 at exactly ``hw`` (H, W)."""
    from prnseg.training.data.synthetic import render_scene

    h, w = hw
    return [render_scene(np.random.SeedSequence([seed, 7, i]), (w, h), "target")[0] for i in range(n)]


def make_batches(images: list[np.ndarray], batch: int) -> list[np.ndarray]:
    """Batches of ``batch`` images covering every image at least once (the last wraps around)."""
    k = math.ceil(len(images) / batch)
    return [np.stack([images[(j * batch + i) % len(images)] for i in range(batch)]) for j in range(k)]


def write_e2e_images(images: list[np.ndarray], folder: Path) -> Path:
    """The scenes as PNG files at twice the bucket size (a camera frame the pipeline scales down,
    as Cityscapes' 2048x1024 into a 1024x512 bucket)."""
    import cv2

    from prnseg.serve.image_io import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for i, rgb in enumerate(images):
        big = cv2.resize(rgb, (rgb.shape[1] * 2, rgb.shape[0] * 2), interpolation=cv2.INTER_LINEAR)
        write_image(folder / f"frame_{i:04d}.png", big)
    return folder


# ------------------------------------------------------------------------------------ results

@dataclass
class Results:
    settings: Settings
    machine: dict
    inference: list[dict] = field(default_factory=list)
    exports: list[dict] = field(default_factory=list)
    training: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    complete: bool = False

    def doc(self) -> dict:
        s = self.settings
        return {
            "format": "prnseg-bench", "prnseg": __version__, "complete": self.complete,
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(self.started)),
            "wall_s": round(time.time() - self.started, 1),
            "machine": {**self.machine, "load_average_now": _loadavg()},
            "settings": {"device": s.device, "archs": s.archs if s.model is None else None,
                         "model": str(s.model) if s.model else None,
                         "weights": "random (untrained)" if s.model is None else "the exported model's",
                         "sizes": [f"{h}x{w}" for h, w in s.sizes], "batches": s.batches,
                         "iters": s.iters or "auto", "warmup": s.warmup, "images": s.images,
                         "backends": s.backends, "fp16": s.fp16, "quick": s.quick,
                         "train": {"arch": s.train_arch, "crop": s.train_crop, "steps": s.train_steps} if s.train
                         else None},
            "definitions": {
                "engine": "pseudo-labelling graph alone on pre-decoded bucket-sized uint8 batches; host->device "
                          "copy and uint8 outputs back to the host included; warm-up excluded; latency per batch",
                "end_to_end": "prnseg label pipeline on PNG files (2x the bucket size): decode + resize + infer + "
                              "encode + atomic write of labels/noise/confidence; images/s over the run, model "
                              "loading excluded",
                "parity": "agreement of each backend's uint8 outputs with the reference on the same inputs "
                          "(synthetic target-style scenes), in % of pixels",
            },
            "inference": self.inference, "exports": self.exports, "training": self.training, "notes": self.notes,
        }

    def save(self) -> None:
        from prnseg.serve.image_io import atomic_write_bytes

        doc = self.doc()
        self.settings.out.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(self.settings.out / "bench.json", (json.dumps(doc, indent=2) + "\n").encode())
        atomic_write_bytes(self.settings.out / "bench.md", render_markdown(doc).encode())


def _cell(v, fmt="{:.1f}") -> str:
    return "-" if v is None else fmt.format(v)


def render_markdown(doc: dict) -> str:
    m = doc["machine"]
    gpus = ", ".join(f"{g['name']} ({g['memory_gb']} GB)" for g in m["gpus"]) or "none"
    v = m["versions"]
    lines = [
        "# prnseg bench" + ("" if doc["complete"] else " (incomplete: the run was interrupted or is in progress)"),
        "",
        f"Machine: {m['cpu']}, {m['cpu_cores_usable']} usable cores of {m['cpu_cores_logical']}, "
        f"{m['ram_gb']} GB RAM; GPU: {gpus}; device used: {m['device']}.  ",
        f"Versions: prnseg {v['prnseg']}, torch {v['torch']}, onnxruntime {v['onnxruntime']} "
        f"(providers: {', '.join(m['onnxruntime_providers'])}), tensorrt {v['tensorrt']}.  ",
        f"Load average at start / end: {m['load_average_start']} / {m['load_average_now']}; "
        f"total wall time {_fmt_s(doc['wall_s'])}.  ",
        f"Weights: {doc['settings']['weights']}.",
        "",
        "## Inference",
        "",
        "| model | size (HxW) | batch | backend | precision | runs on | engine median ms | engine p90 ms | "
        "engine img/s | end-to-end img/s | label agree % | noise agree % | status |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in doc["inference"]:
        e, e2e, p = r.get("engine") or {}, r.get("end_to_end") or {}, r.get("parity") or {}
        status = r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('reason', '')}"
        if r.get("is_reference"):
            status = "ok (parity reference)"
        status = status.replace("|", "\\|")
        lines.append(
            f"| {r['model']} | {r['size']} | {r['batch']} | {r['backend']} | {r['precision']} | "
            f"{r.get('runs_on') or '-'} | {_cell(e.get('latency_ms_median'))} | {_cell(e.get('latency_ms_p90'))} | "
            f"{_cell(e.get('images_per_s'), '{:.2f}')} | {_cell(e2e.get('images_per_s'), '{:.2f}')} | "
            f"{_cell(p.get('label_agreement_pct'), '{:.3f}')} | {_cell(p.get('noise_agreement_pct'), '{:.3f}')} | "
            f"{status} |")
    if doc["exports"]:
        lines += ["", "## Exports (prnseg export)", "", "| model | seconds | pseudolabeler.onnx MB | "
                  "pseudolabeler_fp16.onnx MB | export parity gate, label agreement % |", "|---|---|---|---|---|"]
        for x in doc["exports"]:
            mb = x.get("files_mb", {})
            gate = ", ".join(f"{k} {v['label_agreement_pct']:.3f}" for k, v in x.get("export_parity_gate", {}).items())
            lines.append(f"| {x['model']} | {_cell(x.get('seconds'))} | {_cell(mb.get('pseudolabeler.onnx'))} | "
                         f"{_cell(mb.get('pseudolabeler_fp16.onnx'))} | {gate or '-'} |")
    t = doc["training"]
    if t:
        lines += ["", "## Training step", ""]
        if t.get("status") != "ok":
            lines.append(f"{t.get('status')}: {t.get('reason', '')}")
        else:
            lines += [f"{t['arch']} + DAFormer head (config {t['config']}), {t['crop']}x{t['crop']} crops, batch "
                      f"{t['batch']}, {t['steps']} steps per mode on {t['device']} (amp: {t['amp']}); memory: "
                      f"{t['memory_kind']}.",
                      "", "| mode | median step s | peak memory MB |", "|---|---|---|"]
            for mode, r in t["modes"].items():
                lines.append(f"| {mode} | {_cell(r.get('median_step_s'), '{:.3f}')} | "
                             f"{_cell(r.get('peak_memory_mb'), '{:.0f}')} |")
            lines += ["", f"Step-time ratio prn / self_training: {_cell(t.get('step_time_ratio'), '{:.2f}')}; "
                          f"peak-memory ratio: {_cell(t.get('memory_ratio'), '{:.2f}')}."]
    if doc["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    d = doc["definitions"]
    lines += ["", "Definitions: engine = " + d["engine"] + ". End-to-end = " + d["end_to_end"] + ". Parity = "
              + d["parity"] + ".", ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------------- inference

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


def _tensorrt_state(s: Settings) -> tuple[bool, str | None]:
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
    from prnseg.serve.image_io import write_image, write_palette_png
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
    cfg = load_config(base, [f"model.arch={arch}", "model.pretrained=", "uda.mode=prn", f"data.val.size=[{h},{w}]"])
    torch.manual_seed(0)
    model = create_model_from_config(cfg.model, pretrained=False).eval()
    prn = create_prn_from_config(model, cfg.prn).eval()
    jitter_constant_tensors(model)
    jitter_constant_tensors(prn)
    ckpt = work / f"{name}.pt"
    save_checkpoint({"config": cfg.to_dict(), "step": 0, "student": model.state_dict(), "prn": prn.state_dict(),
                     "meta": {"arch": arch, "head": cfg.model.head, "mode": "prn", "weights": "random"}}, ckpt)
    calib = _write_calibration(work / f"calib_{h}x{w}", hw)
    trt, _ = _tensorrt_state(s)
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
        target.fp16_reason = f"failed: prnseg export --fp16 raised {_reason(exc)}"
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
        from prnseg.serve.model_spec import load_model_spec

        spec = load_model_spec(out)
        target.labeler = PseudoLabeler(model, prn, spec.mean, spec.std, spec.noise_threshold,
                                       use_refined_labels=cfg.prn.use_refined_labels,
                                       refine_min_confidence=cfg.prn.refine_min_confidence).eval().to(s.device)
    return target


def model_target(s: Settings, hw: tuple[int, int], log) -> Target:
    """``--model DIR`` at one of its buckets; PyTorch from ``--checkpoint`` when given."""
    from prnseg.serve.model_spec import load_model_spec

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
        if (prn is None) != (spec.noise_source == "confidence"):
            raise BenchError(f"--checkpoint {s.checkpoint}: {'has no' if prn is None else 'has a'} PRN but "
                             f"{s.model} was exported {'with' if prn is None else 'without'} one; pass the "
                             "checkpoint the model was exported from")
        target.labeler = PseudoLabeler(model, prn, spec.mean, spec.std, spec.noise_threshold,
                                       use_refined_labels=cfg.prn.use_refined_labels,
                                       refine_min_confidence=cfg.prn.refine_min_confidence).eval().to(s.device)
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


def _row(target: Target, batch: int, backend: str, precision: str, **kw) -> dict:
    h, w = target.hw
    return {"model": target.name, "arch": target.arch, "size": f"{h}x{w}", "batch": batch, "backend": backend,
            "precision": precision, **kw}


def torch_runner(labeler, device: str, dtype):
    import torch

    from prnseg.export.graphs import PSEUDOLABELER_OUTPUT_ORDER

    def run(batch: np.ndarray) -> dict:
        x = torch.from_numpy(batch).to(device)
        ctx = torch.autocast(device.split(":")[0], dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.inference_mode(), ctx:
            outs = labeler(x)
        return {n: t.cpu().numpy() for n, t in zip(PSEUDOLABELER_OUTPUT_ORDER, outs)}

    return run


def pytorch_variants(s: Settings) -> list[tuple[str, object, str | None]]:
    """(precision name, autocast dtype, skip reason) for the PyTorch rows."""
    import torch

    out = [("fp32", None, None)]
    if not s.fp16:
        return out
    if not s.on_cuda:
        return out + [("bf16/fp16 autocast", None, "skipped: autocast is measured on CUDA only")]
    bf16 = torch.cuda.is_bf16_supported()
    out.append(("bf16 autocast", torch.bfloat16, None if bf16 else "skipped: this GPU has no bf16"))
    out.append(("fp16 autocast", torch.float16, None))
    return out


def runtime_variants(s: Settings, target: Target) -> list[tuple[str, str, dict, str | None]]:
    """(backend label, precision, Predictor kwargs, skip reason) for the exported-artefact rows."""
    import onnxruntime as ort

    rows = []
    if "onnxruntime" in s.backends:
        for prec in ("fp32", "fp16") if s.fp16 else ("fp32",):
            reason = None if prec == "fp32" or target.fp16_ready else target.fp16_reason
            rows.append(("onnxruntime", prec, {"backend": "onnxruntime", "precision": prec}, reason))
        if s.on_cuda:
            has = "TensorrtExecutionProvider" in ort.get_available_providers()
            prec = "fp16" if s.fp16 and target.fp16_ready else "fp32"
            rows.append(("onnxruntime TensorRT EP", prec, {"backend": "onnxruntime", "precision": prec,
                                                           "trt_ep": True},
                         None if has else "not available: this onnxruntime has no TensorrtExecutionProvider"))
    if "tensorrt" in s.backends:
        _, reason = _tensorrt_state(s)
        precisions = ["fp16"] if s.fp16 and (target.fp16_ready or s.model is not None) else ["fp32"]
        if reason is None:
            from prnseg.serve.model_spec import load_model_spec

            plans = load_model_spec(target.model_dir).artefacts.get("tensorrt") or []  # --model: s.model
            if not plans and s.model is not None:
                reason = "skipped: the model has no TensorRT plans (re-export with --tensorrt on this GPU)"
            precisions = sorted({e.get("precision") for e in plans}) or precisions
        for prec in precisions:
            rows.append(("tensorrt", prec, {"backend": "tensorrt", "precision": prec}, reason))
    return rows


def bench_target(target: Target, s: Settings, images: list[np.ndarray], e2e_dir: Path, work: Path,
                 results: Results, progress: Progress, log) -> None:
    """Every backend row of one target at every batch size; a row that fails is logged and kept."""
    from prnseg.serve.predictor import Predictor

    def record(row: dict) -> None:
        results.inference.append(row)
        results.save()

    def skip(row: dict, what: str, reason: str) -> None:
        """``reason`` is "status: why" (skipped / not installed / not available)."""
        status, _, why = reason.partition(": ")
        row.update(status=status, reason=why)
        progress.skip(f"{target.name} batch {row['batch']}: {what}: {reason}")

    for batch in s.batches:
        batches = make_batches(images, batch)
        rows: list[dict] = []
        reference = None
        ref_name = None
        for prec, dtype, reason in pytorch_variants(s) if "pytorch" in s.backends else []:
            row = _row(target, batch, "pytorch", prec, runs_on=s.device)
            if target.labeler is None:
                reason = "skipped: --model without --checkpoint (PyTorch needs the training checkpoint)"
            if reason:
                skip(row, f"pytorch {prec}", reason)
            else:
                try:
                    with progress.step(f"{target.name} batch {batch}: pytorch {prec} engine"):
                        times, outs = timed_runs(torch_runner(target.labeler, s.device, dtype), batches,
                                                 s.warmup, s.iters)
                    row.update(status="ok", engine=latency_stats(times, batch), end_to_end=None,
                               end_to_end_note="prnseg label runs the exported artefacts, not PyTorch")
                    if reference is None:
                        reference, ref_name = outs, f"pytorch {prec}"
                        row["is_reference"] = True
                    row["parity"] = parity(outs, reference)
                except Exception as exc:  # one backend failing must not stop the others
                    row.update(status="failed", reason=_reason(exc))
                    log(f"      pytorch {prec}: {row['reason']}")
            rows.append(row)
            record(row)
        for label, prec, kwargs, reason in runtime_variants(s, target):
            row = _row(target, batch, label, prec)
            if reason:
                skip(row, f"{label} {prec}", reason)
                rows.append(row)
                record(row)
                continue
            pred = None
            try:
                with progress.step(f"{target.name} batch {batch}: {label} {prec} engine + end to end"):
                    pred = Predictor(target.model_dir, device=s.device, threads=s.threads, max_batch=batch, **kwargs)
                    row["runs_on"] = pred.provider
                    times, outs = timed_runs(pred.run_batch, batches, s.warmup, s.iters)
                    row.update(status="ok", engine=latency_stats(times, batch))
                    if reference is None:
                        reference, ref_name = outs, f"{label} {prec}"
                        row["is_reference"] = True
                    row["parity"] = parity(outs, reference)
                    pred = None
                    gc.collect()
                    try:
                        row["end_to_end"] = end_to_end(target, batch, kwargs, prec, s, e2e_dir, work, log)
                    except Exception as exc:  # the engine numbers stand; say why the pipeline run did not
                        row["end_to_end"] = {"images_per_s": None, "status": "failed", "reason": _reason(exc)}
                        log(f"      {label} {prec} end to end: {_reason(exc)}")
            except Exception as exc:  # one backend failing must not stop the others
                row.update(status="failed", reason=_reason(exc))
                log(f"      {label} {prec}: {row['reason']}")
            finally:
                del pred
                gc.collect()
            rows.append(row)
            record(row)
        for row in rows:
            if row.get("parity") is not None:
                row["parity"]["reference"] = ref_name
        results.save()


def _reason(exc: BaseException) -> str:
    msg = (str(exc).strip().splitlines() or [""])[0][:300]
    return msg if isinstance(exc, PrnsegError) else f"{type(exc).__name__}: {msg}"


def end_to_end(target: Target, batch: int, kwargs: dict, prec: str, s: Settings, e2e_dir: Path, work: Path,
               log) -> dict:
    """``prnseg label`` (``label_folder``, which opens its own predictor as the CLI does) on the PNG files."""
    from prnseg.serve.pipeline import LabelOptions, label_folder

    if kwargs.get("trt_ep"):
        return {"images_per_s": None, "note": "prnseg label has no option for the TensorRT execution provider"}
    out = work / "label" / f"{target.name}_b{batch}_{kwargs['backend']}_{prec}"
    if out.exists():
        shutil.rmtree(out)
    opts = LabelOptions(input_dir=e2e_dir, out_dir=out, model_dir=target.model_dir, batch=batch,
                        workers=min(4, os.cpu_count() or 1), device=s.device, precision=prec, threads=s.threads,
                        progress=False, backend=kwargs["backend"])
    report = label_folder(opts, log=log)
    run = report["run"]
    res = {"images_per_s": run.get("images_per_s"), "images": report["counts"]["labelled_this_run"],
           "failed": report["counts"]["failed_this_run"], "wall_s": run.get("wall_s"),
           "load_s": run.get("load_s"), "stage_s": run.get("stage_s"), "provider": run.get("provider"),
           "workers": opts.workers}
    if res["failed"]:
        log(f"      end to end: {res['failed']} images failed (see {out / 'failures.jsonl'})")
    if not s.keep:
        shutil.rmtree(out, ignore_errors=True)
    return res


# ---------------------------------------------------------------------------------- training

PEAK_FILE = "peak_memory.json"
# ``prnseg train`` in a child process that then records its own peak RSS. The kernel's VmHWM of
# the new process image is used, not the summary's ru_maxrss: a child started by vfork/exec
# inherits the spawning process's high-water mark in ru_maxrss (here: every model benchmarked).
TRAIN_ENTRY = "import sys; from prnseg.bench import train_entry; sys.exit(train_entry(sys.argv[1:]))"


def train_entry(argv: list[str]) -> int:
    """Run ``prnseg ARGV`` (a train command with ``--out DIR``), then write ``DIR/peak_memory.json``."""
    from prnseg.cli import main
    from prnseg.serve.image_io import atomic_write_bytes

    rc = main(argv)
    hwm = _proc_status_mb("VmHWM")
    if rc == 0 and hwm is not None:
        out = Path(argv[argv.index("--out") + 1])
        atomic_write_bytes(out / PEAK_FILE, json.dumps({"vm_hwm_mb": hwm}).encode())
    return rc


def _proc_status_mb(field_name: str) -> float | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024
    return None


def bench_training(s: Settings, work: Path, log) -> dict:
    """Median step time and peak memory of ``self_training`` and ``prn``, each in its own
    ``prnseg train`` process on a tiny synthetic set (step time from its ``summary.json``)."""
    from prnseg.training.data.synthetic import write_benchmark

    crop = s.train_crop
    w, h = 2 * crop, crop
    data = work / "train_data"
    write_benchmark(data, n_source=4, n_target=4, n_val=1, size=(w, h), seed=0, workers=1, progress=False,
                    overwrite=True)
    # the paper recipe (DAFormer + PRN, RCS, pseudo-label margins) for real encoders; the CPU-sized one for tiny
    config = "synthetic" if s.train_arch == "tiny" else "gta2cityscapes"
    result = {"status": "ok", "arch": s.train_arch, "config": config, "crop": crop, "batch": "2+2",
              "steps": s.train_steps, "device": s.device, "modes": {}}
    for mode in ("self_training", "prn"):
        out = work / f"train_{mode}"
        sets = [f"data.source.root={data / 'gta'}", f"data.target.root={data / 'cityscapes'}",
                f"data.val.root={data / 'cityscapes'}", f"data.source.size=[{h},{w}]",
                f"data.target.size=[{h},{w}]", f"data.val.size=[{h},{w}]", f"data.crop=[{crop},{crop}]",
                "data.workers=0", f"model.arch={s.train_arch}", f"uda.mode={mode}", f"train.iters={s.train_steps}",
                "train.eval_every=0", f"train.checkpoint_every={s.train_steps}", f"train.log_every={s.train_steps}",
                f"train.device={s.device}", "train.batch_size=2", "prn.start_iter=0"]
        if s.threads:
            sets.append(f"train.threads={s.threads}")
        argv = ["train", "--config", config, "--out", str(out), "--no-progress",
                *[a for kv in sets for a in ("--set", kv)]]
        proc = subprocess.run([sys.executable, "-c", TRAIN_ENTRY, *argv], capture_output=True, text=True)
        summary_path = out / "summary.json"
        if proc.returncode != 0 or not summary_path.is_file():
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            result["modes"][mode] = {"status": "failed", "reason": tail[0][:300]}
            log(f"      training {mode} failed: {tail[0][:300]}")
            continue
        summ = json.loads(summary_path.read_text())
        hwm = json.loads((out / PEAK_FILE).read_text()) if (out / PEAK_FILE).is_file() else {}
        if summ.get("peak_cuda_allocated_mb") is not None:
            peak, kind = summ["peak_cuda_allocated_mb"], "CUDA max_memory_allocated of the run"
        elif hwm.get("vm_hwm_mb"):
            peak, kind = hwm["vm_hwm_mb"], "peak RSS of the training process (Linux VmHWM)"
        else:
            peak, kind = summ.get("peak_rss_mb"), "peak RSS of the training process (ru_maxrss)"
        result["modes"][mode] = {"status": "ok", "median_step_s": summ.get("median_step_seconds"),
                                 "steps_timed": summ.get("steps_timed"), "peak_memory_mb": round(peak, 1)}
        result["amp"] = summ.get("amp")
        result["memory_kind"] = kind
        if not s.keep:
            shutil.rmtree(out, ignore_errors=True)
    modes = result["modes"]
    if all(m.get("status") == "ok" for m in modes.values()):
        st, prn = modes["self_training"], modes["prn"]
        result["step_time_ratio"] = round(prn["median_step_s"] / st["median_step_s"], 3)
        result["memory_ratio"] = round(prn["peak_memory_mb"] / st["peak_memory_mb"], 3)
    else:
        result["status"] = "failed"
        result["reason"] = "; ".join(f"{k}: {m['reason']}" for k, m in modes.items() if m.get("status") != "ok")
    return result


# --------------------------------------------------------------------------------------- main

def _prepare_work(out: Path) -> Path:
    if out.exists() and not out.is_dir():
        raise BenchError(f"--out {out}: exists and is not a directory; choose another --out")
    work = out / "work"
    if work.exists():
        if not (work / WORK_MARKER).is_file():
            raise BenchError(f"{work}: exists and was not made by prnseg bench; choose another --out")
        shutil.rmtree(work)
    work.mkdir(parents=True)
    (work / WORK_MARKER).write_text("scratch space of prnseg bench; removed by the next run\n")
    return work


def _plan_weights(s: Settings, targets: list[tuple[str, tuple[int, int]]]) -> list[float]:
    """Weights of the progress steps in the order they run, one per planned row (see ``Progress``)."""
    weights = []
    calls = s.warmup + max(s.iters or 3, s.images)
    n_torch = (1 + (2 if s.on_cuda else 1) * s.fp16) if "pytorch" in s.backends else 0
    n_runtime = ("onnxruntime" in s.backends) * ((2 if s.fp16 else 1) + s.on_cuda) + ("tensorrt" in s.backends)
    for arch, hw in targets:
        if s.model is None:
            weights.append(14 * unit_cost(arch, hw))  # traces + parity gate + fp16 conversion
        for b in s.batches:
            weights += [calls * unit_cost(arch, hw, b)] * n_torch
            weights += [(calls + s.images / b) * unit_cost(arch, hw, b)] * n_runtime
    if s.train:
        weights.append(s.train_steps * 2 * 10 * unit_cost(s.train_arch, (s.train_crop, s.train_crop), 4))
    return weights


def run_bench(args: argparse.Namespace) -> int:
    s = settings_from_args(args)
    import torch

    if s.threads:
        torch.set_num_threads(s.threads)
    if s.model is not None:
        from prnseg.serve.model_spec import load_model_spec

        spec = load_model_spec(s.model)
        buckets = [(b.height, b.width) for b in spec.buckets]
        for hw in s.sizes:
            if hw not in buckets:
                raise BenchError(f"--sizes {hw[0]}x{hw[1]}: not a bucket of {s.model} (it has "
                                 f"{', '.join(f'{h}x{w}' for h, w in buckets)}); re-export with --size")
        s.sizes = s.sizes or buckets
        if max(s.batches) > spec.max_batch:
            raise BenchError(f"--batch {max(s.batches)}: above {s.model}'s max_batch {spec.max_batch}; re-export "
                             "with --max-batch")
        if s.checkpoint is not None and not s.checkpoint.is_file():
            raise BenchError(f"--checkpoint {s.checkpoint}: file not found")
        targets = [(str(spec.raw.get("checkpoint", {}).get("arch", "model")), hw) for hw in s.sizes]
    else:
        targets = [(a, hw) for a in s.archs for hw in s.sizes]

    work = _prepare_work(s.out)
    results = Results(s, machine_info(s.device))
    notes = results.notes
    if s.model is None:
        notes.append("Encoders have random (untrained) weights, constant tensors (zero biases, unit norm weights) "
                     "jittered as a trained network's are: speed is what a trained model of the same architecture "
                     "gets; parity compares backends on the same random network.")
    la, cores = results.machine["load_average_start"], results.machine["cpu_cores_usable"]
    if la and cores and la[0] > 0.5 * cores:
        notes.append(f"The machine was busy when the run started (1-minute load average {la[0]} on {cores} "
                     "usable cores): CPU timings are slower than on an idle machine.")
    results.save()

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    gpu = next((g["name"] for g in results.machine["gpus"] if s.on_cuda and f"cuda:{g['index']}" == s.device), None)
    log(f"prnseg bench on {results.machine['cpu']} ({results.machine['cpu_cores_usable']} cores)"
        + (f" and {gpu}" if gpu else "") + f"; device {s.device}; writing {s.out / 'bench.json'}")
    if s.model is None:
        log(f"models: {', '.join(s.archs)} with random weights at {', '.join(f'{h}x{w}' for h, w in s.sizes)}")
    progress = Progress(_plan_weights(s, targets))
    try:
        for arch, hw in targets:
            h, w = hw
            target = None
            try:
                if s.model is None:
                    with progress.step(f"{arch} {h}x{w}: build (random weights) and prnseg export"):
                        target = build_random_target(arch, hw, s, work, log)
                else:
                    target = model_target(s, hw, log)
                results.exports.append(target.export_info)
                images = render_images(hw, s.images)
                e2e_dir = write_e2e_images(images, work / f"images_{h}x{w}")
                bench_target(target, s, images, e2e_dir, work, results, progress, log)
            except Exception as exc:  # one model failing to export must not stop the others
                if s.model is not None and isinstance(exc, PrnsegError):
                    raise
                log(f"      {arch} {h}x{w} failed: {_reason(exc)}")
                results.inference.append({"model": f"{arch}_{h}x{w}", "arch": arch, "size": f"{h}x{w}",
                                          "batch": "-", "backend": "export", "precision": "-", "status": "failed",
                                          "reason": _reason(exc)})
            finally:
                if not s.keep:
                    for p in work.glob(f"model_{arch}_{h}x{w}*"):
                        shutil.rmtree(p, ignore_errors=True)
                target = None
                gc.collect()
                if s.on_cuda:
                    torch.cuda.empty_cache()
            results.save()
        if s.train:
            with progress.step(f"training: self_training vs prn, {s.train_arch}, {s.train_steps} steps each"):
                results.training = bench_training(s, work, log)
        results.complete = True
        results.save()
    finally:
        if not s.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_summary(results)
    return 0


def print_summary(results: Results) -> None:
    doc = results.doc()
    for r in doc["inference"]:
        e, e2e, p = r.get("engine") or {}, r.get("end_to_end") or {}, r.get("parity") or {}
        if r["status"] != "ok":
            print(f"{r['model']} b{r['batch']} {r['backend']} {r['precision']}: {r['status']}"
                  + (f" ({r['reason']})" if r.get("reason") else ""))
            continue
        e2e_txt = f", end to end {e2e['images_per_s']:.2f} img/s" if e2e.get("images_per_s") else ""
        print(f"{r['model']} b{r['batch']} {r['backend']} {r['precision']}: engine {e['latency_ms_median']:.1f} ms "
              f"median ({e['images_per_s']:.2f} img/s){e2e_txt}; label agreement {p['label_agreement_pct']:.3f}% "
              f"vs {p.get('reference')}")
    t = doc["training"]
    if t and t.get("status") == "ok":
        m = t["modes"]
        print(f"training {t['arch']} {t['crop']}px batch 2+2: self_training {m['self_training']['median_step_s']:.3f} s"
              f"/step, prn {m['prn']['median_step_s']:.3f} s/step (ratio {t['step_time_ratio']:.2f}); peak memory "
              f"{m['self_training']['peak_memory_mb']:.0f} vs {m['prn']['peak_memory_mb']:.0f} MB")
    elif t:
        print(f"training: {t.get('status')}: {t.get('reason')}")
    out = results.settings.out
    print(f"wrote {out / 'bench.json'} and {out / 'bench.md'} ({_fmt_s(doc['wall_s'])})")
