"""The core install stays small; the server and the plots are extras, and a command that needs
a missing extra says which. "Missing" is made real: the extra's modules cannot be imported in
a child process (a meta-path finder refuses them, as if they were not installed)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from lookalike.extras import EXTRAS, MissingExtraError, require

ROOT = Path(__file__).parent.parent

#: Runs lookalike's CLI with some top-level modules made unimportable.
WITHOUT = """
import sys
blocked = set(sys.argv[1].split(","))

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in blocked:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, Refuse())
from lookalike.cli import main
code = main(sys.argv[2:])
assert not blocked & {m.split(".")[0] for m in sys.modules}, "a blocked module was imported"
sys.exit(code)
"""

SERVE_AND_PLOTS = ",".join(EXTRAS["serve"] + EXTRAS["plots"])


def run_without(blocked: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", WITHOUT, blocked, *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_core_needs_no_extra(photos: Path, panda_query: Path, tmp_path: Path) -> None:
    db = str(tmp_path / "c.db")
    done = run_without(SERVE_AND_PLOTS, "index", str(photos / "panda"), "--db", db)
    assert done.returncode == 0, done.stderr
    done = run_without(
        SERVE_AND_PLOTS, "search", str(panda_query), "--db", db, "-k", "2", "--plot",
        str(tmp_path / "r.png"),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("/panda/") == 2 and (tmp_path / "r.png").is_file()


def test_serve_without_its_extra_names_it(photos: Path, tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    assert run_without("", "index", str(photos / "panda"), "--db", str(db)).returncode == 0
    for module in ("fastapi", "uvicorn"):
        done = run_without(module, "serve", "--db", str(db))
        assert done.returncode == 2
        assert done.stderr.strip() == (
            "error: lookalike serve needs the 'serve' extra: "
            f"pip install 'lookalike[serve]' (missing: {module})"
        )


def test_eval_plot_without_its_extra_names_it_before_evaluating(
    photos: Path, tmp_path: Path
) -> None:
    done = run_without("matplotlib", "eval", str(photos), "--plot", str(tmp_path / "pr.png"))
    assert done.returncode == 2
    assert "pip install 'lookalike[plots]' (missing: matplotlib)" in done.stderr
    assert done.stdout == ""  # refused before the evaluation, not after


def test_require_passes_when_installed() -> None:
    require("serve", "test")  # the dev install has every extra
    require("plots", "test")
    with pytest.raises(MissingExtraError, match=r"lookalike\[serve\]"):
        raise MissingExtraError("serve", "x", "fastapi")


def test_pyproject_keeps_the_core_small() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for heavy in ("fastapi", "uvicorn", "matplotlib", "swagger", "multipart"):
        assert heavy not in core
    extras = project["optional-dependencies"]
    assert any("fastapi" in d for d in extras["serve"])
    assert any("matplotlib" in d for d in extras["plots"])
    assert extras["all"] == ["lookalike[serve,plots,lite1,lite2,parquet]"]
    # the README's first command installs them all
    assert any(d.startswith("lookalike[all") for d in extras["dev"])
