"""Reactions: handlers the control plane runs for stored events of the kinds they name (kopf's handler registry).

A reaction is data, not control flow: a frozen :class:`Reaction` in a :class:`Reactions` registry, keyed by event
kind. A module registers its reactions when it is imported::

    from nemo_kernel.domain import Event, EventKind
    from nemo_kernel.orchestrator.reactions import reactions

    @reactions.on(EventKind.REPLICA_CRASHED)
    def note_crash(s: Session, event: Event) -> None:
        ...  # write desired state with ``s``; it commits with the run's "seen" marker

and the control plane imports every module in :data:`REACTION_MODULES` at start, so a new reaction is one module
plus one line there. :mod:`nemo_kernel.orchestrator.reactions_dispatcher` runs them: exactly once per (reaction,
event), with retries, and an audit record per run.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from sqlalchemy.orm import Session

from nemo_kernel.domain import Event, EventKind

ReactionFn = Callable[[Session, Event], None]
F = TypeVar("F", bound=ReactionFn)

# The modules whose import registers the built-in reactions on :data:`reactions` (none yet: issue 9 keeps the
# behaviour unchanged, so nothing reacts by default). Add a reaction's module path here.
REACTION_MODULES: tuple[str, ...] = ("nemo_kernel.orchestrator.reactions_sla",)


@dataclass(frozen=True)
class Reaction:
    """One handler and the event kinds it reacts to.

    ``fn`` writes desired state in the session it is given: that transaction also stores the run's marker, so the
    work and the record that it was done commit together or not at all. It must not commit or open other
    transactions; an exception rolls everything back and the run is retried, up to ``retries`` more times.
    """

    name: str  # stable id (module.qualname by default): the key of its runs in the store; renaming re-runs nothing
    kinds: tuple[EventKind, ...]
    fn: ReactionFn
    retries: int = 3


class Reactions:
    """A registry of reactions, in registration order."""

    def __init__(self) -> None:
        self._reactions: list[Reaction] = []

    def on(self, *kinds: EventKind, name: str | None = None, retries: int = 3) -> Callable[[F], F]:
        """Decorator: register ``fn`` as a reaction to events of ``kinds``; returns ``fn`` unchanged."""
        if not kinds:
            raise ValueError("a reaction needs at least one event kind")
        if retries < 0:
            raise ValueError(f"retries must be 0 or more, not {retries}")

        def register(fn: F) -> F:
            self.add(Reaction(name or f"{fn.__module__}.{fn.__qualname__}", tuple(dict.fromkeys(kinds)), fn, retries))
            return fn

        return register

    def add(self, reaction: Reaction) -> None:
        """Register a reaction; its name must be new (runs are recorded under it)."""
        if any(r.name == reaction.name for r in self._reactions):
            raise ValueError(f"a reaction named {reaction.name!r} is already registered")
        self._reactions.append(reaction)

    def for_kind(self, kind: EventKind | str) -> tuple[Reaction, ...]:
        """The reactions to events of ``kind``, in registration order."""
        return tuple(r for r in self._reactions if kind in r.kinds)

    def __iter__(self) -> Iterator[Reaction]:
        return iter(tuple(self._reactions))

    def __len__(self) -> int:
        return len(self._reactions)


reactions = Reactions()
"""The default registry: the control plane runs it; modules register with ``@reactions.on(EventKind...)``."""


def load_reactions(modules: tuple[str, ...] = REACTION_MODULES) -> Reactions:
    """Import the reaction modules (registering their reactions, once) and return the default registry."""
    for module in modules:
        importlib.import_module(module)
    return reactions
