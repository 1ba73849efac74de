"""codedfarm: a straggler-resilient prediction-serving farm built on coded computing."""

from codedfarm.errors import CodedFarmError

__all__ = ["CodedFarmError", "__version__"]

__version__ = "0.1.0"
