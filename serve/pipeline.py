"""Folder pseudo-labelling: plan, run and account for ``prnseg label``.

Three phases, shared by the local engine here and the Ray engine (:mod:`prnseg.serve.ray_engine`):

1. **Plan**: list INPUT_DIR recursively, keep this shard's images (a stable hash of the output
   name, so adding files never moves others between shards), and skip the finished ones. An
   image is *finished* when a manifest line says ``ok`` and every output file it needs is present
   (plus, with ``--gt``, its ground-truth statistics). Outputs are written atomically (temp name,
   rename) *before* the manifest line is appended (flushed at once, fsynced at least every
   0.5 s), so a SIGKILL at any moment leaves each image either finished or redone in full on the
   next run; stale temp files of this shard are removed first. Every batch is padded to the same
   size, so a redone image gets the same bytes whatever its neighbours.
2. **Run** (local engine): decode threads read and fit images into their bucket, the calling
   thread batches them per bucket, an inference pool runs ``streams`` batches at once, and
   encode/write threads map outputs back, encode PNGs and write them. Every hand-over is bounded,
   so memory stays flat and the model never waits on the disk while decoded images are ready.
3. **Finish**: the journal (``manifest.jsonl``) is compacted to one line per image, sorted;
   ``failures.jsonl`` and ``report.json`` are rewritten; ``train.txt`` and an ``images`` link
   make OUT_DIR a ``folder`` dataset that ``prnseg train`` reads.

Sharded runs write ``manifest.shard-I-of-N.jsonl`` (and failures/report alike) into the same
OUT_DIR; an unsharded re-run afterwards finds every image finished and reports the union.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import threading
import time
import unicodedata
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from prnseg import __version__
from prnseg.errors import PrnsegError
from prnseg.serve.image_io import (IMAGE_EXTENSIONS, atomic_write_bytes, encode_gray_png, encode_image,
                                   encode_palette_png, fsync_dir, read_image, read_trainids)
from prnseg.serve.model_spec import ModelSpec, load_model_spec

#: Outputs always written, and the optional ones ``--save`` adds (folder name = output name).
ALWAYS = ("labels", "noise")
OPTIONAL = ("confidence", "color", "raw", "noise_prob")
DEFAULT_SAVE = ("confidence",)
OUTPUT_DIRS = ALWAYS + OPTIONAL
SETTINGS_FILE = "label.json"
TRAIN_LIST = "train.txt"
#: Images larger than this are refused from their header, before any decode (``--max-pixels``):
#: 40 MP decodes to 120 MB per decode thread; a 20000 x 20000 PNG would take 1.2 GB.
DEFAULT_MAX_PIXELS = 40_000_000
#: Exit status of ``prnseg label`` when the run finished but some images failed (2: the run
#: stopped or could not start; 0: every image labelled).
EXIT_SOME_FAILED = 1
#: Write errors no other image can escape: the run stops at once instead of failing them all.
STOP_ERRNOS = frozenset(e for e in (errno.ENOSPC, errno.EROFS, errno.EIO, getattr(errno, "EDQUOT", None)) if e)
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"


class LabelError(PrnsegError):
    """Bad arguments or an OUT_DIR that cannot be used for this run."""


class LabelAborted(PrnsegError):
    """The run stopped after ``--max-failures`` failures; its summary was written."""


class LabelStopped(PrnsegError):
    """OUT_DIR is full, read-only or failing: the run stopped at once (summary written where the
    disk allowed); freeing space and re-running the same command resumes it."""


def disk_problem(exc: OSError) -> str:
    """What a write error means and what to do about it, in a few words."""
    what = {errno.ENOSPC: "no space left on the device", errno.EROFS: "read-only file system",
            errno.EIO: "input/output error", getattr(errno, "EDQUOT", -1): "disk quota exceeded"}
    fix = {errno.ENOSPC: "free space", errno.EROFS: "make it writable or use another --out",
           errno.EIO: "check the disk or use another --out", getattr(errno, "EDQUOT", -1): "free space"}
    return (f"{what.get(exc.errno, exc.strerror or type(exc).__name__)}; "
            f"{fix.get(exc.errno, 'make it writable or use another --out')}")


@dataclass
class LabelOptions:
    input_dir: Path
    out_dir: Path
    model_dir: Path
    batch: int | None = None
    workers: int = 2
    ignore_noisy: bool = False
    noise_threshold: float | None = None
    save: tuple[str, ...] = DEFAULT_SAVE
    gt_dir: Path | None = None
    shard: tuple[int, int] | None = None
    max_failures: int = 0
    backend: str = "auto"
    device: str = "auto"
    precision: str = "fp32"
    threads: int | None = None
    streams: int | None = None
    png_level: int = 1
    progress: bool = True
    engine: str = "local"
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        self.input_dir, self.out_dir, self.model_dir = Path(self.input_dir), Path(self.out_dir), Path(self.model_dir)
        self.gt_dir = Path(self.gt_dir) if self.gt_dir is not None else None
        unknown = [s for s in self.save if s not in OPTIONAL]
        if unknown:
            raise LabelError(f"--save: unknown output(s) {', '.join(unknown)}; choose from {', '.join(OPTIONAL)} "
                             "(or none); labels/ and noise/ are always written")
        self.save = tuple(s for s in OPTIONAL if s in self.save)
        if self.workers < 1:
            raise LabelError(f"--workers must be >= 1, got {self.workers}")
        if self.streams is not None and self.streams < 1:
            raise LabelError(f"--streams must be >= 1, got {self.streams}")
        if self.threads is not None and self.threads < 1:
            raise LabelError(f"--threads must be >= 1, got {self.threads}")
        if self.batch is not None and self.batch < 1:
            raise LabelError(f"--batch must be >= 1, got {self.batch}")
        if self.noise_threshold is not None and not 0.0 <= self.noise_threshold <= 1.0:
            raise LabelError(f"--noise-threshold must be in [0, 1], got {self.noise_threshold}")
        if self.shard is not None:
            i, n = self.shard
            if n < 1 or not 0 <= i < n:
                raise LabelError(f"--shard {i}/{n}: expected I/N with 0 <= I < N")
            if n == 1:
                self.shard = None
        if self.max_failures < 0:
            raise LabelError(f"--max-failures must be >= 0, got {self.max_failures}")
        if not 0 <= self.png_level <= 9:
            raise LabelError(f"PNG compression level must be 0..9, got {self.png_level}")
        if self.max_pixels < 1:
            raise LabelError(f"--max-pixels must be >= 1, got {self.max_pixels}")

    @property
    def tag(self) -> str:
        return "" if self.shard is None else f".shard-{self.shard[0]}-of-{self.shard[1]}"

    @property
    def subdirs(self) -> tuple[str, ...]:
        return ALWAYS + self.save

    @property
    def temp_tag(self) -> str:
        """Put into this run's temporary file names (``lbl`` or ``lbl-shard-I-of-N``): a run removes
        only stale temporary files of its own kind, never those of a shard running next to it."""
        return "lbl" + self.tag.replace(".", "-")


#: ``.NAME.png.TAG.XXXXXXXX.tmp``, as atomic_write_bytes names a temporary file given a tag.
_TEMP_NAME = re.compile(r"\.(?P<final>.+\.png)\.(?P<tag>lbl(?:-shard-\d+-of-\d+)?)\.[A-Za-z0-9_]+\.tmp")


def shard_of(key: str, n: int) -> int:
    """Stable shard of an output name (relative path without extension; bytes a file system
    returned undecoded hash as those bytes)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") % n


