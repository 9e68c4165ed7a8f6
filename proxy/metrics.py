"""Prometheus metrics of the proxy, in a registry of its own (``GET /metrics``).

Every label value is the server's own: endpoints and error codes are constants, and a model label is
a name the request's catalog serves (the metering owner passes ``(unknown)`` for anything else). As a second
bound, a model name becomes a label only while the labels stay under :data:`MAX_MODEL_LABELS` names
and :data:`MAX_MODEL_LABEL_BYTES` bytes in all, and only if it is at most :data:`MAX_LABEL_BYTES`
long (a model's name, not a paragraph); anything else is counted under ``(other)``, so the scrape
stays small whatever reaches it (issue 18: 256 names of 450 KB made it 111 MB).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from proxy.auth.gate import GateStats

MAX_MODEL_LABELS = 256
MAX_LABEL_BYTES = 128  # the runtime's and the registry's names are at most this long
MAX_MODEL_LABEL_BYTES = 16 * 1024
OTHER_MODELS = "(other)"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        disable_created_metrics()  # the *_created series only add noise here
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "llmserver_requests",
            "Requests by endpoint, model and status",
            ["endpoint", "model", "status"],
            registry=r,
        )
        self.errors = Counter("llmserver_errors", "Error responses by code", ["status", "code"], registry=r)
        self.tokens_counter = Counter(
            "llmserver_tokens", "Billed tokens (cl100k_base) by model and kind", ["model", "kind"], registry=r
        )
        self.latency = Histogram(
            "llmserver_request_latency_seconds",
            "Request latency",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.ttft = Histogram(
            "llmserver_time_to_first_token_seconds",
            "Time to first token",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_position = Histogram(
            "llmserver_runtime_queue_position",
            "Requests ahead in the runtime queue at admission",
            buckets=(0, 1, 2, 4, 8, 16, 32),
            registry=r,
        )
        self.inflight = Gauge("llmserver_inflight_requests", "Generation requests in flight", registry=r)
        self.ledger_failures = Counter(
            "llmserver_ledger_write_failures", "Usage rows that could not be written", registry=r
        )
        self.ledger_owed = Gauge(
            "llmserver_ledger_owed_rows", "Usage rows kept in memory until the ledger can be written", registry=r
        )
        self.runtime_up = Gauge("llmserver_runtime_up", "1 when the runtime daemon answers", registry=r)
        self._models: set[str] = set()
        self._label_bytes = 0
        self._children: dict[tuple[object, ...], Any] = {}
        self._gates = _GateCollector()
        r.register(self._gates)

    def watch_gate(self, name: str, stats: GateStats) -> None:
        """Export an argon2 gate's counters (``proxy.auth.gate``) under ``gate="<name>"``."""
        self._gates.gates[name] = stats

    def model_label(self, model: str) -> str:
        if model in self._models:
            return model
        size = len(model.encode("utf-8", "replace"))
        if (
            size > MAX_LABEL_BYTES
            or len(self._models) >= MAX_MODEL_LABELS
            or self._label_bytes + size > MAX_MODEL_LABEL_BYTES
        ):
            return OTHER_MODELS
        self._models.add(model)
        self._label_bytes += size
        return model

    def observe(self, endpoint: str, model: str, status: int, latency_ms: float, ttft_ms: float | None) -> None:
        self._child(self.requests, endpoint, self.model_label(model), str(status)).inc()
        self._child(self.latency, endpoint).observe(latency_ms / 1000)
        if ttft_ms is not None:
            self._child(self.ttft, endpoint).observe(ttft_ms / 1000)

    def tokens(self, model: str, prompt: int, completion: int) -> None:
        label = self.model_label(model)
        self._child(self.tokens_counter, label, "prompt").inc(prompt)
        self._child(self.tokens_counter, label, "completion").inc(completion)

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, remembered: prometheus_client validates and locks on every
        call, five times a request. The label sets are bounded (models by ``MAX_MODEL_LABELS``)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def error(self, status: int, code: str | None) -> None:
        self.errors.labels(str(status), code or "").inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _GateCollector:
    """The argon2 gates' counters, read at scrape time (the gates count in plain integers)."""

    def __init__(self) -> None:
        self.gates: dict[str, GateStats] = {}

    def collect(self) -> Iterator[Metric]:
        runs = CounterMetricFamily("llmserver_argon2_runs", "argon2 verifications run, by gate", labels=["gate"])
        pretended = CounterMetricFamily(
            "llmserver_argon2_skipped", "Verifications of unknown ids or names (no argon2), by gate", labels=["gate"]
        )
        refused = CounterMetricFamily(
            "llmserver_argon2_refused", "Verifications refused before argon2, by gate and why", labels=["gate", "why"]
        )
        for name, stats in self.gates.items():
            runs.add_metric([name], stats.runs)
            pretended.add_metric([name], stats.pretended)
            refused.add_metric([name, "address"], stats.refused_address)
            refused.add_metric([name, "busy"], stats.refused_busy)
        yield from (runs, pretended, refused)
