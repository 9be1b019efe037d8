"""The self-managed global external HTTP(S) load balancer: discovery → desired state → diff → actions."""
