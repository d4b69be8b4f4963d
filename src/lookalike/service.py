"""``lookalike serve``: the HTTP API and the web page, in one process.

A served folder (``--collections DIR``) holds one collection per file, and the images
uploaded into each, stored by content::

    DIR/<name>.db                   a collection (see :class:`lookalike.Collection`)
    DIR/<name>.files/ab/ab12...jpg  uploads: sha256 of the bytes + the decoded format's suffix

``--db PATH`` serves one more collection, named after the file's stem, whose uploads go to
``PATH`` with the suffix ``.files``.

How a search by upload runs: the request's image is decoded on a worker thread (never on the
event loop), then goes to the model's :class:`QueryBatcher`. Its threads, one per core, each
run the model with one core on every query waiting at that moment, then search each
collection once for the whole batch. Letting ONNX Runtime, or BLAS for the top-k, spread each
query over every core instead makes concurrent queries fight for the same cores; see
BENCHMARKS.md.

Safety: writes need ``Authorization: Bearer <token>`` when a token is set (searching by upload
is a read, and does not); cross-site browser writes are refused; request bodies and uploaded
images are limited while they are read; images are decoded by content; files are served by
id only; server-side paths are accepted only inside the configured roots (symbolic links
resolved); nothing is ever fetched from a URL.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import io
import ipaddress
import logging
import os
import queue
import re
import shutil
import stat
import tempfile
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from concurrent.futures import Future
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, File, Header, HTTPException, Query, UploadFile
from fastapi import Path as PathParam
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    Response,
)
from fastapi.security import HTTPBearer
from fastapi.staticfiles import StaticFiles
from PIL import Image
from pydantic import BaseModel, Field
from starlette.middleware.trustedhost import TrustedHostMiddleware
from swagger_ui_bundle import swagger_ui_path

import lookalike
from lookalike import config
from lookalike.collection import Collection
from lookalike.decode import SUPPORTED_FORMATS, DecodeError, load_image
from lookalike.errors import EmptyCollectionError
from lookalike.features import Localize
from lookalike.models import Embedder, ModelError, ModelSpec, builtin_models, builtin_spec
from lookalike.region import crop, parse_box
from lookalike.search import QueryOutcome, SearchResult

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).parent / "web"

#: Collection names: also file names, so no dots, slashes or spaces.
NAME_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
_NAME_RE = re.compile(NAME_PATTERN)

#: Suffix and media type of stored and served files, by decoded format.
_SUFFIXES = {
    "JPEG": ".jpg",
    "MPO": ".jpg",
    "PNG": ".png",
    "WEBP": ".webp",
    "GIF": ".gif",
    "BMP": ".bmp",
    "TIFF": ".tif",
    "HEIF": ".heic",
    "AVIF": ".avif",
}
_MEDIA_TYPES = {
    "JPEG": "image/jpeg",
    "MPO": "image/jpeg",
    "PNG": "image/png",
    "WEBP": "image/webp",
    "GIF": "image/gif",
    "BMP": "image/bmp",
    "TIFF": "image/tiff",
    "HEIF": "image/heic",
    "AVIF": "image/avif",
}

THUMBNAIL_SIDE = 256
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: POST routes that change nothing, open to everyone like GET (searching by upload).
_READ_ONLY_POST = re.compile(r"^/collections/[^/]+/search$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost"})


@dataclass
class ServiceSettings:
    """Everything ``lookalike serve`` can be told; the defaults are the safe ones."""

    collections_dir: Path = field(default_factory=lambda: config.data_dir() / "collections")
    #: One more collection file to serve (and the page's default), named after its stem.
    db: Path | None = None
    #: Folders inside which server-side paths may be indexed; none: no server-side paths.
    roots: list[Path] = field(default_factory=list)
    #: Required as ``Authorization: Bearer <token>`` for every write when set.
    token: str | None = None
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 50_000_000
    #: Images in one upload request when adding (each within ``max_upload_bytes``) ...
    max_files_per_request: int = 32
    #: ... and all of them together, since they are checked in memory before anything is kept.
    max_request_bytes: int = 100 * 1024 * 1024
    #: Host headers accepted (DNS rebinding); None accepts any.
    allowed_hosts: list[str] | None = None
    #: Threads embedding queries, each with one core; default: one per core.
    search_workers: int = 0
    #: Most queries embedded in one model run.
    max_batch: int = 8
    #: Thumbnails kept in memory.
    thumbnail_cache: int = 1024
    #: Load the default model and open every collection at start (off in some tests).
    warm_up: bool = True


# --- API models -----------------------------------------------------------------------------


class Problem(BaseModel):
    detail: str


class CollectionCreate(BaseModel):
    name: str = Field(pattern=NAME_PATTERN, examples=["catalogue"])
    model: str = Field(
        default="lite0", description=f"built-in model: {', '.join(builtin_models())}"
    )


class CollectionInfo(BaseModel):
    name: str
    images: int
    model: str
    default: bool = Field(description="the collection given with --db")
    deletable: bool
    skipped: int = Field(description="files that could not be indexed, with their reasons")


class CollectionList(BaseModel):
    collections: list[CollectionInfo]
    default: str | None


class Hit(BaseModel):
    id: int
    score: float = Field(description="cosine similarity, -1..1")
    name: str = Field(description="file name")
    path: str = Field(description="the indexed file on the server")
    category: str | None = None
    cluster: int | None = None
    box: tuple[float, float, float, float] | None = Field(
        default=None, description="where the object is, relative x0, y0, x1, y1"
    )
    weak: bool = Field(default=False, description=f"a weak match: score below {config.WEAK_MATCH}")
    image_url: str
    thumbnail_url: str


class SearchResponse(BaseModel):
    collection: str
    query_id: int | None = Field(default=None, description="the image searched like, if any")
    query_box: tuple[float, float, float, float] | None = Field(
        default=None, description="where the object was found in the query (localize)"
    )
    searched_categories: list[str] | None = Field(
        default=None, description="categories searched (by_category); null: all of them"
    )
    results: list[Hit]
    took_ms: float


class ImageItem(BaseModel):
    id: int
    name: str
    path: str
    image_url: str
    thumbnail_url: str


class ImagePage(BaseModel):
    collection: str
    total: int
    offset: int
    limit: int
    items: list[ImageItem]


class UploadOutcome(BaseModel):
    filename: str
    status: Literal["added", "updated", "unchanged", "skipped"]
    id: int | None = None
    path: str | None = None
    reason: str | None = None


class UploadReport(BaseModel):
    collection: str
    added: int
    results: list[UploadOutcome]


class IndexJobRequest(BaseModel):
    paths: list[str] = Field(
        min_length=1,
        max_length=1000,
        description="absolute folders or files on the server, inside a configured --root",
    )
    all_files: bool = Field(default=False, description="not only image file extensions")


JobState = Literal["queued", "running", "done", "failed", "cancelled"]


class JobInfo(BaseModel):
    id: str
    kind: Literal["index"]
    collection: str
    paths: list[str]
    state: JobState
    done: int = Field(description="files processed so far")
    total: int | None = Field(description="files to process, once known")
    report: dict[str, Any] | None = Field(
        description="added, updated, removed, unchanged, skipped (path, reason), seconds"
    )
    error: str | None
    created: float
    started: float | None
    finished: float | None


class JobList(BaseModel):
    jobs: list[JobInfo]


class Categories(BaseModel):
    collection: str
    categories: dict[str, int] = Field(description="category -> images")


class Clusters(BaseModel):
    collection: str
    clusters: dict[int, int] = Field(description="cluster id -> images")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    collections: int
    default_collection: str | None
    models_loaded: list[str]
    writes_need_token: bool
    server_paths: bool = Field(description="whether indexing server-side folders is allowed")
    max_upload_bytes: int
    jobs_queued: int
    jobs_running: int


# --- collections ----------------------------------------------------------------------------


class Collections:
    """The collections being served: files in a folder, plus an optional ``--db`` file."""

    def __init__(self, folder: Path, db: Path | None) -> None:
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.default: str | None = None
        self._extra: dict[str, Path] = {}
        if db is not None:
            if not _NAME_RE.match(db.stem):
                raise ValueError(f"cannot serve {db}: its name must match {NAME_PATTERN}")
            self._extra[db.stem] = db
            self.default = db.stem
            if (folder / f"{db.stem}.db").exists():
                log.warning("%s hides the collection of the same name in %s", db, folder)
        self._open: dict[str, Collection] = {}
        self._lock = threading.Lock()

    def path_of(self, name: str) -> Path | None:
        if name in self._extra:
            return self._extra[name]
        if not _NAME_RE.match(name):
            return None
        path = self.folder / f"{name}.db"
        return path if path.is_file() else None

    def files_dir(self, name: str) -> Path:
        """Where images uploaded into a collection are stored."""
        path = self.path_of(name)
        if path is None:
            raise KeyError(name)
        return path.with_suffix(".files")

    def names(self) -> list[str]:
        found = {p.stem for p in self.folder.glob("*.db") if _NAME_RE.match(p.stem)}
        return sorted(found | set(self._extra))

    def deletable(self, name: str) -> bool:
        return name not in self._extra

    def get(self, name: str) -> Collection:
        """The open collection ``name``; KeyError if there is none."""
        with self._lock:
            found = self._open.get(name)
            if found is not None:
                return found
            path = self.path_of(name)
            if path is None:
                raise KeyError(name)
            collection = Collection.open(path)
            self._open[name] = collection
            return collection

    def create(self, name: str, spec: ModelSpec) -> Collection:
        with self._lock:
            if self.path_of(name) is not None:
                raise FileExistsError(name)
            collection = Collection.open(self.folder / f"{name}.db", model=spec)
            self._open[name] = collection
            return collection

    def delete(self, name: str) -> None:
        """Close the collection and delete its file and its uploaded images."""
        with self._lock:
            path = self.path_of(name)
            if path is None:
                raise KeyError(name)
            if not self.deletable(name):
                raise PermissionError(name)
            collection = self._open.pop(name, None)
            if collection is not None:
                collection.close()
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
            shutil.rmtree(path.with_suffix(".files"), ignore_errors=True)

    def opened(self) -> dict[str, Collection]:
        with self._lock:
            return dict(self._open)

    def close(self) -> None:
        with self._lock:
            for collection in self._open.values():
                collection.close()
            self._open.clear()


# --- searching ------------------------------------------------------------------------------


@dataclass
class _Query:
    collection: Collection
    image: Image.Image
    k: int
    min_score: float | None
    future: Future[list[SearchResult]]


class QueryBatcher:
    """Embeds queries for one model and searches them, a batch at a time.

    ``workers`` threads each take every query waiting (up to ``max_batch``), run the model on
    them with one core (``Embedder.embed_images``, as the library embeds queries), and search
    each collection once for all of that batch's queries.
    Nothing waits for a batch to fill: a lone query runs at once, and queries arriving while
    the workers are busy are batched together.
    """

    def __init__(self, spec: ModelSpec, *, workers: int, max_batch: int) -> None:
        self.spec = spec
        self.embedder = Embedder(spec, threads=1)
        self.max_batch = max(1, max_batch)
        self._queue: queue.SimpleQueue[_Query | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"query-{i}", daemon=True)
            for i in range(max(1, workers))
        ]
        for thread in self._threads:
            thread.start()

    def warm_up(self) -> None:
        side = self.spec.input_size
        self.embedder.embed_images([Image.new("RGB", (side, side))])

    def submit(
        self, collection: Collection, image: Image.Image, *, k: int, min_score: float | None
    ) -> Future[list[SearchResult]]:
        """Search ``collection`` for the decoded RGB ``image``; the future holds the results."""
        future: Future[list[SearchResult]] = Future()
        self._queue.put(_Query(collection, image, k, min_score, future))
        return future

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout=10)

    def _work(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            while len(batch) < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stop = True
                    break
                batch.append(more)
            # A query whose client went away is dropped here; the others can no longer be
            # cancelled, so setting their result below cannot fail.
            live = [q for q in batch if q.future.set_running_or_notify_cancel()]
            if live:
                self._run(live)
            if stop:
                return

    def _run(self, batch: list[_Query]) -> None:
        try:
            vectors = self.embedder.embed_images([q.image for q in batch])
        except Exception as exc:
            log.exception("embedding %d queries failed", len(batch))
            for q in batch:
                q.future.set_exception(exc)
            return
        groups: dict[tuple[int, int, float | None], list[int]] = {}
        for i, q in enumerate(batch):
            groups.setdefault((id(q.collection), q.k, q.min_score), []).append(i)
        for rows in groups.values():
            first = batch[rows[0]]
            try:
                found = first.collection.search_many(
                    [vectors[i] for i in rows], k=first.k, min_score=first.min_score
                )
            except Exception as exc:
                log.exception("searching %d queries failed", len(rows))
                for i in rows:
                    batch[i].future.set_exception(exc)
                continue
            for i, results in zip(rows, found, strict=True):
                batch[i].future.set_result(results)


def _decode_side(embedder: Embedder) -> int:
    """The shorter side a query image needs when decoded (JPEGs may decode smaller)."""
    return int(getattr(embedder, "decode_side", embedder.spec.input_size))


# --- jobs -----------------------------------------------------------------------------------


class JobCancelled(Exception):
    """Raised inside a running job when it is cancelled."""


@dataclass
class Job:
    collection: str
    paths: list[str]
    resolved: list[str]
    all_files: bool = False
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    kind: Literal["index"] = "index"
    state: JobState = "queued"
    done: int = 0
    total: int | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    cancel: threading.Event = field(default_factory=threading.Event)

    def info(self) -> JobInfo:
        return JobInfo(
            id=self.id,
            kind=self.kind,
            collection=self.collection,
            paths=self.paths,
            state=self.state,
            done=self.done,
            total=self.total,
            report=self.report,
            error=self.error,
            created=self.created,
            started=self.started,
            finished=self.finished,
        )


class Jobs:
    """Long work (indexing folders) on one background thread, one job after the other.

    Indexing already uses every core; running jobs side by side would only slow each down.
    Finished jobs are kept (the most recent ``history``) so that clients can read reports.
    """

    def __init__(self, run: Callable[[Job], dict[str, Any]], *, history: int = 200) -> None:
        self._run = run
        self._history = history
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="jobs", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        with self._lock:
            self._jobs[job.id] = job
            self._forget_old()
        self._queue.put(job)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        with self._lock:
            return list(reversed(self._jobs.values()))

    def counts(self) -> Counter[str]:
        with self._lock:
            return Counter(job.state for job in self._jobs.values())

    def active_for(self, collection: str) -> bool:
        with self._lock:
            return any(
                j.collection == collection and j.state in ("queued", "running")
                for j in self._jobs.values()
            )

    def cancel(self, job: Job) -> None:
        job.cancel.set()
        with self._lock:
            if job.state == "queued":
                job.state = "cancelled"
                job.finished = time.time()

    def close(self) -> None:
        for job in self.all():
            if job.state in ("queued", "running"):
                self.cancel(job)
        self._queue.put(None)
        self._thread.join(timeout=30)

    def _forget_old(self) -> None:
        finished = [j.id for j in self._jobs.values() if j.state not in ("queued", "running")]
        for job_id in finished[: max(0, len(self._jobs) - self._history)]:
            del self._jobs[job_id]

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.state != "queued":
                    continue
                job.state, job.started = "running", time.time()
            try:
                report = self._run(job)
            except JobCancelled:
                state: JobState = "cancelled"
                report, error = None, None
            except Exception as exc:
                log.exception("job %s failed", job.id)
                state, report, error = "failed", None, f"{type(exc).__name__}: {exc}"
            else:
                state, error = "done", None
            with self._lock:
                job.state, job.report, job.error = state, report, error
                job.finished = time.time()
            log.info("job %s %s: %s", job.id, state, report or error or "")


# --- metrics --------------------------------------------------------------------------------


class Metrics:
    """Request counters and latency histograms in Prometheus' text format, written by hand."""

    BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()
        self._latency: dict[str, list[float]] = {}
        self.in_flight = 0

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(method, route, status)] += 1
            row = self._latency.setdefault(route, [0.0] * (len(self.BUCKETS) + 2))
            for i, bound in enumerate(self.BUCKETS):
                if seconds <= bound:
                    row[i] += 1
            row[-2] += seconds
            row[-1] += 1

    def render(self, gauges: list[tuple[str, str, dict[str, str], float]]) -> str:
        lines = [
            "# HELP lookalike_http_requests_total HTTP requests by route and status.",
            "# TYPE lookalike_http_requests_total counter",
        ]
        with self._lock:
            for (method, route, status), count in sorted(self.requests.items()):
                labels = _labels({"method": method, "route": route, "status": str(status)})
                lines.append(f"lookalike_http_requests_total{labels} {count}")
            lines += [
                "# HELP lookalike_http_request_duration_seconds HTTP request latency by route.",
                "# TYPE lookalike_http_request_duration_seconds histogram",
            ]
            for route, row in sorted(self._latency.items()):
                name = "lookalike_http_request_duration_seconds"
                for bound, below in zip(self.BUCKETS, row, strict=False):
                    labels = _labels({"route": route, "le": f"{bound:g}"})
                    lines.append(f"{name}_bucket{labels} {below:g}")
                lines.append(f"{name}_bucket{_labels({'route': route, 'le': '+Inf'})} {row[-1]:g}")
                lines.append(f"{name}_sum{_labels({'route': route})} {row[-2]:.6f}")
                lines.append(f"{name}_count{_labels({'route': route})} {row[-1]:g}")
            in_flight = float(self.in_flight)
        gauges = [
            ("lookalike_http_requests_in_flight", "HTTP requests being served.", {}, in_flight),
            *gauges,
        ]
        seen: set[str] = set()
        for name, help_text, labels_of, value in gauges:
            if name not in seen:
                seen.add(name)
                lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
            lines.append(f"{name}{_labels(labels_of)} {value:g}")
        return "\n".join(lines) + "\n"


