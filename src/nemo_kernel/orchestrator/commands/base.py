"""What the command groups share."""

from __future__ import annotations

from collections.abc import Callable

#: Asks the control plane for a reconcile pass now; safe from any thread, a no-op before the loop runs.
Wake = Callable[[], None]
