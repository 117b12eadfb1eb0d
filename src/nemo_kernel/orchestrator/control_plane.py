"""The control plane as one object: store, bus, resource manager, engine, outbox and intake, with their loops."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path

from nemo_kernel.bus import (
    Bus,
    InProcessBus,
    Message,
    ModuleIdentity,
    ReplayGuard,
    SecureBus,
    SeenMessages,
    Subscription,
)
from nemo_kernel.clusters import DriverProvider, DriverProviders
from nemo_kernel.config import Settings, load_clusters_file
from nemo_kernel.domain import ClusterSpec, DriverKind, EventKind, RebalanceRequest
from nemo_kernel.domain.errors import ApiError
from nemo_kernel.metrics import HOUR, MINUTE, EmbeddedMetrics, MetricSink, MetricsReader
from nemo_kernel.metrics.prometheus import PrometheusReader
from nemo_kernel.migration import MigrationRunner, MigrationTimings
from nemo_kernel.orchestrator.collect import MetricsCollector
from nemo_kernel.orchestrator.commands import MIGRATE_INTENT, REBALANCER, Commands, RebalanceSettings
from nemo_kernel.orchestrator.decision import DEFAULT_CRITERIA, AnyCriterion
from nemo_kernel.orchestrator.findings import FindingsWatch
from nemo_kernel.orchestrator.identities import ORCHESTRATOR, enrol, identity_file
from nemo_kernel.orchestrator.intake import Intake
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory
from nemo_kernel.orchestrator.outbox import OutboxPublisher
from nemo_kernel.orchestrator.probes import LinkProber
from nemo_kernel.orchestrator.reactions import Reactions, load_reactions
from nemo_kernel.orchestrator.reactions_dispatcher import ReactionDispatcher
from nemo_kernel.orchestrator.reactions_recovery import recovery_reactions
from nemo_kernel.orchestrator.rebalance import RebalanceLimits
from nemo_kernel.orchestrator.reconcile import OrchestrationEngine
from nemo_kernel.orchestrator.resources import ResourceManager
from nemo_kernel.orchestrator.seen_record import StoredSeenRecord
from nemo_kernel.orchestrator.sla_actions import SlaActionRunner
from nemo_kernel.orchestrator.slo_loop import SloLoop
from nemo_kernel.orchestrator.views import Views
from nemo_kernel.store import Database, clusters, events
from nemo_kernel.store.rollups import DatabaseRollups
from nemo_kernel.store.signals import CommitWatch, IdleSkip, Wakeup

log = logging.getLogger(__name__)

_BOOTSTRAP_SUBJECT = "controlplane/bootstrap"
_INTAKE_QUEUE = "orchestrator.intake"
_ENVELOPE_WINDOW = 300.0  # seconds of clock difference accepted on envelopes
# Seconds between full reaction passes when polling: this process's own commits run a full pass each, so a
# periodic one only finds another process's event committed after a newer one, and moves the watermarks on.
_FULL_REACTION_PASS = 30.0
_MIGRATION_POLL = 0.05  # seconds between steps while a migration runs (it waits on replicas and deadlines)
_STOP_GRACE = 5.0  # seconds a loop is given to end after each cancellation on stop


def _bus_for(settings: Settings, directory: StoredKeyDirectory) -> Bus:
    """RabbitMQ when ``NEMO_BUS_URL`` is set (TLS when a CA is given), else the in-process bus, which enforces the
    modules' declared subscriptions itself (the broker does with the topic permissions set by provisioning)."""
    if not settings.bus_url:
        return InProcessBus(read_permissions=directory)
    # Here, not at the top: aio_pika is loaded only by a control plane that uses RabbitMQ.
    from nemo_kernel.bus.rabbitmq import RabbitMqBus, TlsConfig

    tls = None
    if settings.bus_ca_file is not None:
        tls = TlsConfig(settings.bus_ca_file, settings.bus_cert_file, settings.bus_key_file)
    return RabbitMqBus(settings.bus_url, tls=tls)


def _prometheus_for(settings: Settings) -> PrometheusReader | None:
    """The Prometheus that answers the analytics engine's queries when ``NEMO_PROMETHEUS_URL`` is set."""
    if not settings.prometheus_url:
        return None
    return PrometheusReader(settings.prometheus_url, settings.prometheus_timeout)


