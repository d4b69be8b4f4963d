"""Indexing on a Ray cluster: ``lookalike index DIR --ray [ADDRESS]``.

The driver (this process) plans as the local indexer does (what is new, changed, gone: the
store decides, see :func:`lookalike.pipeline.indexer.plan`) and writes every result; only
decoding and embedding run on Ray: a pool of actors (:class:`EmbedWorker`), each holding one
ONNX session on one core, is given chunks of the plan (``config.RAY_BATCHES`` write batches
each), a few in flight per actor. Results are written in the plan's order, batch by batch,
each batch one transaction, exactly like :func:`lookalike.pipeline.indexer.run`: bad files are
reported with their reason, and a killed run resumes without redoing committed batches.

**Joining a cluster.** ``ADDRESS`` is anything ``ray.init`` takes: ``auto`` (the cluster of
this node), ``HOST:PORT`` (the head's GCS port), ``ray://HOST:10001`` (Ray Client); without
one, ``RAY_ADDRESS`` if set (as under ``ray job submit``), else a local Ray on this machine's
cores. Token authentication is Ray's own (``RAY_AUTH_MODE=token``, the token in
``RAY_AUTH_TOKEN`` or the file ``RAY_AUTH_TOKEN_PATH``, default ``~/.ray/auth_token``); what is
missing is named in one line (:class:`RayUnavailable`). The pool starts in the background
(:func:`start`) while the driver plans.

**Files.** A worker reads a file by its path when it sees it there with the size and
modification time the driver planned with (a shared or replicated file system). A worker that
does not (another machine, a folder on the driver's laptop) says so, and from then on the
driver sends it the files' bytes, at most ``config.RAY_SENT_BYTES`` in flight.

**A lost worker** (its process killed, its node gone): the chunks it held are sent again to
another worker, at most ``config.RAY_RETRIES`` times, and the lost worker is replaced. As
results are written only by the driver, once per chunk and in order, every file is written
once; the report lists what was sent again (:attr:`IndexReport.retried`).
"""

from __future__ import annotations

import heapq
import logging
import os
import socket
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO, cast

import numpy as np
import ray
from ray.exceptions import (
    AuthenticationError,
    ObjectLostError,
    RayActorError,
    WorkerCrashedError,
)

from lookalike import config
from lookalike.encode.encoders import load_encoder
from lookalike.encode.models import Embedder, ModelSpec
from lookalike.errors import Unavailable
from lookalike.image.decode import DecodeError, read_file
from lookalike.image.files import Candidate, printable
from lookalike.pipeline.indexer import BatchSink, IndexReport, Plan, Source, _process_batch
from lookalike.store.records import EmbeddedImage, SkippedFile

log = logging.getLogger(__name__)

#: What a lost worker raises to the driver: its process or node died, or the result it held.
_LOST = (RayActorError, ObjectLostError, WorkerCrashedError)


class RayUnavailable(Unavailable, ConnectionError):
    """The Ray cluster cannot be joined, or no worker can start on it; says what is missing."""


# --- joining a cluster ----------------------------------------------------------------------


