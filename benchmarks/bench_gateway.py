"""Gateway throughput and latency on loopback: upstream direct, nginx as reverse proxy, NEMO gateway without
plugins, and with oidc + acl + rate-limiting + ip-restriction. Same load generator (wrk), same run.

The upstream is nginx answering a fixed 2-byte body, so the upstream is never the bottleneck. nginx (one worker)
and the gateway (one process) are pinned to CPU 0, wrk to CPU 1: the figures are per core.

Added latency at half load: for each NEMO gateway setup, an open-loop generator (this script with
``--open-loop``, pinned to CPU 1; wrk2's method, which Debian does not ship) sends requests at a fixed rate of
half that setup's measured maximum over the same number of keep-alive connections, first straight to the
upstream, then through the gateway. Latency counts from each request's scheduled send time, so a stall is not
hidden by the generator waiting for it (no coordinated omission). Added = gateway - direct.

Usage: ``.venv/bin/python benchmarks/bench_gateway.py [--duration 10] [--append benchmarks/RESULTS.md]``
Needs ``wrk`` and ``nginx`` (Debian: ``apt-get install -y wrk nginx-light``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import jwt
import yaml

from nemo_kernel.access.issuer.keys import SigningKey


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, deadline: float = 10.0) -> None:
    """Poll until something accepts on ``port`` (benchmark setup only; tests never poll)."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def nginx_conf(work: Path, upstream: int, proxy: int) -> Path:
    conf = work / "nginx.conf"
    conf.write_text(f"""
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  keepalive_requests 10000000;
  upstream backend {{ server 127.0.0.1:{upstream}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{upstream};
    location /realms/ {{ root {work}/static; default_type application/json; }}
    location / {{ return 200 "ok"; }}
  }}
  server {{
    listen 127.0.0.1:{proxy};
    location / {{ proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
""")
    return conf


