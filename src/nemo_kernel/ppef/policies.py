"""What the closed loop's ``notify`` and ``move`` policies need to know, as pure rules.

- ``notify``: a webhook may go only to a host an admin allowed (``NEMO_WEBHOOK_HOSTS``, empty by default: none);
  :func:`check_webhooks` refuses an SLA naming another host at apply time (422 naming
  ``policies[<i>].webhook``), and :func:`webhook_payload` is the JSON body the runner POSTs. A host name allowed
  may still resolve to a loopback, private, link-local or metadata address (DNS rebinding, SSRF):
  ``domain.addresses.AddressAllowlist.refusal`` refuses every address that is not global unless the admin listed
  it, or a network holding it, in ``NEMO_WEBHOOK_HOSTS`` too (``127.0.0.1``, ``10.0.0.0/8``); the runner connects
  to the address it checked.
- ``move``: :func:`move_preference` says which placement intent makes a cluster better for the violated SLO
  (closer for latency, greener for energy, cheaper for cost); the decision engine chooses with it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from nemo_kernel.domain import Optimize
from nemo_kernel.domain.addresses import AddressAllowlist
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.sla import PolicyAction, SlaSpec, SloKind

MOVE_PREFERENCE: Mapping[SloKind, Optimize] = {
    SloKind.LATENCY: Optimize.LATENCY,
    SloKind.JITTER: Optimize.LATENCY,
    SloKind.PACKET_LOSS: Optimize.LATENCY,
    SloKind.ENERGY: Optimize.CARBON,
    SloKind.COST: Optimize.COST,
}
"""The intent a move favours for an SLO of each kind; the other kinds (errors, availability, capacity...) are
about the replica, not the place: any other healthy cluster, weighed as the workload already asks."""


def move_preference(kind: SloKind | None) -> Optimize | None:
    """The placement intent a move for an SLO of ``kind`` favours; None: the workload's own weights."""
    return None if kind is None else MOVE_PREFERENCE.get(kind)


WEBHOOK_HOSTS = "NEMO_WEBHOOK_HOSTS"
"""The setting that lists the hosts (and non-global addresses) webhooks may reach."""


def webhook_host(url: str) -> str:
    """The host of a webhook URL, lower case ('' when it has none)."""
    return (urlsplit(url).hostname or "").lower()


def check_webhooks(spec: SlaSpec, allowed: AddressAllowlist) -> None:
    """422 naming ``policies[<i>].webhook`` when a policy's webhook host is not one ``allowed`` (the admin's
    ``NEMO_WEBHOOK_HOSTS``), or when a policy other than ``notify`` names a webhook it would never call."""
    for i, policy in enumerate(spec.policies):
        if policy.webhook is None:
            continue
        field = f"policies[{i}].webhook"
        if policy.action is not PolicyAction.NOTIFY:
            message = f"only a notify policy sends a webhook, not {policy.action.value}"
        elif not allowed.allows_host(webhook_host(policy.webhook)):
            host = webhook_host(policy.webhook) or "(none)"
            message = f"host {host} is not one an admin allowed for webhooks (NEMO_WEBHOOK_HOSTS)"
        else:
            continue
        raise ApiError(422, "invalid", f"{field}: {message}", [{"field": field, "message": message}])


def webhook_payload(namespace: str, sla: str, trigger: str, predicted: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON a notify webhook receives: which SLA and SLO, its status, value, target and predicted time."""
    return {
        "sla": sla,
        "namespace": namespace,
        "slo": predicted.get("slo"),
        "status": "Violated" if trigger == "violated" else "AtRisk",
        "trigger": trigger,
        "value": predicted.get("value"),
        "target": predicted.get("threshold", predicted.get("target")),
        "predicted_at": predicted.get("predicted_at"),
        "confidence": predicted.get("confidence"),
    }
