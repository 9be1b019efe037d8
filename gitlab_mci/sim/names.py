"""The names GKE's controllers give what they make, as the simulated controllers reproduce them.

Deterministic hashes of the parts a name is made of (so a reconcile finds again what the last one made), names
shortened to Compute's 63 characters with a hash of the whole, and GKE's NEG names.
"""

from __future__ import annotations

import hashlib


def name_hash(*parts: object, n: int = 8, alphabet: str = "0123456789abcdef") -> str:
    """``n`` characters of ``alphabet`` hashed from ``parts`` (stable across runs)."""
    digest = int.from_bytes(hashlib.sha256("/".join(map(str, parts)).encode()).digest(), "big")
    out = []
    for _ in range(n):
        digest, i = divmod(digest, len(alphabet))
        out.append(alphabet[i])
    return "".join(out)


def b36(*parts: object, n: int) -> str:
    """:func:`name_hash` in lowercase letters and digits."""
    return name_hash(*parts, n=n, alphabet="0123456789abcdefghijklmnopqrstuvwxyz")


def fit(name: str, limit: int = 63) -> str:
    """``name`` unchanged when short enough, else cut and ended with a hash of the whole (still unique)."""
    if len(name) <= limit:
        return name
    return f"{name[:limit - 9].rstrip('-')}-{name_hash(name)}"


def cluster_uid(project: str, cluster: str) -> str:
    """The 8 hexadecimal characters GKE's NEG names and descriptions carry for a cluster (its UID's prefix)."""
    return name_hash(project, cluster)


def gke_neg_name(project: str, cluster: str, namespace: str, service: str, port: str | int) -> str:
    """The name GKE's NEG controller gives a Service port's NEGs when none is asked for:
    ``k8s1-<cluster uid>-<namespace>-<service>-<port>-<8 hex>``, parts truncated, at most 63 characters."""
    port = str(port)
    return fit(f"k8s1-{cluster_uid(project, cluster)}-{namespace[:10]}-{service[:23]}-{port[:5]}-"
               f"{name_hash(cluster, namespace, service, port)}")
