"""Prometheus metrics with the names of ops guide §3.1 and §3.3.

HTTP metrics are measured in the API process. The video metrics are read from
PostgreSQL at scrape time, because the workers that produce them run in other
processes (other containers): counters come from ``video_counters`` (updated in
the same transaction as the job), and ``video_processing_cost_dollars`` is one
gauge series per video finished within COST_METRIC_WINDOW_SECONDS.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .db import COST_BUCKETS, Database

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0)


class HttpMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.duration = Histogram(
            "http_request_duration_seconds",
            "Time to answer an HTTP request",
            ["method", "path"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.requests = Counter(
            "http_requests_total",
            "HTTP requests answered, by status code",
            ["method", "path", "status"],
            registry=registry,
        )

    def observe(self, method: str, path: str, status: int, seconds: float) -> None:
        self.duration.labels(method, path).observe(seconds)
        self.requests.labels(method, path, str(status)).inc()


class HttpMetricsMiddleware:
    """Times every request; labels by route template so ids don't explode cardinality."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "<unmatched>"
            self.metrics.observe(scope["method"], path, status, time.perf_counter() - start)


class VideoMetricsCollector(Collector):
    def __init__(self, db: Database, window_seconds: int) -> None:
        self.db = db
        self.window_seconds = window_seconds

    def describe(self) -> Iterable[Metric]:
        return []  # values come from the database at collect time

    def collect(self) -> Iterable[Metric]:
        up = GaugeMetricFamily(
            "ytvideo_job_store_up", "1 when the video metrics could be read from PostgreSQL"
        )
        try:
            data = self.db.video_metrics(self.window_seconds)
        except Exception as exc:
            log.warning("video metrics unavailable: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up

        processed = CounterMetricFamily("videos_processed", "Videos rendered successfully")
        processed.add_metric([], data.counters.get(("videos_processed_total", ""), 0))
        yield processed

        failures = CounterMetricFamily(
            "video_processing_failures", "Video jobs that failed, by stage", labels=["stage"]
        )
        for (name, stage), value in sorted(data.counters.items()):
            if name == "video_processing_failures_total":
                failures.add_metric([stage], value)
        yield failures

        uploads = CounterMetricFamily(
            "ytvideo_youtube_uploads",
            "YouTube uploads that ended an attempt, by outcome (uploaded, waiting: retried or"
            " waiting for the quota, failed)",
            labels=["status"],
        )
        for (name, status), value in sorted(data.counters.items()):
            if name == "youtube_uploads_total":
                uploads.add_metric([status], value)
        yield uploads

        cost = GaugeMetricFamily(
            "video_processing_cost_dollars",
            "Cost of each recently finished video (compute plus providers)",
            labels=["video_id"],
        )
        for video_id, dollars in data.recent_costs:
            cost.add_metric([video_id], dollars)
        yield cost

        # Every video's cost, with bounded cardinality (the gauge above keeps only the
        # recent ones): counted in PostgreSQL in the job's completing transaction.
        buckets = [
            (f"{le:g}", data.counters.get(("video_cost_bucket", f"{le:g}"), 0))
            for le in COST_BUCKETS
        ]
        buckets.append(("+Inf", data.counters.get(("video_cost_bucket", "+Inf"), 0)))
        histogram = HistogramMetricFamily(
            "ytvideo_video_cost_dollars", "Cost of each completed video (compute plus providers)"
        )
        histogram.add_metric(
            [], buckets, sum_value=data.counters.get(("video_cost_micros", ""), 0) / 1e6
        )
        yield histogram

        jobs = GaugeMetricFamily("ytvideo_jobs", "Jobs waiting or rendering", labels=["status"])
        for status, count in sorted(data.in_flight.items()):
            jobs.add_metric([status], count)
        yield jobs

        age = GaugeMetricFamily(
            "ytvideo_oldest_job_age_seconds",
            "Age of the oldest queued job (since it was created) and of the oldest running"
            " one (since it started); 0 when there is none",
            labels=["status"],
        )
        for status, seconds in sorted(data.oldest_age.items()):
            age.add_metric([status], seconds)
        yield age
