"""The plan of a ``prnseg label`` run: which images are this shard's, which are finished, which
must be (re)done, and whether OUT_DIR may be resumed with these options.

An image belongs to shard ``I`` of ``N`` by a stable hash of its output name, so adding files
never moves others between shards. It is *finished* when a manifest line says ``ok`` and every
output file it needs is present and intact (plus, with ``--gt``, its ground-truth statistics);
stale temporary files of this run's kind are removed on the way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from prnseg.atomic import atomic_write_bytes
from prnseg.image_io import IMAGE_EXTENSIONS
from prnseg.model_spec import ModelSpec
from prnseg.serve.label_journal import previous_records
from prnseg.serve.label_options import OUTPUT_DIRS, PNG_END, SETTINGS_FILE, LabelError, LabelOptions

#: ``.NAME.png.TAG.XXXXXXXX.tmp``, as atomic_write_bytes names a temporary file given a tag.
_TEMP_NAME = re.compile(r"\.(?P<final>.+\.png)\.(?P<tag>lbl(?:-shard-\d+-of-\d+)?)\.[A-Za-z0-9_]+\.tmp")


def shard_of(key: str, n: int) -> int:
    """Stable shard of an output name (relative path without extension; bytes a file system
    returned undecoded hash as those bytes)."""
    return int.from_bytes(hashlib.sha1(key.encode("utf-8", "surrogateescape")).digest()[:8], "big") % n


def output_key(rel: str) -> str:
    """An image's name under each output folder: its path relative to INPUT_DIR without the extension."""
    return rel.rsplit(".", 1)[0]


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


class GTRef(NamedTuple):
    """An image's ground-truth label file, as ``find_gt`` matched it."""

    file: str  # path relative to GT_DIR
    fmt: str  # id format (``trainIds``, ``labelIds``, ...), as read_trainids takes it


@dataclass
class Item:
    """One image to label; strings only, so it crosses to Ray workers as JSON (``to_dict``)."""

    rel: str  # path relative to INPUT_DIR, posix
    key: str  # rel without extension: the output name under each output folder
    gt: GTRef | None = None

    def to_dict(self) -> dict:
        return {"rel": self.rel, "key": self.key, "gt": list(self.gt) if self.gt else None}

    @classmethod
    def from_dict(cls, d: dict) -> Item:
        return cls(d["rel"], d["key"], GTRef(*d["gt"]) if d.get("gt") else None)


class Collision(NamedTuple):
    """Two images with one output name (``a.png`` and ``a.jpg``): the second is refused."""

    path: str
    other: str  # the path that took the output name first


class Refused(NamedTuple):
    """An image whose name train.txt and the reports cannot hold (see :func:`name_problem`)."""

    path: str
    problem: str


@dataclass
class Plan:
    opts: LabelOptions
    listed: list[str]  # this shard's images (all of them, finished or not)
    items: list[Item]  # the listed images that can be labelled, in order: the batches form over these
    collisions: list[Collision]
    refused: list[Refused]
    finished: dict[str, dict] = field(default_factory=dict)  # records of the images skipped as finished

    @property
    def todo(self) -> list[Item]:
        """The images to (re)do: every item not finished."""
        return [item for item in self.items if item.rel not in self.finished]

    @property
    def skipped(self) -> int:
        return len(self.items) - len(self.todo)


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
                    if _temp_is_mine(name, rel_dir, opts):
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(dirpath, name))
                    continue
                existing.add(f"{sub}/{rel}")
    return existing


def _temp_is_mine(name: str, rel_dir: str, opts: LabelOptions) -> bool:
    """Whether a temporary output file belongs to this run's kind (same shard, or unsharded)."""
    m = _TEMP_NAME.fullmatch(name)
    if m is not None:
        return m.group("tag") == opts.temp_tag
    final = name[1:].rsplit(".", 2)[0]  # untagged, from an older prnseg: its shard follows from the name
    key = (final if rel_dir == "." else f"{Path(rel_dir).as_posix()}/{final}")[: -len(".png")]
    return opts.shard is None or shard_of(key, opts.shard[1]) == opts.shard[0]


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


