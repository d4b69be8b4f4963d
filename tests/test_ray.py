"""Indexing on a Ray cluster (``lookalike index --ray``): a real two-node cluster on this
machine, started with Ray's CLI as a user would (``ray start --head``, then ``ray start
--address``), with token authentication, each node with one CPU and a temp dir of its own.
The second node runs in a mount namespace of its own where one folder is hidden, as if on
another machine: files there are read by the driver and sent to its worker.

Required in CI (LOOKALIKE_REQUIRE_RAY=1); elsewhere skipped without the ray extra or without
``unshare`` (a mount namespace needs root or user namespaces).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from lookalike import Collection
from tests.conftest import make_image

REQUIRED = os.environ.get("LOOKALIKE_REQUIRE_RAY") == "1"

#: Every test here starts or joins a real Ray cluster (its fixture is not among
#: conftest.INTEGRATION_FIXTURES): out of the quick suite.
pytestmark = pytest.mark.integration


@dataclass(frozen=True)
class RayCluster:
    address: str
    #: ray://HOST:PORT of the head's Ray Client server; None without grpcio (ray[client])
    client_address: str | None
    temp_dir: Path
    #: a folder the second node cannot see (a tmpfs is mounted over it in its namespace)
    hidden: Path
    #: the environment a driver needs: the token, and this tree's lookalike
    env: dict[str, str]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cluster_pids(temp_dir: Path) -> list[int]:
    """The processes of the test cluster (their command lines name its temp dir) and their
    children (the workers, whose titles Ray has rewritten)."""
    parents: dict[int, int] = {}
    named: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
            parents[int(entry.name)] = int(
                (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
            )
        except (OSError, ValueError, IndexError):
            continue
        if str(temp_dir).encode() in command:
            named.add(int(entry.name))
    found = set(named)
    grew = True
    while grew:
        children = {pid for pid, parent in parents.items() if parent in found} - found
        found |= children
        grew = bool(children)
    return sorted(found)


def _title(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""


def _stop(temp_dir: Path) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = _cluster_pids(temp_dir)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        deadline = time.monotonic() + 10
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if Path(f"/proc/{p}").exists() and "Z" not in _state(p)]
            time.sleep(0.1)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayCluster]:
    try:
        import ray

        from lookalike.pipeline import ray_runner  # noqa: F401  (the ray extra)
    except ImportError as exc:
        if REQUIRED:
            raise
        pytest.skip(f"the ray extra is not installed: {exc}")
    if subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode != 0:
        if REQUIRED:
            raise RuntimeError("`unshare -m` cannot make a mount namespace here")
        pytest.skip("`unshare -m` cannot make a mount namespace here")
    temp_dir = tmp_path_factory.mktemp("ray")
    hidden = temp_dir / "driver-only"
    hidden.mkdir()
    token = temp_dir / "token"
    token.write_text(secrets.token_hex(32))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token),
        "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    }
    env.pop("RAY_ADDRESS", None)
    ray_cli = str(Path(sys.executable).parent / "ray")
    port = _free_port()
    address = f"127.0.0.1:{port}"

    def node_ports() -> list[str]:
        return [
            f"--dashboard-agent-listen-port={_free_port()}",
            f"--metrics-export-port={_free_port()}",
        ]

    head = [
        ray_cli, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1",
        "--num-cpus=1", f"--temp-dir={temp_dir / 'head'}", "--include-dashboard=false",
        f"--dashboard-port={_free_port()}", "--disable-usage-stats", *node_ports(),
    ]  # fmt: skip
    client_address = None
    if importlib.util.find_spec("grpc") is not None:  # Ray Client (the ray extra has it)
        client_port = _free_port()
        head.append(f"--ray-client-server-port={client_port}")
        client_address = f"ray://127.0.0.1:{client_port}"
    second = [
        ray_cli, "start", f"--address={address}", "--node-ip-address=127.0.0.1",
        "--num-cpus=1", f"--temp-dir={temp_dir / 'second'}", "--disable-usage-stats",
        *node_ports(),
    ]  # fmt: skip
    hide = f'mount -t tmpfs none {hidden} && exec "$@"'
    try:
        subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
        subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", hide, "sh", *second],
            env=env,
            check=True,
            capture_output=True,
            timeout=120,
        )
        patch = pytest.MonkeyPatch()  # this process is the driver of the in-process tests
        for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):
            patch.setenv(name, env[name])
        patch.delenv("RAY_ADDRESS", raising=False)
        yield RayCluster(address, client_address, temp_dir, hidden, env)
    finally:
        ray.shutdown()
        _stop(temp_dir)
    patch.undo()


def _folder(root: Path, count: int = 14) -> Path:
    folder = root / "imgs"
    for i in range(count):
        make_image(folder / f"{i:02}.jpg", seed=i)
    (folder / "bad.jpg").write_bytes(b"not an image at all")
    (folder / "empty.png").write_bytes(b"")
    return folder


def _started(collection: Collection, cluster: RayCluster) -> None:
    """Both nodes' workers up before the run, so that each gets work."""
    from lookalike.pipeline import ray_runner

    workers = ray_runner.start(collection.spec, cluster.address)
    workers.wait()
    while any(w.starting is not None for w in workers.workers):
        workers.note_started(timeout=60, at_least=len(workers.workers))
    assert len({w.node for w in workers.workers}) == 2


