"""One resolution of a batch's settings: the precedence (a submit flag beats the model's
config.json, which beats serve's flags, which beat the farm's settings, which beat the
codec's defaults), once per batch, for every way in."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codedfarm.codecs import DEFAULT_CODEC, available_codecs, plan_codec
from codedfarm.coordinator import BatchDefaults, BatchSettings, BatchSpec, resolve_batch
from codedfarm.errors import CodecError, ConfigError, InputError
from codedfarm.models.resolve import resolve_model
from codedfarm.settings import Settings


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository model whose config.json sets codec, n and deadline (not s)."""
    model = tmp_path / "mine"
    (model / "1").mkdir(parents=True)
    (model / "1" / "model.pt").write_bytes(b"never loaded by the resolver")
    (model / "config.json").write_text(json.dumps({
        "input_shape": [4], "output_shape": [2],
        "serving": {"codec": "berrut", "n": 12, "deadline": 2.5}}))  # fmt: skip
    return tmp_path


def settings_for(repo: Path) -> Settings:
    return Settings(model_repository=repo, deadline=9.0, queues=("farmq",))


def test_a_submit_flag_beats_the_models_config_json(repo):
    got = resolve_batch(BatchSpec(model="mine", codec="spline", n=16, deadline=1.0), 4,
                        settings_for(repo))  # fmt: skip
    assert (got.plan.spec, got.n, got.deadline) == ("spline", 16, 1.0)
    assert got.model.ref == "mine@1"


def test_the_models_config_json_beats_the_farms_settings_and_the_codec(repo):
    got = resolve_batch(BatchSpec(model="mine"), 4, settings_for(repo))
    assert (got.plan.spec, got.n, got.s, got.deadline) == ("berrut", 12, 0, 2.5)
    assert got.wait_for == 12 and got.queues == ("farmq",)


def test_the_models_config_json_beats_serves_flags_field_by_field(repo):
    flags = BatchDefaults(codec="mds", n=24, s=4, deadline=3.0, queues=("srv",), wait_for=None)
    got = resolve_batch(BatchSpec(model="mine"), 4, settings_for(repo), defaults=flags)
    assert (got.plan.spec, got.n, got.s, got.deadline) == ("berrut", 12, 4, 2.5)
    assert got.queues == ("srv",) and got.wait_for == 8
    zoo = resolve_batch(BatchSpec(model="linear"), 4, settings_for(repo), defaults=flags)
    assert (zoo.plan.spec, zoo.n, zoo.s, zoo.deadline) == ("mds", 24, 4, 3.0)


def test_nothing_set_takes_the_farms_and_the_codecs_defaults():
    got = resolve_batch(BatchSpec(model="lenet5"), 8, Settings(deadline=7.0))
    assert got.plan.spec == DEFAULT_CODEC and got.plan.default_n(8, 0) == got.n == 24
    assert (got.s, got.wait_for, got.deadline, got.queues) == (0, 24, 7.0, ("cpu",))


def test_a_resolved_model_is_not_resolved_again(monkeypatch):
    """The server passes its (cached) model and the client passes BatchSettings: nothing
    downstream reads the model's config.json again."""
    import codedfarm.coordinator.dispatch as dispatch
    import codedfarm.coordinator.resolution as resolution
    from codedfarm.coordinator.dispatch import Dispatcher

    model = resolve_model("linear")
    calls: list[str] = []

    def counting(ref: str, repository: object = None) -> object:
        calls.append(ref)
        return model

    monkeypatch.setattr(resolution, "resolve_model", counting)
    monkeypatch.setattr(dispatch, "resolve_model", counting)
    settings = resolve_batch(BatchSpec(model="linear"), 3, Settings(), model=model)
    prepared = Dispatcher(Settings(), client=None).prepare(  # type: ignore[arg-type]
        np.zeros((3, 1, 32, 32), np.float32), settings
    )
    assert calls == [] and prepared.settings is settings and prepared.k == 3
    Dispatcher(Settings(), client=None).prepare(  # type: ignore[arg-type]
        np.zeros((3, 1, 32, 32), np.float32), BatchSpec(model="linear")
    )
    assert calls == ["linear"]  # a spec: resolved once, here
    with pytest.raises(InputError, match="2 inputs, its settings k=3"):
        Dispatcher(Settings(), client=None).prepare(  # type: ignore[arg-type]
            np.zeros((2, 1, 32, 32), np.float32), settings
        )


