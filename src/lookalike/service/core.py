"""What the routes work with: collections, query batchers, jobs, uploads, metrics, limits.

No HTTP here: failures are :mod:`lookalike.errors`, mapped to statuses by
:mod:`lookalike.service.errors`. Every change to a collection (uploads, deletions, index
jobs, deleting it) goes through that collection's writer; searches read its snapshot.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from lookalike import config
from lookalike.collection import Collection
from lookalike.encode.encoders import EncoderPool
from lookalike.encode.models import ModelSpec, builtin_models, builtin_name, builtin_spec
from lookalike.errors import Conflict, Forbidden, InvalidInput, NotFound
from lookalike.image.decode import DecodeError, load_image
from lookalike.search.engine import QueryOutcome, SearchResult
from lookalike.service.batcher import QueryBatcher
from lookalike.service.decoding import DecodeSlots
from lookalike.service.errors import BadUpload
from lookalike.service.files import (
    ThumbnailCache,
    forget_upload,
    header_pixels,
    jpeg_fitting,
    make_thumbnail,
    servable,
    shown_folder,
    shown_name,
    sniff_format,
    store_by_content,
)
from lookalike.service.jobs import Job, JobCancelled, Jobs
from lookalike.service.metrics import Metrics
from lookalike.service.registry import Collections
from lookalike.service.schemas import (
    CollectionInfo,
    Facets,
    FacetValue,
    Hit,
    ImageItem,
    ImagePage,
    UploadOutcome,
    UploadReport,
)
from lookalike.service.settings import ServiceSettings
from lookalike.store.records import EmbeddedImage, ImageRecord
from lookalike.types import Box

log = logging.getLogger(__name__)


class Slots:
    """Admission for CPU- and memory-heavy work, taken on the event loop before a thread is
    used, so that waiting requests hold no worker thread.

    Searches and uploads have separate slots, so uploads never hold up searches; a query
    image whose header promises more than ``large_pixels`` waits for the single large-image
    slot, so that a few huge images cannot hold up ordinary searches either."""

    def __init__(self, *, searches: int, uploads: int, large_pixels: int) -> None:
        self._searches = asyncio.Semaphore(searches)
        self._large = asyncio.Semaphore(1)
        self._uploads = asyncio.Semaphore(uploads)
        self.large_pixels = large_pixels

    @asynccontextmanager
    async def search(self, data: bytes) -> AsyncIterator[None]:
        large = header_pixels(data) > self.large_pixels
        async with self._large if large else self._searches:
            yield

    @asynccontextmanager
    async def upload(self) -> AsyncIterator[None]:
        async with self._uploads:
            yield


class Service:
    """The parts the endpoints use, wired together."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.encoders = EncoderPool()
        self.collections = Collections(settings.collections_dir, settings.db, self.encoders)
        self.roots = [Path(os.path.realpath(root)) for root in settings.roots]
        for root in self.roots:
            if not root.is_dir():
                raise ValueError(f"--root {root} is not a folder")
        self.metrics = Metrics()
        self.thumbnails = ThumbnailCache(settings.thumbnail_cache)
        cores = os.cpu_count() or 1
        self.slots = Slots(
            searches=2 * cores,
            uploads=settings.max_concurrent_uploads,
            large_pixels=settings.large_image_pixels,
        )
        self._batchers: dict[ModelSpec, QueryBatcher] = {}
        self._batchers_lock = threading.Lock()
        self._loading: dict[ModelSpec, threading.Lock] = {}  # one lock a model being loaded
        self._direct_searches = threading.BoundedSemaphore(cores)
        #: Every decode (uploads, query images, stored files, thumbnails) holds one of these.
        self.decodes = DecodeSlots(ordinary=cores, large_pixels=settings.large_image_pixels)
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
                with self.collections.lease(name) as collection:
                    self.batcher(collection.spec)
                    collection.snapshot()  # vectors in memory before the first search
            except Exception as exc:  # one broken collection must not stop the server
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

    # --- models ----------------------------------------------------------------------------

    def batcher(self, spec: ModelSpec) -> QueryBatcher:
        """The query model of ``spec``, loaded once and shared by its collections (and their
        index runs: one ONNX Runtime session per model).

        Loading a model (seconds; a large or int8 one more) holds a lock of that model only:
        searches of collections whose model is loaded never wait for it."""
        with self._batchers_lock:
            found = self._batchers.get(spec)
            if found is not None:
                return found
            loading = self._loading.setdefault(spec, threading.Lock())
        with loading:
            with self._batchers_lock:
                found = self._batchers.get(spec)
            if found is None:
                log.info("loading model %s", spec.name)
                encoder = self.encoders.get(spec, threads=1)
                found = QueryBatcher(
                    spec,
                    encoder,
                    workers=self.settings.search_workers or os.cpu_count() or 1,
                    max_batch=self.settings.max_batch,
                )
                found.warm_up()
                self.encoders.put(spec, encoder)  # the collections' query model too
                with self._batchers_lock:
                    self._batchers[spec] = found
            return found

    def models_loaded(self) -> list[str]:
        with self._batchers_lock:
            return sorted({spec.name for spec in self._batchers})

    # --- collections -----------------------------------------------------------------------

    def create_collection(self, name: str, model: str) -> CollectionInfo:
        """A new empty collection; its model is loaded first, so a model that cannot be
        loaded (an extra not installed) leaves nothing behind."""
        if builtin_name(model) is None:
            raise InvalidInput(f"unknown model {model!r}: {', '.join(builtin_models())}")
        spec = builtin_spec(model)
        self.batcher(spec)
        self.collections.create(name, spec)
        return self.info(name)

    def info(self, name: str) -> CollectionInfo:
        with self.collections.lease(name) as collection:
            return CollectionInfo(
                name=name,
                images=len(collection),
                model=collection.spec.name,
                default=name == self.collections.default,
                deletable=self.collections.deletable(name),
                skipped=len(collection.store.skipped_files()),
            )

    def delete_collection(self, name: str) -> None:
        if self.jobs is not None and self.jobs.active_for(name):
            raise Conflict(f"collection {name!r} has a job queued or running")
        self.collections.delete(name)

    def allowed_folders(self, name: str) -> list[Path]:
        """Folders whose files may be served: the roots and the collection's uploads (both
        as given and with links resolved)."""
        files = self.collections.files_dir(name)
        return [*self.roots, files, Path(os.path.realpath(files))]

    def image_path(self, name: str, collection: Collection, image_id: int) -> str:
        path = collection.store.paths([image_id]).get(image_id)
        if path is None:
            raise NotFound(f"no image {image_id}")
        return path

    def servable_path(self, name: str, collection: Collection, image_id: int) -> str:
        """The file of an image, if it may still be served (see files.servable)."""
        path = self.image_path(name, collection, image_id)
        try:
            return servable(path, self.allowed_folders(name))
        except NotFound as exc:
            raise NotFound(f"image {image_id} is {exc}") from None

    def hits(
        self, name: str, results: list[SearchResult], weak_below: float = config.WEAK_MATCH
    ) -> list[Hit]:
        uploads = self.collections.files_dir(name)
        return [
            Hit(
                id=r.id,
                score=round(r.score, 6),
                name=shown_name(r.path, uploads),
                folder=shown_folder(r.path, uploads),
                path=r.path,
                category=r.category,
                cluster=r.cluster,
                box=r.box,
                weak=r.score < weak_below,
                same_item=None if r.same_item is None else round(r.same_item, 4),
                same_kind=None if r.same_kind is None else round(r.same_kind, 4),
                image_url=f"/collections/{name}/images/{r.id}",
                thumbnail_url=f"/collections/{name}/images/{r.id}/thumbnail",
            )
            for r in results
        ]

    # --- searching -------------------------------------------------------------------------

    def preview(self, data: bytes, filename: str) -> bytes:
        """A JPEG of an uploaded query as searches decode it (upright), for a browser that
        cannot draw the upload itself (HEIC)."""
        image = self.decode_query(data, filename, config.PREVIEW_SIDE)
        return jpeg_fitting(image, config.PREVIEW_SIDE)

    def decode_query(self, data: bytes, filename: str, min_side: int | None) -> Image.Image:
        """An uploaded query image, or :class:`BadUpload` with the decoder's reason (in a
        decode slot)."""
        try:
            with self.decodes.hold(header_pixels(data)):
                return load_image(
                    data,
                    min_side=min_side,
                    max_bytes=self.settings.max_upload_bytes,
                    max_pixels=self.settings.max_upload_pixels,
                )
        except DecodeError as exc:
            raise BadUpload(filename, exc.reason) from exc

    def search_direct(
        self,
        collection: Collection,
        query: Any,
        *,
        k: int,
        min_score: float | None,
        by_category: bool = False,
        rerank: bool = False,
    ) -> QueryOutcome:
        """One search through the library's search path, a few at a time: "more like this"
        by an indexed image (its file, or a region of it), which the batcher (decoded
        uploads) does not serve."""
        self.batcher(collection.spec)  # its model is the collection's query model
        with self._direct_searches:
            (outcome,) = collection.search_detailed(
                [query],
                k=k,
                min_score=min_score,
                by_category=by_category,
                rerank=rerank,
            )
        return outcome

    # --- browsing ---------------------------------------------------------------------------

    def browse(self, name: str, wanted: BrowseFilter, offset: int, limit: int) -> ImagePage:
        """A page of the collection's images, most recently added first, that pass the filters,
        with how they divide by category, folder and cluster (datasette's facets). Reads
        every indexed image's record: linear in the collection's size."""
        with self.collections.lease(name) as collection:
            ids = [int(i) for i in collection.snapshot().index.ids[::-1]]
            records = collection.store.records(ids)
            uploads = self.collections.files_dir(name)
        rows = [(records[i], shown_folder(records[i].path, uploads)) for i in ids if i in records]
        kept = [(r, folder) for r, folder in rows if wanted.passes(r, folder)]
        items = [
            ImageItem(
                id=r.id,
                name=shown_name(r.path, uploads),
                folder=folder,
                path=r.path,
                category=r.category,
                cluster=r.cluster,
                image_url=f"/collections/{name}/images/{r.id}",
                thumbnail_url=f"/collections/{name}/images/{r.id}/thumbnail",
            )
            for r, folder in kept[offset : offset + limit]
        ]
        # Each facet counts the images that pass the other filters: another value of it is
        # one choice away (as in a shop's faceted search).
        facets = Facets(
            category=_facet(
                r.category for r, f in rows if replace(wanted, category=None).passes(r, f)
            ),
            folder=_facet(f for r, f in rows if replace(wanted, folder=None).passes(r, f)),
            cluster=_facet(
                r.cluster for r, f in rows if replace(wanted, cluster=None).passes(r, f)
            ),
        )
        return ImagePage(
            collection=name,
            total=len(kept),
            offset=offset,
            limit=limit,
            category=wanted.category,
            folder=wanted.folder,
            cluster=wanted.cluster,
            facets=facets,
            items=items,
        )

    # --- uploads and deletions -------------------------------------------------------------

    def store_uploads(self, name: str, uploads: list[tuple[str, bytes]]) -> UploadReport:
        """Check and embed every upload on this thread (the model runs outside the writer),
        then store them by content and write their rows as one change of the collection
        (on its writer): all or nothing."""
        with self.collections.lease(name) as collection:
            encoder = self.batcher(collection.spec).embedder
            checked: list[_Upload] = []
            for filename, data in uploads:
                # Decoded as the indexer decodes a file, so the vector is the one indexing
                # the stored file would give.
                image = self.decode_query(data, filename, encoder.decode_side)
                fmt = sniff_format(data)
                if fmt is None:  # decodable but not by our rules: cannot happen, refuse anyway
                    raise BadUpload(filename, "not a recognised image")
                # One image at a time: memory stays that of one decoded image.
                described = encoder.describe([image])
                checked.append(
                    _Upload(
                        filename,
                        data,
                        fmt,
                        image.width,
                        image.height,
                        described.vectors[0],
                        described.boxes[0],
                    )
                )
            folder = self.collections.files_dir(name)
            # One settled change of the write path, as every door's: the fitted models are
            # refitted and the approximate index followed and saved as after `lookalike index`.
            outcomes = collection.writes.commit(
                lambda: _commit_uploads(collection, folder, checked)
            )
        return UploadReport(
            collection=name,
            added=sum(o.status == "added" for o in outcomes),
            results=outcomes,
        )

    def delete_image(self, name: str, image_id: int, *, delete_file: bool = False) -> None:
        """Remove an image from the collection and delete an uploaded file, as one change;
        with ``delete_file`` (only when the server allows it) the indexed file on disk too."""
        if delete_file and not self.settings.allow_file_deletion:
            raise Forbidden(
                "deleting files on disk is off: start the server with --allow-file-deletion"
            )
        with self.collections.lease(name) as collection:
            files = self.collections.files_dir(name)

            def change() -> None:
                path = self.image_path(name, collection, image_id)
                collection.remove([path])
                if Path(path).is_relative_to(files):
                    forget_upload(Path(path))
                elif delete_file:
                    Path(path).unlink(missing_ok=True)
                    log.info("deleted %s", path)

            collection.write(change)

    # --- server-side paths and jobs --------------------------------------------------------

    def resolve_server_path(self, raw: str) -> str:
        """An absolute path inside a root, symbolic links resolved."""
        if not self.roots:
            raise Forbidden("server-side paths are disabled (start with --root DIR)")
        if "\x00" in raw or not os.path.isabs(raw):
            raise InvalidInput(f"not an absolute path: {raw!r}")
        resolved = os.path.realpath(raw)
        if not _inside(resolved, self.roots):
            raise Forbidden(f"{raw} is outside the allowed roots")
        if not os.path.exists(resolved):
            raise NotFound(f"{raw} does not exist")
        return resolved

    def submit_index_job(self, name: str, paths: list[str], *, all_files: bool) -> Job:
        with self.collections.lease(name):
            resolved = [self.resolve_server_path(raw) for raw in paths]
        assert self.jobs is not None
        return self.jobs.submit(
            Job(collection=name, paths=paths, resolved=resolved, all_files=all_files)
        )

    def _run_index_job(self, job: Job) -> dict[str, Any]:
        with self.collections.lease(job.collection) as collection:
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
        for name in self.collections.names():
            try:
                with self.collections.lease(name) as collection:
                    count = len(collection)
            except Exception:  # deleted meanwhile, or cannot be opened
                continue
            gauges.append(
                ("lookalike_images", "Images per collection.", {"collection": name}, count)
            )
        return self.metrics.render(gauges)

    def thumbnail(self, path: str) -> bytes:
        with self.decodes.for_file(path):
            return make_thumbnail(path)


