"""The bus: topic routing between modules, in-process or on RabbitMQ, with signed end-to-end encrypted envelopes.

Exported here is what the rest of the control plane uses. The RabbitMQ adapter (:mod:`.rabbitmq`) is not imported:
it loads ``aio_pika``, which only a control plane with ``NEMO_BUS_URL`` set needs, so whoever picks it imports
``nemo_kernel.bus.rabbitmq`` itself. Everything else (envelope errors, the in-memory key directory, topic patterns)
is imported from its module.
"""

from nemo_kernel.bus.base import Bus, Message, Subscription, encode_json
from nemo_kernel.bus.envelope import ReplayGuard
from nemo_kernel.bus.identity import KeyConflict, ModuleIdentity, ModuleKeys, UnknownKey
from nemo_kernel.bus.memory import InProcessBus
from nemo_kernel.bus.replay import SeenMessages
from nemo_kernel.bus.secure import SecureBus

__all__ = [
    "Bus",
    "InProcessBus",
    "KeyConflict",
    "Message",
    "ModuleIdentity",
    "ModuleKeys",
    "ReplayGuard",
    "SecureBus",
    "SeenMessages",
    "Subscription",
    "UnknownKey",
    "encode_json",
]
