"""The Open Inference Protocol's (KServe v2) JSON tensors, read and written.

A request body ``{"id": ..., "inputs": [{"name", "shape", "datatype", "data"}], ...}``
becomes one float32 array ``(B, *input_shape)`` for a model that takes ``input_shape``;
``data`` may be flat (row-major) or nested as ``shape``, or the tensor's raw bytes may
follow the JSON (the binary tensor data extension: ``Inference-Header-Content-Length``
gives the JSON's length, ``parameters.binary_data_size`` each tensor's bytes), which is
what Triton's clients send by default; outputs come back the same way when asked. The
model repository extension's index is written here too (:func:`repository_index`).
``FP32`` is served as is; ``FP64``, ``FP16`` and the integer types are converted to float32
(the farm's models take float32).
Anything else is an :class:`~codedfarm.errors.InputError` that names the field, which the
server turns into the protocol's ``400 {"error": ...}``.

Reference: https://kserve.github.io/website/latest/modelserving/data_plane/v2_protocol/
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from codedfarm.errors import InputError, PayloadTooLargeError
from codedfarm.models.catalog import ModelInfo
from codedfarm.protocol.tensors import tensor_from_bytes, tensor_from_data

__all__ = [
    "CONVERTIBLE",
    "InferRequest",
    "index_request",
    "infer_request",
    "infer_response",
    "model_metadata",
    "parse_infer_request",
    "read_body",
    "read_infer_body",
    "repository_index",
]

CONVERTIBLE = {
    "FP32": np.float32,
    "FP64": np.float64,
    "FP16": np.float16,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
}
"""Tensor datatypes the server accepts; every one is served as float32."""

INPUT_NAME = "input__0"  # Triton's names for a PyTorch model's one input and one output
OUTPUT_NAME = "output__0"


@dataclass(frozen=True)
class InferRequest:
    """One parsed infer request: ``x`` float32 ``(B, *input_shape)``, the ``id`` to echo and
    the requested output name."""

    x: np.ndarray
    id: str | None
    output_name: str
    binary_output: bool = False  # answer with the binary tensor data extension


def _field(mapping: Mapping[str, Any], name: str, kind: type | tuple[type, ...], where: str) -> Any:
    if name not in mapping:
        raise InputError(f"{where}: missing '{name}'")
    value = mapping[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise InputError(f"{where}: '{name}' has the wrong type ({type(value).__name__})")
    return value


def parse_infer_request(
    body: object, input_shape: Sequence[int], binary: bytes = b""
) -> InferRequest:
    """The request ``body`` (parsed JSON) for a model whose one input has ``input_shape``
    (without the batch dimension); ``binary``: the bytes after the JSON header of the binary
    tensor data extension. Raises :class:`InputError` for anything not servable."""
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    request_id = body.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise InputError("'id' must be a string")
    inputs = _field(body, "inputs", list, "request")
    if len(inputs) != 1 or not isinstance(inputs[0], dict):
        raise InputError(f"the model takes one input tensor, got {len(inputs)}")
    tensor = inputs[0]
    where = f"input '{tensor.get('name', '?')}'"
    _field(tensor, "name", str, where)
    datatype = _field(tensor, "datatype", str, where)
    if datatype not in CONVERTIBLE:
        raise InputError(f"{where}: datatype {datatype} is not served; use one of "
                         f"{', '.join(CONVERTIBLE)}")  # fmt: skip
    shape = _field(tensor, "shape", list, where)
    if not shape or not all(type(d) is int and d >= 0 for d in shape):
        raise InputError(f"{where}: shape must be a list of sizes, got {shape}")
    expected = (shape[0], *input_shape)
    if tuple(shape) != expected or shape[0] < 1:
        raise InputError(f"{where}: shape {shape}, the model takes [B, "
                         f"{', '.join(map(str, input_shape))}] with B >= 1")  # fmt: skip
    size = _parameters(tensor, where).get("binary_data_size")
    if size is not None:
        x = tensor_from_bytes(binary, size, shape, CONVERTIBLE[datatype], where)
    else:
        data = _field(tensor, "data", list, where)
        x = tensor_from_data(data, shape, CONVERTIBLE[datatype], where)
    binary_output = bool(_parameters(body, "request").get("binary_data_output", False))
    outputs = body.get("outputs")
    output_name = OUTPUT_NAME
    if outputs is not None:
        if not isinstance(outputs, list) or len(outputs) != 1 or not isinstance(outputs[0], dict):
            raise InputError("'outputs' must list the model's one output")
        output_name = _field(outputs[0], "name", str, "requested output")
        if output_name != OUTPUT_NAME:
            raise InputError(f"unknown output '{output_name}'; the model has '{OUTPUT_NAME}'")
        binary_output = bool(_parameters(outputs[0], "requested output").get("binary_data"))
    return InferRequest(x, request_id, output_name, binary_output)


def _parameters(mapping: Mapping[str, Any], where: str) -> Mapping[str, Any]:
    parameters = mapping.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InputError(f"{where}: 'parameters' must be a JSON object")
    return parameters


def infer_request(x: np.ndarray, request_id: str | None = None) -> dict[str, Any]:
    """A request body (as JSON would carry it) for inputs ``x`` ``(B, *input_shape)``, FP32:
    the other half of :func:`parse_infer_request`, for clients and tests."""
    x = np.asarray(x, np.float32)
    tensor = {"name": INPUT_NAME, "shape": list(x.shape), "datatype": "FP32",
              "data": x.ravel().tolist()}  # fmt: skip
    body: dict[str, Any] = {"inputs": [tensor]}
    if request_id is not None:
        body["id"] = request_id
    return body


def infer_response(
    model: str,
    version: int | None,
    request_id: str | None,
    y: np.ndarray,
    output_name: str,
    binary: bool = False,
) -> tuple[dict[str, Any], bytes]:
    """The response for outputs ``y`` ``(B, *output_shape)``: its JSON and, with ``binary``
    (the binary tensor data extension), the raw float32 bytes that follow it (else b"")."""
    y = np.asarray(y, np.float32)
    output: dict[str, Any] = {"name": output_name, "datatype": "FP32", "shape": list(y.shape)}
    raw = b""
    if binary:
        raw = y.astype("<f4", copy=False).tobytes()
        output["parameters"] = {"binary_data_size": len(raw)}
    else:
        output["data"] = y.ravel().tolist()
    response: dict[str, Any] = {"model_name": model}
    if version is not None:  # a repository model's; a zoo model has none (optional field)
        response["model_version"] = str(version)
    response["outputs"] = [output]
    if request_id is not None:
        response["id"] = request_id
    return response, raw


def model_metadata(
    model: str,
    versions: Sequence[int],
    input_shape: Sequence[int],
    output_shape: Sequence[int],
) -> dict[str, Any]:
    """``GET /v2/models/{name}``: one FP32 input and output, ``-1`` for the batch dimension;
    ``versions`` (optional in the protocol) only for a repository model: a zoo model has none."""
    meta: dict[str, Any] = {"name": model}
    if versions:
        meta["versions"] = [str(v) for v in versions]
    meta["platform"] = "pytorch_torchscript"
    meta["inputs"] = [{"name": INPUT_NAME, "datatype": "FP32", "shape": [-1, *input_shape]}]
    meta["outputs"] = [{"name": OUTPUT_NAME, "datatype": "FP32", "shape": [-1, *output_shape]}]
    return meta


def index_request(raw: bytes) -> bool:
    """``POST /v2/repository/index``'s body (the model repository extension): empty, as
    Triton's clients send it, or ``{"ready": bool}`` (optional; default false). Returns
    ``ready``: list only the models ready for inference."""
    if not raw.strip():
        return False
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise InputError("the request body must be a JSON object")
    ready = body.get("ready", False)
    if not isinstance(ready, bool):
        raise InputError(f"'ready' must be true or false, got {ready!r}")
    return ready


def repository_index(models: Iterable[ModelInfo], ready: bool = False) -> list[dict[str, str]]:
    """The model repository extension's index of ``models`` (as ``codedfarm models`` lists
    them): a repository model's every version ``READY``; a repository model without a
    version or with a broken ``config.json`` ``UNAVAILABLE``, its status the reason; a zoo
    model ``READY`` without a version (it has none; its weights are the workers', which the
    server cannot see). ``ready``: only the ``READY`` ones."""
    entries: list[dict[str, str]] = []
    for info in models:
        if info.source == "zoo":
            entries.append({"name": info.name, "state": "READY", "reason": ""})
        elif info.versions:
            entries += [{"name": info.name, "version": str(v), "state": "READY", "reason": ""}
                        for v in info.versions]  # fmt: skip
        else:
            entries.append({"name": info.name, "state": "UNAVAILABLE", "reason": info.status})
    return [e for e in entries if e["state"] == "READY"] if ready else entries


async def read_body(chunks: AsyncIterator[bytes], *, content_length: str | None, limit: int) -> (
    bytes
):  # fmt: skip
    """A request's body, at most ``limit`` bytes: refused from its ``Content-Length`` when it
    has one, else as soon as the chunks read pass it (a chunked body), with
    :class:`PayloadTooLargeError`."""
    if content_length is not None and content_length.isdigit() and int(content_length) > limit:
        raise PayloadTooLargeError(f"the body is {content_length} bytes, over the limit of {limit}")
    parts, seen = [], 0
    async for chunk in chunks:
        seen += len(chunk)
        if seen > limit:
            raise PayloadTooLargeError(f"the body is over the limit of {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def read_infer_body(
    chunks: AsyncIterator[bytes],
    *,
    content_length: str | None,
    header_length: str | None,
    limit: int,
) -> tuple[object, bytes]:
    """An infer request's body, framed: its JSON (parsed) and the binary tensor data after
    it. ``content_length`` and ``header_length`` are the ``Content-Length`` and
    ``Inference-Header-Content-Length`` headers (None when absent); ``limit`` bytes. A body
    over the limit is refused from its header when it has one, else as soon as the chunks
    read pass it (a chunked body): :class:`PayloadTooLargeError`; a bad header or a body that
    is not JSON: :class:`InputError`."""
    raw = await read_body(chunks, content_length=content_length, limit=limit)
    json_size = len(raw)
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(raw):
            raise InputError(f"Inference-Header-Content-Length {header_length!r} does not fit "
                             f"a body of {len(raw)} bytes")  # fmt: skip
        json_size = int(header_length)
    try:
        body = json.loads(raw[:json_size])
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"the body is not JSON: {exc}") from exc
    return body, raw[json_size:]
