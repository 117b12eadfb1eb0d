"""The secrets in the gateway's configuration, and the placeholder that stands for them wherever it is read.

A secret is given when a plugin is created or replaced and never shown again: every read view has
:data:`MASKED` in its place. A document read back and written again keeps the stored secret wherever the
placeholder is still there, so ``nemo gateway get > f.yaml; nemo gateway apply -f f.yaml`` does not wipe the
secrets the export could not show.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: What a read view shows instead of a secret; sent back unchanged, it keeps the stored secret.
MASKED = "********"


@dataclass(frozen=True, slots=True)
class SecretField:
    """A secret of a plugin entry: the value at ``path``, or with ``in_url`` only the password of that URL."""

    path: tuple[str, ...]
    in_url: bool = False

    @property
    def name(self) -> str:
        """The field as an error names it, e.g. ``config.introspection.client_secret``."""
        return ".".join(self.path)


_REDIS_PASSWORD = SecretField(("config", "redis_url"), in_url=True)

#: The secrets of each plugin, by plugin name.
SECRET_FIELDS: Mapping[str, tuple[SecretField, ...]] = {
    "oidc": (SecretField(("config", "introspection", "client_secret")),),
    "rate-limiting": (_REDIS_PASSWORD,),
    "usage-control": (_REDIS_PASSWORD,),
}


def mask_plugin(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of a plugin entry with each of its secrets replaced by :data:`MASKED`."""
    masked = copy.deepcopy(dict(spec))
    for secret in SECRET_FIELDS.get(str(spec.get("name")), ()):
        value = _get(masked, secret.path)
        if not isinstance(value, str):
            continue
        if not secret.in_url:
            _set(masked, secret.path, MASKED)
        elif (parts := _password(value)) is not None:
            _set(masked, secret.path, parts[0] + MASKED + parts[2])
    return masked


def restore_plugin(spec: Mapping[str, Any], stored: Mapping[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """``spec`` (a copy) with each :data:`MASKED` secret replaced by its value in ``stored``, the same plugin as
    stored now (``None``: a new plugin); and the fields whose placeholder has no stored secret to stand for."""
    restored = copy.deepcopy(dict(spec))
    unresolved: list[str] = []
    for secret in SECRET_FIELDS.get(str(spec.get("name")), ()):
        value = _get(restored, secret.path)
        if not isinstance(value, str):
            continue
        kept = _get(stored, secret.path) if stored is not None else None
        if not secret.in_url:
            if value == MASKED:
                if isinstance(kept, str):
                    _set(restored, secret.path, kept)
                else:
                    unresolved.append(secret.name)
            continue
        parts = _password(value)
        if parts is None or parts[1] != MASKED:
            continue
        kept_parts = _password(kept) if isinstance(kept, str) else None
        if kept_parts is None:
            unresolved.append(secret.name)
        else:
            _set(restored, secret.path, parts[0] + kept_parts[1] + parts[2])
    return restored, unresolved


def _password(url: str) -> tuple[str, str, str] | None:
    """``url`` split around its password (``redis://user:`` | ``pw`` | ``@host:6379/0``); ``None`` without one.

    Split by hand, not by urlsplit: the password stays exactly as written (percent-encoding and all)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    userinfo, at, _ = rest[:end].rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon or not password:
        return None
    return f"{scheme}://{user}:", password, rest[len(userinfo) :]


def _get(document: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = document
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _set(document: dict[str, Any], path: tuple[str, ...], value: str) -> None:
    *parents, last = path
    target = document
    for part in parents:
        target = target[part]
    target[last] = value
