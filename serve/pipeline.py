"""Folder pseudo-labelling: plan, run and account for ``prnseg label``.

Three phases, shared by the local engine and the Ray engine (:mod:`prnseg.serve.ray_engine`):

1. **Plan** (:mod:`~prnseg.serve.label_plan`): list INPUT_DIR recursively, keep this shard's
   images (a stable hash of the output name, so adding files never moves others between shards),
   and skip the finished ones. An image is *finished* when a manifest line says ``ok`` and every
   output file it needs is present (plus, with ``--gt``, its ground-truth statistics). Outputs are
   written atomically (:mod:`~prnseg.serve.label_writer`: temp name, rename) *before* the manifest
   line is appended (:mod:`~prnseg.serve.label_journal`: flushed at once, fsynced at least every
   0.5 s), so a SIGKILL at any moment leaves each image either finished or redone in full on the
   next run; stale temp files of this shard are removed first. Every batch is padded to the same
   size, and a resumed run forms the batches of an uninterrupted one (a finished image keeps its
   place), so a redone image runs with the same neighbours and gets the same bytes.
2. **Run** (:mod:`~prnseg.serve.label_local`): decode threads read and fit images into their
   bucket, the calling thread batches them per bucket, an inference pool runs ``streams`` batches
   at once, and encode/write threads map outputs back, encode PNGs and write them. Every hand-over
   is bounded, so memory stays flat and the model never waits on the disk while decoded images
   are ready.
3. **Finish** (:mod:`~prnseg.serve.label_report`): the journal (``manifest.jsonl``) is compacted
   to one line per image, sorted; ``failures.jsonl`` and ``report.json`` are rewritten;
   ``train.txt`` and an ``images`` link make OUT_DIR a ``folder`` dataset that ``prnseg train``
   reads.

Sharded runs write ``manifest.shard-I-of-N.jsonl`` (and failures/report alike) into the same
OUT_DIR; an unsharded re-run afterwards finds every image finished and reports the union.

This module is the entry point (:func:`label_folder`) and re-exports the pipeline's public names
from the modules above; those modules never import it, and it imports the Ray engine only when a
run asks for it, so the dependencies point one way.
"""

from __future__ import annotations

import errno
import threading
import time
from typing import NamedTuple

from prnseg.model_spec import ModelSpec, load_model_spec
from prnseg.serve.label_journal import Journal, flock, read_jsonl
from prnseg.serve.label_local import (engine_threads, full_batch, infer_isolating, label_items,
                                      opencv_single_threaded, run_local)
from prnseg.serve.label_options import (ALWAYS, DEFAULT_MAX_PIXELS, DEFAULT_SAVE, EXIT_SOME_FAILED, OPTIONAL,
                                        OUTPUT_DIRS, PNG_END, SETTINGS_FILE, STOP_ERRNOS, TRAIN_LIST, LabelAborted,
                                        LabelError, LabelOptions, LabelStopped, disk_problem)
from prnseg.serve.label_plan import (Item, Plan, _scan_outputs, check_settings, list_inputs, make_plan, name_problem,
                                     outputs_intact, shard_of)
from prnseg.serve.label_report import Reserve, finish
from prnseg.serve.label_writer import OutputWriter

__all__ = [
    "ALWAYS", "DEFAULT_MAX_PIXELS", "DEFAULT_SAVE", "EXIT_SOME_FAILED", "OPTIONAL", "OUTPUT_DIRS", "PNG_END",
    "SETTINGS_FILE", "STOP_ERRNOS", "TRAIN_LIST", "Item", "Journal", "LabelAborted", "LabelError", "LabelOptions",
    "LabelStopped", "OutputWriter", "Plan", "_scan_outputs", "check_settings", "disk_problem", "engine_threads",
    "finish", "full_batch", "infer_isolating", "label_folder", "label_items", "list_inputs", "make_plan",
    "name_problem", "opencv_single_threaded", "outputs_intact", "read_jsonl", "run_local", "shard_of",
]


def label_folder(opts: LabelOptions, predictor=None, log=print) -> dict:
    """Run ``prnseg label``; returns the report. Raises :class:`LabelAborted` after writing the
    summary when ``--max-failures`` is reached, :class:`LabelStopped` when OUT_DIR is full,
    read-only or failing (at once, after writing the summary where the disk allows)."""
    try:
        return _label_folder(opts, predictor, log)
    except OSError as exc:
        if exc.errno not in STOP_ERRNOS and not isinstance(exc, PermissionError):
            raise
        raise LabelStopped(f"{exc.filename or opts.out_dir}: cannot write ({disk_problem(exc)}), then re-run the "
                           "same command to resume") from None


class _Runtime(NamedTuple):
    """What a run opens before it touches OUT_DIR."""

    predictor: object | None  # None for the Ray engine: each of its workers opens its own
    threads: int | None  # ONNX Runtime intra-op threads per stream, as engine_threads chose them
    load_s: float


