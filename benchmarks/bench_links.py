"""What the local agent's link proxy costs when it shapes nothing: round-trip latency and throughput through the
proxy (a link with no delay, loss or cap) against a direct connection to the same replica, alternating.

A real agent (``LocalAgentLauncher``) runs one replica: a TCP server that either echoes (ping-pong of small
messages on one connection) or sends N bytes and closes (a download). The client is this process, with blocking
sockets, so the figures are what a caller on the same machine sees.

    .venv/bin/python benchmarks/bench_links.py --rounds 5 --pings 2000 --mib 64
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from nemo_kernel.clusters import ReplicaSpec
from nemo_kernel.clusters.local import LocalAgentLauncher, LocalClusterDriver
from nemo_kernel.clusters.local.sandbox import SAFE_PATH
from nemo_kernel.domain import ClusterSpec, Link, NodeSpec, PortSpec, Tier

SERVER = r"""
import os, socket, threading
def serve(conn):
    with conn:
        f = conn.makefile("rb")
        line = f.readline()
        if line.startswith(b"get "):
            left = int(line[4:]); block = b"x" * 65536
            while left > 0:
                conn.sendall(block[:min(left, 65536)]); left -= 65536
            return
        while True:  # ping: echo each 64-byte message
            data = f.read(64)
            if len(data) < 64:
                return
            conn.sendall(data)
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"]))); s.listen(64)
while True:
    c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"""


def _address(url: str) -> tuple[str, int]:
    host, _, port = url.removeprefix("http://").partition(":")
    return host, int(port)


def ping(url: str, count: int) -> float:
    """Median round trip (ms) of ``count`` 64-byte messages on one connection."""
    with socket.create_connection(_address(url)) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn.sendall(b"ping\n")
        message = b"p" * 64
        took = []
        for _ in range(count):
            started = time.perf_counter()
            conn.sendall(message)
            got = 0
            while got < 64:
                got += len(conn.recv(64 - got))
            took.append(time.perf_counter() - started)
    return statistics.median(took) * 1000


def download(url: str, nbytes: int) -> float:
    """Throughput (MiB/s) of one download of ``nbytes``."""
    started = time.perf_counter()
    with socket.create_connection(_address(url)) as conn:
        conn.sendall(f"get {nbytes}\n".encode())
        got = 0
        while chunk := conn.recv(1 << 20):
            got += len(chunk)
    assert got == nbytes, got
    return nbytes / (time.perf_counter() - started) / (1 << 20)


async def _urls(driver: LocalClusterDriver) -> str:
    for _ in range(200):
        replicas = (await driver.status()).replicas
        if replicas and replicas[0].phase.value == "Running" and replicas[0].url:
            return replicas[0].url
        await asyncio.sleep(0.1)
    raise SystemExit("the replica did not start")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--pings", type=int, default=2000)
    parser.add_argument("--mib", type=int, default=64)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-links-"))
    launcher = LocalAgentLauncher(root / "clusters", request_timeout=5.0)
    spec = ClusterSpec(
        name="bench", tier=Tier.EDGE, region="x", country="ES", nodes=[NodeSpec(name="n1", cpu=2, memory_mib=1024)]
    )
    python = shutil.which("python3", path=SAFE_PATH) or sys.executable
    driver = await launcher.ensure(spec)
    try:
        replica = ReplicaSpec(
            id="srv", workload="default/srv", version=1, index=0, node="n1",
            command=[python, "-c", SERVER], env={"RUN": uuid.uuid4().hex}, ports=[PortSpec(name="tcp")],
        )  # fmt: skip
        await driver.ensure_replica(replica)
        direct = await _urls(driver)
        await driver.set_link("controlplane", Link())  # a proxy that shapes nothing
        proxied = (await driver.status()).replicas[0].url
        assert proxied is not None and proxied != direct
        results: dict[str, dict[str, list[float]]] = {m: {"ping": [], "mib_s": []} for m in ("direct", "proxy")}
        for _ in range(args.rounds):
            for mode, url in (("direct", direct), ("proxy", proxied)):  # alternating: the same load for both
                results[mode]["ping"].append(ping(url, args.pings))
                results[mode]["mib_s"].append(download(url, args.mib << 20))
        load = os.getloadavg()[0]
        print(f"rounds {args.rounds}, {args.pings} pings of 64 B, {args.mib} MiB downloads; load average {load:.1f}")
        print("| path | round trip, median of rounds (ms) | throughput, median of rounds (MiB/s) |")
        print("|---|---:|---:|")
        for mode in ("direct", "proxy"):
            r = results[mode]
            print(f"| {mode} | {statistics.median(r['ping']):.3f} | {statistics.median(r['mib_s']):.0f} |")
        d, p = results["direct"], results["proxy"]
        added = statistics.median(p["ping"]) - statistics.median(d["ping"])
        ratio = statistics.median(p["mib_s"]) / statistics.median(d["mib_s"])
        print(f"\nproxy adds {added:.3f} ms per round trip; carries {ratio:.0%} of the direct throughput")
    finally:
        await driver.close()
        await launcher.destroy("bench")
        await launcher.stop_all()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
