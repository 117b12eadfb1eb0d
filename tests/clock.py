"""A clock the test moves: the simulation's unix seconds, for sim clusters and anything else that takes a clock."""

from __future__ import annotations


class Clock:
    """Unix seconds that move only when the test says so (``clock.now += seconds``)."""

    def __init__(self) -> None:
        self.now = 1_700_000_000.0

    def __call__(self) -> float:
        return self.now
