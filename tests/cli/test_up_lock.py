"""One `nemo up` per data directory, and a port in use said in one line: with real `nemo up` processes."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import psycopg
import pytest
import yaml

from tests.stack import NEMO, ROOT, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)


@pytest.fixture(scope="module")
def first(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli-lock") / "data") as s:
        yield s


def _up(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A second `nemo up`, expected to refuse at once (a timeout means it started)."""
    return subprocess.run([*NEMO, "up"], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)


def _agents(stack: Stack) -> dict[str, int]:
    return {p.parent.name: stack.agent_pid(p.parent.name) for p in (stack.data_dir / "clusters").glob("*/agent.json")}


def test_second_up_on_the_same_data_directory_refuses_and_the_first_keeps_working(first: Stack) -> None:
    assert first.proc is not None
    endpoint = (first.data_dir / "endpoint.json").read_text()
    agents = _agents(first)
    assert agents and all(psutil.pid_exists(pid) for pid in agents.values())

    done = _up(first.env)  # same data directory, other (free) ports

    assert done.returncode != 0
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert f"pid {first.proc.pid}" in lines[0] and first.url in lines[0] and str(first.data_dir) in lines[0]
    assert first.proc.poll() is None
    assert (first.data_dir / "endpoint.json").read_text() == endpoint
    assert _agents(first) == agents and all(psutil.pid_exists(pid) for pid in agents.values())
    assert first.cli_json("cluster", "list")


@pytest.mark.parametrize(("setting", "address"), [("NEMO_API_PORT", "url"), ("NEMO_GATEWAY_PORT", "gateway_url")])
def test_a_port_in_use_is_one_line_naming_its_setting(first: Stack, tmp_path: Path, setting: str, address: str) -> None:
    port = getattr(first, address).rsplit(":", 1)[1]
    done = _up({**first.env, "NEMO_DATA_DIR": str(tmp_path / "data"), setting: port})

    assert done.returncode != 0
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and done.stdout == "", done.stderr + done.stdout
    assert port in lines[0] and setting in lines[0] and "in use" in lines[0], lines[0]
    assert not (tmp_path / "data" / "endpoint.json").exists()


def test_the_lock_goes_with_the_process_even_on_sigkill(tmp_path: Path) -> None:
    with running_stack(tmp_path / "data") as stack:
        assert json.loads((stack.data_dir / "nemo.lock").read_text())["url"] == stack.url
        stack.stop(signal.SIGKILL)  # its agents and gateway may outlive it for a moment: they must not hold the lock
        stack.start()
        assert stack.cli_json("cluster", "list")


@pytest.mark.parametrize("store", ["postgresql", "sqlite"])
def test_a_second_control_plane_on_the_same_database_refuses_naming_the_first(
    store: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Two planes on one database would both deploy every workload (each with agents of its own); on SQLite, a
    file outside both data directories (their own locks do not cover it)."""
    if store == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared' / 'nemo.db'}"
        (tmp_path / "shared").mkdir()
    else:
        url = request.getfixturevalue("postgres_url")
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    env = {"NEMO_DATABASE_URL": url, "NEMO_CLUSTERS_FILE": str(clusters)}
    with running_stack(tmp_path / "first", env) as first:
        assert first.proc is not None
        second = Stack(tmp_path / "second", env)
        (tmp_path / "second").mkdir()

        done = _up(second.env)  # another data directory, the same database

        assert done.returncode != 0
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and done.stdout == "", done.stderr + done.stdout
        assert f"pid {first.proc.pid}" in lines[0] and first.url in lines[0], lines[0]
        assert "NEMO_DATABASE_URL" in lines[0]
        assert not (tmp_path / "second" / "endpoint.json").exists()
        assert first.proc.poll() is None and first.cli_json("cluster", "list") == []

        first.stop(signal.SIGKILL)  # the lock goes with the process's session, however it ends
        # The admin client is in the database; its secret is in the first data directory.
        (tmp_path / "second" / "admin-credentials.json").write_text(
            (first.data_dir / "admin-credentials.json").read_text()
        )
        try:
            second.start()
            assert second.cli_json("cluster", "list") == []
        finally:
            second.kill_everything()


def _lease_sessions(postgres_url: str, holder: str) -> list[int]:
    """PostgreSQL backends holding the control plane's lock under ``holder``'s name."""
    with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
        rows = conn.execute(
            "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name LIKE %s",
            (f"{holder}%",),
        ).fetchall()
    return [row[0] for row in rows]


def test_a_plane_whose_store_session_ended_takes_the_store_again(postgres_url: str, tmp_path: Path) -> None:
    """A PostgreSQL restart ends the session that held the lock: a second plane must still be refused."""
    clusters = tmp_path / "clusters.yaml"
    clusters.write_text(yaml.safe_dump({"clusters": []}))
    env = {"NEMO_DATABASE_URL": postgres_url, "NEMO_CLUSTERS_FILE": str(clusters)}
    with running_stack(tmp_path / "first", env) as first:
        assert first.proc is not None
        holder = f"nemo up pid {first.proc.pid},"
        [session] = wait_for(lambda: _lease_sessions(postgres_url, holder), 30, "the first plane's lease")
        with psycopg.connect(postgres_url.replace("+psycopg", ""), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (session,))

        wait_for(
            lambda: [s for s in _lease_sessions(postgres_url, holder) if s != session], 60, "the lease taken again"
        )
        (tmp_path / "second").mkdir()
        done = _up(Stack(tmp_path / "second", env).env)

        assert done.returncode != 0 and f"pid {first.proc.pid}" in done.stderr, done.stderr
        assert first.proc.poll() is None and first.cli_json("cluster", "list") == []
