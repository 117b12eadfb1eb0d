"""Integration Component: takes intents (REST or bus petitions), validates them whole, stores them.

Petitions (seed section 6.2):
- ``{numberofclusters: N}`` creates N local managed clusters;
- ``{name, namespace, pathname}`` deploys the descriptor found at ``pathname``: a local file or folder,
  or a git repository URL (``file://``, ``https://``, ``ssh://``, ``git@``), optionally ``URL#path/in/repo.yaml``.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from nemo_kernel.bus import Message
from nemo_kernel.config import Settings
from nemo_kernel.domain import (
    ClusterSpec,
    DocumentError,
    Name,
    NodeSpec,
    Spec,
    Tier,
    WorkloadDescriptor,
    load_document,
)
from nemo_kernel.store import Database, events, inventory, workloads
from nemo_kernel.store.events import record_event
from nemo_kernel.store.tables import ClusterRow
from nemo_kernel.store.workloads import ApplyResult

log = logging.getLogger(__name__)

DESCRIPTOR_NAMES = ("{name}.yaml", "{name}.yml", "nemo.yaml", "descriptor.yaml", "workload.yaml")
_GIT_PREFIXES = ("file://", "https://", "http://", "ssh://", "git@", "git://")


class PetitionError(ValueError):
    """A petition that cannot be carried out (bad source, no descriptor found); nothing was stored."""


class JoinPetition(Spec):
    """Create N managed clusters."""

    numberofclusters: int = Field(ge=1, le=100)


class DeployPetition(Spec):
    """Deploy the descriptor found at ``pathname`` as workload ``namespace/name``."""

    name: Name
    namespace: Name = "default"
    pathname: str = Field(min_length=1)


def parse_petition(data: Any) -> JoinPetition | DeployPetition:
    """Validate a petition of either kind; raises pydantic's ValidationError naming the fields at fault."""
    if isinstance(data, dict) and "numberofclusters" in data:
        return JoinPetition.model_validate(data)
    return DeployPetition.model_validate(data)


def descriptor_with_defaults(data: Any, source_dir: Path | None) -> WorkloadDescriptor:
    """Validate a descriptor; a relative or missing ``working_dir`` resolves against the descriptor's folder."""
    descriptor = WorkloadDescriptor.model_validate(data)
    deployment = descriptor.deployment
    if source_dir is not None and deployment is not None and deployment.command is not None:
        wd = deployment.working_dir
        resolved = source_dir / wd if wd else source_dir
        deployment.working_dir = str(resolved.resolve())
    return descriptor


