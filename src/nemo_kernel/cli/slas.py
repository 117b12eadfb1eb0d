"""``nemo sla ...``: apply SLAs (NEMO's format or OpenSLO v1), read their status and violations, write rules."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from nemo_kernel.cli.client import CliError, api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption, read_text
from nemo_kernel.cli.output import Column, OutputFormat, emit, print_table, say

app = typer.Typer(no_args_is_help=True)
NamespaceOption = Annotated[str, typer.Option("-n", "--namespace")]


class SlaOutput(StrEnum):
    """How ``nemo sla get`` prints an SLA: the usual formats, or OpenSLO v1 objects."""

    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"
    OPENSLO = "openslo"


def _read(file: Path) -> Any:
    """The file's document: one YAML/JSON document, or a list when a YAML stream holds several (OpenSLO objects
    are often written ``---`` apart)."""
    text = read_text(file)
    from nemo_kernel.domain.documents import DocumentError, load_document, load_yaml_stream

    try:
        if text.lstrip().startswith(("{", "[")):
            return load_document(text, yaml_syntax=False)
        documents = load_yaml_stream(text)
    except DocumentError as exc:
        raise CliError(f"{file}: {exc}") from exc
    if not documents:
        raise CliError(f"{file}: no document")
    return documents[0] if len(documents) == 1 else documents


def _summary(slas: list[dict[str, Any]]) -> None:
    print_table(
        None,
        ["NAMESPACE", "NAME", "WORKLOAD", "VERSION", "STATE", "SLOS", Column("MESSAGE", wrap=True)],
        [
            (
                s["namespace"],
                s["name"],
                s["workload"] or "(namespace)",
                s["version"],
                s["state"],
                len(s["spec"]["slos"]) if s["spec"] else "-",  # the objectives: nemo sla get NAME (None: see message)
                s["message"],
            )
            for s in slas
        ],
    )


def _figure(value: float | None) -> str:
    # Four significant digits read well for ratios, watts and euros alike; -o json keeps every digit.
    return "" if value is None else f"{value:.4g}"


def _slos(sla: dict[str, Any]) -> None:
    _summary([sla])
    print_table(
        "objectives",
        ["SLO", "KIND", "THRESHOLD", "TARGET", "WINDOW", "BUDGETING"],
        [
            (o["name"], o["kind"], o["threshold"], o["target"], o["window"], o["budgeting"])
            for o in (sla["spec"] or {}).get("slos") or []  # None: stored by an older NEMO, see the message
        ],
    )


def _report(report: dict[str, Any]) -> None:
    say(f"SLA {report['namespace']}/{report['name']} (version {report['version']}): {report['state']}")
    print_table(
        None,
        [
            "SLO",
            "KIND",
            "STATE",
            "VALUE",
            "TARGET",
            "BUDGET LEFT",
            Column("BURN RATES", optional=True),
            Column("BREACH PREDICTED", optional=True),
            Column("EVALUATED", optional=True),
        ],
        [
            (
                s["slo"],
                s["kind"],
                s["state"],
                _figure(s["value"]),
                s["target"],
                _figure(s["budget_remaining"]),
                # The burn over the SLO's window and period; the alerting windows' pairs are in -o json.
                ", ".join(f"{w}={_figure(r)}" for w, r in s["burn_rates"].items() if w in ("window", "period")),
                s["predicted_breach_at"],
                s["evaluated_at"],
            )
            for s in report["slos"]
        ],
    )


@app.command("apply")
def apply(
    file: Annotated[Path, typer.Option("-f", "--file", help="SLA YAML/JSON, or OpenSLO v1 objects ('-' for stdin)")],
    namespace: Annotated[str | None, typer.Option("-n", "--namespace", help="NEMO format only")] = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Apply an SLA; a changed one becomes a new version. Active as soon as its workload is deployed."""
    document = _read(file)
    if namespace is not None and isinstance(document, dict) and "apiVersion" not in document:
        document["namespace"] = namespace
    result = api_from_env_or(api).post("/slas", document)
    sla = result["sla"]
    if output.for_people:
        say(f"sla {sla['namespace']}/{sla['name']} {result['outcome']} (version {sla['version']}, {sla['state']})")
    emit(result, output, lambda _: _slos(sla))