@dataclasses.dataclass(frozen=True)
class BrowseFilter:
    """What browsing narrows a collection to; None: any."""

    category: str | None = None
    folder: str | None = None
    cluster: int | None = None

    def passes(self, record: ImageRecord, folder: str) -> bool:
        return (
            (self.category is None or record.category == self.category)
            and (self.folder is None or folder == self.folder)
            and (self.cluster is None or record.cluster == self.cluster)
        )


def _facet(values: Iterable[str | int | None]) -> list[FacetValue]:
    """The most common values (None left out), most common first, ties by value."""
    counts = Counter(str(v) for v in values if v is not None)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [FacetValue(value=v, count=c) for v, c in ranked[: config.FACET_SIZE]]


def _inside(path: str, roots: list[Path]) -> bool:
    return any(Path(path).is_relative_to(root) for root in roots)


@dataclasses.dataclass
class _Upload:
    """A checked upload: its bytes, format, decoded size and vector."""

    filename: str
    data: bytes
    fmt: str
    width: int
    height: int
    vector: np.ndarray
    box: Box | None


def _commit_uploads(
    collection: Collection, folder: Path, checked: list[_Upload]
) -> list[UploadOutcome]:
    """On the writer: store the files and write their rows in one transaction; on failure
    (a full disk) the files this change created are removed again. The write path settles
    the change (:meth:`lookalike.pipeline.write_path.WritePath.commit`)."""
    store = collection.store
    created: list[Path] = []
    statuses: list[Literal["added", "updated", "unchanged"]] = []
    paths: list[str] = []
    try:
        rows: list[EmbeddedImage] = []
        for upload in checked:
            target, written = store_by_content(folder, upload.data, upload.fmt, upload.filename)
            if written:
                created.append(target)
            path = str(target)
            paths.append(path)
            if store.lookup(path) is not None:  # indexed, and the file is as it was
                statuses.append("unchanged")
                continue
            known = store.file_states(str(target.parent)).get(path)
            statuses.append("updated" if known is not None and not known.skipped else "added")
            info = target.stat()
            rows.append(
                EmbeddedImage(
                    path,
                    info.st_size,
                    info.st_mtime_ns,
                    upload.width,
                    upload.height,
                    upload.vector,
                    upload.box,
                )
            )
        if rows:
            collection.writes.write_batch(rows, [])
    except BaseException:
        for new_file in created:
            forget_upload(new_file)
        raise
    outcomes = []
    for upload, path, status in zip(checked, paths, statuses, strict=True):
        found = store.lookup(path)
        image_id = found[0] if found else None
        outcomes.append(
            UploadOutcome(filename=upload.filename, status=status, id=image_id, path=path)
        )
    return outcomes
