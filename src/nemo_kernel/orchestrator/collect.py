"""The analytics engine's collector: every cluster's series, with where they come from, into the metrics store.

Every ``NEMO_METRICS_INTERVAL`` seconds it asks each cluster whose driver reports series (``SupportsMetrics``),
all at once and each within the driver timeout, so a cluster that does not answer delays no other. To what a
cluster reports it adds the ``cluster``, ``tier`` and ``region`` labels, the CO2 of its energy counters, the grid's
carbon intensity and the round trip of the cluster's last heartbeat. When ``nemo up`` runs the gateway, its status
``/metrics`` (requests, errors and latency per workload) is read in the same pass.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import httpx

from nemo_kernel.clusters import ClusterDriver, ClusterUnreachable
from nemo_kernel.clusters.capabilities import SupportsMetrics
from nemo_kernel.config import Settings
from nemo_kernel.domain import ClusterSpec
from nemo_kernel.metrics import MetricSink, Sample, names
from nemo_kernel.metrics.carbon import CarbonIntensity
from nemo_kernel.metrics.energy import grams_co2
from nemo_kernel.metrics.textformat import TextFormatError, parse, samples_of
from nemo_kernel.orchestrator.resources import ResourceManager

log = logging.getLogger(__name__)

_CO2_OF = {names.REPLICA_ENERGY.name: names.REPLICA_CO2.name, names.NODE_ENERGY.name: names.NODE_CO2.name}
_CLUSTER_LABELS = ("cluster", "tier", "region")
_MAX_CONCURRENT = 64
_MAX_GATEWAY_SAMPLES = 1_000_000
_MAX_GATEWAY_BYTES = 64 << 20

_SeriesKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclass
class _Co2Counter:
    joules: float  # the energy counter's value last seen
    grams: float


@dataclass
class _ClusterState:
    co2: dict[_SeriesKey, _Co2Counter] = field(default_factory=dict)
    scrape_errors: int = 0
    last_error: str = ""


class MetricsCollector:
    """Scrapes every cluster that reports series and hands the samples to ``sink``."""

    def __init__(
        self,
        resources: ResourceManager,
        sink: MetricSink,
        settings: Settings,
        gateway_status_path: Callable[[], str] | None = None,
    ) -> None:
        """``gateway_status_path`` reads the gateway's configured status prefix (``/_gateway``) from the store."""
        self._resources = resources
        self._sink = sink
        self._settings = settings
        self._carbon = CarbonIntensity(settings.carbon_data_roots)
        self._clusters: dict[str, _ClusterState] = {}
        self._slots = asyncio.Semaphore(_MAX_CONCURRENT)
        self._gateway: str | None = None
        self._gateway_status_path = gateway_status_path or (lambda: "/_gateway")
        self._gateway_errors = 0
        self._gateway_last_error = ""
        self._http: httpx.AsyncClient | None = None

    def watch_gateway(self, base_url: str) -> None:
        """Also read the gateway at ``base_url`` (the child process ``nemo up`` starts) on every pass."""
        self._gateway = base_url.rstrip("/")

    async def close(self) -> None:
        """Release the connection to the gateway."""
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def run(self) -> None:
        """Collect every ``NEMO_METRICS_INTERVAL`` seconds until cancelled; a failed pass is logged and retried."""
        interval = self._settings.metrics_interval
        while True:
            started = time.monotonic()
            try:
                await self.collect_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("collecting metrics failed; retrying")
            # a fixed rate, not a fixed pause: rate() over the store wants evenly spaced samples
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def collect_once(self) -> int:
        """One pass over every cluster; returns how many samples went to the sink."""
        managed = [(s, d) for s, d in self._resources.managed().values() if isinstance(d, SupportsMetrics)]
        for gone in set(self._clusters) - {spec.name for spec, _ in managed}:
            del self._clusters[gone]  # a removed cluster's counters go with it
        batches = await asyncio.gather(
            *(self._cluster(spec, driver) for spec, driver in managed), self._gateway_samples()
        )
        samples = [sample for batch in batches for sample in batch]
        if samples:
            self._sink.ingest(samples)
        return len(samples)

    async def _cluster(self, spec: ClusterSpec, driver: ClusterDriver) -> list[Sample]:
        state = self._clusters.setdefault(spec.name, _ClusterState())
        where = {"cluster": spec.name, "tier": spec.tier.value, "region": spec.region}
        now = time.time()
        intensity = self._carbon.at(spec, now)
        out = [Sample(names.CLUSTER_CARBON_INTENSITY.name, where, intensity, now)]
        rtt = self._resources.heartbeat_rtt(spec.name)
        if rtt is not None:
            out.append(Sample(names.CLUSTER_HEARTBEAT_RTT.name, where, rtt, now))
        scraped = await self._scrape(spec.name, driver, state)
        if scraped is not None:
            out.extend(self._labelled(scraped, where, intensity, state))
        out.append(Sample(names.SCRAPE_ERRORS.name, where, float(state.scrape_errors), now))
        return out

    async def _gateway_samples(self) -> list[Sample]:
        """The gateway's series, as it serves them (it labels them by workload and route); [] without a gateway."""
        if self._gateway is None:
            return []
        if self._http is None:
            # the gateway is our child on loopback: no proxy from the environment
            self._http = httpx.AsyncClient(trust_env=False, timeout=self._settings.driver_timeout)
        now = time.time()
        try:
            prefix = (await asyncio.to_thread(self._gateway_status_path)).rstrip("/")
            async with asyncio.timeout(self._settings.driver_timeout):
                response = await self._http.get(f"{self._gateway}{prefix}/metrics")
            if response.status_code != 200:
                raise TextFormatError(f"answered {response.status_code}")
            if len(response.content) > _MAX_GATEWAY_BYTES:
                raise TextFormatError(f"page larger than {_MAX_GATEWAY_BYTES} bytes")
            samples = samples_of(parse(response.text, _MAX_GATEWAY_SAMPLES), now)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # down, slow, or not the format: the gateway's series are missing this pass only
            self._gateway_errors += 1
            why = f"{type(exc).__name__}: {exc}"
            if why != self._gateway_last_error:
                log.info("gateway: no series this pass: %s", why)
            self._gateway_last_error = why
            samples = []
        else:
            self._gateway_last_error = ""
        samples.append(Sample(names.SCRAPE_ERRORS.name, {"target": "gateway"}, float(self._gateway_errors), now))
        return samples

    async def _scrape(self, name: str, driver: ClusterDriver, state: _ClusterState) -> Sequence[Sample] | None:
        assert isinstance(driver, SupportsMetrics)
        async with self._slots:
            try:
                async with asyncio.timeout(self._settings.driver_timeout):
                    samples = await driver.scrape()
            except (ClusterUnreachable, TimeoutError) as exc:
                why = str(exc) or type(exc).__name__
            except Exception as exc:
                # a driver failing in an unexpected way loses this cluster's samples only
                log.warning("cluster %s: scrape failed: %s", name, exc, exc_info=True)
                why = f"scrape failed: {exc}"
            else:
                state.last_error = ""
                return samples
        state.scrape_errors += 1
        if state.last_error != why:
            log.info("cluster %s: no series this pass: %s", name, why)
        state.last_error = why
        return None

    @staticmethod
    def _labelled(
        samples: Sequence[Sample], where: Mapping[str, str], intensity: float, state: _ClusterState
    ) -> list[Sample]:
        """The cluster's samples with its labels (over any the cluster gave), plus the CO2 of each energy counter."""
        out = []
        co2: dict[_SeriesKey, _Co2Counter] = {}
        for sample in samples:
            labels = {k: v for k, v in sample.labels.items() if k not in _CLUSTER_LABELS}
            labels.update(where)
            out.append(Sample(sample.name, labels, sample.value, sample.timestamp))
            co2_name = _CO2_OF.get(sample.name)
            if co2_name is None or not math.isfinite(sample.value):
                continue
            key = (sample.name, tuple(sorted(labels.items())))
            before = state.co2.get(key)
            # a new series, or a counter that went back (its agent restarted): all of its value is new energy
            spent = sample.value if before is None or sample.value < before.joules else sample.value - before.joules
            grams = (before.grams if before is not None else 0.0) + grams_co2(spent, intensity)
            co2[key] = _Co2Counter(joules=sample.value, grams=grams)
            out.append(Sample(co2_name, labels, grams, sample.timestamp))
        state.co2 = co2  # only the series seen now: bounded by what the cluster runs
        return out
