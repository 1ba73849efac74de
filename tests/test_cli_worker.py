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
        (["--redis-url", "redis://127.0.0.1:1/0", "worker"],
         "cannot reach Redis at redis://127.0.0.1:1/0"),
        (["--redis-url", "redis://127.0.0.1:1/0", "collector", "--metrics-port", "0"],
         "cannot reach Redis at redis://127.0.0.1:1/0"),
        (["--redis-url", "http://example", "collector", "--metrics-port", "0"],
         "cannot reach Redis at http://example"),
    ],
)  # fmt: skip
def test_bad_worker_and_collector_options_exit_2(args, message):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert len(result.output.strip().splitlines()) == 1
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
