"""repcam.data.images: the one image reader (any PIL mode -> 8-bit RGB by scaling), its one-line errors, and the
display downscaling that keeps figures of large photos small."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from repcam.data.base import DataError
from repcam.data.common import load_rgb
from repcam.data.folder import FolderSegmentation
from repcam.data.images import DISPLAY_SIDE, for_display, read_image, to_rgb8

RAMP16 = (np.arange(256, dtype=np.uint32) * 257).astype(np.uint16).reshape(16, 16)  # 8-bit values widened to 16


def bomb_png(path: Path, side: int = 20000) -> Path:
    """A valid 1x1 PNG whose header claims side x side pixels (400 megapixels): PIL refuses it on open."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = data.index(b"IHDR")  # chunk: length(4) type(4) data(13) crc(4)
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", side, side)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    path.write_bytes(bytes(data))
    return path


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    path = tmp_path / "deep.png"
    Image.fromarray(RAMP16).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # PIL reads 16-bit PNGs as I;16 (or I)
    for read in (read_image, load_rgb):  # load_rgb: what the VOC, COCO and folder loaders call
        rgb = np.asarray(read(path))
        assert rgb.shape == (16, 16, 3) and rgb.dtype == np.uint8
        np.testing.assert_array_equal(rgb[..., 0], np.arange(256).reshape(16, 16))  # 257 * k -> k exactly
        assert (rgb[..., 0] == rgb[..., 2]).all()


@pytest.mark.parametrize("dtype", ["<u2", ">u2"])
def test_16_bit_modes_in_memory(dtype):
    im = Image.fromarray(RAMP16.astype(dtype))
    assert im.mode in ("I;16", "I;16B", "I;16L")
    np.testing.assert_array_equal(np.asarray(to_rgb8(im))[..., 1], np.arange(256).reshape(16, 16))


def test_32_bit_int_and_float_images_are_scaled():
    # I with 16-bit values: divided by 257, like I;16.
    np.testing.assert_array_equal(np.asarray(to_rgb8(Image.fromarray(RAMP16.astype(np.int32))))[..., 0], np.arange(256).reshape(16, 16))
    # I beyond 16 bits (and negative): min-max to 0..255.
    wide = Image.fromarray(np.array([[-1000, 0], [1000, 70000]], dtype=np.int32))
    assert wide.mode == "I"
    out = np.asarray(to_rgb8(wide))[..., 0]
    assert out[0, 0] == 0 and out[1, 1] == 255 and 0 < out[1, 0] < 10
    # F in [0, 1]: times 255.
    f01 = Image.fromarray(np.array([[0.0, 0.5], [1.0, 0.25]], dtype=np.float32))
    assert f01.mode == "F"
    np.testing.assert_array_equal(np.asarray(to_rgb8(f01))[..., 0], [[0, 128], [255, 64]])
    # F in another range, with a NaN: min-max over the finite values, NaN -> black.
    fwide = Image.fromarray(np.array([[100.0, 300.0], [np.nan, 150.0]], dtype=np.float32))
    np.testing.assert_array_equal(np.asarray(to_rgb8(fwide))[..., 0], [[0, 255], [0, 64]])


def test_float_tiff_file(tmp_path):
    path = tmp_path / "depth.tiff"
    Image.fromarray(np.linspace(0, 1000, 64, dtype=np.float32).reshape(8, 8)).save(path)
    rgb = np.asarray(read_image(path))
    assert rgb[0, 0, 0] == 0 and rgb[-1, -1, 0] == 255 and len(np.unique(rgb)) > 32  # not all white


def test_transparency_palette_and_cmyk():
    rgba = Image.new("RGBA", (2, 1), (10, 20, 30, 0))
    rgba.putpixel((1, 0), (10, 20, 30, 255))
    np.testing.assert_array_equal(np.asarray(to_rgb8(rgba))[0], [[255, 255, 255], [10, 20, 30]])  # over white
    la = Image.new("LA", (1, 1), (0, 0))
    assert np.asarray(to_rgb8(la)).tolist() == [[[255, 255, 255]]]
    pal = Image.new("P", (2, 1), 0)
    pal.putpalette([0, 0, 0, 200, 100, 50] + [0] * 762)
    pal.putpixel((1, 0), 1)
    pal.info["transparency"] = 0
    np.testing.assert_array_equal(np.asarray(to_rgb8(pal))[0], [[255, 255, 255], [200, 100, 50]])
    cmyk = Image.new("CMYK", (1, 1), (0, 255, 255, 0))  # pure red
    assert np.asarray(to_rgb8(cmyk)).tolist() == [[[255, 0, 0]]]
    for mode in ("1", "L", "YCbCr", "I;16", "F"):
        out = to_rgb8(Image.new(mode, (3, 2)))
        assert out.mode == "RGB" and out.size == (3, 2)


def test_exif_orientation_applied_everywhere(tmp_path):
    path = tmp_path / "phone.jpg"
    im = Image.new("RGB", (40, 20), (200, 0, 0))
    exif = im.getexif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    im.save(path, exif=exif)
    assert read_image(path).size == (20, 40)  # one rule (issue 26): as a photo viewer shows it, loaders and explain alike
    assert read_image(path, exif=False).size == (40, 20)  # the stored pixels, only when asked


def test_folder_loader_reads_16_bit_images(tmp_path, kit):
    (tmp_path / "classes.txt").write_text("cat\n")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:8, 4:8] = 1
    kit.write_mask(tmp_path / "masks" / "a.png", mask)
    (tmp_path / "images").mkdir()
    Image.fromarray(RAMP16).save(tmp_path / "images" / "a.png")
    ds = FolderSegmentation(tmp_path)
    img = np.asarray(ds.image(0))
    assert img.max() == 255 and img.min() == 0 and len(np.unique(img)) == 256  # was all 255 (clipped)


@pytest.mark.parametrize("case", ["bomb", "truncated", "garbage", "missing"])
def test_pil_failures_are_one_line_data_errors(tmp_path, case):
    path = tmp_path / "x.png"
    if case == "bomb":
        bomb_png(path)
        match = "too large to read safely"
    elif case == "truncated":
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)).save(path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        match = "cannot read image"
    elif case == "garbage":
        path.write_bytes(b"not a picture")
        match = "is not an image PIL can read"
    else:
        match = "file not found"
    with pytest.raises(DataError, match=match) as info:
        read_image(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg
    assert Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS >= 89_000_000  # PIL's guard stays on


def test_for_display_bounds_the_longest_side():
    big = Image.new("RGB", (3000, 1000), (1, 2, 3))
    small = for_display(big)
    assert small.size == (DISPLAY_SIDE, 341)
    assert for_display(small) is small  # already fits: no copy
    arr = np.zeros((1000, 3000, 3), np.uint8)
    assert for_display(arr).shape == (341, DISPLAY_SIDE, 3) and for_display(arr).dtype == np.uint8
    flt = np.full((2048, 512), 0.5, np.float64)
    out = for_display(flt, 256)
    assert out.shape == (256, 64) and out.dtype == np.float64 and np.allclose(out, 0.5)
