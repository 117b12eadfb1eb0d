"""Prometheus configurations for a running NEMO stack (``nemo monitoring prometheus-config``); pure functions.

Two layouts:

- **single**: one Prometheus scrapes the control plane's ``/metrics`` (every series NEMO produces: replicas,
  nodes, clusters, workloads, links; its bus and API counters), the workloads' own series from its ``/federate``
  (they are not on ``/metrics``, whose size the inventory bounds), and the gateway's own status ``/metrics``.
  The agents are not scraped too: the control plane already collects them, and scraping both would count every
  replica twice.
- **federation** (seed section 6.4): one Prometheus per cluster scrapes that cluster's agent (the target labels
  ``cluster``, ``tier``, ``region`` are added by the job, as the control plane adds them), and one Prometheus
  federates them (``/federate`` of each) plus the series only the control plane has (workloads through the
  gateway, cluster heartbeats, links) from NEMO's ``/federate``.

NEMO's ``/metrics`` and ``/federate`` need a viewer token: the jobs get one with OAuth2 client credentials
(``oauth2``, Prometheus >= 2.27) from a read-only client, so nothing expires in the file. Agents take their own
bearer token (``authorization.credentials_file``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

CONTROL_PLANE_JOB = "nemo-control-plane"
GATEWAY_JOB = "nemo-gateway"
AGENT_JOB_PREFIX = "nemo-agent-"
FEDERATE_JOB_PREFIX = "nemo-federate-"

WORKLOADS_JOB = "nemo-workloads"
WORKLOADS_OWN = r'{__name__=~".+",__name__!~"nemo_.+"}'
"""The series workloads expose themselves (``deployment.metrics``), which NEMO's ``/metrics`` leaves out."""
CONTROL_PLANE_ONLY = r'{__name__=~"nemo_(workload|cluster|link)_.+"}'
"""The series the federating Prometheus reads from NEMO itself (the clusters' Prometheus servers lack them)."""


@dataclass(frozen=True, slots=True)
class OAuthClient:
    """The read-only client a Prometheus job gets its tokens with."""

    client_id: str
    secret_file: Path
    token_url: str


@dataclass(frozen=True, slots=True)
class Agent:
    """A cluster's agent: where its ``/metrics`` is, the file holding its bearer token, its target labels."""

    cluster: str
    url: str
    token_file: Path
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Stack:
    """What a running ``nemo up`` serves."""

    api_url: str
    client: OAuthClient
    gateway_url: str | None = None
    gateway_status_path: str = "/_gateway"
    agents: Sequence[Agent] = ()


def single(stack: Stack, interval: str = "15s") -> dict[str, Any]:
    """One Prometheus for the whole stack."""
    workloads = _nemo_job(WORKLOADS_JOB, stack, "/federate", interval)
    workloads["params"] = {"match[]": [WORKLOADS_OWN]}
    jobs = [_nemo_job(CONTROL_PLANE_JOB, stack, "/metrics", interval), workloads]
    if stack.gateway_url:
        gateway = _job(GATEWAY_JOB, stack.gateway_url, f"{stack.gateway_status_path.rstrip('/')}/metrics", interval)
        # The per-workload series the gateway counts reach Prometheus through the control plane, which labels them.
        gateway["metric_relabel_configs"] = [
            {"source_labels": ["__name__"], "regex": "nemo_workload_.+", "action": "drop"}
        ]
        jobs.append(gateway)
    return _config(interval, jobs)


def for_cluster(stack: Stack, cluster: str, interval: str = "15s") -> dict[str, Any]:
    """The Prometheus of one cluster: it scrapes the cluster's agent."""
    agent = next((a for a in stack.agents if a.cluster == cluster), None)
    if agent is None:
        known = ", ".join(a.cluster for a in stack.agents) or "none"
        raise ValueError(f"no agent of cluster {cluster!r} is running here (local clusters: {known})")
    job = _job(AGENT_JOB_PREFIX + cluster, agent.url, "/metrics", interval)
    job["authorization"] = {"type": "Bearer", "credentials_file": str(agent.token_file)}
    job["static_configs"][0]["labels"] = {"cluster": agent.cluster, **agent.labels}
    return _config(interval, [job])


def federating(stack: Stack, clusters: Mapping[str, str], interval: str = "15s") -> dict[str, Any]:
    """The Prometheus federating the clusters' ones (``clusters``: name -> its Prometheus URL) and NEMO."""
    jobs = []
    for name, url in sorted(clusters.items()):
        job = _job(FEDERATE_JOB_PREFIX + name, url, "/federate", interval)
        job["honor_labels"] = True
        job["params"] = {"match[]": [f'{{job="{AGENT_JOB_PREFIX}{name}"}}']}
        jobs.append(job)
    nemo = _nemo_job(FEDERATE_JOB_PREFIX + "nemo", stack, "/federate", interval)
    nemo["params"] = {"match[]": [CONTROL_PLANE_ONLY]}
    jobs.append(nemo)
    return _config(interval, jobs)


def _config(interval: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return {"global": {"scrape_interval": interval, "evaluation_interval": interval}, "scrape_configs": jobs}


def _nemo_job(name: str, stack: Stack, path: str, interval: str) -> dict[str, Any]:
    job = _job(name, stack.api_url, path, interval)
    # NEMO's series carry their own cluster/node/replica labels; they win over the scraper's.
    job["honor_labels"] = True
    job["oauth2"] = {
        "client_id": stack.client.client_id,
        "client_secret_file": str(stack.client.secret_file),
        "token_url": stack.client.token_url,
    }
    return job


def _job(name: str, url: str, path: str, interval: str) -> dict[str, Any]:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL")
    return {
        "job_name": name,
        "scrape_interval": interval,
        "scheme": parts.scheme,
        "metrics_path": parts.path.rstrip("/") + path,
        "static_configs": [{"targets": [parts.netloc]}],
    }
