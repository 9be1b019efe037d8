"""Server-side printing (``meta.k8s.io/v1`` Table), so ``kubectl get`` shows the columns a real cluster shows."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]


def age(timestamp: str | None) -> str:
    """kubectl's short age: 42s, 7m, 3h, 2d."""
    if not timestamp:
        return "<unknown>"
    then = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - then).total_seconds()))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * (2 if unit != "m" else 1):
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _ports(svc: Obj) -> str:
    out = []
    for p in svc.get("spec", {}).get("ports") or []:
        node = f":{p['nodePort']}" if p.get("nodePort") else ""
        out.append(f"{p.get('port')}{node}/{p.get('protocol', 'TCP')}")
    return ",".join(out) or "<none>"


def _service(o: Obj) -> list[Any]:
    spec = o.get("spec", {})
    ingress = (o.get("status", {}).get("loadBalancer") or {}).get("ingress") or []
    external = ",".join(i.get("ip", "") for i in ingress) or ("<pending>" if spec.get("type") == "LoadBalancer"
                                                              else "<none>")
    return [spec.get("type", "ClusterIP"), spec.get("clusterIP", "<none>"), external, _ports(o)]


def _node(o: Obj) -> list[Any]:
    ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                for c in o.get("status", {}).get("conditions") or [])
    version = o.get("status", {}).get("nodeInfo", {}).get("kubeletVersion", "")
    return ["Ready" if ready else "NotReady", "<none>", version]


def _pod(o: Obj) -> list[Any]:
    containers = len(o.get("spec", {}).get("containers") or [])
    running = o.get("status", {}).get("phase") == "Running"
    return [f"{containers if running else 0}/{containers}", o.get("status", {}).get("phase", "Pending"), 0]


def _deployment(o: Obj) -> list[Any]:
    status = o.get("status", {})
    want = o.get("spec", {}).get("replicas", 1)
    return [f"{status.get('readyReplicas', 0)}/{want}", status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0)]


# kind → (column names between NAME and AGE, cells of one object)
_COLUMNS: dict[str, tuple[list[str], Callable[[Obj], list[Any]]]] = {
    "Service": (["Type", "Cluster-IP", "External-IP", "Port(s)"], _service),
    "Node": (["Status", "Roles", "Version"], _node),
    "Pod": (["Ready", "Status", "Restarts"], _pod),
    "Deployment": (["Ready", "Up-to-date", "Available"], _deployment),
}


def wants_table(accept: str) -> bool:
    return "as=Table" in accept


def table(kind: str, items: list[Obj], resource_version: str) -> Obj:
    names, cells = _COLUMNS.get(kind, ([], lambda o: []))
    columns = [{"name": "Name", "type": "string", "format": "name", "description": "", "priority": 0}]
    columns += [{"name": n, "type": "string", "format": "", "description": "", "priority": 0} for n in names]
    columns.append({"name": "Age", "type": "string", "format": "", "description": "", "priority": 0})
    rows = [{
        "cells": [o["metadata"]["name"], *cells(o), age(o["metadata"].get("creationTimestamp"))],
        "object": {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]},
    } for o in items]
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": {"resourceVersion": resource_version},
            "columnDefinitions": columns, "rows": rows}
