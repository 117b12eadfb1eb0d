"""``nemo up``: the whole control plane in one process, on embedded defaults unless configured."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from nemo_kernel.access.issuer import IdentityAdmin
from nemo_kernel.api import create_app
from nemo_kernel.api.security import ApiAccess
from nemo_kernel.cli.client import CliError
from nemo_kernel.cli.data_lock import DataDirectoryInUse, DataDirectoryLock
from nemo_kernel.cli.gateway_process import GatewayProcess, http_url, read_initial_config
from nemo_kernel.cli.options import listening_socket
from nemo_kernel.cli.output import Part, say
from nemo_kernel.cli.secret_files import read_json, write_secret_json
from nemo_kernel.clusters.serving import QuietServer
from nemo_kernel.config import Settings
from nemo_kernel.orchestrator import ControlPlane
from nemo_kernel.orchestrator.memory import tune_garbage_collection
from nemo_kernel.store.plane_lease import ControlPlaneLease, StoreInUse, StoreUnreachable


def _cli_command() -> str:
    """How to call this installation's ``nemo`` from here: ``nemo`` when it is the one on ``PATH``, else its path.

    A new user starts ``.venv/bin/nemo up`` without activating the venv; hints that say ``nemo ...`` would fail
    there with "command not found"."""
    ours = Path(sys.executable).with_name("nemo")
    found = shutil.which("nemo")
    if not ours.is_file() or (found is not None and Path(found).resolve() == ours.resolve()):
        return "nemo"
    try:
        return str(ours.relative_to(Path.cwd()))
    except ValueError:
        return str(ours)


def _write_endpoint(path: Path, url: str, gateway: str | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"url": url, "pid": os.getpid(), **({"gateway": gateway} if gateway else {})}))
    tmp.replace(path)


async def _prepare_access(settings: Settings, access: ApiAccess) -> Sequence[Part]:
    """Create the admin client on first start and write its credentials; the line telling how to get a token."""
    realm = access.realm
    if realm is None:
        return (f"Tokens: from the external issuer {access.issuer} (audience {access.audience})",)
    await realm.keys.signing_key()  # the first start makes its signing key now, not in the first token request
    admin = IdentityAdmin(realm.users, realm.clients, realm.hasher)
    issued = await admin.ensure_admin_client()
    path = settings.admin_credentials_file
    if issued is not None:
        # Written (0600) before anything is announced: whoever finds the endpoint file finds the credentials too.
        try:
            write_secret_json(
                path, {"client_id": issued.client.client_id, "client_secret": issued.secret, "issuer": access.issuer}
            )
        except OSError:
            # Nobody could ever use a client whose only copy of the secret was not written: drop it, so that the
            # next start (once the disk or the permissions are fixed) creates it again.
            await realm.clients.delete_client(issued.client.client_id)
            raise
        return _credentials_hint(path)
    saved = read_json(path)
    if saved is None:
        return (
            (f"Admin credentials file {path} is missing", "yellow"),
            "; with another admin's credentials, ",
            (f"{_cli_command()} client reset-secret nemo-admin", "bold"),
            " issues a new secret",
        )
    if saved.get("issuer") != access.issuer:
        # The issuer is the API's address, which moves when the port is picked afresh: keep the file pointing at it.
        write_secret_json(path, {**saved, "issuer": access.issuer})
    return _credentials_hint(path)


def _credentials_hint(path: Path) -> Sequence[Part]:
    return f"Admin credentials: {path};  token for curl: ", (f"TOKEN=$({_cli_command()} token)", "bold")


def serve(settings: Settings) -> None:
    """Run API and loops until SIGINT/SIGTERM; replicas keep running and are adopted by the next start."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per heartbeat is noise
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    # The SQLite store holds the issuer's private signing keys and the password hashes: owner only.
    settings.data_dir.chmod(0o700)
    lock = DataDirectoryLock(settings.data_dir)
    try:
        lock.acquire()
    except DataDirectoryInUse as exc:
        raise CliError(str(exc)) from None
    initial_gateway = read_initial_config(settings.gateway_config) if settings.gateway_enabled else None
    # Both sockets before anything else starts, so that a port in use stops `nemo up` with nothing to undo.
    sock = listening_socket(settings.api_host, settings.api_port, "API", "--host/--port (NEMO_API_HOST/NEMO_API_PORT)")
    gateway_sock = (
        listening_socket(settings.gateway_host, settings.gateway_port, "gateway", "NEMO_GATEWAY_HOST/NEMO_GATEWAY_PORT")
        if settings.gateway_enabled
        else None
    )
    url = http_url(sock)
    lock.record(url)
    tune_garbage_collection()  # before the plane holds a fleet's state
    plane = ControlPlane(settings)
    # One control plane per store, before any loop runs: a second one on the same PostgreSQL database would
    # deploy every workload again with agents of its own.
    lease = ControlPlaneLease(plane.db.url)
    try:
        lease.acquire(url)
    except (StoreInUse, StoreUnreachable) as exc:
        raise CliError(str(exc)) from None
    access = ApiAccess.from_settings(settings, plane.db, url)
    gateway: GatewayProcess | None = None
    if gateway_sock is not None:
        gateway = GatewayProcess(gateway_sock, plane.db.url.render_as_string(hide_password=False),
                                 settings.data_dir / "gateway.log")  # fmt: skip
        plane.db.after_commit(gateway.wake)  # it looks at the store after our commits, not ten times a second

    # The demo ships with the source tree, not with the wheel: name it only where it is.
    example = Path("examples/demo-workload.yaml")
    nemo = _cli_command()
    demo = f"{nemo} workload apply -f {example if example.is_file() else 'DESCRIPTOR.yaml'}"

    async def announce() -> None:
        how_to_get_a_token = await _prepare_access(settings, access)
        if gateway is not None:
            await asyncio.to_thread(gateway.seed, plane.db, url, initial_gateway)  # DB work off the event loop
            gateway.start()
            if plane.collector is not None:
                plane.collector.watch_gateway(gateway.url)  # its per-workload series go to the metrics store
        # The sockets are already listening, so the URLs are good as soon as they are printed.
        _write_endpoint(settings.endpoint_file, url, gateway.url if gateway else None)
        say(("NEMO Kernel is up.", "bold green"), " API: ", (url, "bold"), f"  (docs: {url}/docs)")
        if gateway is not None:
            say("Gateway: ", (gateway.url, "bold"), f"  (log: {gateway.log_file})")
        say(f"Data directory: {settings.data_dir}   Store: {plane.db.url.render_as_string()}")
        say(*how_to_get_a_token)
        say("Next: ", (f"{nemo} cluster list", "bold"), "; ", (demo, "bold"))

    app = create_app(plane, access, on_started=announce)
    server = QuietServer(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))

    def lease_lost(why: str) -> None:
        # Another plane took the store while this one's session was gone: two must never run, so this one goes.
        logging.getLogger(__name__).error("stopping: %s", why)
        server.handle_exit(signal.SIGTERM, None)

    lease.watch(lease_lost)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM, then re-raises the signal to the handler that was
    # installed before it; this one makes that a clean exit (status 0) instead of death by signal.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.handle_exit(signal.SIGTERM, None))
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        if gateway is not None:
            gateway.stop()
        if settings.endpoint_file.exists():
            try:
                if json.loads(settings.endpoint_file.read_text()).get("pid") == os.getpid():
                    settings.endpoint_file.unlink()
            except (OSError, ValueError):
                pass
        lease.release()
        lock.release()
        say("NEMO Kernel stopped; running replicas are left running and will be adopted on the next start.")
