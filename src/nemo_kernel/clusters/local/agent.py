"""The local cluster agent: one process per local cluster, serving its replicas over HTTP on loopback.

Run as ``python -m nemo_kernel.clusters.local.agent --cluster-file SPEC.json --state-dir DIR``. It binds
127.0.0.1 on a port chosen by the OS, then writes its URL, bearer token and pid to ``DIR/agent.json``
(mode 0600). API, every call with ``Authorization: Bearer <token>``:

- ``GET /v1/status[?since=REVISION]`` -> :class:`ClusterReport`: whole, or what changed since a revision it
  returned (``clusters.revisions``; an unknown one, from an earlier agent say, gets the whole report)
- ``PUT /v1/replicas/{id}`` with a :class:`ReplicaSpec` -> :class:`ReplicaReport` (idempotent)
- ``DELETE /v1/replicas/{id}`` -> 204 (idempotent)
- ``GET /metrics`` -> Prometheus text: ``nemo_replica_*`` and ``nemo_node_*`` series (``metrics.names``) and the
  series the replicas serve themselves (``deployment.metrics``), labelled replica, workload, namespace, node
- ``GET /v1/links`` -> the links emulated and the probe endpoints (:class:`LinksReport`)
- ``PUT /v1/links/{peer}`` with a :class:`~nemo_kernel.domain.Link` -> 204; ``DELETE /v1/links/{peer}`` -> 204
- ``POST /v1/links/{peer}/probe`` with a :class:`PeerProbe` -> :class:`PeerProbeResult` (round trips, null: lost)
- ``GET /v1/replicas/{id}/state``, ``POST /v1/replicas/{id}/state/freeze``, ``PUT /v1/replicas/{id}/state``,
  ``POST /v1/replicas/{id}/state/thaw``: the application state hand-off, relayed to the replica
  (:mod:`nemo_kernel.clusters.local.handoff`), bodies as bytes and versions in ``Nemo-State-*`` headers

On SIGTERM the agent exits and leaves its replicas running; the next agent on the directory adopts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import secrets
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import httpx
import psutil
import uvicorn
from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from nemo_kernel.clusters.base import ClusterReport, NodeReport, ReplicaReport, ReplicaSpec
from nemo_kernel.clusters.capabilities import MAX_STATE_BYTES, ProbeEndpoints
from nemo_kernel.clusters.errors import ReplicaRejected
from nemo_kernel.clusters.links import MAX_PROBES
from nemo_kernel.clusters.local.handoff import SINCE, ReplicaStateClient, read_snapshot, snapshot_headers
from nemo_kernel.clusters.local.linkproxy import LinkTable
from nemo_kernel.clusters.local.meter import ClusterMeter
from nemo_kernel.clusters.local.sandbox import DEFAULT_REPLICA_USER, SandboxUnavailable, detect
from nemo_kernel.clusters.local.state import (
    AGENT_FILE,
    LOCK_FILE,
    AgentEndpoint,
    make_private_dir,
    write_agent_endpoint,
)
from nemo_kernel.clusters.local.supervisor import ProcessSupervisor
from nemo_kernel.clusters.local.workload_metrics import ScrapeLimits, WorkloadScraper
from nemo_kernel.clusters.revisions import ReportRevisions
from nemo_kernel.clusters.serving import QuietServer
from nemo_kernel.domain import ClusterSpec, Link, Model, is_dns_label
from nemo_kernel.domain.errors import ApiError, error_body
from nemo_kernel.metrics.textformat import families_of, merge, render

METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

log = logging.getLogger("nemo_kernel.clusters.local.agent")


def _error(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    body = error_body(code, message, details)
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(status_code=status, content=body, headers=headers)


class LinksReport(Model):
    """The links an agent emulates, and where it answers probes."""

    links: dict[str, Link]
    probe: ProbeEndpoints


class PeerProbe(Model):
    """Probes to send to a peer's direct echo through this cluster's link to it."""

    address: str = Field(pattern=r"127\.0\.0\.1:[0-9]{1,5}", description="the peer's direct probe endpoint")
    count: int = Field(ge=1, le=MAX_PROBES)


class PeerProbeResult(Model):
    """Round trips in seconds, in send order; null for a probe lost."""

    rtts: list[float | None]


def create_app(
    cluster: ClusterSpec, supervisor: ProcessSupervisor, token: str, scrape_limits: ScrapeLimits | None = None
) -> FastAPI:
    """The agent's HTTP API over ``supervisor``, guarded by ``token``; the app starts and closes the supervisor."""
    node_names = {node.name for node in cluster.nodes}
    links = LinkTable(cluster.name)
    meter = ClusterMeter(cluster)
    scraper = WorkloadScraper(scrape_limits)
    # what changed between two heartbeats, numbered: the engine asks for changes since its last revision
    revisions = ReportRevisions()

    # replicas are on loopback: no proxy from the environment; a hand-off call is bounded by the driver's timeout
    replica_http = httpx.AsyncClient(trust_env=False, timeout=30.0)

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await supervisor.start()
        # no links until the control plane sets them: the spec file may be older than the cluster's links, and a
        # restarted agent must not bring back a link that was removed since
        await links.start()
        try:
            yield
        finally:
            await replica_http.aclose()
            await links.close()
            await supervisor.close()

    def state_of(replica_id: str) -> ReplicaStateClient:
        report = supervisor.report(replica_id)
        if report is None:
            raise ApiError(404, "unknown_replica", f"no replica {replica_id!r} on {cluster.name}")
        if report.url is None:
            raise ApiError(409, "replica_unavailable", f"replica {replica_id!r} has no port to hand state over")
        return ReplicaStateClient(replica_http, replica_id, report.url)

    async def authorized(authorization: Annotated[str | None, Header()] = None) -> None:
        scheme, _, given = (authorization or "").partition(" ")
        # compare_digest: the time taken must not tell how much of a guessed token was right
        if scheme.lower() != "bearer" or not secrets.compare_digest(given.encode(), token.encode()):
            raise ApiError(401, "unauthorized", "missing or wrong bearer token")

    app = FastAPI(
        title=f"NEMO local agent {cluster.name}",
        lifespan=lifespan,
        dependencies=[Depends(authorized)],
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )

    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.code, exc.message, exc.details)

    @app.exception_handler(ReplicaRejected)
    async def rejected(_: Request, exc: ReplicaRejected) -> JSONResponse:
        return _error(422, exc.code, exc.message, exc.details)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "")} for e in exc.errors()]
        return _error(422, "invalid", "request does not match the schema", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, "not_found" if exc.status_code == 404 else "http_error", str(exc.detail))

    @app.get("/v1/status")
    async def status(since: Annotated[str | None, Query(max_length=200)] = None) -> ClusterReport:
        replicas = await links.route(supervisor.reports())
        nodes = []
        for node in cluster.nodes:
            mine = [r for r in replicas if r.node == node.name]
            nodes.append(
                NodeReport(
                    name=node.name,
                    ready=True,
                    cpu_percent=round(sum(r.cpu_percent or 0.0 for r in mine), 1),
                    memory_mib=round(sum(r.memory_mib or 0.0 for r in mine), 1),
                )
            )
        revisions.update(replicas, nodes)
        return revisions.report(cluster.name, replicas, nodes, supervisor.sandbox.mode, since)

    @app.get("/metrics")
    async def metrics() -> Response:
        usages = supervisor.usage()
        now = time.time()
        own = meter.observe(usages, time.monotonic(), now)
        theirs = await scraper.scrape(usages)
        own.extend(scraper.samples(usages, now))
        return Response(render(families_of(own) + merge(theirs)), media_type=METRICS_CONTENT_TYPE)

    @app.put("/v1/replicas/{replica_id}")
    async def put_replica(replica_id: str, spec: ReplicaSpec) -> ReplicaReport:
        if spec.id != replica_id:
            raise ApiError(422, "id_mismatch", "the body's id differs from the path", {"path": replica_id})
        if spec.node not in node_names:
            message = f"cluster {cluster.name!r} has no node {spec.node!r}"
            raise ApiError(422, "unknown_node", message, {"nodes": sorted(node_names)})
        report = supervisor.ensure(spec)
        return (await links.route([report]))[0] if report.url is not None else report

    @app.get("/v1/replicas/{replica_id}/state")
    async def export_state(replica_id: str) -> Response:
        state = await state_of(replica_id).export()
        return Response(content=state.data, headers=snapshot_headers(state))

    @app.post("/v1/replicas/{replica_id}/state/freeze")
    async def freeze_state(replica_id: str, request: Request) -> Response:
        since = request.headers.get(SINCE)
        if since is not None and not since.isdecimal():
            raise ApiError(422, "invalid", f"{SINCE} must be a version number", {"field": SINCE})
        state = await state_of(replica_id).freeze(int(since) if since is not None else None)
        return Response(content=state.data, headers=snapshot_headers(state))

    @app.put("/v1/replicas/{replica_id}/state", status_code=204)
    async def import_state(replica_id: str, request: Request) -> Response:
        client = state_of(replica_id)
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_STATE_BYTES:
                raise ApiError(413, "state_too_large", f"a state holds at most {MAX_STATE_BYTES} bytes")
        await client.load(read_snapshot(request.headers, bytes(data)))
        return Response(status_code=204)

    @app.post("/v1/replicas/{replica_id}/state/thaw", status_code=204)
    async def thaw_state(replica_id: str) -> Response:
        await state_of(replica_id).thaw()
        return Response(status_code=204)

    @app.delete("/v1/replicas/{replica_id}", status_code=204)
    async def delete_replica(replica_id: str) -> Response:
        supervisor.remove(replica_id)
        return Response(status_code=204)

    @app.get("/v1/links")
    async def get_links() -> LinksReport:
        return LinksReport(links=links.links(), probe=links.endpoints)

    @app.put("/v1/links/{peer}", status_code=204)
    async def put_link(peer: str, link: Link) -> Response:
        links.set(_peer(peer), link)
        return Response(status_code=204)

    @app.delete("/v1/links/{peer}", status_code=204)
    async def delete_link(peer: str) -> Response:
        links.set(_peer(peer), None)
        return Response(status_code=204)

    @app.post("/v1/links/{peer}/probe")
    async def probe_peer(peer: str, body: PeerProbe) -> PeerProbeResult:
        host, _, port = body.address.partition(":")
        if not 0 < int(port) < 65536:
            raise ApiError(422, "invalid", "address: port out of range", {"address": body.address})
        return PeerProbeResult(rtts=await links.probe_peer(_peer(peer), host, int(port), body.count))

    return app


