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


class InvalidInput(LookalikeError, ValueError):
    """The caller's input is wrong (a bad path, an unknown option)."""


class Unavailable(LookalikeError):
    """An optional part is not installed (an extra, a model package)."""


class ModelError(LookalikeError, RuntimeError):
    """A model cannot be found, built or loaded."""


class ModelUnavailable(ModelError, Unavailable):
    """The model needs an optional package that is not installed (the message names it)."""


class StorageError(LookalikeError, OSError):
    """The disk refused a write (full, read-only); nothing half-written was kept."""


class CollectionClosed(NotFound):
    """The collection was closed or deleted while the operation ran."""
