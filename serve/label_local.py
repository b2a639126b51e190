"""The in-process engine of ``prnseg label``: decode, batch, infer and write on thread pools, and
the same stages one after the other for a Ray worker's share (:func:`label_items`).

Local engine: decode threads read and fit images into their bucket, the calling thread batches
them per bucket, an inference pool runs ``streams`` batches at once, and encode/write threads map
outputs back, encode PNGs and write them. Every hand-over is bounded, so memory stays flat and
the model never waits on the disk while decoded images are ready. Every batch is padded to the
same size, and a resumed run forms the batches an uninterrupted run formed: a finished image keeps
its place in its batch (a :class:`Ghost`, decoded again only when its batch has an image to redo,
never written). So a redone image runs with the same neighbours in the same place, and gets the
same bytes even on a CPU whose kernels round an image differently by its place in the batch.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import NamedTuple

import cv2
import numpy as np

from prnseg.image_io import read_image
from prnseg.model_spec import Bucket, Placement
from prnseg.serve.label_journal import Journal, failed_record
from prnseg.serve.label_options import STOP_ERRNOS, LabelOptions, failure_reason
from prnseg.serve.label_plan import Item, Plan
from prnseg.serve.label_writer import OutputWriter


def engine_threads(opts: LabelOptions) -> dict:
    """Predictor ``streams``/``threads`` for throughput: on a CPU, ``cpu_throughput_config``
    unless given; on a GPU one stream (the device is the bottleneck)."""
    from prnseg.serve.predictor import Predictor, cpu_throughput_config

    kind, _ = Predictor.resolve_device(opts.device)
    if kind == "cpu":
        streams, threads = cpu_throughput_config()
        if opts.streams is not None:
            streams = opts.streams
            threads = max(1, (os.cpu_count() or 1) // streams)
        if opts.threads is not None:
            threads = opts.threads
        return {"streams": streams, "threads": threads}
    return {"streams": opts.streams or 1, "threads": opts.threads}


@contextlib.contextmanager
def opencv_single_threaded():
    """OpenCV's own worker pool off for the duration: the pipeline already runs decode and write
    threads, and OpenCV's pool threads busy-wait (sched_yield) after each parallel resize or
    colour conversion, taking CPU time from inference on the same cores. Restored afterwards,
    as the setting is process-wide."""
    previous = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(previous)


def full_batch(fitted: list[np.ndarray], size: int) -> np.ndarray:
    """Stack a bucket's images, repeating the last one up to ``size``: every image then runs in a
    batch of one shape whatever its neighbours (a batch of 1 can take another GEMM kernel and
    round a confidence pixel differently), so resumed, sharded and Ray runs write the same bytes."""
    return np.stack(fitted + [fitted[-1]] * (size - len(fitted)))


class Decoded(NamedTuple):
    """One image read and fitted into its bucket, waiting for its batch (``ghost``: a finished
    image decoded only to fill its old place in a resumed run's batch; never written)."""

    item: Item
    fitted: np.ndarray
    placement: Placement
    decode_s: float
    ghost: bool = False


class Ghost(NamedTuple):
    """A finished image's place in its bucket's batches, from its manifest record."""

    item: Item
    bucket: Bucket


def ghost_of(item: Item, record: dict | None) -> Ghost | None:
    """The place holder of a finished image, or None where its record names no bucket (written
    by an older prnseg: the batches of a resumed run then shift from it on)."""
    hw = (record or {}).get("bucket")
    if not (isinstance(hw, list) and len(hw) == 2 and all(isinstance(v, int) for v in hw)):
        return None
    return Ghost(item, Bucket(*hw))


class BatchRun(NamedTuple):
    """One ``run_batch`` that succeeded: its outputs, and the output row of each of its entries."""

    outputs: dict[str, np.ndarray]
    indices: list[int]
    entries: list


def infer_isolating(predictor, entries: list, size: int, fail) -> list[BatchRun]:
    """Run one bucket's ``entries`` (``(item, fitted, ...)`` tuples, such as :class:`Decoded`) as a
    batch padded to ``size``; if the batch fails, run each image alone so only the one that breaks
    it fails (``fail(entry, exc)``). Returns the runs that succeeded."""
    try:
        return [BatchRun(predictor.run_batch(full_batch([fitted for _, fitted, *_ in entries], size)),
                         list(range(len(entries))), entries)]
    except Exception as exc:
        if len(entries) == 1:
            fail(entries[0], exc)
            return []
    runs = []
    for entry in entries:
        _, fitted, *_ = entry
        try:
            runs.append(BatchRun(predictor.run_batch(full_batch([fitted], size)), [0], [entry]))
        except Exception as exc:
            fail(entry, exc)
    return runs


def ok_record(entry: Decoded, infer_s: float, write_s: float, fields: dict) -> dict:
    """The manifest line of a labelled image: sizes, stage timings and the writer's fields."""
    h, w = entry.placement.src_hw
    return {"path": entry.item.rel, "status": "ok", "size": [h, w],
            "bucket": [entry.placement.bucket.height, entry.placement.bucket.width],
            "timings_ms": {"decode": round(entry.decode_s * 1e3, 2), "infer": round(infer_s * 1e3, 2),
                           "write": round(write_s * 1e3, 2)}, **fields}


def _by_size(groups: dict[Bucket, list[Decoded]]) -> list[Bucket]:
    """Buckets smallest first: the order leftover partial batches run in, in both engines."""
    return sorted(groups, key=lambda b: (b.height, b.width))


class _Pending(NamedTuple):
    """An image handed to the decode pool, in the prefetch window (a place holder: no future)."""

    item: Item | Ghost
    future: Future | None


class LocalEngine:
    """Decode pool -> per-bucket batches -> inference pool (``predictor.streams`` batches at once)
    -> write pool. The hand-overs are bounded by a prefetch window of decodes, a slot per batch in
    flight and a slot per output waiting to be written."""

    def __init__(self, plan: Plan, predictor, writer: OutputWriter, journal: Journal, opts: LabelOptions,
                 stop: threading.Event):
        self.plan, self.predictor, self.writer = plan, predictor, writer
        self.journal, self.opts, self.stop = journal, opts, stop
        self.batch = predictor.max_batch
        self.times = {"decode": 0.0, "infer": 0.0, "write": 0.0, "wait_decode": 0.0}
        self._times_lock = threading.Lock()
        self._write_slots = threading.BoundedSemaphore(2 * self.batch + opts.workers)
        self._infer_slots = threading.BoundedSemaphore(predictor.streams + 1)

    def run(self) -> dict:
        """Label every image of the plan's to-do list; returns stage seconds (summed over each
        stage's threads)."""
        workers, streams = self.opts.workers, self.predictor.streams
        prefetch = (streams + 1) * self.batch + workers
        groups: dict[Bucket, list[Decoded | Ghost]] = {}
        window: deque[_Pending] = deque()
        todo = iter(self._sequence())
        # Exit order matters: inference drains into the write pool, which drains before decode closes.
        with ThreadPoolExecutor(workers, thread_name_prefix="prnseg-decode") as decode_pool, \
                ThreadPoolExecutor(workers, thread_name_prefix="prnseg-write") as write_pool, \
                ThreadPoolExecutor(streams, thread_name_prefix="prnseg-infer") as infer_pool:
            try:
                self._refill(window, todo, decode_pool, prefetch)
                while window and not self.stop.is_set():
                    pending = window.popleft()
                    self._refill(window, todo, decode_pool, prefetch)
                    entry = self._collect(pending)
                    if entry is not None:
                        bucket = entry.bucket if isinstance(entry, Ghost) else entry.placement.bucket
                        group = groups.setdefault(bucket, [])
                        group.append(entry)
                        if len(group) == self.batch:
                            self._submit(groups.pop(bucket), infer_pool, write_pool)
                    if self.opts.over_failure_limit(self.journal.n_failed):
                        self.stop.set()
                if not self.stop.is_set():
                    for bucket in _by_size(groups):
                        self._submit(groups.pop(bucket), infer_pool, write_pool)
            finally:
                self.stop.set()
                for pending in window:
                    pending.future.cancel()
        return self.times

    def _sequence(self) -> Iterator[Item | Ghost]:
        """The shard's images in order: those to do, and the finished ones as place holders."""
        for item in self.plan.items:
            if item.rel not in self.plan.finished:
                yield item
            elif (ghost := ghost_of(item, self.plan.finished[item.rel])) is not None:
                yield ghost

    def _add_time(self, stage: str, dt: float) -> None:
        with self._times_lock:
            self.times[stage] += dt

    def _refill(self, window: deque[_Pending], todo: Iterator[Item | Ghost], decode_pool: ThreadPoolExecutor,
                prefetch: int) -> None:
        while len(window) < prefetch and not self.stop.is_set():
            item = next(todo, None)
            if item is None:
                return
            future = None if isinstance(item, Ghost) else decode_pool.submit(self._decode, item)
            window.append(_Pending(item, future))

    def _decode(self, item: Item) -> Decoded:
        t0 = time.perf_counter()
        rgb = read_image(self.opts.input_dir / item.rel, self.opts.max_pixels)
        fitted, placement = self.predictor.prepare(rgb)
        dt = time.perf_counter() - t0
        self._add_time("decode", dt)
        return Decoded(item, fitted, placement, dt)

    def _collect(self, pending: _Pending) -> Decoded | Ghost | None:
        """The decoded image (a finished one's place holder), or None after journalling why it
        could not be read."""
        if pending.future is None:
            return pending.item
        t0 = time.perf_counter()
        try:
            return pending.future.result()
        except Exception as exc:
            self.journal.fail(pending.item.rel, "decode", failure_reason(exc))
            return None
        finally:
            self._add_time("wait_decode", time.perf_counter() - t0)

    def _submit(self, entries: list[Decoded | Ghost], infer_pool: ThreadPoolExecutor,
                write_pool: ThreadPoolExecutor) -> None:
        if all(isinstance(e, Ghost) for e in entries):  # a batch of finished images: nothing to do
            return
        self._infer_slots.acquire()
        infer_pool.submit(self._infer, entries, write_pool)

    def _fill(self, entries: list[Decoded | Ghost]) -> list[Decoded]:
        """The batch with its place holders decoded (one that no longer reads is left out)."""
        filled = []
        for entry in entries:
            if isinstance(entry, Ghost):
                try:
                    entry = self._decode(entry.item)._replace(ghost=True)
                except Exception:
                    continue
            filled.append(entry)
        return filled

    def _infer(self, entries: list[Decoded | Ghost], write_pool: ThreadPoolExecutor) -> None:
        try:
            if self.journal.halted is not None:  # the disk stopped the run: no more inference
                return
            entries = self._fill(entries)
            t0 = time.perf_counter()
            runs = infer_isolating(self.predictor, entries, self.batch, self._infer_failed)
            dt = time.perf_counter() - t0
            self._add_time("infer", dt)
            for run in runs:
                for j, entry in zip(run.indices, run.entries):
                    if entry.ghost:
                        continue
                    self._write_slots.acquire()
                    fut = write_pool.submit(self._write, entry, run.outputs, j, dt / len(entries))
                    fut.add_done_callback(self._release_write_slot)
        finally:
            self._infer_slots.release()

    def _infer_failed(self, entry: Decoded, exc: BaseException) -> None:
        if entry.ghost:
            return
        self.journal.fail(entry.item.rel, "infer", failure_reason(exc))

    def _release_write_slot(self, _future: Future) -> None:
        self._write_slots.release()

    def _write(self, entry: Decoded, outputs: dict, j: int, infer_s: float) -> None:
        if self.journal.halted is not None:
            return
        t0 = time.perf_counter()
        try:
            fields = self.writer.write(entry.item, self.predictor.finish(outputs, j, entry.placement))
        except Exception as exc:  # one image's write failing must not stop the run, a full disk must
            if not self.journal.halt(exc):
                self.journal.fail(entry.item.rel, "write", failure_reason(exc))
            return
        write_s = time.perf_counter() - t0
        self._add_time("write", write_s)
        self.journal.add(ok_record(entry, infer_s, write_s, fields))


def run_local(plan: Plan, predictor, writer: OutputWriter, journal: Journal, opts: LabelOptions,
              stop: threading.Event) -> dict:
    """Label the plan's to-do list with the :class:`LocalEngine`; returns stage seconds."""
    return LocalEngine(plan, predictor, writer, journal, opts, stop).run()


def label_items(predictor, writer: OutputWriter, opts: LabelOptions, items: list[Item]) -> list[dict]:
    """Decode, run and write ``items`` one stage after the other; the manifest records, in order.
    (The Ray engine's unit of work; the local engine runs the same stages on separate threads.)
    A disk error that stops the run ends the list with a ``stopped`` record."""
    records: dict[str, dict] = {}
    groups: dict[Bucket, list[Decoded]] = {}
    for item in items:
        t0 = time.perf_counter()
        try:
            fitted, placement = predictor.prepare(read_image(opts.input_dir / item.rel, opts.max_pixels))
        except Exception as exc:
            records[item.rel] = failed_record(item.rel, "decode", failure_reason(exc))
            continue
        groups.setdefault(placement.bucket, []).append(Decoded(item, fitted, placement, time.perf_counter() - t0))
    size = predictor.max_batch
    for chunk in (groups[b][s:s + size] for b in _by_size(groups) for s in range(0, len(groups[b]), size)):
        if not _label_batch(predictor, writer, chunk, records):
            break
    return [records[i.rel] for i in items if i.rel in records]


def _label_batch(predictor, writer: OutputWriter, chunk: list[Decoded], records: dict[str, dict]) -> bool:
    """Run and write one batch into ``records``; False when a disk error stopped the run."""

    def infer_failed(entry: Decoded, exc: BaseException) -> None:
        records[entry.item.rel] = failed_record(entry.item.rel, "infer", failure_reason(exc))

    t0 = time.perf_counter()
    runs = infer_isolating(predictor, chunk, predictor.max_batch, infer_failed)
    infer_s = (time.perf_counter() - t0) / len(chunk)
    for run in runs:
        for j, entry in zip(run.indices, run.entries):
            rec = _write_record(predictor, writer, run.outputs, j, entry, infer_s)
            records[entry.item.rel] = rec
            if rec["status"] == "stopped":
                return False
    return True


def _write_record(predictor, writer: OutputWriter, outputs: dict, j: int, entry: Decoded, infer_s: float) -> dict:
    """Write one image's outputs; its manifest record (``stopped`` for a disk error no later image
    could escape, which the driver turns into a halt of the whole run)."""
    t0 = time.perf_counter()
    try:
        fields = writer.write(entry.item, predictor.finish(outputs, j, entry.placement))
    except Exception as exc:
        if isinstance(exc, OSError) and exc.errno in STOP_ERRNOS:
            return {"path": entry.item.rel, "status": "stopped", "errno": exc.errno, "reason": exc.strerror,
                    "file": exc.filename}
        return failed_record(entry.item.rel, "write", failure_reason(exc))
    return ok_record(entry, infer_s, time.perf_counter() - t0, fields)
