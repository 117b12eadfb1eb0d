"""``nemo workload ...``"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import ApiClient, CliError, api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption, WaitTimeout, load_document
from nemo_kernel.cli.output import Column, OutputFormat, emit, print_table, progress, say

app = typer.Typer(no_args_is_help=True)
NamespaceOption = Annotated[str, typer.Option("-n", "--namespace")]


def _with_working_dir(document: Any, file: Path) -> Any:
    # A descriptor's relative command paths mean "next to the descriptor", wherever the CLI runs from.
    deployment = document.get("deployment") if isinstance(document, dict) else None
    if isinstance(deployment, dict) and deployment.get("command") and str(file) != "-":
        base = file.resolve().parent
        deployment["working_dir"] = str((base / deployment.get("working_dir", ".")).resolve())
    return document


def _summary(workloads: list[dict[str, Any]]) -> None:
    print_table(
        None,
        ["NAMESPACE", "NAME", "VERSION", "PHASE", "READY", Column("MESSAGE", wrap=True)],
        [
            (
                w["namespace"],
                _name(w),
                w["version"],
                w["phase"],
                _ready(w),
                w["message"],
            )
            for w in workloads
        ],
    )


def _ready(w: dict[str, Any]) -> str:
    # desired is null when this version refuses the stored descriptor (the message says why): unknown, not 0
    desired = w["desired_replicas"]
    return f"{w['ready_replicas']}/{'?' if desired is None else desired}"


def _name(w: dict[str, Any]) -> str:
    # A descriptor named with something that is not a DNS label ("My Service") keeps it as its display name; the
    # derived id is what every command takes.
    display = w.get("display_name")
    return f"{w['name']} ({display})" if display else str(w["name"])


def _services(w: dict[str, Any]) -> None:
    # The CMDT part of the descriptor (the service's digital twin), all a catalogue entry holds.
    rows = [
        (service.get("Name"), micro.get("Name"), " ".join(micro.get("Endpoints") or []))
        for service in (w["descriptor"] or {}).get("services") or []  # None: stored by an older NEMO, see message
        for micro in service.get("Microservices") or [{}]
    ]
    if rows:
        print_table("services", ["SERVICE", "MICROSERVICE", "ENDPOINTS"], rows)


def _detail(w: dict[str, Any]) -> None:
    _summary([w])
    _services(w)
    if (w["descriptor"] or {}).get("deployment") is None:
        return  # a catalogue entry: nothing runs, an empty replicas table would only suggest something should
    print_table(
        "replicas",
        [
            "REPLICA",
            Column("VERSION", optional=True),
            "CLUSTER",
            Column("NODE", optional=True),
            "PHASE",
            "URL",
            Column("RESTARTS", optional=True),
            Column("CPU%", optional=True),
            Column("MiB", optional=True),
        ],
        [
            (
                r["id"],
                r["version"],
                r["cluster"],
                r["node"],
                r["phase"],
                r["url"],
                r["restarts"],
                r["cpu_percent"],
                r["memory_mib"],
            )
            for r in w["replicas"]
        ],
    )


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="CMDT descriptor YAML/JSON ('-' for stdin)")],
    namespace: Annotated[str | None, typer.Option("-n", "--namespace")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="wait until every replica runs")] = False,
    timeout: WaitTimeout = 120.0,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Apply a workload; a changed descriptor becomes a new version and rolls out."""
    client = api_from_env_or(api)
    document = _with_working_dir(load_document(file), file)
    if namespace is not None and isinstance(document, dict):
        document["namespace"] = namespace
    result = client.post("/workloads", document)
    workload = result["workload"]
    if output.for_people:
        say(f"workload {workload['namespace']}/{workload['name']} {result['outcome']} (version {workload['version']})")
    if wait:
        workload = _wait_running(client, workload["namespace"], workload["name"], timeout)
    emit(result if not wait else {**result, "workload": workload}, output, lambda _: _detail(workload))


