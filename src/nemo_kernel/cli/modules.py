"""``nemo module ...``: keys of bus modules (keygen locally; register, rotate, revoke and list through the API)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nemo_kernel.cli.client import CliError, api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption, load_document
from nemo_kernel.cli.output import OutputFormat, emit, print_table, say

if TYPE_CHECKING:
    from nemo_kernel.bus import ModuleIdentity

app = typer.Typer(no_args_is_help=True)

KeysOption = Annotated[
    Path, typer.Option("--keys", help="the module's public keys (JSON/YAML, as `nemo module keygen` writes them)")
]
SubscribeOption = Annotated[
    list[str] | None,
    typer.Option(
        "--subscribe",
        help="a routing key pattern the module reads (repeat; e.g. 'workload.*', 'cluster.#'); replaces the declared "
        "ones; without any, they stay as they are (a new module reads only its own namespace, MODULE.#)",
    ),
]


def _public_part(identity: ModuleIdentity) -> dict[str, Any]:
    # What a module hands to an admin: public keys only, nothing that could sign or decrypt.
    public = identity.public().to_dict()
    return {k: public[k] for k in ("module", "key_id", "signing_public", "encryption_public")}


def _keys_for(module: str, path: Path) -> dict[str, Any]:
    document = load_document(path)
    if not isinstance(document, dict):
        raise CliError(f"{path} does not hold a module's public keys (an object)")
    if any(k in document for k in ("signing_key", "encryption_key")):
        raise CliError(f"{path} holds private keys: give the public part only (`nemo module keygen` prints it)")
    if document.get("module", module) != module:
        raise CliError(f"{path} holds the keys of module {document['module']!r}, not {module!r}")
    return {**document, "module": module}


def _when(timestamp: float | None) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S") if timestamp else ""


def _with_subscriptions(body: dict[str, Any], subscribe: list[str] | None) -> dict[str, Any]:
    return {**body, "subscriptions": subscribe} if subscribe else body


def _rows(modules: list[dict[str, Any]]) -> None:
    print_table(
        None,
        ["MODULE", "KEY ID", "STATE", "CREATED (UTC)", "REVOKED (UTC)", "SUBSCRIPTIONS"],
        [
            (
                m["module"],
                k["key_id"],
                "revoked" if k["revoked"] else ("current" if k["current"] else "valid"),
                _when(k["created_at"]),
                _when(k["revoked_at"]),
                " ".join(m.get("subscriptions", [])),
            )
            for m in modules
            for k in m["keys"]
        ],
    )


@app.command("keygen")
def keygen(
    name: Annotated[str, typer.Argument(help="module name")],
    out: Annotated[Path, typer.Option("--out", help="identity file to create (0600; private keys)")],
    public: Annotated[Path | None, typer.Option("--public", help="also write the public part to this file")] = None,
) -> None:
    """Create a module identity in a new 0600 file and print its public part (what `nemo module register` takes)."""
    # Imported here: the bus package loads the AMQP client, which the other `nemo` commands do not need.
    from nemo_kernel.bus import ModuleIdentity

    if out.exists():
        raise CliError(f"{out} exists; refusing to overwrite a module identity")
    identity = ModuleIdentity.generate(name)
    identity.save(out)
    document = json.dumps(_public_part(identity), indent=2)
    if public is not None:
        public.write_text(document + "\n")
    print(document)


@app.command("register")
def register(
    name: Annotated[str, typer.Argument(help="module name")],
    keys: KeysOption,
    subscribe: SubscribeOption = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Register a module's public keys (they become its current keys) and the routing keys it reads."""
    entry = api_from_env_or(api).post("/modules", _with_subscriptions(_keys_for(name, keys), subscribe))
    emit(entry, output, lambda e: _rows([e]))


@app.command("rotate")
def rotate(
    name: Annotated[str, typer.Argument(help="module name")],
    keys: KeysOption,
    revoke_previous: Annotated[bool, typer.Option("--revoke-previous", help="revoke the older keys now")] = False,
    subscribe: SubscribeOption = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Make new public keys current; older keys stay valid for messages in flight unless --revoke-previous."""
    body = {**_with_subscriptions(_keys_for(name, keys), subscribe), "revoke_previous": revoke_previous}
    entry = api_from_env_or(api).post(f"/modules/{name}/rotate", body)
    emit(entry, output, lambda e: _rows([e]))


@app.command("revoke")
def revoke(
    name: Annotated[str, typer.Argument(help="module name")],
    key: Annotated[str | None, typer.Option("--key", help="key id (default: every key of the module)")] = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Revoke one key or all keys of a module: its messages are refused from now on."""
    result = api_from_env_or(api).post(f"/modules/{name}/revoke", {"key_id": key} if key else {})
    emit(result, output, lambda r: say(f"revoked {', '.join(r['revoked'])} of module {r['module']}"))


@app.command("list")
def list_(api: ApiOption = None, output: OutputOption = OutputFormat.TABLE) -> None:
    """Every module with its keys: current, valid (rotated out) or revoked."""
    emit(api_from_env_or(api).get("/modules"), output, _rows)
