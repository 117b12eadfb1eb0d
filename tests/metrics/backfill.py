"""The same history in the embedded store and in a real Prometheus: synthetic series, backfilled with promtool.

``history()`` makes seeded series at 1 s resolution (replica CPU counters with a reset, memory gauges, a latency
histogram per workload); ``backfill()`` writes them as OpenMetrics and has ``promtool tsdb create-blocks-from
openmetrics`` turn them into TSDB blocks a Prometheus started on that folder serves. Both backends then hold exactly
the same samples, so a query must answer the same on both.
"""

from __future__ import annotations

import random
import subprocess
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path

from nemo_kernel.metrics.model import Sample
from tests.metrics.prometheus_server import PROMTOOL

CPU = "nemo_replica_cpu_seconds_total"
MEMORY = "nemo_replica_memory_bytes"
LATENCY = "nemo_workload_request_duration_seconds"
BUCKETS = (0.005, 0.01, 0.05, 0.1, 0.5, 1.0, float("inf"))


def history(replicas: int, workloads: int, seconds: int, end: int, seed: int = 7) -> list[Sample]:
    """Samples every second over ``[end - seconds, end)`` (whole seconds), oldest first per series."""
    rnd = random.Random(seed)
    samples: list[Sample] = []
    for r in range(replicas):
        labels = {"namespace": "default", "workload": f"w{r % workloads}", "replica": f"r{r}", "cluster": "c1"}
        cpu, memory = 0.0, 50e6 + rnd.random() * 50e6
        for t in range(end - seconds, end):
            cpu += rnd.uniform(0.0, 0.5)
            if r == 0 and t == end - seconds // 3:
                cpu = rnd.uniform(0.0, 0.5)  # the replica restarted: its counter starts again
            memory = max(1e6, memory + rnd.gauss(0, 1e5))
            samples.append(Sample(CPU, labels, round(cpu, 6), float(t)))
            samples.append(Sample(MEMORY, labels, round(memory), float(t)))
    for w in range(workloads):
        counts = [0] * len(BUCKETS)
        for t in range(end - seconds, end, 5):
            for _ in range(rnd.randrange(0, 20)):
                latency = rnd.expovariate(20.0)
                for i, bound in enumerate(BUCKETS):
                    counts[i] += latency <= bound
            for bound, count in zip(BUCKETS, counts, strict=True):
                le = "+Inf" if bound == float("inf") else repr(bound)
                labels = {"namespace": "default", "workload": f"w{w}", "le": le}
                samples.append(Sample(f"{LATENCY}_bucket", labels, float(count), float(t)))
    return samples


def _families(samples: Sequence[Sample]) -> Iterator[tuple[str, str, list[Sample]]]:
    by_name: dict[str, list[Sample]] = defaultdict(list)
    for s in samples:
        by_name[s.name].append(s)
    for name, group in by_name.items():
        if name.endswith("_bucket"):
            yield name.removesuffix("_bucket"), "histogram", group
        elif name.endswith("_total"):
            yield name.removesuffix("_total"), "counter", group
        else:
            yield name, "gauge", group


def _label_text(labels: dict[str, str] | object) -> str:
    assert isinstance(labels, dict)
    return ",".join(f'{k}="{v}"' for k, v in labels.items())


def backfill(samples: Sequence[Sample], folder: Path) -> Path:
    """TSDB blocks of ``samples`` in ``folder/data`` (for ``--storage.tsdb.path``)."""
    folder.mkdir(parents=True, exist_ok=True)
    source = folder / "history.om"
    with source.open("w") as out:
        for family, kind, group in _families(samples):
            out.write(f"# TYPE {family} {kind}\n")
            series: dict[str, list[Sample]] = defaultdict(list)
            for s in group:
                series[_label_text(s.labels)].append(s)
            for labels, points in series.items():
                for s in sorted(points, key=lambda p: p.timestamp):
                    out.write(f"{s.name}{{{labels}}} {s.value!r} {s.timestamp:.3f}\n")
        out.write("# EOF\n")
    data = folder / "data"
    subprocess.run(
        [PROMTOOL, "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
        check=True,
        capture_output=True,
    )
    source.unlink()
    return data
