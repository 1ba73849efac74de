"""Chaos under steady load, bounded to about a minute: SIGKILLed engines of both kinds, a
SIGSTOPped worker, a killed collector service, a Redis restart and poison messages. Every
batch ends with an outcome, none fails or times out, every decoded answer is the codec's
decode of the results it used, and every process is alive at the end."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from codedfarm.cli import cli
from codedfarm.local.chaos import FAULTS, ChaosConfig, run_chaos


@pytest.mark.slow
@pytest.mark.timeout(240)  # 45 s of load by design, plus the farm's start and stop: 61 s here
def test_chaos_under_load_loses_and_fails_nothing(settings, capsys):
    report = run_chaos(ChaosConfig(seconds=45.0, every=3.5), settings, echo=lambda _: None)
    with capsys.disabled():
        summary = {k: v for k, v in report.to_dict().items() if k not in ("config", "faults")}
        print("\nchaos: " + json.dumps(summary))
    assert {fault for _, fault in report.faults} == set(FAULTS)
    assert report.batches > 100
    assert set(report.outcomes) <= {"decoded", "deadline_decoded"}, report.outcomes
    assert report.refused == [], report.refused[:3]
    assert report.replay_mismatches == [] and report.worst_replay_error < 1e-3
    assert report.dead_processes == []


def test_soak_chaos_refuses_an_unknown_fault_cleanly():
    from codedfarm.errors import ConfigError
    from codedfarm.settings import Settings

    with pytest.raises(ConfigError, match="unknown fault 'meteor'"):
        run_chaos(ChaosConfig(seconds=1, faults=("meteor",)), Settings())
    result = CliRunner().invoke(cli, ["soak", "--help"])
    assert "--chaos" in result.output
