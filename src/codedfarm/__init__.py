"""codedfarm: a straggler-resilient prediction-serving farm built on coded computing.

>>> from codedfarm import BatchSpec, FarmClient
>>> with FarmClient() as farm:                  # settings from CODEDFARM_* variables
...     result = farm.submit(x, BatchSpec(model="lenet5", codec="spline", n=24, s=4))

The public face is the names in ``__all__``; everything else is reachable through the
subpackages (``codedfarm.codecs``, ``codedfarm.protocol``, ...). Importing ``codedfarm``
imports neither Celery nor torch: the names below load their modules on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from codedfarm.errors import (
    BatchFailedError,
    BatchTimeoutError,
    CodecError,
    CodecParameterError,
    CodedFarmError,
    CollectorUnavailableError,
    ConfigError,
    DatasetUnavailableError,
    FarmUnavailableError,
    InjectedFailure,
    InputError,
    InputWarning,
    MessageRefusedError,
    ModelConfigError,
    ModelUnavailableError,
    NonFiniteError,
    NotEnoughResultsError,
    NoWorkerError,
    PayloadTooLargeError,
    ProtocolError,
    QueueFullError,
    RedisUnavailableError,
    ShapeError,
    StragglerSpecError,
    UnknownCodecError,
    UnknownModelError,
    WorkerSetError,
)

if TYPE_CHECKING:
    from codedfarm.codecs import Codec, make_codec
    from codedfarm.coordinator import BatchResult, BatchSpec, FarmClient
    from codedfarm.protocol import BatchRecord
    from codedfarm.settings import Settings

__version__ = "0.2.0"

__all__ = [
    "BatchFailedError",
    "BatchRecord",
    "BatchResult",
    "BatchSpec",
    "BatchTimeoutError",
    "Codec",
    "CodecError",
    "CodecParameterError",
    "CodedFarmError",
    "CollectorUnavailableError",
    "ConfigError",
    "DatasetUnavailableError",
    "FarmClient",
    "FarmUnavailableError",
    "InjectedFailure",
    "InputError",
    "InputWarning",
    "MessageRefusedError",
    "ModelConfigError",
    "ModelUnavailableError",
    "NoWorkerError",
    "NonFiniteError",
    "NotEnoughResultsError",
    "PayloadTooLargeError",
    "ProtocolError",
    "QueueFullError",
    "RedisUnavailableError",
    "Settings",
    "ShapeError",
    "StragglerSpecError",
    "UnknownCodecError",
    "UnknownModelError",
    "WorkerSetError",
    "__version__",
    "make_codec",
]

_LAZY = {
    "BatchRecord": "codedfarm.protocol",
    "BatchResult": "codedfarm.coordinator",
    "BatchSpec": "codedfarm.coordinator",
    "FarmClient": "codedfarm.coordinator",
    "Settings": "codedfarm.settings",
    "Codec": "codedfarm.codecs",
    "make_codec": "codedfarm.codecs",
}


def __getattr__(name: str) -> Any:
    """Load the face's heavier names (numpy, redis, the codecs) on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'codedfarm' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
