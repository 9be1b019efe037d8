"""gitlab-mci: one global Google Cloud load balancer in front of a GitLab Auto DevOps app on several GKE clusters."""

__version__ = "0.1.0"
