"""``nemo rebalance --dry-run | --apply [--max-moves N] [--namespace NS]``: plan a global re-optimisation."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from nemo_kernel.cli.client import api_from_env_or
from nemo_kernel.cli.options import ApiOption, OutputOption
from nemo_kernel.cli.output import Column, OutputFormat, emit, print_table


def rebalance(
    apply: Annotated[
        bool, typer.Option("--apply/--dry-run", help="carry the plan out (default: only show it)")
    ] = False,
    max_moves: Annotated[
        int | None, typer.Option(help="most replicas to move (default NEMO_REBALANCE_MAX_MOVES)")
    ] = None,
    namespace: Annotated[
        list[str] | None, typer.Option(help="only this namespace's workloads move (repeatable)")
    ] = None,
    api: ApiOption = None,
    output: OutputOption = OutputFormat.TABLE,
) -> None:
    """Plan where running replicas should be for less cost and carbon; with --apply, move them (make-before-break,
    one migration per workload at a time); follow an applied plan with GET /api/v1/rebalance/ID."""
    body: dict[str, Any] = {"apply": apply}
    if max_moves is not None:
        body["max_moves"] = max_moves
    if namespace:
        body["namespaces"] = namespace
    emit(api_from_env_or(api).post("/rebalance", body), output, _detail)


def _detail(plan: dict[str, Any]) -> None:
    before, after = plan["before"], plan["after"]
    print_table(
        None,
        [
            "ID",
            "STATE",
            Column("SOLVER", optional=True),
            Column("SOLVE s", optional=True),
            Column("EUR/h", wrap=True),  # "before -> after": each figure whole, on two lines if need be
            Column("gCO2/h", wrap=True),
            Column("MESSAGE", wrap=True),
        ],
        [
            (
                plan["id"],
                plan["state"],
                plan["solver_status"],
                f"{plan['solve_seconds']:.2f}",
                f"{before['eur_h']:.4f} -> {after['eur_h']:.4f}",
                f"{before['gco2_h']:.1f} -> {after['gco2_h']:.1f}",
                plan["message"],
            )
        ],
    )
    if not plan["moves"]:
        return  # the plan's message says why nothing moves; an empty table would only add borders
    print_table(
        "moves",
        [
            "WORKLOAD",
            "REPLICA",
            "FROM",
            "TO",
            Column("SAVES EUR/h", optional=True),
            Column("SAVES gCO2/h", optional=True),
            Column("BY", optional=True),
            "STATE",
            Column("REASON", wrap=True),
        ],
        [
            (
                m["workload"],
                m["replica"],
                f"{m['from_cluster']}/{m['from_node']}",
                f"{m['to_cluster']}/{m['to_node']}",
                f"{m['saving_eur_h']:.4f}",
                f"{m['saving_gco2_h']:.1f}",
                m["criterion"],
                m["state"],
                m["reason"],
            )
            for m in plan["moves"]
        ],
    )
    total, shown = int(plan.get("moves_total", 0)), len(plan["moves"])
    if total > shown:
        typer.echo(f"first {shown} of {total} moves; the rest: GET /api/v1/rebalance/{plan['id']}?offset={shown}")