def name_problem(rel: str) -> str | None:
    """Why a relative path cannot be written exactly where names go, or None. JSON files hold any
    name (bytes that are not UTF-8 appear as ``\\udcXX`` escapes, as ``os.fsdecode`` gives them),
    but ``train.txt`` holds one UTF-8 name per line, read back with ``splitlines`` and ``strip``:
    images whose names it cannot hold are refused (logged, with a rename hint), never mangled."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return "file name is not valid UTF-8"
    if len(rel.splitlines()) != 1 or any(unicodedata.category(c) == "Cc" for c in rel):
        return "file name contains a line break or another control character"
    if rel != rel.strip() or rel.startswith("#"):
        return "file name starts or ends with white space, or starts with '#'"
    return None


@dataclass
class Item:
    rel: str  # path relative to INPUT_DIR, posix
    key: str  # rel without extension: the output name under each output folder
    gt: tuple[str, str] | None = None  # (path relative to GT_DIR, id format)

    def to_dict(self) -> dict:
        return {"rel": self.rel, "key": self.key, "gt": list(self.gt) if self.gt else None}

    @classmethod
    def from_dict(cls, d: dict) -> "Item":
        return cls(d["rel"], d["key"], tuple(d["gt"]) if d.get("gt") else None)


def _identity(path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def list_inputs(input_dir: Path, exclude: Path | None = None) -> list[str]:
    """Image files under ``input_dir`` (recursive, sorted), as posix paths relative to it;
    ``exclude`` (an OUT_DIR inside INPUT_DIR) is not entered, however either is spelled (relative,
    absolute, through a link): folders are compared by device and inode."""
    excluded = _identity(exclude) if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(input_dir):
        dirnames[:] = sorted(d for d in dirnames
                             if excluded is None or _identity(os.path.join(dirpath, d)) != excluded)
        for name in filenames:
            if name.lower().endswith(IMAGE_EXTENSIONS):
                found.append(Path(os.path.relpath(os.path.join(dirpath, name), input_dir)).as_posix())
    return sorted(found)


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
                    self._f.write(_json_line({"path": rec["path"], "stage": rec.get("stage"),
                                              "reason": rec.get("reason")}))
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
        self.add({"path": rel, "status": "failed", "stage": stage, "reason": reason})

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
        atomic_write_bytes(self.failures, b"".join(
            _json_line({"path": r["path"], "stage": r.get("stage"), "reason": r.get("reason")})
            for r in ordered if r["status"] != "ok"))
        return latest


def _reason(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg if isinstance(exc, PrnsegError) else f"{type(exc).__name__}: {msg}"


class OutputWriter:
    """Encodes and atomically writes one image's outputs and returns its manifest fields.

    Built from the options and the model spec alone, so Ray workers build the same writer and
    write the same bytes.
    """

    def __init__(self, opts: LabelOptions, spec: ModelSpec):
        self.out = opts.out_dir
        self.save = opts.save
        self.ignore_noisy = opts.ignore_noisy
        self.threshold = opts.noise_threshold
        self.use_graph_noise = opts.noise_threshold is None or abs(opts.noise_threshold - spec.noise_threshold) < 1e-12
        self.level = int(opts.png_level)
        self.colors = np.zeros((256, 3), np.uint8)  # the model's palette as a full PLTE; ignore (255) is black
        self.colors[: len(spec.palette)] = np.asarray(spec.palette, np.uint8)
        self.num_classes = spec.num_classes
        self.gt_dir = opts.gt_dir
        self.temp_tag = opts.temp_tag

    def _gray(self, arr: np.ndarray) -> bytes:
        return encode_gray_png(arr, self.level)

    def write(self, item: Item, pred) -> dict:
        """Write every output of ``item`` (a ``Prediction``); the caller journals the result."""
        noise = pred.noise.astype(bool) if self.use_graph_noise else pred.noise_at(self.threshold)
        label = np.where(noise, np.uint8(255), pred.label) if self.ignore_noisy else pred.label
        blobs = {"labels": lambda: encode_palette_png(label, self.colors, self.level),
                 "noise": lambda: self._gray(noise.astype(np.uint8) * np.uint8(255)),
                 "confidence": lambda: self._gray(pred.confidence),
                 "color": lambda: encode_image(self.colors[label], png_level=self.level),
                 "raw": lambda: encode_palette_png(pred.raw_label, self.colors, self.level),
                 "noise_prob": lambda: self._gray(pred.noise_prob)}
        folders = set()
        for sub in ALWAYS + self.save:
            path = self.out / sub / f"{item.key}.png"
            atomic_write_bytes(path, blobs[sub](), fsync=True, temp_tag=self.temp_tag)
            folders.add(path.parent)
        for folder in folders:  # the renames durable too, before the caller journals the image
            fsync_dir(folder)
        n = label.size
        hist = np.bincount(pred.label.ravel(), minlength=256)[: self.num_classes]
        rec = {
            "noisy_fraction": round(float(np.count_nonzero(noise)) / n, 6),
            "flip_fraction": round(float(np.count_nonzero(pred.label != pred.raw_label)) / n, 6),
            "mean_confidence": round(float(pred.confidence.mean()) / 255.0, 6),
            "class_hist": [int(v) for v in hist],
        }
        if self.gt_dir is not None:
            rec["gt"] = self._gt_stats(item, pred, noise)
        return rec

    def _gt_stats(self, item: Item, pred, noise) -> dict | None:
        from prnseg.serve.label_metrics import image_stats

        if item.gt is None:
            return None
        rel, fmt = item.gt
        try:
            gt = read_trainids(self.gt_dir / rel, fmt)  # as prnseg eval reads it
            stats = image_stats(gt, pred.raw_label, pred.label, noise, pred.noise_prob, self.num_classes)
        except (PrnsegError, ValueError) as exc:
            return {"file": rel, "error": _reason(exc)}
        return {"file": rel, **stats}


@dataclass
class Plan:
    opts: LabelOptions
    listed: list[str]  # this shard's images (all of them, finished or not)
    todo: list[Item]
    skipped: int
    collisions: list[tuple[str, str]]  # (path, the path it collides with)
    refused: list[tuple[str, str]]  # (path, why its name cannot be written: name_problem)
    finished: dict[str, dict] = field(default_factory=dict)  # records of the images skipped as finished


def _scan_outputs(out_dir: Path, opts: LabelOptions) -> set[str]:
    """Existing output files (``sub/key.png``); removes stale temp files of this run's kind on the
    way (its lock is held, so none of them is being written). Temp files of another kind (a shard
    running next to an unsharded run) are left to that kind's next run."""
    existing: set[str] = set()
    for sub in OUTPUT_DIRS:
        root = out_dir / sub
        for dirpath, _, filenames in os.walk(root):
            rel_dir = os.path.relpath(dirpath, root)
            for name in filenames:
                rel = name if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{name}"
                if name.startswith(".") and name.endswith(".tmp"):
                    m = _TEMP_NAME.fullmatch(name)
                    if m is not None:
                        mine = m.group("tag") == opts.temp_tag
                    else:  # untagged, from an older prnseg: its shard follows from the name
                        final = name[1:].rsplit(".", 2)[0]
                        key = (final if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{final}")[: -len(".png")]
                        mine = opts.shard is None or shard_of(key, opts.shard[1]) == opts.shard[0]
                    if mine:
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(dirpath, name))
                    continue
                existing.add(f"{sub}/{rel}")
    return existing


