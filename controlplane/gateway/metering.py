"""Usage metering and batched bookkeeping writes.

Every request adds to an in-process counter per (key, model, minute); a background loop
flushes the counters every few seconds in one transaction of additive upserts, and once more
on graceful shutdown. ``ApiKey.last_used_at`` and ``Deployment.last_request_at`` are collected
the same way and written about once a minute / every few seconds, never per request.
A failed flush keeps the counters for the next attempt (bounded, so a long outage cannot
exhaust memory): while the database is unreachable usage accumulates here and is written when it
returns. A flush whose commit went unanswered (the connection broke) is kept aside until the
database says whether that transaction committed: written once, never lost, never twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime

from controlplane.gateway import metrics
from controlplane.gateway.conf import GatewayConf
from controlplane.gateway.db import DatabaseUnavailable, run_db, run_db_once
from controlplane.gateway.services import deployments_mark_requested, transaction_committed, usage_flush
from controlplane.keys.services import api_key_touch
from controlplane.usage.services import UsageDelta

logger = logging.getLogger(__name__)

MAX_PENDING_ROWS = 200_000
UsageKey = tuple[int, int, str, int]  # key pk, tenant id, model, minute (epoch seconds)
Rows = dict[UsageKey, list[float]]


class Meter:
    def __init__(self, conf: GatewayConf) -> None:
        self.conf = conf
        self.usage: Rows = {}
        self.unconfirmed: list[tuple[int, Rows]] = []  # (transaction id, its rows): commit unanswered
        self.keys_used: set[int] = set()
        self.deployments_used: set[int] = set()
        self._lock = asyncio.Lock()

    def record(
        self,
        *,
        key_pk: int,
        tenant_id: int,
        model: str,
        prompt_tokens: int,
        completion_tokens: int,
        error: bool,
        latency_ms: float,
    ) -> None:
        minute = int(time.time()) // 60 * 60
        row = self.usage.get((key_pk, tenant_id, model, minute))
        if row is None:
            if len(self.usage) >= MAX_PENDING_ROWS:
                return  # the database has been unreachable for long; shed rather than grow
            row = self.usage[(key_pk, tenant_id, model, minute)] = [0, 0, 0, 0, 0.0]
        row[0] += 1
        row[1] += prompt_tokens
        row[2] += completion_tokens
        row[3] += 1 if error else 0
        row[4] += latency_ms

    def touch(self, key_pk: int, deployment_id: int | None) -> None:
        self.keys_used.add(key_pk)
        if deployment_id is not None:
            self.deployments_used.add(deployment_id)

    def _keep(self, rows: Rows) -> None:
        for ukey, row in rows.items():
            current = self.usage.setdefault(ukey, [0, 0, 0, 0, 0.0])
            for i in range(5):
                current[i] += row[i]

    async def _confirm(self) -> None:
        """Settle the batches whose commit went unanswered: drop the committed, keep the rest."""
        waiting = []
        for txid, rows in self.unconfirmed:
            try:
                committed = await run_db(transaction_committed, txid=txid)
            except Exception:
                committed = None  # ask again next time
            if committed is None:
                waiting.append((txid, rows))
            elif not committed:
                self._keep(rows)
            else:
                logger.info("usage batch of transaction %s was written before the connection broke", txid)
        self.unconfirmed = waiting

    async def flush_usage(self) -> None:
        async with self._lock:
            if self.unconfirmed:
                await self._confirm()
            if not self.usage:
                return
            pending, self.usage = self.usage, {}
            deltas = [
                UsageDelta(
                    tenant_id=tenant,
                    api_key_id=key,
                    model=model,
                    minute=datetime.fromtimestamp(minute, UTC),
                    requests=int(row[0]),
                    prompt_tokens=int(row[1]),
                    completion_tokens=int(row[2]),
                    errors=int(row[3]),
                    latency_ms_sum=float(row[4]),
                )
                for (key, tenant, model, minute), row in pending.items()
            ]
            txids: list[int] = []
            try:
                await run_db_once(usage_flush, deltas=deltas, txids=txids)
            except Exception as exc:
                metrics.USAGE_FLUSH_FAILURES.inc()
                if not isinstance(exc, DatabaseUnavailable):  # that one was logged when it began
                    logger.exception("usage flush failed; %d rows kept for the next attempt", len(pending))
                if txids:  # the transaction began: it may have committed before the answer was lost
                    self.unconfirmed.append((txids[0], pending))
                else:
                    self._keep(pending)

    async def flush_deployments(self) -> None:
        if not self.deployments_used:
            return
        ids, self.deployments_used = sorted(self.deployments_used), set()
        try:
            await run_db(deployments_mark_requested, deployment_ids=ids, at=datetime.now(UTC))
        except Exception as exc:
            if not isinstance(exc, DatabaseUnavailable):
                logger.exception("could not record last_request_at")
            self.deployments_used.update(ids)

    async def flush_keys(self) -> None:
        if not self.keys_used:
            return
        ids, self.keys_used = sorted(self.keys_used), set()
        try:
            await run_db(api_key_touch, key_pks=ids, at=datetime.now(UTC))
        except Exception as exc:
            if not isinstance(exc, DatabaseUnavailable):
                logger.exception("could not record last_used_at")
            self.keys_used.update(ids)

    async def flush_all(self) -> None:
        await self.flush_usage()
        await self.flush_deployments()
        await self.flush_keys()

    async def run(self) -> None:
        """Flush loop; each kind of write on its own period."""
        tick = min(self.conf.usage_flush_seconds, self.conf.touch_flush_seconds, self.conf.key_touch_flush_seconds)
        start = time.monotonic()
        # The loop ticks at the shortest period. Usage waits its own period (its setting says how
        # often usage is written); a deployment's first request and a key's first use show soon
        # (scale-to-zero idles from the one, the key list shows the other).
        next_usage = start + self.conf.usage_flush_seconds
        next_touch = start
        next_keys = start + min(5.0, self.conf.key_touch_flush_seconds)
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            try:
                if now >= next_usage:
                    next_usage = now + self.conf.usage_flush_seconds
                    await self.flush_usage()
                if now >= next_touch:
                    next_touch = now + self.conf.touch_flush_seconds
                    await self.flush_deployments()
                if now >= next_keys:
                    next_keys = now + self.conf.key_touch_flush_seconds
                    await self.flush_keys()
            except Exception:  # never let the loop die
                logger.exception("metering loop error")