def describe(address: str | None) -> str:
    """Where ``--ray ADDRESS`` runs, in words."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    return "a local Ray" if address is None else f"the Ray cluster at {address}"


#: Ray's setting (read from the environment) of how many seconds to try reaching the head.
_CONNECT_WAIT = "RAY_gcs_server_port_wait_time_s"


def connect(address: str | None) -> bool:
    """Join the Ray cluster at ``address`` (None or "": ``RAY_ADDRESS``, else start a local
    Ray on all cores); True if a local Ray was started. Ray's own log lines go to Python
    logging (``ray``), not to a handler of Ray's; the workers' output stays in the cluster's
    log files."""
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    _check_reachable(address)
    _read_auth_settings()
    # A head given by address is tried RAY_CONNECT_ATTEMPTS times (a second apart), not 20
    # (a local Ray's start, which reads the same setting, keeps Ray's default).
    attempts = (
        os.environ.setdefault(_CONNECT_WAIT, str(config.RAY_CONNECT_ATTEMPTS))
        if address is not None
        else None
    )
    try:
        ray.init(
            address=address,
            log_to_driver=False,
            include_dashboard=False,
            configure_logging=False,
        )
    except AuthenticationError as exc:  # token mode on here, but no token
        raise RayUnavailable(_no_token(describe(address))) from exc
    except ConnectionError as exc:
        raise RayUnavailable(_connect_error(describe(address), exc)) from exc
    except ModuleNotFoundError as exc:  # ray:// needs Ray Client's grpcio
        raise RayUnavailable(
            f"{address} needs Ray Client: pip install 'lookalike[ray]' ({exc})"
        ) from exc
    finally:
        if attempts is not None and os.environ.get(_CONNECT_WAIT) == attempts:
            os.environ.pop(_CONNECT_WAIT)
    return address is None


def _read_auth_settings() -> None:
    """Make Ray read ``RAY_AUTH_MODE`` and the token now, as its own ``ray start`` does after
    changing them: it reads them when imported and keeps the token, so that settings made
    after ``import ray`` (in a notebook, a test) would be ignored. (Ray's internals, pinned
    by the extra's exact version.)"""
    from ray._raylet import AuthenticationTokenLoader, Config  # type: ignore[attr-defined]

    Config.initialize("")
    AuthenticationTokenLoader.instance().reset_cache()


def _check_reachable(address: str | None) -> None:
    """A head given as HOST:PORT or ray://HOST:PORT answers on its port (``ray.init`` would
    try for minutes)."""
    scheme, _, rest = (address or "").rpartition("://")
    host, _, port = rest.rpartition(":")
    if scheme not in ("", "ray") or not host or not port.isdigit():  # auto, or none: Ray's
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise RayUnavailable(
            f"cannot join {describe(address)}: nothing answers there ({exc.strerror or exc}); "
            "is `ray start --head` running, and its port reachable from here?"
        ) from exc


def _token_source() -> str:
    """Where Ray looks for this process's token, the way its loader does."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return "RAY_AUTH_TOKEN"
    return os.environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")


def _no_token(where: str) -> str:
    return (
        f"cannot join {where}: RAY_AUTH_MODE=token but no token was found; set "
        "RAY_AUTH_TOKEN, or put the token (`ray get-auth-token` on the head) in the file "
        "RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
    )


def _connect_error(where: str, exc: BaseException) -> str:
    """One line saying why ``ray.init`` could not join: Ray's error names the cause only
    deep in its chain (an AuthenticationError in the text of a RuntimeError)."""
    chain = ""
    cause: BaseException | None = exc
    while cause is not None:
        chain += f"{type(cause).__name__}: {cause}\n"
        cause = cause.__cause__
    if "InvalidAuthToken" in chain or "AuthenticationError" in chain:
        if os.environ.get("RAY_AUTH_MODE", "").lower() != "token":
            return (
                f"cannot join {where}: it requires token authentication; set "
                "RAY_AUTH_MODE=token and give its token (`ray get-auth-token` on the head) in "
                "RAY_AUTH_TOKEN or in the file RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
            )
        return (
            f"cannot join {where}: it refused the token from {_token_source()}; give the "
            "cluster's token (`ray get-auth-token` on the head)"
        )
    if "ray client connection timeout" in chain:  # its port answers (checked): a refusal
        return (
            f"cannot join {where}: its Ray Client server did not let this process in; if the "
            "cluster uses token authentication, set RAY_AUTH_MODE=token and give its token "
            "(`ray get-auth-token` on the head) in RAY_AUTH_TOKEN or in the file "
            "RAY_AUTH_TOKEN_PATH (default ~/.ray/auth_token)"
        )
    return f"cannot join {where}: {exc}"


@contextmanager
def output_aside(verbose: bool) -> Iterator[TextIO]:
    """Keep Ray's own messages out of the command's output. Always: its reports of dead
    workers, which a thread of Ray's prints to stdout, where results go (lookalike's log
    says what was lost and sent again). Unless ``verbose``: its Python loggers below ERROR,
    its Python warnings, and what its C++ core writes to the stderr file descriptor
    (warnings while joining, errors when a worker dies), which goes to a log file instead,
    named on stderr if the block fails. Yields the terminal's stderr: meanwhile also
    ``sys.stderr`` and the stream of the root logger's console handlers."""
    # Ray's switch (its debugger's) for those reports (Ray's internals, pinned by the extra).
    worker_module = ray._private.worker
    worker_module._worker_logs_enabled = False
    try:
        if verbose:
            yield sys.stderr
        else:
            with warnings.catch_warnings(), _stderr_aside() as terminal:
                warnings.filterwarnings("ignore", module=r"ray(\.|$)")  # Ray Client's...
                yield terminal
    finally:
        worker_module._worker_logs_enabled = True


