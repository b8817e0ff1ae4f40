"""Metering writes: usage deltas added to the per key, model and minute rows.

The gateway buffers usage in memory and calls ``usage_record_batch`` every few seconds (and on
shutdown). One statement per row inside one transaction, each an upsert that *adds* to the
counters (``INSERT ... ON CONFLICT DO UPDATE SET n = n + excluded.n``), so several gateway
processes can flush the same minute concurrently without losing counts. The syntax is shared
by PostgreSQL and SQLite (≥ 3.24).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import IntegrityError, connection, transaction

from controlplane.usage.models import UsageRecord

logger = logging.getLogger(__name__)

_COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "errors", "latency_ms_sum")


@dataclass(frozen=True, slots=True)
class UsageDelta:
    tenant_id: int
    api_key_id: int
    model: str
    minute: datetime  # aware, truncated to the minute
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: int = 0
    latency_ms_sum: float = 0.0


def _upsert_sql() -> str:
    q = connection.ops.quote_name
    table = q(UsageRecord._meta.db_table)
    columns = ("tenant_id", "api_key_id", "model", "minute", *_COUNTERS)
    updates = ", ".join(f"{q(c)} = {table}.{q(c)} + excluded.{q(c)}" for c in _COUNTERS)
    # Only quoted identifiers are interpolated; every value is a query parameter.
    names = ", ".join(q(c) for c in columns)
    params = ", ".join(["%s"] * len(columns))
    conflict = f"{q('api_key_id')}, {q('model')}, {q('minute')}"
    return f"INSERT INTO {table} ({names}) VALUES ({params}) ON CONFLICT ({conflict}) DO UPDATE SET {updates}"  # noqa: S608


def usage_record_batch(*, deltas: Iterable[UsageDelta]) -> int:
    """Add every delta to its (key, model, minute) row; returns the number of rows touched."""
    rows = [
        (
            d.tenant_id,
            d.api_key_id,
            d.model[:100],
            connection.ops.adapt_datetimefield_value(d.minute),
            d.requests,
            d.prompt_tokens,
            d.completion_tokens,
            d.errors,
            d.latency_ms_sum,
        )
        for d in deltas
    ]
    if not rows:
        return 0
    sql = _upsert_sql()
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, rows)
        return len(rows)
    except IntegrityError:
        pass
    # A key or tenant was deleted since the usage was buffered (PostgreSQL checks the foreign
    # keys at commit): write each row in its own transaction and drop the ones that fail.
    written = 0
    for row in rows:
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(sql, row)
            written += 1
        except IntegrityError:
            logger.warning("dropped usage of a deleted key or tenant (key %s)", row[1])
    return written
