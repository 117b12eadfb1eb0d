"""Cluster commands: register, cordon, drain, uncordon and remove clusters."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from pydantic import ConfigDict, TypeAdapter

from nemo_kernel.domain import CONTROL_PLANE_LINK, ClusterSpec, ClusterStatus, Link, Links
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.metrics.carbon import CarbonSourceRefused, allowed
from nemo_kernel.orchestrator.commands.base import Wake
from nemo_kernel.store import Database
from nemo_kernel.store import clusters as cluster_store

# The title names the input in a 422 ("invalid links: ..."); without it pydantic writes the annotated type's repr.
_LINKS: TypeAdapter[dict[str, Link]] = TypeAdapter(Links, config=ConfigDict(title="links"))


class ClusterCommands:
    """Changes to the set of clusters and to whether they take replicas; each wakes the reconcile loop."""

    def __init__(self, db: Database, wake: Wake, carbon_roots: Sequence[Path] = ()) -> None:
        self._db = db
        self._wake = wake
        self._carbon_roots = list(carbon_roots)

    def add(self, spec: ClusterSpec) -> ClusterStatus:
        """Register a cluster and its nodes (event ``cluster.registered``); ``Conflict`` if the name is taken.

        A carbon intensity file outside the directories an admin allowed is refused (422): the control plane
        reads it, so naming it must not be a way to read the machine's files.
        """
        source = spec.carbon_intensity_source
        if source is not None:
            try:
                allowed(source.csv, self._carbon_roots)
            except CarbonSourceRefused as exc:
                field = "carbon_intensity_source.csv"
                raise ApiError(422, "invalid", f"{field}: {exc}", [{"field": field, "message": str(exc)}]) from None
        with self._db.transaction() as s:
            status = cluster_store.to_cluster_status(cluster_store.add_cluster(s, spec))
        self._wake()
        return status

    def set_links(self, name: str, links: object) -> ClusterStatus:
        """Replace the emulated links of cluster ``name`` (``links``: peer -> link, as a document gives them).

        A bad link raises ``pydantic.ValidationError`` naming ``<peer>.<field>`` (422), a link to the cluster
        itself or to a cluster not registered ``ApiError`` 422 naming the peer; either changes nothing.
        ``NotFound`` if the cluster is unknown.
        The same links again record nothing; the reconcile loop applies them to the cluster's driver.
        """
        valid = _LINKS.validate_python(links)
        if name in valid:
            problem = "a cluster has no link to itself"
            raise ApiError(422, "invalid", f"{name}: {problem}", [{"field": name, "message": problem}])
        with self._db.transaction() as s:
            row = cluster_store.get_cluster(s, name)
            # A link to a cluster nobody registered would never be applied: most likely a typo, said now.
            known = cluster_store.cluster_names(s)
            unknown = sorted(peer for peer in valid if peer != CONTROL_PLANE_LINK and peer not in known)
            if unknown:
                details = [{"field": peer, "message": f"no cluster named {peer!r}"} for peer in unknown]
                raise ApiError(422, "invalid", f"links to unknown clusters: {', '.join(unknown)}", details)
            cluster_store.readable_spec(row)  # a spec an older NEMO stored that this version refuses: 409, not a 422
            spec = ClusterSpec.model_validate({**row.spec, "links": _LINKS.dump_python(valid, mode="json")})
            status = cluster_store.to_cluster_status(cluster_store.set_links(s, spec))
        self._wake()
        return status

    def set_schedulable(self, name: str, *, cordoned: bool, draining: bool = False) -> ClusterStatus:
        """Cordon (no new replicas), drain (cordon and move replicas away) or uncordon; ``NotFound`` if unknown.
        Setting what is already set records nothing."""
        with self._db.transaction() as s:
            row = cluster_store.set_schedulable(s, name, cordoned=cordoned, draining=draining)
            status = cluster_store.to_cluster_status(row)
        self._wake()
        return status

    def remove(self, name: str) -> None:
        """Remove a cluster: its agent stops and its replicas are rescheduled elsewhere; ``NotFound`` if unknown."""
        with self._db.transaction() as s:
            cluster_store.remove_cluster(s, name)
        self._wake()