def _labels(values: dict[str, str]) -> str:
    if not values:
        return ""
    escaped = (
        f'{key}="{value.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
        for key, value in values.items()
    )
    return "{" + ",".join(escaped) + "}"


# --- thumbnails -----------------------------------------------------------------------------


class ThumbnailCache:
    """Recently made thumbnails (JPEG bytes), least recently used dropped first."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[tuple[object, ...], bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[object, ...]) -> bytes | None:
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
            return data

    def put(self, key: tuple[object, ...], data: bytes) -> None:
        with self._lock:
            self._items[key] = data
            self._items.move_to_end(key)
            while len(self._items) > self._size:
                self._items.popitem(last=False)


def make_thumbnail(path: str, side: int = THUMBNAIL_SIDE) -> bytes:
    """A JPEG of the image at ``path`` fitting in ``side`` x ``side`` (JPEGs decode at 1/2..1/8
    scale: draft mode)."""
    image = load_image(path, min_side=side)
    image.thumbnail((side, side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=82, optimize=True)
    return out.getvalue()


# --- the service ----------------------------------------------------------------------------


def _sniff_format(source: bytes | str) -> str | None:
    """The image format of the bytes or file, from its content; None if not a supported one."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            fmt = image.format
    except Exception:  # any failure to identify means "not an image we serve"
        return None
    return fmt if fmt in SUPPORTED_FORMATS else None


