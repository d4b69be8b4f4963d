"""`lookalike index` over the hostile-file corpus (benchmarks/hostile_corpus.py).

    .venv/bin/python benchmarks/bench_hostile.py [--corpus DIR] [--small] [--json OUT]

Checks, and reports, in one run:

1. crashes: the exit status, tracebacks on stderr, and reasons that say "unexpected error"
   (an exception the decoder did not foresee), of a fresh `lookalike index CORPUS` process;
2. accounting: every entry the indexer should consider (an image extension, not hidden, or a
   link to a folder) is indexed or reported with a reason, and nothing else is;
3. memory: the peak resident memory of the whole run, and of a fresh `lookalike index FILE`
   process for each of the worst files (every bomb and big image), next to the same process
   on a 64 x 48 JPEG (the model and the runtime alone);
4. nothing modified: every file, link and folder of the corpus (and of the folder its links
   escape to) has the same bytes, mode and mtime before and after;
5. a re-run: nothing added, nothing removed, what is not remembered reported again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import stat
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from hostile_corpus import Entry, make_corpus

from lookalike.image.files import IMAGE_EXTENSIONS
from lookalike.store.sqlite import Store


def fingerprint(folder: Path) -> dict[bytes, tuple[object, ...]]:
    """Mode, size, mtime and content (sha256; the target for links) of everything below."""
    found: dict[bytes, tuple[object, ...]] = {}
    for top, dirs, files in os.walk(os.fsencode(folder)):
        for name in dirs + files:
            path = os.path.join(top, name)
            info = os.lstat(path)
            content: object = None
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                try:
                    with open(path, "rb") as file:
                        content = hashlib.sha256(file.read()).hexdigest()
                except PermissionError:
                    content = "unreadable"
            found[path] = (info.st_mode, info.st_size, info.st_mtime_ns, content)
    return found


def considered(entry: Entry) -> bool:
    """What `lookalike index` should account for: the rule of image.files.walk_images."""
    parts = Path(entry.path).parts
    if any(part.startswith(".") for part in parts[1:]):
        return False
    if os.path.islink(entry.path) and os.path.isdir(entry.path):
        return True
    return Path(entry.path).suffix.lower() in IMAGE_EXTENSIONS


# The peak resident memory of the index process itself (VmHWM, reset at exec): rusage of a
# child would also count the pages of this process it shared before exec.
_INDEX = """
import sys
from lookalike.cli import main
code = main(sys.argv[2:])
with open("/proc/self/status") as status, open(sys.argv[1], "w") as out:
    out.write(next(line for line in status if line.startswith("VmHWM")).split()[1])
