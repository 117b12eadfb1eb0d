"""Gateway configuration views: its objects and its whole declarative document, secrets masked."""

from __future__ import annotations

from typing import Any

from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.orchestrator.commands.gateway import Entity, in_gateway_transaction
from nemo_kernel.store import Database


class GatewayViews:
    """Reads of the gateway's stored configuration."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def entities(self, kind: str) -> list[Entity]:
        """Every object of ``kind``, oldest first."""
        return in_gateway_transaction(self._db, lambda s: gateway_store.list_entities(s, kind))

    def entity(self, kind: str, key: str) -> Entity:
        """One object; ``NotFound`` if there is none."""
        return in_gateway_transaction(self._db, lambda s: gateway_store.get_entity(s, kind, key))

    def config(self) -> dict[str, Any]:
        """The whole configuration as a declarative document."""
        return in_gateway_transaction(self._db, gateway_store.export_config)
