"""Image I/O contract shared by training and serving.

Images come back as RGB uint8 (H, W, 3) whatever is on disk (grayscale, RGBA, 16-bit); every
failure is an :class:`ImageReadError` naming the file and the reason. Every write is atomic:
encode in memory, then :func:`prnseg.atomic.atomic_write_bytes` (a temporary file in the same
folder, then a rename), so a reader (or a re-run after a crash) never sees half a file.
"""

from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np

from prnseg.atomic import atomic_write_bytes
from prnseg.errors import ConfigError, DatasetError, ImageReadError
from prnseg.labels import (
    CITYSCAPES_PALETTE,
    IGNORE_INDEX,
    NUM_CLASSES,
    labelid_to_trainid,
    synthia_to_trainid,
)

try:  # ISA-L's deflate: 4-7x faster than zlib's at level 1 with output as small or smaller
    from isal import isal_zlib as _isal_zlib
except ImportError:  # no wheel for this platform: zlib, the same PNGs a little slower
    _isal_zlib = None

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _u16(data: bytes, pos: int, order: str = "big") -> int:
    return int.from_bytes(data[pos:pos + 2], order)


def _u32(data: bytes, pos: int, order: str = "big") -> int:
    return int.from_bytes(data[pos:pos + 4], order)


def _jpeg_size(data: bytes) -> tuple[int, int] | None:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            pos += 2
            continue
        length = _u16(data, pos + 2)
        if marker in (*range(0xC0, 0xC4), *range(0xC5, 0xC8), *range(0xC9, 0xCC), *range(0xCD, 0xD0)):
            if length < 7 or pos + 9 > len(data):
                return None
            return _u16(data, pos + 5), _u16(data, pos + 7)
        if marker in (0xD9, 0xDA) or length < 2:  # end of image or start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _tiff_size(data: bytes) -> tuple[int, int] | None:
    order = "little" if data[:2] == b"II" else "big"
    ifd = _u32(data, 4, order)
    if ifd + 2 > len(data):
        return None
    found: dict[int, int] = {}
    for i in range(_u16(data, ifd, order)):
        e = ifd + 2 + 12 * i
        if e + 12 > len(data):
            return None
        tag, kind = _u16(data, e, order), _u16(data, e + 2, order)
        if tag in (256, 257):
            found[tag] = _u16(data, e + 8, order) if kind == 3 else _u32(data, e + 8, order)
    return (found[257], found[256]) if len(found) == 2 else None


def image_header_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) read from the header of a PNG, JPEG, WebP, BMP or TIFF file's bytes without
    decoding a pixel; None when the header is damaged or of another kind. A PNG's IHDR must pass
    its CRC, so a damaged size field is caught rather than trusted."""
    try:
        if data.startswith(_PNG_SIGNATURE) and data[12:16] == b"IHDR" and _u32(data, 8) == 13:
            if zlib.crc32(data[12:29]) & 0xFFFFFFFF != _u32(data, 29):
                return None
            size = _u32(data, 20), _u32(data, 16)
        elif data[:3] == b"\xff\xd8\xff":
            size = _jpeg_size(data)
        elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
                size = _u16(data, 28, "little") & 0x3FFF, _u16(data, 26, "little") & 0x3FFF
            elif kind == b"VP8L" and data[20] == 0x2F:
                bits = _u32(data, 21, "little")
                size = ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
            elif kind == b"VP8X":
                size = int.from_bytes(data[27:30], "little") + 1, int.from_bytes(data[24:27], "little") + 1
            else:
                size = None
        elif data[:2] == b"BM" and len(data) >= 26:
            if _u32(data, 14, "little") == 12:
                size = _u16(data, 20, "little"), _u16(data, 18, "little")
            else:
                w = int.from_bytes(data[18:22], "little", signed=True)
                h = int.from_bytes(data[22:26], "little", signed=True)
                size = abs(h), abs(w)
        elif data[:4] in (b"II*\x00", b"MM\x00*"):
            size = _tiff_size(data)
        else:
            size = None
    except IndexError:
        return None
    return size if size is not None and size[0] > 0 and size[1] > 0 else None


def _read_raw(path: str | os.PathLike, flags: int, max_pixels: int | None = None) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise ImageReadError(p, "file not found")
    if max_pixels is not None and p.stat().st_size > 8 * max_pixels + (1 << 20):
        raise ImageReadError(p, f"{p.stat().st_size} bytes, more than any image of at most {max_pixels} pixels "
                                "can take (the --max-pixels limit); not read")
    data = p.read_bytes()
    if not data:
        raise ImageReadError(p, "file is empty (0 bytes)")
    if max_pixels is not None:
        size = image_header_size(data)
        if size is None:
            raise ImageReadError(p, "image size unreadable from its header (damaged, or not PNG/JPEG/WebP/BMP/TIFF); "
                                    "not decoded")
        if size[0] * size[1] > max_pixels:
            raise ImageReadError(p, f"{size[1]}x{size[0]} is {size[0] * size[1]} pixels, more than the limit of "
                                    f"{max_pixels} (--max-pixels); not decoded")
    arr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flags)
    if arr is None or arr.size == 0:
        raise ImageReadError(p, "not a decodable image (corrupt or wrong format)")
    return arr


def to_rgb_uint8(arr: np.ndarray) -> np.ndarray:
    """OpenCV-decoded array (gray / BGR / BGRA, 8 or 16 bit) -> RGB uint8."""
    if arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)
    elif arr.dtype in (np.float32, np.float64):
        arr = np.clip(arr * 255.0, 0, 255).astype(np.uint8)
    elif arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    if arr.ndim == 2:
        return cv2.cvtColor(arr, cv2.COLOR_GRAY2RGB)
    if arr.shape[2] == 4:
        return cv2.cvtColor(arr, cv2.COLOR_BGRA2RGB)
    if arr.shape[2] == 1:
        return cv2.cvtColor(arr[:, :, 0], cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(arr, cv2.COLOR_BGR2RGB)


def read_image(path: str | os.PathLike, max_pixels: int | None = None) -> np.ndarray:
    """Read any supported image as RGB uint8 (H, W, 3). With ``max_pixels`` the size is read from
    the header first and a larger (or header-damaged) image is refused before any decode, so one
    hostile file cannot take the process's memory."""
    return to_rgb_uint8(_read_raw(path, cv2.IMREAD_UNCHANGED, max_pixels))