def _label_folder(opts: LabelOptions, predictor, log) -> dict:
    spec = load_model_spec(opts.model_dir) if predictor is None else predictor.spec
    out = opts.out_dir
    if not opts.input_dir.is_dir():
        raise LabelError(f"{opts.input_dir}: input folder not found")
    if out.resolve() == opts.input_dir.resolve():
        raise LabelError(f"--out {out} is the input folder; choose a separate output folder")
    runtime = _open_runtime(opts, spec, predictor, log)
    out.mkdir(parents=True, exist_ok=True)
    with flock(out / f".prnseg-label{opts.tag}.lock", False,
               f"{out}: another prnseg label run is writing this {'shard' if opts.shard else 'folder'}; "
               "wait for it or use another --out"):
        plan = make_plan(opts)
        check_settings(opts, spec)
        stop = threading.Event()
        journal = Journal(out, opts.tag, len(plan.todo) + len(plan.collisions) + len(plan.refused), opts.progress,
                          stop)
        run = {"ok": 0, "failed": 0, "aborted": False, "engine": opts.engine}
        reserve = Reserve(out / f".prnseg-label{opts.tag}.reserve")
        t_start = time.perf_counter()
        try:
            reserve.hold()
            _journal_refused(plan, journal, opts)
            if plan.todo:
                _run_engine(plan, spec, runtime, journal, opts, stop, run)
        finally:
            report = _close_run(plan, opts, spec, journal, run, t_start, reserve)
    _raise_if_cut_short(journal, run, opts)
    return report


def _open_runtime(opts: LabelOptions, spec: ModelSpec, predictor, log) -> _Runtime:
    """Open the runtime before OUT_DIR is touched: a precision or device this model cannot run on
    fails here, without recording settings that a corrected re-run would be refused for."""
    t0 = time.perf_counter()
    config = engine_threads(opts)
    if opts.engine == "ray":
        key = "pseudolabeler" if opts.precision == "fp32" else "pseudolabeler_fp16"
        if key not in spec.artefacts:
            raise LabelError(f"{opts.model_dir}: this export has no {key}.onnx; re-export with --fp16 or use "
                             "--precision fp32")
    elif predictor is None:
        from prnseg.serve.predictor import Predictor

        predictor = Predictor(opts.model_dir, backend=opts.backend, device=opts.device, precision=opts.precision,
                              spin=False, max_batch=opts.batch, tta=opts.tta,
                              logit_adjustment=opts.logit_adjustment, **config)
        if opts.batch and opts.batch > predictor.max_batch:
            log(f"--batch {opts.batch} exceeds the model's max_batch; using {predictor.max_batch}")
    return _Runtime(predictor, config["threads"], round(time.perf_counter() - t0, 3))


def _journal_refused(plan: Plan, journal: Journal, opts: LabelOptions) -> None:
    """Images the plan refused by name are failures of this run, each with the rename it needs."""
    for rel, other in plan.collisions:
        journal.fail(rel, "listing", f"same output name as {other} (outputs are named by path without "
                                     "extension); rename one")
    for rel, problem in plan.refused:
        journal.fail(rel, "listing", f"{opts.input_dir / rel}: {problem}; rename it (train.txt and the "
                                     "reports hold one UTF-8 name per line)")


def _run_engine(plan: Plan, spec: ModelSpec, runtime: _Runtime, journal: Journal, opts: LabelOptions,
                stop: threading.Event, run: dict) -> None:
    """Label the plan's to-do list on the chosen engine, recording into ``run`` as it goes (what is
    known before a failure still reaches the summary)."""
    if opts.engine == "ray":
        from prnseg.serve.ray_engine import run_ray

        run.update(run_ray(plan, spec, journal, opts, stop))
        return
    predictor = runtime.predictor
    run["load_s"] = runtime.load_s
    run.update(backend=predictor.backend, provider=predictor.provider, device=predictor.device,
               batch=predictor.max_batch, streams=predictor.streams, threads=runtime.threads)
    writer = OutputWriter(opts, spec)
    t1 = time.perf_counter()
    with opencv_single_threaded():
        times = run_local(plan, predictor, writer, journal, opts, stop)
    run["wall_s"] = round(time.perf_counter() - t1, 3)
    run["stage_s"] = {k: round(v, 3) for k, v in times.items()}


def _close_run(plan: Plan, opts: LabelOptions, spec: ModelSpec, journal: Journal, run: dict, t_start: float,
               reserve: Reserve) -> dict:
    """Close the journal, complete ``run`` with its counts and write the summary. After a disk stop
    the reserved space is freed first, so the summary fits, and the journal is left uncompacted
    (the resume compacts it)."""
    try:
        journal.close()
        run["ok"], run["failed"] = journal.n_ok, journal.n_failed
        run["aborted"] = opts.over_failure_limit(journal.n_failed)
        wall = run.get("wall_s") or (time.perf_counter() - t_start)
        run["images_per_s"] = round((journal.n_ok + journal.n_failed) / wall, 3) if wall > 0 else None
        if journal.halted is not None:
            exc = journal.halted
            run["stopped"] = {"errno": errno.errorcode.get(exc.errno, exc.errno), "file": str(exc.filename),
                              "reason": disk_problem(exc)}
            reserve.release()
            records = journal.latest()
        else:
            records = journal.compact()
        return finish(plan, opts, spec, records, run)
    finally:
        reserve.release()


def _raise_if_cut_short(journal: Journal, run: dict, opts: LabelOptions) -> None:
    """After the summary is written: a disk stop or ``--max-failures`` ends the command with an error."""
    out = opts.out_dir
    if journal.halted is not None:
        exc = journal.halted
        raise LabelStopped(f"{exc.filename or out}: {disk_problem(exc)}; stopped at once after labelling "
                           f"{journal.n_ok} images this run; summary in {out / f'report{opts.tag}.json'}; then "
                           "re-run the same command to resume")
    if run["aborted"]:
        raise LabelAborted(f"stopped after {journal.n_failed} failures (--max-failures {opts.max_failures}); "
                           f"see {journal.failures}; summary in {out / f'report{opts.tag}.json'}")
