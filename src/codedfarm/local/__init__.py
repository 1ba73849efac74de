"""Things that run processes on this machine: a private Redis, a farm of worker processes,
``scale``, and the live-farm experiments (``demo``, ``bench``, ``soak``)."""

from codedfarm.local.farm import LocalFarm
from codedfarm.local.redis_server import LocalRedis

__all__ = ["LocalFarm", "LocalRedis"]
