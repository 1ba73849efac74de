"""The Open Inference Protocol's JSON tensors (pure: no server, no farm)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from codedfarm.errors import InputError
from codedfarm.models.catalog import ModelInfo
from codedfarm.server.oip import (
    index_request,
    infer_request,
    infer_response,
    model_metadata,
    parse_infer_request,
    repository_index,
)

SHAPE = (1, 2, 2)


def body(data: object, shape: object = (2, 1, 2, 2), datatype: str = "FP32", **extra: object):
    tensor = {"name": "input__0", "shape": list(shape) if isinstance(shape, tuple) else shape,
              "datatype": datatype, "data": data}  # fmt: skip
    return {"inputs": [tensor], **extra}


@given(st.lists(st.floats(-1e6, 1e6, width=32), min_size=8, max_size=8))
def test_flat_and_nested_data_give_the_same_float32_batch(values):
    flat = parse_infer_request(body(values, id="r1"), SHAPE)
    nested = np.asarray(values, np.float32).reshape(2, 1, 2, 2).tolist()
    again = parse_infer_request(body(nested), SHAPE)
    assert flat.x.dtype == np.float32 and flat.x.shape == (2, *SHAPE)
    np.testing.assert_array_equal(flat.x, again.x)
    assert flat.id == "r1" and again.id is None


@pytest.mark.parametrize("datatype", ["FP64", "INT64", "UINT8", "FP16"])
def test_other_numeric_datatypes_are_converted_to_float32(datatype):
    request = parse_infer_request(body([0, 1, 2, 3], shape=(1, 1, 2, 2), datatype=datatype), SHAPE)
    assert request.x.dtype == np.float32
    np.testing.assert_array_equal(request.x.ravel(), [0, 1, 2, 3])


@pytest.mark.parametrize(
    ("request_body", "message"),
    [
        ([], "must be a JSON object"),
        ({}, "missing 'inputs'"),
        ({"inputs": []}, "one input tensor, got 0"),
        (body([0] * 8, shape=(2, 1, 4)), "the model takes [B, 1, 2, 2]"),
        (body([0] * 4, shape=(1, 1, 2, 2), datatype="BYTES"), "datatype BYTES is not served"),
        (body([0] * 4, shape=(1, 1, 2, 2), datatype="BOOL"), "datatype BOOL is not served"),
        (body([0] * 7), "7 values for shape [2, 1, 2, 2]"),
        (body([0.0, float("nan"), 0, 0], shape=(1, 1, 2, 2)), "NaN or infinite"),
        (body(["a", "b", "c", "d"], shape=(1, 1, 2, 2)), "data is not a tensor"),
        (body([], shape=(0, 1, 2, 2)), "B >= 1"),
        (body([[0, 0, 0, 0]], shape=(1, 1, 2, 2)), "nested as [1, 4]"),
        (body([0] * 4, shape="1,1,2,2"), "'shape' has the wrong type"),
        (body([0] * 4, shape=(1, 1, 2, 2), id=7), "'id' must be a string"),
        (body([0] * 4, shape=(1, 1, 2, 2), outputs=[{"name": "logits"}]), "unknown output"),
        (body([1e39] * 4, shape=(1, 1, 2, 2)), "NaN or infinite"),  # overflows float32
    ],
)
def test_bad_requests_are_input_errors_that_name_the_problem(request_body, message):
    with pytest.raises(InputError) as info:
        parse_infer_request(request_body, SHAPE)
    assert message in str(info.value)


def test_response_and_metadata_follow_the_protocol():
    y = np.arange(6, dtype=np.float32).reshape(2, 3)
    response, tail = infer_response("lenet5", None, "r9", y, "output__0")
    assert tail == b"" and response == {  # a zoo model has no version: none is reported
        "model_name": "lenet5", "id": "r9",
        "outputs": [{"name": "output__0", "datatype": "FP32", "shape": [2, 3],
                     "data": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]}],
    }  # fmt: skip
    versioned = infer_response("m", 3, None, y, "output__0")[0]
    assert "id" not in versioned and versioned["model_version"] == "3"
    binary, raw = infer_response("m", 3, None, y, "output__0", binary=True)
    assert (
        binary["outputs"][0]["parameters"] == {"binary_data_size": 24}
        and "data" not in (binary["outputs"][0])
    )
    np.testing.assert_array_equal(np.frombuffer(raw, "<f4").reshape(2, 3), y)


def test_binary_tensor_data_is_read_after_the_json_header():
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    tensor = {"name": "input__0", "shape": [2, 1, 2, 2], "datatype": "FP32",
              "parameters": {"binary_data_size": 32}}  # fmt: skip
    request = parse_infer_request({"inputs": [tensor], "parameters": {"binary_data_output": True}},
                                  SHAPE, x.tobytes())  # fmt: skip
    np.testing.assert_array_equal(request.x, x)
    assert request.binary_output
    with pytest.raises(InputError, match="binary_data_size 32 does not match"):
        parse_infer_request({"inputs": [tensor]}, SHAPE, x.tobytes()[:16])
    with pytest.raises(InputError, match="left over"):
        parse_infer_request({"inputs": [tensor]}, SHAPE, x.tobytes() + b"1234")
    nan = np.full((2, 1, 2, 2), np.nan, np.float32).tobytes()
    with pytest.raises(InputError, match="NaN"):
        parse_infer_request({"inputs": [tensor]}, SHAPE, nan)
    meta = model_metadata("mymodel", [1, 2], (1, 32, 32), (10,))
    assert meta["versions"] == ["1", "2"]
    assert "versions" not in model_metadata("lenet5", [], (1, 32, 32), (10,))  # a zoo model
    assert meta["inputs"] == [{"name": "input__0", "datatype": "FP32", "shape": [-1, 1, 32, 32]}]
    assert meta["outputs"][0]["shape"] == [-1, 10]


def test_a_request_built_by_infer_request_parses_back_to_its_inputs():
    x = np.arange(8, dtype=np.float32).reshape(2, 1, 2, 2)
    parsed = parse_infer_request(infer_request(x, "r2"), SHAPE)
    np.testing.assert_array_equal(parsed.x, x)
    assert parsed.id == "r2" and not parsed.binary_output


def _info(name: str, source: str, versions: tuple[int, ...], ready: bool, status: str):
    return ModelInfo(name, source, "", versions, (1,), (1,), "", ready, status)


def test_the_repository_index_has_an_entry_per_version_and_none_for_the_zoo():
    """Triton's model repository index: a version only where there is one; a zoo model is
    servable by name whatever the server's own cache holds (its weights are the workers')."""
    models = [
        _info("affine", "repository", (1, 3), True, "ready (highest version 3)"),
        _info("empty", "repository", (), False, "no version yet: codedfarm models add ..."),
        _info("lenet5", "zoo", (), False, "not prepared: run `codedfarm models prepare`"),
    ]
    index = repository_index(models)
    assert index == [
        {"name": "affine", "version": "1", "state": "READY", "reason": ""},
        {"name": "affine", "version": "3", "state": "READY", "reason": ""},
        {"name": "empty", "state": "UNAVAILABLE",
         "reason": "no version yet: codedfarm models add ..."},
        {"name": "lenet5", "state": "READY", "reason": ""},
    ]  # fmt: skip
    assert repository_index(models, ready=True) == [index[0], index[1], index[3]]


@pytest.mark.parametrize(
    ("raw", "ready"), [(b"", False), (b"  ", False), (b"{}", False), (b'{"ready": true}', True)]
)
def test_an_index_request_may_be_empty_or_ask_for_ready_models_only(raw, ready):
    assert index_request(raw) is ready


@pytest.mark.parametrize(
    ("raw", "message"),
    [(b"{", "not JSON"), (b"[]", "JSON object"), (b'{"ready": 1}', "'ready' must be true")],
)
def test_a_bad_index_request_is_an_input_error(raw, message):
    with pytest.raises(InputError, match=message):
        index_request(raw)
