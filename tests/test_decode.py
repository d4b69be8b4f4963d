"""Tests for lookalike.image.decode: every image is made in tmp_path by the test itself."""

from __future__ import annotations

import io
import os
import pickle
import re
import struct
import sys
import tracemalloc
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile, ImageOps

from lookalike import config
from lookalike.image import decode
from lookalike.image.decode import (
    FULL_SIZE,
    SUPPORTED_FORMATS,
    DecodeError,
    decode_cost,
    load_image,
)

RED = (220, 20, 30)
GREEN = (20, 200, 40)
BLUE = (30, 40, 210)
OLD_MTIME_NS = 1_000_000_000 * 1_000_000_000  # 2001-09-09: any write would change it


# --- helpers --------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    os.utime(path, ns=(OLD_MTIME_NS, OLD_MTIME_NS))
    return path


def solid(
    color: tuple[int, ...], size: tuple[int, int] = (40, 30), mode: str = "RGB"
) -> Image.Image:
    return Image.new(mode, size, color)


def assert_close(actual: object, expected: tuple[int, ...], tolerance: int) -> None:
    assert isinstance(actual, tuple)
    assert len(actual) == len(expected)
    assert all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True)), (
        f"{actual} not within {tolerance} of {expected}"
    )


def centre(image: Image.Image) -> object:
    return image.getpixel((image.width // 2, image.height // 2))


def snapshot(path: Path) -> tuple[bytes, int]:
    return path.read_bytes(), path.stat().st_mtime_ns


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload) & 0xFFFFFFFF
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming width x height (1-bit grey), tiny IDAT."""
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def photo_jpeg(size: tuple[int, int] = (400, 300), seed: int = 1) -> bytes:
    """A noisy JPEG: its entropy-coded data is long enough to truncate or corrupt."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "JPEG", quality=90)


def photo_png(size: tuple[int, int] = (200, 150), seed: int = 2) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels), "PNG")


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif.tobytes(), quality=95)


def animated_gif(colors: list[tuple[int, int, int]]) -> bytes:
    frames = [solid(color, (16, 16)) for color in colors]
    return encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=40, loop=0)


# --- the API --------------------------------------------------------------------------------


def test_supported_formats_are_exactly_the_documented_ones() -> None:
    documented = {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"}
    assert frozenset(documented) == SUPPORTED_FORMATS


def test_decode_error_carries_its_reason() -> None:
    error = DecodeError("empty file")
    assert error.reason == "empty file"
    assert str(error) == "empty file"
    assert isinstance(error, Exception)


def test_decode_error_survives_pickling() -> None:
    # Decoding may run in worker processes: the reason must cross the process boundary.
    copy = pickle.loads(pickle.dumps(DecodeError("file too large")))
    assert isinstance(copy, DecodeError)
    assert copy.reason == "file too large"


# --- good files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "params", "tolerance"),
    [
        ("JPEG", {"quality": 95}, 6),
        ("PNG", {}, 0),
        ("WEBP", {"quality": 90}, 8),
        ("WEBP", {"lossless": True}, 0),
        ("BMP", {}, 0),
        ("TIFF", {}, 0),
        ("TIFF", {"compression": "tiff_lzw"}, 0),
        ("GIF", {}, 0),
    ],
)
def test_each_supported_format_decodes_to_rgb(
    tmp_path: Path, fmt: str, params: dict[str, object], tolerance: int
) -> None:
    path = write(tmp_path / f"image.{fmt.lower()}", encode(solid(RED), fmt, **params))

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.size == (40, 30)
    assert_close(centre(image), RED, tolerance)


