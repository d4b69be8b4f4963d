"""Indexing: find image files, work out what changed, decode in parallel, embed in batches.

Data flows one way: files -> decoded, prepared images (worker threads) -> vectors (one
batched model run) -> store (one transaction per batch). A killed run loses at most the
batch in flight; the next run sees everything committed before it as unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from PIL import Image

from lookalike import config
from lookalike.encode.models import Embedder
from lookalike.image.decode import FULL_SIZE, DecodeError, load_image
from lookalike.image.files import Candidate, candidates_for, existing_paths, printable
from lookalike.image.preprocess import shrink
from lookalike.store.base import MetadataStore
from lookalike.store.records import EmbeddedImage, FileState, SkippedFile
from lookalike.types import Box

log = logging.getLogger(__name__)


class BatchSink(Protocol):
    """Where :func:`run` writes its batches: the store, or a Parquet file (lookalike embed)."""

    def write_batch(
        self,
        embedded: Iterable[EmbeddedImage],
        skipped: Iterable[SkippedFile],
        forget: Iterable[str] = (),
    ) -> None: ...

    def remove(self, paths: Iterable[str]) -> int: ...


@dataclass
class IndexReport:
    """What an index run did; ``skipped`` lists (path, reason) of files that were not images."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    #: Files skipped on an earlier run and unchanged since (their reasons: ``lookalike info``).
    skipped_before: int = 0
    #: Files in the given folders left out because of their type: extension -> count.
    left_out: dict[str, int] = field(default_factory=dict)
    #: Files sent again to another worker after the Ray worker embedding them was lost (a
    #: path once per retry); each was still written once.
    retried: list[str] = field(default_factory=list)

    @property
    def embedded(self) -> int:
        return self.added + self.updated

    @property
    def images_per_second(self) -> float:
        return self.embedded / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "added": self.added,
            "updated": self.updated,
            "removed": self.removed,
            "unchanged": self.unchanged,
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "skipped_before": self.skipped_before,
            "left_out": self.left_out,
            "retried": self.retried,
            "seconds": round(self.seconds, 3),
            "images_per_second": round(self.images_per_second, 1),
        }


@dataclass(frozen=True)
class Plan:
    """The work an index run has to do, found by comparing the disk with the store."""

    todo: list[Candidate]
    new_paths: frozenset[str]
    vanished: list[str]
    unchanged: int
    skipped_before: int = 0
    left_out: dict[str, int] = field(default_factory=dict)

    def report(self) -> IndexReport:
        """The report of this plan before any of its work is done."""
        return IndexReport(
            unchanged=self.unchanged, skipped_before=self.skipped_before, left_out=self.left_out
        )


def _known_states(
    store: MetadataStore, candidates: list[Candidate], folders: list[str]
) -> dict[str, FileState]:
    """What the store knows of the folders' files and of the other candidates: ranges of
    its path index (the candidates' own folders), never every file of the collection,
    which took seconds per upload at a million images."""
    known: dict[str, FileState] = {}
    for folder in folders:
        known.update(store.file_states(folder))
    prefixes = tuple(folder.rstrip("/") + "/" for folder in folders)
    for parent in sorted({os.path.dirname(c.path) for c in candidates} - {""}):
        if not (parent + "/").startswith(prefixes):
            known.update(store.file_states(parent))
    return known


def plan(store: MetadataStore, candidates: list[Candidate], folders: list[str]) -> Plan:
    """Compare candidates with the store: what is new or changed, what vanished."""
    known = _known_states(store, candidates, folders)
    todo: list[Candidate] = []
    unchanged = 0
    skipped_before = 0
    seen: set[str] = set()
    for candidate in candidates:
        if candidate.path in seen:
            continue
        seen.add(candidate.path)
        state = known.get(candidate.path)
        if (
            state
            and candidate.problem is None
            and (state.size, state.mtime_ns) == (candidate.size, candidate.mtime_ns)
        ):
            if state.skipped:
                skipped_before += 1
            else:
                unchanged += 1
        else:
            todo.append(candidate)
    prefixes = tuple(folder.rstrip("/") + "/" for folder in folders)
    vanished = sorted(p for p in known if p not in seen and p.startswith(prefixes))
    new_paths = frozenset(c.path for c in todo if c.path not in known or known[c.path].skipped)
    return Plan(todo, new_paths, vanished, unchanged, skipped_before)


