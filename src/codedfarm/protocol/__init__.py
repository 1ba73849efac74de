"""What travels through Redis: key names, the farm's JSON messages, Celery's wire format.

Nothing in this package imports Celery, kombu, Redis or torch: it is the contract both
sides (coordinator and worker) build on.
"""

from codedfarm.protocol.celery_wire import (
    INFER_TASK,
    Envelope,
    priority_list,
    queue_keys,
    read_envelope,
    task_envelope,
)
from codedfarm.protocol.keys import Keys
from codedfarm.protocol.messages import (
    ALLOWED_DTYPES,
    BatchRegistration,
    Notice,
    TaskMessage,
    array_from_bytes,
    as_bytes,
    pack_frame,
    parse_inbox_message,
    unpack_frame,
)
from codedfarm.protocol.records import (
    OUTCOMES,
    TIMELINE_STAGES,
    BatchRecord,
    CriticalStamps,
    StageTimings,
    read_reply_frame,
    reply_frame,
)

__all__ = [
    "ALLOWED_DTYPES",
    "INFER_TASK",
    "OUTCOMES",
    "TIMELINE_STAGES",
    "BatchRecord",
    "BatchRegistration",
    "CriticalStamps",
    "Envelope",
    "Keys",
    "Notice",
    "StageTimings",
    "TaskMessage",
    "array_from_bytes",
    "as_bytes",
    "pack_frame",
    "parse_inbox_message",
    "priority_list",
    "queue_keys",
    "read_envelope",
    "read_reply_frame",
    "reply_frame",
    "task_envelope",
    "unpack_frame",
]
