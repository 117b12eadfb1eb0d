"""What `nemo` prints for people, against a running `nemo up`: stored text printed as is (never as Rich markup),
identifiers and URLs whole on an 80-column terminal and when piped, lists as lists, each field error once."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.cli.terminal import in_terminal, piped
from tests.stack import ROOT, Stack, running_stack, wait_for

pytestmark = pytest.mark.e2e  # starts `nemo up`: run first (tests/conftest.py)

BRACKETS = {"[eu]": "bracket-open", "[/eu]": "bracket-close"}


def _cluster(name: str, region: str) -> dict[str, Any]:
    return {
        "name": name,
        "tier": "edge",
        "region": region,
        "country": "ES",
        "prices": {"cpu_hour_eur": 0.02, "gib_hour_eur": 0.002},
        "carbon_intensity": 100,
        "nodes": [{"name": f"{name}-n1", "cpu": 1, "memory_mib": 1024}],
    }


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("cli-output") / "data", {"NEMO_RECONCILE_INTERVAL": "0.3"}) as s:
        for region, name in BRACKETS.items():
            added = s.api("POST", "/clusters", json=_cluster(name, region))
            assert added.status_code == 201, added.text
        s.cli("workload", "apply", "-f", str(ROOT / "examples" / "demo-workload.yaml"), "--wait", "--timeout", "90")
        yield s


def _replicas(stack: Stack) -> list[dict[str, Any]]:
    replicas: list[dict[str, Any]] = stack.cli_json("workload", "get", "demo")["replicas"]
    assert len(replicas) == 3 and all(r["url"] for r in replicas)
    return replicas


def _table_lines(screen: str) -> list[str]:
    return [line for line in screen.splitlines() if line[:1] in "┏┃┡│└"]


def test_stored_text_prints_as_is_never_as_markup(stack: Stack) -> None:
    done = piped(["cluster", "list"], stack.env)
    terminal_code, screen = in_terminal(["cluster", "list"], stack.env)
    for code, out in ((done.returncode, done.stdout + done.stderr), (terminal_code, screen)):
        assert code == 0, out
        rows = {line.split("│")[1].strip(): line for line in out.splitlines() if line.startswith("│")}
        for region, name in BRACKETS.items():
            assert f"│ {region} " in rows[name], out


def test_error_messages_print_as_is(stack: Stack) -> None:
    done = piped(["workload", "get", "[red]x"], stack.env)
    assert done.returncode == 1
    assert "'default/[red]x' not found" in done.stderr


def test_narrow_terminal_keeps_replica_ids_and_urls_whole(stack: Stack) -> None:
    replicas = _replicas(stack)
    code, screen = in_terminal(["workload", "get", "demo"], stack.env, columns=80)
    assert code == 0, screen
    assert "…" not in screen
    assert all(len(line) <= 80 for line in _table_lines(screen)), screen
    rows = [line for line in screen.splitlines() if line.startswith("│ demo-")]
    for r in replicas:
        assert any(r["id"] in row and r["url"] in row and r["cluster"] in row for row in rows), screen
    # Columns that did not fit are left out, not squeezed; `-o wide` shows every one, values still whole.
    assert "RESTARTS" not in screen
    code, wide = in_terminal(["workload", "get", "demo", "-o", "wide"], stack.env, columns=80)
    assert code == 0 and "RESTARTS" in wide and "…" not in wide
    assert all(r["url"] in wide and r["node"] in wide for r in replicas), wide


def _candidates_table(screen: str) -> list[str]:
    """The lines of `workload explain`'s candidates table, from its top border to its bottom one."""
    lines = screen.splitlines()
    header = next(i for i, line in enumerate(lines) if "SCORES" in line)
    end = next(i for i in range(header, len(lines)) if lines[i].startswith("└"))
    return lines[header - 1 : end + 1]