def plan_paths(
    store: MetadataStore, paths: Iterable[str | os.PathLike[str]], *, all_files: bool = False
) -> Plan:
    """The plan of indexing files and folders (recursively): new or changed files to embed,
    vanished ones to drop, and the files left out by type (extension -> count).

    ``~`` is expanded; a path that does not exist raises
    :class:`~lookalike.errors.MissingPathError` (a ``FileNotFoundError``) naming it."""
    left_out: Counter[str] = Counter()
    candidates, folders = candidates_for(
        existing_paths(paths), all_files=all_files, left_out=left_out
    )
    work = plan(store, candidates, folders)
    return dataclasses.replace(work, left_out=dict(sorted(left_out.items())))


@dataclass(frozen=True)
class _Outcome:
    """One file's result: its vector and size, or the reason it was skipped, and whether
    that is a fault of the file (remembered until the file changes) or may pass (a model
    error, a permission, memory: reported, and tried again on the next run)."""

    candidate: Candidate
    vector: np.ndarray | None
    width: int = 0
    height: int = 0
    reason: str = ""
    box: Box | None = None
    transient: bool = False

    @property
    def remembered(self) -> bool:
        """Stored as skipped: a file fault, of a file that exists."""
        return self.vector is None and not self.transient and self.candidate.size >= 0


#: A file's content when it was read elsewhere (the Ray driver sends the bytes of files its
#: workers cannot see), or why it could not be read there; None: read it here, by its path.
Source = bytes | DecodeError | None


def _decode_one(
    embedder: Embedder, candidate: Candidate, source: Source = None
) -> Image.Image | DecodeError:
    """The decoded image, or why the file cannot be used."""
    if candidate.problem is not None:
        return DecodeError(candidate.problem, transient=True)
    if isinstance(source, DecodeError):
        return source
    try:
        return shrink(
            load_image(candidate.path if source is None else source, min_side=embedder.decode_side),
            embedder.decode_side,
        )
    except DecodeError as exc:
        return exc
    except Exception as exc:  # a bad file must never stop the batch
        log.exception("unexpected error decoding %s", printable(candidate.path))
        return DecodeError(f"unexpected error: {exc}", transient=True)


def _describe(
    embedder: Embedder, images: list[Image.Image]
) -> list[tuple[np.ndarray, Box | None] | str]:
    """Vector and box of each image, or the model's error for it.

    A failed batch is run again one image at a time, so that one image the model cannot
    take does not cost the others their vectors."""
    try:
        description = embedder.describe(images)
        return list(zip(description.vectors, description.boxes, strict=True))
    except Exception as exc:
        if len(images) == 1:
            log.warning("model error: %s", exc)
            return [f"model error: {exc}"]
        log.warning("model failed on a batch (%s); trying its images one by one", exc)
    return [_describe(embedder, [image])[0] for image in images]