@contextmanager
def _stderr_aside() -> Iterator[TextIO]:
    ray_logger = logging.getLogger("ray")
    level = ray_logger.level
    ray_logger.setLevel(logging.ERROR)
    sys.stderr.flush()
    fd, log_path = tempfile.mkstemp(prefix="lookalike-ray-", suffix=".log")
    saved = os.dup(2)
    terminal = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace")
    console = [
        h
        for h in logging.getLogger().handlers
        if isinstance(h, logging.StreamHandler) and h.stream is sys.stderr
    ]
    old_stderr, sys.stderr = sys.stderr, terminal
    for handler in console:
        handler.setStream(terminal)
    os.dup2(fd, 2)
    os.close(fd)
    failed = False
    try:
        yield terminal
    except RayUnavailable:  # says all there is to say
        raise
    except BaseException:
        failed = True
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        for handler in console:
            handler.setStream(old_stderr)
        sys.stderr = old_stderr
        terminal.close()
        ray_logger.setLevel(level)
        if failed and os.path.getsize(log_path):
            print(f"Ray's own messages: {log_path}", file=sys.stderr)
        else:
            os.unlink(log_path)


# --- the workers ----------------------------------------------------------------------------


class EmbedWorker:
    """One Ray actor: one ONNX session on one core, reused for every chunk it is given."""

    def __init__(self, spec: ModelSpec) -> None:
        self.embedder = cast(Embedder, load_encoder(spec, threads=1))

    def node(self) -> str:
        """The node this worker runs on (the driver's first call: it waits for the start)."""
        return str(ray.get_runtime_context().get_node_id())

    def embed(self, rows: list[Candidate], sources: list[Source]) -> dict[str, np.ndarray]:
        """Decode and embed ``rows``; ``sources[i]``: the file's bytes sent by the driver, or
        None to read it here. Files that are not here as the driver saw them (missing,
        another size or time) come back as ``unseen`` indices, and nothing is embedded."""
        unseen = [
            i
            for i, (row, source) in enumerate(zip(rows, sources, strict=True))
            if source is None and row.problem is None and not _here(row)
        ]
        if unseen:
            return {"unseen": np.array(unseen, dtype=np.int64)}
        cpu = time.process_time()
        outcomes = _process_batch(self.embedder, rows, sources)
        dims = next((len(o.vector) for o in outcomes if o.vector is not None), 0)
        cpu = time.process_time() - cpu
        return {
            # this worker's CPU seconds for the chunk, shared out over its rows (the cost of
            # an image on a worker, whatever else the machine runs)
            "cpu_s": np.full(len(outcomes), cpu / max(1, len(outcomes))),
            "path": np.array([r.path for r in rows], dtype=object),
            "size": np.array([r.size for r in rows], dtype=np.int64),
            "mtime_ns": np.array([r.mtime_ns for r in rows], dtype=np.int64),
            "ok": np.array([o.vector is not None for o in outcomes]),
            "vector": np.stack(
                [o.vector if o.vector is not None else np.zeros(dims, np.float32) for o in outcomes]
            ),
            "width": np.array([o.width for o in outcomes], dtype=np.int64),
            "height": np.array([o.height for o in outcomes], dtype=np.int64),
            "box": np.array([o.box or (-1.0, -1.0, -1.0, -1.0) for o in outcomes], np.float32),
            "reason": np.array([o.reason for o in outcomes], dtype=object),
            "transient": np.array([o.transient for o in outcomes]),
        }


def _here(row: Candidate) -> bool:
    """Whether this machine has the driver's file: the same path, size and time."""
    try:
        found = os.stat(row.path)
    except (OSError, ValueError):
        return False
    return (found.st_size, found.st_mtime_ns) == (row.size, row.mtime_ns)


@dataclass
class _Worker:
    actor: Any  # a Ray actor handle of EmbedWorker
    starting: Any  # the ref of its first call (node()) until it answers, then None
    node: str = ""
    busy: int = 0
    #: it cannot see the driver's files: send it their bytes
    sends_bytes: bool = False


