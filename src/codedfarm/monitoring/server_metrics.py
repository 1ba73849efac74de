"""Metrics of ``codedfarm serve``, on the server's own ``/metrics``.

Per request: latency by model, codec and outcome (``ok``, ``bad_request``, ``not_found``,
``too_large``, ``unavailable``, ``timeout``, ``disconnected``, ``error``); per coding
group: its rows, how long its oldest row waited, and how its rows were answered (from
their own results, exactly, or decoded) and, for a decoded one, its time in the farm; and
requests in flight, refusals, clients that left and the last request's time, by model. No
label carries a request id. The statistics extension (``GET /v2/models/{name}/stats``,
:mod:`codedfarm.server.statistics`) is read from these same metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from codedfarm.monitoring.build_info import register_build_info
from codedfarm.monitoring.metrics import LATENCY_BUCKETS, STAGE_BUCKETS
from codedfarm.protocol import BatchRecord

__all__ = ["DECODED", "ServerMetrics"]

GROUP_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
DECODED = ("decoded", "deadline_decoded")
"""The outcomes of a coding group that was answered (its rows have predictions)."""


class ServerMetrics:
    """The server's metrics in their own registry (one server per process, tests many)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        register_build_info("server", self.registry)
        self.latency = Histogram(
            "codedfarm_server_request_seconds",
            "Time from a request's arrival to its answer, by model, codec and outcome.",
            ["model", "codec", "outcome"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_delay = Histogram(
            "codedfarm_server_queue_delay_seconds",
            "How long a coding group's oldest row waited before the group formed.",
            ["model"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.group_rows = Histogram(
            "codedfarm_server_group_rows",
            "Rows per coding group (K for a full one; a partial group is coded for its size).",
            ["model"],
            buckets=GROUP_BUCKETS,
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "codedfarm_server_requests_in_flight",
            "Infer requests received and not yet answered.",
            ["model"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "codedfarm_server_rejected_total",
            "Infer requests refused at once: queue_full (503) or not_ready (503).",
            ["model", "reason"],
            registry=self.registry,
        )

        self.groups = Counter(
            "codedfarm_server_groups_total",
            "Coding groups sent to the farm, by model, the codec they were coded with, and "
            "outcome (the batch record's: decoded, deadline_decoded, timeout, failed).",
            ["model", "codec", "outcome"],
            registry=self.registry,
        )
        self.disconnects = Counter(
            "codedfarm_server_client_disconnects_total",
            "Infer requests whose client left before the body was read (nothing answered).",
            ["model"],
            registry=self.registry,
        )

        self.rows_answered = Counter(
            "codedfarm_server_rows_total",
            "Rows of decoded coding groups by how they were answered: path=own (the row's own "
            "task's result, the model's exact output) or path=decoded (reconstructed from "
            "the other results because its own was late or lost).",
            ["model", "path"],
            registry=self.registry,
        )
        self.group_seconds = Histogram(
            "codedfarm_server_group_seconds",
            "Time a decoded coding group took in the farm, from its submission to its "
            "predictions (encode, dispatch, the workers, decode).",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.last_request = Gauge(
            "codedfarm_server_last_request_timestamp_seconds",
            "When the model's last infer request was answered (Unix time).",
            ["model"],
            registry=self.registry,
        )

    def request(self, model: str, codec: str, outcome: str, seconds: float) -> None:
        """An infer request answered after ``seconds`` (``model`` "unknown": no such model)."""
        self.latency.labels(model, codec, outcome).observe(seconds)
        if model != "unknown":
            self.last_request.labels(model).set_to_current_time()

    def rows(self, model: str, record: BatchRecord) -> None:
        """Count a finished group's rows by path (nothing for a group that failed) and, for a
        decoded group, its time in the farm (the record's end to end)."""
        if record.rows_own:
            self.rows_answered.labels(model, "own").inc(len(record.rows_own))
        if record.rows_decoded:
            self.rows_answered.labels(model, "decoded").inc(len(record.rows_decoded))
        if record.outcome in DECODED:
            self.group_seconds.labels(model).observe(record.timings.end_to_end)

    def group(self, model: str, rows: int, delay: float) -> None:
        self.group_rows.labels(model).observe(rows)
        self.queue_delay.labels(model).observe(delay)

    def exposition(self) -> bytes:
        """The text format Prometheus scrapes."""
        return bytes(generate_latest(self.registry))
