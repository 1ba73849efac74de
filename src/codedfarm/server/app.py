"""``codedfarm serve``: the Open Inference Protocol (KServe v2, REST) in front of the farm.

The HTTP stack is Starlette (routing, requests, responses) under uvicorn (HTTP/1.1 with
keep-alive, and a graceful shutdown on SIGTERM: requests in flight are answered first).
Both are maintained and small; an async server holds thousands of waiting requests as
coroutines, not threads. FastAPI's model validation is not needed: :mod:`.oip` checks the
tensors itself, with the protocol's error messages.

Single requests are coded together by :class:`~.batcher.CodingQueue` (one per model and
version). A coding group is a batch like any other: it is submitted through a
:class:`~codedfarm.coordinator.FarmClient` (a pool of them, each in its own thread, since
submitting blocks on Redis) and decoded by that client's own collector.

Status codes: 400 for a request the model cannot take, 404 for an unknown model or
version, 503 when the farm is not ready or the model's queue is full, 504 when the
deadline passes without a decode, 500 when the workers fail the batch; the body is
``{"error": "..."}`` as the protocol says.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import json
import logging
import queue
import signal
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import redis

from codedfarm.codecs import plan_codec
from codedfarm.coordinator import BatchSpec, FarmClient
from codedfarm.errors import (
    CodedFarmError,
    ConfigError,
    FarmUnavailableError,
    InputError,
    UnknownModelError,
)
from codedfarm.models.resolve import ResolvedModel, resolve_model
from codedfarm.monitoring.server_metrics import ServerMetrics
from codedfarm.redis_conn import connect
from codedfarm.server.batcher import BatcherConfig, CodingQueue, QueueFullError
from codedfarm.server.oip import infer_response, model_metadata, parse_infer_request
from codedfarm.settings import Settings

__all__ = ["ServeConfig", "create_app"]

log = logging.getLogger("codedfarm.serve")

MODEL_CACHE_S = 2.0  # how long a resolved model (config.json) is reused
DEFAULT_CODEC = "spline"  # the farm's, when neither the server nor the model sets one
OUTCOME_BY_STATUS = {200: "ok", 400: "bad_request", 404: "not_found", 503: "unavailable",
                     504: "timeout"}  # fmt: skip


@dataclass(frozen=True)
class ServeConfig:
    """What ``codedfarm serve`` runs with. ``codec``, ``n``, ``s`` and ``deadline``: the
    defaults of a model whose ``config.json`` sets none (None: the farm's)."""

    host: str = "127.0.0.1"
    port: int = 8000
    batcher: BatcherConfig = field(default_factory=BatcherConfig)
    codec: str | None = None
    n: int | None = None
    s: int | None = None
    deadline: float | None = None
    queues: tuple[str, ...] = ()  # () -> CODEDFARM_QUEUES
    wait_for: int | None = None  # results to decode at (None: N - S; replication: K)
    straggle: str | None = None  # inject stragglers into every group (experiments)
    straggle_seed: int | None = None  # group i draws its stragglers with seed + i
    max_body_bytes: int = 64 << 20
    clients: int = 16  # farm clients (threads): groups in the farm at once, every model

    def validate(self) -> ServeConfig:
        """Raise :class:`~codedfarm.errors.ConfigError` for a bad setting; returns self."""
        from codedfarm.stragglers import parse_straggler_spec

        self.batcher.validate()
        if self.codec is not None:
            plan_codec(self.codec)
        if self.straggle is not None:
            parse_straggler_spec(self.straggle)
        if self.clients < 1 or self.max_body_bytes < 1:
            raise ConfigError("need clients >= 1 and max body bytes >= 1")
        if self.wait_for is not None and self.wait_for < 1:
            raise ConfigError(f"need wait_for >= 1, got {self.wait_for}")
        return self


class HTTPStatusError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class GroupFailedError(CodedFarmError):
    """The farm answered a coding group without predictions."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Farm:
    """The server's side of the farm: resolved models, coding queues, farm clients."""

    def __init__(self, settings: Settings, config: ServeConfig) -> None:
        self.settings = settings
        self.config = config
        self.queues = config.queues or settings.queues
        self._clients: queue.SimpleQueue[FarmClient] = queue.SimpleQueue()
        for _ in range(config.clients):
            self._clients.put(FarmClient(settings))
        self._probe = FarmClient(settings)
        self._threads = ThreadPoolExecutor(config.clients + 4, thread_name_prefix="farm")
        self._models: dict[str, tuple[float, ResolvedModel]] = {}
        self._coding: dict[tuple[str, int | None], CodingQueue] = {}
        self._groups_sent = itertools.count()  # numbers the groups' straggler draws
        self.metrics = ServerMetrics()

    def codec_of(self, model: ResolvedModel) -> str:
        """The codec spec a group of ``model`` is coded with (a metrics label)."""
        return model.serving.codec or self.config.codec or DEFAULT_CODEC

    def group_spec(self, model: ResolvedModel) -> BatchSpec:
        """How ``model``'s groups are coded: its ``config.json`` serving settings first,
        then the server's flags (then the farm's defaults, in the dispatcher)."""
        serving, config = model.serving, self.config

        def first(mine: Any, default: Any) -> Any:
            return mine if mine is not None else default

        codec = first(serving.codec, config.codec)
        wait_for = config.wait_for
        if wait_for is None and plan_codec(self.codec_of(model)).name == "replication":
            wait_for = config.batcher.group_size  # the first copy of each input
        ref = model.name if model.version is None else f"{model.name}@{model.version}"
        return BatchSpec(model=ref, codec=codec, n=first(serving.n, config.n),
                         s=first(serving.s, config.s), wait_for=wait_for,
                         deadline=first(serving.deadline, config.deadline),
                         queues=self.queues, straggle=config.straggle)  # fmt: skip

    async def blocking(self, fn: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._threads, fn, *args)

    def model(self, name: str, version: str | None) -> ResolvedModel:
        """The model behind a URL (cached briefly); 404 for an unknown one."""
        ref = name if version is None else f"{name}@{version}"
        hit = self._models.get(ref)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        try:
            found = resolve_model(ref, self.settings.model_repository)
        except UnknownModelError as exc:
            raise HTTPStatusError(404, str(exc)) from exc
        except CodedFarmError as exc:  # a bad version ("@x") or a broken config.json
            raise HTTPStatusError(404, str(exc)) from exc
        self._models[ref] = (time.monotonic() + MODEL_CACHE_S, found)
        return found

    def versions(self, model: ResolvedModel) -> list[int]:
        from codedfarm.models.repository import ModelRepository

        if model.version is None or self.settings.model_repository is None:
            return []
        return ModelRepository(self.settings.model_repository).versions(model.name)

    def coding_queue(self, model: ResolvedModel) -> CodingQueue:
        key = (model.name, model.version)
        found = self._coding.get(key)
        if found is None:
            spec = self.group_spec(model)

            async def run_group(x: np.ndarray) -> np.ndarray:
                result: np.ndarray = await self.blocking(self._submit, spec, x)
                return result

            def on_group(rows: int, delay: float) -> None:
                self.metrics.group(model.name, rows, delay)

            found = self._coding[key] = CodingQueue(
                self.config.batcher, run_group, on_group=on_group
            )
        return found

    def partial_spec(self, spec: BatchSpec, rows: int) -> BatchSpec:
        """The spec of a group of ``rows`` < K rows: coded for its own size (k = rows).

        Measured against padding to K with copies of its rows (benchmarks/partial_groups.py,
        docs/serve.md): with the same N workers and S, a code for fewer rows decodes them
        far more closely (spline, 4 rows of 8: MSE 0.02 against 2.0), at the same cost. The
        codes whose N is a multiple of k change N: uncoded sends one task per row;
        replication keeps its worker budget, ``rows * (N // rows)`` tasks (the most copies
        of each row that fit in N), and decodes at the first copy of each row unless
        ``--wait`` says otherwise."""
        k = self.config.batcher.group_size
        name = plan_codec(spec.codec or DEFAULT_CODEC).name
        if rows >= k or name not in ("uncoded", "replication"):
            return spec
        if name == "uncoded":
            n = None if spec.n is None else max(1, spec.n * rows // k)
            s = None if spec.s is None else spec.s * rows // k  # < n, as s < N
            return replace(spec, n=n, s=s)
        n = None if spec.n is None else rows * max(1, spec.n // rows)
        s = spec.s if spec.s is None or n is None else min(spec.s, n - 1)
        wait_for = rows if self.config.wait_for is None else self.config.wait_for
        return replace(spec, n=n, s=s, wait_for=wait_for if n is None else min(wait_for, n))

    def _submit(self, spec: BatchSpec, x: np.ndarray) -> np.ndarray:
        spec = self.partial_spec(spec, len(x))
        if self.config.straggle_seed is not None:
            spec = replace(spec, seed=self.config.straggle_seed + next(self._groups_sent))
        client = self._clients.get()
        try:
            result = client.submit(x, spec)
        except BaseException:
            self._clients.put(client)
            raise
        # the group's inputs are deleted at once, after the answer: its straggling tasks
        # then free their worker slots (a pooled client may wait long for its next poll)
        self._threads.submit(self._release, client)
        if result.predictions is None:
            status = 504 if result.outcome == "timeout" else 500
            reason = result.record.error or "no decode"
            raise GroupFailedError(f"batch {result.outcome}: {reason}", status)
        return result.predictions

    def _release(self, client: FarmClient) -> None:
        try:
            client.flush_cleanup()
        except redis.RedisError as exc:  # the keys expire with their TTL anyway
            log.warning("could not delete a finished group's keys: %s", exc)
        finally:
            self._clients.put(client)

    def check_ready(self) -> None:
        """Raise :class:`FarmUnavailableError` unless Redis answers and every queue of the
        server has a live worker."""
        self._probe.check_farm(self.queues)  # its own client: never waits for a busy one

    async def close(self) -> None:
        for coding in self._coding.values():
            await coding.close()
        # the groups are answered; wait for their clients' cleanups (and any probe)
        await asyncio.get_running_loop().run_in_executor(None, self._threads.shutdown)
        self._probe.close()
        while not self._clients.empty():
            self._clients.get().close()


def _json(body: Any, status: int = 200) -> Any:
    from starlette.responses import Response

    return Response(json.dumps(body), status, media_type="application/json")


def _problem(status: int, message: str) -> Any:
    return _json({"error": message}, status)


def create_app(settings: Settings, config: ServeConfig) -> Any:
    """The ASGI application (Starlette) serving ``settings``' farm."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.routing import Route

    state: dict[str, Farm] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        state["farm"] = farm = Farm(settings, config)
        try:  # say at once what readiness waits for, not only when a probe asks
            await farm.blocking(farm.check_ready)
        except FarmUnavailableError as exc:
            log.warning("not ready yet (/v2/health/ready answers 503 until then): %s", exc)
        gc.collect()  # what startup imported is not garbage: later collections skip it
        gc.freeze()
        try:
            yield
        finally:
            await state["farm"].close()

    def handler(
        fn: Callable[[Request, Farm], Awaitable[Any]],
    ) -> Callable[[Request], Awaitable[Any]]:
        async def endpoint(request: Request) -> Any:
            try:
                return await fn(request, state["farm"])
            except HTTPStatusError as exc:
                return _problem(exc.status, str(exc))
            except (InputError, ValueError) as exc:
                return _problem(400, str(exc))
            except (QueueFullError, FarmUnavailableError) as exc:
                return _problem(503, str(exc))
            except GroupFailedError as exc:
                return _problem(exc.status, str(exc))
            except CodedFarmError as exc:
                return _problem(500, str(exc))

        return endpoint

    async def live(request: Request, farm: Farm) -> Any:
        return _json({"live": True})

    async def ready(request: Request, farm: Farm) -> Any:
        try:
            await farm.blocking(farm.check_ready)
        except FarmUnavailableError as exc:
            return _json({"ready": False, "error": str(exc)}, 503)
        return _json({"ready": True})

    async def server_metadata(request: Request, farm: Farm) -> Any:
        from importlib.metadata import version

        return _json({"name": "codedfarm", "version": version("codedfarm"), "extensions": []})

    def model_of(request: Request, farm: Farm) -> ResolvedModel:
        return farm.model(request.path_params["name"], request.path_params.get("version"))

    async def metadata(request: Request, farm: Farm) -> Any:
        model = await farm.blocking(model_of, request, farm)
        versions = await farm.blocking(farm.versions, model)
        return _json(model_metadata(model.name, versions, model.input_shape, model.output_shape))

    async def model_ready(request: Request, farm: Farm) -> Any:
        model = await farm.blocking(model_of, request, farm)
        try:
            await farm.blocking(farm.check_ready)
        except FarmUnavailableError as exc:
            return _json({"name": model.name, "ready": False, "error": str(exc)}, 503)
        return _json({"name": model.name, "ready": True})

    async def infer(request: Request, farm: Farm) -> Any:
        model = await farm.blocking(model_of, request, farm)
        request.state.labels.update(model=model.name, codec=farm.codec_of(model))
        farm.metrics.in_flight.labels(model.name).inc()
        size = request.headers.get("content-length")
        if size is not None and int(size) > farm.config.max_body_bytes:
            raise InputError(f"the body is {size} bytes, over the limit of "
                             f"{farm.config.max_body_bytes}")  # fmt: skip
        chunks, size_seen = [], 0
        async for chunk in request.stream():  # a chunked body is cut off at the limit too
            size_seen += len(chunk)
            if size_seen > farm.config.max_body_bytes:
                raise InputError(f"the body is over the limit of {farm.config.max_body_bytes} "
                                 "bytes")  # fmt: skip
            chunks.append(chunk)
        raw = b"".join(chunks)
        header = request.headers.get("inference-header-content-length")
        json_size = len(raw)
        if header is not None:
            if not header.isdigit() or int(header) > len(raw):
                raise InputError(f"Inference-Header-Content-Length {header!r} does not fit a "
                                 f"body of {len(raw)} bytes")  # fmt: skip
            json_size = int(header)
        try:
            body = json.loads(raw[:json_size])
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(f"the body is not JSON: {exc}") from exc
        parsed = parse_infer_request(body, model.input_shape, raw[json_size:])
        try:
            y = await farm.coding_queue(model).infer(parsed.x)
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

    infer_handled = handler(infer)

    async def infer_endpoint(request: Request) -> Any:
        """The infer route, measured: latency by model, codec and outcome, and in flight."""
        farm = state["farm"]
        request.state.labels = labels = {"model": "unknown", "codec": ""}  # set by infer
        start = time.perf_counter()
        try:
            response = await infer_handled(request)
        finally:
            if labels["model"] != "unknown":
                farm.metrics.in_flight.labels(labels["model"]).dec()
        outcome = OUTCOME_BY_STATUS.get(response.status_code, "error")
        farm.metrics.latency.labels(labels["model"], labels["codec"], outcome).observe(
            time.perf_counter() - start
        )
        return response

    async def metrics(request: Request) -> Any:
        from prometheus_client import CONTENT_TYPE_LATEST
        from starlette.responses import Response

        return Response(state["farm"].metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    models = "/v2/models/{name}"
    versioned = "/v2/models/{name}/versions/{version}"
    routes = [
        Route("/v2/health/live", handler(live)),
        Route("/v2/health/ready", handler(ready)),
        Route("/livez", handler(live)),  # the probes' names on every codedfarm process
        Route("/readyz", handler(ready)),
        Route("/v2", handler(server_metadata)),
        *(Route(base, handler(metadata)) for base in (models, versioned)),
        *(Route(f"{base}/ready", handler(model_ready)) for base in (models, versioned)),
        *(Route(f"{base}/infer", infer_endpoint, methods=["POST"]) for base in (models, versioned)),
        Route("/metrics", metrics),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def serve(settings: Settings, config: ServeConfig) -> None:
    """Run the server until SIGTERM or SIGINT (uvicorn answers requests in flight first)."""
    import uvicorn

    config.validate()
    connect(settings).close()  # an unreachable Redis is a clear error now, not per request
    # uvicorn stops gracefully on SIGTERM/SIGINT, then raises the signal again for the
    # handler it found: make that a no-op, so a requested stop exits with status 0
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    # uvicorn's info log says when it listens (and on which address); no line per request
    uvicorn.run(create_app(settings, config), host=config.host, port=config.port,
                log_level="info", access_log=False, timeout_graceful_shutdown=30)  # fmt: skip
