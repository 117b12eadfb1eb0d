"""The bus: topic routing between modules, in-process or on RabbitMQ, with signed end-to-end encrypted envelopes."""

from nemo_kernel.bus.base import Bus, Handler, Message, Subscription, encode_json, topic_matches
from nemo_kernel.bus.errors import DeadLetter
from nemo_kernel.bus.memory import InProcessBus
from nemo_kernel.bus.rabbitmq import RabbitMqBus, TlsConfig

__all__ = [
    "Bus",
    "DeadLetter",
    "Handler",
    "InProcessBus",
    "Message",
    "RabbitMqBus",
    "Subscription",
    "TlsConfig",
    "encode_json",
    "topic_matches",
]
