"""Single-threaded BLAS for the small matrix builds.

Decoder matrices are at most a few hundred rows: BLAS threads buy nothing there, and in
a process that also runs torch (whose OpenMP threads spin after each op) a threaded
OpenBLAS call can take 5-10x longer than a single-threaded one. Measured at k=20, n=100:
a new returned set's GCV decode took 10.7 ms with 2 BLAS threads and 1.3-1.9 ms with 1.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from threadpoolctl import ThreadpoolController

__all__ = ["single_threaded_blas"]

_controller: ThreadpoolController | None = None
_lock = threading.Lock()


@contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Limit BLAS libraries to one thread inside the block."""
    global _controller
    if _controller is None:
        with _lock:
            if _controller is None:
                _controller = ThreadpoolController()  # after numpy/scipy have loaded BLAS
    with _controller.limit(limits=1, user_api="blas"):
        yield
