"""``nemo metrics query ...`` and ``nemo top workloads|nodes|clusters``: the analytics engine from the terminal.

Both read through the API (``/metrics/query``, ``/metrics/top/...``), so they answer the same from the embedded
store and from Prometheus. ``nemo top`` refreshes like ``watch kubectl top`` until Ctrl-C; ``--once`` prints one
table, and ``-o json|yaml`` one document per refresh for scripts (``--once -o json``: exactly one).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console

from nemo_kernel.cli.client import api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption
from nemo_kernel.cli.output import Column, OutputFormat, emit, print_table, say

app = typer.Typer(no_args_is_help=True)
top = typer.Typer(no_args_is_help=True)

WindowOption = Annotated[
    str, typer.Option("--window", "-w", help="a duration: seconds (300) or one unit (30s, 5m, 1h, 2d)")
]
IntervalOption = Annotated[
    float, typer.Option("--interval", min=0.5, max=3600, help="seconds between refreshes (live view)")
]
OnceOption = Annotated[bool, typer.Option("--once", help="print once and exit instead of refreshing")]


@app.command("query")
def query(
    selector: Annotated[str, typer.Argument(help='series selector: nemo_replica_cpu_seconds_total{workload="demo"}')],
    window: WindowOption = "5m",
    aggregation: Annotated[
        str, typer.Option("--aggregation", "-a", help="avg, max, min, sum, last, rate, quantile, histogram_quantile")
    ] = "avg",
    step: Annotated[str | None, typer.Option(help="a range query: one point per step over the window")] = None,
    quantile: Annotated[float | None, typer.Option(help="for quantile and histogram_quantile, in [0, 1]")] = None,
    by: Annotated[str | None, typer.Option(help="comma-separated labels to group by ('' for one series)")] = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Ask the analytics engine: SELECTOR aggregated over --window (or every --step of it)."""
    params = {"selector": selector, "window": window, "aggregation": aggregation, "step": step, "by": by}
    answer = api_from_env_or(api).get("/metrics/query", **params, quantile=quantile)
    emit(answer, output, _query_table)


def _query_table(answer: dict[str, Any]) -> None:
    rows = []
    for series in answer["series"]:
        points = series["points"]
        last_time, last_value = points[-1] if points else (None, None)
        stamp = time.strftime("%H:%M:%S", time.localtime(last_time)) if last_time is not None else ""
        rows.append((series["labels"], _number(last_value), stamp, len(points)))
    print_table(None, [Column("SERIES", wrap=True), "VALUE", "AT", "POINTS"], rows)
    for warning in answer.get("warnings", []):
        say(("warning:", "yellow"), f" {warning}", err=True)
    say(f"source: {answer['source']}", err=True)


@top.command("workloads")
def top_workloads(
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="only this namespace")] = None,
    window: WindowOption = "1m",
    interval: IntervalOption = 2.0,
    once: OnceOption = False,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """CPU, memory, power and energy of each workload's replicas, with requests/s, errors and p99 latency."""
    client = api_from_env_or(api)
    _refresh(lambda: client.get("/metrics/top/workloads", window=window, namespace=namespace), _workloads_table,
             interval, once, output)  # fmt: skip


@top.command("nodes")
def top_nodes(
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="only this cluster")] = None,
    window: WindowOption = "1m",
    interval: IntervalOption = 2.0,
    once: OnceOption = False,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """CPU and memory of each node against its capacity, and its power."""
    client = api_from_env_or(api)
    _refresh(lambda: client.get("/metrics/top/nodes", window=window, cluster=cluster), _nodes_table,
             interval, once, output)  # fmt: skip


@top.command("clusters")
def top_clusters(
    window: WindowOption = "1m",
    interval: IntervalOption = 2.0,
    once: OnceOption = False,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """CPU and memory of each cluster's nodes against their capacity, power and heartbeat round trip."""
    client = api_from_env_or(api)
    _refresh(lambda: client.get("/metrics/top/clusters", window=window), _clusters_table, interval, once, output)


def _refresh(
    fetch: Callable[[], Any], table: Callable[[Any], None], interval: float, once: bool, output: OutputFormat
) -> None:
    """Print what ``fetch`` answers, then again every ``interval`` seconds until Ctrl-C (or once)."""
    if once:
        emit(fetch(), output, table)
        return
    live = output.for_people and sys.stdout.isatty()
    try:
        while True:
            answer = fetch()
            if live:
                Console().clear()
                say(f"every {interval:g}s, window {answer['window_seconds']:g}s, from {answer['source']}; Ctrl-C stops")
                emit(answer, output, table)
            elif output is OutputFormat.JSON:
                print(json.dumps(answer, default=str), flush=True)  # one document per line, for `jq` and friends
            elif output is OutputFormat.YAML:
                print("---\n" + yaml.safe_dump(answer, sort_keys=False), end="", flush=True)
            else:
                emit(answer, output, table)
                sys.stdout.flush()
            time.sleep(interval)  # the refresh interval the user asked for
    except KeyboardInterrupt:
        pass


def _workloads_table(answer: dict[str, Any]) -> None:
    print_table(
        None,
        ["NAMESPACE", "WORKLOAD", "REPLICAS", "CPU(cores)", "MEMORY", "POWER(W)", Column("ENERGY(J)", optional=True),
         Column("CO2(g)", optional=True), "REQ/s", "ERRORS", "P99"],
        [
            (r["namespace"], r["workload"], r["replicas"], _number(r["cpu_cores"]), _bytes(r["memory_bytes"]),
             _number(r["power_watts"]), _number(r["energy_joules"]), _number(r["co2_grams"]),
             _number(r["requests_per_second"]), _percent(r["error_ratio"]), _seconds(r["latency_p99_seconds"]))
            for r in answer["rows"]
        ],
    )  # fmt: skip


def _nodes_table(answer: dict[str, Any]) -> None:
    print_table(
        None,
        ["CLUSTER", "NODE", "CPU(cores)", "CPU%", "MEMORY", "MEMORY%", "POWER(W)"],
        [
            (r["cluster"], r["node"], _number(r["cpu_cores"]), _percent(r["cpu_ratio"]), _bytes(r["memory_bytes"]),
             _percent(r["memory_ratio"]), _number(r["power_watts"]))
            for r in answer["rows"]
        ],
    )  # fmt: skip


def _clusters_table(answer: dict[str, Any]) -> None:
    print_table(
        None,
        ["CLUSTER", "NODES", "CPU(cores)", "CPU%", "MEMORY", "MEMORY%", "POWER(W)", "RTT"],
        [
            (r["cluster"], r["nodes"], _number(r["cpu_cores"]), _percent(r["cpu_ratio"]), _bytes(r["memory_bytes"]),
             _percent(r["memory_ratio"]), _number(r["power_watts"]), _seconds(r["heartbeat_rtt_seconds"]))
            for r in answer["rows"]
        ],
    )  # fmt: skip


def _number(value: float | str | None) -> str:
    if value is None:
        return "-"
    return value if isinstance(value, str) else f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _bytes(value: float | None) -> str:
    if value is None:
        return "-"
    for unit, size in (("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)):
        if value >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}B"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"
