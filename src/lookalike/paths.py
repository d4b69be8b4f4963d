"""File names as the operating system gives them, and as people can read them.

On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 into lone
surrogates (``os.fsdecode``: ``b"bad\\xff.jpg"`` -> ``"bad\\udcff.jpg"``), which round-trip
to the exact name but cannot be printed or encoded as UTF-8. lookalike keeps such names as
they are everywhere (the store keeps their bytes) and converts them only for display.
"""

from __future__ import annotations

import os


def printable(path: str) -> str:
    """``path`` with the bytes that are not UTF-8 shown as ``\\xNN`` (always encodable)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(path).decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # surrogates that no file name decodes to
            return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return path
