"""Migration (seed: SEE migration extension). Nothing lives here yet; this is what will.

In: a move asked for (``nemo migrate``, ``POST /api/v1/migrations``) or decided by a reaction (a predicted SLA
breach, a security response): a workload's replica, where it runs and where it should go. Out: the replica running
at its target, stateless by start-then-stop, stateful through a driver's optional state hand-off capability
(application state, or CRIU where ``criu check`` passes), with the downtime measured. Publishes
``migration.completed`` (with the downtime) when a move is done.

Layer: beside ``ppef``, ``access`` and ``security`` (DESIGN.md): it drives clusters through the ``ClusterDriver``
protocol and records in the store; the orchestrator calls it, it never imports the orchestrator.
"""
