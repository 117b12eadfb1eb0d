"""Schemathesis hooks for the fuzz runs of test_openapi_fuzz.py (loaded through SCHEMATHESIS_HOOKS).

The fuzzer gets the identities it runs as from ``GET /clients`` and would then disable, delete or re-key them (or
the stack's own admin client) half-way through, leaving the rest of the run to test nothing but 401s: those
identities (``NEMO_FUZZ_PROTECTED``, comma-separated) are left alone, every other one is fair game. A cluster the
fuzzer registers is simulated: a local cluster would start an agent process and a Kubernetes one would dial a
cluster, which is work on the machine, not input handling.
"""

from __future__ import annotations

import os
from typing import Any

import schemathesis

_PROTECTED = frozenset(filter(None, os.environ.get("NEMO_FUZZ_PROTECTED", "").split(",")))


@schemathesis.hook
def filter_path_parameters(ctx: schemathesis.HookContext, path_parameters: dict[str, Any] | None) -> bool:
    """Leave out requests on the identities the run uses."""
    values = (path_parameters or {}).values()
    return not any(str(value) in _PROTECTED for value in values)


@schemathesis.hook
def map_body(ctx: schemathesis.HookContext, body: Any) -> Any:
    """Make the fuzzer's clusters simulated ones; other bodies are sent as generated."""
    operation = ctx.operation
    on_clusters = operation is not None and operation.path == "/api/v1/clusters"
    if on_clusters and isinstance(body, dict) and body.get("driver", "local") in ("local", "kubernetes"):
        return {**body, "driver": "sim"}
    return body
