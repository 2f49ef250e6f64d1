"""Observability: Prometheus metrics (``/metrics``) and one access-log line per request."""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

access_log = logging.getLogger("vislang.serve.access")

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)


class Metrics:
    """The service's metrics, in a registry of its own (several apps in one process do not clash)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("vislang_requests", "HTTP requests answered", ["endpoint", "status"],
                                registry=self.registry)
        self.latency = Histogram("vislang_request_seconds", "Time to answer a request", ["endpoint"],
                                 buckets=LATENCY_BUCKETS, registry=self.registry)
        self.batch_size = Histogram("vislang_batch_size", "Requests run together in one batch", ["model", "op"],
                                    buckets=BATCH_BUCKETS, registry=self.registry)
        self.queue_depth = Gauge("vislang_queue_depth", "Requests waiting for a model", ["model"],
                                 registry=self.registry)

    def render(self) -> tuple[bytes, str]:
        """The metrics in Prometheus text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def setup_access_log() -> None:
    """Access lines go to stderr as they are (``METHOD PATH STATUS SECONDS``), once per process."""
    if not access_log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False


class ObserveMiddleware:
    """Pure ASGI middleware: counts and times every HTTP request by its route (``/v1/caption``, not the raw path
    of ``/v1/images/{id}``) and writes its access line.

    Args:
        app: The wrapped ASGI app.
        metrics: Where to count.
        log: Write access lines.
    """

    def __init__(self, app: Any, metrics: Metrics, log: bool = True):
        self.app, self.metrics, self.log = app, metrics, log

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = [500]

        async def send_status(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            seconds = time.perf_counter() - start
            route = scope.get("route")
            endpoint = getattr(route, "path", None) or "(unmatched)"
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(seconds)
            if self.log:
                client = scope.get("client") or ("-", 0)
                access_log.info("%s %s %s %d %.4f", client[0], scope["method"], scope["path"], status[0], seconds)