def test_animated_gif_gives_its_first_frame(tmp_path: Path) -> None:
    data = animated_gif([RED, GREEN, BLUE])
    with Image.open(io.BytesIO(data)) as original:
        assert getattr(original, "n_frames", 1) == 3  # the fixture really is animated
    path = write(tmp_path / "anim.gif", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.size == (16, 16)
    assert centre(image) == RED


def test_mpo_gives_its_first_frame(tmp_path: Path) -> None:
    data = encode(solid(RED), "MPO", save_all=True, append_images=[solid(BLUE)])
    with Image.open(io.BytesIO(data)) as original:
        assert original.format == "MPO"
        assert getattr(original, "n_frames", 1) == 2
    path = write(tmp_path / "stereo.mpo", data)

    image = load_image(path)
    drafted = load_image(path, min_side=10)

    assert image.mode == "RGB"
    assert image.size == (40, 30)
    assert_close(centre(image), RED, 6)
    assert drafted.size == (20, 15)  # MPO frames are JPEGs: draft mode applies
    assert_close(centre(drafted), RED, 6)


@pytest.mark.parametrize(
    ("name", "fmt", "params"),
    [
        ("really_webp.jpg", "WEBP", {"lossless": True}),
        ("really_png.jpeg", "PNG", {}),
        ("really_jpeg.png", "JPEG", {"quality": 95}),
        ("no_extension", "PNG", {}),
    ],
)
def test_format_comes_from_content_not_name(
    tmp_path: Path, name: str, fmt: str, params: dict[str, object]
) -> None:
    path = write(tmp_path / name, encode(solid(GREEN), fmt, **params))

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.size == (40, 30)
    assert_close(centre(image), GREEN, 6)


def test_accepts_str_path(tmp_path: Path) -> None:
    path = write(tmp_path / "a.png", encode(solid(BLUE), "PNG"))

    assert centre(load_image(str(path))) == BLUE


def test_accepts_bytes(tmp_path: Path) -> None:
    image = load_image(encode(solid(BLUE), "PNG"))

    assert image.mode == "RGB"
    assert image.size == (40, 30)
    assert centre(image) == BLUE


def test_exif_orientation_is_applied(tmp_path: Path) -> None:
    # 40x20: left half red, right half blue. Orientation 6 means "rotate 90 degrees clockwise
    # to display", so the left half ends on top.
    stored = Image.new("RGB", (40, 20), BLUE)
    stored.paste(RED, (0, 0, 20, 20))
    path = write(tmp_path / "rotated.jpg", jpeg_with_orientation(stored, 6))

    image = load_image(path)

    assert image.size == (20, 40)
    assert_close(image.getpixel((10, 8)), RED, 12)
    assert_close(image.getpixel((10, 32)), BLUE, 12)


def test_without_orientation_tag_size_is_unchanged(tmp_path: Path) -> None:
    path = write(tmp_path / "plain.jpg", jpeg_with_orientation(solid(RED, (40, 20)), 1))

    assert load_image(path).size == (40, 20)


def test_unreadable_exif_keeps_the_pixels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(image: Image.Image) -> Image.Image:
        raise SyntaxError("bad EXIF")

    monkeypatch.setattr(ImageOps, "exif_transpose", broken)
    path = write(tmp_path / "a.jpg", jpeg_with_orientation(solid(RED, (40, 20)), 6))

    image = load_image(path)

    assert image.size == (40, 20)
    assert_close(centre(image), RED, 6)


def rgba_fixture() -> Image.Image:
    """(0,0) fully transparent black, (1,0) opaque green, (2,0) half-transparent black."""
    image = Image.new("RGBA", (3, 1))
    image.putpixel((0, 0), (0, 0, 0, 0))
    image.putpixel((1, 0), (*GREEN, 255))
    image.putpixel((2, 0), (0, 0, 0, 128))
    return image


@pytest.mark.parametrize("fmt", ["PNG", "WEBP", "TIFF"])
def test_alpha_is_composited_onto_background(tmp_path: Path, fmt: str) -> None:
    params: dict[str, object] = {"lossless": True, "exact": True} if fmt == "WEBP" else {}
    path = write(tmp_path / f"alpha.{fmt.lower()}", encode(rgba_fixture(), fmt, **params))

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == config.ALPHA_BACKGROUND
    assert image.getpixel((1, 0)) == GREEN
    half = tuple(round(c * 127 / 255) for c in config.ALPHA_BACKGROUND)
    assert_close(image.getpixel((2, 0)), half, 2)


def test_background_colour_comes_from_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config, "ALPHA_BACKGROUND", (0, 128, 255))
    path = write(tmp_path / "alpha.png", encode(rgba_fixture(), "PNG"))

    image = load_image(path)

    assert image.getpixel((0, 0)) == (0, 128, 255)
    assert image.getpixel((1, 0)) == GREEN


