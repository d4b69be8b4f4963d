"""File names as the operating system gives them, and as people can read them.

On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 into lone
surrogates (``os.fsdecode``: ``b"bad\\xff.jpg"`` -> ``"bad\\udcff.jpg"``), which round-trip
to the exact name but cannot be printed or encoded as UTF-8. lookalike keeps such names as
they are everywhere (the store keeps their bytes) and converts them only for display.

Paths as a user types them are expanded (``~``), made absolute and checked to exist here too.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from lookalike.errors import MissingPathError


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


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths with ``~`` expanded; a lone string is one path, not its characters."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]


def existing_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """:func:`expand_paths`, raising :class:`MissingPathError` for any that does not exist."""
    expanded = expand_paths(paths)
    missing = [p for p in expanded if not os.path.lexists(p)]
    if missing:
        raise MissingPathError(missing)
    return expanded
