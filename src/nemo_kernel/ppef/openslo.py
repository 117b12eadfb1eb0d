"""OpenSLO v1 in and out: a user of Sloth, Pyrra or Nobl9 brings SLOs written as OpenSLO ``SLO``, ``SLI`` and
``AlertPolicy`` objects; ``nemo sla get NAME -o openslo`` writes an SLA back as such objects.

What maps, and how (every other field is refused with a 422 naming it: nothing is silently dropped):

* Each ``SLO`` object with one objective is one NEMO SLO named by ``metadata.name`` (several objectives:
  ``<name>-<index>``). ``spec.service`` is the SLA's name and workload unless the ``nemo.io/sla`` annotation says
  otherwise. ``timeWindow`` (one rolling window) is the SLA's period, the same for every SLO.
* ``budgetingMethod`` ``Occurrences`` or ``Timeslices`` (``objectives[].timeSliceWindow`` is the slice; a slice is
  good when the SLI meets the objective's ``op``/``value``).
* ``objectives[]``: ``op`` ``lte``/``gte`` and ``value`` are the threshold, ``target`` (or ``targetPercent``) the
  share of good events or slices, ``displayName`` the description.
* The SLI (``indicator`` inline or ``indicatorRef`` to an ``SLI`` object of the same document list) is a
  ``thresholdMetric`` whose ``metricSource`` has ``type: NEMO`` and ``spec.kind`` one of the 15 SLO kinds (and
  ``percentile``, ``window``, ``minEvents``): NEMO measures SLIs from its own series, not from a user's PromQL.
* ``AlertPolicy`` (inline or ``alertPolicies: [name]``) becomes a ``notify`` policy: each notification target's
  ``spec.target`` (an http(s) URL) is a webhook; burn-rate ``conditions`` must be one of NEMO's multiwindow pairs
  (threshold 14.4, 6, 3 or 1 with its long window at the SLA's period) and make the policy fire on a predicted
  breach; ``alertWhenBreaching`` on an actual violation.
* The ``nemo.io/sla`` annotation (JSON) carries what OpenSLO has no place for: namespace, workload, service
  description, PRESS clauses, reporting, penalties, and the policies that are not plain notifications.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from nemo_kernel.domain.common import field_path
from nemo_kernel.domain.documents import DocumentError, load_document
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.domain.sla import (
    BudgetingMethod,
    Comparison,
    Policy,
    PolicyAction,
    PolicyTrigger,
    SlaSpec,
    SloKind,
    default_comparison,
)
from nemo_kernel.ppef.rules import window_for_factor

API_VERSION = "openslo/v1"
ANNOTATION = "nemo.io/sla"
NEMO_SOURCE = "NEMO"
_OPS = {"lte": Comparison.AT_MOST, "gte": Comparison.AT_LEAST}
_DEFAULT_COOLDOWN = Policy(action=PolicyAction.NOTIFY).cooldown


def is_openslo(document: Any) -> bool:
    """Whether ``document`` is OpenSLO (an object, or a list of objects, with ``apiVersion: openslo/v1``)."""
    items = document if isinstance(document, list) else [document]
    return bool(items) and all(isinstance(d, dict) and d.get("apiVersion") == API_VERSION for d in items)


def _refuse(field: str, message: str) -> ApiError:
    return ApiError(422, "invalid", f"{field}: {message}", [{"field": field, "message": message}])


def _mapping(value: Any, field: str, allowed: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _refuse(field, "must be an object")
    for key in value:
        if key not in allowed:
            raise _refuse(
                _join(field, key), f"is not supported by NEMO's OpenSLO import (supported: {', '.join(allowed)})"
            )
    for key in required:
        if key not in value:
            raise _refuse(_join(field, key), "is required")
    return value


def _join(field: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{field}[{key}]"
    return f"{field}.{key}" if field else key


def _list(value: Any, field: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise _refuse(field, "must be a non-empty list")
    return value


def _metadata(value: Any, field: str) -> dict[str, Any]:
    meta = _mapping(value, field, ("name", "displayName", "annotations"), ("name",))
    annotations = meta.get("annotations", {})
    _mapping(annotations, _join(field, "annotations"), (ANNOTATION,))
    return meta


class _Objects:
    """The document list, indexed by kind and name for references."""

    def __init__(self, items: list[Any]) -> None:
        self.slos: list[tuple[str, dict[str, Any]]] = []
        self.named: dict[tuple[str, str], tuple[str, dict[str, Any]]] = {}
        for index, item in enumerate(items):
            field = f"[{index}]" if len(items) > 1 else ""
            obj = _mapping(item, field or "(body)", ("apiVersion", "kind", "metadata", "spec"), ("kind", "metadata"))
            kind = obj["kind"]
            if kind not in ("SLO", "SLI", "AlertPolicy"):
                raise _refuse(_join(field, "kind"), f"{kind!r} is not supported (SLO, SLI, AlertPolicy)")
            meta = _metadata(obj["metadata"], _join(field, "metadata"))
            if kind == "SLO":
                self.slos.append((field, obj))
            elif (kind, meta["name"]) in self.named:
                raise _refuse(_join(field, "metadata.name"), f"a second {kind} named {meta['name']!r}")
            else:
                self.named[(kind, meta["name"])] = (field, obj)
        if not self.slos:
            raise _refuse("(body)", "has no SLO object")

    def ref(self, kind: str, name: Any, field: str) -> tuple[str, dict[str, Any]]:
        found = self.named.get((kind, name)) if isinstance(name, str) else None
        if found is None:
            raise _refuse(field, f"names no {kind} object of this document")
        return found


def to_sla(document: Any) -> SlaSpec:
    """The SLA an OpenSLO document (one object or a list) describes; 422 naming the field it cannot take."""
    items = document if isinstance(document, list) else [document]
    objects = _Objects(items)
    extra: dict[str, Any] | None = None
    services: set[str] = set()
    periods: set[str] = set()
    slos: list[dict[str, Any]] = []
    notify: dict[str, tuple[dict[str, Any], list[str]]] = {}
    for field, obj in objects.slos:
        meta = obj["metadata"]
        spec = _mapping(
            obj.get("spec"),
            _join(field, "spec"),
            (
                "description",
                "service",
                "indicator",
                "indicatorRef",
                "timeWindow",
                "budgetingMethod",
                "objectives",
                "alertPolicies",
            ),
            ("service", "timeWindow", "budgetingMethod", "objectives"),
        )
        annotation = meta.get("annotations", {}).get(ANNOTATION)
        if annotation is not None:
            parsed = _annotation(annotation, _join(field, f"metadata.annotations.{ANNOTATION}"))
            if extra is not None and parsed != extra:
                raise _refuse(_join(field, f"metadata.annotations.{ANNOTATION}"), "differs from another SLO's")
            extra = parsed
        sfield = _join(field, "spec")
        services.add(_text(spec["service"], _join(sfield, "service")))
        periods.add(_time_window(spec["timeWindow"], _join(sfield, "timeWindow")))
        sli = _indicator(objects, spec, sfield)
        budgeting = spec["budgetingMethod"]
        if budgeting not in (BudgetingMethod.OCCURRENCES.value, BudgetingMethod.TIMESLICES.value):
            raise _refuse(_join(sfield, "budgetingMethod"), f"{budgeting!r} is not supported (Occurrences, Timeslices)")
        objectives = _list(spec["objectives"], _join(sfield, "objectives"))
        names: list[str] = []
        for index, objective in enumerate(objectives):
            name = meta["name"] if len(objectives) == 1 else f"{meta['name']}-{index}"
            ofield = _join(_join(sfield, "objectives"), index)
            slos.append(_objective(objective, ofield, name, sli, budgeting, spec.get("description")))
            names.append(name)
        for index, policy in enumerate(spec.get("alertPolicies") or []):
            pfield = _join(_join(sfield, "alertPolicies"), index)
            key, body = _alert_policy(objects, policy, pfield)
            notify.setdefault(key, (body, []))[1].extend(names)
    if len(services) > 1:
        raise _refuse(
            "spec.service", f"the SLOs name several services ({', '.join(sorted(services))}); one SLA binds one"
        )
    if len(periods) > 1:
        raise _refuse(
            "spec.timeWindow", f"the SLOs have different windows ({', '.join(sorted(periods))}); one SLA has one period"
        )
    service, period = services.pop(), periods.pop()
    base: dict[str, Any] = {"name": service, "workload": service, **(extra or {})}
    every = [s["name"] for s in slos]
    policies = list(base.pop("policies", []))
    for body, covered in notify.values():
        for webhook in body["webhooks"] or [None]:
            policies.append(
                {
                    "action": PolicyAction.NOTIFY.value if webhook else PolicyAction.NOTIFY_ONLY.value,
                    "on": body["on"],
                    "slos": [] if sorted(set(covered)) == sorted(every) else sorted(set(covered)),
                    **({"webhook": webhook} if webhook else {}),
                }
            )
    try:
        sla = SlaSpec.model_validate({**base, "period": period, "slos": slos, "policies": policies})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = field_path([p if isinstance(p, int) else str(p) for p in first["loc"]])
        raise _refuse(where or "(body)", f"{first['msg']} (in the SLA this OpenSLO document describes)") from exc
    _check_conditions(sla, notify)
    return sla


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _refuse(field, "must be a non-empty string")
    return value


def _annotation(value: Any, field: str) -> dict[str, Any]:
    # JSON inside a body obeys the body's rules (depth, duplicate keys, finite numbers): json.loads alone let a
    # deep annotation through to a RecursionError (a 500) and a repeated key win silently.
    try:
        parsed = load_document(_text(value, field), yaml_syntax=False)
    except DocumentError as exc:
        where = field if exc.field is None else _join(field, exc.field)
        raise _refuse(where, exc.problem) from exc
    allowed = ("name", "namespace", "workload", "service", "press", "reporting", "penalties", "policies")
    return _mapping(parsed, field, allowed)


def _time_window(value: Any, field: str) -> str:
    windows = _list(value, field)
    if len(windows) != 1:
        raise _refuse(field, "must hold exactly one window")
    window = _mapping(windows[0], _join(field, 0), ("duration", "isRolling"), ("duration",))
    if window.get("isRolling", True) is not True:
        raise _refuse(_join(_join(field, 0), "isRolling"), "calendar-aligned windows are not supported")
    return _text(window["duration"], _join(_join(field, 0), "duration"))


def _indicator(objects: _Objects, spec: dict[str, Any], field: str) -> dict[str, Any]:
    if ("indicator" in spec) == ("indicatorRef" in spec):
        raise _refuse(_join(field, "indicator"), "give exactly one of indicator and indicatorRef")
    if "indicatorRef" in spec:
        sfield, sli = objects.ref("SLI", spec["indicatorRef"], _join(field, "indicatorRef"))
        return _sli_spec(sli.get("spec"), _join(sfield, "spec"))
    inline = _mapping(spec["indicator"], _join(field, "indicator"), ("metadata", "spec"), ("spec",))
    if "metadata" in inline:
        _metadata(inline["metadata"], _join(field, "indicator.metadata"))
    return _sli_spec(inline["spec"], _join(field, "indicator.spec"))


def _sli_spec(value: Any, field: str) -> dict[str, Any]:
    spec = _mapping(value, field, ("description", "thresholdMetric"), ("thresholdMetric",))
    metric = _mapping(spec["thresholdMetric"], _join(field, "thresholdMetric"), ("metricSource",), ("metricSource",))
    mfield = _join(field, "thresholdMetric.metricSource")
    source = _mapping(metric["metricSource"], mfield, ("type", "spec"), ("type", "spec"))
    if source["type"] != NEMO_SOURCE:
        raise _refuse(
            _join(mfield, "type"),
            f"{source['type']!r} is not supported: NEMO measures SLIs from its own series; write type NEMO with "
            "spec.kind (latency, error_rate, availability, ...)",
        )
    sli = _mapping(source["spec"], _join(mfield, "spec"), ("kind", "percentile", "window", "minEvents"), ("kind",))
    out = {"kind": sli["kind"], "percentile": sli.get("percentile"), "window": sli.get("window")}
    if "minEvents" in sli:
        out["min_events"] = sli["minEvents"]
    return {k: v for k, v in out.items() if v is not None}


def _objective(
    value: Any, field: str, name: str, sli: dict[str, Any], budgeting: str, description: Any
) -> dict[str, Any]:
    objective = _mapping(value, field, ("displayName", "op", "value", "target", "targetPercent", "timeSliceWindow"))
    if ("target" in objective) == ("targetPercent" in objective):
        raise _refuse(_join(field, "target"), "give exactly one of target and targetPercent")
    target = objective.get("target")
    if "targetPercent" in objective:
        percent = objective["targetPercent"]
        if not isinstance(percent, int | float) or isinstance(percent, bool):
            raise _refuse(_join(field, "targetPercent"), "must be a number")
        target = percent / 100
    slo: dict[str, Any] = {"name": name, **sli, "target": target, "budgeting": budgeting}
    text = objective.get("displayName", description)
    if text is not None:
        slo["description"] = text
    if ("op" in objective) != ("value" in objective):
        raise _refuse(_join(field, "op" if "value" in objective else "value"), "op and value go together")
    if "op" in objective:
        op = objective["op"]
        if op not in _OPS:
            raise _refuse(_join(field, "op"), f"{op!r} is not supported (lte, gte)")
        slo["threshold"] = objective["value"]
        known = sli["kind"] in {k.value for k in SloKind}  # an unknown kind is refused by SlaSpec, naming it
        if not known or _OPS[op] is not default_comparison(SloKind(sli["kind"])):
            slo["comparison"] = _OPS[op].value  # the kind's own default is left implicit, as NEMO writes it
    if "timeSliceWindow" in objective:
        if budgeting != BudgetingMethod.TIMESLICES.value:
            raise _refuse(_join(field, "timeSliceWindow"), "applies to Timeslices budgeting only")
        slo["timeslice"] = objective["timeSliceWindow"]
    return slo


def _alert_policy(objects: _Objects, value: Any, field: str) -> tuple[str, dict[str, Any]]:
    if isinstance(value, str):
        pfield, policy = objects.ref("AlertPolicy", value, field)
    elif isinstance(value, dict) and set(value) == {"alertPolicyRef"}:
        pfield, policy = objects.ref("AlertPolicy", value["alertPolicyRef"], _join(field, "alertPolicyRef"))
    else:
        policy = _mapping(value, field, ("apiVersion", "kind", "metadata", "spec"), ("kind", "metadata", "spec"))
        if policy["kind"] != "AlertPolicy":
            raise _refuse(_join(field, "kind"), "must be AlertPolicy")
        _metadata(policy["metadata"], _join(field, "metadata"))
        pfield = field
    spec = _mapping(
        policy.get("spec"),
        _join(pfield, "spec"),
        (
            "description",
            "alertWhenNoData",
            "alertWhenResolved",
            "alertWhenBreaching",
            "conditions",
            "notificationTargets",
        ),
    )
    for flag in ("alertWhenNoData", "alertWhenResolved"):
        if spec.get(flag, False) is not False:
            raise _refuse(_join(_join(pfield, "spec"), flag), "is not supported: NEMO notifies on breaches only")
    conditions = [
        _condition(c, _join(_join(pfield, "spec.conditions"), i)) for i, c in enumerate(spec.get("conditions") or [])
    ]
    on = ([PolicyTrigger.PREDICTED.value] if conditions else []) + (
        [PolicyTrigger.VIOLATED.value] if spec.get("alertWhenBreaching", False) is True else []
    )
    if not on:
        raise _refuse(
            _join(pfield, "spec"), "has no burn-rate condition and alertWhenBreaching is not true: never fires"
        )
    webhooks = [
        _target(t, _join(_join(pfield, "spec.notificationTargets"), i))
        for i, t in enumerate(spec.get("notificationTargets") or [])
    ]
    return policy["metadata"]["name"], {"on": on, "webhooks": webhooks, "conditions": conditions, "field": pfield}


def _condition(value: Any, field: str) -> tuple[float, str, str]:
    outer = _mapping(value, field, ("kind", "metadata", "spec"), ("kind", "spec"))
    if outer["kind"] != "AlertCondition":
        raise _refuse(_join(field, "kind"), "must be AlertCondition")
    spec = _mapping(outer["spec"], _join(field, "spec"), ("description", "severity", "condition"), ("condition",))
    cfield = _join(field, "spec.condition")
    condition = _mapping(
        spec["condition"], cfield, ("kind", "op", "threshold", "lookbackWindow", "alertAfter"), ("kind", "threshold")
    )
    if condition["kind"] != "burnrate":
        raise _refuse(_join(cfield, "kind"), "only burnrate conditions are supported")
    if condition.get("op", "gte") not in ("gte", "gt"):
        raise _refuse(_join(cfield, "op"), "a burn-rate alert fires above its threshold (gte)")
    threshold = condition["threshold"]
    if not isinstance(threshold, int | float) or isinstance(threshold, bool):
        raise _refuse(_join(cfield, "threshold"), "must be a number")
    return float(threshold), str(condition.get("lookbackWindow", "")), cfield


def _check_conditions(sla: SlaSpec, notify: Mapping[str, tuple[dict[str, Any], list[str]]]) -> None:
    for body, _ in notify.values():
        for threshold, lookback, cfield in body["conditions"]:
            window = window_for_factor(sla.period, threshold)
            if window is None:
                raise _refuse(
                    _join(cfield, "threshold"), "NEMO's burn-rate alerts use thresholds 14.4, 6, 3 and 1 (Sloth's)"
                )
            if lookback and lookback != window:
                raise _refuse(
                    _join(cfield, "lookbackWindow"),
                    f"burn rate {threshold:g} is watched over {window} at a {sla.period} period, not {lookback}",
                )


def _target(value: Any, field: str) -> str:
    target = _mapping(value, field, ("kind", "metadata", "spec"), ("kind", "spec"))
    if target["kind"] != "AlertNotificationTarget":
        raise _refuse(_join(field, "kind"), "must be AlertNotificationTarget")
    spec = _mapping(target["spec"], _join(field, "spec"), ("description", "target"), ("target",))
    url = _text(spec["target"], _join(field, "spec.target"))
    if not url.startswith(("http://", "https://")):
        raise _refuse(_join(field, "spec.target"), "must be an http(s) URL (NEMO calls it as a webhook)")
    return url


# --- export ----------------------------------------------------------------------------------------------------------


def _plain_notify(policy: Policy) -> bool:
    # A notify policy OpenSLO can say all of: a webhook, default cooldown (AlertPolicy has no cooldown)
    return policy.action is PolicyAction.NOTIFY and policy.webhook is not None and policy.cooldown == _DEFAULT_COOLDOWN


def from_sla(sla: SlaSpec) -> list[dict[str, Any]]:
    """The OpenSLO v1 objects of ``sla``, one ``SLO`` per NEMO SLO (its SLI inline); :func:`to_sla` reads them
    back to the same SLA."""
    as_alerts = [p for p in sla.policies if _plain_notify(p)]
    extra = sla.model_dump(mode="json", include={"namespace", "workload", "service", "press", "reporting", "penalties"})
    extra["name"] = sla.name
    kept = [p.model_dump(mode="json", exclude_defaults=True) for p in sla.policies if not _plain_notify(p)]
    if kept:
        extra["policies"] = kept
    out: list[dict[str, Any]] = []
    for position, slo in enumerate(sla.slos):
        meta: dict[str, Any] = {"name": slo.name}
        if position == 0:
            meta["annotations"] = {ANNOTATION: json.dumps(extra, sort_keys=True)}
        source: dict[str, Any] = {"kind": slo.kind.value, "window": slo.window, "minEvents": slo.min_events}
        if slo.percentile is not None:
            source["percentile"] = slo.percentile
        objective: dict[str, Any] = {"target": slo.target}
        if slo.description:
            objective["displayName"] = slo.description
        if slo.threshold is not None:
            comparison = slo.comparison or default_comparison(slo.kind)
            objective["op"] = "lte" if comparison is Comparison.AT_MOST else "gte"
            objective["value"] = slo.threshold
        if slo.timeslice is not None:
            objective["timeSliceWindow"] = slo.timeslice
        spec: dict[str, Any] = {
            "service": sla.name,
            "indicator": {
                "metadata": {"name": f"{slo.name}-sli"},
                "spec": {"thresholdMetric": {"metricSource": {"type": NEMO_SOURCE, "spec": source}}},
            },
            "timeWindow": [{"duration": sla.period, "isRolling": True}],
            "budgetingMethod": slo.budgeting.value,
            "objectives": [objective],
        }
        policies = [_export_policy(sla, p, i) for i, p in enumerate(as_alerts) if not p.slos or slo.name in p.slos]
        if policies:
            spec["alertPolicies"] = policies
        out.append({"apiVersion": API_VERSION, "kind": "SLO", "metadata": meta, "spec": spec})
    return out


def _export_policy(sla: SlaSpec, policy: Policy, index: int) -> dict[str, Any]:
    spec: dict[str, Any] = {"alertWhenBreaching": PolicyTrigger.VIOLATED in policy.on}
    if PolicyTrigger.PREDICTED in policy.on:
        spec["conditions"] = [
            {
                "kind": "AlertCondition",
                "metadata": {"name": "page-fast-burn"},
                "spec": {
                    "severity": "page",
                    "condition": {
                        "kind": "burnrate",
                        "op": "gte",
                        "threshold": 14.4,
                        "lookbackWindow": window_for_factor(sla.period, 14.4),
                    },
                },
            }
        ]
    spec["notificationTargets"] = [
        {"kind": "AlertNotificationTarget", "metadata": {"name": "webhook"}, "spec": {"target": policy.webhook}}
    ]
    return {"kind": "AlertPolicy", "metadata": {"name": f"notify-{index}"}, "spec": spec}
