"""Rate limits (RPM, TPM) and monthly token budgets, per key and per tenant.

Algorithm: GCRA (generic cell rate algorithm) in one Lua script, so every check-and-charge is
atomic across all gateway processes and uses one clock (Redis ``TIME``).

Limits mean what they say: a request limit of ``L`` per minute with an explicit burst allowance
``B`` (a per-key / per-tenant ``burst_percent`` of ``L``, 0 by default) admits at most ``L + B``
requests in any 60-second window. With ``M = L + B`` the bucket holds ``C = min(B + 2, M)``
requests and refills one every ``(60 + g) / (M - C + 1)`` s: GCRA's bound for a window of
``W`` seconds is ``ceil(W / interval) + C - 1``, which is ``M`` for ``W = 60 + g``. The guard
``g`` (100 ms) keeps the bound true on any clock that reads the admissions a little apart from
Redis's. ``C`` is two (not one) when ``B = 0`` so that a request arriving a few milliseconds
after its turn does not push every later turn back (a tolerance of one interval: no drift), at
the price of a sustained rate of ``(L - 1) * 60 / 60.1`` per minute (598 for 600: about 1,795 in
3 minutes). Token limits (TPM) refill at exactly ``L`` per minute and hold ``max(1, B)`` tokens: a request is admitted once the tokens before it have drained, so a
window holds at most ``L + B`` tokens plus the one request being admitted.

Tokens are reserved at admission (prompt estimate + max_tokens) and settled with the actual
count afterwards; settlements are sent in batches so the hot path makes one Redis call.

Budgets are monthly counters in Redis, rebuilt from ``UsageRecord`` when missing (Redis is a
cache: losing it loses nothing).

Redis unreachable: the policy is a setting (``HANGAR_GATEWAY_REDIS_DOWN_POLICY``, see
``controlplane.gateway.conf``): ``fail_closed`` refuses limited requests with 503 until Redis
answers; ``share`` (the default) runs the same algorithm in process memory with every limit
and budget divided by the number of gateway processes (``HANGAR_GATEWAY_PROCESSES``), so all
processes together still admit at most the configured amount. A gauge and a log line say so,
and a probe switches back when Redis answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError

from controlplane.gateway import metrics
from controlplane.gateway.conf import GatewayConf
from controlplane.gateway.db import run_db
from controlplane.gateway.errors import GatewayError, unavailable
from controlplane.gateway.selectors import KeyRecord, gateway_tokens_used

logger = logging.getLogger(__name__)

FAIL_CLOSED = "fail_closed"  # Redis down: refuse limited requests (503)
SHARE = "share"  # Redis down: each process limits alone to its share of every limit
REDIS_DOWN_POLICIES = (FAIL_CLOSED, SHARE)

BUDGET_TTL_SECONDS = 40 * 24 * 3600
WINDOW_GUARD_MS = 100.0  # see the module docstring: L + B admissions span at least 60.1 s

# KEYS: bucket keys then budget keys. ARGV: nb, nbud, (interval_ms, capacity, cost) * nb,
# (limit, cost) * nbud. Returns {status, denied index, retry ms, debt ms per bucket...}
# status 1 admitted, 0 denied, -1 budget counters missing (their indexes follow).
ADMIT_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nb = tonumber(ARGV[1])
local nbud = tonumber(ARGV[2])
local missing = {}
for j = 1, nbud do
  if redis.call('EXISTS', KEYS[nb + j]) == 0 then missing[#missing + 1] = j end
end
if #missing > 0 then
  local out = {-1}
  for _, j in ipairs(missing) do out[#out + 1] = j end
  return out
end
local denied = 0
local retry = 0
local tats = {}
local news = {}
for i = 1, nb do
  local b = 2 + (i - 1) * 3
  local interval = tonumber(ARGV[b + 1])
  local capacity = tonumber(ARGV[b + 2])
  local cost = tonumber(ARGV[b + 3])
  local tat = tonumber(redis.call('GET', KEYS[i]) or now)
  if tat < now then tat = now end
  tats[i] = tat
  local allow_at = tat - math.max(0, capacity - cost) * interval
  if now < allow_at then
    if denied == 0 then denied = i end
    if allow_at - now > retry then retry = allow_at - now end
  end
  news[i] = tat + cost * interval
end
local bo = 2 + nb * 3
if denied == 0 then
  for j = 1, nbud do
    local limit = tonumber(ARGV[bo + (j - 1) * 2 + 1])
    local cost = tonumber(ARGV[bo + (j - 1) * 2 + 2])
    local used = tonumber(redis.call('GET', KEYS[nb + j]) or 0)
    if used + cost > limit then denied = nb + j; break end
  end
end
local out = {denied == 0 and 1 or 0, denied, string.format('%.3f', retry)}
for i = 1, nb do
  local tat = tats[i]
  if denied == 0 then
    tat = news[i]
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 60000)
  end
  out[#out + 1] = string.format('%.3f', tat - now)
end
if denied == 0 then
  for j = 1, nbud do
    redis.call('INCRBY', KEYS[nb + j], ARGV[bo + (j - 1) * 2 + 2])
  end
end
return out
"""

