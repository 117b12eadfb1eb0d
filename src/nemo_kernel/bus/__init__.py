"""The bus: topic routing between modules (in-process by default; RabbitMQ comes with its own issue)."""

from nemo_kernel.bus.base import Bus, Handler, Message, Subscription, encode_json, topic_matches
from nemo_kernel.bus.memory import InProcessBus

__all__ = ["Bus", "Handler", "InProcessBus", "Message", "Subscription", "encode_json", "topic_matches"]
