"""Errors the store raises; the API maps them to HTTP statuses (404, 409)."""


class NotFound(LookupError):
    """The named resource does not exist."""

    def __init__(self, kind: str, name: str) -> None:
        super().__init__(f"{kind} {name!r} not found")
        self.kind = kind
        self.name = name


class Conflict(Exception):
    """The request conflicts with what is stored (duplicate name, wrong state)."""
