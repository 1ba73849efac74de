"""The one exception tree of codedfarm.

Every error the package raises on purpose is a :class:`CodedFarmError`; the CLI turns
any of them into a one-line message and exit code 2.

Exception hierarchy::

    CodedFarmError
    ├── ConfigError                 bad settings, options or environment values
    └── CodecError                  misuse of a codec (names the codec, parameter, shapes)
        ├── CodecParameterError     k, n, degree, lambda ... out of range
        │   └── UnknownCodecError   no codec of that name
        ├── ShapeError              wrong leading dimension, mismatched lengths
        ├── WorkerSetError          repeated or out-of-range worker ids
        ├── NotEnoughResultsError   fewer results than the code can decode from
        └── NonFiniteError          NaN or Inf in inputs or results
"""

from __future__ import annotations

__all__ = [
    "CodecError",
    "CodecParameterError",
    "CodedFarmError",
    "ConfigError",
    "NonFiniteError",
    "NotEnoughResultsError",
    "ShapeError",
    "UnknownCodecError",
    "WorkerSetError",
]


class CodedFarmError(Exception):
    """Root of every error codedfarm raises on purpose."""


class ConfigError(CodedFarmError):
    """A setting, option or environment value is invalid."""


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
