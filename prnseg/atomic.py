"""The one atomic file writer: write a temporary file in the same folder, then rename it over the
target, so a reader (or a re-run after a crash) sees the old file or the new one, never half a
file. Torch-free; labels, images, checkpoints, model.json, TensorRT plans, reports and the demo's
downloads are all written through here.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterator


def _file_mode() -> int:
    """The permissions ``open()`` would give a new file (mkstemp's own are 0600)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _file_mode()


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in folder ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, fsync: bool = False, temp_tag: str = "") -> Iterator[BinaryIO]:
    """A binary file to write ``path``'s new content into; renamed over ``path`` when the block
    ends without an exception, removed otherwise (``path`` is then untouched).

    ``fsync`` flushes the file to the disk before the rename (the folder is the caller's to
    sync, once for many files), so a power cut never leaves a named but empty file.
    ``temp_tag`` goes into the temporary name (``.NAME.TAG.XXXXXXXX.tmp``) so that a cleanup can
    tell which run's temporary files are stale. Missing parent folders are created."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.{temp_tag + '.' if temp_tag else ''}", suffix=".tmp", dir=p.parent)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, _FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            yield f
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes, fsync: bool = False, temp_tag: str = "") -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer` for ``fsync`` and
    ``temp_tag``)."""
    with atomic_writer(path, fsync=fsync, temp_tag=temp_tag) as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str, fsync: bool = False) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"), fsync=fsync)
