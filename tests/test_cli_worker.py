"""`codedfarm worker` and `codedfarm collector` refuse bad options with one line and exit 2."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from codedfarm.cli import cli


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["worker", "--device", "tpu"], "--device must be cpu, cuda or cuda:N, got 'tpu'"),
        (["worker", "--device", "cuda:x"], "--device must be cpu, cuda or cuda:N"),
        (["worker", "--preload", "resnet"], "unknown model 'resnet'"),
        (["worker", "--straggle", "fixed:S=1,delay=1"], "give it per submit, not per worker"),
        (["worker", "--straggle", "exp:shift=1"], "needs shift, rate; missing rate"),
        (["worker", "--engine", "batch", "--pool", "solo"], "--pool is for --engine celery"),
        (["worker", "--corrupt", "large:p=3"], "--corrupt: large needs p in (0, 1]"),
        (["worker", "--corrupt", "noisy"], "--corrupt: unknown mode 'noisy'"),
        (["--redis-url", "redis://127.0.0.1:1/0", "worker"],
         "cannot reach Redis at redis://127.0.0.1:1/0"),
        (["--redis-url", "redis://127.0.0.1:1/0", "collector", "--metrics-port", "0"],
         "cannot reach Redis at redis://127.0.0.1:1/0"),
        (["--redis-url", "http://example", "collector", "--metrics-port", "0"],
         "cannot reach Redis at http://example"),
        (["serve", "--codec", "nope"], "unknown codec 'nope'"),
        (["serve", "--straggle", "exp:shift=1"], "needs shift, rate; missing rate"),
        (["serve", "--group-size", "16", "--max-queue", "8"], "max_queue must be >= group_size"),
        (["--redis-url", "redis://127.0.0.1:1/0", "serve"],
         "cannot reach Redis at redis://127.0.0.1:1/0"),
        (["loadgen", "--url", "localhost:8000"], "--url must start with http:// or https://"),
        (["probe", "localhost:9809/readyz"], "the probe URL must start with http:// or https://"),
    ],
)  # fmt: skip
def test_bad_options_of_the_farm_commands_exit_2_or_3(args, message):
    result = CliRunner().invoke(cli, args)
    # 3: the farm (Redis) is unavailable; 2: a bad call
    assert result.exit_code == (3 if "cannot reach Redis" in message else 2), result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [(["serve", "--wait", "0"], "Invalid value for '--wait'"),
     (["serve", "--straggle-seed", "x"], "Invalid value for '--straggle-seed'"),
     (["probe", "--timeout", "0"], "Invalid value for '--timeout'")],
)  # fmt: skip
def test_out_of_range_values_are_usage_errors(args, message):
    """click's own checks: exit 2 and its usage message, no traceback."""
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_cuda_device_without_a_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    result = CliRunner().invoke(cli, ["worker", "--device", "cuda:0"])
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: --device cuda:0: no CUDA device is available on this machine"
    )


def test_worker_options_round_trip_through_the_command_line():
    """`local/` starts workers from a WorkerOptions; the CLI must rebuild the same object."""
    from codedfarm.worker import WorkerOptions

    options = WorkerOptions(
        queues=("a", "b"), engine="batch", concurrency=7, device="cpu", slowdown=2.0,
        straggle="exp:shift=0.1,rate=5", preload=("lenet5", "noop"), torch_threads=2,
        metrics_port=0, hostname="w1@here", loglevel="info", events=True, corrupt="subtle:p=0.5",
    )  # fmt: skip
    seen: list[WorkerOptions] = []

    def fake_run(settings: object, received: WorkerOptions) -> int:
        seen.append(received)
        return 0

    import codedfarm.worker as worker_pkg

    argv = options.argv()
    argv = argv[argv.index("worker") :]  # after "python -m codedfarm"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker_pkg, "run_worker", fake_run)
        result = CliRunner().invoke(cli, argv)
    assert result.exit_code == 0, result.output
    assert seen == [options]
    assert WorkerOptions.from_dict(options.to_dict()) == options


def test_the_celery_app_is_built_on_first_access_not_at_import(monkeypatch):
    from celery.app.utils import find_app

    import codedfarm.worker.celery_engine as engine
    from codedfarm.protocol import INFER_TASK

    monkeypatch.setenv("CODEDFARM_REDIS_URL", "redis://127.0.0.1:1/3")
    monkeypatch.setattr(engine, "_app", None)
    app = find_app("codedfarm.worker.celery_engine")  # what `celery -A ...` does
    assert app is engine.app and INFER_TASK in app.tasks
    assert app.conf.broker_url == "redis://127.0.0.1:1/3"
    assert app.conf.accept_content == ["json"] and app.conf.task_acks_late


def test_the_default_engine_is_the_batch_engine():
    """`codedfarm worker` with no --engine runs the batch engine; --engine celery stays."""
    from codedfarm.worker import WorkerOptions

    seen: list[WorkerOptions] = []

    def fake_run(settings: object, received: WorkerOptions) -> int:
        seen.append(received)
        return 0

    import codedfarm.worker as worker_pkg

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(worker_pkg, "run_worker", fake_run)
        for argv in (["worker"], ["worker", "--engine", "celery", "-E"]):
            result = CliRunner().invoke(cli, argv)
            assert result.exit_code == 0, result.output
    assert [(o.engine, o.events) for o in seen] == [("batch", False), ("celery", True)]
    assert WorkerOptions().engine == "batch"


def test_celery_engine_argv_keeps_worker_heartbeats_and_adds_task_events():
    from codedfarm.worker import WorkerOptions
    from codedfarm.worker.launch import celery_argv

    plain = celery_argv(WorkerOptions(engine="celery"))
    assert "--without-heartbeat" not in plain and "--task-events" not in plain
    assert "--task-events" in celery_argv(WorkerOptions(engine="celery", events=True))