def _decode_error_status(reason: str) -> int:
    if reason.startswith(("file too large", "image too large")):
        return 413
    if reason.startswith(("not a recognised image", "unsupported image format", "empty file")):
        return 415
    return 422


def _inside(path: str, roots: list[Path]) -> bool:
    return any(Path(path).is_relative_to(root) for root in roots)


class Service:
    """What the endpoints work with: collections, query batchers, jobs, metrics, thumbnails."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.collections = Collections(settings.collections_dir, settings.db)
        self.roots = [Path(os.path.realpath(root)) for root in settings.roots]
        for root in self.roots:
            if not root.is_dir():
                raise ValueError(f"--root {root} is not a folder")
        self.metrics = Metrics()
        self.thumbnails = ThumbnailCache(settings.thumbnail_cache)
        self._batchers: dict[ModelSpec, QueryBatcher] = {}
        self._batchers_lock = threading.Lock()
        self._direct_searches = threading.BoundedSemaphore(os.cpu_count() or 1)
        # Decoding is CPU-bound and may take ~3 bytes per pixel: a few at a time, whatever the
        # number of requests, bounds the memory (and more would not go faster).
        self._decodes = threading.BoundedSemaphore(2 * (os.cpu_count() or 1))
        self.jobs: Jobs | None = None
        self._blas_limit: Any = None

    # --- life ------------------------------------------------------------------------------

    def start(self) -> None:
        # Each query worker runs on one core; a BLAS product (the top-k) spreading over every
        # core as well would fight the other workers for them (several times slower under
        # load, see BENCHMARKS.md).
        from threadpoolctl import threadpool_limits

        self._blas_limit = threadpool_limits(limits=1, user_api="blas")
        self.jobs = Jobs(self._run_index_job)
        if not self.settings.warm_up:
            return
        started = time.perf_counter()
        self.batcher(builtin_spec(config.DEFAULT_MODEL))
        for name in self.collections.names():
            try:
                collection = self.collections.get(name)
                self.batcher(collection.spec)
                collection.index()  # vectors in memory before the first search
            except (ModelError, RuntimeError, ValueError, OSError) as exc:
                log.warning("cannot open collection %s: %s", name, exc)
        log.info("ready in %.1f s", time.perf_counter() - started)

    def stop(self) -> None:
        if self.jobs is not None:
            self.jobs.close()
        with self._batchers_lock:
            for batcher in self._batchers.values():
                batcher.close()
            self._batchers.clear()
        self.collections.close()
        if self._blas_limit is not None:
            self._blas_limit.restore_original_limits()
            self._blas_limit = None

    # --- parts -----------------------------------------------------------------------------

    def batcher(self, spec: ModelSpec) -> QueryBatcher:
        """The query model of ``spec``, loaded once and shared by its collections."""
        with self._batchers_lock:
            found = self._batchers.get(spec)
            if found is None:
                log.info("loading model %s", spec.name)
                found = QueryBatcher(
                    spec,
                    workers=self.settings.search_workers or os.cpu_count() or 1,
                    max_batch=self.settings.max_batch,
                )
                found.warm_up()
                self._batchers[spec] = found
            return found

    def models_loaded(self) -> list[str]:
        with self._batchers_lock:
            return sorted({spec.name for spec in self._batchers})

    def collection(self, name: str) -> Collection:
        try:
            collection = self.collections.get(name)
        except KeyError:
            raise HTTPException(404, f"no collection {name!r}") from None
        return collection

    def search_direct(
        self,
        collection: Collection,
        query: Any,
        *,
        k: int,
        min_score: float | None,
        by_category: bool = False,
        localize: Localize | None = None,
    ) -> QueryOutcome:
        """One search through the collection's own ``search_detailed``: what the batcher
        does not serve (by id, by category, query localization), a few at a time."""
        # Should it embed, it uses the collection's own query model: make that the shared
        # one rather than load another copy.
        if getattr(collection, "_embedder", False) is None:
            collection._embedder = self.batcher(collection.spec).embedder
        with self._direct_searches:
            (outcome,) = collection.search_detailed(
                [query], k=k, min_score=min_score, by_category=by_category, localize=localize
            )
        return outcome

    def info(self, name: str) -> CollectionInfo:
        collection = self.collection(name)
        return CollectionInfo(
            name=name,
            images=len(collection),
            model=collection.spec.name,
            default=name == self.collections.default,
            deletable=self.collections.deletable(name),
            skipped=len(collection.store.skipped_files()),
        )

    def path_of(self, collection: Collection, image_id: int) -> str:
        path = collection.store.paths([image_id]).get(image_id)
        if path is None:
            raise HTTPException(404, f"no image {image_id}")
        return path

    def hits(self, name: str, results: list[SearchResult]) -> list[Hit]:
        return [
            Hit(
                id=r.id,
                score=round(r.score, 6),
                name=os.path.basename(r.path),
                path=r.path,
                category=getattr(r, "category", None),
                cluster=getattr(r, "cluster", None),
                box=getattr(r, "box", None),
                weak=r.score < config.WEAK_MATCH,
                image_url=f"/collections/{name}/images/{r.id}",
                thumbnail_url=f"/collections/{name}/images/{r.id}/thumbnail",
            )
            for r in results
        ]

    # --- uploads ---------------------------------------------------------------------------

    def decode_upload(self, data: bytes, filename: str, min_side: int | None) -> Image.Image:
        """The uploaded image, or an HTTP error with the decoder's reason."""
        try:
            with self._decodes:
                return load_image(
                    data,
                    min_side=min_side,
                    max_bytes=self.settings.max_upload_bytes,
                    max_pixels=self.settings.max_upload_pixels,
                )
        except DecodeError as exc:
            raise HTTPException(
                _decode_error_status(exc.reason), f"{filename}: {exc.reason}"
            ) from exc

    def store_uploads(self, name: str, uploads: list[tuple[str, bytes]]) -> UploadReport:
        """Check every upload, then store them by content and index them; all or nothing."""
        collection = self.collection(name)
        checked: list[tuple[str, bytes, str]] = []
        side = _decode_side(self.batcher(collection.spec).embedder)
        for filename, data in uploads:
            self.decode_upload(data, filename, side)
            fmt = _sniff_format(data)
            if fmt is None:  # decodable but not by our rules: cannot happen, refuse anyway
                raise HTTPException(415, f"{filename}: not a supported image")
            checked.append((filename, data, fmt))
        folder = self.collections.files_dir(name)
        paths: list[str] = []
        for _, data, fmt in checked:
            digest = hashlib.sha256(data).hexdigest()
            target = folder / digest[:2] / f"{digest}{_SUFFIXES[fmt]}"
            if not target.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                with tempfile.NamedTemporaryFile(
                    dir=target.parent, suffix=".part", delete=False
                ) as tmp:
                    tmp.write(data)
                os.replace(tmp.name, target)
            paths.append(str(target))
        work = collection.plan(paths)
        todo = {c.path for c in work.todo}
        report = collection.add(paths, work=work)
        skipped = dict(report.skipped)
        outcomes: list[UploadOutcome] = []
        for (filename, _, _), path in zip(checked, paths, strict=True):
            if path in skipped:
                outcomes.append(
                    UploadOutcome(filename=filename, status="skipped", reason=skipped[path])
                )
                continue
            found = collection.store.lookup(path)
            status: Literal["added", "updated", "unchanged"] = (
                "unchanged"
                if path not in todo
                else "added"
                if path in work.new_paths
                else "updated"
            )
            outcomes.append(
                UploadOutcome(
                    filename=filename,
                    status=status,
                    id=found[0] if found else None,
                    path=path,
                )
            )
        if skipped:  # the decoder refused at indexing what it accepted above: undo those
            collection.remove(list(skipped))
            for path in skipped:
                Path(path).unlink(missing_ok=True)
        return UploadReport(
            collection=name,
            added=sum(o.status == "added" for o in outcomes),
            results=outcomes,
        )

    # --- server-side paths -----------------------------------------------------------------

    def resolve_server_path(self, raw: str) -> str:
        """An absolute path inside a root, symbolic links resolved; 403 otherwise."""
        if not self.roots:
            raise HTTPException(403, "server-side paths are disabled (start with --root DIR)")
        if "\x00" in raw or not os.path.isabs(raw):
            raise HTTPException(422, f"not an absolute path: {raw!r}")
        resolved = os.path.realpath(raw)
        if not _inside(resolved, self.roots):
            raise HTTPException(403, f"{raw} is outside the allowed roots")
        if not os.path.exists(resolved):
            raise HTTPException(404, f"{raw} does not exist")
        return resolved

    def _run_index_job(self, job: Job) -> dict[str, Any]:
        collection = self.collection(job.collection)
        work = collection.plan(job.resolved, all_files=job.all_files)
        # Links inside a root may point outside it: those files are not indexed.
        allowed = [c for c in work.todo if _inside(os.path.realpath(c.path), self.roots)]
        outside = sorted({c.path for c in work.todo} - {c.path for c in allowed})
        work = dataclasses.replace(work, todo=allowed)
        job.total = len(allowed)

        def progress(count: int) -> None:
            job.done += count
            if job.cancel.is_set():
                raise JobCancelled

        report = collection.add(job.resolved, work=work, progress=progress).as_dict()
        skipped = report["skipped"]
        assert isinstance(skipped, list)
        skipped.extend({"path": path, "reason": "outside the allowed roots"} for path in outside)
        return report

    # --- metrics ---------------------------------------------------------------------------

    def render_metrics(self) -> str:
        counts = self.jobs.counts() if self.jobs else Counter()
        gauges: list[tuple[str, str, dict[str, str], float]] = []
        for state in ("queued", "running"):
            gauges.append(
                ("lookalike_jobs", "Background jobs by state.", {"state": state}, counts[state])
            )
        with self._batchers_lock:
            batchers = list(self._batchers.values())
        for batcher in batchers:
            gauges.append(
                (
                    "lookalike_search_queue",
                    "Queries waiting for the model.",
                    {"model": batcher.spec.name},
                    batcher.pending(),
                )
            )
        for name, collection in sorted(self.collections.opened().items()):
            try:
                count = len(collection)
            except Exception:  # closed or deleted meanwhile
                continue
            gauges.append(
                ("lookalike_images", "Images per collection.", {"collection": name}, count)
            )
        return self.metrics.render(gauges)


