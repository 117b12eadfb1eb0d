"""``nemo token``, ``nemo user ...`` and ``nemo client ...`` (the built-in issuer's identities, through the API)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import CliError, api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption
from nemo_kernel.cli.output import OutputFormat, emit, print_table, say

users = typer.Typer(no_args_is_help=True)
clients = typer.Typer(no_args_is_help=True)

RoleOption = Annotated[list[str] | None, typer.Option("--role", help="realm role, e.g. nemo-viewer (repeatable)")]


def token(api: ApiOption = None) -> None:
    """Print a fresh access token, e.g. curl -H "Authorization: Bearer $(nemo token)" ..."""
    print(api_from_env_or(api).access_token(fresh=True))


# --- users ---------------------------------------------------------------------------------------------------------


def _user_rows(found: list[dict[str, Any]]) -> None:
    print_table(
        None,
        ["USERNAME", "ENABLED", "ROLES", "EMAIL", "CREATED"],
        [(u["username"], u["enabled"], ",".join(u["roles"]), u["email"], u["created_at"]) for u in found],
    )


def _password(from_stdin: bool) -> str:
    # Never an argument value: argv is visible to every user of the machine in the process list.
    if from_stdin:
        line = sys.stdin.readline().rstrip("\r\n")
        if not line:
            raise CliError("--password-stdin: no password on standard input")
        return line
    # The prompt goes to stderr so that `-o json` output stays parseable.
    return str(typer.prompt("password", hide_input=True, confirmation_prompt=True, err=True))


@users.command("add")
def add_user(
    username: str,
    role: RoleOption = None,
    email: Annotated[str | None, typer.Option(help="e-mail address")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from stdin")] = False,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a user (password from a prompt, or the first line of stdin with --password-stdin)."""
    client = api_from_env_or(api)
    body: dict[str, Any] = {"username": username, "password": _password(password_stdin), "roles": role or []}
    if email is not None:
        body["email"] = email
    emit(client.post("/users", body), output, lambda u: _user_rows([u]))


@users.command("list")
def list_users(api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """List users."""
    emit(api_from_env_or(api).get("/users"), output, _user_rows)


@users.command("remove")
def remove_user(username: str, api: ApiOption = None) -> None:
    """Remove a user; its tokens stop working at once."""
    api_from_env_or(api).delete(f"/users/{username}")
    say(f"user {username} removed")


def _set_enabled(
    path: str, enabled: bool, api: str | None, output: OutputFormat, rows: Callable[[list[dict[str, Any]]], None]
) -> None:
    emit(api_from_env_or(api).patch(path, {"enabled": enabled}), output, lambda found: rows([found]))


@users.command("disable")
def disable_user(username: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Disable a user; its tokens stop working at once."""
    _set_enabled(f"/users/{username}", False, api, output, _user_rows)


@users.command("enable")
def enable_user(username: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Enable a user again."""
    _set_enabled(f"/users/{username}", True, api, output, _user_rows)


# --- clients -------------------------------------------------------------------------------------------------------


def _client_rows(found: list[dict[str, Any]]) -> None:
    print_table(
        None,
        ["CLIENT ID", "ENABLED", "ROLES", "GRANTS", "CREATED"],
        [
            (c["client_id"], c["enabled"], ",".join(c["roles"]), ",".join(c["grant_types"]), c["created_at"])
            for c in found
        ],
    )


def _with_secret(issued: dict[str, Any], output: OutputFormat) -> None:
    def table(c: dict[str, Any]) -> None:
        _client_rows([c])
        say("client secret (shown this once): ", (c["secret"], "bold"))

    emit(issued, output, table)


@clients.command("add")
def add_client(
    client_id: str,
    role: RoleOption = None,
    grant: Annotated[
        list[str] | None, typer.Option("--grant", help="client_credentials (default), password, refresh_token")
    ] = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Add a confidential client; its secret is printed once."""
    body = {"client_id": client_id, "roles": role or [], "grant_types": grant or ["client_credentials"]}
    _with_secret(api_from_env_or(api).post("/clients", body), output)


@clients.command("list")
def list_clients(api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """List clients."""
    emit(api_from_env_or(api).get("/clients"), output, _client_rows)


@clients.command("remove")
def remove_client(client_id: str, api: ApiOption = None) -> None:
    """Remove a client; its tokens stop working at once."""
    api_from_env_or(api).delete(f"/clients/{client_id}")
    say(f"client {client_id} removed")


@clients.command("disable")
def disable_client(client_id: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Disable a client; its tokens stop working at once."""
    _set_enabled(f"/clients/{client_id}", False, api, output, _client_rows)


@clients.command("enable")
def enable_client(client_id: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Enable a client again."""
    _set_enabled(f"/clients/{client_id}", True, api, output, _client_rows)


@clients.command("reset-secret")
def reset_secret(client_id: str, api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Give a client a new secret (printed once); the old secret stops working."""
    _with_secret(api_from_env_or(api).post(f"/clients/{client_id}/client-secret"), output)
