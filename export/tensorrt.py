"""TensorRT engines from the exported pseudo-labeler ONNX: one pure plan per size bucket.

Each plan has one optimisation profile: height and width fixed to the bucket (dynamic H/W is
where TensorRT builds go wrong for SegFormer), batch min 1 / opt = max = ``max_batch`` (folder
pseudo-labelling runs full batches; runtime memory is sized for max anyway). Plans are the
serialized engine bytes and nothing else, so ``trtexec --loadEngine``, Triton and C++ load them;
build metadata (TensorRT version, compute capability, profile) goes to ``model.json``.

Precision: fp32 plans come from ``pseudolabeler.onnx``. fp16 on TensorRT 10 uses the fp32 ONNX
with ``BuilderFlag.FP16`` and fp32 constraints on the same layers ``pseudolabeler_fp16.onnx``
keeps in fp32 (LayerNorm, softmax, everything outside the encoder); on TensorRT >= 11, where
the precision flags are gone and every network is strongly typed, it is built from
``pseudolabeler_fp16.onnx``. A persistent timing cache (per TensorRT version and GPU) makes
rebuilds fast. ``tensorrt`` is imported only inside functions.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from prnseg.atomic import atomic_write_bytes
from prnseg.errors import PrnsegError

from .fp16 import FP16_SCOPE

INPUT = "image"
WORKSPACE_BYTES = 4 << 30
NOT_INSTALLED = "tensorrt is not installed: pip install 'prnseg[tensorrt]' (needs NVIDIA's index) or drop --tensorrt"


class TensorRTBuildError(PrnsegError):
    """TensorRT is missing, finds no GPU, or fails to parse/build the network."""


def require_tensorrt() -> None:
    """Fail before any work when engines were asked for and cannot be built here."""
    if importlib.util.find_spec("tensorrt") is None:
        raise TensorRTBuildError(NOT_INSTALLED)
    _gpu()


def trt_major(version: str) -> int:
    return int(str(version).split(".")[0])


def profile_shapes(bucket: tuple[int, int], max_batch: int) -> dict[str, tuple[int, int, int, int]]:
    """min/opt/max shapes of the uint8 NHWC input for one bucket."""
    h, w = bucket
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    return {"min": (1, h, w, 3), "opt": (max_batch, h, w, 3), "max": (max_batch, h, w, 3)}


def plan_name(bucket: tuple[int, int], precision: str) -> str:
    h, w = bucket
    return f"pseudolabeler_{h}x{w}{'_fp16' if precision == 'fp16' else ''}.plan"


def engine_source(fp16: bool, major: int) -> str:
    """Which exported ONNX a plan is built from: ``pseudolabeler`` or ``pseudolabeler_fp16``."""
    return "pseudolabeler_fp16" if fp16 and major >= 11 else "pseudolabeler"


def default_timing_cache(version: str, compute_capability: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "prnseg" / "tensorrt"
    return base / f"timing_trt{version}_sm{compute_capability.replace('.', '')}.cache"


def engine_metadata(file: str, bucket, max_batch: int, precision: str, version: str, compute_capability: str,
                    gpu: str, source: str, strongly_typed: bool, plan: bytes) -> dict:
    """A plan's ``model.json`` entry; its sha256 is what a runtime checks before deserialising it."""
    shapes = profile_shapes(bucket, max_batch)
    return {"file": file, "sha256": hashlib.sha256(plan).hexdigest(), "bytes": len(plan),
            "bucket": {"height": bucket[0], "width": bucket[1]}, "input": INPUT,
            "min_batch": shapes["min"][0], "opt_batch": shapes["opt"][0], "max_batch": shapes["max"][0],
            "precision": precision, "tensorrt_version": version, "compute_capability": compute_capability,
            "gpu": gpu, "source": source, "strongly_typed": strongly_typed}


def _keep_fp32(trt, network) -> int:
    """TensorRT 10 with the FP16 flag: pin LayerNorm, softmax and every layer outside the encoder
    to fp32 (the same split as the fp16 ONNX). Returns the number of layers pinned."""
    float_types = (trt.float32, trt.float16)
    typed_by_definition = (trt.LayerType.CONSTANT, trt.LayerType.CAST)
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if layer.type in typed_by_definition:
            continue
        delicate = layer.type in (trt.LayerType.NORMALIZATION, trt.LayerType.SOFTMAX)
        if not (delicate or not layer.name.startswith(FP16_SCOPE)):
            continue
        outs = [layer.get_output(j) for j in range(layer.num_outputs)]
        if not outs or any(o.dtype not in float_types for o in outs):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    return pinned


def _gpu():
    import torch

    if not torch.cuda.is_available():
        raise TensorRTBuildError("TensorRT engines need a CUDA GPU and none is visible; drop --tensorrt or export on "
                                 "the GPU machine that will run them")
    major, minor = torch.cuda.get_device_capability(0)
    return f"{major}.{minor}", torch.cuda.get_device_name(0)


def build_engines(onnx_files: dict[str, Path], out_dir: Path, buckets, max_batch: int, fp16: bool,
                  timing_cache: Path | None = None, workspace: int = WORKSPACE_BYTES) -> list[dict]:
    """Build one plan per bucket into ``out_dir``; returns their ``model.json`` entries."""
    require_tensorrt()
    import tensorrt as trt

    version = str(trt.__version__)
    major = trt_major(version)
    cc, gpu = _gpu()
    source = engine_source(fp16, major)
    if source not in onnx_files:
        raise TensorRTBuildError(f"TensorRT {version} builds fp16 plans from pseudolabeler_fp16.onnx; "
                                 "export with --fp16")
    precision = "fp16" if fp16 else "fp32"
    cache_path = Path(timing_cache) if timing_cache else default_timing_cache(version, cc)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    entries = []
    for bucket in buckets:
        # TensorRT 10: STRONGLY_TYPED only for fp32 (no precision flags at all); 11: always strongly typed.
        flags = 0
        strongly_typed = major >= 11 or not fp16
        if major == 10 and strongly_typed:
            flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_files[source])):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise TensorRTBuildError(f"TensorRT {version} cannot parse {onnx_files[source].name}: {errors[:300]}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
        cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        shapes = profile_shapes(bucket, max_batch)
        profile = builder.create_optimization_profile()
        profile.set_shape(INPUT, shapes["min"], shapes["opt"], shapes["max"])
        config.add_optimization_profile(profile)
        if fp16 and major < 11:
            config.set_flag(trt.BuilderFlag.FP16)
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
            _keep_fp32(trt, network)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise TensorRTBuildError(f"TensorRT {version} failed to build the {bucket[0]}x{bucket[1]} engine (see the "
                                     "TensorRT log above)")
        name = plan_name(bucket, precision)
        plan = bytes(plan)
        atomic_write_bytes(Path(out_dir) / name, plan)
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(cache_path, bytes(config.get_timing_cache().serialize()))
        entries.append(engine_metadata(name, bucket, max_batch, precision, version, cc, gpu,
                                       onnx_files[source].name, strongly_typed, plan))
    return entries
