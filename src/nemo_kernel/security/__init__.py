"""Runtime security (seed: CNAPPS). Nothing lives here yet; this is what will.

In: runtime security events from the clusters, as Falco / Falcosidekick JSON posted to the control plane. Out: each
event validated, stored against the workload and replica it concerns (``/api/v1/security/events``) and published as
``security.event``; the responses (quarantine, migrate, notify) are reactions registered for that event kind in
the control plane, so a new response is a new handler, not an edit here.

Layer: beside ``migration``, ``ppef`` and ``access`` (DESIGN.md), above the clusters, the store and the bus.
"""