class RayWorkers:
    """A pool of :class:`EmbedWorker` actors, started in the background: joining the cluster
    and starting the actors (each loads its model) overlap the driver's planning."""

    def __init__(self, spec: ModelSpec, address: str | None, size: int | None = None) -> None:
        self.spec = spec
        self.address = address
        self.where = describe(address)
        self.workers: list[_Worker] = []
        self.lost = 0
        self.failed_starts = 0
        self._size = size
        self._error: BaseException | None = None
        self._done = threading.Event()
        self._started = time.perf_counter()
        self._thread = threading.Thread(target=self._start, name="ray-start", daemon=True)
        self._thread.start()

    def _start(self) -> None:
        started_ray = False
        try:
            started_ray = connect(self.address)
            log.info("Ray: joined %s in %.1f s", self.where, time.perf_counter() - self._started)
            size = self._size or max(1, int(ray.cluster_resources().get("CPU", 1)))
            self._actor_class = ray.remote(num_cpus=1, max_restarts=0, max_task_retries=0)(
                EmbedWorker
            )
            self.workers = [self._new_worker() for _ in range(size)]
        except BaseException as exc:  # raised again by wait(), on the caller's thread
            self._error = exc
        finally:
            self._done.set()
        if started_ray:
            # A local Ray's processes are killed when the thread that started them ends (Ray
            # sets PR_SET_PDEATHSIG), so this one stays until the process ends.
            threading.Event().wait()

    def _new_worker(self) -> _Worker:
        actor = self._actor_class.remote(self.spec)
        return _Worker(actor, actor.node.remote())  # type: ignore[attr-defined]

    def wait(self) -> None:
        """Wait until the cluster is joined and a first worker has started."""
        self._done.wait()
        if self._error is not None:
            raise self._error
        if any(w.starting is None for w in self.workers):
            return  # (waited for already: the command waits before its progress bar)
        while not any(w.starting is None for w in self.workers):
            self.note_started(timeout=config.RAY_START_SECONDS, at_least=1)
        log.info(
            "Ray: %d workers on %s, the first ready after %.1f s",
            len(self.workers),
            self.where,
            time.perf_counter() - self._started,
        )

    def note_started(self, timeout: float, at_least: int = 0) -> None:
        """Note the workers that have started (waiting up to ``timeout`` for ``at_least``
        of them); replace those that could not start (their node lost)."""
        starting = {w.starting: w for w in self.workers if w.starting is not None}
        if not starting:
            return
        ready, _ = ray.wait(
            list(starting), num_returns=min(at_least, len(starting)) or 1, timeout=timeout
        )
        if at_least and not ready:
            raise RayUnavailable(
                f"no Ray worker started on {self.where} in {timeout:.0f} s "
                f"(does the cluster have a free CPU?)"
            )
        for ref in ready:
            worker = starting[ref]
            try:
                worker.node = ray.get(ref)
            except _LOST as exc:
                self.failed_starts += 1
                if (
                    isinstance(exc, RayActorError) and exc.actor_init_failed
                ) or self.failed_starts > len(self.workers) + config.RAY_RETRIES:
                    raise RayUnavailable(
                        f"the Ray workers on {self.where} cannot start: {_last_line(exc)} "
                        "(every node needs lookalike installed, the driver's version, with "
                        "its model package)"
                    ) from exc
                self.replace(worker, f"could not start ({_last_line(exc)})")
                continue
            worker.starting = None

    def replace(self, worker: _Worker, why: str) -> None:
        self.lost += 1
        # INFO: the report says what was sent again (its summary line, not through the bar)
        log.info("a Ray worker (on node %s) %s; starting another", worker.node[:8], why)
        ray.kill(worker.actor, no_restart=True)
        self.workers[self.workers.index(worker)] = self._new_worker()

    def close(self) -> None:
        """Stop the actors (their CPUs go back to the cluster)."""
        self._done.wait()
        for worker in self.workers:
            ray.kill(worker.actor, no_restart=True)
        self.workers = []
        if _started.get((self.spec, self.address)) is self:
            del _started[(self.spec, self.address)]


