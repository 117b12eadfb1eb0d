"""Cluster commands: register, cordon, drain, uncordon and remove clusters."""

from __future__ import annotations

from nemo_kernel.domain import ClusterSpec, ClusterStatus
from nemo_kernel.orchestrator.commands.base import Wake
from nemo_kernel.store import Database
from nemo_kernel.store import clusters as cluster_store


class ClusterCommands:
    """Changes to the set of clusters and to whether they take replicas; each wakes the reconcile loop."""

    def __init__(self, db: Database, wake: Wake) -> None:
        self._db = db
        self._wake = wake

    def add(self, spec: ClusterSpec) -> ClusterStatus:
        """Register a cluster and its nodes (event ``cluster.registered``); ``Conflict`` if the name is taken."""
        with self._db.transaction() as s:
            status = cluster_store.to_cluster_status(cluster_store.add_cluster(s, spec))
        self._wake()
        return status

    def set_links(self, name: str, links: object) -> ClusterStatus:
        """Replace the emulated links of cluster ``name`` (``links``: peer -> link, as a document gives them).

        The cluster's whole spec is validated with the new links, so an error names ``links.<peer>.<field>``
        (``pydantic.ValidationError``, 422) and changes nothing; ``NotFound`` if the cluster is unknown. The same
        links again record nothing; the reconcile loop applies them to the cluster's driver.
        """
        with self._db.transaction() as s:
            row = cluster_store.get_cluster(s, name)
            spec = ClusterSpec.model_validate({**row.spec, "links": links})
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
