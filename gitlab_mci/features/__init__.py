"""Production load balancer options (issue 14) as one model, whichever way they are given and whichever mode runs.

- :mod:`.model`: the options, keyed as in ``--features-file`` (BackendConfig's and FrontendConfig's spec keys plus
  what GKE's CRDs lack), checked against ``schema.json``; where two sources disagree, the error names both.
- :mod:`.sources`: flags (and their ``MCI_*`` variables), the YAML file, the user's GKE annotations read from the
  cluster (a Service's ``cloud.google.com/backend-config``, an Ingress's ``networking.gke.io/v1beta1.FrontendConfig``).
- :mod:`.compute`: the self-managed mode's Compute fields per resource kind, what each scheme allows, and the write
  of the fields Compute sets only through a custom method.
- :mod:`.hosted`: the hosted mode's BackendConfig/FrontendConfig specs.
- :mod:`.exists`: the referenced policies and Secrets exist (reads only, before any write).
"""