def _last_line(exc: BaseException) -> str:
    """The last line of a Ray error: the exception a worker raised, after its traceback."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


_started: dict[tuple[ModelSpec, str | None], RayWorkers] = {}


def start(spec: ModelSpec, address: str | None) -> RayWorkers:
    """Start joining the cluster and the workers in the background; :func:`run` with the
    same model and address takes them over (``lookalike index`` starts them before it plans)."""
    key = (spec, address or None)
    if key not in _started:
        _started[key] = RayWorkers(spec, address or None)
    return _started[key]


# --- the run --------------------------------------------------------------------------------


@dataclass
class _Chunk:
    number: int
    rows: list[Candidate]
    tries: int = 0
    #: the files' bytes (or why the driver could not read them) once a worker needed them
    sources: list[Source] | None = None


@dataclass
class _Sent:
    chunk: _Chunk
    worker: _Worker
    sent_bytes: int


@dataclass
class _Progress:
    """The dispatch loop's state: chunks to send (a heap by number: those sent again go
    first), in flight, done (waiting for their turn to be written)."""

    todo: list[tuple[int, _Chunk]]
    in_flight: dict[Any, _Sent] = field(default_factory=dict)  # result ref -> what was sent
    done: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    next_to_write: int = 0
    sent_bytes: int = 0
    worker_cpu_s: float = 0.0


def run(
    store: BatchSink,
    spec: ModelSpec,
    work: Plan,
    *,
    address: str | None = None,
    batch_size: int = config.BATCH_SIZE,
    actors: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> IndexReport:
    """Carry out a plan with decoding and embedding on Ray; ``actors`` defaults to one per
    CPU of the cluster (or the workers :func:`start` began for this model and address)."""
    started = time.perf_counter()
    report = work.report()
    if work.vanished:
        report.removed = store.remove(work.vanished)
    if not work.todo:
        report.seconds = time.perf_counter() - started
        return report
    pool = _started.pop((spec, address or None), None) if actors is None else None
    pool = pool or RayWorkers(spec, address, actors)
    try:
        pool.wait()
        state = _dispatch(pool, store, work, report, batch_size, progress)
    finally:
        pool.close()
    report.seconds = time.perf_counter() - started
    log.info(
        "Ray: %d files decoded and embedded in %.1f s, %.2f CPU s on the workers",
        len(work.todo),
        report.seconds,
        state.worker_cpu_s,
    )
    return report


def _chunks(work: Plan, size: int) -> list[tuple[int, _Chunk]]:
    """The plan cut in chunks, as a heap (already sorted)."""
    rows = work.todo
    return [
        (number, _Chunk(number, rows[start : start + size]))
        for number, start in enumerate(range(0, len(rows), size))
    ]


def _dispatch(
    pool: RayWorkers,
    store: BatchSink,
    work: Plan,
    report: IndexReport,
    batch_size: int,
    progress: Callable[[int], None] | None,
) -> _Progress:
    """Send chunks to the workers, a few in flight each, and write their results in order."""
    state = _Progress(_chunks(work, config.RAY_BATCHES * batch_size))
    total = len(state.todo)
    while state.next_to_write < total:
        pool.note_started(timeout=0)
        _send(pool, state)
        waiting = list(state.in_flight) + [w.starting for w in pool.workers if w.starting]
        if waiting:
            ray.wait(waiting, num_returns=1, timeout=config.RAY_START_SECONDS)
        if state.in_flight:
            ready, _ = ray.wait(list(state.in_flight), num_returns=len(state.in_flight), timeout=0)
            for ref in ready:
                _receive(pool, state, ref, report)
        while state.next_to_write in state.done:
            result = state.done.pop(state.next_to_write)
            state.worker_cpu_s += float(result["cpu_s"].sum())
            for start in range(0, len(result["path"]), batch_size):
                batch = {k: v[start : start + batch_size] for k, v in result.items()}
                _write(store, batch, work, report)
                if progress is not None:
                    progress(len(batch["path"]))
            state.next_to_write += 1
    return state


def _send(pool: RayWorkers, state: _Progress) -> None:
    """Give chunks to the started workers with room (least busy first), keeping the
    results held or awaited within a window (the chunk to write next always goes), and the
    bytes sent within their budget."""
    started = [w for w in pool.workers if w.starting is None]
    window = len(started) * (1 + config.RAY_QUEUED)
    while state.todo:
        chunk = state.todo[0][1]
        held = len(state.in_flight) + len(state.done)
        if chunk.number != state.next_to_write and held >= max(1, window):
            return
        worker = min(started, key=lambda w: w.busy, default=None)
        if worker is None or worker.busy > config.RAY_QUEUED:
            return
        sources = _sources_for(chunk) if worker.sends_bytes else [None] * len(chunk.rows)
        size = sum(len(s) for s in sources if isinstance(s, bytes))
        if size and state.in_flight and state.sent_bytes + size > config.RAY_SENT_BYTES:
            return
        heapq.heappop(state.todo)
        ref = worker.actor.embed.remote(chunk.rows, sources)
        state.in_flight[ref] = _Sent(chunk, worker, size)
        state.sent_bytes += size
        worker.busy += 1


def _sources_for(chunk: _Chunk) -> list[Source]:
    """The chunk's files as read by the driver, for a worker that cannot see them."""
    if chunk.sources is None:
        chunk.sources = [None if row.problem else _read(row.path) for row in chunk.rows]
    return chunk.sources


