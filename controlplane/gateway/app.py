"""The OpenAI-compatible gateway as a raw ASGI application.

``POST /v1/chat/completions``, ``POST /v1/completions``, ``POST /v1/embeddings`` (models whose
task is ``embed``; see ``embeddings``), ``GET /v1/models[/<id>]`` and the console's
``GET /metrics``. ``console.asgi`` sends these paths here before Django, so no
Django middleware, session or CSRF code runs on the serving path.

Per request: key -> body (≤ 1 MiB) -> validation -> route (cached) -> limits (one Redis call)
-> least-loaded ready replica -> proxied answer, streamed chunk by chunk with backpressure ->
usage and token settlement recorded in memory, flushed in batches. A client that disconnects
cancels the upstream request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from datetime import UTC, datetime
from typing import Any

import aiohttp
import structlog
from django.conf import settings
from django.db import DatabaseError

from controlplane.core import request_id
from controlplane.gateway import metrics, openapi, traffic
from controlplane.gateway.auth import KeyCache, revocation_listener
from controlplane.gateway.conf import GatewayConf, load
from controlplane.gateway.db import run_db
from controlplane.gateway.embeddings import PATH as EMBEDDINGS_PATH
from controlplane.gateway.embeddings import check_task, parse_embeddings
from controlplane.gateway.errors import GatewayError, bad_request, model_not_found, unavailable
from controlplane.gateway.guard import AuthThrottle, require_scrape_token
from controlplane.gateway.holds import Holds
from controlplane.gateway.limits import Decision, Limiter
from controlplane.gateway.metering import Meter
from controlplane.gateway.requests import CompletionRequest, parse_completion
from controlplane.gateway.route_events import route_listener
from controlplane.gateway.routing import Balancer, RouteTable, holdable, listable, wakeable
from controlplane.gateway.selectors import KeyRecord, ReplicaTarget, Route
from controlplane.gateway.services import deployment_wake
from controlplane.keys.choices import Scope

logger = logging.getLogger(__name__)

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON = b"application/json"
CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
OPENAPI_PATH = "/v1/openapi.json"
WAKE_DEBOUNCE_SECONDS = 10.0
WATCH_AFTER_SECONDS = 0.05  # a disconnect is noticed at most this late


class ClientGone(Exception):
    """The client disconnected; nothing more can be sent."""


# A replica that may have started on a request (cut before its first byte, 503 while draining)
# passes it on once; one that never received it (connection refused) as often as replicas last.
MAX_RETRIES = 1
# Ends a stream whose replica died mid-answer: an error event (the openai client raises
# ``APIError`` on it), never a clean end that reads as a complete answer.
STREAM_CUT = (
    b'data: {"error": {"message": "The model replica failed mid-answer; the answer is incomplete.", '
    b'"type": "server_error", "param": null, "code": "upstream_disconnected"}}\n\n'
)


class NoAnswer(Exception):
    """A replica gave no byte of an answer: another one may take the request.

    ``unsent``: the request never reached it (retrying costs nothing); ``error`` is what the
    client gets when no retry is left.
    """

    def __init__(self, kind: str, error: GatewayError, *, unsent: bool = False) -> None:
        super().__init__(kind)
        self.kind = kind
        self.error = error
        self.unsent = unsent


def _unreachable(conf: GatewayConf) -> GatewayError:
    return unavailable(
        "No replica of this model could be reached; try again shortly.",
        conf.retry_after_seconds,
        code="upstream_unavailable",
    )


def _upstream_failed(
    conf: GatewayConf, message: str = "The model replica failed before answering; try again."
) -> GatewayError:
    return GatewayError(
        502,
        message,
        type="server_error",
        code="upstream_error",
        headers=[(b"retry-after", str(conf.retry_after_seconds).encode())],
    )


async def _relayed_error(response: aiohttp.ClientResponse) -> GatewayError:
    """A replica's own 503 (draining, queue full), as the client gets it when no retry is left."""
    retry_after = response.headers.get("Retry-After", "1")
    message = "The model replica is not taking requests right now; try again shortly."
    try:
        body = json.loads(await response.read())
        text = body["error"]["message"]
        if isinstance(text, str) and text:
            message = text[:500]
    except (aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
        pass
    return unavailable(message, int(retry_after) if retry_after.isdigit() else 1, code="upstream_unavailable")


class Exchange:
    """One HTTP exchange: remembers whether the response started, adds common headers."""

    __slots__ = ("extra_headers", "first_byte", "model", "post", "request_id", "send", "started", "status")

    def __init__(self, send: Send, rid: str) -> None:
        self.send = send
        self.request_id = rid  # answered to the client, sent to the replica, in every log line
        self.started = False
        self.status = 0
        self.post = 0.0  # seconds spent after the upstream answered (added latency)
        self.model = "-"  # metrics label: a served model name that exists, never raw input
        self.extra_headers: list[tuple[bytes, bytes]] = []
        self.first_byte = 0.0  # perf_counter() of the first body byte sent (time to first token)

    async def start(self, status: int, content_type: bytes, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
        self.started = True
        self.status = status
        await self.send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", content_type),
                    (request_id.HEADER_LOWER, self.request_id.encode()),
                    *self.extra_headers,
                    *headers,
                ],
            }
        )

    async def body(self, data: bytes, more: bool = False) -> None:
        if data and not self.first_byte:
            self.first_byte = time.perf_counter()
        await self.send({"type": "http.response.body", "body": data, "more_body": more})

    async def respond(
        self, status: int, data: bytes, content_type: bytes = JSON, headers: Sequence[tuple[bytes, bytes]] = ()
    ) -> None:
        await self.start(status, content_type, [*headers, (b"content-length", str(len(data)).encode())])
        await self.body(data)

    async def error(self, exc: GatewayError) -> None:
        await self.respond(exc.status, exc.body(), headers=exc.headers)


