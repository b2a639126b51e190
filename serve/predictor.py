"""``Predictor``: run an exported model on images of any size, without torch.

The runtime robots embed and ``prnseg label`` drives: it reads ``model.json`` (via
:mod:`prnseg.model_spec`), opens ``pseudolabeler.onnx`` in ONNX Runtime or the exported
TensorRT plans, fits each image into its size bucket, runs batches of up to ``max_batch`` images
per bucket and maps every output plane back to the image's own size. The whole pseudo-labeller
(normalisation, segmenter, PRN, upsampling, softmax, argmax, noise threshold) is one graph, so
only uint8 planes ever cross from the device to the host.

Execution providers are chosen explicitly from ``device`` and reported in ``provider``; a
requested provider that is not there is a logged fallback, never a silent one.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from prnseg.devices import CHOICES as DEVICE_CHOICES
from prnseg.devices import Device, DeviceError, resolve_device
from prnseg.errors import PrnsegError
from prnseg.model_spec import (
    PSEUDOLABELER_OUTPUTS,
    ArtefactIntegrityError,
    Bucket,
    ModelSpec,
    ModelSpecError,
    Placement,
    load_model_spec,
    safe_name,
)

log = logging.getLogger("prnseg.serve")

OUTPUT_NAMES = tuple(PSEUDOLABELER_OUTPUTS)
BACKENDS = ("auto", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16")


class BackendError(PrnsegError):
    """A requested backend, device or precision cannot run this model here."""


@dataclass
class Prediction:
    """One image's outputs, uint8 H x W at the image's own size (meanings: ``PSEUDOLABELER_OUTPUTS``)."""

    label: np.ndarray
    raw_label: np.ndarray
    noise: np.ndarray
    noise_prob: np.ndarray
    confidence: np.ndarray

    def noise_at(self, threshold: float) -> np.ndarray:
        """Noise mask at another threshold, from the uint8 ``noise_prob`` (no re-run).

        ``noise_prob = round(p * 255)``, so ``p >= t`` becomes ``noise_prob >= ceil(255 t + 0.5)``:
        exact when ``255 t`` is a half-integer (t = 0.5 gives the graph's own mask) and within
        1/510 of ``t`` otherwise.
        """
        return self.noise_prob >= noise_level(threshold)


def noise_level(threshold: float) -> int:
    """The smallest uint8 ``noise_prob`` counted noisy at probability ``threshold`` (256: none)."""
    t = float(threshold)
    if not math.isfinite(t):
        raise ValueError(f"noise threshold must be a number in [0, 1], got {threshold}")
    if t <= 0.0:
        return 0
    return min(256, int(math.ceil(255.0 * t + 0.5 - 1e-6)))


def cuda_driver_present() -> bool:
    """True when the NVIDIA driver library loads: a GPU build of a runtime alone is not a GPU."""
    for name in ("libcuda.so.1", "libcuda.so", "nvcuda.dll"):
        try:
            ctypes.CDLL(name)
            return True
        except OSError:
            continue
    return False


def tensorrt_available() -> bool:
    from prnseg.serve.trt_compat import tensorrt_version

    return tensorrt_version() is not None


def runtime_gpu_count() -> int:
    """1 when a GPU runtime (ONNX Runtime's CUDA provider, or TensorRT) and the NVIDIA driver are
    present, else 0: what ``device="auto"`` asks (the runtimes cannot count GPUs before opening one)."""
    try:
        import onnxruntime as ort
        has_cuda_ep = "CUDAExecutionProvider" in ort.get_available_providers()
    except ImportError:
        has_cuda_ep = False
    return int((has_cuda_ep or tensorrt_available()) and cuda_driver_present())


def cpu_throughput_config(cpus: int | None = None) -> tuple[int, int]:
    """(streams, intra-op threads) for batch throughput on a CPU: concurrent batches of few
    threads each avoid the per-operator synchronisation of one wide session (on 2 cores, two
    single-threaded streams run this project's tiny model ~1.4x faster than one 2-thread stream)."""
    cpus = max(1, int(cpus or os.cpu_count() or 1))
    streams = min(4, cpus)
    return streams, max(1, cpus // streams)


def check_images(images) -> list[np.ndarray]:
    """Validate a batch of H x W x 3 uint8 RGB arrays; errors name the index and the format."""
    if isinstance(images, np.ndarray):
        raise ValueError("predict() takes a list of H x W x 3 uint8 RGB arrays; wrap a single image in a list")
    out = []
    for i, img in enumerate(images):
        if not isinstance(img, np.ndarray):
            raise ValueError(f"image {i}: expected an H x W x 3 uint8 RGB numpy array, got {type(img).__name__}")
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or img.shape[0] < 1 or img.shape[1] < 1:
            raise ValueError(f"image {i}: expected an H x W x 3 uint8 RGB array, got {img.dtype} array of "
                             f"shape {img.shape} (convert with prnseg.image_io.to_rgb_uint8 or read_image)")
        out.append(img)
    return out


class _OrtRunner:
    """``pseudolabeler.onnx`` in an ONNX Runtime session; IO binding on CUDA keeps tensors on the device."""

    def __init__(self, key: str, spec: ModelSpec, kind: str, index: int, precision: str, threads: int | None,
                 trt_ep: bool, spin: bool, outputs: Sequence[str] = OUTPUT_NAMES):
        import onnxruntime as ort

        self.outputs = tuple(outputs)

        path = spec.artefact_path(key)
        model_bytes = spec.artefact_bytes(key)  # verified against model.json's sha256; the session parses these

        self.ort = ort
        available = ort.get_available_providers()
        providers: list = []
        if kind == "cuda":
            if trt_ep:
                if "TensorrtExecutionProvider" in available:
                    providers.append(("TensorrtExecutionProvider", self._trt_ep_options(spec, index, precision)))
                else:
                    log.warning("TensorRT execution provider requested but this onnxruntime has none "
                                "(available: %s); using the CUDA provider", ", ".join(available))
            if "CUDAExecutionProvider" in available:
                providers.append(("CUDAExecutionProvider", {"device_id": index}))
            else:
                log.warning("device cuda:%d requested but this onnxruntime has no CUDA provider (available: %s); "
                            "running on the CPU (install onnxruntime-gpu)", index, ", ".join(available))
        providers.append("CPUExecutionProvider")
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if threads:
            opts.intra_op_num_threads = int(threads)
        if not spin:
            # Idle intra-op threads otherwise spin and steal the cores decode/encode threads need.
            opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(model_bytes, sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelSpecError(f"{path}: ONNX Runtime cannot load it ({str(exc).splitlines()[0][:200]}); "
                                 "re-export the model") from None
        self.providers = self.session.get_providers()
        self.on_cuda = self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
        if kind == "cuda" and not self.on_cuda and "CUDAExecutionProvider" in available:
            log.warning("the CUDA provider could not start on cuda:%d (no usable GPU or CUDA/cuDNN libraries); "
                        "running on the CPU", index)
        self.index = index
        inputs = self.session.get_inputs()
        names = {o.name for o in self.session.get_outputs()}
        if [i.name for i in inputs] != ["image"] or not set(self.outputs) <= names:
            raise ModelSpecError(f"{path}: expected input 'image' and outputs {', '.join(self.outputs)}; got "
                                 f"{[i.name for i in inputs]} -> {sorted(names)} (re-export the model)")
        dims = inputs[0].shape
        self.fixed_batch = dims[0] if isinstance(dims[0], int) and dims[0] > 0 else None

    @staticmethod
    def _trt_ep_options(spec: ModelSpec, index: int, precision: str) -> dict:
        """One TensorRT-EP optimisation profile per bucket, engines cached per model."""
        cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "prnseg" / "trt_ep"
        sha = str(spec.artefacts.get("pseudolabeler", {}).get("sha256", spec.name))[:12]
        cache = cache / f"{safe_name(spec.name)}-{safe_name(sha)}"
        cache.mkdir(parents=True, exist_ok=True)

        def shapes(n):
            return ",".join(f"image:{n}x{b.height}x{b.width}x3" for b in spec.buckets)

        return {
            "device_id": index, "trt_fp16_enable": precision == "fp16",
            "trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True, "trt_timing_cache_path": str(cache),
            "trt_profile_min_shapes": shapes(1), "trt_profile_opt_shapes": shapes(spec.max_batch),
            "trt_profile_max_shapes": shapes(spec.max_batch),
        }

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        if not self.on_cuda:
            return dict(zip(self.outputs, self.session.run(list(self.outputs), {"image": batch})))
        io = self.session.io_binding()
        io.bind_ortvalue_input("image", self.ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.index))
        for name in self.outputs:
            io.bind_output(name, "cuda", self.index)
        self.session.run_with_iobinding(io)
        return dict(zip(self.outputs, io.copy_outputs_to_cpu()))


class Predictor:
    """Refined label, raw label, noise mask, noise probability and confidence for RGB uint8 images.

    ``tta=True`` replaces the fused graph by test-time augmentation of ``segmenter.onnx``
    (:mod:`prnseg.serve.tta`): the label averaged over scales and mirrors, its confidence as the
    noise mask, the PRN unused. ``logit_adjustment`` is the tau its labels are adjusted by with the
    model's recorded class prior (None: the default 0.25; 0: plain argmax).

    ``backend``: ``onnxruntime``, ``tensorrt`` (the exported ``*.plan`` engines; needs the
    ``tensorrt`` package and a GPU) or ``auto`` (TensorRT when it, a GPU and plans for every
    bucket are present, else ONNX Runtime). ``device``: ``auto`` (CUDA when a GPU and a GPU build
    of ONNX Runtime are present), ``cpu``, ``cuda`` or ``cuda:N``. ``precision`` picks the fp32 or
    fp16 artefacts. ``threads`` sets ONNX Runtime's intra-op threads; ``streams`` is how many
    batches ``predict`` runs at once (on a CPU, ``cpu_throughput_config`` streams of few threads
    each beat one many-threaded stream for throughput; latency favours one stream); ``spin=False``
    keeps idle intra-op threads from busy-waiting (for pipelines that decode and encode on the
    same cores); ``trt_ep`` puts ONNX Runtime's TensorRT execution provider in front of CUDA.
    """

    def __init__(self, model_dir: str | os.PathLike, backend: str = "auto", device: str = "auto",
                 precision: str = "fp32", *, threads: int | None = None, streams: int = 1, spin: bool = True,
                 trt_ep: bool = False, max_batch: int | None = None, tta: bool = False,
                 logit_adjustment: float | None = None):
        if int(streams) < 1:
            raise BackendError(f"streams must be >= 1, got {streams}")
        self.streams = int(streams)
        self._pool = None
        if backend not in BACKENDS:
            raise BackendError(f"backend {backend!r} unknown; use one of {', '.join(BACKENDS)}")
        if precision not in PRECISIONS:
            raise BackendError(f"precision {precision!r} unknown; use fp32 or fp16")
        self.spec = load_model_spec(model_dir)
        self.precision = precision
        self.tta = bool(tta)
        self.logit_adjustment = 0.0   # the tau --tta's labels use (0 without --tta or a recorded class prior)
        if logit_adjustment is not None and logit_adjustment < 0:
            raise BackendError(f"logit_adjustment must be >= 0, got {logit_adjustment}")
        if logit_adjustment and not self.tta:
            raise BackendError("logit_adjustment applies to test-time augmented labels; pass tta=True as well")
        kind, index = self.resolve_device(device)
        self.device = "cpu" if kind == "cpu" else f"cuda:{index}"
        if self.tta:
            self.backend, self._runner = self._open_tta(backend, kind, index, threads, spin, logit_adjustment)
        else:
            self.backend, self._runner = self._open(backend, kind, index, threads, spin, trt_ep)
        #: the threshold the ``noise`` output is cut at: the model's, or the averaged confidence's with tta
        self.noise_threshold = float(self._runner.noise_threshold if self.tta else self.spec.noise_threshold)
        limit = self._runner.fixed_batch or self.spec.max_batch
        if self.tta:   # full-resolution class maps per view: keep a batch's within the runtime's budget
            from prnseg.serve.tta import batch_limit

            limit = min(limit, batch_limit(self.spec.num_classes, max(b.height * b.width for b in self.spec.buckets)))
        self.max_batch = max(1, min(limit, max_batch or limit))

    @staticmethod
    def resolve_device(device: str) -> Device:
        """:func:`prnseg.devices.resolve_device` with this runtime's probe: ``auto`` -> ("cuda", 0) when
        a GPU runtime and the NVIDIA driver are present, else ("cpu", 0); ``cuda[:N]`` is not checked
        here (without a GPU provider ONNX Runtime falls back to the CPU with a warning)."""
        try:
            return resolve_device(device, gpu_count=runtime_gpu_count, check=False)
        except DeviceError:
            raise BackendError(f"device {device!r} unknown; use {DEVICE_CHOICES}") from None

    def _tensorrt_plans(self) -> dict[Bucket, dict]:
        """The exported plan for each bucket at this precision (fp16 plans serve an fp32 request only
        when no fp32 plan exists: TensorRT plans are usually built fp16)."""
        plans: dict[Bucket, dict] = {}
        entries = self.spec.artefacts.get("tensorrt") or []
        unverifiable = [e["file"] for e in entries if not e.get("sha256")]
        if unverifiable and tensorrt_available():
            log.warning("%s: TensorRT plans %s have no recorded sha256 and are not loaded (a plan is native code); "
                        "re-export with --tensorrt", self.spec.root / "model.json", ", ".join(unverifiable))
        for want in (self.precision, "fp16" if self.precision == "fp32" else "fp32"):
            for e in entries:
                b = e["bucket"]
                bucket = Bucket(int(b["height"]), int(b["width"])) if isinstance(b, dict) else Bucket(*map(int, b))
                if e.get("sha256") and e.get("precision", "fp16") == want and bucket in self.spec.buckets:
                    plans.setdefault(bucket, e)
        return plans

    def _open(self, backend: str, kind: str, index: int, threads, spin, trt_ep):
        if backend in ("tensorrt", "auto"):
            reason = None
            plans = self._tensorrt_plans()
            if not tensorrt_available():
                reason = "the tensorrt package is not installed (pip install 'prnseg[tensorrt]')"
            elif kind != "cuda":
                reason = f"TensorRT needs a CUDA device, device is {self.device}"
            elif set(plans) != set(self.spec.buckets):
                reason = (f"{self.spec.root / 'model.json'} lists no TensorRT plan for every bucket "
                          "(re-export with --tensorrt on this GPU)")
            if reason is None:
                from prnseg.serve.trt_runtime import TensorRTRunner

                try:
                    runner = TensorRTRunner(self.spec, plans, index)
                    self.provider = runner.describe()
                    return "tensorrt", runner
                except ArtefactIntegrityError:
                    raise  # a plan that is not the exported one refuses the model, never falls back
                except PrnsegError as exc:
                    if backend == "tensorrt":
                        raise
                    reason = str(exc)
            if backend == "tensorrt":
                raise BackendError(f"backend tensorrt unavailable: {reason}; use --backend onnxruntime")
            if kind == "cuda":
                log.warning("TensorRT backend unavailable (%s); using ONNX Runtime", reason)
        key = "pseudolabeler" if self.precision == "fp32" else "pseudolabeler_fp16"
        if key not in self.spec.artefacts:
            raise BackendError(f"{self.spec.root}: this export has no {key}.onnx; re-export with --fp16 or use "
                               "precision fp32")
        runner = _OrtRunner(key, self.spec, kind, index, self.precision, threads, trt_ep, spin)
        where = "cpu" if not runner.on_cuda else f"cuda:{index}"
        self.device = where
        binding = ", io-binding" if runner.on_cuda else ""
        self.provider = f"onnxruntime {runner.providers[0]} on {where} ({self.precision}{binding})"
        return "onnxruntime", runner

    def _open_tta(self, backend: str, kind: str, index: int, threads, spin, logit_adjustment: float | None):
        """``segmenter.onnx`` in ONNX Runtime behind :class:`~prnseg.serve.tta.TTARunner`."""
        from prnseg.serve.tta import TTARunner, logit_adjustment_weights, resolve_logit_adjustment

        if backend == "tensorrt" or self.precision != "fp32":
            raise BackendError("test-time augmentation runs the fp32 segmenter.onnx in ONNX Runtime; use backend "
                               "onnxruntime (or auto) and precision fp32")
        segmenter = _OrtRunner("segmenter", self.spec, kind, index, "fp32", threads, False, spin, outputs=("logits",))
        where = "cpu" if not segmenter.on_cuda else f"cuda:{index}"
        self.device = where
        self.logit_adjustment = tau = resolve_logit_adjustment(self.spec.class_prior, logit_adjustment)
        weights = logit_adjustment_weights(self.spec.class_prior, tau)
        asked = logit_adjustment is None or logit_adjustment > 0
        adjusted = (f", labels logit-adjusted by the class prior (tau {tau:g})" if weights is not None
                    else ", labels not adjusted: model.json records no class_prior" if asked else "")
        self.provider = (f"onnxruntime {segmenter.providers[0]} on {where} (fp32, test-time augmentation: "
                         f"segmenter.onnx at 3 scales and their mirrors{adjusted})")
        return "onnxruntime", TTARunner(segmenter, self.spec.mean, self.spec.std, label_weights=weights)

    # -- the three stages, exposed so pipelines can run them on different threads --

    def prepare(self, image: np.ndarray) -> tuple[np.ndarray, Placement]:
        """One image -> its bucket-sized uint8 input and where it sits in it."""
        return self.spec.fit(image)

    def run_batch(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """N x H x W x 3 uint8 (one bucket, N <= max_batch) -> uint8 N x H x W planes per output name."""
        return self._runner.run(np.ascontiguousarray(batch, dtype=np.uint8))

    def finish(self, outputs: dict[str, np.ndarray], i: int, placement: Placement) -> Prediction:
        """Item ``i`` of a batch's outputs, mapped back to its image's size."""
        return Prediction(**{name: self.spec.unfit(outputs[name][i], placement) for name in OUTPUT_NAMES})

    def predict(self, images: Sequence[np.ndarray]) -> list[Prediction]:
        """Predictions in input order; images are grouped by bucket and run ``max_batch`` at a time."""
        images = check_images(images)
        prepared = [self.prepare(img) for img in images]
        groups: dict[Bucket, list[int]] = {}
        for i, (_, placement) in enumerate(prepared):
            groups.setdefault(placement.bucket, []).append(i)
        chunks = [idx[s:s + self.max_batch] for idx in groups.values() for s in range(0, len(idx), self.max_batch)]

        def run(chunk: list[int]) -> list[Prediction]:
            outputs = self.run_batch(np.stack([prepared[i][0] for i in chunk]))
            return [self.finish(outputs, j, prepared[i][1]) for j, i in enumerate(chunk)]

        if self.streams > 1 and len(chunks) > 1:
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._pool = ThreadPoolExecutor(self.streams, thread_name_prefix="prnseg-infer")
            done = list(self._pool.map(run, chunks))
        else:
            done = [run(c) for c in chunks]
        results: list[Prediction | None] = [None] * len(images)
        for chunk, preds in zip(chunks, done):
            for i, pred in zip(chunk, preds):
                results[i] = pred
        return results  # type: ignore[return-value]

    def __repr__(self) -> str:
        return f"Predictor({self.spec.name!r}, backend={self.backend!r}, provider={self.provider!r})"