def _peer(peer: str) -> str:
    if not is_dns_label(peer):
        raise ApiError(422, "invalid", "peer: must be controlplane or a cluster name (a DNS label)", {"peer": peer})
    return peer


def _lock_state_dir(state_dir: Path) -> int:
    """Hold the directory's lock for the agent's lifetime: two agents would fight over the same replicas."""
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SystemExit(f"another agent already serves {state_dir}") from None
    return fd


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m nemo_kernel.clusters.local.agent``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--cluster-file", type=Path, required=True, help="ClusterSpec as JSON")
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, help="hidden from replicas (default: the state dir's grandparent)")
    parser.add_argument("--replica-user", default=DEFAULT_REPLICA_USER, help="user replicas run as if we are root")
    parser.add_argument("--port", type=int, default=0, help="0 (default) lets the OS choose")
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # httpx logs every request at INFO: one line per health probe of every replica would drown the log
    logging.getLogger("httpx").setLevel(logging.WARNING)

    cluster = ClusterSpec.model_validate_json(args.cluster_file.read_bytes())
    state_dir: Path = args.state_dir.resolve()
    make_private_dir(state_dir)
    lock_fd = _lock_state_dir(state_dir)
    try:
        # the launcher's layout is DATA_DIR/clusters/<name>: the default hides the whole data directory
        sandbox = detect(args.data_dir or state_dir.parent.parent, args.replica_user)
    except SandboxUnavailable as exc:
        raise SystemExit(f"agent of cluster {cluster.name}: {exc}") from None

    # bind before writing agent.json: whoever reads the file can connect at once (the backlog holds them)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", args.port))
    port = sock.getsockname()[1]
    token = secrets.token_urlsafe(32)
    me = psutil.Process()
    endpoint = AgentEndpoint(url=f"http://127.0.0.1:{port}", token=token, pid=me.pid, create_time=me.create_time())
    app = create_app(cluster, ProcessSupervisor(cluster.name, state_dir, sandbox), token)
    # the asyncio loop, not uvloop: the supervisor reaps its own children by pid and wants no surprises
    # no Date header: the control plane never reads it, and without one the server need not wake every second
    config = uvicorn.Config(
        app, loop="asyncio", log_level="warning", access_log=False, lifespan="on", date_header=False
    )
    server = QuietServer(config)
    write_agent_endpoint(state_dir / AGENT_FILE, endpoint)
    log.info("agent of cluster %s listening on %s (pid %s)", cluster.name, endpoint.url, endpoint.pid)
    try:
        asyncio.run(server.serve(sockets=[sock]))
    finally:
        with contextlib.suppress(FileNotFoundError):
            current = (state_dir / AGENT_FILE).read_bytes()
            if AgentEndpoint.model_validate_json(current).pid == me.pid:
                (state_dir / AGENT_FILE).unlink()
        os.close(lock_fd)
    sys.exit(0 if server.started else 1)


if __name__ == "__main__":
    main()
