"""The HTTP boundary's one error map: each error class has its status, an internal error is
a 500 with an error id whose traceback is logged once, never a 400."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from codedfarm import errors
from codedfarm.errors import ConfigError
from codedfarm.server.batcher import BatcherConfig
from codedfarm.server.oip import infer_request
from codedfarm.server.status import STATUS_BY_ERROR, answer_error, status_of

# Starlette's TestClient runs the app in-process (lifespan included); it warns that it will
# move from httpx to httpx2, which is not a behaviour of ours
pytestmark = pytest.mark.filterwarnings(
    "ignore:Using `httpx` with `starlette.testclient` is deprecated"
)


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (errors.InputError("bad tensor"), 400),
        (errors.PayloadTooLargeError("too big"), 413),
        (errors.UnknownModelError("no such model"), 404),
        (errors.ModelConfigError("broken config.json"), 404),
        (errors.QueueFullError("full"), 503),
        (errors.NoWorkerError("no worker"), 503),
        (errors.RedisUnavailableError("no redis"), 503),
        (errors.BatchTimeoutError("deadline"), 504),
        (errors.BatchFailedError("workers failed"), 500),
        (errors.ConfigError("s must be < n"), 500),  # the server's settings, not the request
        (errors.CodecParameterError("k"), 500),
        (ValueError("unexpected array size"), 500),  # a library's error is never a 400
        (RuntimeError("a bug"), 500),
    ],
)
def test_every_error_class_has_one_status(error, status):
    assert status_of(error) == status


def test_the_table_lists_subclasses_before_their_bases():
    for i, (cls, _) in enumerate(STATUS_BY_ERROR):
        for later, _ in STATUS_BY_ERROR[i + 1 :]:
            assert not issubclass(later, cls), f"{later.__name__} is shadowed by {cls.__name__}"


def test_an_error_shared_by_a_groups_requests_is_logged_once_under_one_id(caplog):
    error = RuntimeError("one failure, three requests")
    with caplog.at_level(logging.ERROR, logger="codedfarm.serve"):
        answers = [answer_error(error) for _ in range(3)]
    assert {a.status for a in answers} == {500}
    ids = {a.body["error_id"] for a in answers}
    assert len(ids) == 1 and ids.pop() in answers[0].body["error"]
    assert len([r for r in caplog.records if r.exc_info]) == 1
    assert "one failure" not in answers[0].body["error"]  # internals stay in the log


def test_a_4xx_answer_carries_the_message_and_logs_nothing(caplog):
    with caplog.at_level(logging.DEBUG, logger="codedfarm.serve"):
        answer = answer_error(errors.InputError("input 'x': shape [1, 3]"))
    assert (answer.status, answer.body) == (400, {"error": "input 'x': shape [1, 3]"})
    assert caplog.records == []


def _post_one_row(settings, config, caplog):
    from starlette.testclient import TestClient

    from codedfarm.server.app import create_app

    app = create_app(settings, config)
    body = infer_request(np.zeros((1, 1, 32, 32), np.float32))
    with caplog.at_level(logging.DEBUG, logger="codedfarm.serve"), TestClient(app) as client:
        return client.post("/v2/models/linear/infer", json=body)


def test_a_codec_failing_inside_a_served_group_is_a_500_with_an_error_id(
    settings, monkeypatch, caplog
):
    """The group fails before anything is dispatched (its encode raises the kind of error
    numpy raises): the client gets 500 with an error id, the log its traceback once."""
    from codedfarm.codecs.berrut import BerrutCodec
    from codedfarm.server.farm import ServeConfig

    def broken_encode(self, x, *, out=None):
        raise ValueError("unexpected array size")

    monkeypatch.setattr(BerrutCodec, "encode", broken_encode)
    config = ServeConfig(codec="berrut", clients=1, batcher=BatcherConfig(group_size=2))
    response = _post_one_row(settings, config, caplog)
    assert response.status_code == 500, response.text
    body = response.json()
    assert body["error_id"] and body["error_id"] in body["error"]
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1
    assert body["error_id"] in tracebacks[0].getMessage()
    assert "unexpected array size" in caplog.text and "broken_encode" in caplog.text


def test_a_stragglers_budget_for_a_full_group_fits_a_lone_row():
    """-s 4 at the default redundancy: a lone row gets its task and one parity (n=2), so
    its group tolerates what its workers allow (1), not a 400 or 500 per request."""
    from codedfarm.models.resolve import resolve_model
    from codedfarm.server.farm import ServeConfig, group_settings
    from codedfarm.settings import Settings

    for codec in ("spline", "berrut:systematic=true", "mds", "replication", "uncoded"):
        for rows in range(1, 9):
            got = group_settings(Settings(), ServeConfig(codec=codec, s=4), resolve_model("linear"),
                                 rows)  # fmt: skip
            assert got.s < got.n and got.codec.min_results <= got.wait_for <= got.n


def test_impossible_serve_settings_are_refused_when_configured():
    from codedfarm.server.farm import ServeConfig

    with pytest.raises(ConfigError, match="n must be >= the group size"):
        ServeConfig(n=4)  # a full group of 8 rows cannot have fewer tasks than rows
    with pytest.raises(ConfigError, match="s must be < n"):
        ServeConfig(n=8, s=8)
    with pytest.raises(ConfigError, match="redundancy must be >= 1"):
        ServeConfig(redundancy=0.9)
