"""Triton's statistics extension (``GET /v2/models[/{name}[/versions/{v}]]/stats``), read
from the server's own Prometheus metrics (:class:`~codedfarm.monitoring.server_metrics.
ServerMetrics`): nothing is counted twice, and ``/metrics`` and the statistics agree.

What each field is here (a coding group is the farm's batch, Triton's "execution"):

- ``inference_count``: rows answered (``codedfarm_server_rows_total``, own and decoded);
- ``execution_count``: coding groups decoded (``codedfarm_server_groups_total``, outcome
  ``decoded`` or ``deadline_decoded``);
- ``last_inference``: when the last infer request was answered, ms since the epoch (0:
  none yet; ``codedfarm_server_last_request_timestamp_seconds``);
- ``inference_stats.success`` / ``fail``: requests answered 200 / anything else (400, 413,
  503, 504, 500, and clients that left), with their time from arrival to answer
  (``codedfarm_server_request_seconds`` by outcome);
- ``inference_stats.queue``: per coding group, how long its oldest row waited for the group
  to form (``codedfarm_server_queue_delay_seconds``): its count is groups, not requests;
- ``inference_stats.compute_infer``: per decoded group, its time in the farm from submission
  to predictions: encode, dispatch, the workers, decode (``codedfarm_server_group_seconds``).

Left out, since the server does not measure them: ``compute_input``, ``compute_output``,
``cache_hit``, ``cache_miss``, ``batch_stats`` and ``memory_usage``. The metrics are labelled
by model, not version, so a model's statistics are those of all its versions together and
``version`` is ``""``. They count since the server process started, per server replica.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

from codedfarm.monitoring.server_metrics import DECODED, ServerMetrics

__all__ = ["model_statistics", "models_served", "statistics_response"]

Labels = dict[str, str]
Samples = dict[str, list[tuple[Labels, float]]]


def _samples(metrics: ServerMetrics) -> Samples:
    """Every sample of the server's registry, by sample name (``..._count``, ``..._sum``)."""
    found: Samples = defaultdict(list)
    for family in metrics.registry.collect():
        for sample in family.samples:
            found[sample.name].append((sample.labels, sample.value))
    return found


def _total(samples: Samples, name: str, model: str,
           keep: Callable[[Labels], bool] = lambda labels: True) -> float:  # fmt: skip
    return sum(v for labels, v in samples.get(name, []) if labels.get("model") == model
               and keep(labels))  # fmt: skip


def _duration(samples: Samples, histogram: str, model: str,
              keep: Callable[[Labels], bool] = lambda labels: True) -> dict[str, int]:  # fmt: skip
    """Triton's duration statistic: a count and the total of its durations in ns."""
    count = _total(samples, f"{histogram}_count", model, keep)
    seconds = _total(samples, f"{histogram}_sum", model, keep)
    return {"count": round(count), "ns": round(seconds * 1e9)}


def model_statistics(metrics: ServerMetrics, model: str, samples: Samples | None = None) -> (
    dict[str, Any]
):  # fmt: skip
    """One ``model_stats`` entry: ``model``'s statistics (all its versions together)."""
    s = _samples(metrics) if samples is None else samples
    request = "codedfarm_server_request_seconds"
    last = _total(s, "codedfarm_server_last_request_timestamp_seconds", model)
    return {
        "name": model,
        "version": "",
        "last_inference": round(last * 1000),
        "inference_count": round(_total(s, "codedfarm_server_rows_total", model)),
        "execution_count": round(_total(s, "codedfarm_server_groups_total", model,
                                        lambda labels: labels["outcome"] in DECODED)),
        "inference_stats": {
            "success": _duration(s, request, model, lambda labels: labels["outcome"] == "ok"),
            "fail": _duration(s, request, model, lambda labels: labels["outcome"] != "ok"),
            "queue": _duration(s, "codedfarm_server_queue_delay_seconds", model),
            "compute_infer": _duration(s, "codedfarm_server_group_seconds", model),
        },
    }  # fmt: skip


def models_served(metrics: ServerMetrics) -> list[str]:
    """The models this server has been asked to infer with since it started, sorted."""
    counts = _samples(metrics).get("codedfarm_server_request_seconds_count", [])
    return sorted({labels["model"] for labels, _ in counts} - {"unknown"})


def statistics_response(metrics: ServerMetrics, models: Iterable[str]) -> dict[str, Any]:
    """The statistics extension's answer for ``models``: ``{"model_stats": [...]}``."""
    samples = _samples(metrics)
    return {"model_stats": [model_statistics(metrics, m, samples) for m in models]}
