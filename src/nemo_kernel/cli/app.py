"""The ``nemo`` command (Typer)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nemo_kernel.cli import (
    bus_commands,
    clusters,
    gateway,
    identities,
    metrics,
    migrations,
    modules,
    monitoring,
    rebalance,
    slas,
    workloads,
)
from nemo_kernel.cli.client import CliError, api_from_env_or, use_token
from nemo_kernel.cli.options import ApiOption, OutputOption, load_document
from nemo_kernel.cli.output import OutputFormat, complain, emit, print_table

app = typer.Typer(no_args_is_help=True, help="NEMO Kernel: control plane of the IoT-edge-cloud continuum.")
app.add_typer(clusters.app, name="cluster", help="Register and manage clusters.")
app.add_typer(workloads.app, name="workload", help="Apply and inspect workloads.")
app.add_typer(slas.app, name="sla", help="Service level agreements: apply, status, violations, OpenSLO, rules.")
app.add_typer(bus_commands.app, name="bus", help="Provision and inspect the RabbitMQ bus.")
app.add_typer(gateway.app, name="gateway", help="Configure the gateway, expose workloads, run a gateway.")
app.add_typer(modules.app, name="module", help="Keys of bus modules: keygen, register, rotate, revoke, list.")
app.add_typer(metrics.app, name="metrics", help="Query the analytics engine (embedded store or Prometheus).")
app.add_typer(metrics.top, name="top", help="Live usage of workloads, nodes and clusters, like kubectl top.")
app.add_typer(monitoring.app, name="monitoring", help="Prometheus configurations for the running stack.")
app.add_typer(identities.users, name="user", help="Users of the built-in identity provider.")
app.add_typer(identities.clients, name="client", help="OAuth clients of the built-in identity provider.")
app.add_typer(migrations.app, name="migration", help="Follow migrations: list, get.")
app.command("token")(identities.token)
app.command("migrate")(migrations.migrate)
app.command("rebalance")(rebalance.rebalance)


@app.callback()
def root(
    token: Annotated[
        str | None,
        typer.Option("--token", envvar="NEMO_TOKEN", help="bearer token to send instead of client credentials"),
    ] = None,
) -> None:
    """NEMO Kernel: control plane of the IoT-edge-cloud continuum."""
    use_token(token)


@app.command()
def up(
    host: Annotated[str | None, typer.Option(help="API address (default 127.0.0.1)")] = None,
    port: Annotated[int | None, typer.Option(help="API port (default 7700; 0 picks a free one)")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="data directory (default ~/.local/share/nemo)")] = None,
    clusters_file: Annotated[Path | None, typer.Option("--clusters", help="YAML clusters for the first start")] = None,
    database_url: Annotated[str | None, typer.Option(help="SQLAlchemy URL (default SQLite in the data dir)")] = None,
) -> None:
    """Run the control plane (API + reconcile loops) with three local clusters out of the box."""
    from pydantic import ValidationError

    from nemo_kernel.cli.up import serve
    from nemo_kernel.config import Settings

    overrides: dict[str, Any] = {
        k: v
        for k, v in {
            "api_host": host,
            "api_port": port,
            "data_dir": data_dir,
            "clusters_file": clusters_file,
            "database_url": database_url,
        }.items()
        if v is not None
    }
    try:
        settings = Settings(**overrides)
    except ValidationError as exc:
        # One line per bad setting, named as it is set, instead of a traceback.
        problems = (f"NEMO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise CliError("; ".join(problems)) from None
    serve(settings)


@app.command()
def petition(
    file: Annotated[Path, typer.Option("-f", "--file", help="petition YAML/JSON ('-' for stdin)")],
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Send a petition: `numberofclusters: N`, or `name/namespace/pathname` to deploy from a path or git repo."""
    result = api_from_env_or(api).post("/petitions", load_document(file))
    emit(result, output, lambda r: print_table(None, ["field", "value"], [(k, v) for k, v in r.items()]))


def main() -> None:
    """Entry point of the ``nemo`` script."""
    try:
        app()
    except CliError as exc:
        complain(str(exc))
        raise SystemExit(1) from None
