"""Gateway tunables, read once from Django settings (``HANGAR_GATEWAY_*``) with safe defaults.

The settings module owns the environment; the gateway only reads the resulting values, so a
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
    burst_fraction: float  # GCRA burst allowance as a fraction of the per-minute limit
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
    get = getattr
    return GatewayConf(
        max_body_bytes=int(get(settings, "HANGAR_MAX_BODY_BYTES", 1024 * 1024)),
        key_cache_seconds=min(60.0, float(get(settings, "HANGAR_GATEWAY_KEY_CACHE_SECONDS", 30.0))),
        key_negative_cache_seconds=float(get(settings, "HANGAR_GATEWAY_KEY_NEGATIVE_CACHE_SECONDS", 5.0)),
        # Below the revocation markers' lifetime (controlplane.keys.services), which it relies on.
        key_stale_seconds=min(6 * 86400.0, float(get(settings, "HANGAR_GATEWAY_KEY_STALE_SECONDS", 86400.0))),
        route_cache_seconds=float(get(settings, "HANGAR_GATEWAY_ROUTE_CACHE_SECONDS", 1.0)),
        route_stale_seconds=float(get(settings, "HANGAR_GATEWAY_ROUTE_STALE_SECONDS", 5.0)),
        usage_flush_seconds=float(get(settings, "HANGAR_GATEWAY_USAGE_FLUSH_SECONDS", 2.0)),
        touch_flush_seconds=float(get(settings, "HANGAR_GATEWAY_TOUCH_FLUSH_SECONDS", 10.0)),
        key_touch_flush_seconds=float(get(settings, "HANGAR_GATEWAY_KEY_TOUCH_FLUSH_SECONDS", 60.0)),
        settle_flush_seconds=float(get(settings, "HANGAR_GATEWAY_SETTLE_FLUSH_SECONDS", 0.05)),
        burst_fraction=float(get(settings, "HANGAR_GATEWAY_BURST_FRACTION", 0.1)),
        cold_start_timeout=float(get(settings, "HANGAR_GATEWAY_COLD_START_TIMEOUT", 60.0)),
        cold_start_poll=float(get(settings, "HANGAR_GATEWAY_COLD_START_POLL", 0.5)),
        retry_after_seconds=int(get(settings, "HANGAR_GATEWAY_RETRY_AFTER_SECONDS", 5)),
        upstream_connect_timeout=float(get(settings, "HANGAR_GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 2.0)),
        upstream_read_timeout=float(get(settings, "HANGAR_GATEWAY_UPSTREAM_READ_TIMEOUT", 600.0)),
        eject_after_failures=int(get(settings, "HANGAR_GATEWAY_EJECT_AFTER_FAILURES", 3)),
        eject_seconds=float(get(settings, "HANGAR_GATEWAY_EJECT_SECONDS", 10.0)),
        redis_timeout=float(get(settings, "HANGAR_GATEWAY_REDIS_TIMEOUT", 1.0)),
        redis_probe_seconds=float(get(settings, "HANGAR_GATEWAY_REDIS_PROBE_SECONDS", 1.0)),
        redis_prefix=str(get(settings, "HANGAR_GATEWAY_REDIS_PREFIX", "hangar:gw:")),
    )