def _previous_records(out_dir: Path, tag: str) -> dict[str, dict]:
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


def outputs_intact(out_dir: Path, key: str, rec: dict, subdirs) -> bool:
    """True when every output of a finished image is a complete PNG (ends with IEND) that decodes
    to the image's recorded size: a file left empty or torn by a power cut is redone, not trusted."""
    size = tuple(rec.get("size") or ())
    for sub in subdirs:
        try:
            data = (out_dir / sub / f"{key}.png").read_bytes()
        except OSError:
            return False
        if not data.endswith(PNG_END):
            return False
        arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
        if arr is None or tuple(arr.shape[:2]) != size:
            return False
    return True


def make_plan(opts: LabelOptions) -> Plan:
    from prnseg.serve.label_metrics import find_gt

    inp, out = opts.input_dir, opts.out_dir  # label_folder has checked that inp is a folder
    if opts.gt_dir is not None and not opts.gt_dir.is_dir():
        raise LabelError(f"{opts.gt_dir}: --gt folder not found")
    listed_all = list_inputs(inp, exclude=out)
    if not listed_all:
        raise LabelError(f"{inp}: no images ({', '.join(IMAGE_EXTENSIONS)}) found (searched recursively)")
    seen: dict[str, str] = {}
    collisions: list[tuple[str, str]] = []
    refused: list[tuple[str, str]] = []
    listed: list[str] = []
    items: list[Item] = []
    for rel in listed_all:
        key = rel.rsplit(".", 1)[0]
        if opts.shard is not None and shard_of(key, opts.shard[1]) != opts.shard[0]:
            continue
        listed.append(rel)
        problem = name_problem(rel)
        if problem is not None:
            refused.append((rel, problem))
            continue
        if key in seen:
            collisions.append((rel, seen[key]))
            continue
        seen[key] = rel
        items.append(Item(rel, key))
    existing = _scan_outputs(out, opts)
    previous = _previous_records(out, opts.tag)
    candidates: list[tuple[Item, dict]] = []
    for item in items:
        if opts.gt_dir is not None:
            item.gt = find_gt(opts.gt_dir, item.rel)
        rec = previous.get(item.rel)
        done = rec is not None and all(f"{sub}/{item.key}.png" in existing for sub in opts.subdirs)
        if done and opts.gt_dir is not None:
            want = item.gt[0] if item.gt else None
            have = (rec.get("gt") or {}).get("file")
            done = have == want and "error" not in (rec.get("gt") or {})
        if done:
            candidates.append((item, rec))
    with ThreadPoolExecutor(opts.workers, thread_name_prefix="prnseg-verify") as pool:
        intact = list(pool.map(lambda c: outputs_intact(out, c[0].key, c[1], opts.subdirs), candidates))
    finished = {item.rel: rec for (item, rec), ok in zip(candidates, intact) if ok}
    todo = [item for item in items if item.rel not in finished]
    return Plan(opts, listed, todo, len(items) - len(todo), collisions, refused, finished)


