"""Errors a user of the library meets, each naming what is wrong and what to do.

They subclass the built-in exception a caller would catch anyway (``FileNotFoundError``,
``ValueError``), so that ``except ValueError`` around a search keeps working.
"""

from __future__ import annotations

from pathlib import Path


class MissingPathError(FileNotFoundError):
    """A folder or file given to index does not exist."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        shown = ", ".join(paths)
        super().__init__(f"no such file or folder: {shown}")


class NoCollectionError(FileNotFoundError):
    """Opening a collection that does not exist, where creating one was not asked for."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"no collection at {path}: create it with `lookalike index DIR --db {path}`"
        )


class EmptyCollectionError(ValueError):
    """Searching a collection that holds no image yet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(f"{path} is empty: index some images first (`lookalike index DIR`)")


class NotInCollectionError(ValueError):
    """Removing paths of which the collection knows nothing."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        super().__init__(f"not in the collection: {', '.join(paths)}")