# --- middleware -----------------------------------------------------------------------------

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


async def _send_json(
    send: Send, status: int, detail: str, headers: dict[str, str] | None = None
) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


class _BodyTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body too large: limit is {limit} bytes")


class Guard:
    """Pure ASGI middleware around the whole app: metrics, token, same-origin writes, body
    size limits, and a few security headers."""

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service
        token = service.settings.token
        self._token = token.encode() if token else None
        upload = service.settings.max_upload_bytes
        self._search_limit = upload + 64 * 1024  # one image and the multipart framing
        self._request_limit = max(self._search_limit, service.settings.max_request_bytes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.service.metrics
        started = time.perf_counter()
        status = 500
        metrics.in_flight += 1

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.setdefault("headers", [])
                headers.append((b"x-content-type-options", b"nosniff"))
                headers.append((b"referrer-policy", b"no-referrer"))
            await send(message)

        try:
            await self._guarded(scope, receive, send_wrapper)
        finally:
            metrics.in_flight -= 1
            route = scope.get("route")
            template = getattr(route, "path", None) or (
                "/static" if scope["path"].startswith("/static/") else "unmatched"
            )
            metrics.observe(scope["method"], template, status, time.perf_counter() - started)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        method, path = scope["method"], scope["path"]
        if method in _SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v for k, v in scope["headers"]}
        read_only = method == "POST" and _READ_ONLY_POST.match(path) is not None
        if not read_only:
            if self._token is not None and not _token_matches(
                headers.get("authorization", b""), self._token
            ):
                await _send_json(
                    send, 401, "missing or wrong API token", {"WWW-Authenticate": "Bearer"}
                )
                return
            if not _same_origin(headers):
                await _send_json(send, 403, "cross-site write refused")
                return
        limit = self._search_limit if read_only else self._request_limit
        declared = headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _send_json(send, 413, f"request body too large: limit is {limit} bytes")
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge(limit)
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge as exc:  # raised where the app does not turn it into a response
            await _send_json(send, 413, str(exc.detail))


