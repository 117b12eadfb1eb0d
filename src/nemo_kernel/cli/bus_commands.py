"""``nemo bus``: provision the broker and show the bus at a glance (mounted by the CLI as ``nemo bus``)."""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from typing import Annotated

import typer

from nemo_kernel.cli.client import api_from_env_or
from nemo_kernel.cli.options import ApiOption
from nemo_kernel.cli.output import Column, print_table, say

app = typer.Typer(help="The RabbitMQ bus: provisioning and status.", no_args_is_help=True)

MgmtUrl = Annotated[str, typer.Option("--mgmt-url", envvar="NEMO_BUS_MGMT_URL", help="management API base URL")]
AdminUser = Annotated[str, typer.Option("--admin-user", envvar="NEMO_BUS_ADMIN_USER")]
Vhost = Annotated[str, typer.Option("--vhost")]


def _subscriptions(items: list[str]) -> dict[str, list[str]]:
    """``MODULE=PATTERN[,PATTERN...]`` options, repeatable, as module -> validated patterns."""
    # Imported here: the bus package loads the AMQP client, which the other `nemo` commands do not need.
    from nemo_kernel.bus.subscriptions import InvalidPattern, validate_pattern

    declared: dict[str, list[str]] = {}
    for item in items:
        module, sep, patterns = item.partition("=")
        if not sep or not module:
            raise typer.BadParameter(f"{item!r} is not MODULE=PATTERN[,PATTERN...]", param_hint="--subscribe")
        for pattern in patterns.split(","):
            try:
                declared.setdefault(module, []).append(validate_pattern(pattern))
            except InvalidPattern as exc:
                raise typer.BadParameter(f"{module}: {exc}", param_hint="--subscribe") from None
    return declared


def _admin_password() -> str:
    # From the environment or a prompt, never from argv (which other users can read in the process list).
    return os.environ.get("NEMO_BUS_ADMIN_PASSWORD") or typer.prompt("admin password", hide_input=True)


@app.command("provision")
def provision_command(
    modules: Annotated[list[str], typer.Argument(help="modules to create broker users for")],
    mgmt_url: MgmtUrl = "http://127.0.0.1:15672",
    admin_user: AdminUser = "admin",
    vhost: Vhost = "nemo",
    keep_guest: Annotated[bool, typer.Option("--keep-guest", help="do not delete the guest user")] = False,
    allow: Annotated[
        list[str] | None, typer.Option("--allow", help="MODULE=REGEX: routing keys the module may publish")
    ] = None,
    subscribe: Annotated[
        list[str] | None,
        typer.Option(
            "--subscribe",
            help="MODULE=PATTERN[,PATTERN...]: routing key patterns the module may bind (read), as declared in its "
            "registration; without it a module reads only its own namespace MODULE.#",
        ),
    ] = None,
    from_directory: Annotated[
        bool,
        typer.Option(
            "--from-directory",
            help="take each module's subscriptions from its registration in the control plane's module directory "
            "(`nemo module register --subscribe`); --subscribe still wins for the modules it names",
        ),
    ] = False,
    api: ApiOption = None,
    rotate_passwords: Annotated[bool, typer.Option("--rotate-passwords")] = False,
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """Create vhost, exchanges and one least-privilege user per module (idempotent); print new passwords once."""
    # Imported here: the bus package loads the AMQP client, which the other `nemo` commands do not need.
    from nemo_kernel.bus.provision import provision as provision_broker

    overrides = dict(item.split("=", 1) for item in allow or [])
    subscriptions: dict[str, list[str]] = {}
    if from_directory:
        registered = {m["module"]: m["subscriptions"] for m in api_from_env_or(api).get("/modules")}
        subscriptions = {m: registered[m] for m in modules if m in registered}
    subscriptions.update(_subscriptions(subscribe or []))
    unknown = sorted(set(subscriptions) - set(modules))
    if unknown:
        raise typer.BadParameter(f"not among the modules provisioned: {', '.join(unknown)}", param_hint="--subscribe")
    passwords = provision_broker(
        mgmt_url,
        admin_user,
        _admin_password(),
        modules,
        vhost=vhost,
        delete_guest=not keep_guest,
        publish_patterns=overrides,
        subscriptions=subscriptions,
        rotate_passwords=rotate_passwords,
    )
    if output == "json":
        typer.echo(json.dumps(passwords))
        return
    if not passwords:
        say("vhost ", (vhost, "bold"), " up to date; no new users (passwords unchanged)")
        return
    print_table(None, ["module", "password (shown once)"], list(passwords.items()))


@app.command("status")
def status_command(
    mgmt_url: MgmtUrl = "http://127.0.0.1:15672",
    admin_user: AdminUser = "admin",
    vhost: Vhost = "nemo",
    output: Annotated[str, typer.Option("-o", "--output", help="table or json")] = "table",
) -> None:
    """Modules, queues, depths, rates, consumers and refused (dead-lettered) messages by reason."""
    from nemo_kernel.bus.status import bus_status

    status = bus_status(mgmt_url, admin_user, _admin_password(), vhost=vhost)
    if output == "json":
        typer.echo(json.dumps(asdict(status), indent=2))
        return
    print_table(
        f"modules of vhost {vhost}", ["module", "connections"], [(m.name, m.connections) for m in status.modules]
    )
    print_table(
        None,
        ["queue", "ready", "unacked", "consumers", "in/s", "out/s", "ack/s", "refused", Column("reasons", wrap=True)],
        [
            (
                q.name,
                q.ready,
                q.unacked,
                q.consumers,
                f"{q.publish_rate:.1f}",
                f"{q.deliver_rate:.1f}",
                f"{q.ack_rate:.1f}",
                q.dead,
                ", ".join(f"{r}: {n}" for r, n in sorted(q.dead_reasons.items())),
            )
            for q in status.queues
        ],
    )