@app.command("list")
def list_(
    namespace: Annotated[str | None, typer.Option("-n", "--namespace")] = None,
    workload: Annotated[str | None, typer.Option("--workload")] = None,
    state: Annotated[str | None, typer.Option("--state", help="Draft, Active, Violated or Terminated")] = None,
    kind: Annotated[str | None, typer.Option("--kind", help="only SLAs with an SLO of this kind")] = None,
    sort: Annotated[str, typer.Option("--sort", help="name, created, updated or state; '-' descends")] = "name",
    limit: Annotated[int, typer.Option("--limit")] = 100,
    offset: Annotated[int, typer.Option("--offset")] = 0,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """List SLAs."""
    found = api_from_env_or(api).get(
        "/slas",
        namespace=namespace,
        workload=workload,
        state=state,
        kind=kind,
        sort=sort,
        limit=limit,
        offset=offset,
    )
    emit(found, output, _summary)


@app.command("get")
def get(
    name: str,
    namespace: NamespaceOption = "default",
    api: ApiOption = None,
    output: Annotated[
        SlaOutput, typer.Option("-o", "--output", help="table, wide, json, yaml, or openslo (OpenSLO v1 objects)")
    ] = SlaOutput.TABLE,
) -> None:
    """An SLA: its objectives, version and state; ``-o openslo`` writes it as OpenSLO v1 objects."""
    client = api_from_env_or(api)
    if output is SlaOutput.OPENSLO:
        objects = client.get(f"/slas/{name}/openslo", namespace=namespace)
        print(yaml.safe_dump_all(objects, sort_keys=False), end="")
        return
    emit(client.get(f"/slas/{name}", namespace=namespace), OutputFormat(output.value), _slos)


@app.command("status")
def status(
    name: str, namespace: NamespaceOption = "default", api: ApiOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Each SLO's last evaluation: state, value, budget left, burn rates, predicted breach (NoData until then)."""
    emit(api_from_env_or(api).get(f"/slas/{name}/status", namespace=namespace), output, _report)


@app.command("violations")
def violations(
    namespace: Annotated[str | None, typer.Option("-n", "--namespace")] = None,
    sla: Annotated[str | None, typer.Option("--sla")] = None,
    open_only: Annotated[bool, typer.Option("--open", help="only those still going on")] = False,
    limit: Annotated[int, typer.Option("--limit")] = 100,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Violations of SLOs, newest first."""
    found = api_from_env_or(api).get(
        "/violations", namespace=namespace, sla=sla, open="true" if open_only else None, limit=limit
    )
    emit(
        found,
        output,
        lambda rows: print_table(
            None,
            ["NAMESPACE", "SLA", "SLO", "STARTED", "ENDED", "WORST", "LEVEL"],
            [
                (
                    v["namespace"],
                    v["sla"],
                    v["slo"],
                    v["started_at"],
                    v["ended_at"] or "ongoing",
                    v["worst_value"],
                    v["breach_level"],
                )
                for v in rows
            ],
        ),
    )


@app.command("audit")
def audit(
    name: str,
    namespace: NamespaceOption = "default",
    limit: Annotated[int, typer.Option("--limit")] = 100,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """The closed loop's acts on an SLA, newest first: what was predicted or seen, what was done, what followed."""
    found = api_from_env_or(api).get(f"/slas/{name}/actions", namespace=namespace, limit=limit)
    emit(
        found,
        output,
        lambda rows: print_table(
            None,
            ["AT", "TRIGGER", "SLO", "ACTION", Column("OUTCOME", wrap=True, fold=True), Column("AFTER", wrap=True)],
            [
                (
                    a["at"],
                    a["trigger"],
                    a["slo"] or "",
                    a["action"],
                    a["outcome"],
                    _followup(a["followup"]),
                )
                for a in rows
            ],
        ),
    )


def _followup(followup: dict[str, Any] | None) -> str:
    if not followup:
        return "pending"
    after = followup.get("met_after_seconds")
    return f"{followup.get('slo_state', '?')} after {after:.0f}s" if isinstance(after, int | float) else str(followup)


@app.command("history")
def history(
    name: str, namespace: NamespaceOption = "default", api: ApiOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """The SLA's events, oldest first: applied, activated, breach predicted, violated, actions, recovered."""
    found = api_from_env_or(api).get(f"/slas/{name}/events", namespace=namespace)
    emit(
        found,
        output,
        lambda rows: print_table(
            None,
            ["AT", "KIND", Column("MESSAGE", wrap=True, fold=True)],
            [(e["created_at"], e["kind"], e["message"]) for e in rows],
        ),
    )


@app.command("delete")
def delete(
    name: str, namespace: NamespaceOption = "default", api: ApiOption = None, output: OutputOption = OutputFormat.TABLE
) -> None:
    """Terminate an SLA: no longer evaluated; its status, violations and audit stay."""
    sla = api_from_env_or(api).delete(f"/slas/{name}", namespace=namespace)
    if output.for_people:
        say(f"sla {sla['namespace']}/{sla['name']} {sla['state']}")
    else:
        emit(sla, output, _summary)


@app.command("rules")
def rules(
    name: str,
    namespace: NamespaceOption = "default",
    out: Annotated[Path | None, typer.Option("--out", help="write to this new file instead of stdout")] = None,
    force: Annotated[bool, typer.Option("--force", help="replace --out if it exists")] = False,
    api: ApiOption = None,
) -> None:
    """Prometheus recording and alerting rules for the SLA's ratio SLOs (Sloth's names; `promtool check rules`)."""
    if out is not None and not force and (out.exists() or out.is_symlink()):
        # Never replace a file by surprise (run as root, a typo in --out could be any system file).
        raise CliError(f"{out} exists; give --force to replace it")
    text = api_from_env_or(api).get_text(f"/slas/{name}/rules", namespace=namespace)
    if out is None:
        print(text, end="")
        return
    try:
        with out.open("w" if force else "x") as file:  # "x": a file created meanwhile is not replaced either
            file.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc}") from exc
    say(f"rules of {namespace}/{name} written to {out}")