def _vectors_by_path(collection: Collection) -> dict[str, np.ndarray]:
    ids, vectors = collection.store.load_vectors()
    paths = collection.store.paths(ids)
    return {paths[int(i)]: v for i, v in zip(ids, vectors, strict=True)}


def test_ray_indexes_like_the_local_indexer(cluster: RayCluster, db: str, tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    with Collection.open(tmp_path / "local.db") as local:
        expected = local.add([folder], batch_size=4)
        expected_vectors = _vectors_by_path(local)
    with Collection.open(db) as collection:
        _started(collection, cluster)
        report = collection.add([folder], batch_size=1, ray=cluster.address)
        assert (report.added, report.updated, report.unchanged) == (14, 0, 0)
        assert sorted(report.skipped) == sorted(expected.skipped)
        assert report.retried == []
        assert {Path(s.path).name for s in collection.store.skipped_files()} == {
            "bad.jpg",
            "empty.png",
        }
        # the same vectors for the same files (float16 in PostgreSQL)
        vectors = _vectors_by_path(collection)
        assert vectors.keys() == expected_vectors.keys()
        for path, vector in vectors.items():
            np.testing.assert_allclose(vector, expected_vectors[path], atol=2e-3)
        # ids follow the plan's order: the files were written in order, batch by batch
        ids, _ = collection.store.load_vectors()
        paths = collection.store.paths(ids)
        assert [paths[int(i)] for i in ids] == sorted(paths.values())
        # unchanged files are not sent to Ray again; a changed one is
        make_image(folder / "03.jpg", seed=99)
        os.utime(folder / "03.jpg", ns=(1, 1))
        again = collection.add([folder], batch_size=4, ray=cluster.address)
        # the two bad files are remembered, not decoded again
        assert (again.added, again.updated, again.unchanged, again.skipped_before) == (0, 1, 13, 2)


def test_files_only_the_driver_can_read_are_sent_to_the_workers(
    cluster: RayCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(cluster.hidden, count=12)
    with Collection.open(tmp_path / "local.db") as local:
        expected = local.add([folder])
        expected_vectors = _vectors_by_path(local)
    caplog.set_level(logging.INFO, logger="lookalike.pipeline.ray_runner")
    with Collection.open(tmp_path / "c.db") as collection:
        _started(collection, cluster)
        report = collection.add([folder], batch_size=1, ray=cluster.address)
        assert (report.added, sorted(report.skipped)) == (12, sorted(expected.skipped))
        # the bad files are remembered as bad, as when read by path
        assert len(collection.store.skipped_files()) == 2
        vectors = _vectors_by_path(collection)
        assert vectors.keys() == expected_vectors.keys()
        for path, vector in vectors.items():
            np.testing.assert_allclose(vector, expected_vectors[path], atol=1e-5)
    # the second node's worker could not see the folder: it was sent the bytes
    assert "cannot read the driver's files" in caplog.text


def _kill_a_busy_worker(cluster: RayCluster, timeout: float) -> int:
    """kill -9 one worker process of the cluster while it embeds (Ray titles it so)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [p for p in _cluster_pids(cluster.temp_dir) if "EmbedWorker.embed" in _title(p)]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            return busy[0]
        time.sleep(0.005)
    raise AssertionError(f"no Ray worker was embedding in {timeout} s")


def test_a_lost_worker_loses_nothing(
    cluster: RayCluster, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = _folder(tmp_path, count=40)
    killed: list[int] = []

    def kill_after_the_first_batch(done: int) -> None:
        if not killed:
            killed.append(_kill_a_busy_worker(cluster, timeout=10))

    caplog.set_level(logging.INFO, logger="lookalike.pipeline.ray_runner")
    with Collection.open(tmp_path / "c.db") as collection:
        _started(collection, cluster)
        report = collection.add(
            [folder], batch_size=1, ray=cluster.address, progress=kill_after_the_first_batch
        )
        assert killed
        # what the killed worker held was sent again, and said so
        assert report.retried and set(report.retried) <= {str(p) for p in folder.iterdir()}
        assert "after their Ray worker was lost" in caplog.text
        # every file indexed exactly once
        assert (report.added, len(report.skipped)) == (40, 2)
        ids, _ = collection.store.load_vectors()
        paths = collection.store.paths(ids)
        assert sorted(paths.values()) == sorted(str(p) for p in folder.glob("*.jpg"))[:40]
        assert len(ids) == len(set(paths.values())) == 40


class _Crash(Exception):
    pass


def test_a_crashed_ray_job_resumes_without_redoing_committed_batches(
    cluster: RayCluster, tmp_path: Path
) -> None:
    folder = _folder(tmp_path)
    written: list[int] = []

    def crash_after_two_batches(done: int) -> None:
        written.append(done)
        if len(written) == 2:
            raise _Crash  # the driver dies after its second commit

    with Collection.open(tmp_path / "c.db") as collection:
        with pytest.raises(_Crash):
            collection.add(
                [folder], batch_size=4, ray=cluster.address, progress=crash_after_two_batches
            )
        committed = collection.store.file_states()
        assert len(committed) == 8  # two whole batches of four, nothing of the third
        report = collection.add([folder], batch_size=4, ray=cluster.address)
        assert report.unchanged == 8
        assert report.added + len(report.skipped) == 16 - 8
        assert len(collection) == 14


# --- the command line, as a user runs it -------------------------------------------------------


class _Command(subprocess.Popen[str]):
    def communicate(self, *args: object, **kwargs: object) -> tuple[str, str]:  # type: ignore[override]
        """Its output; killed if it outlives the timeout."""
        try:
            return super().communicate(*args, **kwargs)  # type: ignore[arg-type]
        except subprocess.TimeoutExpired:
            self.kill()
            raise


def _index(cluster: RayCluster, *args: str, env: dict[str, str] | None = None) -> _Command:
    return _Command(
        [sys.executable, "-m", "lookalike.cli", "index", *args],
        env=env or cluster.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_the_cli_joins_the_cluster_quietly_and_says_what_it_retried(
    cluster: RayCluster, tmp_path: Path
) -> None:
    folder = _folder(tmp_path, count=400)
    env = {**cluster.env, "RAY_ADDRESS": cluster.address}  # as under `ray job submit`
    db = str(tmp_path / "c.db")
    run = _index(cluster, str(folder), "--db", db, "--ray", "--batch-size", "1", env=env)
    _kill_a_busy_worker(cluster, timeout=120)
    out, err = run.communicate(timeout=300)
    assert run.returncode == 0, err
    assert err.splitlines()[0] == f"starting Ray workers on the Ray cluster at {cluster.address}..."
    # Ray's own messages (its C++ core's warnings and errors when a worker dies, the token
    # notice) stay out of the terminal
    for noise in ("core_worker", ".cc:", "Token authentication", "WARNING", "INFO", "ray::"):
        assert noise not in err, err
    assert out.startswith("added 400, updated 0, removed 0, unchanged 0, skipped 2"), out
    assert "retried " in out and "files on other Ray workers" in out, out


def test_the_cli_joins_through_ray_client(cluster: RayCluster, tmp_path: Path) -> None:
    if cluster.client_address is None:
        if REQUIRED:
            raise AssertionError("Ray Client needs grpcio: pip install 'lookalike[ray]'")
        pytest.skip("Ray Client needs grpcio (the ray extra's ray[client])")
    folder = _folder(tmp_path, count=6)
    args = [str(folder), "--db", str(tmp_path / "c.db"), "--ray", cluster.client_address]
    # Ray Client gives up after about 30 s (3 tries from 5 s); the head starts a server
    # process for each client, which on a loaded CI machine can take longer than that.
    env = {**cluster.env, "RAY_CLIENT_INITIAL_CONNECTION_TIMEOUT_S": "30"}
    out, err = _index(cluster, *args, env=env).communicate(timeout=300)
    assert out.startswith("added 6, updated 0, removed 0, unchanged 0, skipped 2"), out + err


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"RAY_AUTH_MODE": None},
            "it requires token authentication; set RAY_AUTH_MODE=token and give its token",
        ),
        ({"RAY_AUTH_TOKEN": "0" * 64}, "it refused the token from RAY_AUTH_TOKEN"),
        ({"RAY_AUTH_TOKEN_PATH": None, "HOME": "."}, "RAY_AUTH_MODE=token but no token"),
        ({"RAY_ADDRESS": "127.0.0.1:1"}, "nothing answers there"),
    ],
    ids=["no-token-mode", "wrong-token", "no-token", "nobody-there"],
)
def test_what_is_missing_to_join_a_cluster_is_said_in_one_line(
    cluster: RayCluster, tmp_path: Path, change: dict[str, str | None], expected: str
) -> None:
    env = {"RAY_ADDRESS": cluster.address, **cluster.env}
    for name, value in change.items():
        if value is None:
            env.pop(name)
        else:
            env[name] = str(tmp_path) if value == "." else value  # HOME: no ~/.ray/auth_token
    folder = _folder(tmp_path, count=1)
    run = _index(cluster, str(folder), "--db", str(tmp_path / "c.db"), "--ray", env=env)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2, err
    lines = [line for line in err.splitlines() if not line.startswith("starting Ray")]
    assert len(lines) == 1 and lines[0].startswith("error: cannot join the Ray cluster at"), err
    assert expected in lines[0]
