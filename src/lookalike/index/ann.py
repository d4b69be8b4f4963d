"""Approximate nearest-neighbour search with FAISS: the vector index for large collections.

:class:`AnnIndex` answers the same ``search`` as :class:`lookalike.index.exact.ExactIndex`
(top-k store ids and cosine scores per query, best first, -1 / -inf padding) over vectors
held compactly (8-bit scalar quantization, usually of PCA-256 vectors: 256 bytes an image).
Searches re-score its candidates with the store's full vectors
(:mod:`lookalike.index.refine`): the codes find the neighbourhood, the stored vectors order it.
Two kinds, chosen at index time:

``ivf``
    ``IVF{nlist},SQ8``: k-means cells, a query scans the ``nprobe`` nearest ones (the
    default: with the refine step it held recall@10 >= 0.95 on spread-out images, dense
    families of near-variants, exact copies and a grown collection, BENCHMARKS.md issue 23).
    Builds several times faster than HNSW, removals are real, 256 bytes an image.
``hnsw``
    ``HNSW32,SQ8``: a proximity graph; slower to build, removed vectors stay in the graph as
    tombstones until a rebuild, and on dense families of near-variants its walk misses
    much of the true top k (recall@10 0.68 at efSearch 256 there).

FAISS numbers vectors by *position* (0, 1, ... in the order they were added); this module
maps positions to store ids and back, so that an updated image simply gets a new position
and its old one becomes a tombstone (removed from an IVF list at once). Filters
(category-first search, tombstones) are FAISS ``IDSelectorBitmap`` search parameters, so a
filtered search walks one index, never per-category copies.

Persistence (:meth:`AnnIndex.save` / :func:`load`): the FAISS index and the position map
are written whole to new files and fsynced, then a small JSON header naming them (with
their sizes, fingerprints and whatever the caller records: the store's change cursor, the
codec) replaces the old header atomically. A crash mid-write leaves the old header and its
files; the new files it left are removed at the next open (:func:`remove_orphans`: their
names carry the writer's process id). An index only ever reads or removes files of its own
name (``<header>.<tag>.faiss|ids|codec``): a header copied from another collection names that
one's files, which are never touched. Loading checks sizes and fingerprints (O(1), not a
read of the whole file) and memory-maps the FAISS data, so a cold process opens a
million-image index in milliseconds; anything amiss (or FAISS failing to read it) returns
None and the caller rebuilds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import faiss
import numpy as np

from lookalike import config
from lookalike.errors import Unavailable
from lookalike.image.files import process_alive
from lookalike.index.base import IdFilter
from lookalike.types import IndexCapabilities

log = logging.getLogger(__name__)

KINDS = ("ivf", "hnsw")
#: 2: data files checked by size and fingerprint, memory-mapped (1: whole-file SHA-256).
FORMAT_VERSION = 2
#: Header keys naming data files beside the header.
DATA_FILES = ("index_file", "ids_file", "codec_file")
#: How data files end (their names: ``<header name>.<tag><suffix>``), and a header's
#: temporary file (replaced by the header once written).
DATA_SUFFIXES = (".faiss", ".ids", ".codec")
_TEMPORARY = ".tmp"
#: Unreferenced data files of an older lookalike (no process id in their tag) are removed
#: once this old: a save in progress is never that long.
ORPHAN_SECONDS = 3600
#: Data files this process is writing now (never orphans, whatever the header says).
_writing: set[str] = set()
_writing_lock = threading.Lock()
#: Bytes at each end of the FAISS file that its fingerprint covers.
FINGERPRINT_BYTES = 1 << 20
#: Share of an HNSW index's positions that may be tombstones before it asks for a rebuild.
MAX_DEAD_FRACTION = 0.2
#: Vectors that train the IVF cells and the quantizer's ranges: a random sample of up to this
#: many (40 per cell are enough for k-means; more only slows the build).
TRAINING_SAMPLE = 300_000
TRAINING_PER_CELL = 40
#: k-means rounds when training IVF cells (FAISS's default 25 buys little recall here).
KMEANS_ITERATIONS = 10


@dataclass(frozen=True)
class SearchSettings:
    """How hard a search looks: IVF cells scanned, HNSW candidate list length. Scaled up
    for filtered searches (a filter keeping a fraction f of the images scans 1/f more)."""

    nprobe: int = config.ANN_NPROBE
    ef_search: int = config.ANN_EF_SEARCH


def nlist_for(count: int) -> int:
    """IVF cells for ``count`` vectors: about 2 sqrt(N), a power of two, 64..65536 (2048 at a
    million images: 500 a cell)."""
    return int(min(65536, max(64, 2 ** round(math.log2(2 * math.sqrt(max(count, 1)))))))


def training_size(count: int) -> int:
    """How many vectors to train an index for ``count`` images on."""
    return min(TRAINING_SAMPLE, max(10_000, TRAINING_PER_CELL * nlist_for(count)))


def factory_string(kind: str, count: int) -> str:
    if kind == "ivf":
        return f"IVF{nlist_for(count)},SQ8"
    if kind == "hnsw":
        return "HNSW32,SQ8"
    raise ValueError(f"unknown index kind {kind!r}; choose one of {', '.join(KINDS)}")


class AnnIndex:
    """A FAISS index over unit vectors (inner product = cosine) keyed by store ids.

    Thread-safe: searches and changes take one lock (FAISS indexes are not safe to change
    while they are searched).
    """

    def __init__(
        self,
        kind: str,
        index: faiss.Index,
        ids: np.ndarray,
        *,
        settings: SearchSettings | None = None,
        mapped: BinaryIO | None = None,
    ) -> None:
        self.kind = kind
        self.index = index
        self.settings = settings or SearchSettings()
        self._ids = np.asarray(ids, dtype=np.int64)  # store id per position, -1: dead
        self._count = int((self._ids >= 0).sum())
        self._position_of = _position_map(self._ids)
        self._live_bitmap: np.ndarray | None = None  # cached filter of HNSW tombstones
        self._lock = threading.Lock()
        #: The open file a memory-mapped index came from (see :func:`load`), None once the
        #: index is held in memory.
        self._mapped = mapped

    # --- building ------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        kind: str,
        sample: np.ndarray,
        expected_count: int,
        *,
        settings: SearchSettings | None = None,
    ) -> AnnIndex:
        """An empty index whose cells and quantizer are fitted on ``sample`` (unit vectors
        shaped like the ones to come); ``expected_count`` sizes the IVF cells."""
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        nlist = nlist_for(expected_count)
        if kind == "ivf" and len(sample) < nlist:  # small collections: fewer, fuller cells
            nlist = max(1, 2 ** int(math.log2(max(len(sample) // 8, 1))))
        spec = f"IVF{nlist},SQ8" if kind == "ivf" else factory_string(kind, expected_count)
        index = faiss.index_factory(sample.shape[1], spec, faiss.METRIC_INNER_PRODUCT)
        if kind == "hnsw":
            faiss.downcast_index(index).hnsw.efConstruction = 64  # type: ignore[attr-defined]
        else:
            faiss.extract_index_ivf(index).cp.niter = KMEANS_ITERATIONS
        index.train(sample)
        return cls(kind, index, np.empty(0, dtype=np.int64), settings=settings)

    @property
    def dims(self) -> int:
        return int(self.index.d)

    def __len__(self) -> int:
        return self._count

    @property
    def positions(self) -> int:
        """Vectors FAISS holds, tombstones included."""
        return len(self._ids)

    @property
    def needs_rebuild(self) -> bool:
        """True when tombstones have grown past :data:`MAX_DEAD_FRACTION` (HNSW only: IVF
        removes vectors for real)."""
        return self._tombstones > MAX_DEAD_FRACTION * max(self.positions, 1)

    @property
    def _tombstones(self) -> int:
        """Removed vectors FAISS still holds (HNSW cannot delete; IVF does)."""
        return self.positions - self._count if self.kind == "hnsw" else 0

    @property
    def capabilities(self) -> IndexCapabilities:
        # Changes in place (under the lock); only the HNSW kind can give back its vectors
        # (IVF would need a direct map: 30-40 bytes more per image).
        return IndexCapabilities(
            exact=False, filter=True, reconstruct=self.kind == "hnsw", snapshot=False, persist=True
        )

    @property
    def ids(self) -> np.ndarray:
        """The store ids held, ascending."""
        return np.sort(self._ids[self._ids >= 0])

    def holds(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of these store ids is in the index (a mask, without sorting every id
        held as :attr:`ids` does)."""
        ids = np.asarray(ids, dtype=np.int64)
        with self._lock:
            inside = (ids >= 0) & (ids < len(self._position_of))
            held = np.zeros(len(ids), dtype=bool)
            held[inside] = self._position_of[ids[inside]] >= 0
        return held

    def vectors_of(self, ids: np.ndarray) -> np.ndarray:
        """The (8-bit decoded) vectors of these ids, HNSW only."""
        if self.kind != "hnsw":
            raise Unavailable("an IVF index does not keep vectors by id; use the store's")
        with self._lock:
            positions = self._position_of[np.asarray(ids, dtype=np.int64)]
            if (positions < 0).any():
                raise KeyError("some ids are not in the index")
            return np.stack([self.index.reconstruct(int(p)) for p in positions])

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> AnnIndex:
        """Add vectors (unit length, ``dims`` wide) under these store ids; an id already held
        is replaced."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) == 0:
            return self
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        with self._lock:
            self._own_locked()
            self._remove_locked(ids)
            start = len(self._ids)
            positions = np.arange(start, start + len(ids), dtype=np.int64)
            if self.kind == "ivf":
                self.index.add_with_ids(vectors, positions)
            else:
                self.index.add(vectors)
            self._ids = np.concatenate([self._ids, ids])
            self._position_of = _grow(self._position_of, int(ids.max()) + 1)
            self._position_of[ids] = positions
            self._count += len(ids)
            self._live_bitmap = None
        return self

    def remove(self, ids: Iterable[int] | np.ndarray) -> AnnIndex:
        """Forget these store ids (unknown ones are ignored)."""
        with self._lock:
            self._remove_locked(np.fromiter(ids, dtype=np.int64))
        return self

    def _remove_locked(self, ids: np.ndarray) -> int:
        ids = np.unique(ids[(ids >= 0) & (ids < len(self._position_of))])
        positions = self._position_of[ids]
        held = positions >= 0
        ids, positions = ids[held], positions[held]
        if len(positions) == 0:
            return 0
        if self.kind == "ivf":
            self._own_locked()
            self.index.remove_ids(faiss.IDSelectorBatch(positions))
        self._ids[positions] = -1
        self._position_of[ids] = -1
        self._count -= len(positions)
        self._live_bitmap = None
        return len(positions)

    # --- searching -----------------------------------------------------------------------

    def search(
        self,
        queries: np.ndarray,
        k: int,
        *,
        filter: IdFilter | None = None,
        exclude: Sequence[int | None] | None = None,
        settings: SearchSettings | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, ids)`` per query, best first (see
        :meth:`lookalike.index.base.VectorIndex.search`); ``filter``, if given, is the
        store ids that may be returned (category-first search); ``settings``: how hard to
        look this time (default: the index's)."""
        queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
        n_queries = len(queries)
        out_ids = np.full((n_queries, k), -1, dtype=np.int64)
        out_scores = np.full((n_queries, k), -np.inf, dtype=np.float32)
        if k <= 0 or self._count == 0:
            return out_scores, out_ids
        fetch = k + (1 if exclude is not None and any(e is not None for e in exclude) else 0)
        with self._lock:
            bitmap, fraction = self._filter_bitmap(filter)
            params = self._params(bitmap, fraction, settings or self.settings)
            scores, positions = self.index.search(
                queries, min(fetch, self.positions), params=params
            )
            del bitmap  # kept alive until FAISS is done with it
            found = np.where(positions >= 0, self._ids[np.maximum(positions, 0)], -1)
        for row in range(n_queries):
            keep = found[row] >= 0
            if exclude is not None and exclude[row] is not None:
                keep &= found[row] != exclude[row]
            hits, hit_scores = found[row][keep][:k], scores[row][keep][:k]
            out_ids[row, : len(hits)] = hits
            out_scores[row, : len(hits)] = hit_scores
        return out_scores, out_ids

    def _filter_bitmap(self, allowed: np.ndarray | None) -> tuple[np.ndarray | None, float]:
        """A bitmap of the positions a search may return (None: all), and their share."""
        if allowed is None:
            if self._tombstones == 0:
                return None, 1.0
            if self._live_bitmap is None:
                self._live_bitmap = np.packbits(self._ids >= 0, bitorder="little")
            return self._live_bitmap, 1.0
        allowed = np.asarray(allowed, dtype=np.int64)
        allowed = allowed[(allowed >= 0) & (allowed < len(self._position_of))]
        positions = self._position_of[allowed]
        positions = positions[positions >= 0]
        keep = np.zeros(self.positions, dtype=bool)
        keep[positions] = True
        return np.packbits(keep, bitorder="little"), len(positions) / max(self._count, 1)

    def _params(
        self, bitmap: np.ndarray | None, fraction: float, settings: SearchSettings
    ) -> faiss.SearchParameters:
        boost = 1.0 / max(fraction, 1e-6)
        selector = (
            faiss.IDSelectorBitmap(self.positions, faiss.swig_ptr(bitmap))
            if bitmap is not None
            else None
        )
        if self.kind == "ivf":
            nlist = faiss.extract_index_ivf(self.index).nlist
            nprobe = int(min(nlist, math.ceil(settings.nprobe * boost)))
            params: Any = faiss.SearchParametersIVF(nprobe=nprobe)  # type: ignore[call-arg]
        else:
            ef = int(min(16384, math.ceil(settings.ef_search * boost)))
            params = faiss.SearchParametersHNSW(efSearch=ef)  # type: ignore[attr-defined]
        if selector is not None:
            params.sel = selector
            params._selector = selector  # SWIG does not keep it alive by itself
        return params

    # --- persistence ---------------------------------------------------------------------

    def save(
        self, path: Path, extra: dict[str, Any] | None = None, *, codec: bytes | None = None
    ) -> None:
        """Write the index to ``path`` (a header file; data files sit beside it) atomically.

        The data files get fresh names, are written whole and fsynced; then the header naming
        them (with their sizes and fingerprints, ``extra``: the store's change cursor, and
        ``codec``: the fitted codec the vectors went through) is written to a temporary file,
        fsynced and renamed over the old header. A crash at any point leaves either the old
        header and its files or the new ones: a header never names a partly written file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tag = f"{os.getpid()}-{os.urandom(6).hex()}"  # whose they are, should it die
        new = [path.with_name(f"{path.name}.{tag}{suffix}") for suffix in DATA_SUFFIXES]
        with _writing_lock:
            _writing.update(f.name for f in new)
        try:
            self._write(path, new, extra, codec)
        except BaseException:
            for f in new:  # a full disk: no partial file is left behind
                f.unlink(missing_ok=True)
            raise
        finally:
            with _writing_lock:
                _writing.difference_update(f.name for f in new)

    def _write(
        self, path: Path, new: list[Path], extra: dict[str, Any] | None, codec: bytes | None
    ) -> None:
        index_file, ids_file, codec_file = new
        with self._lock:  # (a memory-mapped index is written from its mapping)
            faiss.write_index(self.index, str(index_file))
            _fsync(index_file)
            ids_bytes = self._ids.astype("<i8").tobytes()
            _write_synced(ids_file, ids_bytes)
            header: dict[str, Any] = {
                "format": FORMAT_VERSION,
                "kind": self.kind,
                "dims": self.dims,
                "count": self._count,
                "index_file": index_file.name,
                "index_bytes": index_file.stat().st_size,
                "index_fingerprint": _fingerprint(index_file),
                "ids_file": ids_file.name,
                "ids_bytes": len(ids_bytes),
                "ids_sha256": hashlib.sha256(ids_bytes).hexdigest(),
                **(extra or {}),
            }
        if codec is not None:
            _write_synced(codec_file, codec)
            header["codec_file"] = codec_file.name
            header["codec_sha256"] = hashlib.sha256(codec).hexdigest()
        _fsync_dir(path.parent)  # the new data files' names are durable before the header
        old = _read_header(path)
        _write_header(path, header)
        if old is not None:
            for key in DATA_FILES:
                owned = _owned_file(path, old.get(key))
                if owned is not None and owned.name != header.get(key):
                    owned.unlink(missing_ok=True)

    def _own_locked(self) -> None:
        """Read a memory-mapped index into memory before FAISS changes it (FAISS aborts the
        process when asked to grow a mapped array). The file is read through the handle kept
        open since loading: another process may have replaced (unlinked) it meanwhile."""
        if self._mapped is None:
            return
        started = time.perf_counter()
        self._mapped.seek(0)
        reader = faiss.PyCallbackIOReader(self._mapped.read)  # type: ignore[attr-defined]
        self.index = faiss.read_index(reader)
        self._mapped.close()
        self._mapped = None
        log.info("index read into memory for changes in %.2f s", time.perf_counter() - started)

    @property
    def mapped(self) -> bool:
        """True while the FAISS data is memory-mapped from its file (read-only use)."""
        return self._mapped is not None


def load(
    path: Path, *, settings: SearchSettings | None = None, mmap: bool = True
) -> tuple[AnnIndex, dict[str, Any]] | None:
    """The index saved at ``path`` and its header, or None when there is none or it cannot be
    trusted: a data file missing, of another size or fingerprint than the header says, or
    unreadable by FAISS. The caller then rebuilds it.

    Opening costs O(1) in the size of the index: the data file is memory-mapped (``mmap``;
    pages are read as searches touch them, and shared with other processes through the page
    cache), not read and checksummed whole. What makes that safe is how :meth:`AnnIndex.save`
    writes (fresh names, fsync, then an atomic rename of the header): a header only ever
    names complete files, so the checks here catch what else can happen to them (truncation,
    a file replaced or lost); FAISS checks the graph's structure as it reads it.
    A header of format 1 (whole-file SHA-256) is verified once the old way and rewritten."""
    path = Path(path)
    header = _read_header(path)
    if header is None:
        return None
    if header.get("format") == 1:
        header = _upgrade_header(path, header)
        if header is None:
            return None
    if header.get("format") != FORMAT_VERSION:
        return None
    index_file = _owned_file(path, header.get("index_file"))
    ids_file = _owned_file(path, header.get("ids_file"))
    if index_file is None or ids_file is None:
        log.warning("%s names files that are not its own: rebuilding the index", path)
        return None
    try:
        if index_file.stat().st_size != header["index_bytes"]:
            log.warning("%s: not the size its header says, rebuilding the index", index_file)
            return None
        if _fingerprint(index_file) != header["index_fingerprint"]:
            log.warning("%s: not the file its header names, rebuilding the index", index_file)
            return None
        ids_bytes = ids_file.read_bytes()
        if (
            len(ids_bytes) != header["ids_bytes"]
            or hashlib.sha256(ids_bytes).hexdigest() != header["ids_sha256"]
        ):
            log.warning("%s: checksum mismatch, rebuilding the index", ids_file)
            return None
        mapped = open(index_file, "rb") if mmap else None  # noqa: SIM115 (kept by the index)
        try:
            index = faiss.read_index(str(index_file), faiss.IO_FLAG_MMAP_IFC if mmap else 0)
        except BaseException:
            if mapped is not None:
                mapped.close()
            raise
    except (OSError, KeyError, TypeError, RuntimeError) as error:
        log.warning("%s: unreadable (%s), rebuilding the index", path, error)
        return None
    ids = np.frombuffer(ids_bytes, dtype="<i8").astype(np.int64)
    held = len(ids) if header["kind"] == "hnsw" else int((ids >= 0).sum())  # IVF deletes
    if index.ntotal != held:
        log.warning("%s: %d vectors for %d ids, rebuilding the index", path, index.ntotal, held)
        if mapped is not None:
            mapped.close()
        return None
    loaded = AnnIndex(header["kind"], index, ids, settings=settings, mapped=mapped)
    return loaded, header


def read_codec(path: Path, header: dict[str, Any]) -> bytes | None:
    """The fitted codec saved with an index (None: none saved, or it fails its checksum)."""
    owned = _owned_file(Path(path), header.get("codec_file"))
    if owned is None:
        return None
    try:
        data = owned.read_bytes()
    except OSError:
        return None
    return data if hashlib.sha256(data).hexdigest() == header.get("codec_sha256") else None


def _upgrade_header(path: Path, header: dict[str, Any]) -> dict[str, Any] | None:
    """Verify a format-1 index (SHA-256 of the whole data files, as it was saved) once and
    replace its header by a format-2 one naming the same files (no index is rewritten)."""
    try:
        index_file = path.with_name(header["index_file"])
        ids_file = path.with_name(header["ids_file"])
        if _sha256(index_file) != header["index_sha256"] or (
            _sha256(ids_file) != header["ids_sha256"]
        ):
            log.warning("%s: checksum mismatch, rebuilding the index", path)
            return None
        upgraded = {k: v for k, v in header.items() if k != "index_sha256"}
        upgraded.update(
            format=FORMAT_VERSION,
            index_bytes=index_file.stat().st_size,
            index_fingerprint=_fingerprint(index_file),
            ids_bytes=ids_file.stat().st_size,
        )
        _write_header(path, upgraded)
    except (OSError, KeyError) as error:
        log.warning("%s: unreadable (%s), rebuilding the index", path, error)
        return None
    log.info("%s: header upgraded to format %d", path, FORMAT_VERSION)
    return upgraded


def remove_files(path: Path) -> None:
    """Delete a saved index (header and data files)."""
    path = Path(path)
    header = _read_header(path)
    if header is not None:
        for key in DATA_FILES:
            owned = _owned_file(path, header.get(key))
            if owned is not None:
                owned.unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    remove_orphans(path)


def _owned_file(path: Path, name: object, suffixes: tuple[str, ...] = DATA_SUFFIXES) -> Path | None:
    """The data file ``name`` (from a header) if it is one of the index at ``path``'s own: a
    plain name ``<path's name>.<tag><suffix>`` beside it; else None (another collection's
    file, a path elsewhere), which is never read nor removed."""
    if not isinstance(name, str) or "/" in name or os.sep in name:
        return None
    prefix = path.name + "."
    if not (name.startswith(prefix) and name.endswith(suffixes)):
        return None
    tag = name[len(prefix) : name.rindex(".")]
    if not tag or "." in tag:
        return None
    return path.with_name(name)


def remove_orphans(path: Path) -> list[Path]:
    """Remove the data files of the index at ``path`` that no header names and no live
    process is writing: left by a save that crashed (or met a full disk), or by a header
    that was deleted. Their tag names the process that wrote them; files of an older
    lookalike (without it) go once :data:`ORPHAN_SECONDS` old. Returns what was removed."""
    path = Path(path)
    named = _named_files(path)
    removed: list[Path] = []
    try:
        candidates = sorted(path.parent.iterdir())
    except OSError:
        return removed
    for candidate in candidates:
        owned = _owned_file(path, candidate.name, (*DATA_SUFFIXES, _TEMPORARY))
        if owned is None or candidate.name in named:
            continue
        if not _abandoned(path, candidate) or candidate.name in _named_files(path):
            continue  # (the header read again: a save may have just named it)
        try:
            candidate.unlink()
        except FileNotFoundError:
            continue
        except OSError as error:  # read-only media: left as it is
            log.debug("cannot remove %s: %s", candidate, error)
            continue
        removed.append(candidate)
    if removed:
        log.warning(
            "%s: removed %d file(s) left by an interrupted save: %s",
            path,
            len(removed),
            ", ".join(f.name for f in removed),
        )
    return removed


def _named_files(path: Path) -> set[str]:
    header = _read_header(path) or {}
    return {str(header[key]) for key in DATA_FILES if header.get(key)}


def _abandoned(path: Path, data_file: Path) -> bool:
    """Whether no live process may still be writing ``data_file`` (see
    :func:`remove_orphans`)."""
    with _writing_lock:
        if data_file.name in _writing:
            return False
    tag = data_file.name[len(path.name) + 1 : data_file.name.rindex(".")]
    pid, dash, _ = tag.partition("-")
    if dash and pid.isdigit():
        return int(pid) == os.getpid() or not process_alive(int(pid))
    try:
        return time.time() - data_file.stat().st_mtime > ORPHAN_SECONDS
    except OSError:
        return False

    return True


def _read_header(path: Path) -> dict[str, Any] | None:
    try:
        header = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    return header if isinstance(header, dict) else None


def _write_header(path: Path, header: dict[str, Any]) -> None:
    # named like the data files (the process id in the tag): one a crash left is an orphan
    tmp = path.with_name(f"{path.name}.{os.getpid()}-{os.urandom(6).hex()}.tmp")
    _write_synced(tmp, json.dumps(header, indent=1).encode())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fingerprint(path: Path) -> str:
    """SHA-256 of a file's size, first and last MiB: O(1), and tells a file from a truncated,
    extended or different one (what can befall complete, never rewritten files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        digest.update(size.to_bytes(8, "little"))
        digest.update(f.read(FINGERPRINT_BYTES))
        if size > FINGERPRINT_BYTES:
            f.seek(max(FINGERPRINT_BYTES, size - FINGERPRINT_BYTES))
            digest.update(f.read(FINGERPRINT_BYTES))
    return digest.hexdigest()


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_dir(folder: Path) -> None:
    """Make renames and new names in ``folder`` durable (POSIX; a no-op where folders cannot
    be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _position_map(ids: np.ndarray) -> np.ndarray:
    """Store id -> position (-1: not held), a dense array over ids 0..max."""
    live = ids >= 0
    size = int(ids[live].max()) + 1 if live.any() else 0
    position_of = np.full(size, -1, dtype=np.int64)
    position_of[ids[live]] = np.flatnonzero(live)
    return position_of


def _grow(array: np.ndarray, size: int) -> np.ndarray:
    if len(array) >= size:
        return array
    grown = np.full(max(size, 2 * len(array)), -1, dtype=array.dtype)
    grown[: len(array)] = array
    return grown


def build(kind: str, ids: np.ndarray, vectors: np.ndarray) -> AnnIndex:
    """An index of ``kind`` over these vectors, trained on a sample of them."""
    rng = np.random.default_rng(0)
    sample = vectors
    if len(vectors) > training_size(len(vectors)):
        chosen = rng.choice(len(vectors), training_size(len(vectors)), replace=False)
        sample = vectors[np.sort(chosen)]
    index = AnnIndex.train(kind, sample, len(vectors))
    for start in range(0, len(ids), 100_000):
        index.add(ids[start : start + 100_000], vectors[start : start + 100_000])
    return index


def build_ivf(ids: np.ndarray, vectors: np.ndarray) -> AnnIndex:
    """indexes.INDEX_KINDS["ivf"]."""
    return build("ivf", ids, vectors)


def build_hnsw(ids: np.ndarray, vectors: np.ndarray) -> AnnIndex:
    """indexes.INDEX_KINDS["hnsw"]."""
    return build("hnsw", ids, vectors)
