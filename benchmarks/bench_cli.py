"""How long a `nemo` command takes, baseline against candidate: `nemo --help`, and `nemo cluster list` against a
running `nemo up` (the time a user waits, process start to exit), plus the import time of ``nemo_kernel.cli``.

The two sides run alternately, so both see the same load on a shared machine; medians are reported with the
fastest run and the load average. One `nemo up` (the candidate's) serves both sides from a fresh data directory;
the first call of each side fills the CLI's token cache and is not counted.

    .venv/bin/python benchmarks/bench_cli.py --baseline /work/main/.venv/bin/nemo --runs 21 --append-results
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from results import publish

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = {"nemo --help": ["--help"], "nemo cluster list": ["cluster", "list"]}


def start_up(nemo: Path, data_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`nemo up` on free ports, once it answers /readyz."""
    log = (data_dir.parent / "nemo-up.log").open("wb")
    proc = subprocess.Popen([str(nemo), "up"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nemo up exited with {proc.returncode}; see {log.name}")
        try:
            info = json.loads((data_dir / "endpoint.json").read_text())
            if info["pid"] == proc.pid and httpx.get(f"{info['url']}/readyz", timeout=2).status_code == 200:
                return proc
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("nemo up was not ready after 120 s")


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Seconds from start to exit of one command (output discarded, as when piped); it must succeed."""
    start = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def import_ms(python: Path, env: dict[str, str]) -> float:
    """Cumulative import time of ``nemo_kernel.cli`` by ``python -X importtime``, in ms."""
    done = subprocess.run(
        [str(python), "-X", "importtime", "-c", "import nemo_kernel.cli"], env=env, capture_output=True, text=True
    )
    match = re.search(r"\|\s*(\d+)\s*\|\s*nemo_kernel\.cli\s*$", done.stderr, re.MULTILINE)
    if match is None:
        raise SystemExit(f"{python}: no import time for nemo_kernel.cli:\n{done.stderr[-2000:]}")
    return int(match.group(1)) / 1000


def git_head(path: Path) -> str:
    """The commit checked out where ``path`` lives (empty if not in git)."""
    done = subprocess.run(["git", "-C", str(path), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip()


def main() -> None:
    """Run the benchmark and print (optionally append) a Markdown section."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="the `nemo` script of the old code")
    parser.add_argument("--candidate", type=Path, default=Path(sys.executable).with_name("nemo"))
    parser.add_argument("--runs", type=int, default=21)
    parser.add_argument("--append-results", action="store_true", help="append to benchmarks/RESULTS.md")
    args = parser.parse_args()
    sides = {"baseline": args.baseline.absolute(), "candidate": args.candidate.absolute()}

    work = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    data_dir = work / "data"
    data_dir.mkdir()
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_")}
    env = {**inherited, "NEMO_DATA_DIR": str(data_dir), "NEMO_API_PORT": "0", "NEMO_GATEWAY_PORT": "0"}
    up = start_up(sides["candidate"], data_dir, env)
    load_before = os.getloadavg()
    times: dict[tuple[str, str], list[float]] = {(c, s): [] for c in COMMANDS for s in sides}
    imports: dict[str, list[float]] = {s: [] for s in sides}
    try:
        for nemo in sides.values():
            for argv in COMMANDS.values():
                timed([str(nemo), *argv], env)  # warm-up: token cache, page cache
        for _ in range(args.runs):
            for command, argv in COMMANDS.items():
                for side, nemo in sides.items():
                    times[command, side].append(timed([str(nemo), *argv], env))
            for side, nemo in sides.items():
                imports[side].append(import_ms(nemo.with_name("python"), env))
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    def cell(values: list[float], scale: float) -> str:
        return f"{statistics.median(values) * scale:.0f} ({min(values) * scale:.0f})"

    rows = [
        f"| `{command}` | {cell(times[command, 'baseline'], 1000)} | {cell(times[command, 'candidate'], 1000)} | "
        f"{statistics.median(times[command, 'baseline']) / statistics.median(times[command, 'candidate']):.1f}x |"
        for command in COMMANDS
    ]
    rows.append(
        f"| `import nemo_kernel.cli` (-X importtime) | {cell(imports['baseline'], 1)} | "
        f"{cell(imports['candidate'], 1)} | "
        f"{statistics.median(imports['baseline']) / statistics.median(imports['candidate']):.1f}x |"
    )
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join(
        [
            f"## CLI: time of a command, baseline vs candidate ({when})",
            "",
            f"Baseline `{sides['baseline']}` (commit {git_head(sides['baseline'].parent) or '?'}), candidate "
            f"`{sides['candidate']}` (commit {git_head(ROOT) or '?'}); {args.runs} alternating runs each, wall time "
            f"from process start to exit, output piped. Load average (1/5/15 min) before "
            f"{'/'.join(f'{x:.1f}' for x in load_before)}, after {'/'.join(f'{x:.1f}' for x in load_after)} "
            "(2 cores shared with other sessions).",
            "",
            "```",
            f".venv/bin/python benchmarks/bench_cli.py --baseline {args.baseline} --runs {args.runs} --append-results",
            "```",
            "",
            "| command | baseline ms, median (fastest) | candidate ms, median (fastest) | speed-up |",
            "|---|---:|---:|---:|",
            *rows,
            "",
        ]
    )
    publish(section, append=args.append_results)


if __name__ == "__main__":
    main()
