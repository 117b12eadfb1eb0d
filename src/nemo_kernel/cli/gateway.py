"""``nemo gateway ...``: the gateway's stored configuration, exposing workloads, and running a gateway."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import CliError, api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption, listening_socket, load_document
from nemo_kernel.cli.output import OutputFormat, emit, print_table, say

app = typer.Typer(no_args_is_help=True)


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="declarative gateway YAML/JSON ('-' for stdin)")],
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Replace the whole gateway configuration with FILE (validated whole, stored in one transaction)."""
    stored = api_from_env_or(api).put("/gateway/config", load_document(file))
    emit(stored, output, lambda c: say(_summary(c)))


@app.command("get")
def get(api: ApiOption = None, output: OutputOption = OutputFormat.YAML) -> None:
    """Export the whole configuration (YAML by default: a file `nemo gateway apply` takes back). Secrets show as
    ********, which `nemo gateway apply` reads as "keep the stored secret"."""
    config = api_from_env_or(api).get("/gateway/config")
    emit(config, output, lambda c: say(_summary(c)))


def _summary(config: dict[str, Any]) -> str:
    counts = ", ".join(f"{len(config.get(s, []))} {s}" for s in ("services", "routes", "consumers", "plugins"))
    return f"gateway configuration: {counts}"


def _listing(section: str, columns: list[str], row: Any) -> None:
    @app.command(section, help=f"List the gateway's {section}.")
    def command(api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
        items = api_from_env_or(api).get(f"/gateway/{section}")
        emit(items, output, lambda xs: print_table(None, columns, [row(x) for x in xs]))


def _scope(p: dict[str, Any]) -> str:
    parts = [f"{k}={p[k]}" for k in ("service", "route", "consumer") if p.get(k)]
    return ", ".join(parts) or "global"


_listing(
    "services",
    ["NAME", "UPSTREAM", "FORWARD AUTHORIZATION"],
    lambda s: (s["name"], s.get("url") or f"workload {s['workload']}{s.get('path', '')}", s["forward_authorization"]),
)
_listing(
    "routes",
    ["NAME", "SERVICE", "PATHS", "METHODS", "HOSTS", "STRIP PATH"],
    lambda r: (r["name"], r["service"], ",".join(r["paths"]), ",".join(r.get("methods") or ["*"]),
               ",".join(r.get("hosts") or ["*"]), r["strip_path"]),
)  # fmt: skip
_listing(
    "consumers",
    ["USERNAME", "SUBJECTS", "ACTIVE", "EXPIRES"],
    lambda c: (c["username"], ",".join(c["subjects"]), c["active"], c.get("expires_at")),
)
_listing("plugins", ["ID", "NAME", "SCOPE", "ENABLED"], lambda p: (p["id"], p["name"], _scope(p), p["enabled"]))


@app.command("expose")
def expose(
    workload: Annotated[str, typer.Argument(help="workload name")],
    path: Annotated[str, typer.Option("--path", help="path prefix on the gateway, e.g. /demo")],
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    strip_path: Annotated[bool, typer.Option("--strip-path/--keep-path", help="drop the prefix upstream")] = True,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Route PATH on the gateway to the running replicas of a workload (round-robin), as service + route
    named ``<namespace>-<workload>``."""
    # Here, not at the top: the gateway package loads aiohttp, which every other `nemo` command would pay for.
    from pydantic import ValidationError

    from nemo_kernel.access.gateway.config import RouteConfig, ServiceConfig

    name = f"{namespace}-{workload}"
    try:
        # Both are checked before anything is stored, so a bad path does not leave a lone service behind.
        service = ServiceConfig(name=name, workload=f"{namespace}/{workload}")
        route = RouteConfig(name=name, service=name, paths=[path], strip_path=strip_path)
    except ValidationError as exc:
        raise CliError("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())) from None
    client = api_from_env_or(api)
    stored_service = client.put(f"/gateway/services/{name}", service.model_dump(mode="json", exclude_none=True))
    stored_route = client.put(f"/gateway/routes/{name}", route.model_dump(mode="json", exclude_none=True))
    result = {"service": stored_service, "route": stored_route}
    emit(result, output, lambda _: say(f"workload {namespace}/{workload} exposed at {path} ({name})"))


@app.command("unexpose")
def unexpose(
    workload: Annotated[str, typer.Argument(help="workload name")],
    namespace: Annotated[str, typer.Option("-n", "--namespace")] = "default",
    api: ApiOption = None,
) -> None:
    """Remove the route and service made by `nemo gateway expose`."""
    client = api_from_env_or(api)
    name = f"{namespace}-{workload}"
    client.delete(f"/gateway/routes/{name}")
    client.delete(f"/gateway/services/{name}")
    say(f"workload {namespace}/{workload} no longer exposed")


@app.command("run")
def run(
    database_url: Annotated[
        str | None, typer.Option(envvar="NEMO_DATABASE_URL", help="database holding the configuration")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="serve this declarative file instead")] = None,
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 7780,
) -> None:
    """Run a gateway standalone: the configuration stored in a database (applied live), or a file."""
    from nemo_kernel.access.gateway.__main__ import main as gateway_main
    from nemo_kernel.config import Settings

    # Bound here: a port in use (or beyond 65535) is one line naming the option, not a traceback (or a hang)
    sock = listening_socket(host, port, "gateway", "--host/--port")
    source = (
        ["--config", str(config)]
        if config is not None
        else ["--database-url", database_url or Settings().resolved_database_url()]
    )
    gateway_main([*source, "--fd", str(sock.detach())])
