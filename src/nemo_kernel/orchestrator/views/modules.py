"""Module views: the directory of bus module keys, by module, with what each module reads."""

from __future__ import annotations

from pydantic import Field

from nemo_kernel.domain import Model
from nemo_kernel.orchestrator.commands.modules import unknown_module
from nemo_kernel.orchestrator.key_directory import KeyRecord, StoredKeyDirectory


class ModuleKey(Model):
    """One key of a module as the directory lists it."""

    key_id: str
    current: bool
    revoked: bool
    created_at: float
    current_since: float
    revoked_at: float | None
    signing_public: str
    encryption_public: str


class ModuleEntry(Model):
    """A module and its keys, oldest first."""

    module: str
    current_key_id: str | None
    subscriptions: list[str] = Field(description="routing key patterns it reads, besides its own namespace")
    keys: list[ModuleKey]


class ModuleViews:
    """Reads of the key directory (its in-memory copy, refreshed by every write and every reload)."""

    def __init__(self, directory: StoredKeyDirectory) -> None:
        self._directory = directory

    def every(self) -> list[ModuleEntry]:
        """Every module with its keys: key ids, which one is current, which are revoked, when created."""
        return self._entries(self._directory.records())

    def get(self, module: str) -> ModuleEntry:
        """One module; 404 if it has no keys."""
        entries = self._entries(self._directory.records(module))
        if not entries:
            raise unknown_module(module)
        return entries[0]

    def _entries(self, records: list[KeyRecord]) -> list[ModuleEntry]:
        by_module: dict[str, list[KeyRecord]] = {}
        for record in records:
            by_module.setdefault(record.keys.module, []).append(record)
        return [
            ModuleEntry(
                module=module,
                current_key_id=next((r.keys.key_id for r in rs if r.current), None),
                subscriptions=list(self._directory.subscriptions(module)),
                keys=[_key(r) for r in rs],
            )
            for module, rs in by_module.items()
        ]


def _key(r: KeyRecord) -> ModuleKey:
    return ModuleKey(
        key_id=r.keys.key_id,
        current=r.current,
        revoked=r.keys.revoked,
        created_at=r.keys.created_at,
        current_since=r.current_since.timestamp(),
        revoked_at=r.revoked_at.timestamp() if r.revoked_at else None,
        **{k: v for k, v in r.keys.to_dict().items() if k.endswith("_public")},
    )