# KEYS: bucket keys then budget keys; ARGV: nb, then one delta per key (ms for buckets,
# tokens for budgets). Keys that expired in the meantime are left alone.
SETTLE_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local nb = tonumber(ARGV[1])
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    if i <= nb then
      local tat = tonumber(redis.call('INCRBYFLOAT', KEYS[i], ARGV[i + 1]))
      redis.call('PEXPIRE', KEYS[i], math.ceil(math.max(tat - now, 0)) + 60000)
    else
      redis.call('INCRBY', KEYS[i], ARGV[i + 1])
    end
  end
end
return 1
"""


@dataclass(slots=True)
class Bucket:
    key: str
    kind: str  # rpm | tpm
    scope: str  # key | tenant
    limit: int  # per minute
    cost: int
    burst: int = 0  # extra units allowed in any 60 s window (explicit, per key / tenant)

    @property
    def window_cap(self) -> int:
        """The most this bucket admits in any 60-second window."""
        return self.limit + self.burst

    @property
    def interval_ms(self) -> float:
        if self.kind == "tpm":
            return 60000.0 / self.limit
        return (60000.0 + WINDOW_GUARD_MS) / (self.window_cap - self.capacity + 1)

    @property
    def capacity(self) -> int:
        if self.kind == "tpm":
            return max(1, self.burst)
        return min(self.burst + 2, self.window_cap)

    def shared(self, processes: int) -> Bucket:
        """This bucket as one of ``processes`` gateway processes limiting alone (Redis down):
        its share of the limit and of the burst, at least 1 so that every process can serve."""
        if processes <= 1:
            return self
        return Bucket(
            self.key, self.kind, self.scope, max(1, self.limit // processes), self.cost, self.burst // processes
        )


def burst_units(limit: int, percent: int) -> int:
    """The burst allowance in units (requests or tokens) of ``percent`` of ``limit``, rounded down."""
    return limit * percent // 100


@dataclass(slots=True)
class Budget:
    key: str
    scope: str
    limit: int
    cost: int
    owner_id: int


@dataclass(slots=True)
class Reservation:
    backend: str  # redis | local
    tokens: int
    tpm: list[Bucket] = field(default_factory=list)
    budgets: list[Budget] = field(default_factory=list)


@dataclass(slots=True)
class Decision:
    allowed: bool
    reason: str = ""  # rpm | tpm | budget | too_large | unavailable
    scope: str = ""
    message: str = ""
    retry_after: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    reservation: Reservation | None = None

    def error(self) -> GatewayError:
        """The answer to a refused request: 429 (limits, budgets) or 503 (Redis down, fail_closed)."""
        if self.reason == "unavailable":
            return unavailable(self.message, self.retry_after, code="limiter_unavailable")
        if self.reason == "budget":
            kind = code = "insufficient_quota"
        else:
            kind, code = ("requests" if self.reason == "rpm" else "tokens"), "rate_limit_exceeded"
        return GatewayError(
            429, self.message, type=kind, code=code, headers=[(b"retry-after", str(self.retry_after).encode())]
        )


ALLOWED_NO_LIMITS = Decision(allowed=True)


def _month(now: float) -> tuple[str, datetime, float]:
    """``YYYYMM``, the month's start and the seconds until the next month (UTC)."""
    dt = datetime.fromtimestamp(now, UTC)
    start = dt.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    nxt = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    return f"{start.year:04d}{start.month:02d}", start, nxt.timestamp() - now