def palette_fixture() -> Image.Image:
    """P image: index 0 (red) is the transparent one, index 1 is green; (1,0) uses index 1."""
    image = Image.new("P", (2, 1), 0)
    image.putpalette([*RED, *GREEN] + [0] * (256 - 2) * 3)
    image.putpixel((1, 0), 1)
    return image


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited(tmp_path: Path, fmt: str) -> None:
    data = encode(palette_fixture(), fmt, transparency=0)
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == "P"
        assert original.info.get("transparency") == 0
    path = write(tmp_path / f"palette.{fmt.lower()}", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == config.ALPHA_BACKGROUND
    assert image.getpixel((1, 0)) == GREEN


def la_fixture() -> Image.Image:
    """(0,0) fully transparent black, (1,0) opaque grey 60."""
    image = Image.new("LA", (2, 1))
    image.putpixel((0, 0), (0, 0))
    image.putpixel((1, 0), (60, 255))
    return image


def test_la_is_composited(tmp_path: Path) -> None:
    data = encode(la_fixture(), "PNG")
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == "LA"
    path = write(tmp_path / "la.png", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == config.ALPHA_BACKGROUND
    assert image.getpixel((1, 0)) == (60, 60, 60)


def test_premultiplied_la_tiff_is_composited(tmp_path: Path) -> None:
    # Pillow writes LA TIFFs with ExtraSamples=2 (unassociated alpha); patching it to 1
    # (associated) makes Pillow open the file in its premultiplied "La" mode.
    data = encode(la_fixture(), "TIFF")
    unassociated = struct.pack("<HHIHH", 338, 3, 1, 2, 0)
    assert data.count(unassociated) == 1
    data = data.replace(unassociated, struct.pack("<HHIHH", 338, 3, 1, 1, 0))
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == "La"
    path = write(tmp_path / "la.tif", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == config.ALPHA_BACKGROUND
    assert image.getpixel((1, 0)) == (60, 60, 60)


def test_pa_tiff_is_composited(tmp_path: Path) -> None:
    pa = palette_fixture().convert("PA")
    pa.putpixel((0, 0), (0, 0))
    data = encode(pa, "TIFF")
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == "PA"
    path = write(tmp_path / "pa.tif", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == config.ALPHA_BACKGROUND
    assert image.getpixel((1, 0)) == GREEN


def test_grey_with_trns_value_is_composited(tmp_path: Path) -> None:
    grey = Image.new("L", (2, 1), 7)
    grey.putpixel((1, 0), 90)
    path = write(tmp_path / "grey.png", encode(grey, "PNG", transparency=7))

    image = load_image(path)

    assert image.getpixel((0, 0)) == config.ALPHA_BACKGROUND
    assert image.getpixel((1, 0)) == (90, 90, 90)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_grey_is_scaled_not_clipped(tmp_path: Path, fmt: str) -> None:
    values = np.full((10, 12), 32768, dtype=np.uint16)
    values[0, 0] = 0
    values[0, 1] = 65535
    values[0, 2] = 1000
    data = encode(Image.fromarray(values), fmt)
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode.startswith("I;16")  # the fixture really is 16-bit
    path = write(tmp_path / f"deep.{fmt.lower()}", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.size == (12, 10)
    assert_close(centre(image), (128, 128, 128), 2)
    assert image.getpixel((0, 0)) == (0, 0, 0)
    assert image.getpixel((1, 0)) == (255, 255, 255)
    assert_close(image.getpixel((2, 0)), (4, 4, 4), 1)


def test_16_bit_grey_trns_value_is_composited(tmp_path: Path) -> None:
    values = np.full((1, 2), 1000, dtype=np.uint16)
    values[0, 1] = 40000
    path = write(tmp_path / "deep.png", encode(Image.fromarray(values), "PNG", transparency=1000))

    image = load_image(path)

    assert image.getpixel((0, 0)) == config.ALPHA_BACKGROUND
    assert_close(image.getpixel((1, 0)), (156, 156, 156), 1)


@pytest.mark.parametrize(
    ("mode", "value", "expected"),
    [
        ("F", 0.5, 128),  # float data in 0..1
        ("F", 200.0, 200),  # float data in 0..255
        ("I", 32768, 128),  # 32-bit int holding 16-bit data
        ("I", 100, 100),  # 32-bit int holding 8-bit data
    ],
)
def test_32_bit_modes_are_scaled_by_their_range(
    tmp_path: Path, mode: str, value: float, expected: int
) -> None:
    source = Image.new(mode, (6, 4), value)
    source.putpixel((0, 0), 0)
    data = encode(source, "TIFF")
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == mode
    path = write(tmp_path / f"{mode}.tif", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert_close(centre(image), (expected,) * 3, 1)
    assert image.getpixel((0, 0)) == (0, 0, 0)


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    data = encode(Image.new("CMYK", (20, 10), (0, 255, 255, 0)), "JPEG", quality=95)
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == "CMYK"
    path = write(tmp_path / "print.jpg", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.size == (20, 10)
    assert_close(centre(image), (255, 0, 0), 8)


@pytest.mark.parametrize(
    ("mode", "color", "fmt", "expected"),
    [
        ("L", 77, "PNG", (77, 77, 77)),
        ("L", 77, "JPEG", (77, 77, 77)),
        ("1", 1, "BMP", (255, 255, 255)),
        ("1", 1, "TIFF", (255, 255, 255)),
    ],
)
def test_other_modes_become_rgb(
    tmp_path: Path, mode: str, color: int, fmt: str, expected: tuple[int, int, int]
) -> None:
    path = write(tmp_path / f"image.{fmt.lower()}", encode(Image.new(mode, (8, 6), color), fmt))

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.size == (8, 6)
    assert_close(centre(image), expected, 2)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "GIF", "TIFF"])
def test_palette_without_transparency_becomes_rgb(tmp_path: Path, fmt: str) -> None:
    data = encode(palette_fixture(), fmt)
    with Image.open(io.BytesIO(data)) as original:
        assert original.mode == "P"
        assert "transparency" not in original.info
    path = write(tmp_path / f"palette.{fmt.lower()}", data)

    image = load_image(path)

    assert image.mode == "RGB"
    assert image.getpixel((0, 0)) == RED
    assert image.getpixel((1, 0)) == GREEN


# --- draft mode -----------------------------------------------------------------------------


@pytest.fixture
def big_jpeg(tmp_path: Path) -> Path:
    return write(tmp_path / "big.jpg", encode(solid(BLUE, (4000, 3000)), "JPEG", quality=90))


def test_min_side_lets_a_big_jpeg_decode_smaller(big_jpeg: Path) -> None:
    image = load_image(big_jpeg, min_side=224)

    assert image.mode == "RGB"
    assert min(image.size) >= 224
    assert image.width <= 1000
    assert image.width * 3 == image.height * 4  # aspect ratio kept
    assert_close(centre(image), BLUE, 6)


def test_without_min_side_a_big_jpeg_decodes_at_full_size(big_jpeg: Path) -> None:
    assert load_image(big_jpeg).size == (4000, 3000)


@pytest.mark.parametrize("min_side", [1, 224, 375, 376, 1000, 2999, 3000, 5000])
def test_draft_never_goes_below_min_side(big_jpeg: Path, min_side: int) -> None:
    image = load_image(big_jpeg, min_side=min_side)

    assert min(image.size) >= min(min_side, 3000)
    # It reduces as far as it can: a 2x smaller decode would be too small, or 1/8 is reached.
    assert min(image.size) < 2 * min_side or image.size == (500, 375)


def test_draft_with_exif_rotation_keeps_shorter_side(tmp_path: Path) -> None:
    data = jpeg_with_orientation(solid(RED, (4000, 3000)), 6)
    path = write(tmp_path / "portrait.jpg", data)

    image = load_image(path, min_side=300)

    assert image.width < image.height  # rotated
    assert image.width >= 300
    assert image.height <= 1000


def test_min_side_does_not_resize_other_formats(tmp_path: Path) -> None:
    path = write(tmp_path / "big.png", encode(solid(RED, (1600, 1200)), "PNG"))

    assert load_image(path, min_side=100).size == (1600, 1200)


@pytest.mark.parametrize("min_side", [0, -5])
def test_min_side_must_be_positive(tmp_path: Path, min_side: int) -> None:
    with pytest.raises(ValueError, match="min_side"):
        load_image(encode(solid(RED), "JPEG"), min_side=min_side)


# --- bad files ------------------------------------------------------------------------------


def truncated(data: bytes, fraction: float) -> bytes:
    return data[: int(len(data) * fraction)]


def jpeg_with_bogus_markers() -> bytes:
    """Spurious DHT markers in the middle of the entropy-coded data: libjpeg refuses this."""
    data = bytearray(photo_jpeg())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff\xc4" * 32
    return bytes(data)


def png_with_zeroed_middle() -> bytes:
    data = bytearray(photo_png())
    middle = len(data) // 2
    data[middle : middle + 50] = bytes(50)
    return bytes(data)


BAD_FILES = [
    pytest.param(lambda: b"", "empty file", id="empty"),
    pytest.param(
        lambda: np.random.default_rng(7).bytes(4096), "not a recognised image", id="random"
    ),
    pytest.param(
        lambda: b"just some notes, not a picture\n" * 50, "not a recognised image", id="text"
    ),
    pytest.param(lambda: truncated(photo_jpeg(), 0.6), "truncated", id="truncated_jpeg"),
    pytest.param(lambda: truncated(photo_png(), 0.6), "truncated", id="truncated_png"),
    pytest.param(lambda: truncated(photo_jpeg(), 0.02), "truncated", id="header_only_jpeg"),
    pytest.param(jpeg_with_bogus_markers, "corrupt", id="corrupt_jpeg"),
    pytest.param(png_with_zeroed_middle, "corrupt", id="corrupt_png"),
    pytest.param(
        lambda: encode(solid(RED, (32, 32)), "ICO"), "unsupported image format: ICO", id="ico"
    ),
    pytest.param(lambda: encode(solid(RED), "PPM"), "unsupported image format: PPM", id="ppm"),
    pytest.param(lambda: encode(solid(RED), "TGA"), "unsupported image format: TGA", id="tga"),
    pytest.param(lambda: encode(solid(RED), "PCX"), "unsupported image format: PCX", id="pcx"),
    # Beyond Pillow's own hard limit (2 * its MAX_IMAGE_PIXELS).
    pytest.param(lambda: png_header_only(40_000, 40_000), "too large", id="bomb_40000"),
    # Above config.MAX_IMAGE_PIXELS but only in Pillow's warning band: our own check refuses it,
    # and from the header: decoding would have reported the IDAT as truncated instead.
    pytest.param(lambda: png_header_only(12_000, 12_000), "144000000 pixels", id="bomb_12000"),
]


@pytest.mark.parametrize(("make", "reason"), BAD_FILES)
def test_bad_file_raises_decode_error(
    tmp_path: Path, make: Callable[[], bytes], reason: str
) -> None:
    path = write(tmp_path / "bad.jpg", make())
    before = snapshot(path)

    with pytest.raises(DecodeError) as caught:
        load_image(path)

    assert reason in caught.value.reason
    assert str(caught.value) == f"{path}: {caught.value.reason}"  # names the file
    assert snapshot(path) == before


@pytest.mark.parametrize(("make", "reason"), BAD_FILES)
def test_bad_bytes_raise_decode_error(make: Callable[[], bytes], reason: str) -> None:
    with pytest.raises(DecodeError, match=re.escape(reason)):
        load_image(make())


def test_bomb_is_refused_before_pixels_are_decoded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loads: list[object] = []
    original_load = ImageFile.ImageFile.load

    def spy(self: ImageFile.ImageFile) -> object:
        loads.append(self)
        return original_load(self)

    monkeypatch.setattr(ImageFile.ImageFile, "load", spy)
    path = write(tmp_path / "wide.png", encode(solid(RED, (100, 100)), "PNG"))

    with pytest.raises(DecodeError, match="pixels"):
        load_image(path, max_pixels=9_999)
    assert loads == []

    assert load_image(path, max_pixels=10_000).size == (100, 100)
    assert loads != []


def test_pillow_bomb_limits_do_not_leak(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Shrink Pillow's own limit so that small images hit its warning and error bands.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    warning_band = write(tmp_path / "warn.png", encode(solid(RED, (40, 40)), "PNG"))
    error_band = write(tmp_path / "error.png", encode(solid(RED, (50, 50)), "PNG"))

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a DecompressionBombWarning escaping would raise
        assert load_image(warning_band).size == (40, 40)
        with pytest.raises(DecodeError, match="decompression bomb"):
            load_image(error_band)

    assert Image.MAX_IMAGE_PIXELS == 1_000


def test_pillow_globals_are_left_alone(tmp_path: Path) -> None:
    before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)
    good = write(tmp_path / "good.jpg", photo_jpeg())
    bad = write(tmp_path / "bad.jpg", truncated(photo_jpeg(), 0.6))
    bomb = write(tmp_path / "bomb.png", png_header_only(12_000, 12_000))

    load_image(good)
    for path in (bad, bomb):
        with pytest.raises(DecodeError):
            load_image(path)

    assert before == (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES)


@pytest.mark.parametrize(
    "error",
    [
        OSError("decoder error -2"),
        ValueError("bad value"),
        SyntaxError("broken PNG file"),
        struct.error("unpack requires a buffer"),
        EOFError(),
        IndexError("list index out of range"),
        KeyError("tile"),
        TypeError("bad type"),
        ZeroDivisionError("division by zero"),
        AssertionError(),
        MemoryError(),
    ],
    ids=lambda error: type(error).__name__,
)
def test_any_decoder_exception_becomes_decode_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    def failing_load(self: ImageFile.ImageFile) -> None:
        raise error

    monkeypatch.setattr(ImageFile.ImageFile, "load", failing_load)
    path = write(tmp_path / "a.png", encode(solid(RED), "PNG"))

    with pytest.raises(DecodeError) as caught:
        load_image(path)

    assert caught.value.reason
    assert caught.value.__cause__ is error


def test_undetected_corruption_still_gives_an_rgb_image(tmp_path: Path) -> None:
    # An EOI marker in the middle: libjpeg only warns and fills the rest, so Pillow cannot tell.
    data = bytearray(photo_jpeg())
    middle = len(data) // 2
    data[middle : middle + 64] = b"\xff\xd9" * 32
    path = write(tmp_path / "odd.jpg", bytes(data))

    try:
        image = load_image(path)
    except DecodeError as error:
        assert error.reason
    else:
        assert image.mode == "RGB"
        assert image.size == (400, 300)


FUZZ_SOURCES: list[tuple[str, dict[str, object]]] = [
    ("JPEG", {"quality": 80}),
    ("PNG", {}),
    ("WEBP", {"quality": 80}),
    ("GIF", {}),
    ("BMP", {}),
    ("TIFF", {"compression": "tiff_lzw"}),
]


@pytest.mark.filterwarnings("ignore::UserWarning")  # Pillow warns about damaged TIFF tags
@pytest.mark.parametrize(("fmt", "params"), FUZZ_SOURCES, ids=[f for f, _ in FUZZ_SOURCES])
def test_damaged_files_give_rgb_or_decode_error_only(fmt: str, params: dict[str, object]) -> None:
    rng = np.random.default_rng(12345)
    pixels = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    original = encode(Image.fromarray(pixels), fmt, **params)
    for _ in range(60):
        data = bytearray(original)
        if rng.random() < 0.3:
            data = data[: int(rng.integers(1, len(data)))]
        else:
            for position in rng.integers(0, len(data), int(rng.integers(1, 8))):
                data[position] = int(rng.integers(0, 256))
        try:
            image = load_image(bytes(data))
        except DecodeError as error:
            assert error.reason
        else:
            assert image.mode == "RGB"


# --- file system ----------------------------------------------------------------------------


def test_file_over_max_bytes_is_refused_unread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = encode(solid(RED), "PNG")
    path = write(tmp_path / "a.png", data)

    def no_open(*args: object, **kwargs: object) -> None:
        raise AssertionError("the file was opened")

    with monkeypatch.context() as patch:
        patch.setattr(decode, "open", no_open, raising=False)
        with pytest.raises(DecodeError, match="too large"):
            load_image(path, max_bytes=len(data) - 1)

    assert load_image(path, max_bytes=len(data)).size == (40, 30)


def test_bytes_over_max_bytes_are_refused() -> None:
    data = encode(solid(RED), "PNG")

    with pytest.raises(DecodeError, match="too large"):
        load_image(data, max_bytes=len(data) - 1)
    assert load_image(data, max_bytes=len(data)).size == (40, 30)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DecodeError, match="not found"):
        load_image(tmp_path / "nowhere.jpg")


def test_path_through_a_file_is_missing(tmp_path: Path) -> None:
    parent = write(tmp_path / "file.png", encode(solid(RED), "PNG"))

    with pytest.raises(DecodeError, match="not found"):
        load_image(parent / "child.png")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "album.jpg"
    folder.mkdir()

    with pytest.raises(DecodeError, match="directory"):
        load_image(folder)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs POSIX FIFOs")
def test_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)

    with pytest.raises(DecodeError, match="not a regular file"):
        load_image(fifo)


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="root (or Windows) ignores file modes"
)
def test_permission_denied(tmp_path: Path) -> None:
    path = write(tmp_path / "secret.png", encode(solid(RED), "PNG"))
    path.chmod(0)
    try:
        with pytest.raises(DecodeError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_permission_denied_when_opening(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Runs even as root: simulate what open() raises on a file the user may not read.
    path = write(tmp_path / "secret.png", encode(solid(RED), "PNG"))

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(decode, "open", denied, raising=False)

    with pytest.raises(DecodeError, match="permission denied"):
        load_image(path)


GOOD_FILES: list[tuple[str, Callable[[], bytes]]] = [
    ("jpeg", photo_jpeg),
    ("png", photo_png),
    ("rotated_jpeg", lambda: jpeg_with_orientation(solid(RED, (40, 20)), 6)),
    ("gif", lambda: animated_gif([RED, GREEN])),
    ("alpha_png", lambda: encode(rgba_fixture(), "PNG")),
    ("webp", lambda: encode(solid(RED), "WEBP")),
    ("tiff", lambda: encode(solid(RED), "TIFF")),
]


@pytest.mark.parametrize("make", [g[1] for g in GOOD_FILES], ids=[g[0] for g in GOOD_FILES])
@pytest.mark.parametrize("min_side", [None, 8])
def test_good_file_is_not_modified(
    tmp_path: Path, make: Callable[[], bytes], min_side: int | None
) -> None:
    path = write(tmp_path / "image.jpg", make())
    before = snapshot(path)

    load_image(path, min_side=min_side)

    assert snapshot(path) == before


# --- memory ---------------------------------------------------------------------------------


def test_16_bit_grey_is_converted_in_bounded_memory(tmp_path: Path) -> None:
    """Whole-image float64 copies took 2.2 GB for a 7000 x 7000 16-bit PNG; a strip at a time
    keeps NumPy's share near the 8-bit result (tracemalloc sees NumPy's buffers)."""
    side = 3000
    ramp = (np.arange(side, dtype=np.uint32) * 65535 // (side - 1)).astype(np.uint16)
    path = write(tmp_path / "deep.png", encode(Image.fromarray(np.tile(ramp, (side, 1))), "PNG"))
    tracemalloc.start()
    try:
        image = load_image(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert image.size == (side, side)
    assert image.getpixel((0, 0)) == (0, 0, 0) and image.getpixel((side - 1, 5)) == (255,) * 3
    assert peak < 3 * side * side, f"{peak / 2**20:.0f} MiB traced"


def test_16_bit_float_range_is_taken_over_the_whole_image(tmp_path: Path) -> None:
    """Strips share one value range: a strip of uniform values is not stretched alone."""
    values = np.zeros((4000, 300), dtype=np.float32)
    values[:2000] = 1000.0
    values[-1, -1] = 100_000.0  # out of 0..65535: stretched from min to max
    image = load_image(write(tmp_path / "f.tif", encode(Image.fromarray(values), "TIFF")))
    assert image.getpixel((0, 0)) == (3, 3, 3)  # 1000 / 100000 * 255
    assert image.getpixel((0, 3000)) == (0, 0, 0)
    assert image.getpixel((299, 3999)) == (255, 255, 255)


@pytest.mark.parametrize(
    ("mode", "size"),
    [("L", (1, 2_000_000)), ("I;16", (3000, 3000)), ("RGBA", (3000, 2000))],
    ids=["thin", "16-bit", "alpha"],
)
def test_decoding_that_would_take_too_much_memory_is_refused_before_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, size: tuple[int, int]
) -> None:
    """Pixel counts alone miss what 16-bit samples, alpha and Pillow's per-row pointers
    cost (a 1 x 100,000,000 PNG took 3.1 GB)."""
    path = write(tmp_path / "big.png", encode(Image.new(mode, size), "PNG"))
    limit = 40 * 2**20
    assert size[0] * size[1] * 4 < 4 * limit  # few pixels for their cost
    loads: list[object] = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(self))
    with pytest.raises(DecodeError, match="too large to decode"):
        load_image(path, max_decode_bytes=limit)
    assert loads == []
    assert decode_cost(mode, *size) > limit > decode_cost("RGB", 1500, 1500)


def test_the_full_size_is_given_when_a_jpeg_decodes_smaller(tmp_path: Path) -> None:
    path = write(
        tmp_path / "big.jpg", encode(Image.open(io.BytesIO(photo_jpeg((1600, 900)))), "JPEG")
    )
    image = load_image(path, min_side=200)
    assert image.size == (400, 225)
    assert image.info[FULL_SIZE] == (1600, 900)
    rotated = write(
        tmp_path / "r.jpg",
        jpeg_with_orientation(Image.open(io.BytesIO(photo_jpeg((1600, 800)))), 6),
    )
    turned = load_image(rotated, min_side=200)
    assert turned.size == (200, 400)
    assert turned.info[FULL_SIZE] == (800, 1600)


def test_transient_faults_are_marked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = write(tmp_path / "bad.png", b"\x89PNG\r\n\x1a\n" + b"\0" * 50)
    with pytest.raises(DecodeError) as corrupt:
        load_image(bad)
    assert not corrupt.value.transient

    def denied(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(decode, "open", denied, raising=False)
    with pytest.raises(DecodeError) as caught:
        load_image(bad)
    assert caught.value.transient
    assert pickle.loads(pickle.dumps(caught.value)).transient
