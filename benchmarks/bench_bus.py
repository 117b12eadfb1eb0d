"""Bus throughput and end-to-end latency on RabbitMQ: plaintext vs signed + end-to-end encrypted, same run.

One publisher (this process, up to ``--window`` publishes awaiting their confirm) and one consumer (a child
process, so that sealing and opening each get a core), 1 KiB payloads, durable quorum queue, persistent messages,
publisher confirms and manual acks: the production delivery path. Latency is publish call -> handler entry.

By default a throw-away vhost is created on the machine's broker with ``rabbitmqctl`` and deleted afterwards
(nothing else on the broker is touched). Usage::

    .venv/bin/python benchmarks/bench_bus.py --messages 20000 [--append-results]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import os
import platform
import secrets
import struct
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_kernel.bus import Message
from nemo_kernel.bus.identity import InMemoryKeyDirectory, ModuleIdentity, ModuleKeys
from nemo_kernel.bus.rabbitmq import RabbitMqBus
from nemo_kernel.bus.secure import SecureBus

PAYLOAD_SIZE = 1024
_STAMP = struct.Struct(">d")


@dataclass
class Result:
    mode: str
    messages: int
    seconds: float
    latencies_ms: list[float]
    cpu_us: tuple[float, float, float | None] = (0.0, 0.0, None)
    """CPU time per message, in microseconds, of the publisher, the consumer and the broker (if it can be read)."""

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    def pct(self, q: float) -> float:
        ordered = sorted(self.latencies_ms)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _payload() -> bytes:
    return _STAMP.pack(time.time()) + secrets.token_bytes(PAYLOAD_SIZE - _STAMP.size)


def _consumer(url: str, queue: str, mode: str, count: int, keys: dict[str, Any], out: Any) -> None:
    asyncio.run(_consume(url, queue, mode, count, keys, out))


async def _consume(url: str, queue: str, mode: str, count: int, keys: dict[str, Any], out: Any) -> None:
    bus = RabbitMqBus(url, prefetch=512)
    latencies: list[float] = []
    done = asyncio.Event()
    first = last = 0.0
    cpu_start = cpu_end = 0.0

    def record(body: bytes) -> None:
        nonlocal first, last, cpu_start, cpu_end
        now = time.time()
        if not latencies:
            first = now
            cpu_start = time.process_time()
        last = now
        latencies.append((now - _STAMP.unpack_from(body)[0]) * 1000)
        if len(latencies) >= count:
            cpu_end = time.process_time()  # once: reading the process CPU clock per message is not free
            done.set()

    if mode == "plaintext":

        async def plain(message: Message) -> None:
            record(message.body)

        await bus.subscribe(queue, ["bench.#"], plain)
    else:
        me = ModuleIdentity.load(Path(keys["identity_file"]))
        directory = InMemoryKeyDirectory(ModuleKeys.from_dict(k) for k in keys["directory"])
        secure = SecureBus(bus, me, directory)

        async def sealed(sender: str, message: Message) -> None:
            record(message.body)

        await secure.subscribe(queue, ["bench.#"], sealed)
    out.put(("ready", 0.0, 0.0, [], 0.0))
    await asyncio.wait_for(done.wait(), timeout=600)
    out.put(("done", first, last, latencies, cpu_end - cpu_start))
    await bus.close()


async def _publish(url: str, mode: str, count: int, window: int, secure: SecureBus | None) -> tuple[float, float]:
    bus = secure.bus if secure is not None else RabbitMqBus(url)
    await bus.start()
    slots = asyncio.Semaphore(window)
    errors: list[BaseException] = []

    async def one(i: int) -> None:
        try:
            if secure is not None:
                await secure.publish("bench.tick", _payload(), ["consumer"])
            else:
                await bus.publish("bench.tick", _payload(), content_type="application/octet-stream")
        except BaseException as exc:  # surfaced after the run
            errors.append(exc)
        finally:
            slots.release()

    start = time.time()
    cpu = time.process_time()
    tasks = []
    for i in range(count):
        await slots.acquire()
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    cpu = time.process_time() - cpu
    await bus.close()
    if errors:
        raise errors[0]
    return start, cpu


def _broker_pid() -> int | None:
    """The pid of the process listening on 127.0.0.1:5672 (the machine's broker), if ``ss`` can tell."""
    try:
        out = subprocess.run(["ss", "-ltnpH", "sport = :5672"], capture_output=True, text=True, timeout=10).stdout
        return int(out.split("pid=")[1].split(",")[0])
    except (OSError, IndexError, ValueError, subprocess.SubprocessError):
        return None


def _cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of ``pid`` so far (Linux), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def run_mode(url: str, mode: str, count: int, window: int, broker_pid: int | None = None) -> Result:
    queue = f"consumer.bench-{mode}-{secrets.token_hex(3)}"
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    keys: dict[str, Any] = {}
    secure: SecureBus | None = None
    with tempfile.TemporaryDirectory() as tmp:
        if mode == "encrypted":
            publisher, consumer = ModuleIdentity.generate("orchestrator"), ModuleIdentity.generate("consumer")
            consumer.save(Path(tmp) / "consumer.json")
            directory = InMemoryKeyDirectory([publisher.public(), consumer.public()])
            keys = {
                "identity_file": str(Path(tmp) / "consumer.json"),
                "directory": [k.to_dict() for k in directory.list()],
            }
            secure = SecureBus(RabbitMqBus(url), publisher, directory)
        child = ctx.Process(target=_consumer, args=(url, queue, mode, count, keys, out), daemon=True)
        child.start()
        try:
            kind, *_ = out.get(timeout=60)
            assert kind == "ready"
            broker_before = _cpu_seconds(broker_pid)
            start, publisher_cpu = asyncio.run(_publish(url, mode, count, window, secure))
            kind, _first, last, latencies, consumer_cpu = out.get(timeout=600)
            broker_after = _cpu_seconds(broker_pid)
            assert kind == "done"
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
    broker_cpu = None if broker_before is None or broker_after is None else broker_after - broker_before
    per = 1e6 / count
    cpu = (publisher_cpu * per, consumer_cpu * per, None if broker_cpu is None else broker_cpu * per)
    return Result(mode, count, last - start, latencies, cpu)


def _ctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--window", type=int, default=256, help="publishes awaiting their confirm at once")
    parser.add_argument("--url", help="amqp URL of an existing vhost (default: a temporary vhost on 127.0.0.1:5672)")
    parser.add_argument("--append-results", action="store_true", help="append a section to benchmarks/RESULTS.md")
    args = parser.parse_args()

    vhost = None
    url = args.url
    if url is None:
        vhost = f"nemo-bench-{secrets.token_hex(3)}"
        _ctl("add_vhost", vhost)
        _ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = f"amqp://guest:guest@127.0.0.1:5672/{vhost}"
    broker_pid = _broker_pid() if args.url is None else None
    try:
        warm = max(500, args.messages // 10)
        run_mode(url, "plaintext", warm, args.window)  # warm up the broker and the quorum queue machinery
        results = [run_mode(url, mode, args.messages, args.window, broker_pid) for mode in ("plaintext", "encrypted")]
    finally:
        if vhost is not None:
            _ctl("delete_vhost", vhost)

    plain, enc = results
    ratio = enc.rate / plain.rate

    def broker(r: Result) -> str:
        return "?" if r.cpu_us[2] is None else f"{r.cpu_us[2]:.0f}"

    lines = [
        "| mode | messages | msg/s | p50 ms | p99 ms | CPU us/msg: publisher / consumer / broker |",
        "|---|---:|---:|---:|---:|---|",
        *(
            f"| {r.mode} | {r.messages} | {r.rate:,.0f} | {r.pct(0.5):.1f} | {r.pct(0.99):.1f} "
            f"| {r.cpu_us[0]:.0f} / {r.cpu_us[1]:.0f} / {broker(r)} |"
            for r in results
        ),
        "",
        f"encrypted / plaintext throughput: **{ratio:.0%}** (targets: >= 3,000 msg/s encrypted, >= 70%)",
    ]
    print("\n".join(lines))
    if args.append_results:
        path = Path(__file__).with_name("RESULTS.md")
        if not path.exists():
            path.write_text(
                "# Benchmark results\n\nFigures measured on the project's machines; newest sections last.\n"
            )
        with path.open("a") as handle:
            handle.write(
                "\n## Bus: plaintext vs signed + end-to-end encrypted (RabbitMQ)\n\n"
                f"{time.strftime('%Y-%m-%d')}, {platform.machine()}, {mp.cpu_count()} cores, python "
                f"{platform.python_version()}; 1 KiB payload, one publisher (window {args.window}), one consumer "
                "process, quorum queue, persistent messages, publisher confirms, manual acks; latency = publish call "
                f"-> handler. Load average at the end: {os.getloadavg()[0]:.1f} (the machine is shared with other "
                "sessions' test runs, which compete for the same 2 cores).\n\n"
                "```\n.venv/bin/python benchmarks/bench_bus.py "
                f"--messages {args.messages} --window {args.window} --append-results\n```\n\n" + "\n".join(lines) + "\n"
            )


if __name__ == "__main__":
    main()
