"""16-bit images: scaled to 8 bits (the high byte), not clipped to white."""

import struct
import zlib

import numpy as np
from PIL import Image

from pipelines.folder import load_image

# Hand-picked 16-bit values and their 8-bit high bytes: 0->0, 255->0, 256->1, 1000->3, 30000->117,
# 40000->156, 65280->255, 65535->255.
VALUES = np.array([[0, 255, 256, 1000], [30000, 40000, 65280, 65535]], np.uint16)
EXPECTED = np.array([[0, 0, 1, 3], [117, 156, 255, 255]], np.uint8)


def write_png16(path, array):
    """A minimal 16-bit PNG encoder (colour type 0 grey or 2 RGB, no filtering): PIL writes no 16-bit RGB."""
    height, width = array.shape[:2]
    color_type = 2 if array.ndim == 3 else 0
    rows = b"".join(b"\x00" + array[i].astype(">u2").tobytes() for i in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
                + chunk(b"IEND", b""))


def test_sixteen_bit_greyscale_png(tmp_path):
    path = str(tmp_path / "grey16.png")
    Image.fromarray(VALUES).save(path)  # PIL writes mode I;16 as a 16-bit greyscale PNG
    with Image.open(path) as image:
        assert image.mode == "I;16"  # the mode whose convert("RGB") clips everything above 255
    np.testing.assert_array_equal(load_image(path), np.repeat(EXPECTED[:, :, None], 3, axis=2))
    write_png16(str(tmp_path / "grey16-raw.png"), VALUES)
    np.testing.assert_array_equal(load_image(str(tmp_path / "grey16-raw.png")), load_image(path))


def test_sixteen_bit_rgb_png(tmp_path):
    path = str(tmp_path / "rgb16.png")
    rgb = np.stack([VALUES, VALUES[::-1], VALUES[:, ::-1]], axis=-1)
    write_png16(path, rgb)
    expected = np.stack([EXPECTED, EXPECTED[::-1], EXPECTED[:, ::-1]], axis=-1)
    np.testing.assert_array_equal(load_image(path), expected)


def test_sixteen_bit_tree_converts_to_the_high_bytes(tmp_path, run_cli, read_all):
    for cls in ("a", "b"):
        (tmp_path / "tree" / cls).mkdir(parents=True)
        Image.fromarray(VALUES).save(tmp_path / "tree" / cls / "grey.png")
        write_png16(str(tmp_path / "tree" / cls / "rgb.png"), np.repeat(VALUES[:, :, None], 3, axis=2))
    out = tmp_path / "out"
    result = run_cli("folder", "--source", tmp_path / "tree", "--size", "2x4", "--output", out,
                     "--min-shards", "1")
    assert result.returncode == 0, result.stderr
    images, _ = read_all(str(out), "train")
    assert images.shape == (4, 2, 4, 3)
    for image in images:  # same size: no resizing, the values pass unchanged
        np.testing.assert_array_equal(image, np.repeat(EXPECTED[:, :, None], 3, axis=2))
