"""Decoding stage: a file (or its bytes) becomes an RGB :class:`PIL.Image.Image`.

Everything about untrusted image files is handled here, so that later stages only ever see a
well-formed RGB image:

* the format is recognised from the content, never from the file name, and only
  :data:`SUPPORTED_FORMATS` are accepted;
* files are read once, read-only, after ``stat`` says they are regular and not too big;
* decompression bombs are refused from the header, before any pixel is decoded;
* truncated and corrupt data is detected by forcing a full decode; Pillow's global
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left alone (and must stay ``False`` for truncated
  files to be detected);
* every failure becomes a :class:`DecodeError` with a short reason.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import stat
import warnings
from typing import Final

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import Image, ImageOps, UnidentifiedImageError

from lookalike import config

logger = logging.getLogger(__name__)

__all__ = ["SUPPORTED_FORMATS", "DecodeError", "load_image"]

#: Pillow format names that :func:`load_image` accepts. HEIF (.heic/.heif: iPhone photos) is
#: decoded by pillow-heif's opener, registered below; AVIF by Pillow itself (>= 11.3).
SUPPORTED_FORMATS: frozenset[str] = frozenset(
    {"JPEG", "MPO", "PNG", "WEBP", "GIF", "BMP", "TIFF", "HEIF", "AVIF"}
)

# The HEIF opener, without its thumbnail images (only the primary image is ever decoded).
pillow_heif.register_heif_opener(thumbnails=False)

#: Formats whose decoder can scale by 1/2, 1/4 or 1/8 while decoding (Pillow's draft mode).
_DRAFT_FORMATS: Final = frozenset({"JPEG", "MPO"})

#: The order in which Pillow tries its openers: most common first. MPO is absent on purpose:
#: Pillow has no opener registered under that name, the JPEG opener returns an MPO image when
#: the file carries multi-picture data.
_OPEN_ORDER: Final = ("JPEG", "PNG", "HEIF", "WEBP", "AVIF", "GIF", "TIFF", "BMP")

#: Modes whose samples do not fit in 8 bits; Pillow's own ``convert`` clips them to 0..255,
#: which turns a 16-bit photo all white.
_HIGH_DEPTH_MODES: Final = frozenset({"I", "F", "I;16", "I;16L", "I;16B", "I;16N"})

_MAX_REASON_DETAIL = 120


class DecodeError(Exception):
    """Raised when a file cannot be used as an image; `reason` is short, human-readable, and
    `path` the file's (None for bytes); ``str()`` names both."""

    def __init__(self, reason: str, path: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path = path

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}" if self.path is not None else self.reason


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    min_side: int | None = None,
    max_bytes: int = config.MAX_FILE_BYTES,
    max_pixels: int = config.MAX_IMAGE_PIXELS,
) -> Image.Image:
    """Decode by content (never by extension) into an RGB image.

    ``source`` is a path or the file's bytes. Multi-frame images give their first frame, the
    EXIF orientation is applied, transparency is composited onto ``config.ALPHA_BACKGROUND``.

    ``min_side``: the caller will shrink the image until its shorter side is ``min_side``, so a
    JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay >= ``min_side``.
    No other resizing happens here.

    Raises :class:`DecodeError` for any file that cannot be used (missing, unreadable, empty,
    larger than ``max_bytes``, more than ``max_pixels`` pixels, not an image, unsupported
    format, truncated, corrupt), and :class:`ValueError` for a ``min_side`` below 1.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be at least 1, got {min_side}")
    try:
        data = _read_source(source, max_bytes)
        return _decode(data, min_side=min_side, max_pixels=max_pixels)
    except DecodeError as exc:
        if not isinstance(source, bytes | bytearray | memoryview):
            exc.path = os.fspath(source)
        raise


# --- reading --------------------------------------------------------------------------------


def _read_source(source: str | os.PathLike[str] | bytes, max_bytes: int) -> bytes:
    """Return the raw bytes of ``source``, enforcing the size limits."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_byte_count(len(data), max_bytes)
        return data
    return _read_file(os.fspath(source), max_bytes)


