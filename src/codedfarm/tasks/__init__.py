"""Celery side of the farm: the app, the inference task, per-process model loading."""

__all__: list[str] = []