def _assert_candidates_fit_whole(stack: Stack, workload: str) -> tuple[dict[str, Any], list[str]]:
    """`nemo workload explain WORKLOAD` on an 80-column terminal: the candidates table fits, each cluster, node and
    score printed whole (scores one per line if need be); returns the decision and the table's lines."""
    decision: dict[str, Any] = stack.cli_json("workload", "explain", workload)
    code, screen = in_terminal(["workload", "explain", workload], stack.env, columns=80)
    assert code == 0, screen
    assert "…" not in screen
    candidates = _candidates_table(screen)
    assert all(len(line) <= 80 for line in candidates), screen
    cells = {word for line in candidates for word in re.split(r"[│\s]+", line)}
    for candidate in decision["candidates"]:
        assert candidate["cluster"] in cells and (candidate["node"] or "*") in cells, screen
        for name, score in candidate["scores"].items():
            assert f"{name}={score:.2f}" in cells, screen
    return decision, candidates


def test_narrow_terminal_keeps_each_score_whole(stack: Stack) -> None:
    _assert_candidates_fit_whole(stack, "demo")


def test_narrow_terminal_breaks_a_long_verdict_word_to_fit(stack: Stack, tmp_path: Any) -> None:
    # A rejection names its filter ("data-residency:", 15 characters): next to whole cluster and node names and
    # whole scores, the verdict only fits an 80-column terminal if that word is broken across lines.
    workload = yaml.safe_load((ROOT / "examples" / "demo-workload.yaml").read_text())
    workload["name"] = "resident"
    workload["deployment"] |= {"replicas": 1, "placement": {"countries": ["DE"]}}
    path = tmp_path / "resident.yaml"
    path.write_text(yaml.safe_dump(workload))
    stack.cli("workload", "apply", "-f", str(path))
    # The decision is all this test reads: whether the replica is running yet does not matter.
    wait_for(lambda: stack.api("GET", "/workloads/resident/placement").status_code == 200, 60, "a decision")
    decision, candidates = _assert_candidates_fit_whole(stack, "resident")
    rejected = next(c for c in decision["candidates"] if c["cluster"] == "edge-madrid")
    assert rejected["rejected_by"] == "data-residency", rejected
    # The verdict reads in full down its column: nothing left out, nothing cut off.
    first = next(i for i, line in enumerate(candidates) if line.startswith("│ edge-madrid "))
    column = ""
    for i, line in enumerate(candidates[first:-1]):
        cells = line.split("│")
        if i and cells[1].strip():  # the next candidate's row
            break
        column += cells[3]
    verdict = f"rejected by {rejected['rejected_by']}: {rejected['reason']}"
    assert "".join(column.split()) == "".join(verdict.split()), "\n".join(candidates)
    # With every column (-o wide) the table cannot fit 80 columns: then it is printed wider, its words left whole.
    code, wide = in_terminal(["workload", "explain", "resident", "-o", "wide"], stack.env, columns=80)
    assert code == 0 and "RUNTIME" in wide and f"{rejected['rejected_by']}:" in wide.split(), wide


def _cells(out: str, live: tuple[str, ...]) -> list[list[str]]:
    """The cells of each table line of ``out``, row by row, without the columns headed ``live`` (values that change
    from one call to the next, such as CPU%), so that two calls compare on everything else."""
    rows: list[list[str]] = []
    left_out: set[int] = set()
    for line in out.splitlines():
        if line[:1] not in "┃│":
            continue
        cells = [c.strip() for c in re.split(r"[┃│]", line)[1:-1]]
        if line.startswith("┃"):
            left_out = {i for i, c in enumerate(cells) if c in live}
        rows.append([c for i, c in enumerate(cells) if i not in left_out])
    return rows


def test_piped_output_does_not_depend_on_the_width(stack: Stack) -> None:
    replicas = _replicas(stack)
    outputs = {
        columns: piped(["workload", "get", "demo"], {**stack.env, "COLUMNS": columns}).stdout
        for columns in ("80", "40", "300")
    }
    # The same table whatever COLUMNS says: no cell wrapped onto a second line, no column left out. The replicas'
    # CPU% and memory are sampled while the calls run, so they may differ from one call to the next.
    cells = {columns: _cells(out, live=("CPU%", "MiB")) for columns, out in outputs.items()}
    assert cells["40"] == cells["80"] == cells["300"], outputs
    for out in outputs.values():
        assert "…" not in out and "RESTARTS" in out and "CPU%" in out
        rows = [line for line in out.splitlines() if line.startswith("│ demo-")]
        for r in replicas:
            assert any(r["id"] in row and r["url"] in row and r["node"] in row for row in rows), out


