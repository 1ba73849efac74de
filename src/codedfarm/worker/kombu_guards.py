"""Guards on kombu's Redis transport, so that nothing on a queue or in Redis's state can stop
a Celery-engine worker.

kombu is patched here rather than forked: the farm keeps kombu's queues, acknowledgements
and restore sweep (the batch engine shares them), and the two failure modes below are
internal to kombu's Redis channel, with no hook to plug into.
"""

from __future__ import annotations

import json
import logging
import uuid
from queue import Empty
from typing import Any

__all__ = ["POISON_CONTENT_TYPE", "envelope_or_poison", "kombu_keys", "refuse_poison_messages",
           "survive_connection_loss"]  # fmt: skip

log = logging.getLogger(__name__)

POISON_CONTENT_TYPE = "application/x-codedfarm-refused"
"""The content type a refused message is delivered with: no worker accepts it, so Celery's
own path for undecodable messages logs it and acknowledges it (it is never run)."""


def survive_connection_loss() -> None:
    """Patch kombu's Redis QoS so a Redis restart never stops a Celery worker.

    With kombu 5.7 and late acks, a restart made the worker exit with "Unrecoverable
    error" in two ways, both seen in our fault tests:

    - when its channel closes, kombu re-queues the unacked messages, and that fails inside
      kombu ("'NoneType' object has no attribute 'hostname'"): the re-queue is switched off;
    - a task that finishes after the channel closed is acknowledged on that dead channel
      ("'NoneType' object has no attribute 'client'"): such an ack now raises a
      connection error, which Celery logs ("Couldn't ack") and survives.

    No message is lost either way: it stays in Redis's unacked set and comes back after
    the visibility timeout, as when a worker is SIGKILLed (or it went with the restart).
    """
    from kombu.transport import redis as kombu_redis

    qos = kombu_redis.QoS
    qos.restore_at_shutdown = False
    if getattr(qos, "_codedfarm_guarded", False):
        return
    for name in ("ack", "reject"):
        setattr(qos, name, _on_open_channel(getattr(qos, name)))
    setattr(qos, "_codedfarm_guarded", True)  # noqa: B010 - a class attribute kombu lacks


def _on_open_channel(method: Any) -> Any:
    import redis

    def guarded(self: Any, delivery_tag: Any, *args: Any, **kwargs: Any) -> Any:
        if self.channel.connection is None:
            raise redis.ConnectionError(
                f"channel closed: message {delivery_tag} stays unacked until it is restored"
            )
        return method(self, delivery_tag, *args, **kwargs)

    return guarded


def kombu_keys(queues: list[str] | tuple[str, ...]) -> list[str]:
    """kombu's own keys for these queues (the unacked hash and index, the bindings), which
    kombu writes without a TTL: live workers renew one on every heartbeat, so they expire
    once no worker has run for a while."""
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    return [channel.unacked_key, channel.unacked_index_key,
            *(channel.keyprefix_queue % q for q in queues)]  # fmt: skip


def envelope_or_poison(raw: bytes | str, queue: str) -> tuple[dict[str, Any], str | None]:
    """kombu's envelope from a queue message, or, for anything that is not one (not JSON,
    JSON of the wrong shape), a stand-in that Celery refuses and acknowledges. Returns the
    envelope and the reason it was refused (None: a real envelope)."""
    reason = None
    try:
        message = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        message, reason = None, "not_json"
    if reason is None:
        reason = _envelope_problem(message)
    if reason is None:
        return message, None
    tag = None
    if isinstance(message, dict) and isinstance(message.get("properties"), dict):
        candidate = message["properties"].get("delivery_tag")
        tag = candidate if isinstance(candidate, str) else None
    size = len(raw)
    log.error("refused a message on queue %s (%s, %d bytes): dropped, never run", queue,
              reason, size)  # fmt: skip
    _count(reason)
    return {
        "body": "",
        "content-encoding": "binary",
        "content-type": POISON_CONTENT_TYPE,
        "headers": {"codedfarm-refused": reason},
        "properties": {
            "delivery_tag": tag or str(uuid.uuid4()),
            "delivery_info": {"exchange": "", "routing_key": queue},
            "delivery_mode": 2,
            "priority": 0,
            "body_encoding": "base64",
        },
    }, reason


def _envelope_problem(message: object) -> str | None:
    if not isinstance(message, dict):
        return "bad_envelope"
    properties = message.get("properties")
    if not isinstance(properties, dict) or not isinstance(properties.get("delivery_tag"), str):
        return "bad_envelope"
    if not isinstance(properties.get("delivery_info", {}), dict):
        return "bad_envelope"
    if not isinstance(message.get("headers") or {}, dict):
        return "bad_envelope"
    body = message.get("body")
    if body is not None and not isinstance(body, str):
        return "bad_envelope"
    for key in ("content-type", "content-encoding"):
        if message.get(key) is not None and not isinstance(message.get(key), str):
            return "bad_envelope"
    properties.setdefault("delivery_info", {})
    return None


def _count(reason: str) -> None:
    from codedfarm.worker.state import worker_hooks

    worker_hooks().refused(reason)


def refuse_poison_messages() -> None:
    """Patch kombu's Redis channel so one bad message costs a log line, never the worker.

    kombu 5.7 decodes each message's envelope inside the consumer loop; a message that is
    not JSON (or JSON without an envelope's shape) raises there, Celery reports an
    "Unrecoverable error" and the worker stops. The patched reads hand such a message to
    Celery as an envelope of a content type nobody accepts, so it is logged, counted
    (``codedfarm_messages_refused_total``) and acknowledged instead.
    """
    from kombu.transport import redis as kombu_redis

    channel = kombu_redis.Channel
    if getattr(channel, "_codedfarm_refuses_poison", False):
        return

    def _brpop_read(self: Any, **options: Any) -> bool:
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP",
                                                        **options)  # fmt: skip
            except self.connection_errors:
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            dest = (dest.decode() if isinstance(dest, bytes) else dest).rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(dest)
            message, _ = envelope_or_poison(item, dest)
            self.connection._deliver(message, dest)
            return True
        finally:
            self._in_poll = None
            flush = getattr(self, "_flush_brpop_reauth", None)
            if flush is not None:
                flush()

    def _get(self: Any, queue: str) -> Any:
        with self.conn_or_acquire() as client:
            for pri in self.priority_steps:
                item = client.rpop(self._q_for_pri(queue, pri))
                if item:
                    self._maybe_update_queues_expire(client, queue)
                    return envelope_or_poison(item, queue)[0]
            self._maybe_update_queues_expire(client, queue)
            raise Empty()

    # the consumer loop's read and basic_get, as kombu 5.7 writes them, with the envelope
    # checked instead of json.loads
    setattr(channel, "_brpop_read", _brpop_read)  # noqa: B010
    setattr(channel, "_get", _get)  # noqa: B010
    setattr(channel, "_codedfarm_refuses_poison", True)  # noqa: B010 - kombu lacks it
