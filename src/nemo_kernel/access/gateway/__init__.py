"""NEMO's gateway (NAC): an aiohttp reverse proxy configured like Kong, with access plugins.

Start one with ``run_gateway(load_gateway_config("gateway.yaml"), host, port)`` (from
:mod:`nemo_kernel.access.gateway.app`) or ``python -m nemo_kernel.access.gateway --config gateway.yaml``; embed one
with ``Gateway(config).application()``.

Only the configuration is exported here: the API process validates and stores gateway configuration through this
package and must not load aiohttp for it (``tests/test_import_boundaries.py`` checks), so the server
(:mod:`.app`), its request context (:mod:`.context`) and the plugins (:mod:`.plugins`) are imported from their
modules by whoever runs a gateway.
"""

from nemo_kernel.access.gateway.config import (
    DATABASE_URL_ENV,
    ConsumerConfig,
    GatewayConfig,
    RouteConfig,
    ServiceConfig,
    load_gateway_config,
    parse_gateway_config,
)

__all__ = [
    "DATABASE_URL_ENV",
    "ConsumerConfig",
    "GatewayConfig",
    "RouteConfig",
    "ServiceConfig",
    "load_gateway_config",
    "parse_gateway_config",
]
