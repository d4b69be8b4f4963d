"""Decoding stage: a file (or its bytes) becomes an RGB :class:`PIL.Image.Image`.

Everything about untrusted image files is handled here, so that later stages only ever see a
well-formed RGB image:

* the format is recognised from the content, never from the file name, and only
  :data:`SUPPORTED_FORMATS` are accepted;
* files are opened once, read-only and non-blocking, and read only if ``fstat`` on the open
  file says it is regular and not too big (a FIFO put in a file's place never blocks);
* decompression bombs are refused from the header, before any pixel is decoded: by pixel
  count, and by the memory the decode would take (:func:`decode_cost`), which also covers
  high-depth images and very thin ones (Pillow keeps a pointer per row);
* high-depth samples are brought to 8 bits a strip at a time, so that memory stays near
  the size of the 8-bit output;
* Pillow's warnings about damaged metadata ("Corrupt EXIF data"...) are kept off stderr:
  the pixels are used as they are, the orientation when it can be read;
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
import threading
import warnings
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Final

import numpy as np
import numpy.typing as npt
import pillow_heif
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from lookalike import config
from lookalike.image.files import printable

logger = logging.getLogger(__name__)

__all__ = ["FULL_SIZE", "SUPPORTED_FORMATS", "DecodeError", "decode_cost", "load_image"]

#: Key in a decoded image's ``info``: its full width and height (EXIF orientation applied),
#: which a JPEG decoded at a reduced scale (``min_side``) does not have as its ``size``.
FULL_SIZE: Final = "lookalike_full_size"

# Pillow warns (UserWarning) about damaged metadata at every read: "Corrupt EXIF data",
# "Tag data larger than file", "Truncated File Read", "malformed MPO file"... On a real
# photo collection that is hundreds of lines of stderr for files that decode fine or are
# reported as bad anyway. Silenced for Pillow's modules only, by a process-wide filter, so
# that threads decoding at once cannot let one through while another restores the filters
# of a catch_warnings block. (A C library writing to stderr itself, such as libtiff's JPEG
# codec, is out of Python's reach.)
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")

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

#: Modes that carry an alpha channel.
_ALPHA_MODES: Final = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})

#: Pixels per strip when high-depth samples are scaled to 8 bits: bounds the float copies.
_STRIP_PIXELS: Final = 1 << 18

_MAX_REASON_DETAIL = 120

#: Held while an image whose decoding costs more than config.DECODE_ALONE_BYTES decodes.
_LARGE_DECODE = threading.Lock()


class DecodeError(Exception):
    """Raised when a file cannot be used as an image; `reason` is short, human-readable, and
    `path` the file's (None for bytes): ``str()`` names both.

    ``transient`` says the fault may go away without the file changing (permission denied,
    an I/O error, memory): such a file is reported but not remembered as bad."""

    def __init__(self, reason: str, transient: bool = False, path: str | None = None) -> None:
        super().__init__(reason, transient)
        self.reason = reason
        self.transient = transient
        self.path = path

    def __str__(self) -> str:
        return f"{printable(self.path)}: {self.reason}" if self.path is not None else self.reason


def load_image(
    source: str | os.PathLike[str] | bytes,
    *,
    min_side: int | None = None,
    max_bytes: int = config.MAX_FILE_BYTES,
    max_pixels: int = config.MAX_IMAGE_PIXELS,
    max_decode_bytes: int = config.MAX_DECODE_BYTES,
) -> Image.Image:
    """Decode by content (never by extension) into an RGB image.

    ``source`` is a path or the file's bytes. Multi-frame images give their first frame, the
    EXIF orientation is applied, transparency is composited onto ``config.ALPHA_BACKGROUND``.

    ``min_side``: the caller will shrink the image until its shorter side is ``min_side``, so a
    JPEG may be decoded at 1/2, 1/4 or 1/8 scale as long as both sides stay >= ``min_side``.
    No other resizing happens here; ``image.info[FULL_SIZE]`` is the full (oriented) size.

    Raises :class:`DecodeError` for any file that cannot be used (missing, unreadable, empty,
    larger than ``max_bytes``, more than ``max_pixels`` pixels, needing more than
    ``max_decode_bytes`` of memory to decode, not an image, unsupported format, truncated,
    corrupt), and :class:`ValueError` for a ``min_side`` below 1.
    """
    if min_side is not None and min_side < 1:
        raise ValueError(f"min_side must be at least 1, got {min_side}")
    try:
        data = _read_source(source, max_bytes)
        return _decode(
            data, min_side=min_side, max_pixels=max_pixels, max_decode_bytes=max_decode_bytes
        )
    except DecodeError as exc:
        if not isinstance(source, bytes | bytearray | memoryview):
            exc.path = os.fspath(source)
        raise


# --- reading --------------------------------------------------------------------------------


def read_file(path: str, max_bytes: int = config.MAX_FILE_BYTES) -> bytes:
    """The bytes of the file at ``path``, with :func:`load_image`'s checks (a regular file,
    at most ``max_bytes``); raises :class:`DecodeError` naming the path."""
    try:
        return _read_file(path, max_bytes)
    except DecodeError as exc:
        exc.path = path
        raise


def _read_source(source: str | os.PathLike[str] | bytes, max_bytes: int) -> bytes:
    """Return the raw bytes of ``source``, enforcing the size limits."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        _check_byte_count(len(data), max_bytes)
        return data
    return _read_file(os.fspath(source), max_bytes)