def read_label(path: str | os.PathLike, channel: int | None = None) -> np.ndarray:
    """Read a label map without any conversion (uint8 or uint16, 2-D).

    ``channel`` picks one channel (OpenCV's BGR order) from a multi-channel label file, as
    SYNTHIA stores its class id in one channel of a 16-bit PNG. A multi-channel file without
    ``channel`` is an error: it is a colour image, not a label map.
    """
    arr = _read_raw(path, cv2.IMREAD_UNCHANGED)
    if arr.ndim == 3:
        if channel is None:
            raise ImageReadError(
                path, f"label has {arr.shape[2]} channels; expected a single-channel id map")
        arr = arr[:, :, channel]
    return arr


LABEL_FORMATS = ("trainIds", "labelIds", "synthia")


def _build_luts() -> dict[str, np.ndarray]:
    """65536-entry id -> trainId tables, so 8- and 16-bit label files index them alike."""
    ids = np.arange(65536)
    train = np.full(65536, IGNORE_INDEX, np.uint8)
    train[:NUM_CLASSES] = np.arange(NUM_CLASSES, dtype=np.uint8)
    label = np.full(65536, IGNORE_INDEX, np.uint8)
    label[:256] = labelid_to_trainid(np.arange(256, dtype=np.uint8))
    synthia = synthia_to_trainid(ids.astype(np.uint16)).astype(np.uint8)
    return {"trainIds": train, "labelIds": label, "synthia": synthia}


_LUTS = _build_luts()


