"""Workers: run the model on coded inputs and report the outputs.

Two engines serve the same Celery task messages from the same queues: ``celery`` (a Celery
worker with its pools) and ``batch`` (one process, many tasks per Redis round trip and per
forward pass). What they share is in :mod:`codedfarm.worker.core`; :func:`run_worker`
starts either. Importing this package imports neither Celery nor torch.
"""

from codedfarm.worker.launch import run_worker
from codedfarm.worker.options import WorkerOptions

__all__ = ["WorkerOptions", "run_worker"]