class Intake:
    """Turns intents into stored state; the reconcile loop does the rest."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings

    def apply(self, descriptor: WorkloadDescriptor) -> ApplyResult:
        """Store a workload (or its next version) in one transaction."""
        with self._db.transaction() as s:
            return workloads.apply_workload(s, descriptor)

    def handle(self, data: Any) -> dict[str, Any]:
        """Carry out a petition of either kind in one transaction; returns a JSON-able summary."""
        petition = self._prepare(data)
        with self._db.transaction() as s:
            return self._carry_out(s, petition)

    def _prepare(self, data: Any) -> JoinPetition | WorkloadDescriptor:
        # Everything that can fail on bad input happens here, before any transaction.
        petition = parse_petition(data)
        return petition if isinstance(petition, JoinPetition) else self._descriptor_for(petition)

    def _carry_out(self, s: Session, petition: JoinPetition | WorkloadDescriptor) -> dict[str, Any]:
        if isinstance(petition, JoinPetition):
            return {"kind": "join", "clusters": self._join_clusters(s, petition)}
        result = workloads.apply_workload(s, petition)
        return {
            "kind": "deploy",
            "workload": f"{result.row.namespace}/{result.row.name}",
            "version": result.row.version,
            "outcome": result.outcome,
        }

    def _join_clusters(self, s: Session, petition: JoinPetition) -> list[str]:
        taken = set(s.scalars(select(ClusterRow.name)))
        names: list[str] = []
        k = 1
        while len(names) < petition.numberofclusters:
            name = f"managed-{k}"
            k += 1
            if name not in taken:
                names.append(name)
                inventory.add_cluster(s, self._managed_cluster(name))
        return names

    def _managed_cluster(self, name: str) -> ClusterSpec:
        st = self._settings
        return ClusterSpec(
            name=name,
            tier=Tier(st.managed_tier),
            region=st.managed_region,
            country=st.managed_country,
            labels={"managed-by": "nemo-intake"},
            nodes=[NodeSpec(name=f"{name}-n1", cpu=st.managed_node_cpu, memory_mib=st.managed_node_memory_mib)],
        )

    def _descriptor_for(self, petition: DeployPetition) -> WorkloadDescriptor:
        path = self._fetch(petition)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as exc:
            raise PetitionError(f"cannot read descriptor {path.name}: {exc}") from exc
        if not isinstance(data, dict):
            raise PetitionError(f"descriptor {path.name} is not a mapping")
        data = {**data, "name": petition.name, "namespace": petition.namespace}
        return descriptor_with_defaults(data, path.parent)

    async def on_bus_petition(self, sender: str, message: Message) -> None:
        """Secure-bus handler for ``intent.#`` (``sender`` is verified): exactly once per message id; refusals are
        stored as events."""
        await asyncio.to_thread(self._handle_message, sender, message)

    def _handle_message(self, sender: str, message: Message) -> None:
        subject = f"intent/{sender}/{message.message_id}"  # ids are chosen by senders: unique per sender only
        with self._db.transaction() as s:
            if events.history(s, subject, limit=1):
                return  # already handled: a redelivery
        try:
            petition = self._prepare(load_document(message.body, yaml_syntax=True))
        except (ValidationError, PetitionError, DocumentError, yaml.YAMLError) as exc:
            text = f"petition {message.routing_key} refused: {exc}"
            log.warning("%s", text)
            with self._db.transaction() as s:
                record_event(
                    s, "intent.rejected", subject, text, routing_key=message.routing_key, sender=sender, error=str(exc)
                )
            return
        with self._db.transaction() as s:
            # The work and the marker commit together, so a redelivery after a crash cannot do it twice.
            if events.history(s, subject, limit=1):
                return
            outcome = self._carry_out(s, petition)
            record_event(
                s,
                "intent.accepted",
                subject,
                f"petition {message.routing_key} from {sender} carried out",
                routing_key=message.routing_key,
                sender=sender,
                outcome=outcome,
            )

    def _fetch(self, petition: DeployPetition) -> Path:
        source, _, inner = petition.pathname.partition("#")
        if source.startswith(_GIT_PREFIXES) or source.endswith(".git"):
            root = self._clone(source, petition)
        else:
            root = Path(source).expanduser()
            if not root.exists():
                raise PetitionError(f"pathname {source!r} does not exist")
        if inner:
            target = (root / inner).resolve()
            if not target.is_relative_to(root.resolve()) or not target.is_file():
                raise PetitionError(f"no descriptor at {inner!r} in {source}")
            return target
        if root.is_file():
            return root
        for pattern in DESCRIPTOR_NAMES:
            candidate = root / pattern.format(name=petition.name)
            if candidate.is_file():
                return candidate
        tried = ", ".join(p.format(name=petition.name) for p in DESCRIPTOR_NAMES)
        raise PetitionError(f"no descriptor in {source} (looked for {tried})")

    def _clone(self, url: str, petition: DeployPetition) -> Path:
        # The checkout is kept: the local driver runs the workload's command from it.
        dest = self._settings.data_dir / "sources" / petition.namespace / petition.name
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".clone-", dir=dest.parent))
        try:
            subprocess.run(
                ["git", "clone", "--quiet", "--depth", "1", "--", url, str(tmp)],
                check=True,
                capture_output=True,
                text=True,
                timeout=120,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            detail = exc.stderr.strip() if isinstance(exc, subprocess.CalledProcessError) else "timed out"
            raise PetitionError(f"git clone {url} failed: {detail}") from exc
        shutil.rmtree(dest, ignore_errors=True)
        tmp.rename(dest)
        return dest
