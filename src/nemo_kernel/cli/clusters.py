"""``nemo cluster ...``"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import CliError, api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption, WaitTimeout, load_document
from nemo_kernel.cli.output import Column, OutputFormat, emit, print_table, progress, say

app = typer.Typer(no_args_is_help=True)
_FINAL = ("Completed", "Failed", "RolledBack")


def _rows(clusters: list[dict[str, Any]]) -> None:
    print_table(
        None,
        [
            "NAME",
            "TIER",
            "REGION",
            Column("COUNTRY", optional=True),
            "PHASE",
            "SCHEDULING",
            Column("SANDBOX", optional=True),
            Column("NODES", optional=True),
            Column("EUR/CPU-h", optional=True),
            Column("gCO2/kWh", optional=True),
        ],
        [_row(c) for c in clusters],
    )


def _row(c: dict[str, Any]) -> tuple[object, ...]:
    spec = c["spec"]
    if spec is None:  # stored by an older NEMO and refused by this version: its message (nemo cluster get) says why
        return (c["name"], "-", "-", "-", c["phase"], "invalid spec", c.get("sandbox") or "-", "-", "-", "-")
    return (
        c["name"],
        spec["tier"],
        spec["region"],
        spec["country"],
        c["phase"],
        "cordoned" if c["cordoned"] else "ok",
        c.get("sandbox") or "-",
        len(spec["nodes"]),
        spec["prices"]["cpu_hour_eur"],
        spec["carbon_intensity"],
    )


@app.command("add")
def add(
    file: Annotated[Path, typer.Option("-f", "--file", help="cluster spec YAML/JSON ('-' for stdin)")],
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Register a cluster (or every cluster of a file with a `clusters:` list)."""
    client = api_from_env_or(api)
    document = load_document(file)
    specs = document["clusters"] if isinstance(document, dict) and "clusters" in document else [document]
    added = [client.post("/clusters", spec) for spec in specs]
    emit(added if len(added) > 1 else added[0], output, lambda _: _rows(added))