async def read_body(scope: Message, receive: Receive, limit: int) -> bytes:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise bad_request("Content-Length is not a number.", code="invalid_request") from None
            if declared > limit:
                raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
            break
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="request_too_large")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


_DECODER = json.JSONDecoder()


def _read_usage(data: bytes, usage: list[int]) -> None:
    """Prompt and completion tokens from an answer's ``usage`` object, without parsing the
    rest of the answer (it can be large; ``usage`` is small and, in practice, last)."""
    at = data.rfind(b'"usage"')
    if at < 0:
        return
    try:
        tail = data[at + 7 :].decode("utf-8", "replace").lstrip()
        if not tail.startswith(":"):
            return
        counts, _ = _DECODER.raw_decode(tail[1:].lstrip())
        if isinstance(counts, dict):
            usage[0] = int(counts.get("prompt_tokens") or 0)
            usage[1] = int(counts.get("completion_tokens") or 0)
    except (ValueError, TypeError):
        pass


def _strip_null_usage(event: bytes) -> bytes:
    return event.replace(b',"usage":null', b"").replace(b', "usage": null', b"")


class _StreamScan:
    """Reads a relayed event stream as it passes: counts content chunks, takes the usage, notes errors."""

    __slots__ = ("chunks", "error", "got_usage", "include_usage", "state", "usage")

    def __init__(self, request: CompletionRequest, usage: list[int], state: dict[str, bool]) -> None:
        self.include_usage = request.include_usage
        self.usage = usage
        self.state = state
        self.chunks = 0
        self.got_usage = False
        self.error = False

    def events(self, events: list[bytes]) -> list[bytes]:
        """The events to pass on (terminated), of those complete in one read."""
        out: list[bytes] = []
        include_usage = self.include_usage  # locals: this runs for every read of every stream
        chunks = 0
        for event in events:
            if not event:
                continue
            if b'"usage":{' in event or b'"usage": {' in event:
                _read_usage(event, self.usage)
                self.got_usage = True
                if not include_usage:
                    continue
            elif event.startswith(b"data: {"):
                if b'"error"' in event[:16]:
                    self.error = True
                chunks += 1
                if not include_usage:
                    event = _strip_null_usage(event)
            elif event.startswith(b"data: [DONE]"):
                # Clients may hang up as soon as they read this: the answer is complete.
                self.state["done"] = True
            out.append(event + b"\n\n")
        self.chunks += chunks
        return out


