"""GKE-hosted Multi Cluster Ingress: inputs → model → desired manifests → checks → apply in the config cluster.

- :mod:`gitlab_mci.hosted.model`: the inputs and the checked model (pure);
- :mod:`gitlab_mci.hosted.manifests`: MultiClusterService / MultiClusterIngress / BackendConfig / FrontendConfig;
- :mod:`gitlab_mci.hosted.prepare`: every check that needs a cluster, the fleet or Compute, before any write;
- :mod:`gitlab_mci.hosted.engine`: diff, apply, wait for the VIP, status, delete.

The custom kinds' schemas are kept in ``schemas/`` (the tests validate generated manifests against them).
"""
