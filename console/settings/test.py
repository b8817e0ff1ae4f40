"""Test settings: PostgreSQL and Redis from the environment (``make test`` starts both)."""

import os

from console.settings.workers import isolate_test_worker

# Under pytest-xdist, each worker has Redis databases, a data folder and a static root of its
# own (its PostgreSQL database is pytest-django's ``test_<name>_gw<N>``); before base reads them.
isolate_test_worker(os.environ)

from console.logging import FORMATS, logging_config  # noqa: E402
from console.settings.base import *  # noqa: E402, F403
from console.settings.base import BASE_DIR, DATA_DIR, HANGAR_MODEL_ROOTS, LOG_LEVEL  # noqa: E402
from console.settings.env import Env  # noqa: E402

env = Env(declare=True, profile="test")

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests only
HANGAR_RESYNC_INTERVAL = env.float("HANGAR_RESYNC_INTERVAL", 2.0, minimum=0.5)
ALLOWED_HOSTS = ["*"]
# Tests read the web processes' /metrics with this token (tests/controlplane/gateway/conftest.py).
HANGAR_METRICS_TOKEN = env.str("HANGAR_METRICS_TOKEN", "hangar-test-scrape-token-not-a-secret-0123456789")
# Many suites send bad keys from 127.0.0.1 on purpose; the throttle's own test sets a low limit.
HANGAR_GATEWAY_AUTH_FAILURES = env.int("HANGAR_GATEWAY_AUTH_FAILURES", 1_000_000, minimum=1)
# Model sources always have roots to live under (production requires them set explicitly).
HANGAR_MODEL_ROOTS = HANGAR_MODEL_ROOTS or [str(DATA_DIR / "models")]
# People read these logs in a terminal: plain lines unless HANGAR_LOG_FORMAT=json.
HANGAR_LOG_FORMAT = env.choice("HANGAR_LOG_FORMAT", "plain", FORMATS)
LOGGING = logging_config(HANGAR_LOG_FORMAT, LOG_LEVEL)
# The suite makes thousands of API calls as a handful of users; the throttle tests set their own rates.
HANGAR_API_RATE_USER = env.str("HANGAR_API_RATE_USER", "100000/min")
HANGAR_API_RATE_TOKEN = env.str("HANGAR_API_RATE_TOKEN", "100000/min")
# collectstatic in one test worker must not rewrite files another worker's server is reading.
STATIC_ROOT = BASE_DIR / "staticfiles" / os.environ.get("PYTEST_XDIST_WORKER", "")
