"""The shuffle's wires in Redis, and the byte counters at every write.

Keys of run R (prefix P = ``<key_prefix>:shuffle:R``), each with the run's TTL::

    P:bcast      stream: the broadcast channel, read by every worker (epoch headers,
                 coded messages, the model of the training use, stop)
    P:uni:K      stream: unicast to worker K (its initial placement, uncoded rows)
    P:ack        stream: the workers' acknowledgements (ready, done with checksums, error)
    P:hb:K       string: worker K's heartbeat (expires 3 s after its last beat)

A stream entry has a JSON header ``h`` and raw bytes ``p`` (rows, coded rows, weights):
no pickle. :class:`Channel` counts the bytes of every entry it writes: the payload ``p``
under its kind (broadcast, unicast, placement, model, control) and everything else (the
headers, the field names) as protocol overhead.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from codedfarm.errors import ProtocolError, RedisUnavailableError
from codedfarm.redis_conn import mask_url, redis_from_url

__all__ = ["Channel", "Entry", "open_redis"]

HEARTBEAT_TTL_MS = 3000
PAYLOAD_KINDS = ("broadcast", "unicast", "placement", "model", "control")


def open_redis(url: str) -> redis.Redis:
    """A client for ``url``, checked with PING (:class:`RedisUnavailableError` names it)."""
    try:
        client = redis_from_url(url, socket_connect_timeout=3.0, socket_keepalive=True)
        client.ping()
    except (redis.RedisError, ValueError, OSError) as exc:
        raise RedisUnavailableError(f"cannot reach Redis at {mask_url(url)}: {exc}") from exc
    return client


@dataclass(frozen=True)
class Entry:
    """A stream entry read back: its stream key, id, header and payload."""

    stream: str
    id: bytes
    header: dict[str, Any]
    payload: bytes


class Channel:
    """Broadcast, unicast and acknowledgement streams of one run, with byte counters."""

    def __init__(self, client: redis.Redis, prefix: str, ttl: float) -> None:
        self.client, self.prefix, self.ttl = client, prefix, max(1, int(ttl))
        self.counts: Counter[str] = Counter()
        self._pipe: Any = None

    @property
    def bcast(self) -> str:
        return f"{self.prefix}:bcast"

    @property
    def acks(self) -> str:
        return f"{self.prefix}:ack"

    def uni(self, k: int) -> str:
        return f"{self.prefix}:uni:{k}"

    def hb(self, k: int) -> str:
        return f"{self.prefix}:hb:{k}"

    def write(self, stream: str, header: Mapping[str, Any], payload: bytes = b"",
              kind: str = "control") -> None:  # fmt: skip
        """Append an entry to ``stream`` (buffered until :meth:`flush` when inside
        :meth:`batch`), counting ``len(payload)`` under ``kind`` and the rest as overhead."""
        head = json.dumps(header, separators=(",", ":")).encode()
        self.counts[kind] += len(payload)
        self.counts["overhead"] += len(head) + 2  # + the field names "h" and "p"
        self.counts["messages"] += 1
        target = self._pipe if self._pipe is not None else self.client.pipeline(transaction=False)
        target.xadd(stream, {"h": head, "p": payload})
        target.expire(stream, self.ttl)
        if self._pipe is None or len(target) >= 256:
            target.execute()

    def batch(self) -> Channel:
        """Buffer writes in one pipeline until :meth:`flush`."""
        self._pipe = self.client.pipeline(transaction=False)
        return self

    def flush(self) -> None:
        if self._pipe is not None:
            self._pipe.execute()
            self._pipe = None

    def read(self, cursors: dict[str, bytes], block_ms: int = 200, count: int = 512
             ) -> list[Entry]:  # fmt: skip
        """New entries of the streams in ``cursors`` (stream -> last id read, advanced in
        place), waiting up to ``block_ms`` for the first."""
        found: Any = self.client.xread(dict(cursors), count=count, block=block_ms)  # type: ignore[arg-type]
        entries = []
        for stream, items in found or []:
            name = stream.decode() if isinstance(stream, bytes) else str(stream)
            for entry_id, fields in items:
                cursors[name] = entry_id
                try:
                    header = json.loads(fields[b"h"])
                except (KeyError, ValueError) as exc:
                    raise ProtocolError(f"malformed shuffle message in {name}: {exc}") from exc
                entries.append(Entry(name, entry_id, header, bytes(fields.get(b"p", b""))))
        return entries

    def beat(self, k: int) -> None:
        self.client.set(self.hb(k), str(time.time()), px=HEARTBEAT_TTL_MS)

    def alive(self, k: int) -> bool:
        return bool(self.client.exists(self.hb(k)))

    def trim(self) -> None:
        """Drop the broadcast and unicast entries already read (between epochs)."""
        pipe = self.client.pipeline(transaction=False)
        for key in self.client.scan_iter(match=f"{self.prefix}:*"):
            if self.client.type(key) == b"stream" and not key.endswith(b":ack"):
                pipe.xtrim(key, maxlen=0)
        pipe.execute()

    def cleanup(self) -> int:
        """Delete every key of the run; returns how many there were."""
        keys = list(self.client.scan_iter(match=f"{self.prefix}:*"))
        return int(self.client.delete(*keys)) if keys else 0
