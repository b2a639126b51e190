import os
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest

from conftest import run_python_without_torch
from prnseg.errors import ImageReadError
from prnseg import atomic, image_io


def test_read_image_normalises_gray_rgba_and_16bit(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 255, (12, 16, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "c.png"), rgb[:, :, ::-1])
    assert np.array_equal(image_io.read_image(tmp_path / "c.png"), rgb)
    cv2.imwrite(str(tmp_path / "g.png"), rgb[:, :, 0])
    g = image_io.read_image(tmp_path / "g.png")
    assert g.shape == (12, 16, 3) and np.array_equal(g[:, :, 1], rgb[:, :, 0])
    rgba = np.dstack([rgb[:, :, ::-1], np.full((12, 16), 7, np.uint8)])
    cv2.imwrite(str(tmp_path / "a.png"), rgba)
    assert np.array_equal(image_io.read_image(tmp_path / "a.png"), rgb)
    cv2.imwrite(str(tmp_path / "w.png"), rgb[:, :, ::-1].astype(np.uint16) * 257)
    assert np.array_equal(image_io.read_image(tmp_path / "w.png"), rgb)


@pytest.mark.parametrize("content,reason", [
    (b"", "empty"),
    (b"this is text, not an image", "not a decodable image"),
])
def test_bad_files_name_the_file(tmp_path, content, reason):
    p = tmp_path / "bad.png"
    p.write_bytes(content)
    with pytest.raises(ImageReadError) as exc:
        image_io.read_image(p)
    msg = str(exc.value)
    assert str(p) in msg and reason in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        image_io.read_image(tmp_path / "nope.jpg")


def test_truncated_jpeg_is_an_error_or_decodes(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.zeros((64, 64, 3), np.uint8))
    p = tmp_path / "t.jpg"
    p.write_bytes(buf.tobytes()[:20])
    with pytest.raises(ImageReadError):
        image_io.read_image(p)


def test_read_label_rejects_colour_labels(tmp_path):
    cv2.imwrite(str(tmp_path / "l.png"), np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ImageReadError, match="single-channel"):
        image_io.read_label(tmp_path / "l.png")
    assert image_io.read_label(tmp_path / "l.png", channel=2).shape == (4, 4)


def test_atomic_write_leaves_no_temp_files(tmp_path):
    target = tmp_path / "sub" / "x.png"
    image_io.write_image(target, np.full((5, 6), 3, np.uint8))
    assert os.listdir(tmp_path / "sub") == ["x.png"]
    assert cv2.imread(str(target), cv2.IMREAD_UNCHANGED).tolist() == [[3] * 6] * 5


def test_atomic_write_cleans_up_on_failure(tmp_path, monkeypatch):
    def boom(src, dst):
        raise OSError("disk full")
    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OSError):
        atomic.atomic_write_bytes(tmp_path / "y.png", b"data")
    assert os.listdir(tmp_path) == []


def test_atomic_writer_streams_and_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "a" / "state.json"
    atomic.atomic_write_text(target, '{"v": 1}\n')
    with pytest.raises(RuntimeError):
        with atomic.atomic_writer(target, fsync=True) as f:
            f.write(b"half a fi")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == '{"v": 1}\n' and os.listdir(target.parent) == ["state.json"]
    with atomic.atomic_writer(target, fsync=True) as f:
        f.write(b"new")
    assert target.read_bytes() == b"new"
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # as open() makes it, not mkstemp's 0600


def test_palette_png_stores_ids_and_palette(tmp_path):
    label = np.array([[0, 1, 2], [13, 255, 18]], np.uint8)
    data = image_io.encode_palette_png(label)
    # decode by hand: the stored bytes are the ids, the PLTE chunk the Cityscapes colours
    idat = data[data.index(b"IDAT") + 4:]
    raw = zlib.decompressobj().decompress(idat)
    rows = np.frombuffer(raw[: 2 * 4], np.uint8).reshape(2, 4)
    assert np.array_equal(rows[:, 1:], label) and np.all(rows[:, 0] == 0)
    rgb = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)[:, :, ::-1]
    assert rgb[1, 0].tolist() == [0, 0, 142]


@pytest.mark.parametrize("backend", ["isal", "zlib"])
@pytest.mark.parametrize("level", [0, 1, 6, 9])
def test_pngs_decode_exactly_with_either_deflate(backend, level, monkeypatch):
    """ISA-L writes the PNGs where it is installed, zlib elsewhere: both give the same pixels."""
    if backend == "isal":
        pytest.importorskip("isal", reason="isal has no wheel for this platform")
        assert image_io._isal_zlib is not None, "isal is installed but image_io does not use it"
    else:
        monkeypatch.setattr(image_io, "_isal_zlib", None)
    rng = np.random.default_rng(level)
    label = np.repeat(rng.integers(0, 19, (16, 24), dtype=np.uint8), 4, axis=1)
    smooth = np.clip(np.cumsum(rng.integers(-3, 4, (40, 96)), axis=1) + 128, 0, 255).astype(np.uint8)
    colours = cv2.imdecode(np.frombuffer(image_io.encode_palette_png(label, level=level), np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(colours[:, :, ::-1], np.asarray(image_io.CITYSCAPES_PALETTE, np.uint8)[label])
    gray = cv2.imdecode(np.frombuffer(image_io.encode_gray_png(smooth, level=level), np.uint8), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(gray, smooth)
    assert zlib.decompress(image_io.deflate(smooth.tobytes(), level)) == smooth.tobytes()


def test_serve_imports_without_torch():
    code = "import sys, prnseg.serve; assert 'torch' not in sys.modules, 'torch imported'; print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_serve_runs_when_torch_cannot_be_imported():
    """Stronger than checking sys.modules: make `import torch` fail outright."""
    code = ("import numpy as np, prnseg.serve as s; from prnseg import image_io;"
            "print(s.colorize(np.zeros((1, 1), np.uint8)).tolist())")
    out = run_python_without_torch(code)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[[[128, 64, 128]]]"


def test_ground_truth_reader_takes_prnseg_labels_and_16bit_label_ids(tmp_path):
    """``prnseg label --gt`` reads ground truth with the datasets' reader: an indexed PNG (the
    labels/ prnseg itself writes) gives its ids, and a 16-bit labelId beyond 255 is ignore."""
    label = np.array([[0, 1, 2], [13, 255, 18]], np.uint8)
    (tmp_path / "p.png").write_bytes(image_io.encode_palette_png(label))
    assert np.array_equal(image_io.read_trainids(tmp_path / "p.png", "trainIds"), label)
    wide = np.array([[7, 26], [256, 1000]], np.uint16)  # road, car, then ids no 8-bit map has
    cv2.imwrite(str(tmp_path / "w.png"), wide)
    assert image_io.read_trainids(tmp_path / "w.png", "labelIds").tolist() == [[0, 13], [255, 255]]