def _read(path: str) -> bytes | DecodeError:
    try:
        return read_file(path)
    except DecodeError as exc:
        return exc


def _receive(pool: RayWorkers, state: _Progress, ref: Any, report: IndexReport) -> None:
    sent = state.in_flight.pop(ref)
    sent.worker.busy -= 1
    state.sent_bytes -= sent.sent_bytes
    chunk = sent.chunk
    try:
        result = ray.get(ref)
    except _LOST as exc:
        chunk.tries += 1
        paths = [r.path for r in chunk.rows]
        if sent.worker in pool.workers:
            pool.replace(sent.worker, f"was lost ({type(exc).__name__})")
        if chunk.tries > config.RAY_RETRIES:
            log.warning("%d files lost with their Ray worker %d times", len(paths), chunk.tries)
            state.done[chunk.number] = _lost(chunk)
            return
        log.info(
            "sending %d files again (%s ... %s) after their Ray worker was lost",
            len(paths),
            printable(paths[0]),
            printable(paths[-1]),
        )
        report.retried.extend(paths)
        heapq.heappush(state.todo, (chunk.number, chunk))
        return
    if "unseen" in result:
        log.info(
            "the Ray worker on node %s cannot read the driver's files (%s...): "
            "sending it their bytes",
            sent.worker.node[:8],
            printable(chunk.rows[int(result["unseen"][0])].path),
        )
        sent.worker.sends_bytes = True
        heapq.heappush(state.todo, (chunk.number, chunk))
        return
    state.done[chunk.number] = result


def _lost(chunk: _Chunk) -> dict[str, np.ndarray]:
    """A chunk given up on: its files reported, and tried again by the next run."""
    n = len(chunk.rows)
    reason = f"its Ray worker was lost {chunk.tries} times"
    return {
        "cpu_s": np.zeros(n),
        "path": np.array([r.path for r in chunk.rows], dtype=object),
        "size": np.array([r.size for r in chunk.rows], dtype=np.int64),
        "mtime_ns": np.array([r.mtime_ns for r in chunk.rows], dtype=np.int64),
        "ok": np.zeros(n, dtype=bool),
        "vector": np.zeros((n, 0), np.float32),
        "width": np.zeros(n, dtype=np.int64),
        "height": np.zeros(n, dtype=np.int64),
        "box": np.full((n, 4), -1.0, np.float32),
        "reason": np.array([reason] * n, dtype=object),
        "transient": np.ones(n, dtype=bool),
    }


def _write(store: BatchSink, batch: dict[str, Any], work: Plan, report: IndexReport) -> None:
    embedded: list[EmbeddedImage] = []
    skipped: list[SkippedFile] = []
    forget: list[str] = []  # failed for now (not the file's fault): tried again next run
    for i, path in enumerate(batch["path"]):
        path, size, mtime = str(path), int(batch["size"][i]), int(batch["mtime_ns"][i])
        if not batch["ok"][i]:
            reason = str(batch["reason"][i])
            log.info("skipped %s: %s", path, reason)
            report.skipped.append((path, reason))
            if batch["transient"][i]:
                forget.append(path)
            elif size >= 0:
                skipped.append(SkippedFile(path, size, mtime, reason))
            continue
        box = tuple(float(v) for v in batch["box"][i])
        embedded.append(
            EmbeddedImage(
                path,
                size,
                mtime,
                int(batch["width"][i]),
                int(batch["height"][i]),
                np.asarray(batch["vector"][i], dtype=np.float32),
                None if box[0] < 0 else box,  # type: ignore[arg-type]
            )
        )
        if path in work.new_paths:
            report.added += 1
        else:
            report.updated += 1
    store.write_batch(embedded, skipped, forget=forget)
