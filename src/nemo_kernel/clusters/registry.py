"""Which provider opens the clusters of each driver kind: one line per driver, its module imported on first use.

Providers are named by ``"module:Class"`` strings, as lightkube names its resources, so a control plane that runs
only local clusters never imports a Kubernetes client, and a driver whose dependencies are missing makes only its
own clusters unavailable. A provider class is constructed as ``Class(settings)``.

New driver: a module ``nemo_kernel.clusters.<kind>`` exporting its provider, plus its line in ``_PROVIDERS``.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, cast

from nemo_kernel.clusters.base import DriverProvider
from nemo_kernel.clusters.errors import DriverUnavailable
from nemo_kernel.domain import DriverKind

log = logging.getLogger(__name__)

if TYPE_CHECKING:  # the agent process imports this package; it need not load the settings
    from nemo_kernel.config import Settings

_PROVIDERS: dict[DriverKind, str] = {
    DriverKind.LOCAL: "nemo_kernel.clusters.local:LocalProvider",
    DriverKind.SIM: "nemo_kernel.clusters.sim:SimProvider",
}


class DriverProviders:
    """One provider per driver kind, each created when a cluster of its kind first needs it.

    ``overrides`` are used as they are, before the registry (tests and embedders plug in their own drivers).
    """

    def __init__(
        self,
        settings: Settings,
        overrides: Mapping[DriverKind, DriverProvider] | None = None,
        *,
        registry: Mapping[DriverKind, str] | None = None,
    ) -> None:
        self._settings = settings
        # "module:Class" per kind; the built-in one unless a caller (a test, an embedder) names its own
        self._registry: Mapping[DriverKind, str] = _PROVIDERS if registry is None else registry
        self._providers: dict[DriverKind, DriverProvider] = dict(overrides or {})
        # a provider that failed to load fails the same way on every pass: remember why, and say it once
        self._unavailable: dict[DriverKind, DriverUnavailable] = {}

    def for_kind(self, kind: DriverKind) -> DriverProvider:
        """The provider of ``kind``; raises :class:`DriverUnavailable` when there is none or it cannot load."""
        provider = self._providers.get(kind)
        if provider is not None:
            return provider
        if kind in self._unavailable:
            raise self._unavailable[kind]
        try:
            factory = _load(kind, self._registry)
            try:
                provider = factory(self._settings)
            except Exception as exc:
                # a provider that cannot start (no kubeconfig, a broken module) makes only its own clusters
                # unavailable: it must not fail the pass for every other cluster
                raise DriverUnavailable(kind, f"{self._registry[kind]} cannot start: {exc}") from exc
        except DriverUnavailable as exc:
            self._unavailable[kind] = exc
            raise
        self._providers[kind] = provider
        return provider

    async def close(self) -> None:
        """Close every provider in use (clusters and their replicas keep running)."""
        for kind, provider in self._providers.items():
            try:
                await provider.close()
            except Exception:
                log.exception("closing the %s driver provider failed", kind.value)


def _load(kind: DriverKind, registry: Mapping[DriverKind, str]) -> Callable[[Settings], DriverProvider]:
    target = registry.get(kind)
    if target is None:
        raise DriverUnavailable(kind, "no provider is registered for it")
    module_name, _, attribute = target.partition(":")
    try:
        factory = getattr(importlib.import_module(module_name), attribute)
    except Exception as exc:  # ImportError, AttributeError, or whatever the module raises as it imports
        raise DriverUnavailable(kind, f"{target} does not load: {exc}") from exc
    return cast("Callable[[Settings], DriverProvider]", factory)
