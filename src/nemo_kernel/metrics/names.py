"""The stable names of NEMO's series: what Grafana dashboards, PromQL rules and PPEF's SLIs are written against.

Renaming one breaks users' dashboards and alerts: add a new name instead. Every series NEMO produces is listed here
with its type and meaning; the labels are :data:`nemo_kernel.metrics.model.TARGET_LABELS` where they apply.
A workload's own series (scraped from its ``/metrics``) keep their names, get the target labels added, and may never
use the ``nemo_`` prefix (a replica must not forge the series its SLOs are judged on).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SeriesName:
    """A series NEMO exposes: its name, Prometheus type and help text."""

    name: str
    type: str  # counter | gauge | histogram
    help: str


RESERVED_PREFIX = "nemo_"

REPLICA_UP = SeriesName("nemo_replica_up", "gauge", "1 if the replica runs and is healthy, else 0")
REPLICA_RESTARTS = SeriesName("nemo_replica_restarts_total", "counter", "Restarts of the replica")
REPLICA_CPU = SeriesName("nemo_replica_cpu_seconds_total", "counter", "CPU time used by the replica")
REPLICA_MEMORY = SeriesName("nemo_replica_memory_bytes", "gauge", "Resident memory of the replica")
REPLICA_POWER = SeriesName("nemo_replica_power_watts", "gauge", "The replica's share of its node's power")
REPLICA_ENERGY = SeriesName("nemo_replica_energy_joules_total", "counter", "The replica's share of its node's energy")
REPLICA_CO2 = SeriesName("nemo_replica_co2_grams_total", "counter", "CO2 of the replica's energy")

NODE_CPU = SeriesName("nemo_node_cpu_seconds_total", "counter", "CPU time used on the node")
NODE_CPU_CORES = SeriesName("nemo_node_cpu_cores", "gauge", "CPU capacity of the node")
NODE_MEMORY = SeriesName("nemo_node_memory_bytes", "gauge", "Memory used on the node")
NODE_MEMORY_CAPACITY = SeriesName("nemo_node_memory_capacity_bytes", "gauge", "Memory capacity of the node")
NODE_POWER = SeriesName("nemo_node_power_watts", "gauge", "Power drawn by the node (its power model)")
NODE_ENERGY = SeriesName("nemo_node_energy_joules_total", "counter", "Energy used by the node")
NODE_CO2 = SeriesName("nemo_node_co2_grams_total", "counter", "CO2 of the node's energy")

CLUSTER_HEARTBEAT_RTT = SeriesName(
    "nemo_cluster_heartbeat_rtt_seconds", "gauge", "Round trip of the last heartbeat to the cluster"
)
CLUSTER_CARBON_INTENSITY = SeriesName(
    "nemo_cluster_carbon_intensity_grams_per_kwh", "gauge", "Carbon intensity of the cluster's grid"
)

WORKLOAD_REQUESTS = SeriesName(
    "nemo_workload_requests_total", "counter", "Requests to the workload through the gateway, by code"
)
WORKLOAD_ERRORS = SeriesName(
    "nemo_workload_request_errors_total",
    "counter",
    "Failed requests: 5xx from the workload, or refused by a gateway plugin (label decided_by)",
)
WORKLOAD_LATENCY = SeriesName(
    "nemo_workload_request_duration_seconds", "histogram", "Latency of requests to the workload through the gateway"
)

LINK_RTT = SeriesName(
    "nemo_link_rtt_seconds", "gauge", "Round trip measured by probes over the link (labels cluster, peer)"
)
LINK_JITTER = SeriesName("nemo_link_jitter_seconds", "gauge", "Variation of the probes' round trips")
LINK_LOSS = SeriesName("nemo_link_loss_ratio", "gauge", "Share of probes lost over the link")

SCRAPE_ERRORS = SeriesName("nemo_scrape_errors_total", "counter", "Failed scrapes, by target")
SAMPLES_DROPPED = SeriesName("nemo_samples_dropped_total", "counter", "Samples refused by the store, by reason")

ALL: tuple[SeriesName, ...] = tuple(v for v in globals().values() if isinstance(v, SeriesName))
"""Every series NEMO produces."""
