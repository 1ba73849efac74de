"""Observability: the collector's hook interface and the Prometheus metrics that implement it,
and the workers' metrics. Importing this package imports no prometheus_client (worker
metrics need their multiprocess directory set first)."""

__all__: list[str] = []
