"""``nemo cluster ...``"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption, load_document
from nemo_kernel.cli.output import Column, OutputFormat, emit, print_table, say

app = typer.Typer(no_args_is_help=True)


def _rows(clusters: list[dict[str, Any]]) -> None:
    print_table(
        None,
        [
            "NAME",
            "TIER",
            "REGION",
            "COUNTRY",
            "PHASE",
            "SCHEDULING",
            "SANDBOX",
            Column("NODES", optional=True),
            Column("EUR/CPU-h", optional=True),
            Column("gCO2/kWh", optional=True),
        ],
        [
            (
                c["spec"]["name"],
                c["spec"]["tier"],
                c["spec"]["region"],
                c["spec"]["country"],
                c["phase"],
                "cordoned" if c["cordoned"] else "ok",
                c.get("sandbox") or "-",
                len(c["spec"]["nodes"]),
                c["spec"]["prices"]["cpu_hour_eur"],
                c["spec"]["carbon_intensity"],
            )
            for c in clusters
        ],
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
def drain(name: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Cordon a cluster and move its replicas to other eligible clusters."""
    _schedulable("drain", name, api, output)


@app.command("uncordon")
def uncordon(name: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Make a cluster schedulable again."""
    _schedulable("uncordon", name, api, output)
