"""Run the exported TensorRT plans without torch, pycuda or cuda-python.

Device buffers come from ONNX Runtime's CUDA allocator (``OrtValue`` on ``cuda``), which a
GPU install already has: the input batch is copied up once, the engine writes its uint8 output
planes into device buffers, and only those small planes are copied back. The engine runs on the
legacy default stream; the device is synchronised before outputs are read.

Plans are pure TensorRT engines (no header), one per size bucket, built for one TensorRT version
and GPU family: :func:`prnseg.serve.trt_compat.load_engine` checks both before deserialising and
raises a one-line reason with the fix, on which ``Predictor(backend="auto")`` falls back to ONNX
Runtime.
"""

from __future__ import annotations

import threading

import numpy as np

from prnseg.errors import PrnsegError
from prnseg.model_spec import PSEUDOLABELER_OUTPUTS, Bucket, ModelSpec, verified_bytes
from prnseg.serve.trt_compat import cudart, load_engine

OUTPUT_NAMES = tuple(PSEUDOLABELER_OUTPUTS)


class TensorRTError(PrnsegError):
    """A TensorRT plan cannot be loaded or run on this machine."""


class TensorRTRunner:
    """One deserialised engine and execution context per bucket; ``run`` takes one bucket's batch."""

    def __init__(self, spec: ModelSpec, plans: dict[Bucket, dict], device_index: int = 0):
        # A plan is native code: every plan's bytes are checked against model.json's sha256 before
        # TensorRT is even imported, and exactly those bytes are deserialised.
        blobs = {bucket: (spec.entry_path(entry), verified_bytes(spec.entry_path(entry), entry.get("sha256")))
                 for bucket, entry in plans.items()}
        import onnxruntime as ort
        import tensorrt as trt

        self.ort, self.trt = ort, trt
        self.index = int(device_index)
        self.version = trt.__version__
        self.engines: dict[Bucket, tuple] = {}
        batches = []
        for bucket, entry in plans.items():
            path, data = blobs[bucket]
            engine = load_engine(path, entry, self.index, data)
            names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
            missing = [n for n in ("image", *OUTPUT_NAMES) if n not in names]
            if missing:
                raise TensorRTError(f"{path}: engine lacks tensors {missing}; re-export with --tensorrt")
            max_batch = int(entry.get("max_batch") or engine.get_tensor_profile_shape("image", 0)[2][0])
            batches.append(max_batch)
            outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
            self.engines[bucket] = (engine, engine.create_execution_context(), outputs, path.name)
        self.fixed_batch = min(batches) if batches else None
        self._cudart = cudart()
        self._lock = threading.Lock()  # one execution context per bucket: one batch at a time

    def describe(self) -> str:
        files = ", ".join(v[3] for v in self.engines.values())
        return f"tensorrt {self.version} on cuda:{self.index} ({files})"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        bucket = Bucket(int(batch.shape[1]), int(batch.shape[2]))
        if bucket not in self.engines:
            raise TensorRTError(f"no TensorRT plan for input size {bucket.height}x{bucket.width}")
        with self._lock:
            return self._run(bucket, batch)

    def _run(self, bucket: Bucket, batch: np.ndarray) -> dict[str, np.ndarray]:
        engine, context, outputs, name = self.engines[bucket]
        ort = self.ort
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        context.set_input_shape("image", tuple(batch.shape))
        held = {"image": ort.OrtValue.ortvalue_from_numpy(batch, "cuda", self.index)}
        context.set_tensor_address("image", held["image"].data_ptr())
        for out in outputs:
            shape = tuple(context.get_tensor_shape(out))
            dtype = self.trt.nptype(engine.get_tensor_dtype(out))
            held[out] = ort.OrtValue.ortvalue_from_shape_and_type(shape, dtype, "cuda", self.index)
            context.set_tensor_address(out, held[out].data_ptr())
        if not context.execute_async_v3(0):
            raise TensorRTError(f"{name}: TensorRT execution failed for a batch of {batch.shape[0]}")
        if self._cudart is not None:
            self._cudart.cudaDeviceSynchronize()
        return {n: held[n].numpy().astype(np.uint8, copy=False) for n in OUTPUT_NAMES}
