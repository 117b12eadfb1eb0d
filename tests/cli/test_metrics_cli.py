"""``nemo metrics query`` and ``nemo top`` as a user runs them, against a served API whose samples are known."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.api.test_metrics_api import CLUSTERS, CPU_RATES, feeding, running_demo
from tests.served_api import ServedApi, served_api
from tests.stack import NEMO, ROOT


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedApi]:
    with served_api(tmp_path_factory.mktemp("metrics-cli"), CLUSTERS) as s, feeding(s, running_demo(s)):
        yield s


def nemo(served: ServedApi, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``nemo ARGS`` against the served API with the admin's token (no developer NEMO_* settings leak in)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_")}
    env |= {"NEMO_API": served.url, "NEMO_TOKEN": served.token(), "COLUMNS": "200"}
    done = subprocess.run([*NEMO, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
    if check:
        assert done.returncode == 0, done.stderr + done.stdout
    return done


def _json(served: ServedApi, *args: str) -> Any:
    return json.loads(nemo(served, *args).stdout)


def test_metrics_query_json_and_yaml(served: ServedApi) -> None:
    args = ("metrics", "query", 'nemo_replica_cpu_seconds_total{workload="demo"}', "--window", "5m", "-a", "rate")
    answer = _json(served, *args, "--by", "workload", "-o", "json")
    assert answer["source"] == "embedded"
    [series] = answer["series"]
    assert series["labels"] == {"workload": "demo"}
    assert series["points"][-1][1] == pytest.approx(sum(CPU_RATES), rel=0.03)
    assert yaml.safe_load(nemo(served, *args, "-o", "yaml").stdout)["series"][0]["labels"]["workload"] == "demo"
    table = nemo(served, *args, "--by", "replica").stdout
    assert table.count("replica=demo-v1-") == 2 and "SERIES" in table


def test_metrics_query_refusal_is_one_line_naming_the_parameter(served: ServedApi) -> None:
    done = nemo(served, "metrics", "query", "nemo_replica_up", "--window", "40d", check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert "query.window: at most 31d" in done.stderr and "HTTP 422" in done.stderr


def test_a_control_character_in_a_selector_is_refused_naming_it(served: ServedApi) -> None:
    done = nemo(served, "metrics", "query", 'nemo_replica_up{workload="demo\\x00"}', check=False)
    assert done.returncode == 1 and done.stdout == ""
    assert "query.selector: control character '\\x00' in a label value" in done.stderr, done.stderr


def test_top_workloads_once_as_json_and_as_a_table(served: ServedApi) -> None:
    # A 5 min window: a sample a few seconds late (a busy machine) moves its rate by about 1 %, not 5 % as in 1 min.
    answer = _json(served, "top", "workloads", "--once", "-o", "json", "--window", "5m")
    [row] = answer["rows"]
    assert (row["namespace"], row["workload"], row["replicas"]) == ("default", "demo", 2)
    assert row["cpu_cores"] == pytest.approx(sum(CPU_RATES), rel=0.03)
    table = nemo(served, "top", "workloads", "--once").stdout
    assert "demo" in table and "CPU(cores)" in table and "300.0Mi" in table  # 100 + 200 MiB of memory


def test_top_nodes_and_clusters(served: ServedApi) -> None:
    [node] = _json(served, "top", "nodes", "--once", "-o", "json", "-w", "5m")["rows"]
    assert node["node"] == "ea-1" and node["cpu_ratio"] == pytest.approx(0.25, rel=0.03)
    assert "25%" in nemo(served, "top", "nodes", "--once", "-w", "300").stdout
    [cluster] = _json(served, "top", "clusters", "--once", "-o", "json", "--window", "2m")["rows"]
    assert cluster["cluster"] == "edge-a" and cluster["heartbeat_rtt_seconds"] == 0.004


def test_top_refreshes_until_stopped(served: ServedApi) -> None:
    # Not on a terminal, each refresh is one JSON document per line: read two, then stop it like Ctrl-C would.
    env = {k: v for k, v in os.environ.items() if not k.startswith("NEMO_")}
    env |= {"NEMO_API": served.url, "NEMO_TOKEN": served.token()}
    proc = subprocess.Popen(
        [*NEMO, "top", "clusters", "--interval", "0.5", "-o", "json"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        # A terminal's Ctrl-C reaches a process whose SIGINT is at its default. A suite started in the background
        # of a non-interactive shell (a CI job) ignores SIGINT, the child would inherit that, and Python then
        # installs no KeyboardInterrupt handler: the test would wait for ever.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        assert proc.stdout is not None
        documents = [json.loads(proc.stdout.readline()) for _ in range(2)]
        assert [d["rows"][0]["cluster"] for d in documents] == ["edge-a", "edge-a"]
    finally:
        proc.send_signal(signal.SIGINT)
        # communicate, not wait: it drains both pipes, so a child blocked writing to a full one can still exit
        try:
            _, errors = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()  # not left running after a failed run
            raise
        assert proc.returncode == 0, errors