def _settings(opts: LabelOptions, spec: ModelSpec) -> dict:
    art = spec.artefacts.get("pseudolabeler", {})
    return {
        "format": "prnseg-label", "format_version": 1,
        "model": {"name": spec.name, "sha256": art.get("sha256"), "dir": str(opts.model_dir.resolve())},
        "input_dir": str(opts.input_dir.resolve()),
        "ignore_noisy": opts.ignore_noisy,
        "noise_threshold": spec.noise_threshold if opts.noise_threshold is None else opts.noise_threshold,
        "precision": opts.precision,
    }


def check_settings(opts: LabelOptions, spec: ModelSpec) -> None:
    """OUT_DIR remembers what produced it; a resume with other content-changing options is refused
    (mixing them would leave a folder no single command reproduces)."""
    path = opts.out_dir / SETTINGS_FILE
    now = _settings(opts, spec)
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except ValueError:
            before = None
        if isinstance(before, dict):
            diffs = []
            if before.get("model", {}).get("sha256") != now["model"]["sha256"]:
                diffs.append(f"model {before.get('model', {}).get('dir')} -> {now['model']['dir']}")
            for k in ("input_dir", "ignore_noisy", "noise_threshold", "precision"):
                if before.get(k) != now[k]:
                    diffs.append(f"{k} {before.get(k)} -> {now[k]}")
            if diffs:
                raise LabelError(f"{opts.out_dir} was labelled with other settings ({'; '.join(diffs)}); "
                                 "use a new --out, or repeat the original options to resume")
            return
    atomic_write_bytes(path, (json.dumps(now, indent=2) + "\n").encode())


