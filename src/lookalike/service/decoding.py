"""The service's decode slots: every image it decodes (an upload, a query image, a stored
file's region for "more like this", a thumbnail) holds one while it decodes, so that no
number of requests, anonymous ones included, can decode more than a bounded number of
images at once (issue 16: twenty "more like this" requests on one 7000 x 7000 16-bit PNG
took a server from 243 MB to 4.4 GB).

Taken on the worker thread that decodes (a blocking wait, after the request's admission by
:class:`lookalike.service.core.Slots`): ``ordinary`` images at once, and an image whose header
promises more than ``large_pixels`` one at a time in a slot of its own, so that large ones
queue behind each other, not in front of ordinary searches. After a large image, the C heap's
free pages are handed back to the system (glibc keeps them otherwise: memory would stay at
its peak after a burst).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from PIL import Image

log = logging.getLogger(__name__)


class DecodeSlots:
    def __init__(self, *, ordinary: int, large_pixels: int) -> None:
        self.ordinary = max(1, ordinary)
        self.large_pixels = large_pixels
        self._ordinary = threading.BoundedSemaphore(self.ordinary)
        self._large = threading.BoundedSemaphore(1)

    @contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """One slot for decoding an image of ``pixels`` (from its header; 0 if unknown)."""
        large = pixels > self.large_pixels
        with self._large if large else self._ordinary:
            yield
        if large:
            release_free_memory()

    @contextmanager
    def for_file(self, path: str | Path) -> Iterator[None]:
        """One slot for decoding the image file at ``path``."""
        with self.hold(file_pixels(path)):
            yield


def file_pixels(path: str | Path) -> int:
    """Pixels an image file says it has (its header only; 0 if unreadable)."""
    try:
        with Image.open(path) as image:
            return int(image.width) * int(image.height)
    except Exception:  # the decoder will say why, with its own checks
        return 0


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` (None elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        library = ctypes.CDLL(name) if name else None
    except OSError:
        return None
    found: Callable[[int], int] | None = getattr(library, "malloc_trim", None)
    return found


_TRIM = _malloc_trim()


def release_free_memory() -> None:
    """Give the C heap's free pages back to the system (glibc ``malloc_trim``; elsewhere
    nothing)."""
    if _TRIM is not None:
        _TRIM(0)
