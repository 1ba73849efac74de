"""Set up prometheus_client's multiprocess mode. Imports no prometheus_client on purpose:
the library reads ``PROMETHEUS_MULTIPROC_DIR`` once, when it is first imported."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

__all__ = ["prepare_multiprocess_dir"]


def prepare_multiprocess_dir() -> Path:
    """A fresh, empty directory for the samples of every process, exported in the environment."""
    if "prometheus_client" in sys.modules:
        raise RuntimeError(
            "prometheus_client was imported before its multiprocess directory was set"
        )
    path = Path(tempfile.mkdtemp(prefix="codedfarm-metrics-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    return path
