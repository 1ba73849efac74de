"""``codedfarm serve``: the Open Inference Protocol (KServe v2, REST) in front of the farm.

The HTTP stack is Starlette (routing, requests, responses) under uvicorn (HTTP/1.1 with
keep-alive, and a graceful shutdown on SIGTERM: requests in flight are answered first).
Both are maintained and small; an async server holds thousands of waiting requests as
coroutines, not threads. FastAPI's model validation is not needed: :mod:`.oip` checks the
tensors itself, with the protocol's error messages.

This module is the thin HTTP boundary: the route handlers below read the server's
:class:`~.farm.Farm` from ``request.app.state``, :mod:`.oip` frames and parses bodies, and
:mod:`.status` maps every error to its status code (400 for a request the model cannot
take, 413 for a body over the limit, 404 for an unknown model or version, 503 when the
farm is not ready or the model's queue is full, 504 when the deadline passes without a
decode, 500 otherwise, with an error id); the body is ``{"error": "..."}`` as the
protocol says, on every route: a path the server does not have (404) and a method its path
does not take (405) too, instead of Starlette's plain text.

Besides the core protocol it implements three of Triton's extensions, listed by ``GET /v2``
(:data:`EXTENSIONS`): binary tensor data (:mod:`.oip`), the model repository's index
(``POST /v2/repository/index``; load and unload are not offered: the repository is read at
every lookup, so a new version is served at once) and statistics (:mod:`.statistics`).
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import secrets
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from codedfarm.errors import FarmUnavailableError, QueueFullError
from codedfarm.logs import bind_request_id
from codedfarm.models.catalog import describe_models
from codedfarm.models.resolve import ResolvedModel
from codedfarm.redis_conn import connect
from codedfarm.server.access_log import AccessLog
from codedfarm.server.farm import Farm, ServeConfig
from codedfarm.server.oip import (
    index_request,
    infer_response,
    model_metadata,
    parse_infer_request,
    read_body,
    read_infer_body,
    repository_index,
)
from codedfarm.server.statistics import models_served, statistics_response
from codedfarm.server.status import OUTCOME_BY_STATUS, UNSUPPORTED, answer_error, answer_http
from codedfarm.settings import Settings

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = ["EXTENSIONS", "ServeConfig", "create_app", "serve"]

log = logging.getLogger("codedfarm.serve")

Handler = Callable[["Request"], Awaitable["Response"]]

EXTENSIONS = ("binary_tensor_data", "model_repository", "statistics")
"""The protocol extensions the server implements, by Triton's names (``GET /v2``)."""
MAX_REQUEST_ID = 128  # characters of a request's id its group's tasks carry (for the logs)
INDEX_BODY_LIMIT = 1 << 16  # bytes: a repository index request is {"ready": true} at most


