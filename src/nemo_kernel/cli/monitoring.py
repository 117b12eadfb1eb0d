"""``nemo monitoring``: Prometheus configurations for the running stack (layouts in ``cli.prometheus_config``)."""

from __future__ import annotations

import json
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer
import yaml

from nemo_kernel.cli import prometheus_config
from nemo_kernel.cli.client import ApiClient, CliError, api_from_env_or, local_endpoints
from nemo_kernel.cli.options import ApiOption
from nemo_kernel.cli.secret_files import write_secret
from nemo_kernel.config import Settings

app = typer.Typer(no_args_is_help=True)

VIEWER_ROLE = "nemo-viewer"
_NAME_URL = re.compile(r"([a-z0-9][a-z0-9-]{0,62})=(https?://[^\s]+)")


class Layout(StrEnum):
    """Which Prometheus servers watch the stack."""

    SINGLE = "single"
    FEDERATION = "federation"


@app.command("prometheus-config")
def prometheus_config_command(
    layout: Annotated[Layout, typer.Option(help="single Prometheus, or one per cluster plus a federating one")] = (
        Layout.SINGLE
    ),
    cluster: Annotated[
        str | None, typer.Option(help="federation: the config of this cluster's Prometheus (scrapes its agent)")
    ] = None,
    federate: Annotated[
        list[str] | None,
        typer.Option(help="federation: CLUSTER=URL of a cluster's Prometheus, for the federating config (repeat)"),
    ] = None,
    interval: Annotated[str, typer.Option(help="scrape interval (Prometheus duration, e.g. 15s)")] = "15s",
    secrets_dir: Annotated[
        Path | None, typer.Option(help="where token and secret files are written, 0600 (default DATA_DIR/prometheus)")
    ] = None,
    client_id: Annotated[str, typer.Option(help="the read-only OAuth client Prometheus gets tokens with")] = (
        "nemo-prometheus"
    ),
    client_secret_file: Annotated[
        Path | None, typer.Option(help="its secret (default: created with the client, in the secrets directory)")
    ] = None,
    api: ApiOption = None,
) -> None:
    """Print a Prometheus config (YAML) for the running stack; check it with `promtool check config`.

    NEMO's /metrics and /federate are read with a viewer client's tokens (OAuth2 client credentials): the client
    is created if its secret file is missing. Agents' tokens change when `nemo up` restarts: run this again then.
    """
    from nemo_kernel.domain.sla import duration_seconds  # lazily: the domain models load only when needed

    try:
        duration_seconds(interval)  # the domain's one duration rule: what Prometheus reads, at most 7 digits
    except ValueError:
        raise CliError(f"--interval: {interval!r} is not a Prometheus duration such as 15s or 1m") from None
    federated = dict(_name_url(item) for item in federate or ())
    if layout is Layout.SINGLE and (cluster or federated):
        raise CliError("--cluster and --federate are for --layout federation")
    if cluster and federated:
        raise CliError("--cluster and --federate are exclusive: one is a cluster's config, the other the federating")
    settings = Settings()
    client = api_from_env_or(api)
    directory = secrets_dir or settings.data_dir / "prometheus"
    oauth = _oauth_client(client, client_id, client_secret_file, directory)
    stack = prometheus_config.Stack(
        api_url=client.base_url,
        client=oauth,
        gateway_url=_gateway_of(settings, client.base_url),
        agents=_local_agents(client, settings, directory) if layout is Layout.FEDERATION else (),
    )
    try:
        if layout is Layout.SINGLE:
            config = prometheus_config.single(stack, interval)
        elif cluster:
            config = prometheus_config.for_cluster(stack, cluster, interval)
        else:
            config = prometheus_config.federating(stack, federated, interval)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(yaml.safe_dump(config, sort_keys=False), end="")


def _name_url(item: str) -> tuple[str, str]:
    match = _NAME_URL.fullmatch(item)
    if match is None:
        raise CliError(f"--federate: {item!r} is not CLUSTER=http(s)://host:port")
    return match.group(1), match.group(2)


def _oauth_client(
    client: ApiClient, client_id: str, secret_file: Path | None, directory: Path
) -> prometheus_config.OAuthClient:
    token_url = _token_url(client)
    if secret_file is not None:
        if not secret_file.is_file():
            raise CliError(f"--client-secret-file: {secret_file} is not a file")
        return prometheus_config.OAuthClient(client_id, secret_file.resolve(), token_url)
    path = (directory / f"{client_id}.secret").resolve()
    if not path.is_file():
        existing = {c["client_id"] for c in client.get("/clients")}
        if client_id in existing:
            issued = client.post(f"/clients/{client_id}/client-secret")
        else:
            body = {"client_id": client_id, "roles": [VIEWER_ROLE], "grant_types": ["client_credentials"]}
            issued = client.post("/clients", body)
        write_secret(path, str(issued["secret"]))
    return prometheus_config.OAuthClient(client_id, path, token_url)


def _token_url(client: ApiClient) -> str:
    """The token endpoint of the issuer the API trusts (its discovery document says where)."""
    try:
        issuer = httpx.get(f"{client.base_url}/.well-known/nemo-configuration", timeout=10).json()["issuer"]
        discovery = httpx.get(f"{issuer.rstrip('/')}/.well-known/openid-configuration", timeout=10).json()
        return str(discovery["token_endpoint"])
    except (httpx.HTTPError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise CliError(f"cannot find the token endpoint of the API's issuer: {exc}") from None


def _gateway_of(settings: Settings, api_url: str) -> str | None:
    """The gateway of the local ``nemo up``, if that is the API talked to."""
    urls = local_endpoints(settings)
    return urls[1] if len(urls) == 2 and urls[0].rstrip("/") == api_url else None


def _local_agents(client: ApiClient, settings: Settings, directory: Path) -> list[prometheus_config.Agent]:
    """The local clusters' agents: ``DATA_DIR/clusters/NAME/agent.json`` (same user as ``nemo up``) has each one's
    address and token; the token is copied to a file of its own, as Prometheus reads a bare credential."""
    agents = []
    for status in client.get("/clusters"):
        spec = status["spec"]
        if spec is None or spec.get("driver", "local") != "local":  # None: stored by an older NEMO, not managed
            continue
        try:
            endpoint = json.loads((settings.data_dir / "clusters" / spec["name"] / "agent.json").read_text())
            url, token = str(endpoint["url"]), str(endpoint["token"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # not running here (or not by this user): nothing to scrape
        token_file = (directory / f"agent-{spec['name']}.token").resolve()
        write_secret(token_file, token)
        labels = {"tier": str(spec["tier"]), "region": str(spec["region"])}
        agents.append(prometheus_config.Agent(spec["name"], url, token_file, labels))
    return agents
