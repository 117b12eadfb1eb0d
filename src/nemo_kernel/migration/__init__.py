"""The migration extension (seed 2.3.3): moving replicas between nodes, clusters and runtimes, stateless and
stateful, with the downtime measured.

The orchestrator validates a move and stores it (``orchestrator.commands.migrations``); :class:`MigrationRunner`
advances stored migrations from the control plane's migration loop. The state machine is drawn in
``nemo_kernel.domain.migration``, the steps in :mod:`nemo_kernel.migration.runner`.
"""

from nemo_kernel.migration.criu import checkpoint_support
from nemo_kernel.migration.runner import MigrationRunner, MigrationTimings

__all__ = ["MigrationRunner", "MigrationTimings", "checkpoint_support"]