@contextlib.contextmanager
def _flock(path: Path, blocking: bool, busy_message: str):
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


def full_batch(fitted: list[np.ndarray], size: int) -> np.ndarray:
    """Stack a bucket's images, repeating the last one up to ``size``: every image then runs in a
    batch of one shape whatever its neighbours (a batch of 1 can take another GEMM kernel and
    round a confidence pixel differently), so resumed, sharded and Ray runs write the same bytes."""
    return np.stack(fitted + [fitted[-1]] * (size - len(fitted)))


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


def infer_isolating(predictor, entries: list, size: int, fail) -> list[tuple]:
    """Run one bucket's ``entries`` ((item, fitted, ...) tuples) as a batch padded to ``size``;
    if the batch fails, run each image alone so only the one that breaks it fails
    (``fail(entry, exc)``). Returns ``(outputs, indices into outputs, entries)`` runs."""
    try:
        return [(predictor.run_batch(full_batch([e[1] for e in entries], size)), list(range(len(entries))), entries)]
    except Exception as exc:
        if len(entries) == 1:
            fail(entries[0], exc)
            return []
    runs = []
    for e in entries:
        try:
            runs.append((predictor.run_batch(full_batch([e[1]], size)), [0], [e]))
        except Exception as exc:
            fail(e, exc)
    return runs


