"""Benchmark of ``GET /api/v1/clusters``' work: the clusters view over a generated fleet, as JSON.

Run from the repository root, against a baseline tree (``git archive BASE src | tar -x -C /tmp/base``)::

    .venv/bin/python benchmarks/bench_cluster_list.py --baseline /tmp/base/src                  # prints a table
    .venv/bin/python benchmarks/bench_cluster_list.py --baseline /tmp/base/src --append-results # and RESULTS.md

One SQLite store in a temporary directory holds ``nemo cluster generate --count N --nodes M --seed 1``. Each round
runs one worker process per tree, alternating (baseline first); a worker opens the store, lists the clusters
``--lists`` times through ``ClusterViews.every()`` and serialises each list as the API answers it
(``list[ClusterStatus]`` as JSON), and reports the CPU and wall time of the first list (a fresh process) and the
median of the others (a running control plane listing again while nothing changed).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results import publish

ROOT = Path(__file__).resolve().parents[1]


def _worker(url: str, lists: int) -> None:
    from pydantic import TypeAdapter

    from nemo_kernel.domain import ClusterStatus
    from nemo_kernel.orchestrator.views.clusters import ClusterViews
    from nemo_kernel.store import Database

    db = Database(url)
    views = ClusterViews(db, lambda _name: None)
    answer = TypeAdapter(list[ClusterStatus])
    cpu, wall, size = [], [], 0
    for _ in range(lists):
        c, w = time.process_time(), time.perf_counter()
        size = len(answer.dump_json(views.every()))
        cpu.append(time.process_time() - c)
        wall.append(time.perf_counter() - w)
    db.dispose()
    print(json.dumps({"cpu": cpu, "wall": wall, "bytes": size}))


def _fill(url: str, count: int, nodes: int) -> None:
    from nemo_kernel.clusters.fleet import generate_fleet
    from nemo_kernel.store import Database, clusters

    db = Database(url)
    db.migrate()
    with db.transaction() as s:
        for spec in generate_fleet(count, nodes, seed=1):
            clusters.add_cluster(s, spec)
    db.dispose()


def _run(src: str, url: str, lists: int) -> dict[str, list[float]]:
    env = {**os.environ, "PYTHONPATH": src}
    out = subprocess.run(
        [sys.executable, __file__, "--worker", url, "--lists", str(lists)],
        env=env, cwd=ROOT, capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, list[float]] = json.loads(out.stdout.splitlines()[-1])
    return result


def main() -> None:
    """Parse the arguments; fill a store and time both trees alternately, or be one worker."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", help="the baseline tree's src directory")
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--lists", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--append-results", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.lists)
        return
    if not args.baseline:
        parser.error("--baseline is required")
    started = datetime.now(UTC)
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{Path(tmp) / 'nemo.db'}"
        _fill(url, args.count, args.nodes)
        runs: dict[str, list[dict[str, list[float]]]] = {"baseline": [], "candidate": []}
        for _ in range(args.rounds):
            runs["baseline"].append(_run(args.baseline, url, args.lists))
            runs["candidate"].append(_run(str(ROOT / "src"), url, args.lists))
    load_after = os.getloadavg()[0]

    def first(tree: str, key: str) -> float:
        return statistics.median(r[key][0] for r in runs[tree]) * 1000

    def again(tree: str, key: str) -> float:
        return statistics.median(statistics.median(r[key][1:]) for r in runs[tree]) * 1000

    rows = []
    for label, figure in (("first list", first), ("each list after", again)):
        for key in ("cpu", "wall"):
            base, cand = figure("baseline", key), figure("candidate", key)
            rows.append(f"| {label}, {key} ms | {base:.1f} | {cand:.1f} | {cand / base:.2f} |")
    command = (
        f"PYTHONPATH=src .venv/bin/python benchmarks/bench_cluster_list.py --baseline {args.baseline} "
        f"--count {args.count} --nodes {args.nodes} --lists {args.lists} --rounds {args.rounds}"
    )
    section = "\n".join([
        f"## GET /api/v1/clusters: {args.count} clusters x {args.nodes} nodes listed and serialised "
        f"({started:%Y-%m-%d %H:%M} UTC)",
        "",
        f"`{command}`; {runs['candidate'][0]['bytes']:,} bytes of JSON a list; medians of {args.rounds} alternating "
        f"worker processes per tree (baseline first), each listing {args.lists} times. Load average (1 min) "
        f"{load_before:.2f} before, {load_after:.2f} after.",
        "",
        "| figure | baseline | candidate | ratio |",
        "|---|---:|---:|---:|",
        *rows,
    ])  # fmt: skip
    publish(section, append=args.append_results)


if __name__ == "__main__":
    main()
