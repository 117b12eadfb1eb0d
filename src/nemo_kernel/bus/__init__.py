"""The bus: topic routing between modules, in-process or on RabbitMQ, with signed end-to-end encrypted envelopes."""

from nemo_kernel.bus.base import Bus, Handler, Message, Subscription, encode_json, topic_matches
from nemo_kernel.bus.envelope import (
    BadSignature,
    DecryptionFailed,
    Envelope,
    EnvelopeRefused,
    Malformed,
    NotARecipient,
    OpenedMessage,
    Replay,
    ReplayGuard,
    RevokedKey,
    RoutingMismatch,
    Stale,
    UnknownSender,
    open_envelope,
    seal,
)
from nemo_kernel.bus.errors import DeadLetter
from nemo_kernel.bus.identity import (
    InMemoryKeyDirectory,
    KeyConflict,
    KeyDirectory,
    ModuleIdentity,
    ModuleKeys,
    UnknownKey,
)
from nemo_kernel.bus.memory import InProcessBus
from nemo_kernel.bus.rabbitmq import RabbitMqBus, TlsConfig
from nemo_kernel.bus.replay import SeenMessages
from nemo_kernel.bus.secure import SecureBus, SecureHandler
from nemo_kernel.bus.subscriptions import BindingRefused, InvalidPattern, ReadPermissions

__all__ = [
    "BadSignature",
    "BindingRefused",
    "Bus",
    "DeadLetter",
    "DecryptionFailed",
    "Envelope",
    "EnvelopeRefused",
    "Handler",
    "InMemoryKeyDirectory",
    "InProcessBus",
    "InvalidPattern",
    "KeyConflict",
    "KeyDirectory",
    "Malformed",
    "Message",
    "ModuleIdentity",
    "ModuleKeys",
    "NotARecipient",
    "OpenedMessage",
    "RabbitMqBus",
    "ReadPermissions",
    "Replay",
    "ReplayGuard",
    "RevokedKey",
    "RoutingMismatch",
    "SecureBus",
    "SecureHandler",
    "SeenMessages",
    "Stale",
    "Subscription",
    "TlsConfig",
    "UnknownKey",
    "UnknownSender",
    "encode_json",
    "open_envelope",
    "seal",
    "topic_matches",
]
