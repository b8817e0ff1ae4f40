"""Production settings: refuse to start on insecure defaults, with a message that says why."""

from urllib.parse import urlsplit

from cryptography.fernet import Fernet
from django.core.exceptions import ImproperlyConfigured

from console.settings.base import *  # noqa: F403
from console.settings.base import (
    DATABASES,
    DEBUG,
    HANGAR_DOCKER_ALLOW_PLAIN_TCP,
    HANGAR_ENCRYPTION_KEYS,
    HANGAR_KEY_PEPPER,
    HANGAR_METRICS_TOKEN,
    HANGAR_MODEL_ROOTS,
    INSECURE_DEFAULT_PEPPER,
    INSECURE_DEFAULT_SECRET,
    REDIS_URL,
    SECRET_KEY,
)
from console.settings.security import (
    HANGAR_HSTS_INCLUDE_SUBDOMAINS,
    HANGAR_HSTS_PRELOAD,
    HANGAR_HSTS_SECONDS,
    HANGAR_PROXY_SSL_HEADER,
    HANGAR_SSL_REDIRECT,
    proxy_ssl_header,
)

if DEBUG:
    raise ImproperlyConfigured("HANGAR_DEBUG must be off in production (unset it or set HANGAR_DEBUG=false).")
if SECRET_KEY == INSECURE_DEFAULT_SECRET or len(SECRET_KEY) < 32:
    raise ImproperlyConfigured("Set HANGAR_SECRET_KEY to a random value of at least 32 characters for production.")
if HANGAR_KEY_PEPPER == INSECURE_DEFAULT_PEPPER or len(HANGAR_KEY_PEPPER) < 32:
    raise ImproperlyConfigured("Set HANGAR_KEY_PEPPER to a random value of at least 32 characters for production.")
if HANGAR_METRICS_TOKEN and len(HANGAR_METRICS_TOKEN) < 32:
    raise ImproperlyConfigured("HANGAR_METRICS_TOKEN must be a random value of at least 32 characters (or unset).")
if not urlsplit(REDIS_URL).password:
    raise ImproperlyConfigured(
        "REDIS_URL needs the Redis user and password (redis://hangar:<password>@host:6379/0): "
        "Redis holds the rate limits, the key revocations and the task queue, so production requires an ACL password."
    )
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    raise ImproperlyConfigured("Production needs PostgreSQL: set DATABASE_URL=postgres://user:pass@host:5432/db.")

if not HANGAR_MODEL_ROOTS:
    raise ImproperlyConfigured("Set HANGAR_MODEL_ROOTS to the directories that hold models (comma-separated).")

if not HANGAR_ENCRYPTION_KEYS:
    raise ImproperlyConfigured(
        "Set HANGAR_ENCRYPTION_KEYS to a Fernet key (target credentials are encrypted with it): "
        "python3 -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
    )
for _position, _key in enumerate(HANGAR_ENCRYPTION_KEYS, start=1):
    try:
        Fernet(_key.encode())
    except ValueError:
        raise ImproperlyConfigured(
            f"HANGAR_ENCRYPTION_KEYS: key {_position} is not a Fernet key (32 url-safe base64-encoded bytes)."
        ) from None
if HANGAR_DOCKER_ALLOW_PLAIN_TCP:
    raise ImproperlyConfigured("HANGAR_DOCKER_ALLOW_PLAIN_TCP must be off in production: use tcp:// with TLS.")

SESSION_COOKIE_SECURE = True
CSRF_COOKIE_SECURE = True
SECURE_CONTENT_TYPE_NOSNIFF = True

# HTTPS: redirect, HSTS, and the proxy's header that says a request came in over TLS.
SECURE_SSL_REDIRECT = HANGAR_SSL_REDIRECT
SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$"]  # the orchestrator probes over plain HTTP
SECURE_HSTS_SECONDS = HANGAR_HSTS_SECONDS
SECURE_HSTS_INCLUDE_SUBDOMAINS = HANGAR_HSTS_INCLUDE_SUBDOMAINS
SECURE_HSTS_PRELOAD = HANGAR_HSTS_PRELOAD
SECURE_PROXY_SSL_HEADER = proxy_ssl_header(HANGAR_PROXY_SSL_HEADER)