def _read_file(path: str, max_bytes: int) -> bytes:
    """Read a regular file once, read-only; its size is checked before reading.

    Checked with ``stat`` first (a file too large is not even opened), then opened
    non-blocking and checked again with ``fstat`` on the open file: a FIFO swapped in
    between the two would block a plain ``open`` for ever.
    """
    try:
        _check_file(os.stat(path), max_bytes)
        with open(path, "rb", opener=_open_nonblocking) as file:
            size = _check_file(os.fstat(file.fileno()), max_bytes)
            # read(n) allocates n bytes up front: ask for the size fstat gave, plus one byte
            # to notice a file that grew since, and only then for the rest of the limit.
            data = file.read(size + 1)
            if len(data) > size:
                data += file.read(max_bytes + 1 - len(data))
    except (OSError, ValueError) as exc:  # ValueError: embedded NUL byte in the path
        raise DecodeError(_access_error_reason(exc), transient=_is_transient(exc)) from exc
    _check_byte_count(len(data), max_bytes)
    return data


def _check_file(info: os.stat_result, max_bytes: int) -> int:
    """The size of a regular file within the limit; DecodeError for anything else."""
    if stat.S_ISDIR(info.st_mode):
        raise DecodeError("is a directory")
    if not stat.S_ISREG(info.st_mode):
        # A FIFO or a device would block or never end; nothing to index there.
        raise DecodeError(f"not a regular file ({_file_kind(info.st_mode)})")
    _check_byte_count(info.st_size, max_bytes)
    return info.st_size


def _open_nonblocking(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _is_transient(exc: OSError | ValueError) -> bool:
    """Faults that can go away while the file stays as it is (a chmod changes no mtime)."""
    return isinstance(exc, OSError) and not isinstance(exc, IsADirectoryError)


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


def _decode(
    data: bytes, *, min_side: int | None, max_pixels: int, max_decode_bytes: int
) -> Image.Image:
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
                full_size = image.size
                if min_side is not None:
                    _apply_draft(image, min_side)
                cost = _check_cost(image, max_decode_bytes)
                alone = _LARGE_DECODE if cost > config.DECODE_ALONE_BYTES else nullcontext()
                with alone:
                    image.load()  # the full decode: truncation and corruption show up here
                    oriented, transposed = _apply_orientation(image)
                    result = _to_rgb(oriented)
                result.info[FULL_SIZE] = full_size[::-1] if transposed else full_size
                return result
        except DecodeError:
            raise
        except Image.DecompressionBombError as exc:
            # Pillow's hard limit (twice its global MAX_IMAGE_PIXELS), hit before _check_pixels.
            raise DecodeError(f"image too large, possible decompression bomb: {exc}") from exc
        except UnidentifiedImageError as exc:
            raise DecodeError(_unidentified_reason(data)) from exc
        except MemoryError as exc:
            raise DecodeError("not enough memory to decode image", transient=True) from exc
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


#: Bytes per pixel of Pillow's in-memory storage, by mode (unlisted modes: 4).
_STORAGE_BYTES: Final = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}
#: Pillow keeps one pointer per row (and per-row headers): what makes a 1 x 100,000,000 image
#: cost gigabytes.
_ROW_BYTES: Final = 16


def decode_cost(mode: str, width: int, height: int, *, transparency: bool = False) -> int:
    """Bytes of memory that decoding an image of this mode and size into RGB takes at most:
    the decoded image, the RGB result, and the intermediates of the conversion (an 8-bit
    copy of high-depth data, an RGBA copy and a mask for transparency)."""

    def plane(bytes_per_pixel: int) -> int:
        return height * (width * bytes_per_pixel + _ROW_BYTES)

    cost = plane(_STORAGE_BYTES.get(mode, 4))
    if mode in _HIGH_DEPTH_MODES:
        cost += plane(1) * 2  # the 8-bit samples, and the image made of them
    if mode != "RGB":
        cost += plane(4)  # the RGB result
    if transparency or mode in _ALPHA_MODES:
        cost += plane(1) if mode == "RGBA" else plane(4) + plane(1)  # RGBA copy, mask
    return cost