def test_petition_result_lists_clusters_by_name(stack: Stack, tmp_path: Any) -> None:
    petition = tmp_path / "petition.yaml"
    petition.write_text("numberofclusters: 1\n")
    done = stack.cli("petition", "-f", str(petition))
    rows = {line.split("│")[1].strip(): line.split("│")[2].strip() for line in done.stdout.splitlines()[3:-1]}
    made = stack.cli_json("cluster", "list")
    managed = [c["spec"]["name"] for c in made if c["spec"]["name"].startswith("managed-")]
    assert rows["clusters"] == ", ".join(managed), done.stdout
    assert "[" not in done.stdout and "'" not in done.stdout


def test_each_field_error_is_said_once(stack: Stack, tmp_path: Any) -> None:
    bad = tmp_path / "bad.json"
    resources = {"cpu": -1, "memory_mib": 0}
    bad.write_text(
        json.dumps({"name": "bad\n", "deployment": {"command": ["x"], "replicas": -1, "resources": resources}})
    )
    done = piped(["workload", "apply", "-f", str(bad)], stack.env)
    assert done.returncode == 1
    details = stack.api("POST", "/workloads", json=json.loads(bad.read_text())).json()["error"]["details"]
    assert len(details) >= 4
    lines = done.stderr.splitlines()
    assert lines[1:] == [f"  {d['field']}: {d['message']}" for d in details], done.stderr
    # The message's own summary of the first field errors is not repeated above the list.
    assert lines[0].startswith("error: invalid") and lines[0].endswith("(HTTP 422, invalid)"), done.stderr
    assert not any(d["field"] in lines[0] for d in details), done.stderr


_PROBE = """
import json, sys
from nemo_kernel.cli import main
sys.argv = ["nemo", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
print(json.dumps(sorted(sys.modules)), file=sys.stderr)
"""


@pytest.mark.parametrize("args", [["--help"], ["cluster", "list"], ["workload", "get", "demo"]])
def test_commands_load_no_server_framework(stack: Stack, args: list[str]) -> None:
    # Each `nemo` call is a new process: importing the gateway, aiohttp or FastAPI costs every command a second.
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *args], env=stack.env, capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert done.returncode == 0 and done.stdout, done.stderr
    loaded = set(json.loads(done.stderr.splitlines()[-1]))
    heavy = {m for m in loaded if m.split(".")[0] in ("fastapi", "aiohttp", "uvicorn", "aio_pika", "sqlalchemy")}
    heavy |= {m for m in loaded if m.startswith(("nemo_kernel.access.gateway", "nemo_kernel.api"))}
    assert not heavy, sorted(heavy)


def test_sla_history_clusters_and_a_rebalance_plan_fit_a_60_column_terminal(stack: Stack) -> None:
    sla = {"name": "narrow", "workload": "demo", "slos": [{"name": "up", "kind": "availability"}]}
    assert stack.api("POST", "/slas", json=sla).status_code == 201
    wait_for(lambda: stack.api("GET", "/slas/narrow").json()["state"] == "Active", 60, "the SLA active")
    code, screen = in_terminal(["sla", "history", "narrow"], stack.env, columns=60)
    assert code == 0, screen
    assert "sla.activated" in screen and "…" not in screen
    assert all(len(line) <= 60 for line in _table_lines(screen)), screen  # the message wraps
    code, screen = in_terminal(["cluster", "list"], stack.env, columns=60)  # what `cluster drain --wait` prints too
    assert code == 0 and "bracket-open" in screen and "SCHEDULING" in screen, screen
    assert all(len(line) <= 60 for line in _table_lines(screen)), screen  # country and sandbox left out
    code, screen = in_terminal(["rebalance"], stack.env, columns=60)
    assert code == 0, screen
    lines = screen.splitlines()
    plan = lines[: next(i for i, line in enumerate(lines) if line.startswith("└")) + 1]
    assert "MESSAGE" in plan[1] and "…" not in screen
    assert all(len(line) <= 60 for line in _table_lines("\n".join(plan))), screen  # solver columns left out
