"""Dashboard pages (seed: visualization). Nothing lives here yet; this is what will.

In: the orchestrator's views (clusters, workloads, placements and their explanations, events, SLA status), the
same ones the API and the CLI read. Out: HTML pages served beside the API. It changes state only through the
orchestrator's commands and publishes nothing itself. Grafana dashboards and Prometheus rules for production live
in ``deploy/grafana``, not here.

Layer: beside ``api`` (DESIGN.md), under the CLI that composes them; it does not reach into the store's modules.
"""
