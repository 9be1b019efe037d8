"""A Compute Engine v1 REST emulator, validated against Google's discovery document."""

from gitlab_mci.sim.compute.emulator import ComputeEmulator

__all__ = ["ComputeEmulator"]
