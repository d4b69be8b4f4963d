"""Which :class:`~lookalike.store.base.MetadataStore` a ``--db`` string names, and opening it.

A string with a URL scheme (``postgresql://...``) picks the store registered for that scheme;
anything else is a path to a SQLite file (:class:`lookalike.store.sqlite.Store`). Stores are
imported only when used, so an optional engine's driver is needed only by those who use it.

A new store plugs in with one line in :data:`STORE_SCHEMES` (or :func:`register_store` at run
time): the scheme -> ``"module:factory"``, where ``factory(target: str, create: bool)`` returns
the store; with ``create=False`` it raises :class:`~lookalike.errors.NoCollectionError` for a
collection that does not exist, creating nothing (read commands create nothing).
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path

from lookalike.errors import InvalidInput, NoCollectionError, Unavailable
from lookalike.store.base import MetadataStore

#: URL scheme -> "module:callable" taking the whole --db string.
STORE_SCHEMES: dict[str, str] = {
    "sqlite": "lookalike.store.registry:_open_sqlite_url",
    # postgresql://...#name: the collection "name" in that database (the postgres extra).
    "postgresql": "lookalike.store.postgres:PostgresStore",
}
#: A store's factory: (the whole --db string, whether a missing collection is created).
StoreFactory = Callable[[str, bool], MetadataStore]
_registered: dict[str, StoreFactory] = {}
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*)://")


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Make ``--db SCHEME://...`` open a store with ``factory`` (tests, plugins)."""
    _registered[scheme.lower()] = factory


def scheme_of(target: str | os.PathLike[str]) -> str | None:
    """The URL scheme of a --db string (lower case), or None for a file path."""
    found = _SCHEME.match(os.fspath(target))
    return found.group(1).lower() if found else None


def is_url(target: str | os.PathLike[str]) -> bool:
    return scheme_of(target) is not None


def open_store(target: str | os.PathLike[str], *, create: bool = True) -> MetadataStore:
    """Open the store a ``--db`` value names, creating it if needed and ``create``; else
    a missing one raises :class:`~lookalike.errors.NoCollectionError`."""
    scheme = scheme_of(target)
    if scheme is None:
        return _open_sqlite(Path(target).expanduser(), create)
    text = os.fspath(target)
    # "postgres://" is the common alias of "postgresql://".
    scheme = "postgresql" if scheme == "postgres" else scheme
    if scheme in _registered:
        return _registered[scheme](text, create)
    if scheme not in STORE_SCHEMES:
        known = ", ".join(sorted({*STORE_SCHEMES, *_registered}))
        raise InvalidInput(f"--db {text!r}: unknown store type {scheme!r} (known: {known})")
    module_name, _, attribute = STORE_SCHEMES[scheme].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise Unavailable(f"--db {scheme}://... needs an optional part: {exc}") from exc
    factory: StoreFactory = getattr(module, attribute)
    return factory(text, create)


def _open_sqlite_url(target: str, create: bool) -> MetadataStore:
    """``sqlite:///abs/path.db`` or ``sqlite://rel/path.db``."""
    return _open_sqlite(Path(target.split("://", 1)[1]).expanduser(), create)


def _open_sqlite(path: Path, create: bool) -> MetadataStore:
    from lookalike.store.sqlite import Store

    if not create and not path.exists():  # (a folder: the store says what to do)
        raise NoCollectionError(path)
    return Store(path)
