"""Gateway configuration commands: create, replace and delete services, routes, consumers and plugins, or replace
the whole declarative configuration. Each change is validated against the whole resulting configuration before it
is stored; the gateway process picks the new revision up on its next poll."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from sqlalchemy.orm import Session

from nemo_kernel.access.gateway import store as gateway_store
from nemo_kernel.access.gateway.config import GatewayConfig
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.store import Database

T = TypeVar("T")
Entity = dict[str, Any]


def in_gateway_transaction(db: Database, work: Callable[[Session], T]) -> T:
    """``work`` in one transaction; a refusal of the gateway store becomes the error the caller answers with."""
    try:
        with db.transaction() as session:
            return work(session)
    except gateway_store.GatewayConfigRejected as exc:
        raise ApiError(exc.status, exc.code, exc.message, exc.details) from None


class GatewayCommands:
    """Changes to the gateway's stored configuration (secrets masked in every answer)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def put(
        self, kind: str, document: Mapping[str, Any], *, key: str | None = None, create: bool = False
    ) -> tuple[Entity, bool]:
        """Create (``create``: 409 if it exists) or replace one object; returns it and whether it was created."""
        return in_gateway_transaction(
            self._db, lambda s: gateway_store.put_entity(s, kind, document, key=key, create=create)
        )

    def delete(self, kind: str, key: str) -> None:
        """Delete one object; ``NotFound`` if absent, 409 while other objects name it."""
        in_gateway_transaction(self._db, lambda s: gateway_store.delete_entity(s, kind, key))

    def replace_config(self, config: GatewayConfig) -> dict[str, Any]:
        """Replace the whole configuration in one transaction; returns it as the export shows it."""

        def replace(session: Session) -> dict[str, Any]:
            gateway_store.replace_config(session, config)
            session.flush()
            return gateway_store.export_config(session)

        return in_gateway_transaction(self._db, replace)
