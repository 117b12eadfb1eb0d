"""CPU and memory of an idle ``nemo up``: embedded defaults, three local clusters, N running workloads, no change.

Run from the repository root::

    .venv/bin/python benchmarks/bench_idle.py --workloads 10 --window 30 --rounds 3

It starts ``nemo up`` on a fresh data directory and a free port, applies ``--workloads`` workloads of one replica
each (``sleep``: they cost nothing themselves), waits until all run, then measures the CPU time every process of
the stack used (control plane, gateway, cluster agents; the replicas apart) over ``--rounds`` windows of
``--window`` seconds, and their resident memory. The budget of the scale issue is 2 % of one core for this case.
The load average is printed before and after: on a shared machine, CPU time includes contention.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(condition: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.5)  # polling a process from outside: nothing to wait on


def _stack(root: psutil.Process) -> list[psutil.Process]:
    """The control plane and its gateway and agents; not the replicas (children of the agents)."""
    out = [root]
    for child in root.children(recursive=True):
        try:
            if "nemo_kernel" in " ".join(child.cmdline()):
                out.append(child)
        except psutil.Error:
            continue
    return out


def _cpu(processes: list[psutil.Process]) -> dict[int, float]:
    used = {}
    for p in processes:
        try:
            times = p.cpu_times()
            used[p.pid] = times.user + times.system
        except psutil.Error:
            continue
    return used


def _role(p: psutil.Process) -> str:
    line = " ".join(p.cmdline())
    for marker, role in (("gateway", "gateway"), ("local.agent", "agent"), (" up", "control plane")):
        if marker in line:
            return role
    return "other"


def main() -> None:
    """Start the stack, measure, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--start-timeout", type=float, default=120.0, help="seconds nemo up may take to serve")
    args = parser.parse_args()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "NEMO_DATA_DIR": str(Path(tmp) / "data")}
        nemo = [sys.executable, "-m", "nemo_kernel.cli"]
        log = (Path(tmp) / "up.log").open("wb")  # a file, not a pipe nobody reads (it would fill and block)
        up = subprocess.Popen([*nemo, "up", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait(lambda: _answers(url), args.start_timeout, "nemo up to serve")
            token = subprocess.run([*nemo, "token", "--api", url], env=env, capture_output=True, text=True, check=True)
            headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
            for i in range(args.workloads):
                body = {"name": f"idle-{i}", "deployment": {"command": ["sleep", "1000000"], "ports": [],
                                                            "resources": {"cpu": 0.05, "memory_mib": 16}}}  # fmt: skip
                response = httpx.post(f"{url}/api/v1/workloads", json=body, headers=headers, timeout=30)
                response.raise_for_status()
            _wait(lambda: _all_running(url, headers, args.workloads), 180, "every workload to run")
            time.sleep(args.window)  # let start-up work (first rollups, first findings) pass before measuring
            load_before = os.getloadavg()
            shares: list[float] = []
            by_role: dict[str, list[float]] = {}
            processes = _stack(psutil.Process(up.pid))
            for _ in range(args.rounds):
                before, start = _cpu(processes), time.monotonic()
                time.sleep(args.window)  # the measurement window itself
                after, elapsed = _cpu(processes), time.monotonic() - start
                roles: dict[str, float] = {}
                for p in processes:
                    if p.pid in before and p.pid in after:
                        roles[_role(p)] = roles.get(_role(p), 0.0) + (after[p.pid] - before[p.pid]) / elapsed
                shares.append(sum(roles.values()))
                for role, share in roles.items():
                    by_role.setdefault(role, []).append(share)
            rss = sum(p.memory_info().rss for p in processes if p.is_running()) / 2**20
            load_after = os.getloadavg()
        finally:
            up.terminate()
            up.wait(30)
            log.close()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}; {len(processes)} processes")
    print("| part | CPU, % of one core (median of rounds) |")
    print("|---|---:|")
    for role, values in sorted(by_role.items()):
        print(f"| {role} | {statistics.median(values) * 100:.2f} |")
    print(f"| **whole stack** | **{statistics.median(shares) * 100:.2f}** |")
    print(f"RSS of the stack: {rss:.0f} MiB")


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _all_running(url: str, headers: dict[str, str], count: int) -> bool:
    listed = httpx.get(f"{url}/api/v1/workloads", headers=headers, params={"limit": 500}, timeout=10).json()
    return sum(1 for w in listed if w["phase"] == "Running") >= count


if __name__ == "__main__":
    main()
