"""Offline experiments: codec fidelity on real models, lambda tuning, convergence in N, the
toy comparison and their plots. Nothing here starts Redis or worker processes (the live-farm
experiments, ``bench`` and ``soak``, are in :mod:`codedfarm.local`)."""

from codedfarm.evaluation.compare import CodecComparison, compare_codecs

__all__ = ["CodecComparison", "compare_codecs"]
