"""Indexing on a Ray cluster: ``lookalike index DIR --ray [ADDRESS]``.

The driver (this process) plans as the local indexer does (what is new, changed, gone: the
store decides, see :func:`lookalike.pipeline.indexer.plan`) and writes every result; only
decoding and embedding run on Ray Data: a ``map_batches`` over an actor pool, each actor
holding one ONNX session on one core. Results come back in the plan's order and are written
batch by batch, each batch one transaction, exactly like :func:`lookalike.pipeline.indexer.run`:
bad files are reported with their reason, and a killed job resumes without redoing committed
batches (they are unchanged files to the next plan).

The workers open the image files by path, so every node needs read access to them at the same
paths (a shared or replicated file system); nothing else is shipped but the paths. With a
shared PostgreSQL store (``--db postgresql://...``) the driver can run anywhere that reaches
the database. Every node needs lookalike installed (the same version, with its model package).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, cast

import numpy as np
import ray

from lookalike import config
from lookalike.encode.encoders import load_encoder
from lookalike.encode.models import Embedder, ModelSpec
from lookalike.image.files import Candidate
from lookalike.pipeline.indexer import BatchSink, IndexReport, Plan, _process_batch
from lookalike.store.records import EmbeddedImage, SkippedFile

log = logging.getLogger(__name__)

#: An actor embeds this many write batches per call: fewer, larger Ray tasks (each costs a
#: scheduling round trip); what is written (and committed) stays one batch at a time.
RAY_BATCHES = 4


class _EmbedActor:
    """One Ray actor: one ONNX session on one core, reused for every batch it is given."""

    def __init__(self, spec: ModelSpec) -> None:
        self.embedder = cast(Embedder, load_encoder(spec, threads=1))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        cpu = time.process_time()
        candidates = [
            Candidate(str(p), int(s), int(m), str(problem) or None)
            for p, s, m, problem in zip(
                batch["path"], batch["size"], batch["mtime_ns"], batch["problem"], strict=True
            )
        ]
        outcomes = _process_batch(self.embedder, candidates)
        dims = next((len(o.vector) for o in outcomes if o.vector is not None), 0)
        cpu = time.process_time() - cpu
        return {
            # this actor's CPU seconds for the batch, shared out over its rows (the cost of
            # an image on a worker, whatever else the machine runs)
            "cpu_s": np.full(len(outcomes), cpu / max(1, len(outcomes))),
            "path": batch["path"],
            "size": batch["size"],
            "mtime_ns": batch["mtime_ns"],
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


def connect(address: str | None) -> None:
    """Join the Ray cluster at ``address`` (None or "": start a local one, all cores)."""
    if not ray.is_initialized():
        ray.init(address=address or None, log_to_driver=False, include_dashboard=False)
    quiet_ray_data()


def quiet_ray_data() -> None:
    """Ray Data logs every dataset's plan, start and end (and optionally its stats) to the
    console at INFO; lookalike reports its own progress, so only its warnings reach the
    console (but not the one that says progress bars are off), and its log file in Ray's
    session folder keeps everything."""
    context = ray.data.DataContext.get_current()
    context.print_on_execution_start = False
    context.enable_progress_bars = False
    context.enable_auto_log_stats = False
    for handler in logging.getLogger("ray.data").handlers:
        if isinstance(handler, logging.StreamHandler) and not isinstance(
            handler, logging.FileHandler
        ):  # the console, not the session's log file
            handler.setLevel(logging.WARNING)
            handler.addFilter(_not_progress_bar_notice)


def _not_progress_bar_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith("Progress bars disabled")


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
    CPU of the cluster."""
    started = time.perf_counter()
    report = work.report()
    if work.vanished:
        report.removed = store.remove(work.vanished)
    if not work.todo:
        report.seconds = time.perf_counter() - started
        return report
    connect(address)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # written in the plan's order
    pool = actors or max(1, int(ray.cluster_resources().get("CPU", 1)))
    rows = [
        {"path": c.path, "size": c.size, "mtime_ns": c.mtime_ns, "problem": c.problem or ""}
        for c in work.todo
    ]
    dataset = ray.data.from_items(
        rows, override_num_blocks=max(1, len(rows) // (RAY_BATCHES * batch_size))
    ).map_batches(
        _EmbedActor,
        fn_constructor_args=(spec,),
        batch_size=RAY_BATCHES * batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=min(pool, len(rows))),
        num_cpus=1,
    )
    worker_cpu_s = 0.0
    for batch in dataset.iter_batches(batch_size=batch_size, batch_format="numpy"):
        _write(store, batch, work, report)
        worker_cpu_s += float(batch["cpu_s"].sum())
        if progress is not None:
            progress(len(batch["path"]))
    report.seconds = time.perf_counter() - started
    log.info(
        "Ray: %d files decoded and embedded in %.1f s, %.2f CPU s on the workers",
        len(rows),
        report.seconds,
        worker_cpu_s,
    )
    return report


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
