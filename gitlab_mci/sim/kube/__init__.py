"""A Kubernetes API server emulator: one per simulated GKE cluster, for the kubernetes client and kubectl."""

from gitlab_mci.sim.kube.server import BUILTIN_KINDS, Kind, KubeApiServer

__all__ = ["BUILTIN_KINDS", "Kind", "KubeApiServer"]
