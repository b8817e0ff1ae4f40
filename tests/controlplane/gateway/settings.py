"""Settings of the gateway server processes that the gateway tests start.

The test process passes the test database's name and a Redis namespace of its own, so the
server sees the rows the tests commit and no limiter state of an earlier run.
"""

import os

from console.settings.test import *  # noqa: F403
from console.settings.test import DATABASES

if os.environ.get("HANGAR_GATEWAY_TEST_DB"):
    DATABASES["default"]["NAME"] = os.environ["HANGAR_GATEWAY_TEST_DB"]
HANGAR_GATEWAY_REDIS_PREFIX = os.environ.get("HANGAR_GATEWAY_REDIS_PREFIX", "hangar:gw:")
HANGAR_GATEWAY_USAGE_FLUSH_SECONDS = float(os.environ.get("HANGAR_GATEWAY_USAGE_FLUSH_SECONDS", "0.2"))
HANGAR_GATEWAY_TOUCH_FLUSH_SECONDS = 0.5
HANGAR_GATEWAY_KEY_CACHE_SECONDS = float(os.environ.get("HANGAR_GATEWAY_KEY_CACHE_SECONDS", "30"))
HANGAR_GATEWAY_KEY_TOUCH_FLUSH_SECONDS = 0.5
HANGAR_GATEWAY_ROUTE_CACHE_SECONDS = 0.3
HANGAR_GATEWAY_ROUTE_STALE_SECONDS = 0.3
HANGAR_GATEWAY_COLD_START_TIMEOUT = float(os.environ.get("HANGAR_GATEWAY_COLD_START_TIMEOUT", "20"))
HANGAR_GATEWAY_COLD_START_POLL = 0.1
HANGAR_GATEWAY_REDIS_PROBE_SECONDS = 0.3
HANGAR_CELERY_EAGER = False
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("HANGAR_LOG_LEVEL", "WARNING")},
}
# Reconcile tasks that the gateway's wake-up enqueues go to a Redis database no worker reads,
# so they cannot reach another suite's workers (which know nothing of this test database).
# (Database 15 of this test worker's block, see console.settings.workers.)
_BROKER_DB = 15 + int(os.environ.get("HANGAR_TEST_REDIS_OFFSET", "0"))
CELERY_BROKER_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0").rsplit("/", 1)[0] + f"/{_BROKER_DB}"
