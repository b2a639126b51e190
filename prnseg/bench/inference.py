"""The inference rows: every backend and precision of one target at every batch size.

Rows of one batch size share one parity reference, the first row that ran (PyTorch fp32 when
there are weights, else ONNX Runtime fp32). A backend that cannot run here, or fails, is a row
that says why; it never stops the others.
"""

from __future__ import annotations

import contextlib
import gc
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prnseg.bench.errors import failure_reason
from prnseg.bench.measure import latency_stats, make_batches, parity, timed_runs
from prnseg.bench.progress import Progress
from prnseg.bench.report import Results
from prnseg.bench.settings import Settings
from prnseg.bench.targets import Target, tensorrt_state


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
        _, reason = tensorrt_state(s)
        precisions = ["fp16"] if s.fp16 and (target.fp16_ready or s.model is not None) else ["fp32"]
        if reason is None:
            from prnseg.model_spec import load_model_spec

            plans = load_model_spec(target.model_dir).artefacts.get("tensorrt") or []  # --model: s.model
            if not plans and s.model is not None:
                reason = "skipped: the model has no TensorRT plans (re-export with --tensorrt on this GPU)"
            precisions = sorted({e.get("precision") for e in plans}) or precisions
        for prec in precisions:
            rows.append(("tensorrt", prec, {"backend": "tensorrt", "precision": prec}, reason))
    return rows


@dataclass
class BatchRows:
    """The rows of one target at one batch size and the parity reference they share.

    Each row is recorded (and the report rewritten) as soon as it is done, so an interrupted run
    keeps it.
    """

    target: Target
    s: Settings
    batch: int
    batches: list[np.ndarray]
    results: Results
    progress: Progress
    log: Callable[[str], None]
    rows: list[dict] = field(default_factory=list)
    reference: list[dict] | None = None
    ref_name: str | None = None

    def add(self, row: dict) -> None:
        self.rows.append(row)
        self.results.inference.append(row)
        self.results.save()

    def skip(self, row: dict, what: str, reason: str) -> None:
        """``reason`` is "status: why" (skipped / not installed / not available)."""
        status, _, why = reason.partition(": ")
        row.update(status=status, reason=why)
        self.progress.skip(f"{self.target.name} batch {row['batch']}: {what}: {reason}")

    def compare(self, row: dict, outs: list[dict], name: str) -> None:
        """Parity of ``outs`` with the reference; the first row compared becomes the reference."""
        if self.reference is None:
            self.reference, self.ref_name = outs, name
            row["is_reference"] = True
        row["parity"] = parity(outs, self.reference)

    def finish(self) -> None:
        """Name the reference in every row's parity, known only once all rows have run."""
        for row in self.rows:
            if row.get("parity") is not None:
                row["parity"]["reference"] = self.ref_name
        self.results.save()


def bench_target(target: Target, s: Settings, images: list[np.ndarray], e2e_dir: Path, work: Path,
                 results: Results, progress: Progress, log) -> None:
    """Every backend row of one target at every batch size; a row that fails is logged and kept."""
    for batch in s.batches:
        rows = BatchRows(target, s, batch, make_batches(images, batch), results, progress, log)
        for prec, dtype, reason in pytorch_variants(s) if "pytorch" in s.backends else []:
            row = _row(target, batch, "pytorch", prec, runs_on=s.device)
            if target.labeler is None:
                reason = "skipped: --model without --checkpoint (PyTorch needs the training checkpoint)"
            if reason:
                rows.skip(row, f"pytorch {prec}", reason)
            else:
                _measure_pytorch(rows, row, dtype)
            rows.add(row)
        for label, prec, kwargs, reason in runtime_variants(s, target):
            row = _row(target, batch, label, prec)
            if reason:
                rows.skip(row, f"{label} {prec}", reason)
            else:
                _measure_runtime(rows, row, kwargs, e2e_dir, work)
            rows.add(row)
        rows.finish()


def _measure_pytorch(rows: BatchRows, row: dict, dtype) -> None:
    """Engine timing and parity of the PyTorch module (``prnseg label`` does not run PyTorch)."""
    s, prec = rows.s, row["precision"]
    try:
        with rows.progress.step(f"{rows.target.name} batch {rows.batch}: pytorch {prec} engine"):
            times, outs = timed_runs(torch_runner(rows.target.labeler, s.device, dtype), rows.batches,
                                     s.warmup, s.iters)
        row.update(status="ok", engine=latency_stats(times, rows.batch), end_to_end=None,
                   end_to_end_note="prnseg label runs the exported artefacts, not PyTorch")
        rows.compare(row, outs, f"pytorch {prec}")
    except Exception as exc:  # one backend failing must not stop the others
        row.update(status="failed", reason=failure_reason(exc))
        rows.log(f"      pytorch {prec}: {row['reason']}")


def _measure_runtime(rows: BatchRows, row: dict, kwargs: dict, e2e_dir: Path, work: Path) -> None:
    """Engine timing and parity of an exported artefact, then the ``prnseg label`` run on it.

    The predictor is released before the end-to-end run, which opens its own as the CLI does.
    """
    from prnseg.serve.predictor import Predictor

    s, label, prec, batch = rows.s, row["backend"], row["precision"], rows.batch
    pred = None
    try:
        with rows.progress.step(f"{rows.target.name} batch {batch}: {label} {prec} engine + end to end"):
            pred = Predictor(rows.target.model_dir, device=s.device, threads=s.threads, max_batch=batch, **kwargs)
            row["runs_on"] = pred.provider
            times, outs = timed_runs(pred.run_batch, rows.batches, s.warmup, s.iters)
            row.update(status="ok", engine=latency_stats(times, batch))
            rows.compare(row, outs, f"{label} {prec}")
            pred = None
            gc.collect()
            try:
                row["end_to_end"] = end_to_end(rows.target, batch, kwargs, prec, s, e2e_dir, work, rows.log)
            except Exception as exc:  # the engine numbers stand; say why the pipeline run did not
                row["end_to_end"] = {"images_per_s": None, "status": "failed", "reason": failure_reason(exc)}
                rows.log(f"      {label} {prec} end to end: {failure_reason(exc)}")
    except Exception as exc:  # one backend failing must not stop the others
        row.update(status="failed", reason=failure_reason(exc))
        rows.log(f"      {label} {prec}: {row['reason']}")
    finally:
        del pred
        gc.collect()


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