def wrk(url: str, duration: int, connections: int, headers: dict[str, str]) -> dict[str, float]:
    args = ["taskset", "-c", "1", "wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", url]
    for name, value in headers.items():
        args[5:5] = ["-H", f"{name}: {value}"]
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]

    def pct(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {"rps": rps, "p50": pct("50"), "p99": pct("99"), "errors": float(non2xx.group(1)) if non2xx else 0.0}


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection of the open-loop generator; one request at a time, no pipelining.

    Hand-written rather than aiohttp's client: the generator must stay far from saturating its own core at the
    rates measured, or its queueing would be counted as the gateway's latency.
    """

    def __init__(self, idle: list[_Connection]) -> None:
        self.idle = idle
        self.transport: asyncio.Transport | None = None
        self.buffer = b""
        self.done: Callable[[int], None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return
        head = self.buffer[:end].lower()
        at = head.find(b"content-length:")
        length = int(head[at + 15 :].split(b"\r\n", 1)[0]) if at >= 0 else 0
        if len(self.buffer) < end + 4 + length:
            return
        status = int(self.buffer[9:12])
        self.buffer = self.buffer[end + 4 + length :]
        done, self.done = self.done, None
        if b"connection: close" not in head:  # nginx closes a keep-alive connection after 1,000 requests
            self.idle.append(self)
        if done is not None:
            done(status)

    def connection_lost(self, exc: Exception | None) -> None:
        if self in self.idle:
            self.idle.remove(self)
        if self.done is not None:
            self.done(0)


async def _open_loop(
    url: str, rate: float, duration: float, headers: dict[str, str], connections: int
) -> dict[str, float]:
    """As wrk2 does: ``connections`` keep-alive connections, requests due at fixed times, a request waits for a
    free connection when all are busy, and its latency counts from when it was due."""
    loop = asyncio.get_running_loop()
    parts = urlsplit(url)
    lines = [f"GET {parts.path or '/'} HTTP/1.1", f"Host: {parts.netloc}", *(f"{k}: {v}" for k, v in headers.items())]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode()
    idle: list[_Connection] = []
    due: deque[float] = deque()
    # perf_counter, not loop.time(): uvloop's clock ticks in whole milliseconds, cached per loop iteration.
    clock = time.perf_counter
    latencies: list[float] = []
    errors = 0
    total = int(rate * duration)
    finished = asyncio.Event()

    def dispatch() -> None:
        while idle and due:
            conn, when = idle.pop(), due.popleft()
            conn.done = lambda status, when=when: complete(status, when)
            assert conn.transport is not None
            conn.transport.write(request)

    def complete(status: int, when: float) -> None:
        nonlocal errors
        latencies.append(clock() - when)
        errors += status != 200
        if len(latencies) == total:
            finished.set()
        dispatch()

    async def connect() -> None:
        _, conn = await loop.create_connection(lambda: _Connection(idle), parts.hostname, parts.port)
        idle.append(conn)

    for _ in range(connections):
        await connect()
    start = clock() + 0.05
    for i in range(total):
        when = start + i / rate
        delay = when - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        due.append(when)
        dispatch()
    await finished.wait()
    elapsed = clock() - start
    for conn in idle:
        if conn.transport is not None:
            conn.transport.close()
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {"rate": len(latencies) / elapsed, "p50": pct(0.50), "p99": pct(0.99), "errors": float(errors)}


def open_loop(url: str, rate: float, duration: int, headers: dict[str, str], connections: int) -> dict[str, float]:
    """Run the open-loop generator in its own process on CPU 1 (as wrk is)."""
    args = ["taskset", "-c", "1", sys.executable, __file__, "--open-loop", url, "--rate", str(rate)]
    args += ["--duration", str(duration), "--headers", json.dumps(headers), "--connections", str(connections)]
    return dict(json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--append", type=Path, default=None)
    parser.add_argument("--open-loop", default=None, help=argparse.SUPPRESS)  # the generator's own process
    parser.add_argument("--rate", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--headers", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.open_loop:
        import uvloop

        headers = json.loads(args.headers)
        result = uvloop.run(_open_loop(args.open_loop, args.rate, args.duration, headers, args.connections))
        print(json.dumps(result))
        return
    for tool in ("wrk", "nginx", "taskset"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install -y wrk nginx-light")
    load = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="nemo-bench-"))
    work.chmod(0o755)  # nginx workers run as an unprivileged user and must read the static JWKS
    upstream, proxy, gw_plain, gw_full = free_port(), free_port(), free_port(), free_port()
    issuer = f"http://127.0.0.1:{upstream}/realms/bench"
    key = SigningKey.generate("RS256")
    static = work / "static" / "realms" / "bench"
    (static / ".well-known").mkdir(parents=True)
    (static / "protocol" / "openid-connect").mkdir(parents=True)
    (static / ".well-known" / "openid-configuration").write_text(
        json.dumps({"issuer": issuer, "jwks_uri": f"{issuer}/protocol/openid-connect/certs"})
    )
    (static / "protocol" / "openid-connect" / "certs").write_text(json.dumps({"keys": [key.public_jwk()]}))
    now = int(time.time())
    token = jwt.encode(
        {"iss": issuer, "aud": "nemo-api", "sub": "bench", "azp": "bench", "iat": now, "exp": now + 3600,
         "jti": "bench", "realm_access": {"roles": ["nemo-viewer"]}},
        key.private_key(),  # type: ignore[arg-type]
        algorithm="RS256",
        headers={"kid": key.kid},
    )  # fmt: skip
    service = {"name": "up", "url": f"http://127.0.0.1:{upstream}"}
    route = {"name": "all", "service": "up", "paths": ["/"], "strip_path": False}
    plain = {"services": [service], "routes": [route]}
    full = {
        **plain,
        "plugins": [
            {"name": "ip-restriction", "config": {"allow": ["127.0.0.0/8"]}},
            {"name": "oidc", "config": {"issuer": issuer, "audience": "nemo-api"}},
            {"name": "acl", "config": {"allow": ["nemo-viewer"]}},
            {"name": "rate-limiting", "config": {"second": 1_000_000, "minute": 100_000_000, "limit_by": "consumer"}},
        ],
    }
    (work / "plain.yaml").write_text(yaml.safe_dump(plain))
    (work / "full.yaml").write_text(yaml.safe_dump(full))
    procs = [subprocess.Popen(["taskset", "-c", "0", "nginx", "-c", str(nginx_conf(work, upstream, proxy))])]
    gateway_cmd = [sys.executable, "-m", "nemo_kernel.access.gateway", "--host", "127.0.0.1"]
    for port, conf in ((gw_plain, "plain.yaml"), (gw_full, "full.yaml")):
        cmd = ["taskset", "-c", "0", *gateway_cmd, "--port", str(port), "--config", str(work / conf)]
        procs.append(subprocess.Popen(cmd))
    try:
        for port in (upstream, proxy, gw_plain, gw_full):
            wait_port(port)
        auth = {"Authorization": f"Bearer {token}"}
        cases = [
            ("upstream direct (nginx return 200)", upstream, {}),
            ("nginx reverse proxy", proxy, {}),
            ("NEMO gateway, no plugins", gw_plain, {}),
            ("NEMO gateway, ip-restriction+oidc+acl+rate-limiting", gw_full, auth),
        ]
        rows = []
        for name, port, headers in cases:
            url = f"http://127.0.0.1:{port}/bench"
            probe = httpx.get(url, headers=headers)
            if probe.status_code != 200:
                print(f"{name}: probe answered {probe.status_code} {probe.text[:300]}", file=sys.stderr)
            wrk(url, 2, args.connections, headers)  # warm-up: pools, JWKS fetch, JIT-free but caches
            loaded = wrk(url, args.duration, args.connections, headers)
            idle = wrk(url, max(args.duration // 2, 3), 1, headers)
            half: tuple[dict[str, float], dict[str, float]] | None = None
            if port in (gw_plain, gw_full):
                rate = loaded["rps"] / 2
                direct = open_loop(f"http://127.0.0.1:{upstream}/bench", rate, args.duration, {}, args.connections)
                half = (direct, open_loop(url, rate, args.duration, headers, args.connections))
            rows.append((name, loaded, idle, half))
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)
    direct_idle = rows[0][2]
    lines = [
        f"| setup | req/s (1 core, c={args.connections}) | p50 / p99 ms at c={args.connections} | "
        "p50 / p99 ms at c=1 | added p50 / p99 ms at c=1 vs direct | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    half_lines = [
        "| setup | open-loop rate (half of max), req/s | direct p50 / p99 ms | through gateway p50 / p99 ms "
        "| added p50 / p99 ms | non-2xx |",
        "|---|---|---|---|---|---|",
    ]
    for name, loaded, idle, half in rows:
        lines.append(
            f"| {name} | {loaded['rps']:,.0f} | {loaded['p50']:.2f} / {loaded['p99']:.2f} | "
            f"{idle['p50']:.3f} / {idle['p99']:.3f} | {idle['p50'] - direct_idle['p50']:.3f} / "
            f"{idle['p99'] - direct_idle['p99']:.3f} | {int(loaded['errors'] + idle['errors'])} |"
        )
        if half is not None:
            direct, through = half
            half_lines.append(
                f"| {name} | {through['rate']:,.0f} | {direct['p50']:.3f} / {direct['p99']:.3f} | "
                f"{through['p50']:.3f} / {through['p99']:.3f} | {through['p50'] - direct['p50']:.3f} / "
                f"{through['p99'] - direct['p99']:.3f} | {int(direct['errors'] + through['errors'])} |"
            )
    table = "\n".join(lines) + "\n\nAdded latency at half load (open loop, fixed rate):\n\n" + "\n".join(half_lines)
    print(table)
    if args.append:
        header = "# Benchmark results\n\nFigures appended by the scripts in `benchmarks/`, newest last.\n"
        if not args.append.exists():
            args.append.write_text(header)
        with args.append.open("a") as out:
            out.write(
                f"\n## Gateway (access) — {time.strftime('%Y-%m-%d %H:%M')}\n\n"
                f"Command: `.venv/bin/python benchmarks/bench_gateway.py --duration {args.duration} "
                f"--connections {args.connections} --append benchmarks/RESULTS.md` on {os.cpu_count()} cores; "
                "servers pinned to CPU 0, wrk (1 thread) to CPU 1; "
                f"load average before the run {load[0]:.2f} (other work on the machine adds noise).\n\n" + table + "\n"
            )


if __name__ == "__main__":
    main()
