"""Where a benchmark's figures go: printed, and appended to ``benchmarks/RESULTS.md`` when its run asks for it.

Imported by the scripts beside it (``python benchmarks/bench_x.py`` puts this folder first on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def publish(section: str, *, append: bool) -> None:
    """Print ``section`` (a Markdown block: heading, command, load, table); with ``append``, also add it to the end
    of RESULTS.md after a blank line, where every block is kept, newest last."""
    print(section)
    if append:
        with RESULTS.open("a", encoding="utf-8") as out:
            out.write("\n" + section)
