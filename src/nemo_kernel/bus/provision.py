"""Broker provisioning (``nemo bus provision``): vhost, exchanges, one least-privilege broker user per module.

Everything goes through the RabbitMQ management HTTP API and is idempotent: running it again changes nothing
except what differs (permissions are rewritten, missing users created). Passwords are generated for users created
now (or for every module with ``rotate_passwords``), returned once and never logged.

Per module ``m`` in vhost ``nemo``:

=========== ================================== =====================================================================
permission  regex                              why
=========== ================================== =====================================================================
configure   ``^m(\\..*)?$``                    declare its own queues ``m``, ``m.*`` (and their ``.dead`` queues)
write       ``^(nemo|nemo\\.dlx|m(\\..*)?)$``  publish to the two exchanges; ``queue.bind`` needs write on the queue
read        ``^(nemo|nemo\\.dlx|m(\\..*)?)$``  consume its own queues; ``queue.bind`` needs read on the exchange
=========== ================================== =====================================================================

Topic permissions: on ``nemo`` the routing keys it may publish (:data:`DEFAULT_PUBLISH_PATTERNS`, or
``^(intent|m)\\..*$`` for other modules); on ``nemo.dlx`` only its own queue names, both to publish (dead-letter)
and to bind (so a module cannot read another module's dead letters).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping, Sequence
from urllib.parse import quote

import httpx

EXCHANGE = "nemo"
DEAD_LETTER_EXCHANGE = "nemo.dlx"

DEFAULT_PUBLISH_PATTERNS: dict[str, str] = {
    "orchestrator": r"^(workload|placement|deployment|cluster|migration|intent)\..*$",
    "ppef": r"^(sla|slo)\..*$",
    "access": r"^(access|user)\..*$",
    "security": r"^security\..*$",
}
"""Routing keys each built-in module may publish on ``nemo``."""

_MODULE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


class ProvisioningError(RuntimeError):
    """The management API refused a step (the message names the step, never a password)."""


def module_pattern(module: str) -> str:
    """Regex of the names a module owns: ``module`` and ``module.<anything>``."""
    return rf"^{re.escape(module)}(\..*)?$"


def publish_pattern(module: str, overrides: Mapping[str, str] | None = None) -> str:
    """Routing keys ``module`` may publish on the ``nemo`` exchange."""
    patterns = {**DEFAULT_PUBLISH_PATTERNS, **(overrides or {})}
    return patterns.get(module, rf"^(intent|{re.escape(module)})\..*$")


def permissions_for(module: str) -> dict[str, str]:
    """The vhost permissions of a module's broker user."""
    own = rf"{re.escape(module)}(\..*)?"
    shared = rf"^(nemo|nemo\.dlx|{own})$"
    return {"configure": module_pattern(module), "write": shared, "read": shared}


def _vhost_path(vhost: str) -> str:
    return quote(vhost, safe="")


def _check(response: httpx.Response, step: str, ok: Sequence[int] = (200, 201, 204)) -> None:
    if response.status_code not in ok:
        raise ProvisioningError(f"{step}: HTTP {response.status_code} {response.text[:200]}")


def provision(
    mgmt_url: str,
    admin_user: str,
    admin_password: str,
    modules: Sequence[str],
    *,
    vhost: str = "nemo",
    delete_guest: bool = True,
    publish_patterns: Mapping[str, str] | None = None,
    rotate_passwords: bool = False,
    timeout: float = 10.0,
) -> dict[str, str]:
    """Create (or bring up to date) vhost, exchanges and module users; returns ``{module: password}`` for users
    created (or re-keyed) by this call. Existing users keep their password unless ``rotate_passwords``.
    """
    for module in modules:
        if not _MODULE_NAME.fullmatch(module):
            raise ValueError(f"module name {module!r} must match {_MODULE_NAME.pattern}")
    if delete_guest and admin_user == "guest":
        raise ValueError("create another administrator first: provisioning would delete the account it runs as")
    v = _vhost_path(vhost)
    passwords: dict[str, str] = {}
    with httpx.Client(base_url=mgmt_url.rstrip("/"), auth=(admin_user, admin_password), timeout=timeout) as api:
        _check(api.put(f"/api/vhosts/{v}", json={"description": "NEMO bus"}), f"create vhost {vhost}")
        _check(
            api.put(
                f"/api/permissions/{v}/{quote(admin_user, safe='')}",
                json=dict.fromkeys(("configure", "write", "read"), ".*"),
            ),
            "grant the administrator the vhost",
        )
        for name in (EXCHANGE, DEAD_LETTER_EXCHANGE):
            _check(
                api.put(f"/api/exchanges/{v}/{quote(name, safe='')}", json={"type": "topic", "durable": True}),
                f"declare exchange {name}",
            )
        for module in modules:
            user = quote(module, safe="")
            exists = api.get(f"/api/users/{user}").status_code == 200
            if not exists or rotate_passwords:
                password = secrets.token_urlsafe(24)
                _check(api.put(f"/api/users/{user}", json={"password": password, "tags": ""}), f"create user {module}")
                passwords[module] = password
            _check(api.put(f"/api/permissions/{v}/{user}", json=permissions_for(module)), f"permissions of {module}")
            own = module_pattern(module)
            topic = {
                EXCHANGE: {"write": publish_pattern(module, publish_patterns), "read": ".*"},
                DEAD_LETTER_EXCHANGE: {"write": own, "read": own},
            }
            for exchange, rights in topic.items():
                _check(
                    api.put(f"/api/topic-permissions/{v}/{user}", json={"exchange": exchange, **rights}),
                    f"topic permissions of {module} on {exchange}",
                )
        if delete_guest:
            _check(api.delete("/api/users/guest"), "delete guest", ok=(200, 204, 404))
    return passwords
