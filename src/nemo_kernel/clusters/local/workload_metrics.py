"""The workloads' own series: each replica that declares ``deployment.metrics`` is scraped by its agent.

Every replica is read concurrently, with a deadline, a size and a sample limit; an answer that is late, too big,
not text or not the format fails that replica alone (``nemo_scrape_errors_total{replica=...}``), never the page.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from prometheus_client.metrics_core import Metric

from nemo_kernel.clusters.local.usage import ReplicaUsage
from nemo_kernel.metrics import Sample, names
from nemo_kernel.metrics.textformat import TextFormatError, guard_workload_series, parse

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScrapeLimits:
    """How much one replica's page may cost its agent."""

    timeout: float = 1.0  # seconds for the whole answer (well within the driver's timeout for the agent's page)
    max_bytes: int = 1 << 20
    max_samples: int = 10_000
    concurrency: int = 16


class ScrapeFailed(Exception):
    """One replica's page could not be read (the reason is the message)."""


class WorkloadScraper:
    """Reads the replicas' own pages; remembers per replica how many reads failed and why the last one did."""

    def __init__(self, limits: ScrapeLimits | None = None) -> None:
        self.limits = limits or ScrapeLimits()
        self._slots = asyncio.Semaphore(self.limits.concurrency)
        self.errors: dict[str, int] = {}  # replica -> failed reads (only replicas that declare an endpoint)
        self.refused: dict[str, int] = {}  # replica -> families refused for a reserved name
        self.last_error: dict[str, str] = {}

    async def scrape(self, usages: Sequence[ReplicaUsage]) -> list[Metric]:
        """The families of every replica that serves them, relabelled with its identity; failures are counted."""
        targets = [u for u in usages if u.metrics_url is not None]
        live = {u.replica for u in usages}
        for table in (self.errors, self.refused, self.last_error):
            for gone in set(table) - live:
                del table[gone]  # bounded by the replicas the agent supervises
        results = await asyncio.gather(*(self._one(u) for u in targets))
        families: list[Metric] = []
        for usage, result in zip(targets, results, strict=True):
            self.errors.setdefault(usage.replica, 0)
            self.refused.setdefault(usage.replica, 0)
            if isinstance(result, str):
                self.errors[usage.replica] += 1
                if self.last_error.get(usage.replica) != result:
                    log.warning("replica %s: its /metrics failed: %s", usage.replica, result)
                self.last_error[usage.replica] = result
                continue
            self.last_error.pop(usage.replica, None)
            kept, refused = guard_workload_series(result, usage.labels())
            if refused:
                log.debug("replica %s: %d families with a reserved nemo_ name refused", usage.replica, refused)
            self.refused[usage.replica] += refused
            families.extend(kept)
        return families

    def samples(self, usages: Sequence[ReplicaUsage], timestamp: float) -> list[Sample]:
        """``nemo_scrape_errors_total`` and refused families (``nemo_samples_dropped_total``) per replica."""
        out = []
        for usage in usages:
            if usage.replica in self.errors:
                labels = usage.labels()
                out.append(Sample(names.SCRAPE_ERRORS.name, labels, float(self.errors[usage.replica]), timestamp))
                dropped = {**labels, "reason": "reserved_name"}
                out.append(Sample(names.SAMPLES_DROPPED.name, dropped, float(self.refused[usage.replica]), timestamp))
        return out

    async def _one(self, usage: ReplicaUsage) -> list[Metric] | str:
        assert usage.metrics_url is not None
        async with self._slots:
            started = time.monotonic()
            try:
                async with asyncio.timeout(self.limits.timeout):
                    text = await self._fetch(usage.metrics_url)
                return parse(text, self.limits.max_samples)
            except TimeoutError:
                return f"no answer within {self.limits.timeout:g} s"
            except (ScrapeFailed, TextFormatError) as exc:
                return str(exc)
            except OSError as exc:
                return f"{type(exc).__name__} after {time.monotonic() - started:.2f} s: {exc.strerror or exc}"

    async def _fetch(self, url: str) -> str:
        """GET ``url`` (a replica on loopback) over HTTP/1.0, reading at most ``max_bytes`` of body.

        A plain request on a fresh connection rather than httpx: it costs a tenth of the CPU (measured: 3 ms per
        replica with httpx, the bulk of an agent's scrape), and HTTP/1.0 keeps the answer simple (no chunks, no
        keep-alive, the body ends at EOF or Content-Length).
        """
        parts = urlsplit(url)
        host, port = parts.hostname or "127.0.0.1", parts.port or 80
        reader, writer = await asyncio.open_connection(host, port, limit=_HEAD_LIMIT)
        try:
            request = (
                f"GET {parts.path} HTTP/1.0\r\nHost: {host}:{port}\r\nAccept: text/plain\r\n"
                "Accept-Encoding: identity\r\nUser-Agent: nemo-agent\r\n\r\n"
            )
            writer.write(request.encode("ascii"))
            await writer.drain()
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError):
                raise ScrapeFailed("no HTTP answer (or headers over 64 KiB)") from None
            status, headers = _parse_head(head)
            if status != 200:
                raise ScrapeFailed(f"answered {status}")
            if headers.get("content-encoding", "identity").lower() != "identity":
                raise ScrapeFailed("page is compressed though identity was asked for")
            if "transfer-encoding" in headers:
                raise ScrapeFailed("transfer-encoding in an answer to HTTP/1.0")
            body = await reader.read(self.limits.max_bytes + 1)
            while body and len(body) <= self.limits.max_bytes:
                more = await reader.read(self.limits.max_bytes + 1 - len(body))
                if not more:
                    break
                body += more
            if len(body) > self.limits.max_bytes:
                raise ScrapeFailed(f"page larger than {self.limits.max_bytes} bytes")
        finally:
            writer.close()
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise ScrapeFailed("page is not UTF-8 text") from None


_HEAD_LIMIT = 64 * 1024


def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
    """Status code and headers (lower-cased names) of an HTTP answer's head; raises :class:`ScrapeFailed`."""
    try:
        lines = head.decode("latin-1").split("\r\n")
        version, code, *_ = lines[0].split(" ", 2)
        if not version.startswith("HTTP/1.") or not code.isdigit():
            raise ValueError(lines[0])
        headers = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    raise ValueError(line)
                headers[name.strip().lower()] = value.strip()
    except ValueError:
        raise ScrapeFailed("not an HTTP answer") from None
    return int(code), headers
