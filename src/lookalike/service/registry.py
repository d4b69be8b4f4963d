"""The collections being served: files in a folder, plus an optional ``--db`` file.

A request uses a collection through a lease (:meth:`Collections.lease`). Deleting a
collection first takes it out of the registry (new requests get 404), then waits for the
leases still out to be returned, then closes it through its writer (queued writes finish
first) and deletes its files: a search or an upload running meanwhile never meets a closed
database.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from lookalike.collection import Collection
from lookalike.encode.encoders import EncoderPool
from lookalike.encode.models import ModelSpec
from lookalike.errors import AlreadyExists, Forbidden, NotFound
from lookalike.service.files import remove_abandoned_parts
from lookalike.service.settings import NAME_PATTERN, NAME_RE
from lookalike.store.registry import is_url
from lookalike.store.sqlite import is_collection

log = logging.getLogger(__name__)


class _Served:
    """An open collection and the number of requests using it."""

    def __init__(self, collection: Collection) -> None:
        self.collection = collection
        self.leases = 0


class Collections:
    """Open collections by name; paths are made absolute once, at start."""

    def __init__(
        self, folder: Path, db: Path | str | None, encoders: EncoderPool | None = None
    ) -> None:
        self.folder = Path(os.path.abspath(folder))
        self.folder.mkdir(parents=True, exist_ok=True)
        self.encoders = encoders or EncoderPool()
        self.default: str | None = None
        self._extra: dict[str, Path | str] = {}
        if db is not None:
            # A PostgreSQL collection is named after its schema (the URL's #name).
            if is_url(db):
                db = str(db)
                name = urlsplit(db).fragment or "lookalike"
            else:
                db = Path(os.path.abspath(db))
                name = db.stem
            if not NAME_RE.match(name):
                raise ValueError(f"cannot serve {db}: its name must match {NAME_PATTERN}")
            self._extra[name] = db
            self.default = name
            if (self.folder / f"{name}.db").exists():
                log.warning("%s hides the collection of the same name in %s", db, self.folder)
        self._open: dict[str, _Served] = {}
        self._deleting: set[str] = set()
        self._lock = threading.Condition()

    def path_of(self, name: str) -> Path | str | None:
        if name in self._extra:
            return self._extra[name]
        if not NAME_RE.match(name):
            return None
        path = self.folder / f"{name}.db"
        return path if path.is_file() and is_collection(path) else None

    def files_dir(self, name: str) -> Path:
        """Where images uploaded into a collection are stored (an absolute path)."""
        path = self.path_of(name)
        if path is None:
            raise NotFound(f"no collection {name!r}")
        if isinstance(path, str):  # a store URL: servers sharing it should share this folder
            return self.folder / f"{name}.files"
        return path.with_suffix(".files")

    def names(self) -> list[str]:
        # only collections: another application's .db in the folder is neither listed,
        # opened nor deleted
        found = {
            p.stem for p in self.folder.glob("*.db") if NAME_RE.match(p.stem) and is_collection(p)
        }
        return sorted((found | set(self._extra)) - self._deleting)

    def deletable(self, name: str) -> bool:
        return name not in self._extra

    def _served(self, name: str) -> _Served:
        """Call with the lock held."""
        if name in self._deleting:
            raise NotFound(f"no collection {name!r}")
        served = self._open.get(name)
        if served is None:
            path = self.path_of(name)
            if path is None:
                raise NotFound(f"no collection {name!r}")
            served = _Served(Collection.open(path, encoders=self.encoders))
            self._open[name] = served
            remove_abandoned_parts(self.files_dir(name))
        return served

    def get(self, name: str) -> Collection:
        """The open collection ``name`` (for a quick look: prefer :meth:`lease`)."""
        with self._lock:
            return self._served(name).collection

    @contextmanager
    def lease(self, name: str) -> Iterator[Collection]:
        """The collection ``name``, not closed before the block ends."""
        with self._lock:
            served = self._served(name)
            served.leases += 1
        try:
            yield served.collection
        finally:
            with self._lock:
                served.leases -= 1
                self._lock.notify_all()

    def create(self, name: str, spec: ModelSpec) -> Collection:
        with self._lock:
            if self.path_of(name) is not None or name in self._deleting:
                raise AlreadyExists(f"collection {name!r} exists")
            if (self.folder / f"{name}.db").exists():
                raise AlreadyExists(f"{name}.db exists in the collections folder, not a collection")
            collection = Collection.open(
                self.folder / f"{name}.db", model=spec, encoders=self.encoders
            )
            self._open[name] = _Served(collection)
            return collection

    def delete(self, name: str) -> None:
        """Close the collection and delete its file and its uploaded images."""
        with self._lock:
            path = self.path_of(name)
            if path is None or name in self._deleting:
                raise NotFound(f"no collection {name!r}")
            if not self.deletable(name) or isinstance(path, str):
                raise Forbidden(f"{name!r} was given with --db and is not deleted")
            self._deleting.add(name)
            served = self._open.get(name)
            # New requests now get 404; wait for those already using it.
            while served is not None and served.leases > 0:
                self._lock.wait()
            self._open.pop(name, None)
        try:
            if served is not None:
                served.collection.close()  # after the writes already queued
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)
        finally:
            with self._lock:
                self._deleting.discard(name)

    def opened(self) -> dict[str, Collection]:
        with self._lock:
            return {name: served.collection for name, served in self._open.items()}

    def close(self) -> None:
        with self._lock:
            for served in self._open.values():
                served.collection.close()
            self._open.clear()
