"""PRESS data residency as a placement constraint: a workload under an SLA lands only in the countries its SLAs
and its own ``placement.countries`` all allow; with none left, nothing is placed and the workload says why.

In-process: a :class:`ControlPlane` on SQLite in ``tmp_path`` with ``sim`` memory clusters in two countries, passes
driven with ``engine.reconcile_once()``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterSpec, DriverKind, WorkloadDescriptor
from nemo_kernel.domain.sla import SlaSpec
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.reactions import load_reactions
from nemo_kernel.orchestrator.reactions_dispatcher import ReactionDispatcher
from nemo_kernel.store import clusters, events, slas, workloads
from tests.orchestrator.fakes import MemoryProvider


@pytest.fixture
async def plane(tmp_path: Path) -> AsyncIterator[ControlPlane]:
    file = tmp_path / "clusters.yaml"
    file.write_text(yaml.safe_dump({"clusters": []}))
    cp = ControlPlane(
        Settings(data_dir=tmp_path / "data", clusters_file=file), providers={DriverKind.SIM: MemoryProvider()}
    )
    await asyncio.to_thread(cp.db.migrate)
    with cp.db.transaction() as s:
        for name, country in (("sim-es", "ES"), ("sim-de", "DE"), ("sim-fr", "FR")):
            spec = {"name": name, "driver": "sim", "tier": "edge", "region": "eu", "country": country,
                    "nodes": [{"name": "n1", "cpu": 8.0, "memory_mib": 8192}]}  # fmt: skip
            clusters.add_cluster(s, ClusterSpec.model_validate(spec))
    try:
        yield cp
    finally:
        await cp.resources.close()
        cp.db.dispose()


async def _until(plane: ControlPlane, condition: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await plane.engine.reconcile_once()
        if value := await asyncio.to_thread(condition):
            return value
    raise AssertionError(f"not within {timeout:g} s: {what}")


def _countries_of(plane: ControlPlane, name: str) -> set[str]:
    with plane.db.transaction() as s:
        row = workloads.get_workload(s, "default", name)
        replicas = workloads.replicas_by_workload(s, [row.id]).get(row.id, [])
        return {r.cluster.removeprefix("sim-").upper() for r in replicas if r.desired}


def _apply(plane: ControlPlane, workload: dict[str, Any], sla: dict[str, Any]) -> None:
    plane.commands.workloads.apply(WorkloadDescriptor.model_validate(workload))
    plane.commands.slas.apply(SlaSpec.model_validate(sla))


def _sla(name: str, workload: str | None, countries: list[str]) -> dict[str, Any]:
    return {"name": name, "workload": workload, "press": {"data_residency": countries},
            "slos": [{"name": "up", "kind": "availability"}]}  # fmt: skip


def _workload(name: str, countries: list[str] | None = None) -> dict[str, Any]:
    placement = {"placement": {"countries": countries}} if countries else {}
    return {"name": name, "deployment": {"command": ["app"], "replicas": 6, "ports": [], **placement}}


async def test_replicas_land_only_where_the_sla_allows(plane: ControlPlane) -> None:
    _apply(plane, _workload("shop"), _sla("gold", "shop", ["DE"]))
    assert await _until(
        plane, lambda: len(_countries_of(plane, "shop")) and _countries_of(plane, "shop"), "placed"
    ) == {"DE"}
    # the SLA becomes Active when its workload runs: the reaction to workload.running (the default registry)
    dispatcher = ReactionDispatcher(plane.db, load_reactions())

    def active() -> bool:
        asyncio.run(dispatcher.run_once())
        return plane.views.slas.get("default", "gold").state.value == "Active"

    await _until(plane, active, "SLA Active")
    kinds = [e.kind for e in plane.views.slas.history("default", "gold")]
    assert kinds == ["sla.applied", "sla.activated"]


async def test_sla_and_workload_countries_intersect(plane: ControlPlane) -> None:
    _apply(plane, _workload("shop", ["ES", "FR"]), _sla("wide", None, ["FR", "DE"]))
    assert await _until(plane, lambda: _countries_of(plane, "shop"), "placed") == {"FR"}


async def test_no_country_left_places_nothing_and_says_why(plane: ControlPlane) -> None:
    _apply(plane, _workload("shop", ["ES"]), _sla("gold", "shop", ["DE"]))

    def pending() -> bool:
        with plane.db.transaction() as s:
            return any("data residency" in e.message for e in events.history(s, "workload/default/shop"))

    await _until(plane, pending, "placement.pending naming the data residency")
    assert _countries_of(plane, "shop") == set()
    # terminating the SLA lifts the constraint for the workload's next placement
    with plane.db.transaction() as s:
        assert slas.residency_of_workload(s, "default", "shop") == ["DE"]
    plane.commands.slas.delete("default", "gold")
    plane.commands.workloads.apply(WorkloadDescriptor.model_validate(_workload("shop", ["ES"]) | {"description": "v2"}))
    assert await _until(plane, lambda: _countries_of(plane, "shop"), "placed after the SLA ended") == {"ES"}
