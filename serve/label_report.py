"""The end of a ``prnseg label`` run: ``report.json`` for the shard (every image of it, finished
now or before), and ``train.txt`` plus an ``images`` link that make OUT_DIR a ``folder`` dataset
``prnseg train`` reads. Also the disk space held back so the summary can be written when OUT_DIR
fills up mid-run.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

import numpy as np

from prnseg import __version__
from prnseg.atomic import atomic_write_bytes
from prnseg.model_spec import ModelSpec
from prnseg.serve.label_journal import flock, previous_records
from prnseg.serve.label_options import STOP_ERRNOS, TRAIN_LIST, LabelOptions
from prnseg.serve.label_plan import Plan, name_problem


def _aggregate(records: list[dict], spec: ModelSpec) -> dict:
    hist = np.zeros(spec.num_classes, np.int64)
    noisy = flips = conf = 0.0
    pixels = 0
    for r in records:
        n = int(sum(r.get("class_hist", [])))
        hist += np.asarray(r.get("class_hist", [0] * spec.num_classes), np.int64)
        noisy += r.get("noisy_fraction", 0.0) * n
        flips += r.get("flip_fraction", 0.0) * n
        conf += r.get("mean_confidence", 0.0) * n
        pixels += n
    return {
        "pixels": pixels,
        "noisy_fraction": noisy / pixels if pixels else None,
        "flip_fraction": flips / pixels if pixels else None,
        "mean_confidence": conf / pixels if pixels else None,
        "class_fraction": {name: (int(c) / pixels if pixels else 0.0) for name, c in zip(spec.classes, hist)},
    }


def _gt_report(records: list[dict], spec: ModelSpec, opts: LabelOptions, threshold: float) -> dict:
    from prnseg.serve.label_metrics import GT_MATCHING, GTSummary

    summary = GTSummary(spec.num_classes, spec.classes, threshold)
    missing, errors = [], []
    for r in records:
        g = r.get("gt")
        if not g:
            missing.append(r["path"])
        elif "error" in g:
            errors.append({"path": r["path"], "gt": g["file"], "error": g["error"]})
        else:
            summary.add(g)
    return {"gt_dir": str(opts.gt_dir), "matching": GT_MATCHING, **summary.to_dict(),
            "n_missing": len(missing), "missing_examples": missing[:5], "n_errors": len(errors),
            "errors": errors[:20]}


def finish(plan: Plan, opts: LabelOptions, spec: ModelSpec, journal_records: dict[str, dict], run: dict) -> dict:
    """report.json for this shard (all its images, finished now or before), train list, images link."""
    listed = set(plan.listed)
    merged = {p: r for p, r in previous_records(opts.out_dir, opts.tag).items() if p in listed}
    ok = [merged[p] for p in sorted(merged)]
    failed = sorted((r for p, r in journal_records.items() if p in listed and r["status"] != "ok" and p not in merged),
                    key=lambda r: r["path"])
    threshold = spec.noise_threshold if opts.noise_threshold is None else opts.noise_threshold
    report = {
        "format": "prnseg-label-report", "prnseg": __version__,
        "input_dir": str(opts.input_dir), "out_dir": str(opts.out_dir), "model": str(opts.model_dir),
        "shard": None if opts.shard is None else {"index": opts.shard[0], "count": opts.shard[1]},
        "counts": {"listed": len(plan.listed), "ok": len(ok), "failed": len(failed),
                   "remaining": len(plan.listed) - len(ok) - len(failed),
                   "skipped_finished": plan.skipped, "labelled_this_run": run.get("ok", 0),
                   "failed_this_run": run.get("failed", 0)},
        "aborted": run.get("aborted", False),
        "run": run,
        "options": {"ignore_noisy": opts.ignore_noisy, "noise_threshold": threshold, "save": list(opts.save),
                    "batch": run.get("batch"), "workers": opts.workers, "engine": opts.engine,
                    "precision": opts.precision, "tta": opts.tta,
                    "logit_adjustment": opts.effective_logit_adjustment(spec)},
        "outputs": {sub: f"{sub}/<relative path without extension>.png" for sub in opts.subdirs},
        "pseudo_labels": _aggregate(ok, spec),
        "failures": [{"path": r["path"], "stage": r.get("stage"), "reason": r.get("reason")} for r in failed[:20]],
    }
    if opts.gt_dir is not None:
        report["gt"] = _gt_report(ok, spec, opts, threshold)
    atomic_write_bytes(opts.out_dir / f"report{opts.tag}.json", (json.dumps(report, indent=2) + "\n").encode())
    try:
        _write_dataset_files(opts)
    except OSError:
        if not run.get("stopped"):  # after a disk stop the report is what matters; the resume rewrites the list
            raise
    return report


def _write_dataset_files(opts: LabelOptions) -> None:
    """``train.txt`` (every image any run or shard finished whose name it can hold and whose input
    still exists) and the ``images`` link; under a lock shared by shards finishing together."""
    with flock(opts.out_dir / ".prnseg-label-list.lock", True, ""):
        done = sorted(p for p in previous_records(opts.out_dir, "")
                      if name_problem(p) is None and (opts.input_dir / p).is_file())
        atomic_write_bytes(opts.out_dir / TRAIN_LIST, "".join(p + "\n" for p in done).encode())
        _link_images(opts)


def _link_images(opts: LabelOptions) -> None:
    """``OUT_DIR/images`` -> INPUT_DIR, so OUT_DIR is a folder dataset (images/, labels/, train.txt)."""
    link = opts.out_dir / "images"
    target = opts.input_dir.resolve()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    if link.exists() or link.is_symlink():
        return
    tmp = opts.out_dir / f".images.{os.getpid()}.tmp"
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        os.symlink(target, tmp, target_is_directory=True)
        os.replace(tmp, link)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


class Reserve:
    """Disk space held back for the summary: when OUT_DIR fills up, the run stops, frees this and
    can still write report.json."""

    SIZE = 256 << 10

    def __init__(self, path: Path):
        self.path = path

    def hold(self) -> None:
        with open(self.path, "wb") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, self.SIZE)
            except (AttributeError, OSError) as exc:  # a file system without fallocate: write it out
                if isinstance(exc, OSError) and exc.errno in STOP_ERRNOS:
                    raise
                f.write(bytes(self.SIZE))

    def release(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
