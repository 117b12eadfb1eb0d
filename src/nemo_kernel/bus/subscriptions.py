"""Read permissions on the bus: which bindings a module may make, and so which routing keys it may read.

A module declares its subscriptions: AMQP topic patterns of words ``[a-z0-9_-]+``, ``*`` (one word) and ``#``
(zero or more words), such as ``workload.*`` or ``cluster.#``. Besides those, every module may read its own
namespace: routing keys ``<module>`` and ``<module>.<anything>`` (replies addressed to it). A module that declares
nothing reads only its own namespace.

Binding rule (the same on RabbitMQ, where it is the read regex of the module's topic permission on ``nemo``, and on
the in-process bus): a binding key is allowed when it is a declared pattern or narrower than one word for word: a
literal word where ``*`` was declared, any words (literal, ``*`` or ``#``) where ``#`` was declared. So a module
declared for ``workload.*`` may bind ``workload.*`` and ``workload.registered``, never ``#``, ``workload.#`` or
``*.registered``. The check is on the text of the binding (RabbitMQ matches the regex against the binding key as
written), so a binding that is narrower only by a subtler argument (``*.#`` under ``#.*``) is refused: the rule
errs on the side of refusing.

Sealing follows the same declarations: an event is encrypted for a module when one of its declared patterns (or
its own namespace) matches the event's routing key.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Protocol

from nemo_kernel.bus.base import topic_matches

MAX_PATTERN_LENGTH = 255
"""An AMQP binding key is a short string (255 bytes)."""

MAX_SUBSCRIPTIONS = 64
"""Declared patterns per module: the read regex of each module is built from all of them."""

BUILTIN_SUBSCRIPTIONS: dict[str, tuple[str, ...]] = {"orchestrator": ("intent.#",)}
"""What the control plane's own modules read (their registration cannot be changed through the API)."""

_WORD = "[a-z0-9_-]+"
_PATTERN = re.compile(rf"(?:{_WORD}|\*|#)(?:\.(?:{_WORD}|\*|#))*")
# What a binding word may be where the declaration says '*' (one word) and where it says '#' (any words).
_ONE = rf"(?:{_WORD}|\*)"
_ANY = rf"(?:{_WORD}|\*|#)"
# A word separator: at the very start of the binding nothing (a '#' before may have matched no word), elsewhere a
# dot. "(?!^)" keeps a leading dot from standing in for the start, so ".x" is not taken for "x".
_SEP = r"(?:^|(?!^)\.)"


class InvalidPattern(ValueError):
    """A subscription is not an AMQP topic pattern of the allowed words."""


class BindingRefused(PermissionError):
    """A module tried to bind a routing key pattern its declared subscriptions do not cover."""

    def __init__(self, module: str, binding: str) -> None:
        super().__init__(
            f"module {module!r} may not bind {binding!r}: it is not covered by its declared subscriptions "
            f"(declare it with `nemo module register {module} --subscribe PATTERN`)"
        )
        self.module = module
        self.binding = binding


class ReadPermissions(Protocol):
    """Where a bus finds each module's declared subscriptions (the module key directory)."""

    def subscriptions(self, module: str) -> tuple[str, ...]:
        """The patterns ``module`` declared (empty: it reads only its own namespace)."""


def validate_pattern(pattern: str) -> str:
    """``pattern`` if it is a valid subscription, else :class:`InvalidPattern` saying why."""
    if not isinstance(pattern, str):
        raise InvalidPattern("must be a string")
    if len(pattern.encode()) > MAX_PATTERN_LENGTH:
        raise InvalidPattern(f"must be at most {MAX_PATTERN_LENGTH} bytes")
    if _PATTERN.fullmatch(pattern) is None:
        raise InvalidPattern(
            "must be dot-separated words of a-z, 0-9, '_' and '-', or '*' (one word) or '#' (any words), "
            f"like 'workload.*' (got {pattern!r})"
        )
    return pattern


def validate_subscriptions(patterns: Iterable[str]) -> tuple[str, ...]:
    """The declared patterns, each validated, duplicates dropped, in the order given."""
    unique = tuple(dict.fromkeys(validate_pattern(p) for p in patterns))
    if len(unique) > MAX_SUBSCRIPTIONS:
        raise InvalidPattern(f"at most {MAX_SUBSCRIPTIONS} patterns may be declared")
    return unique


def _pattern_regex(pattern: str) -> str:
    parts = []
    for i, word in enumerate(pattern.split(".")):
        if word == "#":
            # Zero or more binding words, each bringing its own separator.
            parts.append(rf"(?:{_SEP}{_ANY})*")
        else:
            parts.append(("" if i == 0 else _SEP) + (_ONE if word == "*" else re.escape(word)))
    return "".join(parts)


def read_regex(module: str, subscriptions: Sequence[str]) -> str:
    """The full-match regex of the binding keys ``module`` may bind on the ``nemo`` exchange.

    It is what provisioning sets as the read pattern of the module's topic permission, and what the in-process bus
    checks; it covers the module's own namespace and each declared pattern (see the module docstring).
    """
    alternatives = [rf"{re.escape(module)}(?:\..*)?"]
    alternatives += [_pattern_regex(validate_pattern(p)) for p in subscriptions]
    return "^(?:" + "|".join(f"(?:{a})" for a in alternatives) + ")$"


@lru_cache(maxsize=1024)
def _compiled(module: str, subscriptions: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(read_regex(module, subscriptions))


def may_bind(module: str, subscriptions: Sequence[str], binding: str) -> bool:
    """Whether ``module``, declared for ``subscriptions``, may bind ``binding`` on the topic exchange."""
    return _compiled(module, tuple(subscriptions)).fullmatch(binding) is not None


def may_read(module: str, subscriptions: Sequence[str], routing_key: str) -> bool:
    """Whether a message published with ``routing_key`` is for ``module`` to read (and so to be sealed for it)."""
    if routing_key == module or routing_key.startswith(module + "."):
        return True
    return any(topic_matches(p, routing_key) for p in subscriptions)


def readers(routing_key: str, subscriptions: Mapping[str, Sequence[str]]) -> list[str]:
    """The modules of ``subscriptions`` (module -> declared patterns) allowed to read ``routing_key``, sorted."""
    return sorted(m for m, patterns in subscriptions.items() if may_read(m, patterns, routing_key))


def check_bindings(module: str, subscriptions: Sequence[str], bindings: Iterable[str]) -> None:
    """Raise :class:`BindingRefused` for the first of ``bindings`` that ``module`` may not make."""
    for binding in bindings:
        if not may_bind(module, subscriptions, binding):
            raise BindingRefused(module, binding)


def queue_owner(queue: str) -> str:
    """The module a queue belongs to: queues are named ``<module>`` or ``<module>.<anything>``."""
    return queue.split(".", 1)[0]
