"""Shared request dependencies."""

from __future__ import annotations

from typing import cast

from fastapi import Request

from nemo_kernel.orchestrator import ControlPlane


def control_plane(request: Request) -> ControlPlane:
    """The control plane this app serves."""
    return cast(ControlPlane, request.app.state.control_plane)
