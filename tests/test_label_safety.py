"""`prnseg label` against careless and hostile input: an output folder inside the input, names no
text format holds, huge or header-damaged images, a full / read-only / failing disk, outputs torn
by a power cut and temp files of runs sharing a folder."""

import errno
import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_label import label, manifest, render_folder, temp_files, tree

from prnseg.image_io import image_header_size
from prnseg.serve import label_writer, pipeline
from prnseg.serve.pipeline import (DEFAULT_MAX_PIXELS, EXIT_SOME_FAILED, LabelError, LabelOptions, LabelStopped,
                                   _scan_outputs, label_folder, shard_of)


def png_chunk(tag: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF)


def huge_gray_png(side: int) -> bytes:
    """A valid side x side 8-bit grayscale PNG of zeros, made without holding its pixels."""
    z = zlib.compressobj(9)
    row = bytes(side + 1)
    idat = b"".join(z.compress(row * 1000) for _ in range(side // 1000)) + z.flush()
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
            + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b""))


def can_mount_tmpfs(where: Path, options: str) -> bool:
    where.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True)
    return proc.returncode == 0


def umount(where: Path) -> None:
    subprocess.run(["umount", str(where)], capture_output=True)


def one_line(proc) -> str:
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


# -- without a model ------------------------------------------------------------------------------

