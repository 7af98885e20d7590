"""Prometheus metrics of ``rag serve`` and the ASGI middleware that records them.

Metrics (prometheus-client, text format at ``GET /metrics``), each in the app's own registry:

- ``rag_http_requests_total{route, method, status}``: requests served
- ``rag_http_request_duration_seconds{route, method}``: latency histogram, request start to the
  last body byte (for a stream, its whole length); percentiles with
  ``histogram_quantile(0.95, rate(rag_http_request_duration_seconds_bucket[5m]))``
- ``rag_chat_first_token_seconds``: chat time to the first answer piece
- ``rag_chat_streams_active``, ``rag_chat_streams_cancelled_total``,
  ``rag_chat_pieces_total``: open answer streams, streams the client left, pieces generated
- ``rag_jobs{state}``, ``rag_jobs_finished_total{kind, state}``: background writes

``route`` is the route template (``/v1/jobs/{job_id}``), never the raw path, so the label set
stays small; requests refused for their key are ``unauthenticated``, unknown paths ``unmatched``.
"""

from __future__ import annotations

import json
import time
from typing import Callable

from starlette.exceptions import HTTPException

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
"""Seconds: from a 5 ms search to a two-minute stream on a loaded CPU."""


class Metrics:
    """The metrics of one app (its own registry, so two apps in one process do not clash)."""

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("rag_http_requests_total", "HTTP requests served", ["route", "method", "status"], registry=r)
        self.latency = Histogram("rag_http_request_duration_seconds", "HTTP request latency (to the last byte)",
                                 ["route", "method"], buckets=LATENCY_BUCKETS, registry=r)
        self.first_token = Histogram("rag_chat_first_token_seconds", "Chat time to first answer piece",
                                     buckets=LATENCY_BUCKETS, registry=r)
        self.streams_active = Gauge("rag_chat_streams_active", "Answer streams being generated", registry=r)
        self.streams_cancelled = Counter("rag_chat_streams_cancelled_total", "Answer streams the client left early",
                                         registry=r)
        self.pieces = Counter("rag_chat_pieces_total", "Answer pieces produced by the engine", registry=r)
        self.jobs = Gauge("rag_jobs", "Background jobs by state", ["state"], registry=r)
        self.jobs_finished = Counter("rag_jobs_finished_total", "Background jobs finished", ["kind", "state"], registry=r)

    def job_finished(self, kind: str, state: str) -> None:
        self.jobs_finished.labels(kind, state).inc()

    def render(self, job_counts: dict[str, int]) -> tuple[bytes, str]:
        for state in ("queued", "running", "done", "failed"):
            self.jobs.labels(state).set(job_counts.get(state, 0))
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class MetricsMiddleware:
    """Pure ASGI middleware: records each request's count and latency (to the last body byte)
    under its route template, and refuses a body over ``limit_for(path)`` bytes with 413: at
    once when Content-Length says so, else when the reading passes the limit (raised as an
    HTTPException, which the app answers as one JSON line)."""

    def __init__(self, app, metrics: Metrics, limit_for: Callable[[str], int]):
        self.app = app
        self.metrics = metrics
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = [500]
        limit = self.limit_for(scope.get("path", ""))
        scope["rag.max_body_bytes"] = limit

        async def send_wrapper(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        seen = 0

        async def receive_limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise HTTPException(413)
            return message

        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and length.isdigit() and int(length) > limit:
                status[0] = 413
                await _too_large(send, limit)
            else:
                await self.app(scope, receive_limited, send_wrapper)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or ("unauthenticated" if status[0] == 401 else "unmatched")
            method = scope.get("method", "GET")
            self.metrics.requests.labels(label, method, str(status[0])).inc()
            self.metrics.latency.labels(label, method).observe(time.perf_counter() - t0)


async def _too_large(send, limit: int) -> None:
    from .schemas import error_body

    body = json.dumps(error_body(413, too_large_message(limit))).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


def too_large_message(limit: int | None) -> str:
    return f"request body is larger than the limit of {limit} bytes" if limit is not None else "request body too large"