def run_local(plan: Plan, predictor, writer: OutputWriter, journal: Journal, opts: LabelOptions,
              stop: threading.Event) -> dict:
    """Decode pool -> per-bucket batches -> inference pool (``predictor.streams`` batches at once)
    -> write pool. Every hand-over is bounded, so memory stays flat. Returns stage seconds
    (summed over each stage's threads)."""
    batch = predictor.max_batch
    workers = opts.workers
    streams = predictor.streams
    times = {"decode": 0.0, "infer": 0.0, "write": 0.0, "wait_decode": 0.0}
    tlock = threading.Lock()

    def add_time(key: str, dt: float) -> None:
        with tlock:
            times[key] += dt

    def over_limit() -> bool:
        return opts.max_failures > 0 and journal.n_failed >= opts.max_failures

    def decode(item: Item):
        t0 = time.perf_counter()
        rgb = read_image(opts.input_dir / item.rel, opts.max_pixels)
        fitted, placement = predictor.prepare(rgb)
        dt = time.perf_counter() - t0
        add_time("decode", dt)
        return fitted, placement, dt

    def write(entry, outputs, j, infer_s):
        item, _, placement, decode_s = entry
        if journal.halted is not None:
            return
        t0 = time.perf_counter()
        try:
            fields = writer.write(item, predictor.finish(outputs, j, placement))
        except Exception as exc:  # one image's write failing must not stop the run, a full disk must
            if not journal.halt(exc):
                journal.fail(item.rel, "write", _reason(exc))
            return
        write_s = time.perf_counter() - t0
        add_time("write", write_s)
        journal.add(_ok_record(item, placement, decode_s, infer_s, write_s, fields))

    write_slots = threading.BoundedSemaphore(2 * batch + workers)
    infer_slots = threading.BoundedSemaphore(streams + 1)

    def infer(entries, write_pool):
        try:
            if journal.halted is not None:  # the disk stopped the run: no more inference
                return
            t0 = time.perf_counter()
            runs = infer_isolating(predictor, entries, batch,
                                   lambda e, exc: journal.fail(e[0].rel, "infer", _reason(exc)))
            dt = time.perf_counter() - t0
            add_time("infer", dt)
            for outputs, idx, group in runs:
                for j, e in zip(idx, group):
                    write_slots.acquire()
                    fut = write_pool.submit(write, e, outputs, j, dt / len(entries))
                    fut.add_done_callback(lambda _f: write_slots.release())
        finally:
            infer_slots.release()

    prefetch = (streams + 1) * batch + workers
    groups: dict = {}
    window: deque = deque()
    todo = iter(plan.todo)
    # Exit order matters: inference drains into the write pool, which drains before decode closes.
    with ThreadPoolExecutor(workers, thread_name_prefix="prnseg-decode") as decode_pool, \
            ThreadPoolExecutor(workers, thread_name_prefix="prnseg-write") as write_pool, \
            ThreadPoolExecutor(streams, thread_name_prefix="prnseg-infer") as infer_pool:

        def submit(entries):
            infer_slots.acquire()
            infer_pool.submit(infer, entries, write_pool)

        try:
            def refill():
                while len(window) < prefetch and not stop.is_set():
                    item = next(todo, None)
                    if item is None:
                        return
                    window.append((item, decode_pool.submit(decode, item)))

            refill()
            while window and not stop.is_set():
                item, fut = window.popleft()
                refill()
                t0 = time.perf_counter()
                try:
                    fitted, placement, decode_s = fut.result()
                except Exception as exc:
                    journal.fail(item.rel, "decode", _reason(exc))
                    if over_limit():
                        stop.set()
                    continue
                finally:
                    times["wait_decode"] += time.perf_counter() - t0
                group = groups.setdefault(placement.bucket, [])
                group.append((item, fitted, placement, decode_s))
                if len(group) == batch:
                    submit(groups.pop(placement.bucket))
                if over_limit():
                    stop.set()
            if not stop.is_set():
                for bucket in sorted(groups, key=lambda b: (b.height, b.width)):
                    submit(groups.pop(bucket))
        finally:
            stop.set()
            for _, fut in window:
                fut.cancel()
    return times