@pytest.mark.slow
def test_image_size_comes_from_the_header():
    img = np.random.default_rng(0).integers(0, 255, (37, 53, 3), np.uint8)
    for ext, params in ((".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]), (".webp", []),
                        (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".bmp", []), (".tif", [])):
        data = cv2.imencode(ext, img, params)[1].tobytes()
        assert image_header_size(data) == (37, 53), ext
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    exif = b"\xff\xe1" + struct.pack(">H", 2 + 5000) + b"Exif\x00\x00" + bytes(4994)  # a camera's APP1 first
    assert image_header_size(jpg[:2] + exif + jpg[2:]) == (37, 53)
    assert image_header_size(huge_gray_png(20000)[:40]) == (20000, 20000)
    png = bytearray(cv2.imencode(".png", img)[1].tobytes())
    png[18] ^= 0x40  # the width field: the IHDR CRC no longer matches
    assert image_header_size(bytes(png)) is None
    assert image_header_size(b"this is not an image") is None and image_header_size(jpg[:20]) is None


def test_temp_cleanup_is_scoped_to_the_run_that_made_the_file(tmp_path, monkeypatch):
    from prnseg import atomic

    renamed = []
    real_replace = os.replace
    monkeypatch.setattr(atomic.os, "replace", lambda a, b: (renamed.append(Path(a).name), real_replace(a, b)))
    atomic.atomic_write_bytes(tmp_path / "labels" / "a.png", b"x", temp_tag=LabelOptions("i", tmp_path, "m",
                                                                                         shard=(1, 2)).temp_tag)
    assert renamed[0].startswith(".a.png.lbl-shard-1-of-2.") and renamed[0].endswith(".tmp")
    monkeypatch.undo()

    (tmp_path / "labels" / "a.png").unlink()
    names = {"": ".x.png.lbl.k2j4abcd.tmp", ".shard-0-of-2": ".y.png.lbl-shard-0-of-2.zz9_ab12.tmp",
             ".shard-1-of-2": ".z.png.lbl-shard-1-of-2.q1w2e3r4.tmp"}
    for name in names.values():
        (tmp_path / "labels" / name).write_bytes(b"\x89PNG partial")
    (tmp_path / "labels" / "done.png").write_bytes(b"done")
    left = lambda: sorted(p.name for p in temp_files(tmp_path))  # noqa: E731
    # an unsharded run next to running shards removes only its own stale temp files
    assert _scan_outputs(tmp_path, LabelOptions("i", tmp_path, "m")) == {"labels/done.png"}
    assert left() == sorted([names[".shard-0-of-2"], names[".shard-1-of-2"]])
    _scan_outputs(tmp_path, LabelOptions("i", tmp_path, "m", shard=(0, 2)))
    assert left() == [names[".shard-1-of-2"]]


def test_max_pixels_is_validated_and_has_a_default():
    assert DEFAULT_MAX_PIXELS == 40_000_000
    assert LabelOptions("i", "o", "m").max_pixels == DEFAULT_MAX_PIXELS
    with pytest.raises(LabelError, match="--max-pixels must be >= 1, got 0"):
        LabelOptions("i", "o", "m", max_pixels=0)


# -- on the exported model ------------------------------------------------------------------------

@pytest.mark.slow
def test_output_folder_inside_a_relative_input_is_never_labelled(exported_model, tmp_path):
    render_folder(tmp_path / "in", 2)
    out = tmp_path / "in" / "out"  # relative INPUT_DIR, absolute OUT_DIR inside it
    for _ in range(3):
        proc = subprocess.run([sys.executable, "-m", "prnseg", "label", "in", "--model", str(exported_model),
                               "--out", str(out), "--no-progress"], capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        report = json.loads((out / "report.json").read_text())
        assert report["counts"]["listed"] == 2 and report["counts"]["ok"] == 2
    assert len(manifest(out)) == 2 and len((out / "train.txt").read_text().splitlines()) == 2


@pytest.mark.slow
def test_hostile_names_and_huge_images_are_refused_and_the_rest_labelled(exported_model, tmp_path):
    inp = tmp_path / "in"
    good = render_folder(inp, 3, hw=(48, 80))
    img = cv2.imread(str(inp / good[0]))
    bad_utf8 = os.fsencode(inp) + b"/caf\xe9.png"  # Latin-1 bytes: not UTF-8
    with open(bad_utf8, "wb") as f:
        f.write(cv2.imencode(".png", img)[1].tobytes())
    cv2.imwrite(str(inp / "two\nlines.png"), img)
    (inp / "huge.png").write_bytes(huge_gray_png(20000))
    damaged = bytearray(cv2.imencode(".png", img)[1].tobytes())
    damaged[18] ^= 0x40
    (inp / "damaged.png").write_bytes(bytes(damaged))
    jpg = cv2.imencode(".jpg", img)[1].tobytes()
    (inp / "exif.jpg").write_bytes(jpg[:2] + b"\xff\xe1" + struct.pack(">H", 2 + 600) + bytes(600) + jpg[2:])

    out = tmp_path / "out"
    for attempt in range(2):  # and the re-run, which used to crash on the stored names
        proc = label(inp, exported_model, out, check=False)
        assert proc.returncode == EXIT_SOME_FAILED == 1, proc.stderr
        assert "4 failed" in proc.stdout
        raw = (out / "failures.jsonl").read_bytes()
        assert raw.isascii()
        failures = {os.fsencode(f["path"]): f["reason"] for f in map(json.loads, raw.splitlines())}
        assert set(failures) == {b"caf\xe9.png", b"two\nlines.png", b"huge.png", b"damaged.png"}
        assert "not valid UTF-8; rename it" in failures[b"caf\xe9.png"]
        assert "line break" in failures[b"two\nlines.png"]
        assert ("20000x20000 is 400000000 pixels, more than the limit of 40000000 (--max-pixels)"
                in failures[b"huge.png"])
        assert "unreadable from its header" in failures[b"damaged.png"]
        report = json.loads((out / "report.json").read_text())
        assert report["counts"]["ok"] == 4 and report["counts"]["failed"] == 4
        assert (out / "train.txt").read_text().splitlines() == sorted([*good, "exif.jpg"])
    assert not (out / "labels" / "huge.png").exists()
    # a limit below the ordinary images' size refuses them too, from their headers
    proc = label(inp, exported_model, tmp_path / "small", "--max-pixels", "3000", check=False)
    assert proc.returncode == 1 and "more than the limit of 3000" in (tmp_path / "small" / "failures.jsonl").read_text()


@pytest.mark.slow
def test_resume_redoes_finished_outputs_that_no_longer_decode(exported_model, tmp_path):
    inp = tmp_path / "in"
    rels = render_folder(inp, 6)
    out = tmp_path / "out"
    label(inp, exported_model, out)
    before = tree(out)
    keys = [r.rsplit(".", 1)[0] for r in sorted(rels)]
    (out / "labels" / f"{keys[0]}.png").write_bytes(b"")  # what a power cut leaves of an unsynced file
    torn = out / "confidence" / f"{keys[1]}.png"
    torn.write_bytes(torn.read_bytes()[:-30])
    proc = label(inp, exported_model, out)
    assert "labelled 2 images, 0 failed, 4 already done" in proc.stdout
    assert tree(out) == before


def test_outputs_and_their_folders_are_fsynced_before_the_manifest_line(exported_model, tmp_path, monkeypatch):
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("needs /proc/self/fd to name the synced files")
    inp = tmp_path / "in"
    rels = render_folder(inp, 5)
    out = tmp_path / "out"
    events = []
    real_fsync, real_add = os.fsync, pipeline.Journal.add

    def fsync(fd):
        events.append(("sync", os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def add(self, rec):
        events.append(("journal", rec["path"]))
        return real_add(self, rec)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(pipeline.Journal, "add", add)
    label_folder(LabelOptions(inp, out, exported_model, progress=False, device="cpu", workers=2), log=lambda m: None)
    for rel in rels:
        key = rel.rsplit(".", 1)[0]
        at = events.index(("journal", rel))
        synced = {p for kind, p in events[:at] if kind == "sync"}
        for sub in ("labels", "noise", "confidence"):
            path = (out / sub / f"{key}.png").resolve()
            assert any(Path(p).name.startswith(f".{path.name}.") and Path(p).parent == path.parent for p in synced), \
                (sub, rel)  # the file, synced under its temporary name before the rename
            assert str(path.parent) in synced, (sub, rel)  # and its folder, after the rename


@pytest.fixture(scope="module")
def labelled_once(exported_model, tmp_path_factory):
    """30 images and an uninterrupted run over them (batch 4): what every resume must reproduce."""
    root = tmp_path_factory.mktemp("full")
    rels = render_folder(root / "in", 30)
    label(root / "in", exported_model, root / "full", "--batch", "4")
    return root / "in", rels, root / "full"


@pytest.mark.slow
@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EIO])
def test_a_disk_error_stops_the_run_at_once_and_the_resume_is_byte_identical(exported_model, labelled_once, tmp_path,
                                                                               monkeypatch, code):
    inp, rels, full = labelled_once
    out = tmp_path / "out"
    writes = {"ok": 0, "refused": 0}
    real_write = label_writer.atomic_write_bytes

    def write(path, data, **kw):  # the disk gives out after 30 output files (10 images)
        if Path(path).suffix == ".png" and writes["ok"] >= 30:
            writes["refused"] += 1
            raise OSError(code, os.strerror(code), str(path))
        writes["ok"] += Path(path).suffix == ".png"
        return real_write(path, data, **kw)

    monkeypatch.setattr(label_writer, "atomic_write_bytes", write)
    opts = LabelOptions(inp, out, exported_model, progress=False, device="cpu", batch=4, workers=2)
    with pytest.raises(LabelStopped, match=re.escape(pipeline.disk_problem(OSError(code, "x")))) as err:
        label_folder(opts, log=lambda m: None)
    monkeypatch.undo()
    assert "\n" not in str(err.value) and "re-run the same command to resume" in str(err.value)
    assert writes["refused"] <= 2 * 4 + 2  # stopped at once: at most the writes already in flight
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["stopped"]["errno"] == errno.errorcode[code]
    assert report["counts"]["failed"] == 0 and 0 < report["counts"]["ok"] <= 10  # nothing blamed on an image
    assert not (out / ".prnseg-label.reserve").exists()

    proc = label(inp, exported_model, out, "--batch", "4")
    assert f"{report['counts']['ok']} already done" in proc.stdout
    assert tree(out) == tree(full) and temp_files(out) == []
    assert [r["path"] for r in manifest(out)] == sorted(rels)
    assert (out / "train.txt").read_text() == (full / "train.txt").read_text()


@pytest.mark.slow
def test_a_full_2mb_tmpfs_stops_with_status_2_then_resumes_byte_identical(exported_model, tmp_path):
    mnt = tmp_path / "small"
    if not can_mount_tmpfs(mnt, "size=2m"):
        pytest.skip("cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN); the injected-ENOSPC test covers the path")
    try:
        inp = tmp_path / "in"
        rels = render_folder(inp, 24, hw=(256, 512))
        extra = ("--save", "confidence,raw,noise_prob,color", "--batch", "4", "--png-level", "0")
        full = tmp_path / "full"
        label(inp, exported_model, full, *extra)
        out = mnt / "out"
        proc = label(inp, exported_model, out, *extra, check=False)
        assert proc.returncode == 2, proc.stderr
        assert "no space left on the device; free space" in one_line(proc)
        report = json.loads((out / "report.json").read_text())
        assert report["run"]["stopped"]["errno"] == "ENOSPC" and report["counts"]["failed"] == 0
        assert report["counts"]["ok"] < len(rels)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
        proc = label(inp, exported_model, out, *extra)
        assert f"{report['counts']['ok']} already done" in proc.stdout
        assert tree(out) == tree(full) and temp_files(out) == []
        assert (out / "train.txt").read_text() == (full / "train.txt").read_text()
    finally:
        umount(mnt)


def test_a_read_only_output_folder_is_a_one_line_error(exported_model, tmp_path):
    render_folder(tmp_path / "in", 2)
    mnt = tmp_path / "ro"
    if not can_mount_tmpfs(mnt, "ro,size=1m"):
        pytest.skip("cannot mount a read-only tmpfs here (needs root or CAP_SYS_ADMIN)")
    try:
        proc = label(tmp_path / "in", exported_model, mnt / "out", check=False)
        assert proc.returncode == 2
        assert "read-only file system; make it writable or use another --out" in one_line(proc)
    finally:
        umount(mnt)


def test_shard_of_takes_any_name():
    assert 0 <= shard_of(os.fsdecode(b"caf\xe9"), 3) < 3
    assert shard_of("a/b", 4) == int.from_bytes(hashlib.sha1(b"a/b").digest()[:8], "big") % 4
