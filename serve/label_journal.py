"""The run's memory in OUT_DIR: the append-only manifest journal, its failures view, the manifests
of earlier runs and shards, and the advisory locks that keep two runs from writing one folder.

Resume rests on one ordering: an image's outputs are written (and fsynced) before its manifest
line is appended, so a manifest line always vouches for files that exist. Lines are flushed at
once and fsynced at least every :attr:`Journal.SYNC_EVERY_S`; a torn last line left by a kill is
cut off before the next append.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from pathlib import Path

from prnseg.atomic import atomic_write_bytes
from prnseg.serve.label_options import STOP_ERRNOS, LabelError


def read_jsonl(path: Path) -> list[dict]:
    """Parsable JSON-object lines of ``path`` (a torn last line from a kill is skipped)."""
    if not path.is_file():
        return []
    out = []
    with open(path, "rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict) and "path" in rec:
                out.append(rec)
    return out


def _truncate_torn_tail(path: Path) -> None:
    """Cut a journal back to its last complete line, so appends start on a fresh line."""
    if not path.is_file():
        return
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return
        start = max(0, size - (1 << 20))  # a manifest line is far shorter than 1 MiB
        f.seek(start)
        tail = f.read()
        if not tail.endswith(b"\n"):
            f.truncate(start + tail.rfind(b"\n") + 1)


def _json_line(rec: dict) -> bytes:
    return (json.dumps(rec, separators=(",", ":"), sort_keys=False) + "\n").encode("utf-8")


def failed_record(rel: str, stage: str, reason: str) -> dict:
    """The manifest line of an image that failed at ``stage`` (listing, decode, infer or write)."""
    return {"path": rel, "status": "failed", "stage": stage, "reason": reason}


def _failure_line(rec: dict) -> bytes:
    return _json_line({"path": rec["path"], "stage": rec.get("stage"), "reason": rec.get("reason")})


class Journal:
    """The append-only manifest (one line per attempt) plus its failures view, and the progress bar."""

    #: Lines are flushed to the OS at once (a killed process loses none) and fsynced at most this
    #: often (a power cut loses at most this window; those images are redone on resume).
    SYNC_EVERY_S = 0.5

    def __init__(self, out_dir: Path, tag: str, total: int, progress: bool, stop: threading.Event | None = None):
        self.stop = stop if stop is not None else threading.Event()
        self.halted: OSError | None = None  # the disk error that stopped the run
        self._halt_lock = threading.Lock()
        self._synced = time.monotonic()
        self.manifest = out_dir / f"manifest{tag}.jsonl"
        self.failures = out_dir / f"failures{tag}.jsonl"
        _truncate_torn_tail(self.manifest)
        _truncate_torn_tail(self.failures)
        self.lock = threading.Lock()
        self._m = open(self.manifest, "ab")
        self._f = open(self.failures, "ab")
        self.n_ok = self.n_failed = 0
        self.bar = None
        if progress and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", desc="label", dynamic_ncols=True, smoothing=0.1)

    def halt(self, exc: BaseException) -> bool:
        """Stop the run at once when ``exc`` is a disk error no later image could escape (full,
        read-only, failing); True when it was one. Nothing is journalled after it, so every image
        not yet journalled is redone in full by the next run."""
        if not (isinstance(exc, OSError) and exc.errno in STOP_ERRNOS):
            return False
        with self._halt_lock:
            if self.halted is None:
                self.halted = exc
        self.stop.set()
        return True

    def add(self, rec: dict) -> None:
        line = _json_line(rec)
        with self.lock:
            if self.halted is not None:
                return
            try:
                self._m.write(line)
                self._m.flush()
                now = time.monotonic()
                if now - self._synced >= self.SYNC_EVERY_S:
                    os.fsync(self._m.fileno())
                    self._synced = now
                if rec["status"] != "ok":
                    self._f.write(_failure_line(rec))
                    self._f.flush()
            except OSError as exc:
                if not self.halt(exc):
                    raise
                return
            if rec["status"] == "ok":
                self.n_ok += 1
            else:
                self.n_failed += 1
            if self.bar is not None:
                self.bar.update(1)
                if self.n_failed:
                    self.bar.set_postfix(failed=self.n_failed, refresh=False)

    def fail(self, rel: str, stage: str, reason: str) -> None:
        self.add(failed_record(rel, stage, reason))

    def close(self) -> None:
        with self.lock:
            for f in (self._m, self._f):
                try:
                    f.flush()
                    os.fsync(f.fileno())
                except OSError as exc:
                    if not self.halt(exc):
                        raise
                try:
                    f.close()
                except OSError:
                    if self.halted is None:
                        raise
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    def latest(self) -> dict[str, dict]:
        """Each image's latest attempt, read from the journal (a torn last line skipped)."""
        latest: dict[str, dict] = {}
        for rec in read_jsonl(self.manifest):
            latest[rec["path"]] = rec
        return latest

    def compact(self) -> dict[str, dict]:
        """One line per image (its latest attempt), sorted by path; failures rewritten to match."""
        latest = self.latest()
        ordered = [latest[k] for k in sorted(latest)]
        atomic_write_bytes(self.manifest, b"".join(_json_line(r) for r in ordered))
        atomic_write_bytes(self.failures, b"".join(_failure_line(r) for r in ordered if r["status"] != "ok"))
        return latest


def previous_records(out_dir: Path, tag: str) -> dict[str, dict]:
    """Latest ``ok`` record per path across every manifest in OUT_DIR (own journal last wins)."""
    own = out_dir / f"manifest{tag}.jsonl"
    records: dict[str, dict] = {}
    others = sorted(p for p in out_dir.glob("manifest*.jsonl") if p != own)
    for path in [*others, own]:
        for rec in read_jsonl(path):
            if rec.get("status") == "ok":
                records[rec["path"]] = rec
            elif path == own:
                records.pop(rec["path"], None)
    return records


@contextlib.contextmanager
def flock(path: Path, blocking: bool, busy_message: str):
    """Hold an advisory lock on ``path`` (created if missing); a non-blocking lock that another
    process holds raises :class:`LabelError` with ``busy_message``."""
    try:
        import fcntl
    except ImportError:  # no advisory locks on this platform: run unguarded
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LabelError(busy_message) from None
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
