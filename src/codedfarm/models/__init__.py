"""Models served by the farm (torch is imported when a model module is used)."""

__all__: list[str] = []