sys.exit(code)
"""


def run_index(target: Path, db: Path) -> dict[str, object]:
    """A fresh `lookalike index TARGET --json` process: its summary, stderr, peak RSS."""
    with tempfile.TemporaryDirectory() as tmp:
        peak_file = Path(tmp) / "peak"
        started = time.perf_counter()
        command = ["index", str(target), "--db", str(db), "--json"]
        done = subprocess.run(
            [sys.executable, "-c", _INDEX, str(peak_file), *command],
            capture_output=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        peak_kb = int(peak_file.read_text()) if peak_file.exists() else 0
    stdout, stderr = done.stdout.decode(), done.stderr.decode(errors="replace")
    summary = json.loads(stdout) if done.returncode == 0 and stdout.strip() else {}
    return {
        "exit": done.returncode,
        "seconds": round(seconds, 2),
        "peak_rss_mb": round(peak_kb / 1024),
        "summary": summary,
        "stderr": stderr,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=None, help="where to write the corpus")
    parser.add_argument("--small", action="store_true", help="the tests' small corpus")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hostile-"))
    corpus = args.corpus or work / "corpus"
    started = time.perf_counter()
    entries = make_corpus(corpus, small=args.small)
    made_in = time.perf_counter() - started
    outside = corpus.parent / (corpus.name + "-outside")
    before = {**fingerprint(corpus), **fingerprint(outside)}

    first = run_index(corpus, work / "c.db")
    summary: dict = first["summary"]  # type: ignore[assignment]
    skipped = {item["path"]: item["reason"] for item in summary.get("skipped", [])}
    store = Store(work / "c.db")
    indexed = {path for path, state in store.file_states().items() if not state.skipped}
    remembered = {s.path for s in store.skipped_files()}
    store.close()
    expected = {e.path for e in entries if considered(e)}
    accounted = indexed | set(skipped) | remembered
    missing = sorted(expected - accounted)
    unexpected = sorted(accounted - expected)
    unexpected_errors = {p: r for p, r in skipped.items() if "unexpected error" in r}
    second = run_index(corpus, work / "c.db")
    again: dict = second["summary"]  # type: ignore[assignment]

    worst = [e for e in entries if e.kind == "bomb"]
    worst += [e for e in entries if e.kind == "good" and "grey16" in e.path]
    baseline = run_index(Path(next(e.path for e in entries if e.kind == "name")), work / "b.db")
    per_file = []
    for number, entry in enumerate(worst):
        result = run_index(Path(entry.path), work / f"w{number}.db")
        report: dict = result["summary"]  # type: ignore[assignment]
        outcome = (
            "indexed"
            if report.get("added")
            else "; ".join(s["reason"] for s in report.get("skipped", [])) or "?"
        )
        per_file.append(
            {
                "file": Path(entry.path).name,
                "bytes": os.path.getsize(entry.path),
                "exit": result["exit"],
                "seconds": result["seconds"],
                "peak_rss_mb": result["peak_rss_mb"],
                "outcome": outcome[:110],
            }
        )
    per_file.sort(key=lambda r: -int(r["peak_rss_mb"]))  # type: ignore[call-overload]
    after = {**fingerprint(corpus), **fingerprint(outside)}
    changed = sorted(
        os.fsdecode(p) for p in before.keys() | after.keys() if before.get(p) != after.get(p)
    )

    reasons = Counter(_reason_kind(r) for r in skipped.values())
    figures = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "entries": len(entries),
        "kinds": dict(Counter(e.kind for e in entries)),
        "corpus_seconds": round(made_in, 1),
        "considered": len(expected),
        "run": {k: v for k, v in first.items() if k not in ("summary", "stderr")},
        "indexed": len(indexed),
        "reported": len(skipped),
        "remembered_as_bad": len(remembered),
        "missing": missing,
        "unexpected": unexpected,
        "tracebacks": first["stderr"].count("Traceback"),  # type: ignore[attr-defined]
        "stderr_lines": len(first["stderr"].splitlines()),  # type: ignore[attr-defined]
        "unexpected_errors": unexpected_errors,
        "reasons": dict(reasons.most_common()),
        "rerun": {
            "exit": second["exit"],
            "seconds": second["seconds"],
            "added": again.get("added"),
            "updated": again.get("updated"),
            "removed": again.get("removed"),
            "unchanged": again.get("unchanged"),
            "reported_again": len(again.get("skipped", [])),
        },
        "baseline_process": {"peak_rss_mb": baseline["peak_rss_mb"], "exit": baseline["exit"]},
        "worst_files": per_file,
        "modified": changed,
    }
    _print(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))


def _reason_kind(reason: str) -> str:
    """Reasons without their details (sizes, offsets), to count them."""
    for prefix in ("corrupt image data", "truncated image data", "unsupported image format"):
        if reason.startswith(prefix):
            return prefix
    return reason.split(":")[0].split(" (")[0]


def _print(f: dict) -> None:  # type: ignore[type-arg]
    run = f["run"]
    print(f"machine: {f['machine']}")
    print(f"corpus: {f['entries']} entries {f['kinds']}, made in {f['corpus_seconds']} s")
    print(
        f"index: exit {run['exit']}, {run['seconds']} s, peak RSS {run['peak_rss_mb']} MB, "
        f"tracebacks {f['tracebacks']}, stderr lines {f['stderr_lines']}, "
        f"unexpected errors {len(f['unexpected_errors'])}"
    )
    print(
        f"accounting: {f['considered']} to account for: {f['indexed']} indexed, "
        f"{f['reported']} reported with a reason ({f['remembered_as_bad']} remembered as bad); "
        f"missing {len(f['missing'])}, unexpected {len(f['unexpected'])}"
    )
    for path in f["missing"][:10] + f["unexpected"][:10]:
        print(f"  ! {path!r}")
    print("reasons:")
    for reason, count in f["reasons"].items():
        print(f"  {count:5}  {reason}")
    print(f"re-run: {f['rerun']}")
    print(
        f"baseline process (one 64 x 48 JPEG): peak RSS {f['baseline_process']['peak_rss_mb']} MB"
    )
    print("worst files, each in a fresh `lookalike index FILE` process:")
    for row in f["worst_files"]:
        print(
            f"  {row['peak_rss_mb']:5} MB {row['seconds']:6.1f} s exit {row['exit']}  "
            f"{row['file']} ({row['bytes']} bytes): {row['outcome']}"
        )
    print(f"modified: {len(f['modified'])} {f['modified'][:5]}")


if __name__ == "__main__":
    main()
