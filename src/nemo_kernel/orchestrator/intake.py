"""Integration Component: takes intents (REST or bus petitions), validates them whole, stores them.

Petitions (seed section 6.2):
- ``{numberofclusters: N}`` creates N local managed clusters;
- ``{name, namespace, pathname}`` deploys the descriptor found at ``pathname``: a local file or folder under a
  petition root, or a git repository URL (``https://``, ``ssh://``, ``user@host:path``, ``file://`` under a root),
  optionally ``URL#path/in/repo.yaml``. See :mod:`nemo_kernel.orchestrator.petition_source` for what is allowed.

What a refusal says about a file is limited to its name, a line and column, and, for a file that looks like a
descriptor, the field paths at fault: never its content, and never the keys of a file that is not a descriptor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import stat
from collections.abc import Callable
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
    EventKind,
    Name,
    NodeSpec,
    Spec,
    Tier,
    WorkloadDescriptor,
    WorkloadStatus,
    load_document,
    working_dir_in_data_dir,
)
from nemo_kernel.domain.common import field_path
from nemo_kernel.domain.errors import ApiError, refusal
from nemo_kernel.domain.workload import SOURCES_DIR
from nemo_kernel.orchestrator.petition_source import GitSource, PetitionError, PetitionSources
from nemo_kernel.store import Database, clusters, events, workloads
from nemo_kernel.store.events import record_event
from nemo_kernel.store.tables import ClusterRow
from nemo_kernel.store.workloads import ApplyResult

log = logging.getLogger(__name__)

_MANAGED, _INTAKE = "managed-by", "nemo-intake"  # the label that marks clusters made by join petitions
DESCRIPTOR_NAMES = ("{name}.yaml", "{name}.yml", "nemo.yaml", "descriptor.yaml", "workload.yaml")
MAX_DESCRIPTOR_BYTES = 1 << 20


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
    """Validate a descriptor; a relative or missing ``working_dir`` first resolves against the descriptor's folder."""
    deployment = data.get("deployment") if isinstance(data, dict) else None
    if source_dir is not None and isinstance(deployment, dict) and deployment.get("command") is not None:
        wd = deployment.get("working_dir")
        if wd is None or (isinstance(wd, str) and "\x00" not in wd):  # anything else: validation says what is wrong
            joined = source_dir / wd if wd else source_dir
            data = {**data, "deployment": {**deployment, "working_dir": str(_resolved(joined) or joined)}}
    return WorkloadDescriptor.model_validate(data)


def working_dir_problem(descriptor: WorkloadDescriptor, data_dir: Path) -> str | None:
    """Why the descriptor's ``working_dir`` can never work (inside the data directory, or not resolvable), if so.

    The local agent applies the same rule before it runs a replica; checked here so that such a workload is refused
    (422) instead of being stored and left deploying forever.
    """
    wd = descriptor.deployment.working_dir if descriptor.deployment is not None else None
    if wd is None:
        return None
    try:
        inside = working_dir_in_data_dir(wd, data_dir, f"{descriptor.namespace}/{descriptor.name}")
    except OSError as exc:
        return f"cannot be resolved ({exc.strerror})"
    if inside:
        return "is inside the control plane's data directory, which replicas cannot see"
    return None


