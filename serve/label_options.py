"""What one ``prnseg label`` run is asked to do: its options, output names, limits and errors.

Every other part of the label pipeline (plan, journal, writer, engines, report) builds on this
module, and this module on none of them, so the entry point (:mod:`prnseg.serve.pipeline`) and
the Ray engine share one definition without importing each other.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from prnseg.errors import PrnsegError

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


def default_workers() -> int:
    """Decode threads and encode/write threads, each: min(4, CPUs)."""
    return min(4, os.cpu_count() or 1)


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


def failure_reason(exc: BaseException) -> str:
    """One line for the manifest: the message of our own errors (already worded for the user),
    otherwise prefixed with the exception type so a library's terse message stays readable."""
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg if isinstance(exc, PrnsegError) else f"{type(exc).__name__}: {msg}"


@dataclass
class LabelOptions:
    """Every setting of one run, checked on construction so a bad value fails before OUT_DIR is
    touched; a plain dataclass, so the Ray engine ships it to its workers as a dict."""

    input_dir: Path
    out_dir: Path
    model_dir: Path
    batch: int | None = None
    workers: int = field(default_factory=default_workers)
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
    tta: bool = False
    logit_adjustment: float | None = None   # with tta: None = the runtime's default tau

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
        if self.tta:
            from prnseg.serve.tta import DEFAULT_TTA_NOISE_THRESHOLD

            if self.precision != "fp32":
                raise LabelError("--tta runs the exported fp32 segmenter.onnx; drop --precision fp16")
            if self.backend == "tensorrt":
                raise LabelError("--tta runs segmenter.onnx in ONNX Runtime, not the TensorRT plans (which hold the "
                                 "fused graph); use --backend onnxruntime or auto")
            if self.noise_threshold is None:   # the augmented confidence's own threshold, not the model's
                self.noise_threshold = DEFAULT_TTA_NOISE_THRESHOLD
        if self.logit_adjustment is not None:
            if self.logit_adjustment < 0:
                raise LabelError(f"--logit-adjust must be >= 0, got {self.logit_adjustment}")
            if self.logit_adjustment and not self.tta:
                raise LabelError("--logit-adjust adjusts the test-time augmented labels; add --tta (or drop it)")

    def effective_logit_adjustment(self, spec) -> float:
        """The tau the written labels use: 0 without --tta or without a class prior in model.json."""
        from prnseg.serve.tta import resolve_logit_adjustment

        return resolve_logit_adjustment(spec.class_prior, self.logit_adjustment) if self.tta else 0.0

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

    def over_failure_limit(self, n_failed: int) -> bool:
        """True once ``--max-failures`` (when set) is reached: the engines stop taking new work."""
        return self.max_failures > 0 and n_failed >= self.max_failures
