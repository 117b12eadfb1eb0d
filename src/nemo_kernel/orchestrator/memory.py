"""The control plane process's garbage collector, sized for the state of a large fleet.

CPython collects its youngest generation every 700 net allocations and its oldest, which holds every long-lived
object (at 1,000 clusters and 100,000 replicas about 1.3 million: reports, views, specs), whenever the objects
promoted since the last full collection reach a quarter of it, after at least 10 collections of the middle one. A
reconcile pass there allocates millions of short-lived objects, and with 700 enough of them lived through a young
collection to be promoted that a full collection (0.6-3 s each) ran every few seconds, inside whichever pass
triggered it: a restart's first pass spent 3-4 of its 7-9 s in them, a reschedule 1 s in one of every two.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION = 100_000
"""Net allocations between collections of the youngest generation: a pass's short-lived objects die in it rather
than being promoted (it holds at most this many objects awaiting a collection: a few MiB)."""

FULL_AFTER = 100
"""Collections of the middle generation (each after 10 young ones) before a full collection is even considered
(CPython's default: 10); CPython still waits until the objects promoted since the last one are a quarter of the
long-lived ones, so memory held by garbage cycles stays bounded by the live heap."""


def tune_garbage_collection() -> None:
    """Set this process's collector thresholds for a control plane (``nemo up`` calls it once, at start)."""
    gc.set_threshold(YOUNG_GENERATION, 10, FULL_AFTER)