def plan(key: KeyRecord, tokens: int, now: float, prefix: str = "hangar:gw:") -> tuple[list[Bucket], list[Budget]]:
    """The buckets and budgets that apply to one request of ``key`` costing ``tokens``.

    Key buckets are named by the key's public id (unique forever, unlike a row id that a
    rebuilt database may hand out again)."""
    k = f"{prefix}k:{key.key_id}"
    t = f"{prefix}t:{key.tenant_id}"
    buckets: list[Bucket] = []
    kb, tb = key.burst_percent, key.tenant_burst_percent
    if key.rpm_limit:
        buckets.append(Bucket(f"{k}:rpm", "rpm", "key", key.rpm_limit, 1, burst_units(key.rpm_limit, kb)))
    if key.tenant_rpm_limit:
        buckets.append(
            Bucket(f"{t}:rpm", "rpm", "tenant", key.tenant_rpm_limit, 1, burst_units(key.tenant_rpm_limit, tb))
        )
    if key.tpm_limit:
        buckets.append(Bucket(f"{k}:tpm", "tpm", "key", key.tpm_limit, tokens, burst_units(key.tpm_limit, kb)))
    if key.tenant_tpm_limit:
        buckets.append(
            Bucket(f"{t}:tpm", "tpm", "tenant", key.tenant_tpm_limit, tokens, burst_units(key.tenant_tpm_limit, tb))
        )
    budgets: list[Budget] = []
    if key.monthly_token_budget or key.tenant_monthly_token_budget:
        month, _, _ = _month(now)
        if key.monthly_token_budget:
            budgets.append(Budget(f"{k}:budget:{month}", "key", key.monthly_token_budget, tokens, key.pk))
        if key.tenant_monthly_token_budget:
            budgets.append(
                Budget(
                    f"{t}:budget:{month}",
                    "tenant",
                    key.tenant_monthly_token_budget,
                    tokens,
                    key.tenant_id,
                )
            )
    return buckets, budgets


