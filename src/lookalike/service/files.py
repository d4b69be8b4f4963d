"""Files the service keeps and serves: uploads stored by content, thumbnails, and which
indexed files may be served at all."""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import stat
import tempfile
import threading
import time
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from lookalike.errors import NotFound, StorageError
from lookalike.image.decode import SUPPORTED_FORMATS, load_image
from lookalike.image.files import process_alive

log = logging.getLogger(__name__)

#: Suffix and media type of stored and served files, by decoded format.
SUFFIXES = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "HEIF": ".heic",
    "AVIF": ".avif",
}
MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}
THUMBNAIL_SIDE = 256
#: Beside an uploaded file stored by content: the name it was uploaded under.
NAME_SUFFIX = ".name"
#: The folder that images uploaded into a collection are shown in (real folders are absolute).
UPLOADED = "uploaded"
#: Errors of a full or refusing disk: answered 507, never 500.
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


def sniff_format(source: bytes | str) -> str | None:
    """The image format of the bytes or file, from its content; None if not a supported one."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            fmt = image.format
    except Exception:  # any failure to identify means "not an image we serve"
        return None
    return fmt if fmt in SUPPORTED_FORMATS else None


def header_pixels(data: bytes) -> int:
    """Pixels an encoded image says it has (its header only; 0 if unreadable)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return int(image.width) * int(image.height)
    except Exception:  # the decoder will say why, with its own checks
        return 0


def store_by_content(folder: Path, data: bytes, fmt: str, filename: str) -> tuple[Path, bool]:
    """Write ``data`` to ``folder/ab/ab12...<suffix>`` unless it is there already; returns the
    path and whether it was written now. The name it was uploaded under is kept beside it
    (see :func:`shown_name`); a file uploaded again under another name keeps its first one.

    Written to a temporary file and renamed, so the target is whole or absent; should the
    disk refuse, the temporary file is removed and :class:`StorageError` raised. The temporary
    file's name starts with the process id: one a killed process left is removed when the
    collection is next opened (:func:`remove_abandoned_parts`)."""
    digest = hashlib.sha256(data).hexdigest()
    target = folder / digest[:2] / f"{digest}{SUFFIXES[fmt]}"
    if target.is_file() and target.stat().st_size == len(data):
        if not _name_file(target).is_file():  # stored before names were kept
            _write_whole(_name_file(target), _plain_name(filename).encode())
        return target, False
    _write_whole(_name_file(target), _plain_name(filename).encode())
    try:
        _write_whole(target, data)
    except BaseException:
        _name_file(target).unlink(missing_ok=True)
        raise
    return target, True


def _write_whole(target: Path, data: bytes) -> None:
    """``data`` into ``target`` by a temporary file and a rename: whole or absent."""
    tmp_name: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=target.parent, prefix=f"{os.getpid()}-", suffix=".part", delete=False
        ) as tmp:
            tmp_name = tmp.name
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, target)
        tmp_name = None
    except OSError as exc:
        if exc.errno in DISK_ERRNOS:
            raise StorageError(f"cannot store the upload: {os.strerror(exc.errno)}") from exc
        raise
    finally:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)


def _name_file(stored: Path) -> Path:
    return stored.with_name(stored.name + NAME_SUFFIX)


def _plain_name(filename: str) -> str:
    """The last part of an uploaded file's name (browsers may send a path), on one line."""
    name = filename.replace("\\", "/").rsplit("/", 1)[-1]
    return " ".join(name.split())[:255] or "upload"


def shown_folder(path: str, uploads: Path) -> str:
    """The folder an indexed file is shown in: :data:`UPLOADED` for a file uploaded into the
    collection (stored by content in ``uploads``), else its own folder."""
    stored = Path(path)
    return UPLOADED if stored.is_relative_to(uploads) else str(stored.parent)


def shown_name(path: str, uploads: Path) -> str:
    """An indexed file's name as people know it: for a file uploaded into the collection, the
    name it was uploaded under; else its own."""
    stored = Path(path)
    if stored.is_relative_to(uploads):
        try:
            given = _name_file(stored).read_text(encoding="utf-8", errors="replace")
        except OSError:  # stored before names were kept
            given = ""
        return given or stored.name
    return stored.name


def forget_upload(path: Path) -> None:
    """Delete an uploaded file and the name kept beside it."""
    path.unlink(missing_ok=True)
    _name_file(path).unlink(missing_ok=True)


def remove_abandoned_parts(folder: Path) -> list[Path]:
    """Remove the temporary files of uploads whose process is gone (killed while writing:
    see :func:`store_by_content`); those of an older lookalike (no process id in the name)
    once an hour old. Returns what was removed."""
    removed: list[Path] = []
    for part in sorted(folder.glob("*/*.part")):
        pid, dash, _ = part.name.partition("-")
        if dash and pid.isdigit():
            abandoned = not process_alive(int(pid))
        else:
            try:
                abandoned = time.time() - part.stat().st_mtime > 3600
            except OSError:
                continue
        if not abandoned:
            continue
        try:
            part.unlink()
        except OSError:
            continue
        removed.append(part)
    if removed:
        log.warning(
            "%s: removed %d upload(s) left unfinished by a killed process", folder, len(removed)
        )
    return removed

    return True


def servable(path: str, allowed: list[Path]) -> str:
    """``path`` if it may be served: a regular file and, when it lies in one of the
    ``allowed`` folders (the roots, the uploads folder), still inside them once symbolic
    links are resolved (an indexed file replaced by a link to a file elsewhere is not served).
    Raises :class:`NotFound` otherwise."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise OSError("not a regular file")
    except OSError:
        raise NotFound("no longer readable") from None
    lexical = Path(os.path.abspath(path))
    inside = [root for root in allowed if lexical.is_relative_to(root)]
    if inside and not any(Path(os.path.realpath(path)).is_relative_to(r) for r in allowed):
        raise NotFound("no longer inside the served folders")
    return path


class ThumbnailCache:
    """Recently made thumbnails (JPEG bytes), least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[object, ...], data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def make_thumbnail(path: str, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of the image at ``path`` fitting in ``side`` x ``side`` (JPEGs decode at 1/2..1/8
    scale: draft mode)."""
    return jpeg_fitting(load_image(path, min_side=side), side)


def jpeg_fitting(image: Image.Image, side: int) -> bytes:
    """A JPEG of a decoded image, scaled down to fit in ``side`` x ``side``."""
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()