def label_items(predictor, writer: OutputWriter, opts: LabelOptions, items: list[Item]) -> list[dict]:
    """Decode, run and write ``items`` one stage after the other; the manifest records, in order.
    (The Ray engine's unit of work; the local engine runs the same stages on separate threads.)"""
    records: dict[str, dict] = {}
    groups: dict = {}
    for item in items:
        t0 = time.perf_counter()
        try:
            fitted, placement = predictor.prepare(read_image(opts.input_dir / item.rel, opts.max_pixels))
        except Exception as exc:
            records[item.rel] = {"path": item.rel, "status": "failed", "stage": "decode", "reason": _reason(exc)}
            continue
        groups.setdefault(placement.bucket, []).append((item, fitted, placement, time.perf_counter() - t0))

    def infer_failed(e, exc) -> None:
        records[e[0].rel] = {"path": e[0].rel, "status": "failed", "stage": "infer", "reason": _reason(exc)}

    for bucket in sorted(groups, key=lambda b: (b.height, b.width)):
        entries = groups[bucket]
        for start in range(0, len(entries), predictor.max_batch):
            chunk = entries[start:start + predictor.max_batch]
            t0 = time.perf_counter()
            size = predictor.max_batch
            runs = infer_isolating(predictor, chunk, size, infer_failed)
            infer_s = (time.perf_counter() - t0) / len(chunk)
            for outputs, idx, group in runs:
                for j, (item, _, placement, decode_s) in zip(idx, group):
                    t1 = time.perf_counter()
                    try:
                        fields = writer.write(item, predictor.finish(outputs, j, placement))
                    except OSError as exc:
                        if exc.errno not in STOP_ERRNOS:
                            records[item.rel] = {"path": item.rel, "status": "failed", "stage": "write",
                                                 "reason": _reason(exc)}
                            continue
                        records[item.rel] = {"path": item.rel, "status": "stopped", "errno": exc.errno,
                                             "reason": exc.strerror, "file": exc.filename}
                        return [records[i.rel] for i in items if i.rel in records]
                    except Exception as exc:
                        records[item.rel] = {"path": item.rel, "status": "failed", "stage": "write",
                                             "reason": _reason(exc)}
                        continue
                    records[item.rel] = _ok_record(item, placement, decode_s, infer_s,
                                                   time.perf_counter() - t1, fields)
    return [records[i.rel] for i in items if i.rel in records]


def _ok_record(item: Item, placement, decode_s: float, infer_s: float, write_s: float, fields: dict) -> dict:
    h, w = placement.src_hw
    return {"path": item.rel, "status": "ok", "size": [h, w],
            "bucket": [placement.bucket.height, placement.bucket.width],
            "timings_ms": {"decode": round(decode_s * 1e3, 2), "infer": round(infer_s * 1e3, 2),
                           "write": round(write_s * 1e3, 2)}, **fields}


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
    merged = {p: r for p, r in _previous_records(opts.out_dir, opts.tag).items() if p in listed}
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
                    "precision": opts.precision},
        "outputs": {sub: f"{sub}/<relative path without extension>.png" for sub in opts.subdirs},
        "pseudo_labels": _aggregate(ok, spec),
        "failures": [{"path": r["path"], "stage": r.get("stage"), "reason": r.get("reason")} for r in failed[:20]],
    }
    if opts.gt_dir is not None:
        report["gt"] = _gt_report(ok, spec, opts, threshold)
    atomic_write_bytes(opts.out_dir / f"report{opts.tag}.json", (json.dumps(report, indent=2) + "\n").encode())
    try:
        with _flock(opts.out_dir / ".prnseg-label-list.lock", True, ""):
            done = sorted(p for p in _previous_records(opts.out_dir, "")
                          if name_problem(p) is None and (opts.input_dir / p).is_file())
            atomic_write_bytes(opts.out_dir / TRAIN_LIST, "".join(p + "\n" for p in done).encode())
            _link_images(opts)
    except OSError:
        if not run.get("stopped"):  # after a disk stop the report is what matters; the resume rewrites the list
            raise
    return report


