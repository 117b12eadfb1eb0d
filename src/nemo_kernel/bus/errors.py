"""Exceptions a bus handler may raise to steer delivery."""

from __future__ import annotations


class DeadLetter(Exception):
    """Raised by a handler: do not retry this message, dead-letter it now with ``reason``.

    Backends that know it (RabbitMQ) skip the remaining deliveries; others treat it as any handler failure.
    """

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