class ControlPlane:
    """Everything ``nemo up`` runs besides the HTTP server."""

    def __init__(
        self,
        settings: Settings,
        bus: Bus | None = None,
        providers: Mapping[DriverKind, DriverProvider] | None = None,
        reactions: Reactions | None = None,
        criteria: Sequence[AnyCriterion] = DEFAULT_CRITERIA,
        metrics_sink: MetricSink | None = None,
        link_sink: MetricSink | None = None,
    ) -> None:
        """``providers`` open the clusters of their driver kinds instead of the registry's (tests, embedders);
        ``reactions`` replaces the default registry (``REACTION_MODULES`` and the plane's own, see
        :meth:`reaction_registry`); ``criteria`` score placements (the default registry's unless given);
        ``metrics_sink`` receives the collected series (``orchestrator.collect``) and ``link_sink`` the link
        probes' series (``orchestrator.probes``) instead of :attr:`metrics_store`, which still answers ``metrics``."""
        self.reactions = reactions
        self.settings = settings
        self.db = Database(settings.resolved_database_url())
        self.directory = StoredKeyDirectory(self.db)
        self.bus: Bus = bus if bus is not None else _bus_for(settings, self.directory)
        self.resources = ResourceManager(self.db, settings, DriverProviders(settings, providers))
        self.engine = OrchestrationEngine(self.db, self.resources, settings, criteria, moves_started=self.wake)
        # Every message of the control plane's own modules is sealed and verified (SecureBus); the directory of
        # module keys and the record of handled petitions live in the store.
        self.identity = ModuleIdentity.load_or_create(ORCHESTRATOR, identity_file(settings.data_dir, ORCHESTRATOR))
        self._seen_record = StoredSeenRecord(self.db, _INTAKE_QUEUE)
        seen = SeenMessages(ttl=2 * _ENVELOPE_WINDOW, persist=self._seen_record.persist)
        self.secure = SecureBus(
            self.bus, self.identity, self.directory, replay_guard=ReplayGuard(_ENVELOPE_WINDOW, seen)
        )
        self.outbox = OutboxPublisher(self.db, self.secure, self.directory.readers)
        self.intake = Intake(self.db, settings)
        # The front door: every state change (API, bus petitions, web) is a command, every read a view.
        self.commands = Commands(
            self.db,
            self.wake,
            intake=self.intake,
            directory=self.directory,
            carbon_roots=settings.carbon_data_roots,
            resources=self.resources,
            decisions=self.engine.schedule.decisions,  # migration targets are checked by the placing engine
            webhook_hosts=settings.webhook_hosts,
            rebalance=_rebalance_settings(settings),
        )
        timings = MigrationTimings(drain=settings.migration_drain, prepare_timeout=settings.migration_prepare_timeout)
        self.migrations = MigrationRunner(self.db, self.resources.driver, self.wake, timings)
        self.views = Views(
            self.db,
            self.resources.sandbox_of,
            self.directory,
            self.engine.schedule.decisions,
            metrics=lambda: self.metrics,
            last_heartbeat_of=self.resources.last_heartbeat,
        )
        # The analytics engine: the embedded store takes every sample; queries go to ``metrics``, the embedded
        # store unless a Prometheus reader replaces it (NEMO_PROMETHEUS_URL).
        self.metrics_store = EmbeddedMetrics(
            raw_retention=settings.metrics_raw_retention,
            max_series=settings.metrics_max_series,
            max_samples_per_series=settings.metrics_raw_max_samples,
            rollups=DatabaseRollups(self.db),
        )
        self.prometheus = _prometheus_for(settings)
        self.metrics: MetricsReader = self.prometheus or self.metrics_store
        # Every cluster's and the gateway's series, every NEMO_METRICS_INTERVAL seconds (0: none are collected).
        self.collector = (
            MetricsCollector(
                self.resources,
                metrics_sink if metrics_sink is not None else self.metrics_store,
                settings,
                self._gateway_status_path,
            )
            if settings.metrics_interval > 0
            else None
        )
        # Bottlenecks and anomalies in what the analytics engine holds, recorded as analytics.* events.
        self.findings = FindingsWatch(self.db, lambda: self.metrics, settings)
        # PPEF's evaluation asks whichever reader ``metrics`` is at each pass.
        self.slo_loop = SloLoop(self.db, lambda: self.metrics, settings.slo_interval)
        # What PPEF's reactions decided but may not do in their transaction: webhooks, moves through migration.
        self.sla_actions = SlaActionRunner(
            self.db,
            self.commands.migrations,
            self.engine.schedule.decisions,
            webhook_hosts=settings.webhook_hosts,
            webhook_timeout=settings.webhook_timeout,
            interval=settings.store_poll_interval,
        )
        # Link probes measure every cluster's links into the store (or the sink a test gives).
        self.link_probes = LinkProber(self.resources, link_sink if link_sink is not None else self.metrics_store)
        self.last_pass: float | None = None  # monotonic time the last reconcile pass ended
        self._wake = Wakeup()  # the reconcile loop's: commands and reactions set it, from any thread
        # Set by wake() and by every commit of this process that records an event (a migration asked through the
        # store, a rollout or a plan to apply); the store poll interval covers other processes' migrations.
        self._migration_wake = self.db.event_wakeup()
        # Made here, not in the loops, so that events committed before a loop first waits still wake it.
        self._outbox_wake = self.db.event_wakeup()
        self._reaction_wake = self.db.event_wakeup()
        self._fault_wake = self.db.event_wakeup()
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None
        # the gateway's status path as last read, with the commit counter then (None: read on the next ask)
        self._status_path: tuple[int | None, str] = (None, "/_gateway")
        self._status_path_commits: CommitWatch | None = None

    def reaction_registry(self) -> Reactions:
        """The reactions this control plane runs: the registry it was given, or the default one (importing
        ``REACTION_MODULES``) with its own reactions bound to its engine (moves back after a recovery)."""
        if self.reactions is not None:
            return self.reactions
        registry = Reactions()
        for reaction in (
            *load_reactions(),
            *recovery_reactions(self.commands.migrations, self.settings.evacuation_concurrency),
        ):
            registry.add(reaction)
        return registry

    async def start(self) -> None:
        """Migrate the store, register the default clusters on first start, then start the loops."""
        # first: a broken reaction module fails start before anything is opened that stop() would have to close
        reactions = self.reaction_registry()
        await asyncio.to_thread(self.db.migrate)
        await asyncio.to_thread(self._bootstrap)
        await asyncio.to_thread(self._load_bus_state)
        await self.secure.start()
        self._subscription = await self.secure.subscribe(_INTAKE_QUEUE, ["intent.#"], self._on_petition)
        dispatcher = ReactionDispatcher(self.db, reactions, full_pass=_FULL_REACTION_PASS)
        self._tasks = [
            asyncio.create_task(self._reconcile_loop(), name="reconcile"),
            asyncio.create_task(self._outbox_loop(), name="outbox"),
            asyncio.create_task(self.directory.keep_fresh(), name="key-directory"),
            asyncio.create_task(self._prune_loop(), name="seen-messages"),
            asyncio.create_task(self._reaction_loop(dispatcher), name="reactions"),
            asyncio.create_task(self.findings.run(), name="findings"),
            asyncio.create_task(self._fault_loop(), name="faults"),
            asyncio.create_task(self._metrics_loop(), name="metrics-history"),
            asyncio.create_task(self.link_probes.run(), name="link-probes"),
            asyncio.create_task(self.slo_loop.run(), name="slo-evaluation"),
            asyncio.create_task(self.sla_actions.run(), name="sla-actions"),
            asyncio.create_task(self._migration_loop(), name="migrations"),
        ]
        if self.settings.rebalance_interval > 0:  # off by default: moving replicas unasked is an operator's choice
            self._tasks.append(asyncio.create_task(self._rebalance_loop(), name="rebalance"))
        if self.collector is not None:
            self._tasks.append(asyncio.create_task(self.collector.run(), name="metrics-collector"))

    def _gateway_status_path(self) -> str:
        # Asked by every collection: read again only after a commit (SQLite's counter), every time on PostgreSQL.
        if self._status_path_commits is None:
            self._status_path_commits = self.db.commit_watch()
        commits = self._status_path_commits.look()
        if commits is None or commits != self._status_path[0]:
            path = self.views.gateway.config().get("status_path")
            self._status_path = (commits, path if isinstance(path, str) else "/_gateway")
        return self._status_path[1]

    async def _on_petition(self, sender: str, message: Message) -> None:
        if message.routing_key == MIGRATE_INTENT:
            await self.commands.migrations.on_bus_petition(sender, message)
        else:
            await self.commands.workloads.on_bus_petition(sender, message)

    def _load_bus_state(self) -> None:
        self.directory.reload()
        enrol(self.identity, self.directory)
        self.secure.guard.seen.restore(self._seen_record.load())

    async def _prune_loop(self) -> None:
        while True:
            await asyncio.sleep(60.0)  # expired rows are only dead weight: pruning them once a minute is plenty
            try:
                await asyncio.to_thread(self._seen_record.prune)
            except Exception:
                log.exception("pruning handled-message records failed; retrying")

    async def _metrics_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.metrics_flush_interval)  # the rollups' write period, not a wait
            try:
                await asyncio.to_thread(self.keep_metrics_history)
            except Exception:
                # The store is unreachable: the rows wait in memory (bounded) and the next pass writes them.
                log.exception("writing the metrics history failed; retrying")

    def keep_metrics_history(self, *, everything: bool = False) -> None:
        """One pass of the metrics history: write finished rollups, drop what is past its retention (rollups in the
        store, raw samples and silent series in memory). ``everything`` also writes unfinished buckets (on stop)."""
        now = time.time()
        self.metrics_store.flush(now, everything=everything)
        if self.metrics_store.rollups is not None:
            settings = self.settings
            retention = {MINUTE: settings.metrics_rollup_1m_retention, HOUR: settings.metrics_rollup_1h_retention}
            for resolution, seconds in retention.items():
                self.metrics_store.rollups.prune(resolution, int(now - seconds))
        self.metrics_store.prune(now)

    def _bootstrap(self) -> None:
        # "First start" is recorded in the store itself, so removing every cluster later is respected.
        with self.db.transaction() as s:
            if events.history(s, _BOOTSTRAP_SUBJECT, limit=1):
                return
            path: Path | None = self.settings.clusters_file
            specs = [ClusterSpec.model_validate(c) for c in load_clusters_file(path)]
            existing = {row.name for row in clusters.list_clusters(s)}
            for spec in specs:
                if spec.name not in existing:
                    clusters.add_cluster(s, spec)
            events.record_event(
                s,
                EventKind.CONTROLPLANE_BOOTSTRAPPED,
                _BOOTSTRAP_SUBJECT,
                f"registered {len(specs)} clusters from {path or 'the embedded defaults'}",
                clusters=[spec.name for spec in specs],
            )

    def wake(self) -> None:
        """Ask for a reconcile pass and a migration step now (safe from any thread, e.g. an API request)."""
        self._wake.set()
        self._migration_wake.set()

    async def _migration_loop(self) -> None:
        """Advances running migrations; runs beside the reconcile pass, so a state hand-off never delays it."""

        async def advance() -> int:
            running = await self.migrations.advance()
            # A plan being applied starts its next moves as the previous ones end.
            return running + int(await asyncio.to_thread(self.commands.rebalance.advance))

        # A migration or a plan starts with a commit. While one runs it waits on replicas and deadlines: look again
        # soon, after a failure too. Otherwise sleep until a command or a stored event wakes the loop (or the store
        # poll interval passes, for migrations another process stored).
        await self._store_loop(advance, self._migration_wake, "advancing migrations", busy=_MIGRATION_POLL,
                               after_failure=_MIGRATION_POLL)  # fmt: skip

    async def _rebalance_loop(self) -> None:
        """Every NEMO_REBALANCE_INTERVAL seconds, plan and apply a rebalance (hysteresis decides whether it moves)."""
        while True:
            await asyncio.sleep(self.settings.rebalance_interval)  # the period of the rebalancer, not a wait
            try:
                await asyncio.to_thread(self.commands.rebalance.run, RebalanceRequest(apply=True), REBALANCER)
            except asyncio.CancelledError:
                raise
            except ApiError as exc:  # the previous plan is still being applied: the next period plans again
                log.info("periodic rebalance skipped: %s", exc)
            except Exception:
                log.exception("periodic rebalance failed; trying again next period")

    async def _reconcile_loop(self) -> None:
        while True:
            try:
                await self.engine.reconcile_once()
                self.last_pass = time.monotonic()
            except asyncio.CancelledError:
                raise
            except Exception:
                # A failing pass (database restarting, a driver bug) must not stop the control plane.
                log.exception("reconcile pass failed; retrying")
            # a wake during the pass is kept: the next wait returns at once, and that pass sees what it asked for
            await self._wake.wait(self.settings.reconcile_interval)

    async def _outbox_loop(self) -> None:
        # Events to send are committed first. After a batch more may be waiting: publish them at once.
        await self._store_loop(self.outbox.publish_pending, self._outbox_wake, "publishing events", busy=0.0,
                               after_failure=self.settings.store_poll_interval)  # fmt: skip

    async def _store_loop(
        self, step: Callable[[], Awaitable[int]], wake: Wakeup, what: str, *, busy: float, after_failure: float
    ) -> None:
        """Run ``step`` (it answers how much work it found) until cancelled: again after ``busy`` seconds when it
        found some, after ``after_failure`` when it failed (logged), else when ``wake`` is set or the store poll
        interval passes. A pass that found nothing is not made again before something is committed to the store
        (``IdleSkip``; on PostgreSQL, which cannot tell, it is)."""
        skip = IdleSkip(self.db.commit_watch())
        woken = True
        try:
            while True:
                pause = self.settings.store_poll_interval
                if skip.needed(woken):
                    try:
                        found = await step()
                    except asyncio.CancelledError:
                        raise
                    except Exception:
                        log.exception("%s failed; retrying", what)
                        skip.done(idle=False)
                        pause = after_failure
                    else:
                        skip.done(idle=not found)
                        pause = busy if found else pause
                woken = True if pause <= 0 else await wake.wait(pause)
        finally:
            skip.close()

    async def _reaction_loop(self, dispatcher: ReactionDispatcher) -> None:
        woken = True
        while True:
            try:
                # Woken by a commit: a full pass, which also finds an event that committed after a newer one.
                ran = await dispatcher.run_once(full=woken)
            except asyncio.CancelledError:
                raise
            except Exception:
                # The store is unreachable: nothing ran, nothing was marked; the next pass picks the events up again.
                log.exception("running reactions failed; retrying")
                ran = 0
            if ran:
                self.wake()  # reactions write desired state: the reconcile pass carries it out
                woken = True
            else:
                idle = min(self.settings.store_poll_interval, dispatcher.seconds_to_next_retry())
                woken = await self._reaction_wake.wait(idle)

    async def _fault_loop(self) -> None:
        # The drivers end faults by themselves; this loop only records their end as events. It sleeps until the
        # next fault's end, or until an event (a fault injected) is committed.
        faults = self.commands.faults
        while True:
            idle = self.settings.store_poll_interval
            try:
                await asyncio.to_thread(faults.expire)
                idle = min(idle, faults.seconds_to_next_end())
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("recording the end of injected faults failed; retrying")
            await self._fault_wake.wait(idle)

    async def stop(self) -> None:
        """Stop the loops and the local agents; replicas keep running and are adopted on the next start."""
        await cancel_and_wait(self._tasks, _STOP_GRACE)
        if self._tasks:
            try:  # the samples since the last pass, so that a clean stop loses no history
                await asyncio.to_thread(self.keep_metrics_history, everything=True)
            except Exception:
                log.exception("writing the metrics history on stop failed")
        self._tasks = []
        if self.collector is not None:
            await self.collector.close()
        if self._subscription is not None:
            await self._subscription.cancel()
        await self.resources.close()
        self.engine.close()
        if self._status_path_commits is not None:
            self._status_path_commits.close()
            self._status_path_commits = None
        if self.prometheus is not None:
            await self.prometheus.aclose()
        await self.bus.close()
        await asyncio.to_thread(self.db.dispose)


