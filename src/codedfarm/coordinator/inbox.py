"""Reading a collector's inbox: block until messages come, then take many at once."""

from __future__ import annotations

from typing import Any

import redis

from codedfarm.protocol import as_bytes

__all__ = ["InboxReader"]


class InboxReader:
    """Takes up to ``count`` messages from list ``key`` per call: one BLMPOP on Redis 7,
    BLPOP then LPOP on older servers (learned from the first "unknown command")."""

    def __init__(self, client: redis.Redis, key: str, count: int = 512) -> None:
        self.client = client
        self.key = key
        self.count = count
        self._blmpop = True

    def take(self, wait: float) -> list[bytes]:
        """Block up to ``wait`` seconds for the first message; [] if none came."""
        if self._blmpop:
            try:
                item: Any = self.client.blmpop(
                    wait, 1, self.key, direction="LEFT", count=self.count
                )
            except redis.ResponseError as exc:
                if "unknown command" not in str(exc).lower():
                    raise
                self._blmpop = False
            else:
                return [as_bytes(m) for m in item[1]] if item else []
        first = self.client.blpop([self.key], timeout=wait)
        if first is None:
            return []
        more: Any = self.client.lpop(self.key, self.count)  # drain without blocking
        return [as_bytes(first[1]), *(as_bytes(m) for m in more or [])]