class _Candidate(NamedTuple):
    """An image whose manifest says ``ok`` and whose output files exist: finished if intact."""

    item: Item
    record: dict


def make_plan(opts: LabelOptions) -> Plan:
    inp, out = opts.input_dir, opts.out_dir  # label_folder has checked that inp is a folder
    if opts.gt_dir is not None and not opts.gt_dir.is_dir():
        raise LabelError(f"{opts.gt_dir}: --gt folder not found")
    listed_all = list_inputs(inp, exclude=out)
    if not listed_all:
        raise LabelError(f"{inp}: no images ({', '.join(IMAGE_EXTENSIONS)}) found (searched recursively)")
    seen: dict[str, str] = {}
    collisions: list[Collision] = []
    refused: list[Refused] = []
    listed: list[str] = []
    items: list[Item] = []
    for rel in listed_all:
        key = output_key(rel)
        if opts.shard is not None and shard_of(key, opts.shard[1]) != opts.shard[0]:
            continue
        listed.append(rel)
        problem = name_problem(rel)
        if problem is not None:
            refused.append(Refused(rel, problem))
            continue
        if key in seen:
            collisions.append(Collision(rel, seen[key]))
            continue
        seen[key] = rel
        items.append(Item(rel, key))
    return Plan(opts, listed, items, collisions, refused, _finished(opts, items))


def _finished(opts: LabelOptions, items: list[Item]) -> dict[str, dict]:
    """The manifest records of ``items`` a resume can skip (and each item's ground truth, set on
    the way); their output files are verified in parallel, as decoding them is the slow part."""
    from prnseg.serve.label_metrics import find_gt

    out = opts.out_dir
    existing = _scan_outputs(out, opts)
    previous = previous_records(out, opts.tag)
    candidates: list[_Candidate] = []
    for item in items:
        if opts.gt_dir is not None:
            found = find_gt(opts.gt_dir, item.rel)
            item.gt = GTRef(*found) if found else None
        rec = previous.get(item.rel)
        done = rec is not None and all(f"{sub}/{item.key}.png" in existing for sub in opts.subdirs)
        if done and opts.gt_dir is not None:
            want = item.gt.file if item.gt else None
            have = (rec.get("gt") or {}).get("file")
            done = have == want and "error" not in (rec.get("gt") or {})
        if done:
            candidates.append(_Candidate(item, rec))
    with ThreadPoolExecutor(opts.workers, thread_name_prefix="prnseg-verify") as pool:
        intact = list(pool.map(lambda c: outputs_intact(out, c.item.key, c.record, opts.subdirs), candidates))
    return {c.item.rel: c.record for c, ok in zip(candidates, intact) if ok}


def _settings(opts: LabelOptions, spec: ModelSpec) -> dict:
    art = spec.artefacts.get("pseudolabeler", {})
    return {
        "format": "prnseg-label", "format_version": 1,
        "model": {"name": spec.name, "sha256": art.get("sha256"), "dir": str(opts.model_dir.resolve())},
        "input_dir": str(opts.input_dir.resolve()),
        "ignore_noisy": opts.ignore_noisy,
        "noise_threshold": spec.noise_threshold if opts.noise_threshold is None else opts.noise_threshold,
        "precision": opts.precision,
        "tta": opts.tta,
        "logit_adjustment": opts.effective_logit_adjustment(spec),
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
            absent = {"tta": False, "logit_adjustment": 0.0}   # what label.json files written before them meant
            for k in ("input_dir", "ignore_noisy", "noise_threshold", "precision", "tta", "logit_adjustment"):
                if before.get(k, absent.get(k)) != now[k]:
                    diffs.append(f"{k} {before.get(k)} -> {now[k]}")
            if diffs:
                raise LabelError(f"{opts.out_dir} was labelled with other settings ({'; '.join(diffs)}); "
                                 "use a new --out, or repeat the original options to resume")
            return
    atomic_write_bytes(path, (json.dumps(now, indent=2) + "\n").encode())
