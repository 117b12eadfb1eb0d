"""Errors the store raises; the API maps them to HTTP statuses (404, 409, 503)."""

import psycopg
from sqlalchemy.exc import OperationalError


class NotFound(LookupError):
    """The named resource does not exist."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name


class Conflict(Exception):
    """The request conflicts with what is stored (duplicate name, wrong state)."""


def store_busy(exc: OperationalError) -> bool:
    """Whether a database error is the store being busy or out of reach (worth a retry), not a fault of ours.

    SQLite says "database is locked" (or "busy") when another writer held the lock past the busy timeout;
    PostgreSQL's driver raises an operational error of its own when the server cannot be reached.
    """
    if exc.connection_invalidated:
        return True
    reason = str(exc.orig).lower()
    if "database is locked" in reason or "database is busy" in reason:
        return True
    return isinstance(exc.orig, psycopg.OperationalError)
