"""GKE multi-cluster Gateway: inputs → model → desired manifests → checks → apply across the fleet.

- :mod:`gitlab_mci.gateway.model`: the inputs, names, weights and the checked model (pure);
- :mod:`gitlab_mci.gateway.manifests`: per-cluster Services and ServiceExports, the Gateway and HTTPRoutes;
- :mod:`gitlab_mci.gateway.prepare`: every check that needs a cluster, the fleet or Compute, before any write;
- :mod:`gitlab_mci.gateway.engine`: diff, apply, wait for Accepted/Programmed, status, weights, delete.

The Gateway API schemas (trimmed to what is rendered) are kept in ``schemas/``; every Gateway and HTTPRoute is
validated against them before the first write.
"""
