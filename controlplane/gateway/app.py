"""The OpenAI-compatible gateway as a raw ASGI application.

``POST /v1/chat/completions``, ``POST /v1/completions``, ``GET /v1/models[/<id>]`` and the
console's ``GET /metrics``. ``console.asgi`` sends these paths here before Django, so no
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
from controlplane.gateway.auth import KeyCache, authenticate, revocation_listener
from controlplane.gateway.conf import GatewayConf, load
from controlplane.gateway.db import run_db
from controlplane.gateway.errors import GatewayError, bad_request, model_not_found, unavailable
from controlplane.gateway.limits import Decision, Limiter
from controlplane.gateway.metering import Meter
from controlplane.gateway.requests import CompletionRequest, parse_completion
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
        self.routes = RouteTable(self.conf)
        self.balancer = Balancer(self.conf)
        self.meter = Meter(self.conf)
        self.traffic: traffic.TrafficStats | None = None
        self.limiter: Limiter | None = None
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
        self.keys.connect(redis_url)  # revocation markers, read while the database is down
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
        await self.keys.close()
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
        elif path == "/v1/models" or path.startswith("/v1/models/"):
            _allow(method, path, "GET")
            await self.models(scope, exchange, path[len("/v1/models/") :] if path != "/v1/models" else None)
        elif path == OPENAPI_PATH:
            _allow(method, path, "GET", "HEAD")
            await exchange.respond(200, openapi.document_bytes())
        elif path == "/metrics":
            _allow(method, path, "GET", "HEAD")
            # In a thread: collecting reads the database and Redis (controlplane.deployments.metrics).
            data, content_type = await metrics.render_async()
            await exchange.respond(200, data, content_type.encode())
        else:
            raise GatewayError(404, f"Unknown request URL: {method} {path[:200]}.", code="unknown_url")

    # ------------------------------------------------------------------ /v1/models

    async def models(self, scope: Message, exchange: Exchange, model_id: str | None) -> None:
        key = await authenticate(self.keys, scope["headers"], Scope.MODELS_READ)
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
        key = await authenticate(self.keys, scope["headers"], Scope.INFERENCE)
        body = await read_body(scope, receive, self.conf.max_body_bytes)
        request = parse_completion(body, chat=chat)
        routes = await self.routes.get(key.tenant_id)
        route = routes.get(request.model)
        if route is None or (key.allowed_models and request.model not in key.allowed_models):
            raise model_not_found(request.model)
        exchange.model = route.served_model_name
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
        reserved = request.prompt_estimate + (request.max_tokens or route.max_tokens_cap)
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
            if decision.reason == "budget":
                kind = code = "insufficient_quota"
            else:
                kind, code = ("requests" if decision.reason == "rpm" else "tokens"), "rate_limit_exceeded"
            raise GatewayError(
                429,
                decision.message,
                type=kind,
                code=code,
                headers=[(b"retry-after", str(decision.retry_after).encode())],
            )
        self.meter.touch(key.pk, route.deployment_id)
        await self._proxy_guarded(receive, exchange, key, route, request, upstream_body, decision, chat, t0)

    async def _proxy_guarded(
        self,
        receive: Receive,
        exchange: Exchange,
        key: KeyRecord,
        route: Route,
        request: CompletionRequest,
        upstream_body: bytes,
        decision: Decision,
        chat: bool,
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
            error = await self._proxy(exchange, route, request, upstream_body, chat, usage, t0, state)
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

    async def _replica(self, route: Route, tried: set[int]) -> tuple[Route, ReplicaTarget]:
        replica = self.balancer.pick(route, tried)
        if replica is not None:
            return route, replica
        if tried:
            raise unavailable(
                "No replica of this model could be reached; try again shortly.",
                self.conf.retry_after_seconds,
                code="upstream_unavailable",
            )
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
        deadline = time.monotonic() + self.conf.cold_start_timeout
        while time.monotonic() < deadline:
            await asyncio.sleep(self.conf.cold_start_poll)
            routes = await self.routes.get(route.tenant_id, max_age=self.conf.cold_start_poll / 2)
            current = routes.get(route.served_model_name)
            if current is None:
                raise model_not_found(route.served_model_name)
            if current.ready:
                metrics.COLD_STARTS.labels("served").inc()
                return current
            if not holdable(current):
                break
        metrics.COLD_STARTS.labels("timeout").inc()
        raise unavailable(f"No replica of '{route.served_model_name}' is ready yet; try again shortly.", retry)

    async def _proxy(
        self,
        exchange: Exchange,
        route: Route,
        request: CompletionRequest,
        upstream_body: bytes,
        chat: bool,
        usage: list[int],
        t0: float,
        state: dict[str, bool],
    ) -> bool:
        """Send to a replica and relay the answer. Returns whether it counts as an error."""
        assert self.session is not None
        path = CHAT_PATH if chat else COMPLETIONS_PATH
        tried: set[int] = set()
        while True:
            route, replica = await self._replica(route, tried)
            self.balancer.acquire(replica)
            try:
                t_up = time.perf_counter()
                try:
                    # Only these headers: the client's own Authorization (its Hangar API key) and
                    # anything else it sent stay here; the replica gets its deployment's credential
                    # and the request id (already checked: at most 64 safe characters).
                    response = await self.session.post(
                        replica.endpoint + path,
                        data=upstream_body,
                        headers={
                            "Content-Type": "application/json",
                            "Authorization": route.replica_auth,
                            request_id.HEADER: exchange.request_id,
                        },
                    )
                except aiohttp.ClientConnectorError:
                    # Nothing reached the replica: safe to try another one.
                    metrics.UPSTREAM_ERRORS.labels("connect").inc()
                    self.balancer.failed(replica)
                    tried.add(replica.pk)
                    continue
                except (aiohttp.ClientError, TimeoutError):
                    metrics.UPSTREAM_ERRORS.labels("request").inc()
                    self.balancer.failed(replica)
                    raise unavailable(
                        "The model replica failed to answer; try again.",
                        self.conf.retry_after_seconds,
                        code="upstream_error",
                    ) from None
                if response.status == 401:
                    # The replica refused our credential (a replica left from before a SECRET_KEY
                    # rotation, or processes that disagree on it): not the client's fault, and
                    # its request was not processed, so another replica may take it.
                    response.release()
                    logger.error(
                        "replica %s of deployment %s refused the gateway's credential",
                        replica.pk,
                        route.deployment_id,
                    )
                    metrics.UPSTREAM_ERRORS.labels("unauthorized").inc()
                    self.balancer.failed(replica)
                    tried.add(replica.pk)
                    continue
                self.balancer.succeeded(replica)
                pre = t_up - t0
                try:
                    if request.stream and response.status == 200:
                        error = await self._relay_stream(exchange, response, request, usage, state)
                    else:
                        error = await self._relay_body(exchange, response, usage, state)
                finally:
                    response.release()
                t_done = time.perf_counter()
                metrics.UPSTREAM_LATENCY.observe(t_done - t_up)
                metrics.ADDED_LATENCY.observe(pre + exchange.post)
                return error
            finally:
                self.balancer.release(replica)

    async def _relay_body(
        self, exchange: Exchange, response: aiohttp.ClientResponse, usage: list[int], state: dict[str, bool]
    ) -> bool:
        try:
            data = await response.read()
        except (aiohttp.ClientError, TimeoutError):
            metrics.UPSTREAM_ERRORS.labels("read").inc()
            raise unavailable(
                "The model replica failed mid-answer; try again.", self.conf.retry_after_seconds, code="upstream_error"
            ) from None
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
        request: CompletionRequest,
        usage: list[int],
        state: dict[str, bool],
    ) -> bool:
        await exchange.start(
            200, b"text/event-stream", [(b"cache-control", b"no-cache"), (b"x-accel-buffering", b"no")]
        )
        buffer = b""
        scan = _StreamScan(request, usage, state)
        try:
            async for data in response.content.iter_any():
                buffer += data
                if b"\n\n" not in buffer:
                    continue
                *events, buffer = buffer.split(b"\n\n")
                out = scan.events(events)
                if out:
                    await exchange.body(b"".join(out), more=True)
            if buffer.strip():
                await exchange.body(buffer + b"\n\n", more=True)
        except (aiohttp.ClientError, TimeoutError):
            metrics.UPSTREAM_ERRORS.labels("stream").inc()
            scan.error = True
        finally:
            if not scan.got_usage:  # cut short: estimate so that budgets and TPM still see the tokens
                usage[0] = request.prompt_estimate
                usage[1] = scan.chunks
        state["done"] = True
        await exchange.body(b"", more=False)
        return scan.error


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
