"""Prometheus metric definitions and exporters (no other logic lives here)."""

__all__: list[str] = []
