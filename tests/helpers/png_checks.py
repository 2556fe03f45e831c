"""A PNG check written from the PNG specification, independent of matplotlib: signature, the IHDR chunk
and its CRC, an IEND at the end; then Pillow (which matplotlib depends on) decodes the whole image."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> tuple[int, int]:
    """(width, height) of a valid PNG file, or an assertion error."""
    data = Path(path).read_bytes()
    assert data[:8] == SIGNATURE, f"{path} does not start with the PNG signature"
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13, f"{path}: the first chunk is not IHDR"
    body = data[16 : 16 + length]
    (crc,) = struct.unpack(">I", data[16 + length : 20 + length])
    assert crc == zlib.crc32(kind + body), f"{path}: IHDR CRC mismatch"
    width, height, depth, colour = struct.unpack(">IIBB", body[:10])
    assert width > 0 and height > 0 and depth in (1, 2, 4, 8, 16) and colour in (0, 2, 3, 4, 6)
    assert data[-12:] == struct.pack(">I", 0) + b"IEND" + struct.pack(">I", zlib.crc32(b"IEND"))

    from PIL import Image

    with Image.open(path) as image:
        image.load()  # decodes every pixel: a truncated or corrupt stream fails here
        assert image.size == (width, height)
    return width, height