def _check_cost(image: Image.Image, max_bytes: int) -> int:
    """The memory decoding will take; refuse images whose decoding would take more than
    ``max_bytes`` (from the header, after draft mode picked the scale of a JPEG)."""
    cost = decode_cost(
        image.mode, image.width, image.height, transparency="transparency" in image.info
    )
    if cost > max_bytes:
        raise DecodeError(
            f"image too large to decode: {image.width}x{image.height} {image.mode} needs "
            f"about {cost // 2**20} MiB, limit is {max_bytes // 2**20} MiB"
        )
    return cost


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


def _apply_orientation(image: Image.Image) -> tuple[Image.Image, bool]:
    """Apply the EXIF orientation; also say whether it swapped width and height.

    Unreadable EXIF leaves the (good) pixels as they are. Without an orientation to apply,
    the image itself is returned (``exif_transpose`` would copy it: twice the memory)."""
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
        if orientation not in range(2, 9):
            return image, False
        return ImageOps.exif_transpose(image), orientation in (5, 6, 7, 8)
    except Exception as exc:  # EXIF parsing raises as many types as the decoders do
        logger.debug("ignoring unreadable EXIF orientation: %r", exc)
        return image, False


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
    # convert also turns P/L/RGB "transparency" info into alpha
    rgba = image if image.mode == "RGBA" else image.convert("RGBA")
    result = Image.new("RGB", rgba.size, config.ALPHA_BACKGROUND)
    result.paste(rgba, mask=rgba.getchannel("A"))
    return result


def _high_depth_to_8bit(image: Image.Image) -> Image.Image:
    """Scale 16-bit, 32-bit and float greyscale to 8-bit "L" (or "LA" with a tRNS value).

    A strip of rows at a time: whole-image float64 copies took 2 GB for a 7000 x 7000 PNG."""
    width, height = image.size
    rows = max(1, _STRIP_PIXELS // max(width, 1))
    strips = [(top, min(top + rows, height)) for top in range(0, height, rows)]

    def samples(top: int, bottom: int) -> npt.NDArray[np.generic]:
        return np.asarray(image.crop((0, top, width, bottom)))

    value_range = None
    if not image.mode.startswith("I;16"):
        value_range = _finite_range(samples(top, bottom) for top, bottom in strips)
    transparency = image.info.get("transparency")
    keyed = isinstance(transparency, int)  # PNG tRNS of a 16-bit grey image: one sample value
    grey = np.empty((height, width), dtype=np.uint8)
    alpha = np.empty((height, width), dtype=np.uint8) if keyed else None
    for top, bottom in strips:
        values = samples(top, bottom)
        grey[top:bottom] = _scale_to_uint8(values, image.mode, value_range)
        if alpha is not None:
            alpha[top:bottom] = np.where(values == transparency, 0, 255)
    result = Image.fromarray(grey)
    del grey
    if alpha is not None:
        result.putalpha(Image.fromarray(alpha))
    return result


def _finite_range(
    strips: Iterable[npt.NDArray[np.generic]],
) -> tuple[float, float] | None:
    """The smallest and largest finite sample (None if there is none)."""
    low, high = np.inf, -np.inf
    for values in strips:
        finite = values[np.isfinite(values)] if values.dtype.kind == "f" else values
        if finite.size:
            low, high = min(low, float(finite.min())), max(high, float(finite.max()))
    return None if low > high else (low, high)


def _scale_to_uint8(
    values: npt.NDArray[np.generic], mode: str, value_range: tuple[float, float] | None
) -> npt.NDArray[np.uint8]:
    """Map samples to 0..255 by the range their mode or, for I and F, their data implies.

    "I;16*" is 0..65535. "I" and "F" carry no range of their own: data (``value_range``, the
    finite minimum and maximum of the whole image) within 0..1 (floats only), 0..255 or
    0..65535 is taken to use that range, anything else is stretched from its minimum to its
    maximum.
    """
    if mode.startswith("I;16"):  # exact integer rounding of value / 257 (65535 / 255)
        return ((values.astype(np.uint32) + 128) // 257).astype(np.uint8)
    samples = values.astype(np.float64)
    if value_range is None:
        return np.zeros(samples.shape, dtype=np.uint8)
    low, high = value_range
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
