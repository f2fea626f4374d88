"""`/metrics`: what a service is doing, in the Prometheus text format.

One `CollectorRegistry` per Kit (not the process-wide default), so several services in one
test process do not clash. The hot paths stay as they were: consumers and the relay keep
plain integer counters (`ConsumerStats`, the relay's `published`/`set_aside`), and a collector
reads them when Prometheus scrapes. Only three things are observed as they happen: the relay's
round latency (once per round, not per row), the HTTP request latency (once per request), and
dead letters queued by a unit of work (a string compare per outbox row).

What waits on the server (each consumer's `num_pending`, its unacknowledged and redelivered
messages) and in the outbox (rows, the oldest one's age) is asked at scrape time, each with a
2 s timeout; an answer that does not come leaves the last known value (and
`sinergi_scrape_errors_total` grows).

Every metric, and what to alert on: docs/OPERATIONS.md.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from services.kit import logging as klog

if TYPE_CHECKING:
    from services.kit.outbox import Backlog, OutboxRow
    from services.kit.runtime import Kit

log = klog.get(__name__)
ASK_TIMEOUT = 2.0  # seconds per question to NATS or PostgreSQL at scrape time
MAX_CODES = 200    # distinct reason codes kept per service (a hostile stream cannot grow memory)

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class ServerView:
    """What the server says about one consumer, as last asked."""

    __slots__ = ("ack_pending", "pending", "redelivered")

    def __init__(self) -> None:
        self.pending = self.ack_pending = self.redelivered = 0


class KitMetrics:
    """The metrics of one service process (one Kit)."""

    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.registry = CollectorRegistry()
        self.relay_latency = Histogram(
            "sinergi_outbox_publish_seconds", "Time from a relay round's first publish to its last PubAck",
            registry=self.registry, buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
        self.http_latency = Histogram(
            "sinergi_http_request_duration_seconds", "HTTP request latency by route template",
            ["method", "route", "status"], registry=self.registry)
        self.dead_letters: dict[str, int] = {}  # reason code -> dead letters queued by units of work
        self.rounds = 0
        self.scrape_errors = 0
        self.servers: dict[str, ServerView] = {}
        self.backlog: Backlog | None = None
        self.registry.register(_KitCollector(self))

    # -- observed as it happens ------------------------------------------------------------

    def relay_round(self, seconds: float, published: int) -> None:
        """Called by the relay after a round that published something."""
        self.rounds += 1
        self.relay_latency.observe(seconds)

    def queued(self, rows: Iterable[OutboxRow]) -> None:
        """Called after a unit of work committed: count its dead letters by reason code."""
        subject = self.kit.names.deadletter(self.kit.service)
        for r in rows:
            if r["subject"] == subject:
                code = _reason_code(r["payload"])
                if code in self.dead_letters or len(self.dead_letters) < MAX_CODES:
                    self.dead_letters[code] = self.dead_letters.get(code, 0) + 1
                else:
                    self.dead_letters["other"] = self.dead_letters.get("other", 0) + 1

    # -- asked at scrape time --------------------------------------------------------------

    async def refresh(self) -> None:
        """Ask the server about every consumer and the database about the outbox, in parallel,
        each bounded; what does not answer keeps its last value."""
        results = await asyncio.gather(self._ask_backlog(), *(self._ask_consumer(c.spec.stream, c.spec.durable)
                                                             for c in self.kit.consumers), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                self.scrape_errors += 1
                log.debug("metrics.refresh_failed", error=f"{type(r).__name__}: {r}"[:200])

    async def _ask_backlog(self) -> None:
        self.backlog = await asyncio.wait_for(self.kit.relay.backlog(), ASK_TIMEOUT)

    async def _ask_consumer(self, stream: str, durable: str) -> None:
        info = await self.kit.bus.js.consumer_info(stream, durable, timeout=ASK_TIMEOUT)
        view = self.servers.setdefault(durable, ServerView())
        view.pending = int(info.num_pending or 0)
        view.ack_pending = int(info.num_ack_pending or 0)
        view.redelivered = int(info.num_redelivered or 0)

    async def exposition(self) -> bytes:
        await self.refresh()
        return generate_latest(self.registry)

    content_type = CONTENT_TYPE_LATEST


def _reason_code(payload: bytes) -> str:
    try:
        code = json.loads(payload).get("reason_code")
    except (ValueError, AttributeError):
        return "unknown"
    return code if isinstance(code, str) and len(code) <= 100 else "unknown"


class _KitCollector(Collector):
    """Reads the kit's counters when Prometheus scrapes (nothing is copied in the hot path)."""

    def __init__(self, m: KitMetrics) -> None:
        self.m = m

    def collect(self) -> Iterator[Metric]:
        yield from self._consumers()
        yield from self._outbox()
        dl = CounterMetricFamily("sinergi_dead_letters", "Dead letters this service queued, by reason code",
                                 labels=["code"])
        for code, n in sorted(self.m.dead_letters.items()):
            dl.add_metric([code], n)
        yield dl
        yield CounterMetricFamily("sinergi_scrape_errors", "Questions to NATS or PostgreSQL at scrape time that "
                                  "failed or timed out", value=self.m.scrape_errors)
        up = GaugeMetricFamily("sinergi_uptime_seconds", "Seconds since the service process composed its kit")
        up.add_metric([], time.monotonic() - self.m.kit.started_at)
        yield up

    def _consumers(self) -> Iterator[Metric]:
        names = self.m.kit.names
        received = CounterMetricFamily("sinergi_consumer_messages", "Messages delivered to a consumer, by subject "
                                       "(redeliveries count again)", labels=["consumer", "subject"])
        handled = CounterMetricFamily("sinergi_consumer_handled", "Messages handed to the service's handler and "
                                      "committed", labels=["consumer"])
        rejected = CounterMetricFamily("sinergi_consumer_rejected", "Messages rejected (dead-lettered or answered "
                                       "with a rejection), by reason code", labels=["consumer", "code"])
        simple = {
            "duplicates": CounterMetricFamily("sinergi_consumer_duplicates", "Messages dropped as already processed "
                                              "(inbox)", labels=["consumer"]),
            "skipped": CounterMetricFamily("sinergi_consumer_skipped", "Messages not meant for this consumer",
                                           labels=["consumer"]),
            "batches": CounterMetricFamily("sinergi_consumer_batches", "Batches fetched", labels=["consumer"]),
            "failures": CounterMetricFamily("sinergi_consumer_failures", "Batches or messages whose unit of work "
                                            "failed (retried or bisected)", labels=["consumer"]),
            "retried": CounterMetricFamily("sinergi_consumer_retries", "Single messages nak'ed for another try after "
                                           "a handler error", labels=["consumer"]),
            "dead_lettered": CounterMetricFamily("sinergi_consumer_poison", "Messages dead-lettered after failing "
                                                 "the handler max_deliveries times", labels=["consumer"]),
            "resubscribed": CounterMetricFamily("sinergi_consumer_resubscribed", "Times the consumer found itself "
                                                "stalled and subscribed again", labels=["consumer"]),
            "redelivered": CounterMetricFamily("sinergi_consumer_redelivered", "Messages that arrived for a second "
                                               "or later time", labels=["consumer"]),
        }
        pending = GaugeMetricFamily("sinergi_consumer_pending", "Messages waiting on the server for this consumer "
                                    "(lag), as asked at scrape time", labels=["consumer"])
        ack_pending = GaugeMetricFamily("sinergi_consumer_ack_pending", "Messages delivered and not yet "
                                        "acknowledged", labels=["consumer"])
        server_redelivered = GaugeMetricFamily("sinergi_consumer_redelivering", "Messages the server is "
                                               "redelivering now", labels=["consumer"])
        running = GaugeMetricFamily("sinergi_consumer_up", "1 while the consumer runs and is not stalled",
                                    labels=["consumer"])
        idle = GaugeMetricFamily("sinergi_consumer_last_batch_age_seconds", "Seconds since the last batch",
                                 labels=["consumer"])
        now = time.monotonic()
        for c in self.m.kit.consumers:
            d, st = c.spec.durable, c.stats
            handled.add_metric([d], st.handled)
            for subject, n in list(getattr(st, "by_subject", {}).items()):
                received.add_metric([d, names.bare(subject)], n)
            for code, n in list(st.by_code.items()):
                rejected.add_metric([d, code], n)
            for attr, fam in simple.items():
                fam.add_metric([d], getattr(st, attr, 0))
            view = self.m.servers.get(d)
            if view is not None:
                pending.add_metric([d], view.pending)
                ack_pending.add_metric([d], view.ack_pending)
                server_redelivered.add_metric([d], view.redelivered)
            running.add_metric([d], 0 if c.problem() else 1)
            idle.add_metric([d], now - c.last_batch_at)
        yield from (received, handled, rejected, *simple.values(), pending, ack_pending, server_redelivered, running,
                    idle)

    def _outbox(self) -> Iterator[Metric]:
        relay = self.m.kit.relay
        yield CounterMetricFamily("sinergi_outbox_published", "Outbox rows published and acknowledged by JetStream",
                                  value=relay.published)
        yield CounterMetricFamily("sinergi_outbox_republished", "Publishes JetStream reported as repeats (a relay "
                                  "died between publish and mark)", value=relay.duplicates)
        yield CounterMetricFamily("sinergi_outbox_set_aside", "Outbox rows that could not be published, each "
                                  "replaced by a dead letter (this process)", value=relay.set_aside)
        yield GaugeMetricFamily("sinergi_outbox_relay_up", "1 while the relay's loop runs and its last round "
                                "succeeded", value=0 if (relay.problem() or relay.last_error) else 1)
        # no sample until the database has answered once (an absent value, not a false zero)
        b = self.m.backlog
        for name, doc, field in (
                ("sinergi_outbox_backlog", "Outbox rows waiting to be published", "pending"),
                ("sinergi_outbox_oldest_age_seconds", "How long the oldest unpublished row has waited", "oldest_age"),
                ("sinergi_outbox_set_aside_rows", "Rows in the outbox table set aside (all processes, all time)",
                 "set_aside")):
            fam = GaugeMetricFamily(name, doc)
            if b is not None:
                fam.add_metric([], getattr(b, field))
            yield fam


class HttpMetrics:
    """ASGI middleware: request latency labelled by the route's path template (`/people/{nik}`),
    never the raw path, which would hold NIKs and grow without bound."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app, self.histogram = app, histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_wrapper(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.histogram.labels(scope.get("method", ""), route_template(scope), str(status)).observe(
                time.perf_counter() - started)


def route_template(scope: Scope) -> str:
    """The matched route's template; for a mount (static files, a sub-app) its prefix."""
    route = scope.get("route")
    path = getattr(route, "path_format", None) or getattr(route, "path", None)
    if isinstance(path, str) and path:
        return path
    root = scope.get("root_path") or ""
    app_root = scope.get("app_root_path") or ""
    if root and root != app_root:  # inside a Mount: its prefix only
        return f"{root[len(app_root):]}/{{path}}"
    return "(unmatched)"
