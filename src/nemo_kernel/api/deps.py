"""Shared request dependencies."""

from __future__ import annotations

from typing import cast

from fastapi import Request

from nemo_kernel.orchestrator import ControlPlane


def control_plane(request: Request) -> ControlPlane:
    """The control plane this app serves."""
    return cast(ControlPlane, request.app.state.control_plane)


def requested_by(request: Request) -> str:
    """``user:<name>`` of the caller, as commands record who asked (``anonymous`` when access is off)."""
    principal = getattr(request.state, "principal", None)
    who = getattr(principal, "username", None) or getattr(principal, "subject", None) or "anonymous"
    return f"user:{who}"
