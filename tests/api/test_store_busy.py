"""A store held by another writer past the busy timeout: the API answers 503 with Retry-After, changes nothing,
and serves again once the lock is released (the served API's SQLite URL sets a short busy timeout)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from tests.served_api import served_api

CLUSTERS = [
    {
        "name": "edge",
        "tier": "edge",
        "region": "eu-south",
        "country": "ES",
        "nodes": [{"name": "edge-n1", "cpu": 4, "memory_mib": 4096}],
    }
]
WORKLOAD = {"name": "web", "deployment": {"command": ["serve"], "resources": {"cpu": 0.1, "memory_mib": 32}}}


def test_a_locked_store_is_a_503_that_changes_nothing(tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("store-busy")
    database = root / "nemo.db"
    # 2 s: short enough for the refused request, long enough for the control plane's own writes on a loaded machine
    # (at 0.3 s, its start-up writes met one another and the admin client's creation failed in CI)
    with served_api(root, CLUSTERS, database_url=f"sqlite:///{database}?timeout=2") as api:
        api.token()  # issued before the lock (the token endpoint reads the store too)
        holder = sqlite3.connect(database, isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another writer, holding the write lock
            refused = api.api("POST", "/workloads", json=WORKLOAD)
            assert refused.status_code == 503, refused.text
            assert refused.headers["Retry-After"] == "1"
            assert refused.json()["error"]["code"] == "store_unavailable"
            assert "INSERT" not in refused.text  # nothing of the statement reaches the caller
            # Reads go through snapshots, which wait for no writer: the API still answers them meanwhile.
            listed = api.api("GET", "/workloads")
            assert listed.status_code == 200 and listed.json() == [], listed.text
        finally:
            holder.execute("ROLLBACK")
            holder.close()
        assert api.api("GET", "/workloads/web").status_code == 404  # the refused apply stored nothing
        assert api.api("POST", "/workloads", json=WORKLOAD).status_code == 201
        assert [w["name"] for w in api.api("GET", "/workloads").json()] == ["web"]


def test_the_busy_timeout_comes_from_the_url(tmp_path: Path) -> None:
    from nemo_kernel.store import Database

    db = Database(f"sqlite:///{tmp_path / 'a.db'}?timeout=0.25")
    with db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 250
    default = Database(f"sqlite:///{tmp_path / 'b.db'}")
    with default.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 10_000
