"""Background jobs: indexing server-side folders, one job after the other."""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from lookalike import config
from lookalike.errors import Conflict
from lookalike.service.schemas import JobInfo, JobState

log = logging.getLogger(__name__)


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

    def __init__(
        self,
        run: Callable[[Job], dict[str, Any]],
        *,
        history: int = 200,
        max_queued: int = config.MAX_QUEUED_JOBS,
    ) -> None:
        self._run = run
        self._history = history
        self._max_queued = max_queued
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._work, name="jobs", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> Job:
        """Queue ``job``; :class:`Conflict` when :data:`config.MAX_QUEUED_JOBS` wait already."""
        with self._lock:
            waiting = sum(j.state in ("queued", "running") for j in self._jobs.values())
            if waiting >= self._max_queued:
                raise Conflict(f"{waiting} indexing jobs are queued or running: try again later")
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
