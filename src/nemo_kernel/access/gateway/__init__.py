"""NEMO's gateway (NAC): an aiohttp reverse proxy configured like Kong, with access plugins.

Start one with ``run_gateway(load_gateway_config("gateway.yaml"), host, port)`` or
``python -m nemo_kernel.access.gateway --config gateway.yaml``; embed one with ``Gateway(config).application()``.
"""

from nemo_kernel.access.gateway.app import Gateway, run_gateway
from nemo_kernel.access.gateway.config import (
    DATABASE_URL_ENV,
    ConsumerConfig,
    GatewayConfig,
    RouteConfig,
    ServiceConfig,
    load_gateway_config,
    parse_gateway_config,
)
from nemo_kernel.access.gateway.context import Refusal, RequestContext
from nemo_kernel.access.gateway.plugins import GatewayPlugin

__all__ = [
    "DATABASE_URL_ENV",
    "ConsumerConfig",
    "Gateway",
    "GatewayConfig",
    "GatewayPlugin",
    "Refusal",
    "RequestContext",
    "RouteConfig",
    "ServiceConfig",
    "load_gateway_config",
    "parse_gateway_config",
    "run_gateway",
]
