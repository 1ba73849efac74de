"""One table from the error tree to HTTP status codes, and the protocol's error bodies.

The first row whose class the error is an instance of gives its status (so subclasses come
before their bases). A :class:`~codedfarm.errors.CodedFarmError` in no row is the server's
own failure, 500; so is any other exception, which is logged once with its traceback under
an error id that the client's body names (``{"error": ..., "error_id": ...}``), so a
report can be matched to the log. Nothing else maps to 400: a client error is an
:class:`~codedfarm.errors.InputError`, raised where the request is read.

A request no route takes is answered here too, in the same JSON (:func:`answer_http`): 404
for a path the server does not have, 405 for a method its path does not take, and
:data:`UNSUPPORTED` for a route of a listed extension that the farm does not offer.
"""

from __future__ import annotations

import logging
import uuid

from codedfarm.errors import (
    BatchFailedError,
    BatchTimeoutError,
    CodedFarmError,
    FarmUnavailableError,
    InputError,
    ModelConfigError,
    PayloadTooLargeError,
    UnknownModelError,
)

__all__ = ["OUTCOME_BY_STATUS", "STATUS_BY_ERROR", "UNSUPPORTED", "ErrorAnswer", "answer_error",
           "answer_http", "status_of"]  # fmt: skip

log = logging.getLogger("codedfarm.serve")

STATUS_BY_ERROR: tuple[tuple[type[CodedFarmError], int], ...] = (
    (PayloadTooLargeError, 413),  # before InputError, its base
    (InputError, 400),  # the request: JSON, tensor, shape, datatype, NaN
    (UnknownModelError, 404),  # no such model or version
    (ModelConfigError, 404),  # the model's config.json is broken: it cannot be served
    (FarmUnavailableError, 503),  # Redis, workers, a full queue: retry later
    (BatchTimeoutError, 504),  # before BatchFailedError, its base
    (BatchFailedError, 500),  # the workers failed the group
)
"""Error class -> HTTP status, most specific first; anything else is a 500."""

OUTCOME_BY_STATUS = {200: "ok", 400: "bad_request", 404: "not_found", 413: "too_large",
                     503: "unavailable", 504: "timeout"}  # fmt: skip
"""The ``outcome`` label of ``codedfarm_server_request_seconds`` (else ``error``)."""

UNSUPPORTED = 501
"""A route of a listed extension that the farm does not offer (the model repository's load
and unload): Triton answers its UNSUPPORTED error with 501 too."""

_ERROR_ID = "_codedfarm_error_id"  # set on an exception once it has been logged


def status_of(exc: BaseException) -> int:
    """The HTTP status an exception is answered with."""
    for cls, status in STATUS_BY_ERROR:
        if isinstance(exc, cls):
            return status
    return 500


class ErrorAnswer:
    """A status and the protocol's JSON body for an error."""

    def __init__(self, status: int, body: dict[str, str]) -> None:
        self.status = status
        self.body = body


def answer_error(exc: BaseException) -> ErrorAnswer:
    """The answer for ``exc``. A 500 carries an error id; an unexpected exception (not a
    :class:`CodedFarmError`) is logged with its traceback, once even when it fails every
    request of a coding group (they share the exception and so its id)."""
    status = status_of(exc)
    if status != 500:
        return ErrorAnswer(status, {"error": str(exc)})
    error_id = getattr(exc, _ERROR_ID, None)
    if error_id is None:
        error_id = uuid.uuid4().hex[:12]
        setattr(exc, _ERROR_ID, error_id)
        if isinstance(exc, CodedFarmError):
            log.error("error %s: %s", error_id, exc)
        else:
            log.error("error %s: unexpected %s", error_id, type(exc).__name__, exc_info=exc)
    message = str(exc) if isinstance(exc, CodedFarmError) else "internal server error"
    return ErrorAnswer(500, {"error": f"{message} (error id {error_id})", "error_id": error_id})


def answer_http(status: int, method: str, path: str, allow: str = "", detail: str = "") -> (
    ErrorAnswer
):  # fmt: skip
    """The answer to a request that no route handler answered (Starlette's routing raised
    ``status``): 404, no such path; 405, ``method`` is not one of ``allow``; any other status
    (:data:`UNSUPPORTED`) carries its ``detail``. Never logged: they are the client's."""
    if status == 404:
        message = (f"no route {method} {path}: the server answers the Open Inference "
                   "Protocol under /v2 (docs/serve.md, 'The protocol') and /metrics")  # fmt: skip
    elif status == 405:
        message = f"method {method} is not allowed on {path}; allowed: {allow or 'none'}"
    else:
        message = detail or f"{method} {path}: status {status}"
    return ErrorAnswer(status, {"error": message})