def _token_matches(authorization: bytes, token: bytes) -> bool:
    """Whether ``Authorization: Bearer <token>`` holds the token (compared in constant time)."""
    scheme, _, given = authorization.partition(b" ")
    return scheme.lower() == b"bearer" and hmac.compare_digest(given.strip(), token)


def _same_origin(headers: dict[str, bytes]) -> bool:
    """False for a browser's cross-site request (a page elsewhere posting a form here)."""
    if headers.get("sec-fetch-site", b"") == b"cross-site":
        return False
    origin = headers.get("origin")
    if origin is None:
        return True  # not a browser, or a same-origin GET-like request
    host = headers.get("host", b"")
    return origin.split(b"://", 1)[-1] == host


# --- the app --------------------------------------------------------------------------------

_page_headers = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; script-src 'self'; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "Cache-Control": "no-cache",
}

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem} for status in (400, 401, 403, 404, 409, 413, 415, 422)
}

Name = Annotated[str, PathParam(pattern=NAME_PATTERN, description="collection name")]
ImageId = Annotated[int, PathParam(ge=1, description="image id")]
K = Annotated[int, Query(ge=1, le=200, description="results wanted")]
MinScore = Annotated[
    float | None, Query(ge=-1.0, le=1.0, description="leave out results scoring lower")
]
ByCategory = Annotated[bool, Query(description="only results of the query's predicted category")]
RegionQuery = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9.]+,[0-9.]+,[0-9.]+,[0-9.]+$",
        description="search only this region of the query: x0,y0,x1,y1 as fractions 0..1",
        examples=["0.1,0.2,0.6,0.9"],
    ),
]