class Intake:
    """Turns intents into stored state; the reconcile loop does the rest."""

    def __init__(self, db: Database, settings: Settings) -> None:
        self._db = db
        self._settings = settings
        self._sources = PetitionSources(settings)

    def apply(self, descriptor: WorkloadDescriptor) -> tuple[ApplyResult, WorkloadStatus]:
        """Store a workload (or its next version) in one transaction; 422 if its working directory cannot work.

        The status is read in that transaction, so it is the version this apply made, whatever racing applies do."""
        problem = working_dir_problem(descriptor, self._settings.data_dir)
        if problem is not None:
            message = f"deployment.working_dir {problem}"
            details = [{"field": "deployment.working_dir", "message": problem, "type": "working_dir"}]
            raise ApiError(422, "invalid", message, details)
        with self._db.transaction() as s:
            result = workloads.apply_workload(s, descriptor)
            s.flush()
            replicas = workloads.replicas_by_workload(s, [result.row.id]).get(result.row.id, [])
            return result, workloads.to_workload_status(result.row, replicas)

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
        # Operators may send petitions, and each managed cluster is an agent process on this machine: bounded in all.
        managed = sum(
            1 for spec in s.scalars(select(ClusterRow.spec)) if spec.get("labels", {}).get(_MANAGED) == _INTAKE
        )
        limit = self._settings.max_managed_clusters
        if managed + petition.numberofclusters > limit:
            raise PetitionError(
                f"{petition.numberofclusters} more managed clusters would exceed NEMO_MAX_MANAGED_CLUSTERS={limit} "
                f"({managed} exist); an admin raises the setting or removes some",
                status=409,
                code="limit",
                details=[{"field": "numberofclusters", "message": f"at most {max(limit - managed, 0)} more"}],
            )
        names: list[str] = []
        k = 1
        while len(names) < petition.numberofclusters:
            name = f"managed-{k}"
            k += 1
            if name not in taken:
                names.append(name)
                clusters.add_cluster(s, self._managed_cluster(name))
        return names

    def _managed_cluster(self, name: str) -> ClusterSpec:
        st = self._settings
        return ClusterSpec(
            name=name,
            tier=Tier(st.managed_tier),
            region=st.managed_region,
            country=st.managed_country,
            labels={_MANAGED: _INTAKE},
            nodes=[NodeSpec(name=f"{name}-n1", cpu=st.managed_node_cpu, memory_mib=st.managed_node_memory_mib)],
        )

    def _descriptor_for(self, petition: DeployPetition) -> WorkloadDescriptor:
        path = self._fetch(petition)
        data = _read_mapping(path)
        data = {**data, "name": petition.name, "namespace": petition.namespace}
        try:
            descriptor = descriptor_with_defaults(data, path.parent)
        except ValidationError as exc:
            # The file looked like a descriptor (_read_mapping checked its keys): its field paths help fix it, and
            # the details, like every validation error of the API, carry no input values.
            details = _field_errors(exc)
            summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
            raise PetitionError(f"invalid descriptor {path.name}: {summary}", code="invalid", details=details) from None
        problem = working_dir_problem(descriptor, self._settings.data_dir)
        if problem is not None:
            details = [{"field": "deployment.working_dir", "message": problem, "type": "working_dir"}]
            raise PetitionError(
                f"invalid descriptor {path.name}: deployment.working_dir {problem}", code="invalid", details=details
            )
        return descriptor

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
            text = f"petition {message.routing_key} refused: {refusal(exc)}"
            log.warning("%s", text)
            with self._db.transaction() as s:
                record_event(
                    s,
                    EventKind.INTENT_REJECTED,
                    subject,
                    text,
                    routing_key=message.routing_key,
                    sender=sender,
                    error=refusal(exc),
                )
            return
        with self._db.transaction() as s:
            # The work and the marker commit together, so a redelivery after a crash cannot do it twice.
            if events.history(s, subject, limit=1):
                return
            outcome = self._carry_out(s, petition)
            record_event(
                s,
                EventKind.INTENT_ACCEPTED,
                subject,
                f"petition {message.routing_key} from {sender} carried out",
                routing_key=message.routing_key,
                sender=sender,
                outcome=outcome,
            )

    def _fetch(self, petition: DeployPetition) -> Path:
        source, _, inner = petition.pathname.partition("#")
        origin = self._sources.classify(source)
        if isinstance(origin, GitSource):
            source = origin.redacted  # messages are recorded in events: never a token from the URL
            # The checkout is kept: the local driver runs the workload's command from it.
            dest = self._settings.data_dir / SOURCES_DIR / petition.namespace / petition.name
            folder = self._sources.clone(origin, dest).resolve()

            def in_checkout(path: Path) -> Path:
                real = _resolved(path)
                if real is None or not real.is_relative_to(folder):
                    raise PetitionError(f"the descriptor in {source} points outside the repository")
                return real

            resolved: Callable[[Path], Path] = in_checkout
        else:
            folder, resolved = origin, self._sources.resolved
        # Every candidate is resolved and checked before asking whether it is a file: nothing is learnt about a path
        # outside the roots or the checkout, whether it exists or not.
        if inner:
            target = resolved(folder / inner)
            if not target.is_relative_to(folder) or not target.is_file():
                raise PetitionError(f"no descriptor at {inner!r} in {source}")
            return target
        if folder.is_file():
            return folder
        for pattern in DESCRIPTOR_NAMES:
            candidate = resolved(folder / pattern.format(name=petition.name))
            if candidate.is_file():
                return candidate
        tried = ", ".join(p.format(name=petition.name) for p in DESCRIPTOR_NAMES)
        raise PetitionError(f"no descriptor in {source} (looked for {tried})")


def _resolved(path: Path) -> Path | None:
    """``path`` with its symlinks followed as far as they exist; None for a symlink loop."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):
        return None


def _read_mapping(path: Path) -> dict[str, Any]:
    """The descriptor-shaped YAML mapping in ``path``; refusals name the file but never quote it or its keys."""
    name = path.name
    try:
        # No symlink swapped in for the checked file, and no waiting on a FIFO.
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
                raise PetitionError(f"descriptor {name} is not a regular file")
            raw = f.read(MAX_DESCRIPTOR_BYTES + 1)
    except OSError as exc:
        raise PetitionError(f"cannot read descriptor {name}") from exc
    if len(raw) > MAX_DESCRIPTOR_BYTES:
        raise PetitionError(f"descriptor {name} is larger than {MAX_DESCRIPTOR_BYTES} bytes")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise PetitionError(f"descriptor {name} is not UTF-8 text") from None
    except yaml.YAMLError as exc:
        # PyYAML's message quotes the offending line: only its position is told.
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise PetitionError(f"descriptor {name} is not valid YAML{where}") from None
    fields = _descriptor_fields()
    if not isinstance(data, dict):
        raise PetitionError(f"{name} is not a NEMO descriptor (a YAML mapping of {', '.join(sorted(fields))})")
    if any(not isinstance(key, str) or key not in fields for key in data):
        # A file that is not a descriptor (credentials, keys, /etc files) must not have its key names echoed.
        raise PetitionError(
            f"{name} is not a NEMO descriptor: it has keys that are not descriptor fields ({', '.join(sorted(fields))})"
        )
    return data


def _descriptor_fields() -> set[str]:
    """The top-level keys a descriptor may have (names and aliases)."""
    fields = set(WorkloadDescriptor.model_fields)
    fields.update(f.alias for f in WorkloadDescriptor.model_fields.values() if f.alias)
    return fields


def _field_errors(exc: ValidationError) -> list[dict[str, str]]:
    """Pydantic errors as ``[{field, message, type}]`` (``services[0].Name``), the API's shape, without inputs."""
    out = []
    for err in exc.errors(include_input=False, include_url=False):
        out.append({"field": field_path(list(err["loc"])) or "(body)", "message": err["msg"], "type": err["type"]})
    return out