@pytest.mark.parametrize(
    ("spec", "k", "error", "message"),
    [
        (BatchSpec(model="linear", s=-1), 8, ConfigError, "s (stragglers to tolerate)"),
        (BatchSpec(model="linear", n=0), 8, ConfigError, "n must be an integer in"),
        (BatchSpec(model="linear", n=4, s=4), 2, ConfigError, "s must be < n"),
        (BatchSpec(model="linear", codec="mds", n=10, s=4), 8, CodecError, "too large"),
        (BatchSpec(model="linear", wait_for=30), 8, ConfigError, "wait_for must be in"),
        (BatchSpec(model="linear", deadline=1e6), 8, ConfigError, "deadline must be in"),
        (BatchSpec(model="linear", queues=("a:b",)), 8, ConfigError, "queues"),
        (BatchSpec(model="linear", queues=()), 8, ConfigError, "queues"),
        (BatchSpec(model="linear", codec="nope"), 8, CodecError, "unknown codec"),
        (BatchSpec(model="linear"), 0, ConfigError, "k (inputs in the batch)"),
    ],
)
def test_bad_settings_are_refused_with_the_field_named(spec, k, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        resolve_batch(spec, k, Settings())


def test_the_settings_are_one_frozen_value():
    got = resolve_batch(BatchSpec(model="linear", straggle="fixed:S=2,delay=1", seed=3), 4,
                        Settings())  # fmt: skip
    assert isinstance(got, BatchSettings) and len(got.fates or ()) == got.n
    assert [s["index"] for s in got.slowed] == [
        s["index"] for s in resolve_batch(BatchSpec(model="linear", straggle="fixed:S=2,delay=1",
                                                    seed=3), 4, Settings()).slowed
    ]  # fmt: skip
    with pytest.raises(AttributeError):
        got.n = 3  # type: ignore[misc]


@given(
    codec=st.sampled_from(sorted(set(available_codecs()) - {"letcc"})),
    k=st.integers(1, 8),
    n=st.integers(1, 32),
    s=st.integers(0, 8),
)
def test_every_code_fits_any_budget_the_server_may_give_it(codec, k, n, s):
    """What a codec makes of a worker budget is a fact of the codec: uncoded takes one task
    per input and no straggler, replication whole copies, parm a parity (or copy) per row
    at most and one at least, the others the budget as it is."""
    plan = plan_codec(codec)
    fitted_n, fitted_s = plan.fit_workers(k, max(n, k), s)
    assert fitted_s <= s
    if codec == "parm":
        assert fitted_n == k + min(max(n - k, 1), k) and fitted_s <= fitted_n - k
        plan.codec(k, fitted_n, fitted_s)  # a valid layout
    elif plan.exact_for_any_model:
        assert fitted_n % k == 0 and fitted_s < fitted_n
        assert plan.default_wait_for(k, fitted_n, fitted_s) == k  # one result per input
    else:
        assert (fitted_n, fitted_s) == (max(n, k), s)


@pytest.mark.parametrize(
    ("k", "redundancy", "n", "s"),
    [(8, 1.5, 12, 4), (8, 1.25, 10, 2), (8, 2.0, 16, 8), (1, 1.5, 2, 1), (1, 1.0, 2, 1),
     (3, 1.5, 5, 2), (10, 1.1, 11, 1), (4, 1.0, 5, 1)],
)  # fmt: skip
def test_a_redundancy_budget_gives_each_group_its_tasks(k, redundancy, n, s):
    """r rows get r + max(1, ceil((R-1) r)) tasks and tolerate losing all but r of them; a
    lone row gets its task and one copy."""
    got = resolve_batch(BatchSpec(model="linear", codec="berrut", redundancy=redundancy), k,
                        Settings())  # fmt: skip
    assert (got.n, got.s, got.wait_for) == (n, s, k)


def test_n_and_s_win_over_a_redundancy_and_the_highest_layer_sets_the_budget(repo):
    settings = settings_for(repo)
    got = resolve_batch(BatchSpec(model="mine", redundancy=1.5, s=1), 8, settings)
    assert (got.n, got.s) == (12, 1)  # the spec's R beats the config.json's n; its s stays
    got = resolve_batch(BatchSpec(model="mine", n=20, redundancy=1.5), 8, settings)
    assert got.n == 20  # n beats R in the same layer
    got = resolve_batch(BatchSpec(model="linear"), 8, settings,
                        defaults=BatchDefaults(redundancy=1.25))  # fmt: skip
    assert (got.n, got.s) == (10, 2)  # serve's --redundancy
    got = resolve_batch(BatchSpec(model="mine"), 8, settings,
                        defaults=BatchDefaults(redundancy=1.25))  # fmt: skip
    assert got.n == 12  # the config.json's n beats serve's --redundancy


@pytest.mark.parametrize("bad", [0.5, 0.99, float("nan"), True, "1.5"])
def test_a_redundancy_below_one_is_refused(bad):
    with pytest.raises(ConfigError, match="redundancy must be a number >= 1"):
        resolve_batch(BatchSpec(model="linear", redundancy=bad), 8, Settings())


def test_a_config_json_redundancy_is_validated(tmp_path):
    from codedfarm.errors import ModelConfigError
    from codedfarm.models.config import parse_model_config

    base = {"input_shape": [4], "output_shape": [2]}
    good = parse_model_config(tmp_path, {**base, "serving": {"redundancy": 1.5}})
    assert good.serving.redundancy == 1.5
    with pytest.raises(ModelConfigError, match=r"serving\.redundancy"):
        parse_model_config(tmp_path, {**base, "serving": {"redundancy": 0.5}})


def test_serves_hedging_reaches_every_group_and_its_copies_straggle_like_the_first():
    flags = BatchDefaults(codec="uncoded", hedge_after=0.2, straggle="fail:p=0.5")
    got = resolve_batch(BatchSpec(model="linear", seed=4), 8, Settings(), defaults=flags)
    assert got.hedge_after == 0.2 and got.fates is not None and got.hedge_plan is not None
    assert len(got.hedge_plan) == got.n == 8
    assert [f.fail for f in got.hedge_plan] != [f.fail for f in got.fates]  # a second draw
    again = resolve_batch(BatchSpec(model="linear", seed=4), 8, Settings(), defaults=flags)
    assert again.hedge_plan == got.hedge_plan  # seeded: the same copies' fates
    with pytest.raises(ConfigError, match="hedge_after must be in"):
        resolve_batch(BatchSpec(model="linear"), 8, Settings(deadline=1.0),
                      defaults=BatchDefaults(hedge_after=2.0))  # fmt: skip