class Gateway:
    """The ASGI callable. One instance per process holds the caches and the HTTP client pool."""

    def __init__(self, conf: GatewayConf | None = None) -> None:
        self.conf = conf or load()
        self.keys = KeyCache(self.conf)
        self.auth_throttle = AuthThrottle(self.conf)  # 401s per client address (controlplane.gateway.guard)
        self.routes = RouteTable(self.conf)
        self.balancer = Balancer(self.conf)
        self.meter = Meter(self.conf)
        self.traffic: traffic.TrafficStats | None = None
        self.limiter: Limiter | None = None
        self.holds: Holds | None = None
        self.session: aiohttp.ClientSession | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.revocations_ready = asyncio.Event()
        self._woken: dict[int, float] = {}
        self._started = False
        self._start_lock: asyncio.Lock | None = None
        self._in_flight = 0
        metrics.IN_FLIGHT.set_function(lambda: self._in_flight)

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        if self._started:
            return
        self._started = True
        redis_url = settings.REDIS_URL
        self.limiter = Limiter(self.conf, redis_url)
        self.holds = Holds(redis_url, self.conf.redis_timeout)
        self.keys.connect(redis_url)  # revocation markers, read while the database is down
        self.auth_throttle.connect(redis_url)
        stats = self.traffic = traffic.TrafficStats(redis_url, self.conf.redis_timeout)
        self.session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, keepalive_timeout=30),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=self.conf.upstream_connect_timeout, sock_read=self.conf.upstream_read_timeout
            ),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=("User-Agent",),
        )
        loop = asyncio.get_running_loop()
        self.revocations_ready = asyncio.Event()
        self.tasks = [
            loop.create_task(revocation_listener(redis_url, self.keys, self.revocations_ready)),
            loop.create_task(self.meter.run()),
            loop.create_task(self.limiter.settle_loop()),
            loop.create_task(route_listener(redis_url, self.routes)),
            loop.create_task(stats.run()),
        ]

    async def shutdown(self) -> None:
        if not self._started:
            return
        for task in self.tasks:
            task.cancel()
        for task in self.tasks:
            with contextlib.suppress(BaseException):
                await task
        self.tasks = []
        try:
            await self.meter.flush_all()
        except Exception:
            logger.exception("final usage flush failed")
        if self.limiter is not None:
            await self.limiter.close()
        if self.holds is not None:
            await self.holds.close()
        await self.keys.close()
        await self.auth_throttle.close()
        if self.traffic is not None:
            with contextlib.suppress(Exception):
                await self.traffic.close()
        if self.session is not None:
            await self.session.close()
        self._started = False

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.startup()
                except Exception as exc:
                    logger.exception("gateway start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ------------------------------------------------------------------ dispatch

    async def __call__(self, scope: Message, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if not self._started:
            await self._start_on_first_use()
        exchange = Exchange(send, request_id.from_asgi(scope["headers"]))
        # Each request runs in a task of its own, whose context dies with it: nothing to unbind.
        structlog.contextvars.bind_contextvars(request_id=exchange.request_id)
        path: str = scope["path"]
        method: str = scope["method"]
        try:
            await self.dispatch(scope, receive, exchange)
        except GatewayError as exc:
            if not exchange.started:
                await exchange.error(exc)
        except ClientGone:
            exchange.status = exchange.status or 499
        except DatabaseError:
            logger.exception("database unavailable on %s %s", method, path[:200])
            if not exchange.started:
                await exchange.error(
                    unavailable("The gateway cannot reach its database; try again shortly.", 5, code="unavailable")
                )
        except Exception:
            logger.exception("gateway error on %s %s", method, path[:200])
            if not exchange.started:
                message = f"The gateway failed to process the request (request id {exchange.request_id})."
                await exchange.error(GatewayError(500, message, type="server_error"))
        metrics.count_request(exchange.model, exchange.status)

    async def _start_on_first_use(self) -> None:
        """For servers without lifespan support (daphne)."""
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            await self.startup()

    async def dispatch(self, scope: Message, receive: Receive, exchange: Exchange) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path in (CHAT_PATH, COMPLETIONS_PATH):
            _allow(method, path, "POST")
            await self.completion(scope, receive, exchange, chat=path == CHAT_PATH)
        elif path == EMBEDDINGS_PATH:
            _allow(method, path, "POST")
            await self.embeddings(scope, receive, exchange)
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            _allow(method, path, "GET")
            await self.models(scope, exchange, path[len("/v1/models/") :] if path != "/v1/models" else None)
        elif path == OPENAPI_PATH:
            _allow(method, path, "GET", "HEAD")
            await exchange.respond(200, openapi.document_bytes())
        elif path == "/metrics":
            _allow(method, path, "GET", "HEAD")
            require_scrape_token(self.conf, scope["headers"])
            # In a thread: collecting reads the database and Redis (controlplane.deployments.metrics).
            data, content_type = await metrics.render_async()
            await exchange.respond(200, data, content_type.encode())
        else:
            raise GatewayError(404, f"Unknown request URL: {method} {path[:200]}.", code="unknown_url")

    # ------------------------------------------------------------------ /v1/models

    async def models(self, scope: Message, exchange: Exchange, model_id: str | None) -> None:
        key = await self.auth_throttle.authenticate(self.keys, scope, Scope.MODELS_READ)
        routes = await self.routes.get(key.tenant_id)
        visible = [
            r
            for name, r in sorted(routes.items())
            if listable(r) and (not key.allowed_models or name in key.allowed_models)
        ]
        entries = [
            {"id": r.served_model_name, "object": "model", "created": r.created, "owned_by": "hangar"} for r in visible
        ]
        if model_id is not None:
            for entry in entries:
                if entry["id"] == model_id:
                    await exchange.respond(200, json.dumps(entry).encode())
                    return
            raise model_not_found(model_id)
        await exchange.respond(200, json.dumps({"object": "list", "data": entries}).encode())

    # ------------------------------------------------------------------ completions

    async def completion(self, scope: Message, receive: Receive, exchange: Exchange, *, chat: bool) -> None:
        t0 = time.perf_counter()
        key = await self.auth_throttle.authenticate(self.keys, scope, Scope.INFERENCE)
        body = await read_body(scope, receive, self.conf.max_body_bytes)
        request = parse_completion(body, chat=chat)
        routes = await self.routes.get(key.tenant_id)
        route = routes.get(request.model)
        if route is None or (key.allowed_models and request.model not in key.allowed_models):
            raise model_not_found(request.model)
        exchange.model = route.served_model_name
        check_task(route, embeddings=False)
        if request.max_tokens is not None and request.max_tokens > route.max_tokens_cap:
            raise bad_request(
                f"'max_tokens' is {request.max_tokens}, above this model's limit of {route.max_tokens_cap}.",
                param="max_tokens",
            )
        upstream_body = body
        if request.max_tokens is None or (request.stream and not request.include_usage):
            payload = request.payload
            if request.max_tokens is None:
                payload["max_tokens"] = route.max_tokens_cap  # bounds generation and the reservation
            if request.stream and not request.include_usage:
                payload["stream_options"] = {**(payload.get("stream_options") or {}), "include_usage": True}
            upstream_body = json.dumps(payload).encode()
        reserved = request.prompt_estimate + request.choices * (request.max_tokens or route.max_tokens_cap)
        decision = await self._admit(key, route, reserved, exchange, t0)
        self.meter.touch(key.pk, route.deployment_id)
        path = CHAT_PATH if chat else COMPLETIONS_PATH
        await self._proxy_guarded(receive, exchange, key, route, request, upstream_body, decision, path, t0)

    async def embeddings(self, scope: Message, receive: Receive, exchange: Exchange) -> None:
        """``POST /v1/embeddings``: the completion path with the prompt as the whole reservation."""
        t0 = time.perf_counter()
        key = await self.auth_throttle.authenticate(self.keys, scope, Scope.EMBEDDINGS)
        body = await read_body(scope, receive, self.conf.max_body_bytes)
        request = parse_embeddings(body)
        routes = await self.routes.get(key.tenant_id)
        route = routes.get(request.model)
        if route is None or (key.allowed_models and request.model not in key.allowed_models):
            raise model_not_found(request.model)
        exchange.model = route.served_model_name
        check_task(route, embeddings=True)
        decision = await self._admit(key, route, request.prompt_estimate, exchange, t0)
        self.meter.touch(key.pk, route.deployment_id)
        await self._proxy_guarded(receive, exchange, key, route, request, body, decision, EMBEDDINGS_PATH, t0)

    async def _admit(self, key: KeyRecord, route: Route, reserved: int, exchange: Exchange, t0: float) -> Decision:
        """Reserve ``reserved`` tokens under the key's limits; a refusal is metered and raised as a 429."""
        assert self.limiter is not None
        decision = await self.limiter.admit(key, reserved)
        exchange.extra_headers = decision.headers
        if not decision.allowed:
            self.meter.record(
                key_pk=key.pk,
                tenant_id=key.tenant_id,
                model=route.served_model_name,
                prompt_tokens=0,
                completion_tokens=0,
                error=True,
                latency_ms=(time.perf_counter() - t0) * 1000,
            )
            raise decision.error()
        return decision

    async def _proxy_guarded(
        self,
        receive: Receive,
        exchange: Exchange,
        key: KeyRecord,
        route: Route,
        request: CompletionRequest,
        upstream_body: bytes,
        decision: Decision,
        path: str,
        t0: float,
    ) -> None:
        """Proxy while watching for the client's disconnect, which cancels the upstream call."""
        task = asyncio.current_task()
        assert task is not None
        # done: the answer is complete, a disconnect no longer matters; gone: the client left.
        state = {"gone": False, "done": False}

        async def watch() -> None:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    break
            if not state["done"]:
                state["gone"] = True
                task.cancel()

        # Most answers complete within milliseconds; only a request still running after
        # WATCH_AFTER gets a watcher task (saves a task per request on the hot path).
        loop = asyncio.get_running_loop()
        watcher: list[asyncio.Task[None]] = []
        timer = loop.call_later(WATCH_AFTER_SECONDS, lambda: watcher.append(loop.create_task(watch())))
        usage = [0, 0]  # prompt, completion
        error = True
        route, side = traffic.choose(route, request_id=exchange.request_id, key_id=key.key_id)
        self._in_flight += 1
        try:
            error = await self._proxy(exchange, route, request, upstream_body, path, usage, t0, state)
        except asyncio.CancelledError:
            if not state["gone"]:
                raise
            exchange.status = 499  # metrics: the client left before the answer was complete
            error = True
            if task.cancelling():
                task.uncancel()
        finally:
            state["done"] = True
            timer.cancel()
            for watching in watcher:
                watching.cancel()
            self._in_flight -= 1
            assert self.limiter is not None
            self.limiter.settle(decision.reservation, usage[0] + usage[1])
            metrics.count_tokens(route.served_model_name, usage[0], usage[1])
            if side:
                self._measure(route, side, exchange, error, t0)
            self.meter.record(
                key_pk=key.pk,
                tenant_id=key.tenant_id,
                model=route.served_model_name,
                prompt_tokens=usage[0],
                completion_tokens=usage[1],
                error=error or exchange.status >= 400 or exchange.status == 0,
                latency_ms=(time.perf_counter() - t0) * 1000,
            )

    def _measure(self, route: Route, side: str, exchange: Exchange, error: bool, t0: float) -> None:
        """Count an answer of a canary split for the analysis (a client that left is no verdict)."""
        status = exchange.status
        if self.traffic is None or route.split is None or status == 499:
            return
        self.traffic.record(
            route.split,
            side,
            failed=status >= 500 or status == 0 or (error and status < 400),
            latency=time.perf_counter() - t0,
            ttft=(exchange.first_byte - t0) if exchange.first_byte else None,
        )

    async def _replica(
        self, route: Route, tried: set[int], failed: GatewayError | None = None
    ) -> tuple[Route, ReplicaTarget]:
        replica = self.balancer.pick(route, tried)
        if replica is not None:
            return route, replica
        if tried:  # every replica tried: the last one's failure is the answer
            raise failed or _unreachable(self.conf)
        route = await self._wait_for_replica(route)
        replica = self.balancer.pick(route, tried)
        assert replica is not None
        return route, replica

    async def _wait_for_replica(self, route: Route) -> Route:
        """Hold the request (bounded) while a replica starts; wake a deployment scaled to zero."""
        retry = self.conf.retry_after_seconds
        if not holdable(route):
            raise unavailable(f"The model '{route.served_model_name}' is not serving (phase {route.phase}).", retry)
        if wakeable(route):
            last = self._woken.get(route.deployment_id, 0.0)
            if time.monotonic() - last > WAKE_DEBOUNCE_SECONDS:
                self._woken[route.deployment_id] = time.monotonic()
                try:
                    await run_db(deployment_wake, deployment_id=route.deployment_id, at=datetime.now(UTC))
                except Exception:
                    logger.exception("could not wake deployment %s", route.deployment_id)
        assert self.holds is not None
        held = await self.holds.hold(route.deployment_id, self.conf.cold_start_timeout)
        try:
            current = await self._poll_ready(route)
        finally:
            await self.holds.release(route.deployment_id, held)
        if current is None:
            metrics.COLD_STARTS.labels("timeout").inc()
            raise unavailable(f"No replica of '{route.served_model_name}' is ready yet; try again shortly.", retry)
        metrics.COLD_STARTS.labels("served").inc()
        return current

    async def _poll_ready(self, route: Route) -> Route | None:
        """The route once it has a ready replica; ``None`` after the hold's bound or if it stops."""
        deadline = time.monotonic() + self.conf.cold_start_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(self.conf.cold_start_poll)
            routes = await self.routes.get(route.tenant_id, max_age=self.conf.cold_start_poll / 2)
            current = routes.get(route.served_model_name)
            if current is None:
                raise model_not_found(route.served_model_name)
            if current.ready:
                return current
            if not holdable(current):
                return None
        return None

    async def _proxy(
        self,
        exchange: Exchange,
        route: Route,
        request: CompletionRequest,
        upstream_body: bytes,
        path: str,
        usage: list[int],
        t0: float,
        state: dict[str, bool],
    ) -> bool:
        """Send to a replica and relay the answer. Returns whether it counts as an error.

        A replica that gave no byte of an answer (unreachable, refused our credential, 503 while
        draining, cut before its first byte) passes the request to another ready replica: as often
        as needed when nothing reached it, once when it may have started on it (``NoAnswer``).
        """
        tried: set[int] = set()
        retries = MAX_RETRIES
        failed: GatewayError | None = None
        while True:
            route, replica = await self._replica(route, tried, failed)
            self.balancer.acquire(replica)
            try:
                return await self._attempt(exchange, route, replica, request, upstream_body, path, usage, t0, state)
            except NoAnswer as exc:
                metrics.UPSTREAM_ERRORS.labels(exc.kind).inc()
                self.balancer.failed(replica)
                tried.add(replica.pk)
                failed = exc.error
                if not exc.unsent:
                    if retries == 0:
                        raise exc.error from None
                    retries -= 1
                metrics.RETRIES.labels(exc.kind).inc()
            finally:
                self.balancer.release(replica)

    async def _attempt(
        self,
        exchange: Exchange,
        route: Route,
        replica: ReplicaTarget,
        request: CompletionRequest,
        upstream_body: bytes,
        path: str,
        usage: list[int],
        t0: float,
        state: dict[str, bool],
    ) -> bool:
        """One replica's try: relay its answer, or raise ``NoAnswer`` while nothing was relayed."""
        t_up = time.perf_counter()
        response = await self._send(route, replica, upstream_body, path, exchange)
        try:
            if response.status == 401:
                # The replica refused our credential (a replica left from before a SECRET_KEY
                # rotation, or processes that disagree on it): not the client's fault, and its
                # request was not processed, so another replica may take it.
                logger.error(
                    "replica %s of deployment %s refused the gateway's credential", replica.pk, route.deployment_id
                )
                raise NoAnswer("unauthorized", _upstream_failed(self.conf), unsent=True)
            if response.status == 503:
                # Draining (SIGTERM), or its queue is full: it did not take the request.
                raise NoAnswer("refused", await _relayed_error(response))
            first = b""
            if request.stream and response.status == 200:
                first = await self._first_bytes(response)
            self.balancer.succeeded(replica)
            pre = t_up - t0
            if request.stream and response.status == 200:
                error = await self._relay_stream(exchange, response, first, request, usage, state)
            else:
                error = await self._relay_body(exchange, response, usage, state)
        finally:
            response.release()
        metrics.UPSTREAM_LATENCY.observe(time.perf_counter() - t_up)
        metrics.ADDED_LATENCY.observe(pre + exchange.post)
        return error

    async def _send(
        self, route: Route, replica: ReplicaTarget, upstream_body: bytes, path: str, exchange: Exchange
    ) -> aiohttp.ClientResponse:
        """POST to the replica; up to its status line and headers."""
        assert self.session is not None
        try:
            # Only these headers: the client's own Authorization (its Hangar API key) and
            # anything else it sent stay here; the replica gets its deployment's credential
            # and the request id (already checked: at most 64 safe characters).
            return await self.session.post(
                replica.endpoint + path,
                data=upstream_body,
                headers={
                    "Content-Type": "application/json",
                    "Authorization": route.replica_auth,
                    request_id.HEADER: exchange.request_id,
                },
            )
        except aiohttp.ClientConnectorError:
            raise NoAnswer("connect", _unreachable(self.conf), unsent=True) from None  # nothing reached it
        except TimeoutError:
            # Slow, not gone: another replica would only do the same work twice.
            metrics.UPSTREAM_ERRORS.labels("timeout").inc()
            raise GatewayError(
                504, "The model replica did not answer in time.", type="server_error", code="upstream_timeout"
            ) from None
        except aiohttp.ClientError:
            # Connection lost before a byte of the answer (the replica died, or closed on us).
            raise NoAnswer("disconnect", _upstream_failed(self.conf)) from None

    async def _first_bytes(self, response: aiohttp.ClientResponse) -> bytes:
        """The first bytes of a streamed answer, before anything goes to the client: a replica
        that dies before sending any leaves the request free to go to another one."""
        try:
            async for data in response.content.iter_any():
                if data:
                    return data
        except TimeoutError:
            metrics.UPSTREAM_ERRORS.labels("timeout").inc()
            raise GatewayError(
                504, "The model replica did not answer in time.", type="server_error", code="upstream_timeout"
            ) from None
        except aiohttp.ClientError:
            pass
        raise NoAnswer("disconnect", _upstream_failed(self.conf))

    async def _relay_body(
        self, exchange: Exchange, response: aiohttp.ClientResponse, usage: list[int], state: dict[str, bool]
    ) -> bool:
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            # Cut mid-answer: the replica did the work (or part of it), so no retry; a 502 says so.
            metrics.UPSTREAM_ERRORS.labels("read").inc()
            raise _upstream_failed(self.conf, "The model replica failed mid-answer; try again.") from None
        t_post = time.perf_counter()
        status = response.status
        if status == 200:
            _read_usage(data, usage)
        content_type = response.headers.get("Content-Type", "application/json").encode("latin-1")
        headers = []
        retry_after = response.headers.get("Retry-After")
        if retry_after and status in (429, 503):
            headers.append((b"retry-after", retry_after.encode("latin-1")))
        state["done"] = True  # the watcher must not cancel us once the answer is complete
        await exchange.respond(status, data, content_type, headers)
        exchange.post = time.perf_counter() - t_post
        if status >= 500:
            metrics.UPSTREAM_ERRORS.labels(f"status_{status}").inc()
        return status >= 400

    async def _relay_stream(
        self,
        exchange: Exchange,
        response: aiohttp.ClientResponse,
        first: bytes,
        request: CompletionRequest,
        usage: list[int],
        state: dict[str, bool],
    ) -> bool:
        await exchange.start(
            200, b"text/event-stream", [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        )
        scan = _StreamScan(request, usage, state)
        buffer = await self._relay_events(exchange, scan, first, b"")
        try:
            async for data in response.content.iter_any():
                buffer = await self._relay_events(exchange, scan, data, buffer)
            if buffer.strip():
                out = scan.events([buffer.rstrip(b"\n")])
                if out:
                    await exchange.body(b"".join(out), more=True)
        except (aiohttp.ClientError, TimeoutError):
            pass
        finally:
            if not scan.got_usage:  # cut short: estimate so that budgets and TPM still see the tokens
                usage[0] = request.prompt_estimate
                usage[1] = scan.chunks
        if not state["done"]:
            # No [DONE]: the replica died or hung up mid-answer. Say so in the stream (the openai
            # client raises on it) rather than ending it cleanly, which reads as a complete answer.
            metrics.UPSTREAM_ERRORS.labels("stream").inc()
            scan.error = True
            state["done"] = True
            await exchange.body(STREAM_CUT, more=True)
        await exchange.body(b"", more=False)
        return scan.error

    async def _relay_events(self, exchange: Exchange, scan: _StreamScan, data: bytes, buffer: bytes) -> bytes:
        """Pass on the complete events of ``buffer + data``; return the incomplete rest."""
        buffer += data
        if b"\n\n" not in buffer:
            return buffer
        *events, buffer = buffer.split(b"\n\n")
        out = scan.events(events)
        if out:
            await exchange.body(b"".join(out), more=True)
        return buffer


gateway = Gateway()


def _allow(method: str, path: str, *allowed: str) -> None:
    """405 (with ``Allow``) unless ``method`` is one of ``allowed``."""
    if method not in allowed:
        raise GatewayError(
            405,
            f"Use {' or '.join(allowed)} for {path[:200]}.",
            code="method_not_allowed",
            headers=[(b"allow", ", ".join(allowed).encode())],
        )


def route_http(django_app: Callable[..., Awaitable[None]]) -> Callable[..., Awaitable[None]]:
    """ASGI router: the gateway's paths (and lifespan) to the gateway, the rest to ``django_app``."""

    async def app(scope: Message, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await gateway(scope, receive, send)
            return
        if kind == "http":
            path = scope["path"]
            if path.startswith("/v1/") or path == "/metrics":
                await gateway(scope, receive, send)
                return
        await django_app(scope, receive, send)

    return app
