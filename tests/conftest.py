"""Fixtures shared by the whole suite: real databases (SQLite file and the PostgreSQL running here)."""

from __future__ import annotations

import contextlib
import os
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import psycopg
import pytest

from nemo_kernel.store import Database
from tests.bus.rabbit_node import ctl
from tests.stack import agents_under

POSTGRES_ADMIN_DSN = os.environ.get("NEMO_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
SHARED_HOST = "127.0.0.1:5672"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database on the server running here, dropped afterwards."""
    name = f"nemo_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = POSTGRES_ADMIN_DSN.rsplit("/", 1)[0]
    yield f"{base}/{name}".replace("postgresql://", "postgresql+psycopg://", 1)
    with psycopg.connect(POSTGRES_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs against a SQLite file and against PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'nemo.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@contextmanager
def migrated_database(url: str) -> Iterator[Database]:
    """A migrated database at ``url``, disposed afterwards."""
    db = Database(url)
    db.migrate()
    try:
        yield db
    finally:
        db.dispose()


@pytest.fixture
def database(database_url: str) -> Iterator[Database]:
    """A migrated, empty database."""
    with migrated_database(database_url) as db:
        yield db


@pytest.fixture(scope="session")
def shared_vhost() -> Iterator[str]:
    """A vhost of its own on the machine's broker (guest may use it); deleted afterwards. Non-destructive."""
    vhost = f"nemo-test-{secrets.token_hex(4)}"
    ctl(None, "add_vhost", vhost)
    try:
        ctl(None, "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{SHARED_HOST}/{vhost}"
    finally:
        ctl(None, "delete_vhost", vhost)


@pytest.fixture(scope="session", autouse=True)
def _no_agent_outlives_the_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Fails the run when a local agent of this session's stacks is still running at its end (agents live in their
    own session, so a leaked one runs on for good); kills them, so that the next run starts clean."""
    yield
    leaked = agents_under(tmp_path_factory.getbasetemp())
    named = [" ".join(agent.info["cmdline"]) for agent in leaked]
    for agent in leaked:
        with contextlib.suppress(psutil.Error):
            agent.resume()
            agent.kill()
    assert not leaked, f"local agents left running by this session's tests: {named}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules marked ``e2e`` (they start `nemo up`: the longest ones) run first.

    scripts/test hands whole modules to parallel processes in this order (``--no-loadscope-reorder``): started last,
    a long module kept one process busy while the others had nothing left to do; the short ones now fill the end.
    A stable sort keeps each module's tests together and in order.
    """
    items.sort(key=lambda item: item.get_closest_marker("e2e") is None)