def _read_file(path: str, max_bytes: int) -> bytes:
    """Read a regular file once, read-only; its size is checked with ``stat`` before reading."""
    try:
        info = os.stat(path)
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL byte in the path
        raise DecodeError(_access_error_reason(exc)) from exc
    if stat.S_ISDIR(info.st_mode):
        raise DecodeError("is a directory")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device would block or never end; nothing to index there.
        raise DecodeError("not a regular file")
    _check_byte_count(info.st_size, max_bytes)
    try:
        with open(path, "rb") as file:
            # One byte more than allowed: the file may have grown since stat.
            data = file.read(max_bytes + 1)
    except OSError as exc:
        raise DecodeError(_access_error_reason(exc)) from exc
    _check_byte_count(len(data), max_bytes)
    return data


def _check_byte_count(size: int, max_bytes: int) -> None:
    if size == 0:
        raise DecodeError("empty file")
    if size > max_bytes:
        raise DecodeError(f"file too large: {size} bytes, limit is {max_bytes}")


def _access_error_reason(exc: OSError | ValueError) -> str:
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "is a directory"
    if isinstance(exc, OSError) and exc.strerror:
        return f"cannot read file: {exc.strerror}"
    return f"cannot read file: {exc}"


# --- decoding -------------------------------------------------------------------------------