def _png_palette(path: Path, data: bytes) -> np.ndarray:
    """The PLTE entries (N x 3, RGB) of a PNG file's bytes."""
    pos = len(_PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length = int.from_bytes(data[pos:pos + 4], "big")
        tag = data[pos + 4:pos + 8]
        if tag == b"PLTE":
            payload = data[pos + 8:pos + 8 + length]
            if length % 3 or len(payload) != length:
                break
            return np.frombuffer(payload, np.uint8).reshape(-1, 3)
        if tag == b"IDAT":
            break
        pos += 12 + length
    raise ImageReadError(path, "indexed PNG without a valid PLTE chunk (corrupt file)")


def _palette_png_to_trainids(path: Path, lut: np.ndarray) -> np.ndarray:
    """Recover the indices of an indexed PNG from OpenCV's colour expansion and the palette.

    Palette entries that share a colour are fine as long as they map to the same trainId
    (e.g. the black ids 0-4 of the Cityscapes palette); otherwise pixels of that colour are
    ambiguous and the file is rejected.
    """
    data = path.read_bytes()
    palette = _png_palette(path, data)
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise ImageReadError(path, "not a decodable image (corrupt or wrong format)")
    packed = ((bgr[..., 2].astype(np.int32) << 16) | (bgr[..., 1].astype(np.int32) << 8)
              | bgr[..., 0].astype(np.int32))
    pal = (palette[:, 0].astype(np.int32) << 16) | (palette[:, 1].astype(np.int32) << 8) \
        | palette[:, 2].astype(np.int32)
    mapped = lut[np.arange(len(pal))].astype(np.int32)
    colours, first = np.unique(pal, return_index=True)
    values = mapped[first].copy()
    for k, colour in enumerate(colours):
        if len(np.unique(mapped[pal == colour])) > 1:
            values[k] = -1
    pos = np.clip(np.searchsorted(colours, packed), 0, len(colours) - 1)
    if not np.array_equal(colours[pos], packed):
        raise ImageReadError(path, "indexed PNG has pixels whose colour is not in its palette")
    out = values[pos]
    if (out < 0).any():
        raise DatasetError(f"{path}: indexed PNG whose palette gives one colour to ids of "
                           "different classes; save the label as a grayscale id map")
    return out.astype(np.uint8)


def read_trainids(path: str | os.PathLike, label_format: str = "trainIds",
                  channel: int | None = None) -> np.ndarray:
    """Read a label file of any supported encoding as a uint8 trainId map (255 = ignore).

    ``label_format`` says what the stored ids are ("trainIds", "labelIds" or "synthia");
    ``channel`` picks the channel of a multi-channel file (SYNTHIA: -1, as the reference's
    ``IMREAD_UNCHANGED[:, :, -1]``). trainIds outside 0..18 become 255.
    """
    if label_format not in _LUTS:
        raise ConfigError(f"label format {label_format!r} unknown; expected one of {LABEL_FORMATS}")
    p = Path(path)
    lut = _LUTS[label_format]
    try:
        with open(p, "rb") as f:
            head = f.read(26)
    except OSError as e:
        raise ImageReadError(p, f"cannot open label ({e.strerror or e})") from None
    if len(head) == 26 and head.startswith(_PNG_SIGNATURE) and head[25] == 3:
        return _palette_png_to_trainids(p, lut)
    arr = read_label(p, channel)
    if arr.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(p, f"label has dtype {arr.dtype}; expected an 8- or 16-bit id map")
    return lut[arr]


def encode_image(arr: np.ndarray, ext: str = ".png", jpeg_quality: int = 95, png_level: int | None = None) -> bytes:
    """Encode a gray or RGB uint8 array (RGB order, converted for OpenCV here); ``png_level``
    sets the PNG compression level (OpenCV's default without it)."""
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    params: list[int] = []
    if ext.lower() in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    elif ext.lower() == ".png" and png_level is not None:
        params = [cv2.IMWRITE_PNG_COMPRESSION, int(png_level)]
    ok, buf = cv2.imencode(ext, arr, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode an array of shape {arr.shape} as {ext}")
    return buf.tobytes()


def write_image(path: str | os.PathLike, arr: np.ndarray, jpeg_quality: int = 95) -> None:
    """Atomically write an RGB or single-channel image; the format follows the suffix."""
    atomic_write_bytes(path, encode_image(arr, Path(path).suffix or ".png", jpeg_quality))


def _png_chunk(tag: bytes, payload: bytes) -> bytes:
    return (struct.pack(">I", len(payload)) + tag + payload
            + struct.pack(">I", zlib.crc32(tag + payload) & 0xFFFFFFFF))


def deflate(raw: bytes, level: int) -> bytes:
    """A zlib stream for a PNG's IDAT chunk. A labelling run writes several PNGs per image on the
    cores that also run inference, so ISA-L is used when installed: levels 1-9 map to its 1-3,
    level 0 stays zlib's stored (uncompressed) stream."""
    level = int(level)
    if _isal_zlib is not None and level > 0:
        return _isal_zlib.compress(raw, min(level, 3))
    return zlib.compress(raw, level)


def encode_palette_png(label: np.ndarray, palette=CITYSCAPES_PALETTE, level: int = 6) -> bytes:
    """Encode a uint8 id map as an indexed ('P'-mode) PNG: one byte per pixel on disk (the
    trainIds themselves), shown in colour by any viewer. OpenCV cannot write these.
    ``level`` is the deflate level (1 is several times faster on noisy maps, slightly larger)."""
    label = np.ascontiguousarray(label, dtype=np.uint8)
    if label.ndim != 2:
        raise ValueError(f"palette PNG needs a 2-D id map, got shape {label.shape}")
    h, w = label.shape
    plte = np.zeros((256, 3), dtype=np.uint8)
    plte[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    raw = np.concatenate([np.zeros((h, 1), np.uint8), label], axis=1).tobytes()
    return (_PNG_SIGNATURE
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 3, 0, 0, 0))
            + _png_chunk(b"PLTE", plte.tobytes())
            + _png_chunk(b"IDAT", deflate(raw, level))
            + _png_chunk(b"IEND", b""))


def encode_gray_png(plane: np.ndarray, level: int = 1) -> bytes:
    """Encode a 2-D uint8 plane as an 8-bit grayscale PNG with the "Up" filter: about 3x faster
    than OpenCV's encoder for the smooth masks and maps a pseudo-labeller writes, at equal size."""
    plane = np.ascontiguousarray(plane, dtype=np.uint8)
    if plane.ndim != 2:
        raise ValueError(f"grayscale PNG needs a 2-D array, got shape {plane.shape}")
    h, w = plane.shape
    rows = np.empty((h, w + 1), dtype=np.uint8)
    rows[:, 0] = 2
    rows[0, 1:] = plane[0]
    np.subtract(plane[1:], plane[:-1], out=rows[1:, 1:])
    return (_PNG_SIGNATURE
            + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", deflate(rows.tobytes(), level))
            + _png_chunk(b"IEND", b""))


def write_palette_png(path: str | os.PathLike, label: np.ndarray, palette=CITYSCAPES_PALETTE) -> None:
    atomic_write_bytes(path, encode_palette_png(label, palette))


def list_images(root: str | os.PathLike, extensions=IMAGE_EXTENSIONS) -> list[Path]:
    """All image files under ``root`` (recursive), sorted for a deterministic order."""
    root = Path(root)
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in extensions)
