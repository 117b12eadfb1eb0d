"""``nemo migrate WORKLOAD --to CLUSTER[/NODE]`` and ``nemo migration list|get``."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import ApiClient, CliError, api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption, WaitTimeout
from nemo_kernel.cli.output import Column, OutputFormat, emit, print_table, progress

app = typer.Typer(no_args_is_help=True)
FINAL = ("Completed", "Failed", "RolledBack")


def migrate(
    workload: Annotated[str, typer.Argument(help="'name' (namespace default) or 'namespace/name'")],
    to: Annotated[str | None, typer.Option("--to", help="CLUSTER or CLUSTER/NODE")] = None,
    runtime: Annotated[str | None, typer.Option(help="runtime class on the target (runc, runh, ...)")] = None,
    mode: Annotated[str | None, typer.Option(help="recreate | stateless | stateful (default: the workload's)")] = None,
    replica: Annotated[str | None, typer.Option(help="the replica to move (default: the first running)")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="show the phases until the move ends")] = False,
    timeout: WaitTimeout = 300.0,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Move a replica of a workload to another cluster, node or runtime."""
    target: dict[str, str] = {}
    if to is not None:
        cluster, _, node = to.partition("/")
        target["cluster"] = cluster
        if node:
            target["node"] = node
    if runtime is not None:
        target["runtime"] = runtime
    body: dict[str, Any] = {"workload": workload, "to": target}
    if replica is not None:
        body["replica"] = replica
    if mode is not None:
        body["mode"] = mode
    client = api_from_env_or(api)
    migration = client.post("/migrations", body)
    if wait:
        migration = _follow(client, migration, timeout)
    emit(migration, output, _detail)
    if wait and migration["phase"] != "Completed":
        raise CliError(f"migration {migration['id']} {migration['phase']}: {migration['message']}")


def _follow(client: ApiClient, migration: dict[str, Any], timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with progress(_line(migration)) as update:
        while migration["phase"] not in FINAL:
            if time.monotonic() > deadline:
                raise CliError(f"migration {migration['id']} still {migration['phase']} after {timeout:g} s")
            time.sleep(0.2)  # polling interval of a progress display
            migration = client.get(f"/migrations/{migration['id']}")
            update(_line(migration))
    return migration


def _line(m: dict[str, Any]) -> str:
    done = " -> ".join(t["phase"] for t in m["timings"])
    return f"migration {m['id']} [{done}] {m['message']}"


def _summary(migrations: list[dict[str, Any]]) -> None:
    print_table(
        None,
        [
            "ID",
            "WORKLOAD",
            "MODE",
            "PHASE",
            "FROM",
            "TO",
            Column("DOWNTIME ms", optional=True),
            Column("MESSAGE", wrap=True),
        ],
        [
            (
                m["id"],
                m["workload"],
                m["mode"],
                m["phase"],
                f"{m['source_cluster']}/{m['source_node']}",
                f"{m['target_cluster']}/{m['target_node']}"
                + (f" ({m['target_runtime']})" if m["target_runtime"] else ""),
                "" if m["downtime_ms"] is None else m["downtime_ms"],
                m["message"],
            )
            for m in migrations
        ],
    )


def _detail(m: dict[str, Any]) -> None:
    _summary([m])
    print_table(
        "phases",
        ["PHASE", "STARTED", "ENDED"],
        [(t["phase"], t["started_at"], t["ended_at"] or "") for t in m["timings"]],
    )


@app.command("list")
def list_(
    workload: Annotated[str | None, typer.Option(help="only this workload's")] = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Migrations, newest first."""
    params = {"workload": workload} if workload else {}
    emit(api_from_env_or(api).get("/migrations", **params), output, _summary)


@app.command()
def get(migration_id: int, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """One migration with its phases and measured downtime."""
    emit(api_from_env_or(api).get(f"/migrations/{migration_id}"), output, _detail)