def _process_batch(
    embedder: Embedder, batch: list[Candidate], sources: list[Source] | None = None
) -> list[_Outcome]:
    """Decode and embed one batch, on one worker thread; ``sources``: the files' bytes
    where they were read elsewhere (see :data:`Source`).

    An image decoded larger than ``config.BATCH_IMAGE_PIXELS`` is described at once, alone,
    and dropped: a batch never holds several big images (three of 100 MP took 1.4 GB)."""
    results: list[DecodeError | Image.Image | tuple[np.ndarray, Box | None] | str] = []
    sizes: list[tuple[int, int]] = []
    for candidate, source in zip(batch, sources or [None] * len(batch), strict=True):
        decoded = _decode_one(embedder, candidate, source)
        if isinstance(decoded, Image.Image):
            sizes.append(decoded.info.get(FULL_SIZE, decoded.size))
            if decoded.width * decoded.height > config.BATCH_IMAGE_PIXELS:
                results.append(_describe(embedder, [decoded])[0])
                continue
        else:
            sizes.append((0, 0))
        results.append(decoded)
    waiting = [(i, r) for i, r in enumerate(results) if isinstance(r, Image.Image)]
    if waiting:
        described = _describe(embedder, [image for _, image in waiting])
        for (i, _), found in zip(waiting, described, strict=True):
            results[i] = found
    outcomes = []
    for candidate, result, (width, height) in zip(batch, results, sizes, strict=True):
        if isinstance(result, DecodeError):
            outcome = _Outcome(candidate, None, reason=result.reason, transient=result.transient)
        elif isinstance(result, str):
            outcome = _Outcome(candidate, None, reason=result, transient=True)
        else:
            assert isinstance(result, tuple)
            outcome = _Outcome(candidate, result[0], width, height, box=result[1])
        outcomes.append(outcome)
    return outcomes


def _in_order(
    pool: ThreadPoolExecutor, embedder: Embedder, batches: list[list[Candidate]], ahead: int
) -> Iterator[list[_Outcome]]:
    """Like pool.map, but with at most ``ahead`` batches in flight: bounded memory."""
    pending: deque[Future[list[_Outcome]]] = deque()
    remaining = iter(batches)
    for batch in remaining:
        pending.append(pool.submit(_process_batch, embedder, batch))
        if len(pending) >= ahead:
            break
    while pending:
        yield pending.popleft().result()
        nxt = next(remaining, None)
        if nxt is not None:
            pending.append(pool.submit(_process_batch, embedder, nxt))


def run(
    store: BatchSink,
    embedder: Embedder,
    work: Plan,
    *,
    batch_size: int = config.BATCH_SIZE,
    workers: int = config.INDEX_WORKERS,
    progress: Callable[[int], None] | None = None,
) -> IndexReport:
    """Carry out a plan: embed what is new or changed, drop what vanished.

    Each of ``workers`` threads decodes a batch and runs the model on it with one core
    (``embedder`` should have ``threads=1``): on a few cores this beats one multi-threaded
    model run fed by decoding threads, whose parallel operators stall whenever a decoder
    takes their core. Batches are written in order, each in its own transaction.
    """
    started = time.perf_counter()
    report = work.report()
    if work.vanished:
        report.removed = store.remove(work.vanished)
    batches = [work.todo[i : i + batch_size] for i in range(0, len(work.todo), batch_size)]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="index") as pool:
        for outcomes in _in_order(pool, embedder, batches, ahead=2 * workers):
            store.write_batch(
                [
                    EmbeddedImage(
                        o.candidate.path,
                        o.candidate.size,
                        o.candidate.mtime_ns,
                        o.width,
                        o.height,
                        o.vector,
                        o.box,
                    )
                    for o in outcomes
                    if o.vector is not None
                ],
                [
                    SkippedFile(o.candidate.path, o.candidate.size, o.candidate.mtime_ns, o.reason)
                    for o in outcomes
                    if o.remembered
                ],
                # What failed for now is forgotten, so that the next run tries it again.
                forget=[o.candidate.path for o in outcomes if o.vector is None and o.transient],
            )
            for o in outcomes:
                if o.vector is None:
                    log.info("skipped %s: %s", printable(o.candidate.path), o.reason)
                    report.skipped.append((o.candidate.path, o.reason))
                elif o.candidate.path in work.new_paths:
                    report.added += 1
                else:
                    report.updated += 1
            if progress is not None:
                progress(len(outcomes))
    report.seconds = time.perf_counter() - started
    return report
