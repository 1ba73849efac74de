"""The one exception tree of codedfarm.

Every error the package raises on purpose is a :class:`CodedFarmError`; the CLI turns
any of them into a one-line message and exit code 2, or 3 for a :class:`FarmUnavailableError`
(the farm cannot serve now: scripts can tell a broken farm from a bad call).

Exception hierarchy::

    CodedFarmError
    ├── ConfigError                 bad settings, options or environment values
    │   ├── UnknownModelError       no model of that name (or no such version)
    │   ├── ModelConfigError        a model repository's config.json that is invalid
    │   ├── ModelUnavailableError   a model that cannot be served now (not prepared,
    │   │                           missing or corrupt file, load error, wrong shape)
    │   ├── StragglerSpecError      a straggler spec that does not parse
    │   └── DatasetUnavailableError a data set that cannot be downloaded or found
    ├── InputError                  a batch the farm cannot serve (file, shape, NaN, size)
    │   └── PayloadTooLargeError    a request body over the server's limit (HTTP 413)
    ├── FarmUnavailableError        the farm cannot serve now (exit code 3)
    │   ├── RedisUnavailableError   Redis cannot be reached (names the URL)
    │   ├── NoWorkerError           no live worker serves a queue of the batch
    │   ├── CollectorUnavailableError  no live collector service of that name
    │   └── QueueFullError          too many rows wait for a model in `serve` (HTTP 503)
    ├── BatchFailedError            the farm answered a batch without predictions (HTTP 500)
    │   └── BatchTimeoutError       ... because its deadline passed first (HTTP 504)
    ├── InjectedFailure             a task failed on purpose (the `fail:p=P` straggler model)
    ├── ProtocolError               a malformed task, notice or batch message
    │   └── MessageRefusedError     a queue message a worker will not run (pickle, ...)
    └── CodecError                  misuse of a codec (names the codec, parameter, shapes)
        ├── CodecParameterError     k, n, degree, lambda ... out of range
        │   └── UnknownCodecError   no codec of that name
        ├── ShapeError              wrong leading dimension, mismatched lengths
        ├── WorkerSetError          repeated or out-of-range worker ids
        ├── NotEnoughResultsError   fewer results than the code can decode from
        └── NonFiniteError          NaN or Inf in inputs or results

Warnings (``warnings.warn``; the CLI prints them as ``warning: ...``)::

    InputWarning                    a batch was converted, or a code cannot be exact for it
"""

from __future__ import annotations

__all__ = [
    "BatchFailedError",
    "BatchTimeoutError",
    "CodecError",
    "CodecParameterError",
    "CodedFarmError",
    "CollectorUnavailableError",
    "ConfigError",
    "DatasetUnavailableError",
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
    "ShapeError",
    "StragglerSpecError",
    "UnknownCodecError",
    "UnknownModelError",
    "WorkerSetError",
]


class CodedFarmError(Exception):
    """Root of every error codedfarm raises on purpose."""


class ConfigError(CodedFarmError):
    """A setting, option or environment value is invalid."""


class UnknownModelError(ConfigError):
    """No model is registered under the requested name."""


class ModelConfigError(ConfigError):
    """A model repository's ``config.json`` is missing or invalid (names the file and field)."""


class ModelUnavailableError(ConfigError):
    """A model cannot be served right now: not prepared, a missing or corrupt file, a load
    error, or outputs of the wrong shape. The message names the model and the fix."""


class StragglerSpecError(ConfigError):
    """A straggler spec does not parse or has out-of-range parameters."""


class DatasetUnavailableError(ConfigError):
    """A data set could not be downloaded or found (the evaluation's ``--dataset``)."""


class InputError(CodedFarmError):
    """A batch the farm cannot serve: unreadable file, wrong shape, NaN/Inf, too large."""


class PayloadTooLargeError(InputError):
    """A request body over the server's limit (``--max-body-bytes``)."""


class FarmUnavailableError(CodedFarmError):
    """The farm cannot serve right now (exit code 3): Redis, a worker or a collector is
    missing. Unlike bad input, trying again later may succeed."""


class RedisUnavailableError(FarmUnavailableError):
    """Redis cannot be reached; the message names the URL (password masked)."""


class NoWorkerError(FarmUnavailableError):
    """No live worker serves a queue the batch would be sent to."""


class CollectorUnavailableError(FarmUnavailableError):
    """No live collector service has the name the batch asks for."""


class QueueFullError(FarmUnavailableError):
    """Too many rows are waiting for this model in ``codedfarm serve``: try again later."""


class BatchFailedError(CodedFarmError):
    """The farm answered a batch (a coding group of ``serve``) without predictions: its
    workers failed it, or too few results could decode. The message gives the reason."""


class BatchTimeoutError(BatchFailedError):
    """A batch's deadline passed before enough results came back to decode."""


class InjectedFailure(CodedFarmError):  # noqa: N818 - reads as what happened
    """A task failed on purpose: the ``fail:p=P`` straggler model of an experiment."""


class ProtocolError(CodedFarmError):
    """A task message, completion notice or batch registration is malformed."""


class MessageRefusedError(ProtocolError):
    """A queue message a worker will not run (pickle, an unknown task, a bad body).

    ``tag`` is its kombu delivery tag, when the envelope had one (so it can be acknowledged);
    ``kind`` a short category for metrics: ``not_json``, ``bad_envelope``, ``serializer``,
    ``unknown_task``, ``bad_body`` or ``expired``.
    """

    def __init__(self, reason: str, tag: str | None = None, kind: str = "bad_body") -> None:
        super().__init__(reason)
        self.tag = tag
        self.kind = kind


class CodecError(CodedFarmError):
    """A codec was built or called with arguments it cannot work with."""


class CodecParameterError(CodecError):
    """A codec parameter (k, n, degree, lambda, ...) is out of range."""


class UnknownCodecError(CodecParameterError):
    """No codec is registered under the requested name."""


class ShapeError(CodecError):
    """An array has the wrong leading dimension, or two lengths disagree."""


class WorkerSetError(CodecError):
    """Worker ids are repeated or outside ``[0, n)``."""


class NotEnoughResultsError(CodecError):
    """Too few worker results (or a missing input copy) to decode."""


class NonFiniteError(CodecError):
    """An input or a worker result holds NaN or Inf."""


class InputWarning(UserWarning):
    """A batch was converted (uint8 images scaled to [0, 1]), or an exact code was asked for
    a model not declared of the degree it is exact for."""