class _Reserve:
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


def _label_folder(opts: LabelOptions, predictor, log) -> dict:
    spec = load_model_spec(opts.model_dir) if predictor is None else predictor.spec
    out = opts.out_dir
    if not opts.input_dir.is_dir():
        raise LabelError(f"{opts.input_dir}: input folder not found")
    if out.resolve() == opts.input_dir.resolve():
        raise LabelError(f"--out {out} is the input folder; choose a separate output folder")
    # the runtime is opened before OUT is touched: a precision or device this model cannot run
    # on fails here, without recording settings that a corrected re-run would be refused for
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
                              spin=False, max_batch=opts.batch, **config)
        if opts.batch and opts.batch > predictor.max_batch:
            log(f"--batch {opts.batch} exceeds the model's max_batch; using {predictor.max_batch}")
    load_s = round(time.perf_counter() - t0, 3)
    out.mkdir(parents=True, exist_ok=True)
    with _flock(out / f".prnseg-label{opts.tag}.lock", False,
                f"{out}: another prnseg label run is writing this {'shard' if opts.shard else 'folder'}; "
                "wait for it or use another --out"):
        plan = make_plan(opts)
        check_settings(opts, spec)
        stop = threading.Event()
        journal = Journal(out, opts.tag, len(plan.todo) + len(plan.collisions) + len(plan.refused), opts.progress,
                          stop)
        run = {"ok": 0, "failed": 0, "aborted": False, "engine": opts.engine}
        reserve = _Reserve(out / f".prnseg-label{opts.tag}.reserve")
        t_start = time.perf_counter()
        try:
            reserve.hold()
            for rel, other in plan.collisions:
                journal.fail(rel, "listing", f"same output name as {other} (outputs are named by path without "
                                             "extension); rename one")
            for rel, problem in plan.refused:
                journal.fail(rel, "listing", f"{opts.input_dir / rel}: {problem}; rename it (train.txt and the "
                                             "reports hold one UTF-8 name per line)")
            if plan.todo:
                if opts.engine == "ray":
                    from prnseg.serve.ray_engine import run_ray

                    info = run_ray(plan, spec, journal, opts, stop)
                    run.update(info)
                else:
                    run["load_s"] = load_s
                    run.update(backend=predictor.backend, provider=predictor.provider, device=predictor.device,
                               batch=predictor.max_batch, streams=predictor.streams, threads=config["threads"])
                    writer = OutputWriter(opts, spec)
                    t1 = time.perf_counter()
                    with opencv_single_threaded():
                        times = run_local(plan, predictor, writer, journal, opts, stop)
                    run["wall_s"] = round(time.perf_counter() - t1, 3)
                    run["stage_s"] = {k: round(v, 3) for k, v in times.items()}
        finally:
            try:
                journal.close()
                run["ok"], run["failed"] = journal.n_ok, journal.n_failed
                run["aborted"] = opts.max_failures > 0 and journal.n_failed >= opts.max_failures
                wall = run.get("wall_s") or (time.perf_counter() - t_start)
                run["images_per_s"] = round((journal.n_ok + journal.n_failed) / wall, 3) if wall > 0 else None
                if journal.halted is not None:
                    exc = journal.halted
                    run["stopped"] = {"errno": errno.errorcode.get(exc.errno, exc.errno), "file": str(exc.filename),
                                      "reason": disk_problem(exc)}
                    reserve.release()  # room for the summary; the resume compacts the journal
                    records = journal.latest()
                else:
                    records = journal.compact()
                report = finish(plan, opts, spec, records, run)
            finally:
                reserve.release()
    if journal.halted is not None:
        exc = journal.halted
        raise LabelStopped(f"{exc.filename or out}: {disk_problem(exc)}; stopped at once after labelling "
                           f"{journal.n_ok} images this run; summary in {out / f'report{opts.tag}.json'}; then "
                           "re-run the same command to resume")
    if run["aborted"]:
        raise LabelAborted(f"stopped after {journal.n_failed} failures (--max-failures {opts.max_failures}); "
                           f"see {journal.failures}; summary in {out / f'report{opts.tag}.json'}")
    return report
