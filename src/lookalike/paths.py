"""Paths as a user types them: ``~`` expanded, made absolute, checked to exist."""

from __future__ import annotations

import os
from collections.abc import Iterable

from lookalike.errors import MissingPathError


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