def _region(box: str | None) -> tuple[float, float, float, float] | None:
    try:
        return parse_box(box) if box is not None else None
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None


LocalizeQuery = Annotated[
    Literal["mask", "crop", "saliency"] | None,
    Query(
        description="find the object in the query photo first (crop: best for a photo of an "
        "object in a scene searched against clean catalogue images)"
    ),
]


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The ASGI app: the API, its OpenAPI docs at /docs, and the web page at /."""
    service = Service(settings or ServiceSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="lookalike",
        version=lookalike.__version__,
        summary="Search a collection of images by image.",
        description=(
            "Writes need `Authorization: Bearer <token>` when the server has a token; "
            'reads, and searching by upload, do not. Errors are `{"detail": ...}`.'
        ),
        lifespan=lifespan,
        docs_url=None,  # served below from local files: FastAPI's default loads a CDN
    )

    @app.exception_handler(EmptyCollectionError)
    async def empty_collection(request: Any, exc: EmptyCollectionError) -> JSONResponse:
        return JSONResponse({"detail": "this collection is empty: add images first"}, 409)

    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="the server's API token")
    write = [Depends(bearer)]

    # --- page and service ------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html", headers=_page_headers)

    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    # Swagger UI's files come from the swagger-ui-bundle-v2 package, so /docs works offline.
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="lookalike API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    @app.get("/health", tags=["service"])
    def health() -> Health:
        counts = service.jobs.counts() if service.jobs else Counter()
        return Health(
            status="ok",
            version=lookalike.__version__,
            collections=len(service.collections.names()),
            default_collection=service.collections.default,
            models_loaded=service.models_loaded(),
            writes_need_token=service.settings.token is not None,
            server_paths=bool(service.roots),
            max_upload_bytes=service.settings.max_upload_bytes,
            jobs_queued=counts["queued"],
            jobs_running=counts["running"],
        )

    @app.get("/metrics", tags=["service"], response_class=PlainTextResponse)
    async def metrics() -> PlainTextResponse:
        """Prometheus text format: requests, latency, jobs, search queue, images."""
        return PlainTextResponse(
            service.render_metrics(), media_type="text/plain; version=0.0.4; charset=utf-8"
        )

    # --- collections -----------------------------------------------------------------------

    @app.get("/collections", tags=["collections"])
    def list_collections() -> CollectionList:
        infos = []
        for name in service.collections.names():
            try:
                infos.append(service.info(name))
            except (HTTPException, RuntimeError, ValueError, OSError) as exc:
                log.warning("cannot open collection %s: %s", name, exc)
        return CollectionList(collections=infos, default=service.collections.default)

    @app.post(
        "/collections", tags=["collections"], status_code=201, dependencies=write, responses=_ERRORS
    )
    def create_collection(body: CollectionCreate) -> CollectionInfo:
        if (
            body.model not in builtin_models()
            and f"efficientnet-{body.model}" not in builtin_models()
        ):
            raise HTTPException(422, f"unknown model {body.model!r}: {', '.join(builtin_models())}")
        try:
            collection = service.collections.create(body.name, builtin_spec(body.model))
        except FileExistsError:
            raise HTTPException(409, f"collection {body.name!r} exists") from None
        service.batcher(collection.spec)
        return service.info(body.name)

    @app.get("/collections/{name}", tags=["collections"], responses=_ERRORS)
    def get_collection(name: Name) -> CollectionInfo:
        return service.info(name)

    @app.delete(
        "/collections/{name}",
        tags=["collections"],
        status_code=204,
        dependencies=write,
        responses=_ERRORS,
    )
    def delete_collection(name: Name) -> Response:
        """Delete a collection, its index and the images uploaded into it (never files indexed
        from server folders)."""
        if service.jobs is not None and service.jobs.active_for(name):
            raise HTTPException(409, f"collection {name!r} has a job queued or running")
        try:
            service.collections.delete(name)
        except KeyError:
            raise HTTPException(404, f"no collection {name!r}") from None
        except PermissionError:
            raise HTTPException(403, f"{name!r} was given with --db and is not deleted") from None
        return Response(status_code=204)

    @app.get("/collections/{name}/categories", tags=["collections"], responses=_ERRORS)
    def categories(name: Name) -> Categories:
        method = getattr(service.collection(name), "categories", None)
        found = method() if callable(method) else {}
        return Categories(collection=name, categories=dict(found))

    @app.get("/collections/{name}/clusters", tags=["collections"], responses=_ERRORS)
    def clusters(name: Name) -> Clusters:
        method = getattr(service.collection(name), "clusters", None)
        found = method() if callable(method) else {}
        return Clusters(collection=name, clusters=dict(found))

    # --- images ----------------------------------------------------------------------------

    @app.get("/collections/{name}/images", tags=["images"], responses=_ERRORS)
    def list_images(
        name: Name,
        offset: Annotated[int, Query(ge=0)] = 0,
        limit: Annotated[int, Query(ge=1, le=500)] = 60,
    ) -> ImagePage:
        """The collection's images, most recently added first."""
        collection = service.collection(name)
        ids = collection.index().ids[::-1]
        page = [int(i) for i in ids[offset : offset + limit]]
        paths = collection.store.paths(page)
        items = [
            ImageItem(
                id=i,
                name=os.path.basename(paths[i]),
                path=paths[i],
                image_url=f"/collections/{name}/images/{i}",
                thumbnail_url=f"/collections/{name}/images/{i}/thumbnail",
            )
            for i in page
            if i in paths
        ]
        return ImagePage(collection=name, total=len(ids), offset=offset, limit=limit, items=items)

    @app.post(
        "/collections/{name}/images",
        tags=["images"],
        dependencies=write,
        status_code=201,
        responses={**_ERRORS, 200: {"description": "nothing new: every image was known"}},
    )
    async def add_images(
        name: Name,
        files: Annotated[list[UploadFile], File(description="image files (decoded by content)")],
    ) -> JSONResponse:
        """Upload images and index them. Every file is checked first: one bad file refuses
        the whole request, and nothing changes."""
        if len(files) > service.settings.max_files_per_request:
            raise HTTPException(
                413, f"too many files: limit is {service.settings.max_files_per_request}"
            )
        uploads = [(f.filename or "upload", await _read_upload(f, service)) for f in files]
        report = await run_in_threadpool(service.store_uploads, name, uploads)
        status = 201 if report.added else 200
        return JSONResponse(report.model_dump(), status_code=status)

    @app.get(
        "/collections/{name}/images/{image_id}",
        tags=["images"],
        response_class=FileResponse,
        responses={**_ERRORS, 200: {"content": {"image/*": {}}, "description": "the file"}},
    )
    def get_image(name: Name, image_id: ImageId) -> FileResponse:
        """The original file, with the media type of its content."""
        path = service.path_of(service.collection(name), image_id)
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):
                raise OSError("not a regular file")
        except OSError:
            raise HTTPException(404, f"image {image_id} is no longer readable") from None
        fmt = _sniff_format(path)
        if fmt is None:
            raise HTTPException(404, f"image {image_id} is no longer an image")
        return FileResponse(
            path,
            media_type=_MEDIA_TYPES[fmt],
            headers={"Cache-Control": "private, max-age=300"},
            content_disposition_type="inline",
            filename=os.path.basename(path),
        )

    @app.get(
        "/collections/{name}/images/{image_id}/thumbnail",
        tags=["images"],
        response_class=Response,
        responses={**_ERRORS, 200: {"content": {"image/jpeg": {}}, "description": "a JPEG"}},
    )
    def get_thumbnail(
        name: Name,
        image_id: ImageId,
        if_none_match: Annotated[str | None, Header()] = None,
    ) -> Response:
        """A JPEG at most 256 px on a side."""
        path = service.path_of(service.collection(name), image_id)
        try:
            info = os.stat(path)
        except OSError:
            raise HTTPException(404, f"image {image_id} is no longer readable") from None
        key = (name, image_id, path, info.st_size, info.st_mtime_ns)
        etag = '"' + hashlib.sha256(repr(key).encode()).hexdigest()[:20] + '"'
        headers = {"Cache-Control": "private, max-age=300", "ETag": etag}
        if if_none_match == etag:
            return Response(status_code=304, headers=headers)
        data = service.thumbnails.get(key)
        if data is None:
            try:
                with service._decodes:
                    data = make_thumbnail(path)
            except DecodeError as exc:
                raise HTTPException(404, f"image {image_id}: {exc.reason}") from None
            service.thumbnails.put(key, data)
        return Response(data, media_type="image/jpeg", headers=headers)

    @app.delete(
        "/collections/{name}/images/{image_id}",
        tags=["images"],
        status_code=204,
        dependencies=write,
        responses=_ERRORS,
    )
    def delete_image(name: Name, image_id: ImageId) -> Response:
        """Remove an image from the collection; an uploaded file is deleted as well."""
        collection = service.collection(name)
        path = service.path_of(collection, image_id)
        collection.remove([path])
        if Path(path).is_relative_to(service.collections.files_dir(name)):
            Path(path).unlink(missing_ok=True)
        return Response(status_code=204)

    # --- search ----------------------------------------------------------------------------

    @app.post("/collections/{name}/search", tags=["search"], responses=_ERRORS)
    async def search_by_upload(
        name: Name,
        file: Annotated[UploadFile, File(description="the query image")],
        k: K = config.DEFAULT_K,
        min_score: MinScore = None,
        by_category: ByCategory = False,
        localize: LocalizeQuery = None,
        box: RegionQuery = None,
    ) -> SearchResponse:
        """The indexed images most like an uploaded one (or the ``box`` region of it), best
        first. Needs no token. An empty collection answers 409."""
        started = time.perf_counter()
        region = _region(box)
        data = await _read_upload(file, service)
        filename = file.filename or "upload"

        def prepare() -> tuple[Collection, QueryBatcher, Image.Image]:
            collection = service.collection(name)
            if len(collection) == 0:
                raise EmptyCollectionError(collection.store.path)
            batcher = service.batcher(collection.spec)
            bigger = localize in ("crop", "saliency") or region is not None
            side = _decode_side(batcher.embedder) * (2 if bigger else 1)
            image = service.decode_upload(data, filename, side)
            return collection, batcher, crop(image, region) if region else image

        collection, batcher, image = await run_in_threadpool(prepare)
        if by_category or localize is not None:
            outcome = await run_in_threadpool(
                lambda: service.search_direct(
                    collection,
                    image,
                    k=k,
                    min_score=min_score,
                    by_category=by_category,
                    localize=localize,
                )
            )
        else:
            future = batcher.submit(collection, image, k=k, min_score=min_score)
            outcome = QueryOutcome(await asyncio.wrap_future(future))
        return SearchResponse(
            collection=name,
            query_box=outcome.query_box,
            searched_categories=outcome.searched,
            results=service.hits(name, outcome.results),
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    @app.get("/collections/{name}/images/{image_id}/similar", tags=["search"], responses=_ERRORS)
    def more_like_this(
        name: Name,
        image_id: ImageId,
        k: K = config.DEFAULT_K,
        min_score: MinScore = None,
        by_category: ByCategory = False,
        box: RegionQuery = None,
    ) -> SearchResponse:
        """More like this: the indexed images most like an indexed one (or the ``box`` region
        of it), itself left out."""
        started = time.perf_counter()
        region = _region(box)
        collection = service.collection(name)
        path = service.path_of(collection, image_id)
        # The library's "more like this": an indexed file searches with its stored vector and
        # is left out of its results (should the file have changed since, with its content).
        # A region of it is decoded and described afresh.
        try:
            query: Any = path
            if region is not None:
                side = 2 * _decode_side(service.batcher(collection.spec).embedder)
                query = crop(load_image(path, min_side=side), region)
            outcome = service.search_direct(
                collection, query, k=k + 1, min_score=min_score, by_category=by_category
            )
        except DecodeError as exc:
            raise HTTPException(404, f"image {image_id} is no longer readable: {exc}") from None
        results = [r for r in outcome.results if r.id != image_id][:k]
        return SearchResponse(
            collection=name,
            query_id=image_id,
            searched_categories=outcome.searched,
            results=service.hits(name, results),
            took_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    # --- jobs ------------------------------------------------------------------------------

    @app.post(
        "/collections/{name}/jobs/index",
        tags=["jobs"],
        status_code=202,
        dependencies=write,
        responses=_ERRORS,
    )
    def start_index_job(name: Name, body: Annotated[IndexJobRequest, Body()]) -> JobInfo:
        """Index folders or files on the server (inside a --root) in the background; follow
        it at /jobs/{id}."""
        service.collection(name)
        resolved = [service.resolve_server_path(raw) for raw in body.paths]
        assert service.jobs is not None
        job = service.jobs.submit(
            Job(collection=name, paths=body.paths, resolved=resolved, all_files=body.all_files)
        )
        return job.info()

    @app.get("/jobs", tags=["jobs"])
    def list_jobs() -> JobList:
        assert service.jobs is not None
        return JobList(jobs=[job.info() for job in service.jobs.all()])

    @app.get("/jobs/{job_id}", tags=["jobs"], responses=_ERRORS)
    def get_job(job_id: str) -> JobInfo:
        assert service.jobs is not None
        job = service.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        return job.info()

    @app.delete("/jobs/{job_id}", tags=["jobs"], dependencies=write, responses=_ERRORS)
    def cancel_job(job_id: str) -> JobInfo:
        """Cancel a job: what it indexed so far is kept."""
        assert service.jobs is not None
        job = service.jobs.get(job_id)
        if job is None:
            raise HTTPException(404, f"no job {job_id!r}")
        service.jobs.cancel(job)
        return job.info()

    guarded: Any = Guard
    app.add_middleware(guarded, service=service)
    if settings is not None and settings.allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    return app


async def _read_upload(file: UploadFile, service: Service) -> bytes:
    limit = service.settings.max_upload_bytes
    if file.size is not None and file.size > limit:
        raise HTTPException(413, f"{file.filename}: file too large: limit is {limit} bytes")
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise HTTPException(413, f"{file.filename}: file too large: limit is {limit} bytes")
    return data


# --- running --------------------------------------------------------------------------------


def is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def read_token(token_file: Path | None) -> str | None:
    """The API token: from ``token_file`` if given, else $LOOKALIKE_TOKEN; None if neither."""
    if token_file is not None:
        token = token_file.read_text(encoding="utf-8").strip()
        if not token:
            raise ValueError(f"{token_file} holds no token")
        return token
    return os.environ.get("LOOKALIKE_TOKEN") or None


def serve(
    settings: ServiceSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    insecure_public: bool = False,
    access_log: bool = False,
) -> None:
    """Run the service until interrupted. Refuses a public address without a token unless
    ``insecure_public``."""
    import uvicorn

    if not is_loopback(host):
        if settings.token is None and not insecure_public:
            raise ValueError(
                f"refusing to serve on {host} without an API token: set LOOKALIKE_TOKEN or "
                "--token-file, or pass --insecure-public"
            )
    elif settings.allowed_hosts is None:
        # Only local names: a web page elsewhere cannot reach this server through a DNS name
        # pointed at 127.0.0.1 (DNS rebinding).
        settings.allowed_hosts = ["127.0.0.1", "localhost", "[::1]", "::1"]
    app = create_app(settings)
    shown = f"[{host}]" if ":" in host else host
    log.info("serving on http://%s:%d (API docs at /docs)", shown, port)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=access_log)


__all__ = [
    "Collections",
    "Metrics",
    "QueryBatcher",
    "Service",
    "ServiceSettings",
    "create_app",
    "is_loopback",
    "read_token",
    "serve",
]