def _json(body: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    from starlette.responses import Response

    return Response(json.dumps(body), status, headers=headers, media_type="application/json")


def _farm(request: Request) -> Farm:
    farm: Farm = request.app.state.farm
    return farm


def answering_errors(fn: Handler) -> Handler:
    """``fn`` with every exception answered by the status table (:mod:`.status`)."""

    async def endpoint(request: Request) -> Response:
        from starlette.requests import ClientDisconnect

        try:
            return await fn(request)
        except ClientDisconnect:  # not an error of the server's: the caller counts it
            raise
        except Exception as exc:  # mapped by class; an unexpected one is a logged 500
            answer = answer_error(exc)
            return _json(answer.body, answer.status)

    endpoint.__name__ = fn.__name__
    return endpoint


@answering_errors
async def live(request: Request) -> Response:
    return _json({"live": True})


@answering_errors
async def ready(request: Request) -> Response:
    farm = _farm(request)
    try:
        await farm.blocking(farm.check_ready)
    except FarmUnavailableError as exc:
        return _json({"ready": False, "error": str(exc)}, 503)
    return _json({"ready": True})


@answering_errors
async def server_metadata(request: Request) -> Response:
    from importlib.metadata import version

    return _json({"name": "codedfarm", "version": version("codedfarm"),
                  "extensions": list(EXTENSIONS)})  # fmt: skip


async def _model(request: Request) -> ResolvedModel:
    farm = _farm(request)
    name, version = request.path_params["name"], request.path_params.get("version")
    model: ResolvedModel = await farm.blocking(farm.model, name, version)
    return model


@answering_errors
async def metadata(request: Request) -> Response:
    farm = _farm(request)
    model = await _model(request)
    versions = await farm.blocking(farm.versions, model)
    return _json(model_metadata(model.name, versions, model.input_shape, model.output_shape))


@answering_errors
async def model_ready(request: Request) -> Response:
    farm = _farm(request)
    model = await _model(request)
    try:
        await farm.blocking(farm.check_ready)
    except FarmUnavailableError as exc:
        return _json({"name": model.name, "ready": False, "error": str(exc)}, 503)
    return _json({"name": model.name, "ready": True})


@answering_errors
async def _infer(request: Request) -> Response:
    farm = _farm(request)
    model = await _model(request)
    coding = farm.coding(model)  # the codec used and its label: one resolution
    request.state.labels.update(model=model.name, codec=coding.codec)
    farm.metrics.in_flight.labels(model.name).inc()
    body, binary = await read_infer_body(
        request.stream(),
        content_length=request.headers.get("content-length"),
        header_length=request.headers.get("inference-header-content-length"),
        limit=farm.config.max_body_bytes,
    )
    parsed = parse_infer_request(body, model.input_shape, binary)
    if parsed.id:  # the request's own id names it in every log line of its group
        request.state.request_id = parsed.id[:MAX_REQUEST_ID]
        bind_request_id(request.state.request_id)
    try:
        y = await coding.queue.infer(parsed.x, request.state.request_id)
    except QueueFullError:
        farm.metrics.rejected.labels(model.name, "queue_full").inc()
        raise
    except FarmUnavailableError:
        farm.metrics.rejected.labels(model.name, "not_ready").inc()
        raise
    answer, tail = infer_response(model.name, model.version, parsed.id, y,
                                  parsed.output_name, parsed.binary_output)  # fmt: skip
    if not parsed.binary_output:
        return _json(answer)
    from starlette.responses import Response

    head = json.dumps(answer).encode()
    return Response(head + tail, media_type="application/octet-stream",
                    headers={"Inference-Header-Content-Length": str(len(head))})  # fmt: skip


async def infer(request: Request) -> Response:
    """The infer route, measured: latency by model, codec and outcome, and in flight. A
    client that leaves before its body is read is counted, not logged as an error."""
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response

    farm = _farm(request)
    request.state.labels = labels = {"model": "unknown", "codec": ""}  # set by _infer
    # its id: the body's "id" (read by _infer), else the X-Request-ID header, else a new one
    given = request.headers.get("x-request-id", "")[:MAX_REQUEST_ID]
    request.state.request_id = request_id = given or secrets.token_hex(8)
    bind_request_id(request_id)
    start = time.perf_counter()
    try:
        response = await _infer(request)
    except ClientDisconnect:  # raised by request.stream(); nobody is left to answer
        log.debug("a client disconnected before its request was read: %s", request.url.path)
        farm.metrics.disconnects.labels(labels["model"]).inc()
        response = Response(status_code=499)  # nginx's "client closed request"; never sent
    finally:
        if labels["model"] != "unknown":
            farm.metrics.in_flight.labels(labels["model"]).dec()
    outcome = OUTCOME_BY_STATUS.get(response.status_code, "error")
    if response.status_code == 499:
        outcome = "disconnected"
    farm.metrics.request(labels["model"], labels["codec"], outcome, time.perf_counter() - start)
    response.headers["x-request-id"] = request.state.request_id
    return response


@answering_errors
async def index(request: Request) -> Response:
    """The model repository extension's index: the repository's models, then the zoo's."""
    farm = _farm(request)
    raw = await read_body(request.stream(), content_length=request.headers.get("content-length"),
                          limit=INDEX_BODY_LIMIT)  # fmt: skip
    ready = index_request(raw)
    models = await farm.blocking(describe_models, farm.settings.cache_dir,
                                 farm.settings.model_repository)  # fmt: skip
    return _json(repository_index(models, ready))


async def load_or_unload(request: Request) -> Response:
    from starlette.exceptions import HTTPException

    raise HTTPException(UNSUPPORTED, (
        "models are not loaded or unloaded through the server: the model repository is read "
        "at every lookup (a new version is served at once), and workers load a model on its "
        "first task or at start (codedfarm worker --preload)"))  # fmt: skip


@answering_errors
async def model_stats(request: Request) -> Response:
    """The statistics extension for one model (all its versions: see :mod:`.statistics`)."""
    model = await _model(request)  # an unknown model or version: 404
    return _json(statistics_response(_farm(request).metrics, [model.name]))


@answering_errors
async def all_stats(request: Request) -> Response:
    """The statistics extension for every model this server has been asked for."""
    metrics = _farm(request).metrics
    return _json(statistics_response(metrics, models_served(metrics)))


async def http_error(request: Request, exc: Exception) -> Response:
    """A request no route handler answered (Starlette raised it: 404, 405) or a route of a
    listed extension that is not offered (501): the protocol's JSON error, not plain text."""
    from starlette.exceptions import HTTPException

    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    answer = answer_http(exc.status_code, request.method, request.url.path,
                         allow=headers.get("Allow", ""), detail=exc.detail)  # fmt: skip
    return _json(answer.body, answer.status, headers)


@answering_errors
async def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST
    from starlette.responses import Response

    return Response(_farm(request).metrics.exposition(), media_type=CONTENT_TYPE_LATEST)


def create_app(settings: Settings, config: ServeConfig) -> Any:
    """The ASGI application (Starlette) serving ``settings``' farm."""
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.routing import Route

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        app.state.farm = farm = Farm(settings, config)
        try:  # say at once what readiness waits for, not only when a probe asks
            await farm.blocking(farm.check_ready)
        except FarmUnavailableError as exc:
            log.warning("not ready yet (/v2/health/ready answers 503 until then): %s", exc)
        gc.collect()  # what startup imported is not garbage: later collections skip it
        gc.freeze()
        try:
            yield
        finally:
            await farm.close()

    models = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", live),
        Route("/v2/health/ready", ready),
        Route("/livez", live),  # the probes' names on every codedfarm process
        Route("/readyz", ready),
        Route("/v2", server_metadata),
        Route("/v2/repository/index", index, methods=["POST"]),
        *(Route(f"/v2/repository/models/{{name}}/{verb}", load_or_unload, methods=["POST"])
          for verb in ("load", "unload")),
        Route("/v2/models/stats", all_stats),  # before the model named "stats"
        *(Route(base, metadata) for base in (models, versioned)),
        *(Route(f"{base}/ready", model_ready) for base in (models, versioned)),
        *(Route(f"{base}/infer", infer, methods=["POST"]) for base in (models, versioned)),
        *(Route(f"{base}/stats", model_stats) for base in (models, versioned)),
        Route("/metrics", metrics),
    ]  # fmt: skip
    from starlette.middleware import Middleware

    middleware = [Middleware(AccessLog)] if config.access_log else []
    return Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                     exception_handlers={HTTPException: http_error})  # fmt: skip


def serve(settings: Settings, config: ServeConfig) -> None:
    """Run the server until SIGTERM or SIGINT (uvicorn answers requests in flight first)."""
    import uvicorn

    connect(settings).close()  # an unreachable Redis is a clear error now, not per request
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the
    # handler it found: make that a no-op, so a requested stop exits with status 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # uvicorn logs through codedfarm's setup (log_config=None: no handlers of its own), at
    # the process's level; its info lines say when and where it listens. Its access log is
    # off: codedfarm's (access_log.py, --access-log) has the time taken and request id.
    uvicorn.run(create_app(settings, config), host=config.host, port=config.port,
                log_config=None, log_level=logging.getLogger().level, access_log=False,
                timeout_graceful_shutdown=30)  # fmt: skip