@app.command("list")
def list_(api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """List clusters with their phase."""
    emit(api_from_env_or(api).get("/clusters"), output, _rows)


@app.command("get")
def get(name: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Show a cluster and its nodes with their capacity accounting."""
    client = api_from_env_or(api)
    cluster = client.get(f"/clusters/{name}")
    nodes = client.get(f"/clusters/{name}/nodes")

    def table(_: Any) -> None:
        _rows([cluster])
        if cluster.get("message"):
            say(f"message: {cluster['message']}")
        print_table(
            "nodes",
            [
                "NODE",
                Column("ARCH", optional=True),
                "CPU used/cap",
                "MiB used/cap",
                Column("RUNTIMES", wrap=True),
                "TEE",
                "READY",
                "REPLICAS",
            ],
            [
                (
                    n["spec"]["name"],
                    n["spec"]["architecture"],
                    f"{n['allocated_cpu']:g}/{n['spec']['cpu']:g}",
                    f"{n['allocated_memory_mib']}/{n['spec']['memory_mib']}",
                    n["spec"]["runtimes"],
                    n["spec"]["tee"],
                    n["ready"],
                    n["replicas"],
                )
                for n in nodes
            ],
        )

    emit({**cluster, "nodes": nodes}, output, table)


@app.command("remove")
def remove(name: str, api: ApiOption = None) -> None:
    """Remove a cluster; its replicas are rescheduled on other clusters."""
    api_from_env_or(api).delete(f"/clusters/{name}")
    say(f"cluster {name} removed")


def _schedulable(action: str, name: str, api: str | None, output: OutputFormat) -> None:
    cluster = api_from_env_or(api).post(f"/clusters/{name}/{action}")
    emit(cluster, output, lambda c: _rows([c]))


@app.command("cordon")
def cordon(name: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Stop placing new replicas on a cluster."""
    _schedulable("cordon", name, api, output)


@app.command("drain")
def drain(
    name: str,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="show the moves until the cluster runs nothing")
    ] = False,
    timeout: WaitTimeout = 600.0,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Cordon a cluster and move its replicas to other eligible clusters (through migrations)."""
    _schedulable("drain", name, api, output)
    if wait:
        _follow_drain(name, api, timeout)


def _follow_drain(name: str, api: str | None, timeout: float) -> None:
    client = api_from_env_or(api)
    deadline = time.monotonic() + timeout
    with progress(f"draining {name}") as update:
        while True:
            # a released replica is not accounted to its node but still runs there until its cluster reports it
            # gone; an API older than the `stopping` count answers without it
            left = sum(n["replicas"] + n.get("stopping", 0) for n in client.get(f"/clusters/{name}/nodes"))
            moving = [
                m
                for m in client.get("/migrations", limit=500)
                if m["source_cluster"] == name and m["reason"] is not None and m["phase"] not in _FINAL
            ]
            update(f"draining {name}: {left} replicas left, {len(moving)} moving")
            if left == 0:
                break
            if time.monotonic() > deadline:
                raise CliError(
                    f"cluster {name} still runs {left} replicas after {timeout:g} s (a workload that fits nowhere "
                    "else stays and says why: nemo workload get)"
                )
            time.sleep(0.5)  # polling interval of a progress display
    say(f"cluster {name} drained: it runs no replica")


@app.command("uncordon")
def uncordon(name: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Make a cluster schedulable again."""
    _schedulable("uncordon", name, api, output)


@app.command("generate")
def generate(
    count: Annotated[int, typer.Option(help="clusters to generate (1-10,000)")] = 1000,
    nodes: Annotated[int, typer.Option(help="nodes per cluster (1-5,000)")] = 10,
    # min=0: random.Random seeds with the absolute value, so -1 gave the fleet of 1
    seed: Annotated[int, typer.Option(min=0, help="the same seed gives the same fleet (0 or more)")] = 1,
    out: Annotated[
        Path | None, typer.Option("-o", "--output", help="clusters file to write (default: stdout)", dir_okay=False)
    ] = None,
) -> None:
    """Write a clusters file of simulated clusters (driver sim) spread like a continuum: tiers, regions,
    architectures, runtimes, TEEs, prices, carbon intensities and power models. Use it with
    `nemo up --clusters FILE` or `nemo cluster add -f FILE`."""
    import yaml  # here: only this command pays for it

    from nemo_kernel.clusters.fleet import check_fleet_size, generate_fleet

    try:
        check_fleet_size(count, nodes)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    document = {"clusters": [spec.model_dump(mode="json") for spec in generate_fleet(count, nodes, seed)]}
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)  # libyaml when present: ten times faster
    text = yaml.dump(document, Dumper=dumper, sort_keys=False, width=120)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc}") from None
    say(f"{count} clusters of {nodes} nodes written to {out}")


def _duration(text: str) -> float:
    """Seconds from ``--for``: seconds (``60``) or a duration as every other one is written (``60s``, ``5m``)."""
    from nemo_kernel.domain.sla import seconds_or_duration  # lazily: the domain models load only when needed

    try:
        return seconds_or_duration(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not a duration (60, 60s, 5m, 1h)", param_hint="'--for'") from None


@app.command("fault")
def fault(
    name: str,
    down: Annotated[bool, typer.Option("--down", help="the cluster (or with --node, the node) goes down")] = False,
    node: Annotated[str | None, typer.Option("--node", help="with --down: the node that goes down")] = None,
    partition: Annotated[bool, typer.Option("--partition", help="unreachable; replicas keep running")] = False,
    slow: Annotated[int | None, typer.Option("--slow", help="delay every call by MS", metavar="MS")] = None,
    for_: Annotated[str, typer.Option("--for", help="how long until it ends by itself (60, 60s, 5m, 1h)")] = "60s",
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Inject a fault into a cluster; it ends by itself (`--for`). Works on sim clusters."""
    chosen = [flag for flag, on in (("--down", down), ("--partition", partition), ("--slow", slow is not None)) if on]
    if len(chosen) != 1:
        raise CliError("give one of --down, --node N --down, --partition, --slow MS")
    if node is not None and not down:
        raise CliError("--node goes with --down")
    body: dict[str, Any] = {"for_s": _duration(for_)}
    if down:
        body |= {"kind": "node_down", "node": node} if node is not None else {"kind": "down"}
    elif partition:
        body["kind"] = "partition"
    else:
        body |= {"kind": "slow", "slow_ms": slow}
    started = api_from_env_or(api).post(f"/clusters/{name}/faults", body)
    emit(started, output, lambda f: say(f"fault {f['spec']['kind']} on {f['cluster']} until {f['ends_at']}"))
