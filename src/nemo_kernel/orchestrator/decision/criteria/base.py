"""What a placement criterion is: the protocols the decision engine scores feasible nodes with.

Two shapes, because criteria come in two kinds:

- :class:`Criterion` gives a raw value per node in its own unit (EUR/h, gCO2/h, ms). The engine min-max normalises
  the raw values over the decision's feasible nodes, once, at the start of the decision, so a node's score does not
  change when another node fills up.
- :class:`LoadCriterion` scores a node from what it holds *at this point of the decision*: balance depends on the
  replicas this decision already put on the node, so it is re-scored for the node that took a replica (O(log n) per
  replica on the engine's heap). Its score is already in [0, 1] and is not normalised: min-max over the feasible
  nodes would stretch a sliver of free capacity to the full range and rescale every node each time one takes a
  replica. A ``raw()`` without the node's load could express neither.

Each shape has an optional vectorised form, :class:`VectorCriterion` (``raw_many``) and :class:`VectorLoadCriterion`
(``score_many``): the same values for many rows of the engine's :class:`~table.NodeTable` at once, as numpy arrays.
The scalar method stays the reference (a test checks the two agree, value for value); a criterion without the
vectorised form still works, the engine calls its scalar method per feasible node, which is slower.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Protocol, runtime_checkable

import numpy as np

from nemo_kernel.orchestrator.decision.candidates import ClusterCandidate, NodeCandidate
from nemo_kernel.orchestrator.decision.filters import Requirements
from nemo_kernel.orchestrator.decision.table import Floats, Ints, NodeTable


@runtime_checkable
class Criterion(Protocol):
    """One placement criterion; raw values are normalised over the feasible nodes (best 1.0, worst 0.0)."""

    name: ClassVar[str]
    """The key of its weight (``NEMO_WEIGHTS``, ``placement.weights``) and of its score in explanations."""
    lower_is_better: ClassVar[bool]

    def raw(self, cluster: ClusterCandidate, node: NodeCandidate, req: Requirements) -> float:
        """The criterion's value for one replica of the workload on ``node``, in the criterion's own unit."""
        ...


@dataclass(slots=True)
class NodeLoad:
    """What a node holds at this point of a decision: its allocation before it, plus the replicas it placed there.

    The engine updates it as it places replicas; criteria read it and never change it.
    """

    used_cpu: float
    used_memory_mib: float
    hosted: int
    """Replicas of the workload on the node, those running before the decision included."""
    placed: int = 0
    """Replicas this decision placed on the node."""


@runtime_checkable
class LoadCriterion(Protocol):
    """A criterion that depends on what the decision already placed on a node; scored in [0, 1], higher is better."""

    name: ClassVar[str]

    def score(self, cluster: ClusterCandidate, node: NodeCandidate, load: NodeLoad, req: Requirements) -> float:
        """The node's score if it takes one more replica on top of ``load``."""
        ...


@runtime_checkable
class VectorCriterion(Protocol):
    """The vectorised form of a :class:`Criterion`."""

    def raw_many(self, table: NodeTable, rows: Ints, req: Requirements) -> Floats:
        """``raw()`` of the nodes at ``rows`` of ``table``, bit for bit (same operations in the same order)."""
        ...


class LoadColumns:
    """:class:`NodeLoad` for many nodes at once: one array per field, aligned with the rows scored; criteria read
    them and never change them.

    ``as_table`` is True when these are the table's own allocations at the rows scored (nothing placed yet), so a
    criterion may serve values it keeps per table allocation (``NodeTable.by_allocation``) instead of reading the
    arrays; such loads (:meth:`of_table`) gather the allocation columns only when a criterion reads them.
    """

    __slots__ = ("_rows", "_table", "_used_cpu", "_used_memory_mib", "as_table", "hosted", "placed")

    def __init__(
        self, used_cpu: Floats, used_memory_mib: Floats, hosted: Ints, placed: Ints, as_table: bool = False
    ) -> None:
        self._used_cpu: Floats | None = used_cpu
        self._used_memory_mib: Floats | None = used_memory_mib
        self.hosted = hosted
        self.placed = placed
        self.as_table = as_table
        self._table: NodeTable | None = None
        self._rows: Ints | None = None

    @classmethod
    def of_table(cls, table: NodeTable, rows: Ints, hosted: Ints, placed: Ints) -> LoadColumns:
        """The loads of ``rows`` as ``table`` holds them (``as_table``); ``hosted`` and ``placed`` given gathered."""
        loads = cls.__new__(cls)
        loads._used_cpu = loads._used_memory_mib = None
        loads.hosted, loads.placed, loads.as_table = hosted, placed, True
        loads._table, loads._rows = table, rows
        return loads

    @property
    def used_cpu(self) -> Floats:
        """CPU allocated on each node."""
        if self._used_cpu is None:
            table, rows = self._gathering()
            self._used_cpu = table.gathered("allocated-cpu", table.allocated_cpu, rows)
        return self._used_cpu

    @property
    def used_memory_mib(self) -> Floats:
        """Memory allocated on each node, MiB."""
        if self._used_memory_mib is None:
            table, rows = self._gathering()
            self._used_memory_mib = table.gathered("allocated-memory", table.allocated_memory_mib, rows)
        return self._used_memory_mib

    def _gathering(self) -> tuple[NodeTable, Ints]:
        assert self._table is not None and self._rows is not None, "loads given as arrays are never gathered"
        return self._table, self._rows


@runtime_checkable
class VectorLoadCriterion(Protocol):
    """The vectorised form of a :class:`LoadCriterion`."""

    def score_many(self, table: NodeTable, rows: Ints, loads: LoadColumns, req: Requirements) -> Floats:
        """``score()`` of the nodes at ``rows`` with the loads given, bit for bit."""
        ...


AnyCriterion = Criterion | LoadCriterion


def capacity_at(table: NodeTable, rows: Ints, req: Requirements) -> Floats:
    """The CPU capacity of each of ``rows``, gathered once per decision (for a criterion scoring given loads)."""
    cpu: Floats = req.derived("cpu-of-rows", (table, rows), lambda: np.take(table.cpu, rows))
    return cpu
