"""Link probes: the analytics engine's measure of each cluster's links, with real datagrams over the real path.

Every ``interval`` seconds, for every cluster whose driver answers probes (``SupportsLinkProbes``):

- **control-plane link** (``peer="controlplane"``): the control plane itself sends ``count`` probes to the
  cluster's echo behind its emulated control-plane link, the path the gateway's requests take to its replicas;
- **peer links** (``peer=<cluster>``, for each peer its spec names that is managed too): the cluster's agent sends
  ``count`` probes to the peer's direct echo through its own emulated link to the peer, and reports the round
  trips to the control plane, which turns them into series like its own probes (so every link series comes from
  one place, labelled alike).

Each batch gives ``nemo_link_rtt_seconds`` (median), ``nemo_link_jitter_seconds`` (mean absolute difference of
consecutive round trips) and ``nemo_link_loss_ratio``, labelled ``cluster`` and ``peer``, into the sink. A batch
where every probe was lost gives the loss ratio only. A cluster that does not answer is skipped for that round;
one failing never holds back the others.
"""

from __future__ import annotations

import asyncio
import logging
import time

from nemo_kernel.clusters import ClusterUnreachable, ReplicaRejected, SupportsLinkProbes
from nemo_kernel.clusters.links import LinkStats, probe, summarize
from nemo_kernel.domain import CONTROL_PLANE_LINK, ClusterSpec
from nemo_kernel.metrics import names
from nemo_kernel.metrics.model import MetricSink, Sample
from nemo_kernel.orchestrator.resources import ResourceManager

log = logging.getLogger(__name__)

DEFAULT_COUNT = 20
"""Probes per link per round."""

DEFAULT_INTERVAL = 15.0
"""Seconds between rounds (a scrape interval)."""


class LinkProber:
    """Measures every managed cluster's links with probes and hands the figures to ``sink``.

    ``latest`` holds the last figures per ``(cluster, peer)``: one entry per link of a managed cluster, pruned
    each round to the links that still exist.
    """

    def __init__(
        self,
        resources: ResourceManager,
        sink: MetricSink,
        *,
        count: int = DEFAULT_COUNT,
        interval: float = DEFAULT_INTERVAL,
    ) -> None:
        self._resources = resources
        self._sink = sink
        self.count = count
        self.interval = interval
        self.latest: dict[tuple[str, str], LinkStats] = {}

    async def run(self) -> None:
        """Probe every ``interval`` seconds until cancelled."""
        while True:
            started = time.monotonic()
            try:
                await self.probe_once()
            except Exception:  # the loop outlives any one bad round
                log.exception("link probe round failed")
            await asyncio.sleep(max(0.0, self.interval - (time.monotonic() - started)))

    async def probe_once(self) -> list[Sample]:
        """One round over every link; the samples given to the sink."""
        managed: dict[str, tuple[ClusterSpec, SupportsLinkProbes]] = {}
        for name, (spec, driver) in self._resources.managed().items():
            if isinstance(driver, SupportsLinkProbes):
                managed[name] = (spec, driver)
        endpoints = dict(zip(managed, await asyncio.gather(*(_endpoints(d) for _, d in managed.values())), strict=True))
        jobs: list[tuple[str, str]] = []
        for name, (spec, _) in managed.items():
            if endpoints[name] is not None:
                jobs.append((name, CONTROL_PLANE_LINK))
            jobs.extend((name, peer) for peer in spec.links if peer in endpoints and endpoints[peer] is not None)
        results = await asyncio.gather(*(self._measure(name, peer, managed, endpoints) for name, peer in jobs))
        stats = {job: result for job, result in zip(jobs, results, strict=True) if result is not None}
        self.latest = stats
        now = time.time()
        samples = [sample for (cluster, peer), s in stats.items() for sample in _samples(cluster, peer, s, now)]
        if samples:
            self._sink.ingest(samples)
        return samples

    async def _measure(
        self,
        name: str,
        peer: str,
        managed: dict[str, tuple[ClusterSpec, SupportsLinkProbes]],
        endpoints: dict[str, tuple[str, int, str] | None],
    ) -> LinkStats | None:
        try:
            if peer == CONTROL_PLANE_LINK:
                here = endpoints[name]
                assert here is not None
                return summarize(await probe(here[0], here[1], self.count))
            there = endpoints[peer]
            assert there is not None
            return summarize(await managed[name][1].probe_peer(peer, there[2], self.count))
        except (ClusterUnreachable, ReplicaRejected, OSError) as exc:
            log.debug("link %s -> %s not probed: %s", name, peer, exc)
            return None
        except Exception:  # a driver failing in an unexpected way loses this link's round, not the others'
            log.warning("link %s -> %s: probing failed", name, peer, exc_info=True)
            return None


async def _endpoints(driver: SupportsLinkProbes) -> tuple[str, int, str] | None:
    """The host and port of a cluster's control-plane echo, and its direct echo's address; None if it is silent."""
    try:
        found = await driver.probe_endpoints()
        host, _, port = found.controlplane.rpartition(":")
        return host, int(port), found.direct
    except (ClusterUnreachable, ReplicaRejected, ValueError) as exc:
        log.debug("no probe endpoints: %s", exc)
        return None
    except Exception:  # as above: this cluster is left out of the round, the others are probed
        log.warning("reading probe endpoints failed", exc_info=True)
        return None


def _samples(cluster: str, peer: str, stats: LinkStats, now: float) -> list[Sample]:
    labels = {"cluster": cluster, "peer": peer}
    samples = [Sample(names.LINK_LOSS.name, labels, stats.loss, now)]
    if stats.rtt is not None:
        samples.append(Sample(names.LINK_RTT.name, labels, stats.rtt, now))
    if stats.jitter is not None:
        samples.append(Sample(names.LINK_JITTER.name, labels, stats.jitter, now))
    return samples
