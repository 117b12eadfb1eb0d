"""The control plane's own module identities: private keys in 0600 files under the data directory, public keys
made current in the module key directory at every start."""

from __future__ import annotations

from pathlib import Path

from nemo_kernel.bus import KeyConflict, ModuleIdentity, UnknownKey
from nemo_kernel.orchestrator.key_directory import StoredKeyDirectory

ORCHESTRATOR = "orchestrator"
"""The module the control plane speaks as on the bus: it consumes petitions (``intent.#``) and publishes events."""


def identity_file(data_dir: Path, module: str) -> Path:
    """Where the identity of one of the control plane's modules is kept."""
    return data_dir / "identities" / f"{module}.json"


def enrol(identity: ModuleIdentity, directory: StoredKeyDirectory) -> None:
    """Make ``identity``'s key the module's current key, unless it already is.

    A key an admin revoked is not quietly taken back: the control plane refuses to start and says how to recover.
    """
    try:
        if directory.current(identity.module).key_id == identity.key_id:
            return
    except UnknownKey:
        pass
    try:
        directory.rotate(identity.public())
    except KeyConflict as exc:
        raise KeyConflict(
            f"{exc}; move the identity file of {identity.module!r} away to have a new one generated at start"
        ) from exc
