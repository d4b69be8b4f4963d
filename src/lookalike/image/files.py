"""File names as the operating system gives them, and as people can read them.

On POSIX a file name is bytes; Python decodes the bytes that are not UTF-8 into lone
surrogates (``os.fsdecode``: ``b"bad\\xff.jpg"`` -> ``"bad\\udcff.jpg"``), which round-trip
to the exact name but cannot be printed or encoded as UTF-8. lookalike keeps such names as
they are everywhere (the store keeps their bytes) and converts them only for display.

Also: paths as a user types them (``~`` expanded, made absolute, checked to exist), and the
walk of folders that finds the image files to index (:func:`candidates_for`).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lookalike.errors import MissingPathError

log = logging.getLogger(__name__)


def printable(path: str) -> str:
    """``path`` with the bytes that are not UTF-8 shown as ``\\xNN`` (always encodable)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        try:
            return os.fsencode(path).decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # surrogates that no file name decodes to
            return path.encode("utf-8", "backslashreplace").decode("utf-8")
    return path


def one_line(path: str) -> str:
    """:func:`printable`, with control characters (a newline in a file name) written as
    escapes too, so that one file is always one line of text output."""
    shown = printable(path)
    if shown.isprintable():
        return shown
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in shown)


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """Absolute paths with ``~`` expanded; a lone string is one path, not its characters."""
    if isinstance(paths, str | os.PathLike):
        paths = [paths]
    return [os.path.abspath(os.path.expanduser(os.fspath(p))) for p in paths]


def existing_paths(paths: Iterable[str | os.PathLike[str]]) -> list[str]:
    """:func:`expand_paths`, raising :class:`MissingPathError` for any that does not exist."""
    expanded = expand_paths(paths)
    missing = [p for p in expanded if not os.path.lexists(p)]
    if missing:
        raise MissingPathError(missing)
    return expanded


#: Files considered when walking a folder. Decoding is by content, whatever the name says;
#: the extension only decides which files in a folder are candidates at all, so that
#: sidecars (.xmp, .json, .txt) are not reported as bad images. ``all_files=True`` widens it.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".gif", ".bmp", ".dib", ".tif", ".tiff"}
    | {".heic", ".heif", ".hif", ".avif"}
)


@dataclass(frozen=True)
class Candidate:
    """A file to index; ``problem`` says why it cannot be read at all (a broken symbolic
    link, a FIFO...): such a file is reported, never opened, and never remembered."""

    path: str
    size: int
    mtime_ns: int
    problem: str | None = None


def walk_images(
    root: Path, *, all_files: bool = False, left_out: Counter[str] | None = None
) -> Iterator[Candidate]:
    """Files below ``root``, recursively, skipping hidden files and folders.

    Symbolic links to files are followed, links to folders are not (no cycles) and are
    reported. What cannot be an image file (a broken link, a link loop, a FIFO, a socket, a
    device) is yielded with its ``problem`` when its name passes the extension filter.
    Regular files left out because of their extension are counted in ``left_out``
    (extension -> count), so that a summary can say so.
    """
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            log.warning("cannot list %s: %s", folder, exc)
            continue
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith("."):
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                    continue
            except OSError as exc:
                log.warning("cannot stat %s: %s", entry.path, exc)
                continue
            suffix = Path(entry.name).suffix.lower()
            wanted = all_files or suffix in IMAGE_EXTENSIONS
            found = _candidate(entry.path)
            if wanted or found.problem == _FOLDER_LINK:
                yield found
            elif left_out is not None and found.problem is None:
                left_out[suffix or "(none)"] += 1


_FOLDER_LINK = "symbolic link to a folder (not followed)"


def _candidate(path: str) -> Candidate:
    """What ``path`` is, following a symbolic link: a regular file, or a problem."""
    path = os.path.abspath(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        return Candidate(path, -1, -1, problem=_stat_problem(path, exc))
    except ValueError:  # an embedded NUL byte
        return Candidate(path, -1, -1, problem="invalid file name")
    if stat.S_ISDIR(info.st_mode):
        return Candidate(path, -1, -1, problem=_FOLDER_LINK)
    if not stat.S_ISREG(info.st_mode):
        kind = "FIFO" if stat.S_ISFIFO(info.st_mode) else "socket or device"
        return Candidate(path, -1, -1, problem=f"not a regular file ({kind})")
    return Candidate(path, info.st_size, info.st_mtime_ns)


def _stat_problem(path: str, exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symbolic link loop"
    if isinstance(exc, FileNotFoundError | NotADirectoryError) and os.path.islink(path):
        return f"broken symbolic link (to {printable(os.readlink(path))!r})"
    if isinstance(exc, FileNotFoundError | NotADirectoryError):
        return "file not found"
    if isinstance(exc, PermissionError):
        return "permission denied"
    return f"cannot read file: {exc.strerror or exc}"


def candidates_for(
    paths: Iterable[str | os.PathLike[str]],
    *,
    all_files: bool = False,
    left_out: Counter[str] | None = None,
) -> tuple[list[Candidate], list[str]]:
    """Expand files and folders into candidates; also return the folders, made absolute."""
    found: list[Candidate] = []
    folders: list[str] = []
    for raw in paths:
        path = Path(os.path.abspath(raw))
        if path.is_dir():
            folders.append(str(path))
            found.extend(walk_images(path, all_files=all_files, left_out=left_out))
        else:
            found.append(_candidate(str(path)))
    return found, folders


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` runs on this machine: files named after the process that
    writes them (an index save's, an upload's) are abandoned once it is gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
