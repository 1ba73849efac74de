"""Collector metrics for Prometheus, plugged into the collector as hooks.

Names are in base units (seconds, bytes), counters end in ``_total``, and no label
carries a batch or task id.
"""

from __future__ import annotations

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
)

from codedfarm.errors import ConfigError
from codedfarm.monitoring.hooks import CollectorHooks
from codedfarm.protocol import BatchRecord, BatchRegistration

__all__ = ["LATENCY_BUCKETS", "CollectorMetrics", "port_error"]

LATENCY_BUCKETS = (0.005, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.06, 0.075, 0.1, 0.125, 0.15,
                   0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0,
                   15.0, 20.0, 30.0, 45.0, 60.0, 120.0)  # fmt: skip
"""Seconds; dense between 10 ms and 1 s, where a served batch's latency lives."""
STAGE_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)


class CollectorMetrics(CollectorHooks):
    """The collector's Prometheus metrics."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.batch_latency = Histogram(
            "codedfarm_batch_latency_seconds",
            "Batch latency from submit to decode (collector side).",
            ["codec", "model", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.stage = Histogram(
            "codedfarm_batch_stage_seconds",
            "Time per batch stage: encode (client), dispatch (client to collector), wait (submit "
            "to the wait policy met), decode.",
            ["stage", "codec"],
            buckets=STAGE_BUCKETS,
            registry=registry,
        )
        self.outcomes = Counter(
            "codedfarm_batches_total",
            "Finished batches by outcome.",
            ["codec", "model", "outcome"],
            registry=registry,
        )
        self.results_used = Histogram(
            "codedfarm_batch_results_used",
            "Worker results a decode used.",
            ["codec"],
            buckets=(1, 2, 4, 8, 12, 16, 20, 24, 32, 48, 64, 96, 128, 256, 512, 1024),
            registry=registry,
        )
        self.dropped = Counter(
            "codedfarm_results_dropped_total",
            "Worker results dropped by the collector.",
            ["reason"],
            registry=registry,
        )
        self.in_flight = Gauge(
            "codedfarm_batches_in_flight",
            "Batches registered and not yet finished.",
            registry=registry,
        )
        self.coded_tasks = Histogram(
            "codedfarm_batch_coded_tasks",
            "Coded tasks (N) per batch.",
            ["codec"],
            buckets=(1, 2, 4, 8, 12, 16, 20, 24, 32, 48, 64, 96, 128, 256, 512, 1024),
            registry=registry,
        )
        self.observed_stragglers = Histogram(
            "codedfarm_batch_observed_stragglers",
            "Tasks whose result was not in when the batch finished (late, lost or failed): "
            "the stragglers production has, injected or not.",
            ["codec"],
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.slowed_tasks = Histogram(
            "codedfarm_batch_slowed_tasks",
            "Tasks the batch's injected straggler plan slowed or failed (0 in production).",
            ["codec"],
            buckets=(0, 1, 2, 4, 8, 16, 32, 64, 128),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "codedfarm_queue_depth",
            "Tasks waiting in a worker queue.",
            ["queue"],
            registry=registry,
        )
        self.decode_mse = Histogram(
            "codedfarm_decode_mse",
            "Mean squared error of decoded outputs against the uncoded outputs, on the batches "
            "sampled for fidelity (CODEDFARM_FIDELITY_SAMPLE).",
            ["codec", "model"],
            buckets=(1e-8, 1e-6, 1e-4, 1e-3, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0),
            registry=registry,
        )
        self.decoded_checked = Counter(
            "codedfarm_decoded_rows_checked_total",
            "Rows the decoder reconstructed (their own result was not in), on the batches "
            "sampled for fidelity (CODEDFARM_FIDELITY_SAMPLE).",
            ["codec", "model"],
            registry=registry,
        )
        self.decoded_agreed = Counter(
            "codedfarm_decoded_rows_agreed_total",
            "Of codedfarm_decoded_rows_checked_total, the rows whose argmax is the model's own "
            "(uncoded) argmax: their ratio is the decoded rows' agreement.",
            ["codec", "model"],
            registry=registry,
        )
        self.rejected = Counter(
            "codedfarm_results_rejected_total",
            "Worker results a byzantine decode judged wrong and left out, by the worker that "
            "sent them.",
            ["codec", "model", "worker"],
            registry=registry,
        )
        self.registered = Counter(
            "codedfarm_batches_registered_total",
            "Batches registered with this collector.",
            ["codec", "model"],
            registry=registry,
        )

    def batch_registered(self, reg: BatchRegistration) -> None:
        self.registered.labels(reg.codec, reg.model).inc()

    def batch_finished(self, record: BatchRecord) -> None:
        codec = record.codec.split(":", 1)[0]
        self.outcomes.labels(codec, record.model, record.outcome).inc()
        self.batch_latency.labels(codec, record.model, record.outcome).observe(
            record.timings.wait + record.timings.decode
        )
        self.stage.labels("encode", codec).observe(record.timings.encode)
        self.stage.labels("dispatch", codec).observe(record.timings.dispatch)
        self.stage.labels("wait", codec).observe(record.timings.wait)
        self.coded_tasks.labels(codec).observe(record.n)
        self.slowed_tasks.labels(codec).observe(len(record.slowed))
        self.observed_stragglers.labels(codec).observe(max(0, record.n - record.results_received))
        if record.workers_used:
            self.stage.labels("decode", codec).observe(record.timings.decode)
            self.results_used.labels(codec).observe(len(record.workers_used))
        for rejected in record.rejected:
            self.rejected.labels(codec, record.model, rejected["worker"] or "unknown").inc()

    def result_dropped(self, reason: str) -> None:
        self.dropped.labels(reason).inc()

    def open_batches(self, count: int) -> None:
        self.in_flight.set(count)

    def queue_depths(self, depths: dict[str, int]) -> None:
        for queue, depth in depths.items():
            self.queue_depth.labels(queue).set(depth)

    def fidelity(self, codec: str, model: str, mse: float) -> None:
        self.decode_mse.labels(codec, model).observe(mse)

    def decoded_fidelity(self, codec: str, model: str, checked: int, agreed: int) -> None:
        self.decoded_checked.labels(codec, model).inc(checked)
        self.decoded_agreed.labels(codec, model).inc(agreed)


def port_error(port: int, addr: str, exc: OSError) -> ConfigError:
    return ConfigError(
        f"--metrics-port {port}: cannot listen on {addr}:{port} ({exc.strerror or exc}); another "
        "process (a second collector or worker on this host?) uses it: pass another port, or 0"
    )
