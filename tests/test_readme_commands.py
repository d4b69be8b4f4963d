"""The README's commands are what CI runs, and its quick suite leaves out what is slow."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.conftest import SLOW_TESTS

ROOT = Path(__file__).parent.parent
README = (ROOT / "README.md").read_text()


def _two_commands() -> list[str]:
    block = README.split("## Two commands", 1)[1].split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def _collected(*args: str) -> set[str]:
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        check=True,
    )
    return {line for line in run.stdout.splitlines() if "::" in line}


def test_ci_runs_the_readmes_two_commands_as_written() -> None:
    commands = _two_commands()
    assert len(commands) == 2 and commands[1] == "scripts/test"
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    for command in commands:
        assert command in ci
    assert os.access(ROOT / "scripts" / "test", os.X_OK)


def test_the_quick_suite_leaves_out_postgresql_ray_and_the_browser() -> None:
    (quick,) = re.findall(r"^\.venv/bin/python -m pytest (-m .+)$", README, re.MULTILINE)
    selected = _collected(*shlex.split(quick))
    assert len(selected) > 300  # the unit tests are in
    slow = {
        test
        for test in selected
        if "[postgres" in test
        or test.startswith(("tests/test_ray.py", "tests/test_page.py", "tests/test_browser.py::"))
    }
    assert slow == {"tests/test_browser.py::test_a_missing_browser_skips_unless_required"}
    # a module that asks for PostgreSQL or Ray lazily (getfixturevalue), which the marking
    # by fixture cannot see, marks itself
    for module in (ROOT / "tests").glob("test_*.py"):
        text = module.read_text()
        if re.search(r"getfixturevalue\(['\"](postgres_server|pg_uri|local_ray)", text):
            assert "pytestmark = pytest.mark.integration" in text, module.name
    # the slow end-to-end tests named in conftest exist, and are left out too
    for name in SLOW_TESTS:
        module, function = name.split("::")
        assert f"def {function}(" in (ROOT / "tests" / module).read_text(), name
        assert not any(test.split("[")[0] == f"tests/{name}" for test in selected), name


def test_the_search_json_format_names_every_key(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    from lookalike.cli import main
    from tests.conftest import SAMPLE

    documented = README.split("With `search --json`, each line is", 1)[1].split("\n\n", 3)
    text = "\n".join(documented[:3])
    db = str(tmp_path / "c.db")
    assert main(["index", str(SAMPLE / "collection" / "cup"), "--db", db]) == 0
    (tmp_path / "notes.jpg").write_text("not a photo")
    query = str(SAMPLE / "queries" / "query_panda.jpg")
    capsys.readouterr()
    assert main(["search", query, str(tmp_path / "notes.jpg"), "--db", db, "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    keys = {key for line in lines for key in line}
    keys |= {key for line in lines for result in line["results"] for key in result}
    keys |= {"query_box", "reranked", "searched_categories", "predictions", "category", "box"}
    assert {"weak", "error"} <= keys
    assert [key for key in sorted(keys) if f'"{key}"' not in text and f"`{key}`" not in text] == []
