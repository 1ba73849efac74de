"""``python -m codedfarm.shuffle`` < worker-config.json: one shuffle worker process (what
:func:`codedfarm.shuffle.run_shuffle` starts; the config as :class:`.worker.WorkerConfig`
JSON on stdin)."""

from codedfarm.shuffle.worker import main

main()