def _wait_running(client: ApiClient, namespace: str, name: str, timeout: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    with progress(f"waiting for {namespace}/{name}") as update:
        while True:
            w = client.get(f"/workloads/{name}", namespace=namespace)
            update(f"{namespace}/{name}: {w['phase']}, {_ready(w)} ready")
            if w["phase"] in ("Running", "Registered"):  # Registered: a catalogue entry, nothing will run
                return dict(w)
            if time.monotonic() > deadline:
                raise CliError(f"{namespace}/{name} not running after {timeout:.0f}s: {w['phase']}: {w['message']}")
            time.sleep(0.5)  # polling interval of a progress display


@app.command("list")
def list_(
    namespace: Annotated[str | None, typer.Option("-n", "--namespace")] = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List workloads."""
    emit(api_from_env_or(api).get("/workloads", namespace=namespace), output, _summary)


@app.command("get")
def get(
    name: str, namespace: NamespaceOption = "default", api: ApiOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Desired against actual replicas, per cluster and node, with URLs."""
    emit(api_from_env_or(api).get(f"/workloads/{name}", namespace=namespace), output, _detail)


@app.command("explain")
def explain(
    name: str, namespace: NamespaceOption = "default", api: ApiOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Why the workload runs where it runs: each replica's placement and decision, the latest decision's verdicts."""
    decision = api_from_env_or(api).get(f"/workloads/{name}/placement", namespace=namespace)

    def table(d: dict[str, Any]) -> None:
        print_table(
            "Replicas: where each runs and the decision that put it there",
            [
                "REPLICA",
                "CLUSTER",
                Column("NODE", optional=True),
                "PHASE",
                Column("DECISION", optional=True),
                Column("VERDICT", wrap=True, fold=True),
            ],
            [
                (
                    r["replica"],
                    r["cluster"],
                    r["node"],
                    r["phase"],
                    r["decision"],
                    "" if r["verdict"] is None else r["verdict"]["reason"],
                )
                for r in d.get("replicas", [])
            ],
        )
        say(f"Latest decision {d.get('id', '')}:")
        say((d["outcome"], "bold"), f" (version {d['version']}): {d['summary']}")
        say("weights: " + ", ".join(f"{k}={v:g}" for k, v in d["weights"].items()))
        print_table(
            None,
            [
                "CLUSTER",
                "NODE",
                Column("VERDICT", wrap=True, fold=True),
                Column("RUNTIME", optional=True),
                Column("SCORES", wrap=True),
                "TOTAL",
                "PLACED",
            ],
            [
                (
                    c["cluster"],
                    c["node"] or "*",
                    f"rejected by {c['rejected_by']}: {c['reason']}" if c["rejected_by"] else "eligible",
                    c.get("runtime"),
                    " ".join(f"{k}={v:.2f}" for k, v in c["scores"].items()),
                    None if c["total"] is None else f"{c['total']:.3f}",
                    c["replicas"] or "",
                )
                for c in d["candidates"]
            ],
        )
        if d.get("verdicts"):
            # A compact decision: the table shows the chosen and best nodes; every cluster's verdict is here.
            print_table(
                None,
                ["VERDICT", "CLUSTERS", "NODES", Column("EXAMPLE", wrap=True, fold=True)],
                [
                    (
                        "feasible" if g["filter"] is None else f"{g['level']} rejected by {g['filter']}",
                        _listed(g["clusters"]),
                        g["nodes"] or "",
                        g["example"],
                    )
                    for g in d["verdicts"]
                ],
            )

    emit(decision, output, table)


def _listed(names: list[str], shown: int = 5) -> str:
    """'a, b, c' or 'a, b, c, d, e and 95 more'."""
    head = ", ".join(names[:shown])
    return f"{head} and {len(names) - shown} more" if len(names) > shown else head


@app.command("events")
def events(
    name: str, namespace: NamespaceOption = "default", api: ApiOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """History of the workload."""
    history = api_from_env_or(api).get(f"/workloads/{name}/events", namespace=namespace)
    emit(
        history,
        output,
        lambda h: print_table(
            None,
            ["TIME", "EVENT", Column("MESSAGE", wrap=True)],
            [(e["created_at"], e["kind"], e["message"]) for e in h],
        ),
    )


@app.command("delete")
def delete(name: str, namespace: NamespaceOption = "default", api: ApiOption = None) -> None:
    """Stop every replica and forget the workload (its history is kept)."""
    api_from_env_or(api).delete(f"/workloads/{name}", namespace=namespace)
    say(f"workload {namespace}/{name} deleting")
