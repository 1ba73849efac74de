"""Key names in Redis: everything the farm writes lives under one prefix, with a TTL.

Keys of batch ``B`` (prefix ``P``)::

    P:b:B:in      the N coded inputs, one contiguous blob (worker j reads its slice)
    P:b:B:ref     a fidelity-sampled batch's K raw inputs (reference tasks n..n+k-1)
    P:b:B:out     hash: coded index j -> the worker's output bytes
    P:b:B:reply   list: the collector's reply (record + predictions) for the client
    P:inbox:NAME  list: batch registrations and completion notices for one collector
    P:open:NAME   hash: batch -> registration, for every open batch of collector service
                  NAME (written with the batch, deleted with its reply): a restarted
                  collector finishes them
    P:wake:NAME   list: a batch-engine worker's private wake-up alarm
    P:live:queue:Q      sorted set: the live workers of queue Q, scored by their last beat
    P:live:collectors   sorted set: the live collector services, likewise

Worker queues are kombu's lists, named after the queue (see :mod:`codedfarm.protocol.celery_wire`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Keys"]


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix."""

    prefix: str = "cf"

    def inputs(self, batch: str) -> str:
        return f"{self.prefix}:b:{batch}:in"

    def reference(self, batch: str) -> str:
        return f"{self.prefix}:b:{batch}:ref"

    def outputs(self, batch: str) -> str:
        return f"{self.prefix}:b:{batch}:out"

    def reply(self, batch: str) -> str:
        return f"{self.prefix}:b:{batch}:reply"

    def inbox(self, name: str) -> str:
        return f"{self.prefix}:inbox:{name}"

    def open_batches(self, collector: str) -> str:
        return f"{self.prefix}:open:{collector}"

    def wake(self, worker: str) -> str:
        return f"{self.prefix}:wake:{worker}"

    def live_workers(self, queue: str) -> str:
        return f"{self.prefix}:live:queue:{queue}"

    def live_collectors(self) -> str:
        return f"{self.prefix}:live:collectors"

    def records(self) -> str:
        """Finished batches' records relayed by in-process collectors to the service."""
        return f"{self.prefix}:records"
