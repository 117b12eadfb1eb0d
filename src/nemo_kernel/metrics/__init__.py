"""Analytics engine (seed: meta-Orchestrator Analytics Engine). Nothing lives here yet; this is what will.

In: time series of what the clusters report (replica and node usage, request rates and latencies), kept in a
built-in store on the embedded default or read from Prometheus in production. Out: queries and aggregates over a
window (rates, quantiles, burn rates) for the decision engine's criteria, PPEF's SLO evaluation and reports. It
publishes no events: it answers questions.

Layer: with ``store`` and ``bus`` at the bottom (DESIGN.md), so it imports only ``domain`` and ``config``; its
callers (``ppef``, ``orchestrator``) import it, never the other way round.
"""
