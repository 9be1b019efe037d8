"""Compute's batch endpoint (``POST /batch/compute/v1``): several API calls in one multipart/mixed request.

gcloud uses it wherever it fans out per zone: ``gcloud compute instance-groups list`` asks for the instance group
managers of every zone in one batch. The format is Google's (and what apitools and google-api-python-client parse):
the request is ``multipart/mixed``, each part ``Content-Type: application/http`` holding one HTTP request
("GET /compute/v1/projects/… HTTP/1.1", headers, body) and a ``Content-ID: <X>``; the answer is ``multipart/mixed``
with one ``application/http`` part per request, in order, each holding an HTTP response ("HTTP/1.1 200 OK", headers,
body) and ``Content-ID: <response-X>``. A part that fails answers its own error status; the batch itself is 200.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from email.message import Message
from email.parser import Parser
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from gitlab_mci.sim.httpd import Faults, Request, Response, Served, fault_response, google_error

PATH = "/batch/compute/v1"
_MAX_PARTS = 1000  # Compute's documented limit per batch request


def handle(req: Request, serve: Callable[[Request], Response], faults: Faults | None = None) -> Response:
    """Answer a batch request by serving each part with ``serve``; the parts are reported in ``Response.parts``.

    Fault rules apply to each part as to a request of its own, so a fault on a path also hits it inside a batch.
    """
    if req.method != "POST":
        return google_error(405, f"Method {req.method} is not allowed for {req.path}", "badRequest")
    content_type = req.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/mixed"):
        return google_error(400, "Batch requests must be multipart/mixed.", "badRequest")
    message = Parser().parsestr(f"Content-Type: {content_type}\r\n\r\n" + req.body.decode("utf-8", "replace"))
    if not message.is_multipart():
        return google_error(400, "Failed to parse batch request: no parts.", "badRequest")
    parts = message.get_payload()
    assert isinstance(parts, list)
    if len(parts) > _MAX_PARTS:
        return google_error(400, f"A batch request cannot contain more than {_MAX_PARTS} requests.", "badRequest")
    boundary = f"batch_{os.urandom(12).hex()}"
    out: list[str] = []
    served: list[Served] = []
    for part in parts:
        if not isinstance(part, Message):
            continue
        payload = part.get_payload()
        inner = _request(payload if isinstance(payload, str) else "", req)
        t0 = time.perf_counter()
        if inner is None:
            answer = google_error(400, "Malformed batch part.", "badRequest")
        else:
            answer, fault = _serve(inner, serve, faults)
            served.append(Served(inner, answer, time.perf_counter() - t0, fault))
        content_id = str(part.get("Content-ID", "")).strip()
        out.append(_part(answer, f"<response-{content_id[1:]}" if content_id.startswith("<") else ""))
    body = "".join(f"--{boundary}\r\n{p}\r\n" for p in out) + f"--{boundary}--\r\n"
    return Response(200, body.encode(), content_type=f"multipart/mixed; boundary={boundary}", parts=served)


def _serve(req: Request, serve: Callable[[Request], Response], faults: Faults | None) -> tuple[Response, str | None]:
    fault: str | None = None
    for rule in faults.pick(req) if faults is not None else []:
        if rule.action == "latency":
            time.sleep(rule.latency)
            fault = fault or f"latency {rule.latency}s"
        else:
            return fault_response(rule, req), f"status {rule.status}"
    return serve(req), fault


def _request(payload: str, outer: Request) -> Request | None:
    """One part's HTTP request: request line, headers, blank line, body."""
    line, _, rest = payload.lstrip("\r\n").partition("\n")
    fields = line.strip().split(" ")
    if len(fields) < 2:
        return None
    headers = Parser().parsestr(rest)
    body = headers.get_payload()
    split = urlsplit(fields[1])
    return Request(method=fields[0].upper(), path=split.path, query=parse_qs(split.query, keep_blank_values=True),
                   headers={k.lower(): str(v) for k, v in headers.items()},
                   body=body.encode() if isinstance(body, str) and body.strip() else b"", service=outer.service)


def _part(answer: Response, content_id: str) -> str:
    try:
        reason = HTTPStatus(answer.status).phrase
    except ValueError:
        reason = ""
    payload = answer.encode().decode("utf-8", "replace")
    head = "Content-Type: application/http\r\n" + (f"Content-ID: {content_id}\r\n" if content_id else "")
    return (f"{head}\r\nHTTP/1.1 {answer.status} {reason}\r\n"
            f"Content-Type: {answer.content_type}; charset=UTF-8\r\n"
            f"Content-Length: {len(payload.encode())}\r\n\r\n{payload}")
