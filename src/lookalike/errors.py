"""Domain errors: what went wrong, in terms of lookalike, never of HTTP or SQL.

Library code raises these; the CLI prints them as ``error: ...`` and the service maps each
class to one HTTP status in one place (:mod:`lookalike.service.errors`). Imports nothing.
"""

from __future__ import annotations


class LookalikeError(Exception):
    """Base of lookalike's errors; the message is meant for the user."""


class NotFound(LookalikeError, KeyError):
    """A collection, image or job that does not exist (or no longer does)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class AlreadyExists(LookalikeError):
    """Creating something that exists."""


class Conflict(LookalikeError):
    """The request clashes with the current state (a job running on a collection...)."""


class Forbidden(LookalikeError):
    """Not allowed by the configuration (a path outside the roots, a --db collection)."""


class ReadOnlyCollection(Forbidden, PermissionError):
    """A write to a collection on read-only media (it can be searched, not changed)."""


class InvalidInput(LookalikeError, ValueError):
    """The caller's input is wrong (a bad path, an unknown option)."""


class Unavailable(LookalikeError):
    """An optional part is not installed (an extra, a model package)."""


class ModelError(LookalikeError, RuntimeError):
    """A model cannot be found, built or loaded."""


class ModelUnavailable(ModelError, Unavailable):
    """The model needs an optional package that is not installed (the message names it)."""


class StoreUnreachable(LookalikeError, ConnectionError):
    """The database server of a store cannot be reached (down, wrong address, refused)."""

    def __str__(self) -> str:  # OSError would format its arguments as a tuple
        return str(self.args[0]) if self.args else ""


class StorageError(LookalikeError, OSError):
    """The disk refused a write (full, read-only); nothing half-written was kept."""


class CollectionClosed(NotFound):
    """The collection was closed or deleted while the operation ran."""


# --- what a new user meets first (issue 12): each names the path and what to do -------------


class MissingPathError(LookalikeError, FileNotFoundError):
    """A folder or file given to index does not exist."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        super().__init__(f"no such file or folder: {', '.join(paths)}")

    def __str__(self) -> str:  # OSError would format its arguments as a tuple
        return str(self.args[0])


class NoCollectionError(LookalikeError, FileNotFoundError):
    """Opening a collection that does not exist, where creating one was not asked for."""

    def __init__(self, path: object) -> None:
        self.path = path
        super().__init__(
            f"no collection at {path}: create it with `lookalike index DIR --db {path}`"
        )

    def __str__(self) -> str:
        return str(self.args[0])


class EmptyCollectionError(Conflict, ValueError):
    """Searching a collection that holds no image yet."""

    def __init__(self, path: object) -> None:
        self.path = path
        super().__init__(f"{path} is empty: index some images first (`lookalike index DIR`)")


class NotInCollectionError(InvalidInput):
    """Removing paths of which the collection knows nothing."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        super().__init__(f"not in the collection: {', '.join(paths)}")