def _rate_headers(buckets: list[Bucket], debts_ms: list[float]) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-*`` for the tightest request bucket, ``X-RateLimit-*-Tokens`` for tokens.

    ``limit``: the most admitted in any 60 s window (the limit plus its explicit burst);
    ``remaining``: how many could be sent right now, back to back; ``reset``: seconds until
    the bucket is full again."""
    best: dict[str, tuple[int, int, float]] = {}
    for bucket, debt in zip(buckets, debts_ms, strict=False):
        # + 1e-6: debts come back from Redis rounded to the microsecond
        remaining = max(0, math.floor((bucket.capacity * bucket.interval_ms - debt) / bucket.interval_ms + 1e-6))
        current = best.get(bucket.kind)
        if current is None or remaining < current[1]:
            best[bucket.kind] = (bucket.window_cap, remaining, max(0.0, debt))
    headers: list[tuple[bytes, bytes]] = []
    for kind, suffix in (("rpm", b""), ("tpm", b"-tokens")):
        if kind in best:
            limit, remaining, debt = best[kind]
            headers.append((b"x-ratelimit-limit" + suffix, str(limit).encode()))
            headers.append((b"x-ratelimit-remaining" + suffix, str(remaining).encode()))
            headers.append((b"x-ratelimit-reset" + suffix, str(math.ceil(debt / 1000)).encode()))
    return headers


def _denial(
    bucket: Bucket | None, budget: Budget | None, retry_ms: float, month_left: float, tokens: int
) -> tuple[str, str, str, int]:
    if budget is not None:
        return (
            "budget",
            budget.scope,
            f"The monthly token budget of this {'API key' if budget.scope == 'key' else 'tenant'} "
            f"({budget.limit} tokens) is used up.",
            max(1, math.ceil(month_left)),
        )
    assert bucket is not None
    retry = max(1, math.ceil(retry_ms / 1000))
    unit = "requests per min (RPM)" if bucket.kind == "rpm" else "tokens per min (TPM)"
    who = "API key" if bucket.scope == "key" else "tenant"
    requested = 1 if bucket.kind == "rpm" else tokens
    burst = f" (+{bucket.burst} burst)" if bucket.burst else ""
    return (
        bucket.kind,
        bucket.scope,
        f"Rate limit reached for this {who} on {unit}: limit {bucket.limit}{burst}, requested {requested}. "
        f"Please try again in {retry}s.",
        retry,
    )


class LocalLimiter:
    """The same GCRA and budgets in process memory, used while Redis is unreachable."""

    def __init__(self, processes: int = 1) -> None:
        self.processes = processes  # gateway processes that share each limit while Redis is down
        self.tats: dict[str, float] = {}
        self.used: dict[str, int] = {}
        self.budget_limits: dict[str, int] = {}  # budget key -> this process's ceiling

    def load_budget(self, budget: Budget, used: int) -> None:
        """Start limiting ``budget`` alone, ``used`` tokens spent so far: this process may spend
        its share of what is left."""
        if budget.key not in self.used:
            self.used[budget.key] = used
            self.budget_limits[budget.key] = used + max(0, budget.limit - used) // self.processes

    def admit(self, buckets: list[Bucket], budgets: list[Budget]) -> tuple[int, float, list[float]] | list[int]:
        now = time.monotonic() * 1000
        missing = [j + 1 for j, b in enumerate(budgets) if b.key not in self.used]
        if missing:
            return missing
        buckets = [b.shared(self.processes) for b in buckets]
        denied, retry, tats = self._rate_check(buckets, now)
        denied = denied or self._budget_check(budgets, first=len(buckets) + 1)
        if not denied:
            tats = self._take(buckets, budgets, tats, now)
        return denied, retry, [t - now for t in tats]

    def _rate_check(self, buckets: list[Bucket], now: float) -> tuple[int, float, list[float]]:
        """(first denying bucket, 1-based, or 0; ms until all would allow; each bucket's TAT)."""
        denied = 0
        retry = 0.0
        tats = []
        for i, bucket in enumerate(buckets, 1):
            tat = max(self.tats.get(bucket.key, now), now)
            tats.append(tat)
            allow_at = tat - max(0, bucket.capacity - bucket.cost) * bucket.interval_ms
            if now < allow_at:
                denied = denied or i
                retry = max(retry, allow_at - now)
        return denied, retry, tats

    def _budget_check(self, budgets: list[Budget], *, first: int) -> int:
        """The number (counted from ``first``) of the first budget the cost would exceed, or 0."""
        for j, budget in enumerate(budgets, first):
            if self.used[budget.key] + budget.cost > self.budget_limits.get(budget.key, budget.limit):
                return j
        return 0

    def _take(self, buckets: list[Bucket], budgets: list[Budget], tats: list[float], now: float) -> list[float]:
        """Charge the admitted request to its buckets and budgets; returns the new TATs."""
        taken = [tat + bucket.cost * bucket.interval_ms for tat, bucket in zip(tats, buckets, strict=True)]
        for bucket, tat in zip(buckets, taken, strict=True):
            self.tats[bucket.key] = tat
        for budget in budgets:
            self.used[budget.key] += budget.cost
        if len(self.tats) > 100_000:  # bounded: drop buckets that are full again
            self.tats = {k: v for k, v in self.tats.items() if v > now}
        return taken

    def settle(self, reservation: Reservation, delta_tokens: int) -> None:
        for bucket in reservation.tpm:
            if bucket.key in self.tats:
                self.tats[bucket.key] += delta_tokens * bucket.interval_ms
        for budget in reservation.budgets:
            if budget.key in self.used:
                self.used[budget.key] += delta_tokens


class Limiter:
    def __init__(self, conf: GatewayConf, redis_url: str) -> None:
        self.conf = conf
        self.redis = aioredis.Redis.from_url(
            redis_url,
            socket_timeout=conf.redis_timeout,
            socket_connect_timeout=conf.redis_timeout,
            retry_on_timeout=False,
            max_connections=256,
        )
        self._admit = self.redis.register_script(ADMIT_LUA)
        self._settle = self.redis.register_script(SETTLE_LUA)
        self.local = LocalLimiter(conf.gateway_processes)
        self.redis_ok = True
        self._probe: asyncio.Task[None] | None = None
        self._pending_ms: dict[str, float] = {}
        self._pending_tokens: dict[str, int] = {}
        self._batch: list[tuple[list[str], list[float | int | str], asyncio.Future[list[Any]]]] = []
        self._batch_scheduled = False
        self._admits_in_flight = 0
        metrics.REDIS_FALLBACK.set(0)

    # ------------------------------------------------------------------ admission

    async def admit(self, key: KeyRecord, tokens: int) -> Decision:
        now = time.time()
        buckets, budgets = plan(key, tokens, now, self.conf.redis_prefix)
        if not buckets and not budgets:
            return ALLOWED_NO_LIMITS
        for bucket in buckets:
            if bucket.kind == "tpm" and tokens > bucket.limit:
                metrics.count_decision("too_large", "redis" if self.redis_ok else "local")
                who = "API key" if bucket.scope == "key" else "tenant"
                return Decision(
                    allowed=False,
                    reason="too_large",
                    scope=bucket.scope,
                    message=f"Request too large for this {who}'s tokens per min (TPM) limit: "
                    f"limit {bucket.limit}, requested {tokens}. Lower max_tokens or the prompt.",
                    retry_after=60,
                )
        backend = "redis" if self.redis_ok else "local"
        result: tuple[int, float, list[float]] | None = None
        if self.redis_ok:
            try:
                result = await self._admit_redis(buckets, budgets)
            except (RedisError, OSError) as exc:
                self._enter_fallback(exc)
                backend = "local"
        if result is None:
            if self.conf.redis_down_policy == FAIL_CLOSED:
                metrics.count_decision("unavailable", backend)
                return Decision(
                    allowed=False,
                    reason="unavailable",
                    message="The gateway cannot check this key's rate limits right now; try again shortly.",
                    retry_after=max(1, math.ceil(self.conf.redis_probe_seconds)),
                )
            result = await self._admit_local(buckets, budgets, now)
            buckets = [b.shared(self.local.processes) for b in buckets]  # the headers tell the share
        denied, retry_ms, debts = result
        headers = _rate_headers(buckets, debts)
        if denied:
            denied_bucket = buckets[denied - 1] if denied <= len(buckets) else None
            denied_budget = budgets[denied - len(buckets) - 1] if denied > len(buckets) else None
            reason, scope, message, retry = _denial(denied_bucket, denied_budget, retry_ms, _month(now)[2], tokens)
            metrics.count_decision(reason, backend)
            return Decision(
                allowed=False, reason=reason, scope=scope, message=message, retry_after=retry, headers=headers
            )
        metrics.count_decision("allowed", backend)
        return Decision(
            allowed=True,
            headers=headers,
            reservation=Reservation(
                backend=backend, tokens=tokens, tpm=[b for b in buckets if b.kind == "tpm"], budgets=budgets
            ),
        )

    async def _admit_local(
        self, buckets: list[Bucket], budgets: list[Budget], now: float
    ) -> tuple[int, float, list[float]]:
        local = self.local.admit(buckets, budgets)
        if isinstance(local, list):
            for j in local:
                missing = budgets[j - 1]
                self.local.load_budget(missing, await self._used_from_db(missing, now))
            local = self.local.admit(buckets, budgets)
        assert not isinstance(local, list)
        return local

    async def _admit_redis(self, buckets: list[Bucket], budgets: list[Budget]) -> tuple[int, float, list[float]]:
        keys = [b.key for b in buckets] + [b.key for b in budgets]
        args: list[float | int | str] = [len(buckets), len(budgets)]
        for b in buckets:
            args += [f"{b.interval_ms:.6f}", b.capacity, b.cost]
        for bud in budgets:
            args += [bud.limit, bud.cost]
        for _ in range(2):
            if not self._batch and not self._admits_in_flight:
                # Nothing else in flight: send at once rather than wait a loop iteration.
                self._admits_in_flight += 1
                try:
                    reply = await self._admit(keys=keys, args=args)
                finally:
                    self._admits_in_flight -= 1
            else:
                reply = await self._admit_batched(keys, args)
            if int(reply[0]) != -1:
                return int(reply[1]), float(reply[2]), [float(x) for x in reply[3:]]
            now = time.time()
            for j in reply[1:]:
                budget = budgets[int(j) - 1]
                used = await self._used_from_db(budget, now)
                await self.redis.set(budget.key, used, nx=True, ex=BUDGET_TTL_SECONDS)
        raise RedisError("budget counters vanished twice in a row")

    def _admit_batched(self, keys: list[str], args: list[float | int | str]) -> asyncio.Future[list[Any]]:
        """Queue one admission; all admissions queued in the same loop iteration share one
        pipelined round trip to Redis (one write, one read instead of one per request)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Any]] = loop.create_future()
        self._batch.append((keys, args, future))
        if not self._batch_scheduled:
            self._batch_scheduled = True
            loop.call_soon(self._send_batch)
        return future

    def _send_batch(self) -> None:
        self._batch_scheduled = False
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._run_batch(batch))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _run_batch(
        self, batch: list[tuple[list[str], list[float | int | str], asyncio.Future[list[Any]]]]
    ) -> None:
        try:
            if len(batch) == 1:
                keys, args, future = batch[0]
                _resolve(future, await self._admit(keys=keys, args=args))
            else:
                await self._run_pipeline(batch)
        except BaseException as exc:
            for _, _, future in batch:
                if not future.done():
                    future.set_exception(exc if isinstance(exc, Exception) else RedisError("cancelled"))
            if not isinstance(exc, Exception):
                raise
        finally:
            self._admits_in_flight -= 1

    async def _run_pipeline(
        self, batch: list[tuple[list[str], list[float | int | str], asyncio.Future[list[Any]]]]
    ) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for keys, args, _ in batch:
            pipe.evalsha(self._admit.sha, len(keys), *keys, *args)
        replies = await pipe.execute(raise_on_error=False)
        for (keys, args, future), reply in zip(batch, replies, strict=True):
            if isinstance(reply, NoScriptError):  # first use after a Redis restart: loads it
                reply = await self._admit(keys=keys, args=args)
            elif isinstance(reply, Exception):
                raise reply
            _resolve(future, reply)

    async def _used_from_db(self, budget: Budget, now: float) -> int:
        _, start, _ = _month(now)
        if budget.scope == "key":
            return await run_db(gateway_tokens_used, since=start, api_key_id=budget.owner_id)
        return await run_db(gateway_tokens_used, since=start, tenant_id=budget.owner_id)

    # ------------------------------------------------------------------ settlement

    def settle(self, reservation: Reservation | None, actual_tokens: int) -> None:
        """Replace the reserved token count with the actual one (batched to Redis)."""
        if reservation is None:
            return
        delta = actual_tokens - reservation.tokens
        if delta == 0 or (not reservation.tpm and not reservation.budgets):
            return
        if reservation.backend == "local" or not self.redis_ok:
            if reservation.backend == "local":
                self.local.settle(reservation, delta)
            return
        for bucket in reservation.tpm:
            self._pending_ms[bucket.key] = self._pending_ms.get(bucket.key, 0.0) + delta * bucket.interval_ms
        for budget in reservation.budgets:
            self._pending_tokens[budget.key] = self._pending_tokens.get(budget.key, 0) + delta

    async def flush_settlements(self) -> None:
        if not (self._pending_ms or self._pending_tokens) or not self.redis_ok:
            return
        pending_ms, self._pending_ms = self._pending_ms, {}
        pending_tokens, self._pending_tokens = self._pending_tokens, {}
        keys = list(pending_ms) + list(pending_tokens)
        args: list[str | int] = [len(pending_ms)]
        args += [f"{v:.3f}" for v in pending_ms.values()]
        args += list(pending_tokens.values())
        try:
            await self._settle(keys=keys, args=args)
        except (RedisError, OSError) as exc:
            self._enter_fallback(exc)

    async def settle_loop(self) -> None:
        while True:
            await asyncio.sleep(self.conf.settle_flush_seconds)
            await self.flush_settlements()

    # ------------------------------------------------------------------ fallback

    def _enter_fallback(self, exc: BaseException) -> None:
        if isinstance(exc, NoScriptError):
            return
        if self.redis_ok:
            self.redis_ok = False
            metrics.REDIS_FALLBACK.set(1)
            logger.warning(
                "Redis is unreachable (%s); %s",
                type(exc).__name__,
                "requests with rate limits or budgets are refused (fail_closed)"
                if self.conf.redis_down_policy == FAIL_CLOSED
                else f"this process limits alone to 1/{self.conf.gateway_processes} of every limit and budget",
            )
        if self._probe is None or self._probe.done():
            self._probe = asyncio.get_running_loop().create_task(self._probe_until_back())

    async def _probe_until_back(self) -> None:
        while not self.redis_ok:
            await asyncio.sleep(self.conf.redis_probe_seconds)
            try:
                await self.redis.ping()
            except (RedisError, OSError):
                continue
            self.redis_ok = True
            self.local = LocalLimiter(self.conf.gateway_processes)  # the next outage starts afresh
            self._pending_ms.clear()
            self._pending_tokens.clear()
            metrics.REDIS_FALLBACK.set(0)
            logger.warning("Redis is reachable again; rate limits are shared across processes again")

    async def close(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
            with contextlib.suppress(BaseException):
                await self._probe
        with contextlib.suppress(Exception):
            await self.flush_settlements()
        with contextlib.suppress(Exception):
            await self.redis.aclose()


def _resolve(future: asyncio.Future[list[Any]], reply: list[Any]) -> None:
    if not future.done():
        future.set_result(reply)
