"""Fidelity and latency experiments (no Redis needed; the same codec objects as the farm)."""

from codedfarm.evaluation.toy import CodecComparison, compare_codecs

__all__ = ["CodecComparison", "compare_codecs"]
