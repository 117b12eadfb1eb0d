"""CPU and memory of an idle ``nemo up``: embedded defaults, three local clusters, N running workloads, no change.

Run from the repository root::

    .venv/bin/python benchmarks/bench_idle.py --workloads 10 --window 30 --rounds 3 [--baseline main]

It starts ``nemo up`` on a fresh data directory and a free port, applies ``--workloads`` workloads of one replica
each (``sleep``: they cost nothing themselves), waits until all run, then measures the CPU time every process of
the stack used (control plane, gateway, cluster agents; the replicas apart) over ``--rounds`` windows of
``--window`` seconds, and their resident memory. The budget of the scale issue is 2 % of one core for this case.
The load average is printed before and after: on a shared machine, CPU time includes contention. With
``--baseline REF`` it also starts REF's code (``git archive REF src`` on ``PYTHONPATH``) beside this checkout's, and
measures the two stacks in alternating windows (both run throughout, so both see the same machine).
"""

from __future__ import annotations

import argparse
import contextlib
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
    # The agent first: a cluster named iot-gateway puts "gateway" on an agent's command line too.
    for marker, role in (("local.agent", "agent"), ("access.gateway", "gateway"), (" up", "control plane")):
        if marker in line:
            return role
    return "other"


class _Stack:
    """One idle ``nemo up`` (the code on ``pythonpath``, or this checkout's when None) with its workloads running."""

    def __init__(self, name: str, pythonpath: str | None, workloads: int, tmp: Path) -> None:
        self.name = name
        # Gateway port 0 (a free one): two stacks side by side would both want the default.
        self.env = {**os.environ, "NEMO_DATA_DIR": str(tmp / name / "data"), "NEMO_GATEWAY_PORT": "0"}
        if pythonpath is not None:
            self.env["PYTHONPATH"] = pythonpath  # ahead of the editable install on sys.path
        self.nemo = [sys.executable, "-m", "nemo_kernel.cli"]
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        (tmp / name).mkdir()
        self.log = (tmp / name / "up.log").open("wb")  # a file, not a pipe nobody reads (it would fill and block)
        self.up = subprocess.Popen(
            [*self.nemo, "up", "--port", str(self.port)], env=self.env, stdout=self.log, stderr=subprocess.STDOUT
        )
        self.workloads = workloads
        self.processes: list[psutil.Process] = []

    def deploy(self) -> None:
        """Wait until it serves, apply the workloads and wait until they all run."""
        _wait(lambda: _answers(self.url), 180, f"{self.name}: nemo up to serve")
        token = subprocess.run(
            [*self.nemo, "token", "--api", self.url], env=self.env, capture_output=True, text=True, check=True
        )
        headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
        for i in range(self.workloads):
            body = {"name": f"idle-{i}", "deployment": {"command": ["sleep", "1000000"], "ports": [],
                                                        "resources": {"cpu": 0.05, "memory_mib": 16}}}  # fmt: skip
            response = httpx.post(f"{self.url}/api/v1/workloads", json=body, headers=headers, timeout=30)
            response.raise_for_status()
        _wait(lambda: _all_running(self.url, headers, self.workloads), 240, f"{self.name}: every workload to run")
        self.processes = _stack(psutil.Process(self.up.pid))

    def measure(self, window: float) -> dict[str, float]:
        """CPU share of one core per role over one window of ``window`` seconds."""
        before, start = _cpu(self.processes), time.monotonic()
        time.sleep(window)  # the measurement window itself
        after, elapsed = _cpu(self.processes), time.monotonic() - start
        roles: dict[str, float] = {}
        for p in self.processes:
            if p.pid in before and p.pid in after:
                roles[_role(p)] = roles.get(_role(p), 0.0) + (after[p.pid] - before[p.pid]) / elapsed
        roles["whole stack"] = sum(roles.values())
        return roles

    def rss_mib(self) -> float:
        """Resident memory of the stack's processes."""
        return sum(p.memory_info().rss for p in self.processes if p.is_running()) / 2**20

    def stop(self) -> None:
        """Stop nemo up (it stops its gateway and agents), then the replicas, which nemo up leaves running."""
        replicas: list[psutil.Process] = []
        with contextlib.suppress(psutil.Error):
            replicas = [p for p in psutil.Process(self.up.pid).children(recursive=True) if p not in self.processes]
        self.up.terminate()
        self.up.wait(60)
        self.log.close()
        for replica in replicas:
            with contextlib.suppress(psutil.Error):  # psutil checks it is still the same process (pid reuse)
                replica.kill()


def _baseline_source(ref: str, tmp: Path) -> str:
    """The ``src`` directory of ``ref`` of this repository, extracted into ``tmp`` (the checkout is not touched)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(tmp)], input=archive.stdout, check=True)
    return str(tmp / "src")


def main() -> None:
    """Start the stacks, measure, print a markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workloads", type=int, default=10)
    parser.add_argument("--window", type=float, default=30.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--baseline", metavar="REF", help="also run REF's code (e.g. main) beside this checkout's, alternating windows"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        stacks: list[_Stack] = []
        try:
            if args.baseline:
                stacks.append(
                    _Stack(f"baseline ({args.baseline})", _baseline_source(args.baseline, tmp), args.workloads, tmp)
                )
            stacks.append(_Stack("candidate" if args.baseline else "this checkout", None, args.workloads, tmp))
            for stack in stacks:
                stack.deploy()
            time.sleep(args.window)  # let start-up work (first rollups, first findings) pass before measuring
            load_before = os.getloadavg()
            shares: dict[str, dict[str, list[float]]] = {stack.name: {} for stack in stacks}
            for _ in range(args.rounds):
                for stack in stacks:  # alternating: baseline window, candidate window, baseline window, ...
                    for role, share in stack.measure(args.window).items():
                        shares[stack.name].setdefault(role, []).append(share)
            rss = {stack.name: stack.rss_mib() for stack in stacks}
            load_after = os.getloadavg()
        finally:
            for stack in stacks:
                stack.stop()
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f}")
    names = [stack.name for stack in stacks]
    print("| part, CPU % of one core (median of rounds) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    roles = [*sorted({role for by_role in shares.values() for role in by_role} - {"whole stack"}), "whole stack"]
    for role in roles:
        cells = [
            f"{statistics.median(shares[name][role]) * 100:.2f}" if role in shares[name] else "-" for name in names
        ]
        print(f"| {role} | " + " | ".join(cells) + " |")
    print("| RSS, MiB | " + " | ".join(f"{rss[name]:.0f}" for name in names) + " |")
    if args.baseline:
        base, candidate = (statistics.median(shares[name]["whole stack"]) for name in names)
        print(f"candidate / baseline, whole stack: {candidate / base:.2f}")


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
