"""The plugin contract: a name, a fixed priority, and an ``access`` step that may refuse the request."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

from nemo_kernel.access.gateway.context import RequestContext


class GatewayPlugin(ABC):
    """A plugin instance, built from one configuration entry.

    Plugins run in descending ``priority``, as in Kong. The order deviates from Kong in one place on purpose:
    ``ip-restriction`` runs before authentication, so a blocked address costs no signature check.
    """

    name: ClassVar[str]
    priority: ClassVar[int]

    @abstractmethod
    async def access(self, ctx: RequestContext) -> None:
        """Inspect (and annotate) the request; raise :class:`Refusal` to answer it without proxying."""

    async def close(self) -> None:
        """Release resources (HTTP clients, connections)."""
        return None
