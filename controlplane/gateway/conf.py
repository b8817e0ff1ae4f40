"""Gateway tunables, read once from Django settings (``HANGAR_GATEWAY_*``).

The settings module owns the environment and parses each variable strictly (type, bounds,
default: console/settings/base.py); the gateway only reads the resulting values, so a
deployment can tune caches and timeouts without code changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.conf import settings


@dataclass(frozen=True)
class GatewayConf:
    max_body_bytes: int
    key_cache_seconds: float  # verified keys; revocation purges earlier via pub/sub
    key_negative_cache_seconds: float  # unknown key ids (well-formed but not in the DB)
    key_stale_seconds: float  # database down: keys read from it at most this long ago still serve
    route_cache_seconds: float  # routing table freshness
    route_stale_seconds: float  # served stale while one refresh runs in the background
    usage_flush_seconds: float
    touch_flush_seconds: float  # Deployment.last_request_at
    key_touch_flush_seconds: float  # ApiKey.last_used_at
    settle_flush_seconds: float  # token settlements sent to Redis in batches
    redis_down_policy: str  # fail_closed | share (controlplane.gateway.limits)
    gateway_processes: int  # processes that share each limit under the share policy
    auth_failures: int  # failed authentications per client address per window, then 429
    auth_failure_window: int  # seconds
    metrics_token: str  # bearer token of GET /metrics; empty: /metrics refuses everyone
    cold_start_timeout: float
    cold_start_poll: float
    retry_after_seconds: int
    upstream_connect_timeout: float
    upstream_read_timeout: float
    eject_after_failures: int
    eject_seconds: float
    redis_timeout: float
    redis_probe_seconds: float
    redis_prefix: str  # namespace of limiter and budget keys


def load() -> GatewayConf:
    # Every value was parsed and bounded by the settings (console/settings/base.py).
    return GatewayConf(
        max_body_bytes=settings.HANGAR_MAX_BODY_BYTES,
        key_cache_seconds=settings.HANGAR_GATEWAY_KEY_CACHE_SECONDS,
        key_negative_cache_seconds=settings.HANGAR_GATEWAY_KEY_NEGATIVE_CACHE_SECONDS,
        key_stale_seconds=settings.HANGAR_GATEWAY_KEY_STALE_SECONDS,
        route_cache_seconds=settings.HANGAR_GATEWAY_ROUTE_CACHE_SECONDS,
        route_stale_seconds=settings.HANGAR_GATEWAY_ROUTE_STALE_SECONDS,
        usage_flush_seconds=settings.HANGAR_GATEWAY_USAGE_FLUSH_SECONDS,
        touch_flush_seconds=settings.HANGAR_GATEWAY_TOUCH_FLUSH_SECONDS,
        key_touch_flush_seconds=settings.HANGAR_GATEWAY_KEY_TOUCH_FLUSH_SECONDS,
        settle_flush_seconds=settings.HANGAR_GATEWAY_SETTLE_FLUSH_SECONDS,
        redis_down_policy=settings.HANGAR_GATEWAY_REDIS_DOWN_POLICY,
        gateway_processes=settings.HANGAR_GATEWAY_PROCESSES,
        auth_failures=settings.HANGAR_GATEWAY_AUTH_FAILURES,
        auth_failure_window=settings.HANGAR_GATEWAY_AUTH_FAILURE_WINDOW,
        metrics_token=settings.HANGAR_METRICS_TOKEN,
        cold_start_timeout=settings.HANGAR_GATEWAY_COLD_START_TIMEOUT,
        cold_start_poll=settings.HANGAR_GATEWAY_COLD_START_POLL,
        retry_after_seconds=settings.HANGAR_GATEWAY_RETRY_AFTER_SECONDS,
        upstream_connect_timeout=settings.HANGAR_GATEWAY_UPSTREAM_CONNECT_TIMEOUT,
        upstream_read_timeout=settings.HANGAR_GATEWAY_UPSTREAM_READ_TIMEOUT,
        eject_after_failures=settings.HANGAR_GATEWAY_EJECT_AFTER_FAILURES,
        eject_seconds=settings.HANGAR_GATEWAY_EJECT_SECONDS,
        redis_timeout=settings.HANGAR_GATEWAY_REDIS_TIMEOUT,
        redis_probe_seconds=settings.HANGAR_GATEWAY_REDIS_PROBE_SECONDS,
        redis_prefix=settings.HANGAR_GATEWAY_REDIS_PREFIX,
    )
