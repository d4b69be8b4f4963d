"""The ``lookalike`` command: index a folder, search it by image, measure retrieval quality."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from lookalike import config

log = logging.getLogger("lookalike")


def _floats3(text: str) -> tuple[float, float, float]:
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("expected three comma-separated numbers")
    return parts[0], parts[1], parts[2]


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        default=None,
        help=f"collection file (default: $LOOKALIKE_DB or {config.default_db()})",
    )


def _add_model(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("model (new collections only)")
    group.add_argument(
        "--model",
        default=None,
        help="lite0 (default), lite1, lite2, or the path of an ONNX image model",
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
        "--pooling", choices=["avg", "gem"], default=None, help="feature-map pooling (avg)"
    )
    group.add_argument(
        "--scales",
        type=_ints,
        default=None,
        help="extra input sides whose descriptors are added, e.g. 320 or 160,320",
    )
    group.add_argument(
        "--localize",
        choices=["none", "mask", "crop"],
        default=None,
        help="find the object first: pool only its cells (mask) or re-embed it (crop)",
    )


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(",") if p.strip())


def _model_spec(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from lookalike.models import builtin_spec, onnx_spec

    options = (args.pooling, args.scales, args.localize)
    if args.model is None and options == (None, None, None):
        return None
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
    return spec.with_options(pooling=args.pooling, scales=args.scales, localize=args.localize)


def _open(args: argparse.Namespace, *, with_model: bool = False):  # type: ignore[no-untyped-def]
    from lookalike.collection import Collection

    return Collection.open(args.db, model=_model_spec(args) if with_model else None)


def _index(args: argparse.Namespace) -> int:
    with _open(args, with_model=True) as collection:
        report = _index_with_progress(collection, args.paths, args.all_files, args.batch_size)
        if args.json:
            print(json.dumps(report.as_dict()))
        else:
            _print_report(report)
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


def _print_report(report) -> None:  # type: ignore[no-untyped-def]
    print(
        f"added {report.added}, updated {report.updated}, removed {report.removed}, "
        f"unchanged {report.unchanged}, skipped {len(report.skipped)} "
        f"in {report.seconds:.1f} s ({report.images_per_second:.0f} images/s)"
    )
    for path, reason in report.skipped:
        print(f"  skipped {path}: {reason}")


def _search(args: argparse.Namespace) -> int:
    from lookalike.decode import DecodeError

    status = 0
    with _open(args) as collection:
        if len(collection) == 0:
            print(
                f"error: {collection.store.path} is empty; run `lookalike index DIR` first",
                file=sys.stderr,
            )
            return 2
        for query in args.images:
            try:
                results = collection.search(query, k=args.k, min_score=args.min_score)
            except DecodeError as exc:
                status = 1
                if args.json:
                    print(json.dumps({"query": query, "error": exc.reason, "results": []}))
                else:
                    print(f"{query}: cannot search: {exc.reason}", file=sys.stderr)
                continue
            if args.json:
                hits = [r.as_dict() for r in results]
                print(json.dumps({"query": query, "results": hits}))
            else:
                print(query)
                for rank, hit in enumerate(results, 1):
                    print(f"  {rank:>3}  {hit.score:.4f}  {hit.path}")
    return status


def _eval(args: argparse.Namespace) -> int:
    from lookalike.collection import Collection
    from lookalike.evaluate import leave_one_out, read_labels

    root = Path(args.dir)
    labels = read_labels(root, args.labels)
    with tempfile.TemporaryDirectory() as tmp:
        db = args.db or Path(tmp) / "eval.db"
        with Collection.open(db, model=_model_spec(args)) as collection:
            started = time.perf_counter()
            report = _index_with_progress(collection, [root], False, args.batch_size)
            elapsed = time.perf_counter() - started
            ids, vectors = collection.store.load_vectors()
            paths = collection.store.paths(ids)
            keep = [i for i, image_id in enumerate(ids) if paths[int(image_id)] in labels]
            scores = leave_one_out(
                vectors[keep],
                [labels[paths[int(ids[i])]] for i in keep],
                distractors=frozenset(args.distractor),
            )
            model = collection.spec.name
    result = {
        "model": model,
        **scores.as_dict(),
        "images_per_second": round(report.embedded / elapsed, 1) if report.embedded else None,
        "indexed_now": report.embedded,
        "skipped": len(report.skipped),
        "unlabelled_indexed": int(len(ids) - len(keep)),
    }
    if args.json:
        print(json.dumps(result))
    else:
        rate = result["images_per_second"]
        print(f"model         {model}")
        print(f"queries       {scores.queries} (database {scores.database})")
        print(f"mAP           {scores.mean_average_precision:.4f}")
        print(f"precision@10  {scores.precision_at_10:.4f}")
        print(f"top-1         {scores.top1_accuracy:.4f}")
        print(f"images/s      {rate if rate is not None else 'n/a (nothing new to index)'}")
    return 0


def _remove(args: argparse.Namespace) -> int:
    with _open(args) as collection:
        print(f"removed {collection.remove(args.paths)}")
    return 0


def _info(args: argparse.Namespace) -> int:
    with _open(args) as collection:
        skipped = collection.store.skipped_files()
        info = {
            "db": str(collection.store.path),
            "model": collection.spec.name,
            "images": len(collection),
            "skipped": [{"path": s.path, "reason": s.reason} for s in skipped],
        }
    if args.json:
        print(json.dumps(info))
    else:
        print(
            f"{info['db']}: {info['images']} images, model {info['model']}, "
            f"{len(skipped)} skipped files"
        )
        for s in skipped:
            print(f"  skipped {s.path}: {s.reason}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    """Index the sample collection shipped with lookalike and search it with a sample query."""
    from lookalike.collection import Collection

    sample = Path(__file__).parent / "sample"
    db = args.db or config.data_dir() / "demo.db"
    query = str(sample / "queries" / "query_panda.jpg")
    with Collection.open(db) as collection:
        report = _index_with_progress(collection, [sample / "collection"], False, 32)
        print(f"indexed {sample / 'collection'} into {db}")
        _print_report(report)
        print(f"\nquery: {query}")
        for rank, hit in enumerate(collection.search(query, k=args.k), 1):
            print(f"  {rank:>3}  {hit.score:.4f}  {os.path.relpath(hit.path, sample)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lookalike", description="Search a folder of images by image."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    commands = parser.add_subparsers(dest="command", required=True)

    p = commands.add_parser("index", help="index folders or files (incremental)")
    p.add_argument("paths", nargs="+", help="folders (walked recursively) or image files")
    _add_db(p)
    _add_model(p)
    p.add_argument(
        "--all-files",
        action="store_true",
        help="consider every file, not only image file extensions",
    )
    p.add_argument("--batch-size", type=int, default=config.BATCH_SIZE)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(run=_index)

    p = commands.add_parser("search", help="find the indexed images most like each query")
    p.add_argument("images", nargs="+", help="query image files (indexed ones too)")
    _add_db(p)
    p.add_argument("-k", type=int, default=config.DEFAULT_K, help="results per query")
    p.add_argument("--min-score", type=float, default=None, help="lowest cosine to show")
    p.add_argument("--json", action="store_true", help="one JSON line per query")
    p.set_defaults(run=_search)

    p = commands.add_parser("eval", help="leave-one-out retrieval quality on a labelled folder")
    p.add_argument("dir", help="folder of images")
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
    _add_db(p)
    _add_model(p)
    p.add_argument("--batch-size", type=int, default=config.BATCH_SIZE)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_eval)

    p = commands.add_parser("remove", help="remove files or folders from the index")
    p.add_argument("paths", nargs="+")
    _add_db(p)
    p.set_defaults(run=_remove)

    p = commands.add_parser("info", help="what a collection holds")
    _add_db(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(run=_info)

    p = commands.add_parser("demo", help="index the bundled sample photos and search them")
    _add_db(p)
    p.add_argument("-k", type=int, default=5)
    p.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.run(args))
    except (ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was indexed so far is kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