def _decode(data: bytes, *, min_side: int | None, max_pixels: int) -> Image.Image:
    """Decode ``data`` fully into an RGB image, turning every failure into DecodeError."""
    # Pillow warns (DecompressionBombWarning) above its own global limit, which is lower than
    # ours (a 100 MP camera is fine here); _check_pixels is the authority, so that warning is
    # silenced locally rather than by changing Pillow's globals (a filter set at import would
    # not survive a caller's catch_warnings). catch_warnings swaps the process-wide filter
    # list: concurrent threads can at worst leave that one warning ignored.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=_open_formats()) as image:
                _check_format(image)
                _check_pixels(image.size, max_pixels)
                if min_side is not None:
                    _apply_draft(image, min_side)
                image.load()  # force the full decode: truncation and corruption show up here
                oriented = _apply_orientation(image)
            return _to_rgb(oriented)
        except DecodeError:
            raise
        except Image.DecompressionBombError as exc:
            # Pillow's hard limit (twice its global MAX_IMAGE_PIXELS), hit before _check_pixels.
            raise DecodeError(f"image too large, possible decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise DecodeError(_unidentified_reason(data)) from exc
        except MemoryError as exc:
            raise DecodeError("not enough memory to decode image") from exc
        except Exception as exc:
            # Pillow's plugins raise a wide, undocumented set of exception types on malformed
            # input (OSError, SyntaxError, struct.error, EOFError, ValueError, IndexError,
            # KeyError, TypeError, ZeroDivisionError, AssertionError...): on untrusted bytes
            # they all mean "bad file".
            raise DecodeError(_decoder_error_reason(exc)) from exc


@functools.cache
def _open_formats() -> tuple[str, ...]:
    """The openers to hand to ``Image.open``: the supported ones this Pillow build has."""
    Image.init()
    available = tuple(name for name in _OPEN_ORDER if name in Image.OPEN)
    missing = sorted(set(_OPEN_ORDER) - set(available))
    if missing:
        logger.warning("this Pillow build cannot decode %s", ", ".join(missing))
    return available


def _check_format(image: Image.Image) -> None:
    if image.format not in SUPPORTED_FORMATS:
        raise DecodeError(f"unsupported image format: {image.format}")


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    """Refuse images too large to decode; ``size`` comes from the header alone."""
    width, height = size
    if width < 1 or height < 1:
        raise DecodeError(f"image has no pixels: {width}x{height}")
    if width * height > max_pixels:
        raise DecodeError(
            f"image too large: {width}x{height} = {width * height} pixels, "
            f"limit is {max_pixels} (possible decompression bomb)"
        )


def _apply_draft(image: Image.Image, min_side: int) -> None:
    """Let a JPEG decode at a reduced scale whose sides both stay >= ``min_side``.

    Pillow's JPEG ``draft`` picks the largest DCT scale s in (8, 4, 2, 1) with
    ``s <= min(width // req_w, height // req_h)`` and decodes at ``ceil(side / s)``, so each
    decoded side is >= the requested one. Asking for a ``min_side`` square keeps the shorter
    side >= ``min_side`` whichever way the EXIF orientation turns the image later.
    Must run before ``load``; other formats ignore it.
    """
    if image.format not in _DRAFT_FORMATS:
        return
    full_size = image.size
    image.draft("RGB", (min_side, min_side))
    if image.size != full_size:
        logger.debug(
            "JPEG draft: decoding %s at %s for min_side=%d", full_size, image.size, min_side
        )


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Apply the EXIF orientation; unreadable EXIF leaves the (good) pixels as they are."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:  # EXIF parsing raises as many types as the decoders do
        logger.debug("ignoring unreadable EXIF orientation: %r", exc)
        return image.copy()


def _unidentified_reason(data: bytes) -> str:
    """Say which format a refused file is when Pillow knows it, else that it is no image."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image_format = image.format
    except Exception:  # identification only: any failure means "not an image we know"
        return "not a recognised image"
    return f"unsupported image format: {image_format}"


def _decoder_error_reason(exc: Exception) -> str:
    detail = str(exc).strip() or type(exc).__name__
    if len(detail) > _MAX_REASON_DETAIL:
        detail = detail[: _MAX_REASON_DETAIL - 3] + "..."
    if "truncated" in detail.lower():
        return f"truncated image data: {detail}"
    return f"corrupt image data: {detail}"


# --- colour ---------------------------------------------------------------------------------


def _to_rgb(image: Image.Image) -> Image.Image:
    """Bring any Pillow mode to RGB, compositing transparency onto the configured colour."""
    if image.mode in _HIGH_DEPTH_MODES:
        image = _high_depth_to_8bit(image)
    if image.has_transparency_data:
        return _composite_on_background(image)
    if image.mode == "RGB":
        return image
    return image.convert("RGB")


def _composite_on_background(image: Image.Image) -> Image.Image:
    if image.mode == "La":  # premultiplied: Pillow converts it to RGBA only via LA
        image = image.convert("LA")
    rgba = image.convert("RGBA")  # also turns P/L/RGB "transparency" info into alpha
    result = Image.new("RGB", rgba.size, config.ALPHA_BACKGROUND)
    result.paste(rgba, mask=rgba.getchannel("A"))
    return result


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit and float greyscale to 8-bit "L" (or "LA" with a tRNS value)."""
    values = np.asarray(image)
    result = Image.fromarray(_scale_to_uint8(values, image.mode))
    transparency = image.info.get("transparency")
    if isinstance(transparency, int):  # PNG tRNS of a 16-bit grey image: one sample value
        alpha = np.where(values == transparency, 0, 255).astype(np.uint8)
        result.putalpha(Image.fromarray(alpha))
    return result


def _scale_to_uint8(values: npt.NDArray[np.generic], mode: str) -> npt.NDArray[np.uint8]:
    """Map samples to 0..255 by the range their mode or, for I and F, their data implies.

    "I;16*" is 0..65535. "I" and "F" carry no range of their own: data within 0..1 (floats
    only), 0..255 or 0..65535 is taken to use that range, anything else is stretched from its
    minimum to its maximum.
    """
    samples = values.astype(np.float64)
    if mode.startswith("I;16"):
        return _to_uint8(samples / 257.0)
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        return np.zeros(samples.shape, dtype=np.uint8)
    low, high = float(finite.min()), float(finite.max())
    if mode == "F" and low >= 0.0 and high <= 1.0:
        return _to_uint8(samples * 255.0)
    if low >= 0.0 and high <= 255.0:
        return _to_uint8(samples)
    if low >= 0.0 and high <= 65535.0:
        return _to_uint8(samples / 257.0)
    return _to_uint8((samples - low) * (255.0 / (high - low)))


def _to_uint8(samples: npt.NDArray[np.float64]) -> npt.NDArray[np.uint8]:
    cleaned = np.nan_to_num(samples, nan=0.0, posinf=255.0, neginf=0.0)
    return np.clip(np.rint(cleaned), 0, 255).astype(np.uint8)
