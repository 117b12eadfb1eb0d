"""PPEF, the Privacy and Policy Enforcement Framework: SLAs and their SLOs.

Pure parts, used by the orchestrator's SLO loop (``orchestrator/slo_loop.py``) and its reactions
(``orchestrator/reactions_sla.py``): :mod:`.sli` (what each of the 15 kinds measures, from where),
:mod:`.evaluate` (budgets, burn rates, states, vectorised), :mod:`.predict` (time to breach) and :mod:`.policies`
(the webhook allowlist and payload of ``notify``, the cluster preference of ``move``).

In: SLAs (``nemo sla apply``, ``/api/v1/slas``) whose SLOs name an SLI, a target and a window, and the time series
of :mod:`nemo_kernel.metrics`. Out: each SLA's lifecycle and status (``/api/v1/slas/{id}/status``), error budgets
and burn rates, and a forecast of breaches. Publishes ``sla.violated`` and ``sla.breach_predicted``; the control
plane reacts to them (scale out, migrate, notify) with handlers registered for those event kinds, so PPEF never
calls the orchestrator.

Layer: beside ``migration``, ``access`` and ``security`` (DESIGN.md), above ``metrics`` and the store.
"""
