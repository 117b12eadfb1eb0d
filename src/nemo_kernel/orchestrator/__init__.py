"""The meta-orchestrator: intake, decision engine, orchestration engine, resource manager."""

from nemo_kernel.orchestrator.control_plane import ControlPlane
from nemo_kernel.orchestrator.intake import DeployPetition, Intake, JoinPetition, parse_petition
from nemo_kernel.orchestrator.petition_source import PetitionError

__all__ = ["ControlPlane", "DeployPetition", "Intake", "JoinPetition", "PetitionError", "parse_petition"]
