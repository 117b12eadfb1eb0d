"""Where a benchmark's figures go: printed, and appended to ``benchmarks/RESULTS.md`` when its run asks for it.

Imported by the scripts beside it (``python benchmarks/bench_x.py`` puts this folder first on ``sys.path``).

Every block ends with the machine's reading of one fixed workload (:func:`machine_reference`). This machine's speed
has changed by about 2x between sessions of one day, so absolute figures from two blocks compare only after scaling
by their references; ratios against a baseline run in the same command need no scaling.
"""

from __future__ import annotations

import os
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")

# The fixed workload: a pure-Python loop, the kind of work the control plane's passes spend most of their time in.
# Its size keeps one round near 0.3 s on this machine; the median of five rounds damps a neighbour's burst.
_REFERENCE_STEPS = 2_000_000
_REFERENCE_ROUNDS = 5


def _reference_round() -> float:
    start = time.process_time()
    total = 0
    for step in range(_REFERENCE_STEPS):
        total += step
    elapsed = time.process_time() - start
    if total != _REFERENCE_STEPS * (_REFERENCE_STEPS - 1) // 2:  # keeps the loop from being optimised away
        raise AssertionError("reference loop miscounted")
    return elapsed


def machine_reference() -> float:
    """CPU seconds this machine takes for 10 million steps of the fixed pure-Python loop (the median of five rounds
    of two million, scaled): lower is faster. Record it beside absolute figures so that blocks from different days
    can be compared."""
    return statistics.median(_reference_round() for _ in range(_REFERENCE_ROUNDS)) * 10_000_000 / _REFERENCE_STEPS


def reference_line() -> str:
    """One Markdown line naming the fixed workload's reading and the load average at the time."""
    load = os.getloadavg()[0]
    return (
        f"Machine reference: {machine_reference():.2f} CPU s for 10 million steps of `benchmarks/results.py`'s fixed "
        f"loop (lower is faster; load average {load:.2f})."
    )


def publish(section: str, *, append: bool) -> None:
    """Print ``section`` (a Markdown block: heading, command, load, table) followed by the machine reference line;
    with ``append``, also add both to the end of RESULTS.md after a blank line, where every block is kept, newest
    last."""
    text = section.rstrip("\n") + "\n" + reference_line() + "\n"
    print(text)
    if append:
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write("\n" + text)


if __name__ == "__main__":
    print(reference_line())
