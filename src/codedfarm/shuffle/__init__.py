"""Coded data shuffling (the second half of Lee et al., "Speeding Up Distributed Machine
Learning Using Codes"): a master re-deals a data set's rows to n workers every epoch over
Redis, unicast or with coded broadcasts that several workers decode from what they cache.

Schemes (docs/shuffle.md): ``uncoded``, ``lee`` (Lee et al.'s coded shuffling) and
``structured`` (the subset placement of Attia & Tandon / Elmahdy & Mohajer with coded
multicast). :func:`run_shuffle` runs one; :mod:`.theory` says what each should send.
This room imports only errors, logs, settings, redis_conn and protocol below it.
"""

from codedfarm.shuffle.config import SCHEMES, ShuffleConfig, as_rows, corner_point
from codedfarm.shuffle.master import EpochReport
from codedfarm.shuffle.run import ShuffleReport, check_shuffle, run_shuffle
from codedfarm.shuffle.theory import expected_load, shuffle_load
from codedfarm.shuffle.training import TrainSpec, training_rows

__all__ = [
    "SCHEMES",
    "EpochReport",
    "ShuffleConfig",
    "ShuffleReport",
    "TrainSpec",
    "as_rows",
    "check_shuffle",
    "corner_point",
    "expected_load",
    "run_shuffle",
    "shuffle_load",
    "training_rows",
]