def _rebalance_settings(settings: Settings) -> RebalanceSettings:
    limits = RebalanceLimits(
        max_moves=settings.rebalance_max_moves,
        move_cost=settings.rebalance_move_cost,
        min_saving_relative=settings.rebalance_min_saving,
        min_saving_eur_h=settings.rebalance_min_saving_eur_h,
        min_saving_gco2_h=settings.rebalance_min_saving_gco2_h,
        time_limit_s=settings.rebalance_time_limit,
    )
    return RebalanceSettings(limits, cooldown_s=settings.rebalance_cooldown)


async def cancel_and_wait(tasks: Sequence[asyncio.Task[None]], grace: float, attempts: int = 3) -> None:
    """Cancel ``tasks`` and wait for them to end, cancelling again those still running after each ``grace`` seconds.

    A loop may miss one cancellation (``asyncio.wait_for`` on Python 3.11 does, CPython gh-86296, which is why the
    loops wait with ``asyncio.timeout``, as ``store.signals.Wakeup.wait`` does; a library may swallow one too):
    asking again is what ends it. After ``attempts`` the stragglers are named in the log and left behind, so that
    stopping the control plane (closing the drivers, the store) is never held up by one loop.
    """
    pending = {task for task in tasks if not task.done()}
    for _ in range(attempts):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=grace)
        for task in pending:
            log.warning("loop %s did not end when cancelled; cancelling it again", task.get_name())
    if pending:
        log.error("loops %s did not stop; stopping without them", ", ".join(sorted(t.get_name() for t in pending)))
