"""Settings shared by every environment. Every value comes from the environment via ``env``."""

from __future__ import annotations

from pathlib import Path

from console.logging import FORMATS, logging_config
from console.settings.env import Env, ImproperlyConfiguredEnv

env = Env()

BASE_DIR = Path(__file__).resolve().parent.parent.parent
# Mutable state of a single-machine install (SQLite file, replica logs, tiny model, pid files).
DATA_DIR = Path(env.str("HANGAR_DATA_DIR", str(BASE_DIR / "var"))).resolve()

INSECURE_DEFAULT_SECRET = "hangar-insecure-development-secret-do-not-use-in-production"
SECRET_KEY = env.str("HANGAR_SECRET_KEY", INSECURE_DEFAULT_SECRET)
# Pepper for API key and access-token digests; kept apart from SECRET_KEY so either can rotate.
INSECURE_DEFAULT_PEPPER = "hangar-insecure-development-pepper"
HANGAR_KEY_PEPPER = env.str("HANGAR_KEY_PEPPER", INSECURE_DEFAULT_PEPPER)

DEBUG = env.bool("HANGAR_DEBUG", False)
ALLOWED_HOSTS = env.list("HANGAR_ALLOWED_HOSTS", ["127.0.0.1", "localhost"])
CSRF_TRUSTED_ORIGINS = env.list("HANGAR_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI assets served locally: the console works offline
    "channels",
    "controlplane.core",
    "controlplane.tenancy",
    "controlplane.catalog",
    "controlplane.deployments",
    "controlplane.keys",
    "controlplane.usage",
    "controlplane.audit",
    "controlplane.gateway",
    "console",
]

MIDDLEWARE = [
    "console.middleware.RequestIdMiddleware",
    "console.middleware.DatabaseUnavailableMiddleware",
    "console.middleware.ApiErrorMiddleware",
    "console.middleware.BodySizeLimitMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "console.urls"
ASGI_APPLICATION = "console.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {"default": env.database("DATABASE_URL", f"sqlite:///{DATA_DIR / 'hangar.sqlite3'}")}
DATABASES["default"]["CONN_MAX_AGE"] = env.int("HANGAR_DB_CONN_MAX_AGE", 0, minimum=0)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.redis_url("REDIS_URL", "redis://127.0.0.1:6379/0")

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "hangar",
    }
}

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [REDIS_URL],
            # Bounded per-channel queues: a slow websocket client cannot make Redis hold
            # an unbounded backlog; old messages expire instead.
            "capacity": 200,
            "expiry": 30,
        },
    }
}

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LOGIN_URL = "/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/login/"
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "dist"] if (BASE_DIR / "frontend" / "dist").is_dir() else []

# Request bodies: the REST API and gateway refuse anything larger with 413.
HANGAR_MAX_BODY_BYTES = env.int("HANGAR_MAX_BODY_BYTES", 1024 * 1024, minimum=1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = HANGAR_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.tenancy.authentication.AccessTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "controlplane.core.api.Pagination",
    "DEFAULT_FILTER_BACKENDS": [
        "controlplane.core.api.QueryFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "controlplane.core.api.exception_handler",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "UNAUTHENTICATED_USER": None,
}

SPECTACULAR_SETTINGS = {
    "TITLE": "Hangar API",
    "DESCRIPTION": "Control plane for serving large language models.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": {"DTypeEnum": "controlplane.catalog.choices.DType"},
}

# Celery: JSON only (never pickle), late acks so a killed worker's task is redelivered,
# one message prefetched at a time so a long reconcile does not hoard others.
CELERY_BROKER_URL = env.redis_url("CELERY_BROKER_URL", REDIS_URL)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool("HANGAR_CELERY_EAGER", False)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# A worker's event loop touches this file (if set) so an exec liveness probe can check its age
# without starting Celery: `hangar worker-alive` in the console image (console/worker_liveness.py).
HANGAR_WORKER_HEARTBEAT_FILE = env.str("HANGAR_WORKER_HEARTBEAT_FILE", "")
HANGAR_WORKER_HEARTBEAT_SECONDS = env.float("HANGAR_WORKER_HEARTBEAT_SECONDS", 10.0, minimum=0.1)
# Beat with console.beat:LeaderScheduler schedules only while it holds a lease of this many
# seconds in Redis; a second beat stands by and takes over within about that long.
HANGAR_BEAT_LEASE_SECONDS = env.float("HANGAR_BEAT_LEASE_SECONDS", 30.0, minimum=1.0)

# Control loop
HANGAR_RESYNC_INTERVAL = env.float("HANGAR_RESYNC_INTERVAL", 15.0, minimum=1.0)
HANGAR_METRICS_INTERVAL = env.float("HANGAR_METRICS_INTERVAL", 2.0, minimum=0.2)
HANGAR_METRICS_RETENTION_SECONDS = env.int("HANGAR_METRICS_RETENTION_SECONDS", 3600, minimum=60)
HANGAR_HEALTH_FAILURE_THRESHOLD = env.int("HANGAR_HEALTH_FAILURE_THRESHOLD", 3, minimum=1)
HANGAR_READY_TIMEOUT = env.float("HANGAR_READY_TIMEOUT", 300.0, minimum=1.0)
HANGAR_RUNTIME_IMAGE = env.str("HANGAR_RUNTIME_IMAGE", "hangar-runtime:latest")
# Directories that hold model sources: each has a folder per tenant (<root>/<tenant-slug>/) and
# a shared folder platform admins publish from (<root>/_shared/); a tenant registers sources
# only from those. Production requires the list; local and test settings default to
# DATA_DIR/models.
HANGAR_MODEL_ROOTS = [str(Path(p).resolve()) for p in env.list("HANGAR_MODEL_ROOTS", [])]
HANGAR_MODEL_SHARED_FOLDER = env.str("HANGAR_MODEL_SHARED_FOLDER", "_shared")
if not HANGAR_MODEL_SHARED_FOLDER.startswith("_") or "/" in HANGAR_MODEL_SHARED_FOLDER:
    # Tenant slugs never start with "_", so the shared folder can never be a tenant's.
    raise ImproperlyConfiguredEnv(
        f"HANGAR_MODEL_SHARED_FOLDER={HANGAR_MODEL_SHARED_FOLDER!r} must be one folder name starting with '_'"
    )
# Where bootstrap_demo builds the tiny demo model (empty: <first model root>/<shared folder>/tiny-llama).
HANGAR_DEMO_MODEL_DIR = env.str("HANGAR_DEMO_MODEL_DIR", "")
# Deployment engine: reconcile lease (a dead worker's claim expires after this), how long a
# Failed deployment waits before trying its spec again, the label that keeps installations
# sharing a Docker host or cluster apart (default: the database name), the local runtime module.
HANGAR_RECONCILE_LEASE_SECONDS = env.float("HANGAR_RECONCILE_LEASE_SECONDS", 30.0, minimum=1.0)
HANGAR_FAILED_RETRY_SECONDS = env.float("HANGAR_FAILED_RETRY_SECONDS", 60.0, minimum=1.0)
HANGAR_INSTANCE = env.str("HANGAR_INSTANCE", "")
HANGAR_LOCAL_RUNTIME_MODULE = env.str("HANGAR_LOCAL_RUNTIME_MODULE", "workers.runtime")

# Platform (infrastructure owned by platform admins, granted to tenants).
# Fernet keys that encrypt target credentials at rest, comma-separated, newest first: add a new
# key in front, run `manage.py rotate_encryption_keys`, then drop the old one. Without keys a
# key derived from HANGAR_SECRET_KEY is used (development only: production requires keys).
HANGAR_ENCRYPTION_KEYS = env.list("HANGAR_ENCRYPTION_KEYS", [])
# The only unix:// Docker sockets a target may use. tcp:// needs TLS client certificates and
# ssh:// an uploaded key; plain tcp:// is refused unless allowed here (never in production).
HANGAR_DOCKER_SOCKETS = env.list("HANGAR_DOCKER_SOCKETS", ["unix:///var/run/docker.sock"])
HANGAR_DOCKER_ALLOW_PLAIN_TCP = env.bool("HANGAR_DOCKER_ALLOW_PLAIN_TCP", False)
# Quotas a new tenant starts with (unset = unlimited, 0 = none); platform admins change them.
HANGAR_QUOTA_DEFAULTS: dict[str, float | None] = {
    "gpus": env.optional_int("HANGAR_QUOTA_GPUS"),
    "gpu_memory_mb": env.optional_int("HANGAR_QUOTA_GPU_MEMORY_MB"),
    "cpus": env.optional_float("HANGAR_QUOTA_CPUS"),
    "memory_mb": env.optional_int("HANGAR_QUOTA_MEMORY_MB"),
    "replicas": env.optional_int("HANGAR_QUOTA_REPLICAS"),
    "deployments": env.optional_int("HANGAR_QUOTA_DEPLOYMENTS"),
}

LOG_LEVEL = env.choice("HANGAR_LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"})
# json: one JSON object per line (for log collectors; the default outside the quickstart and
# tests); plain: the same fields on one readable line. Both go through console.logging, which
# also redacts credentials.
HANGAR_LOG_FORMAT = env.choice("HANGAR_LOG_FORMAT", "json", FORMATS)
LOGGING_CONFIG = "console.logging.configure"
LOGGING = logging_config(HANGAR_LOG_FORMAT, LOG_LEVEL)

# Observability: the worker serves its Prometheus metrics (reconcile passes, task failures) on
# this port (0 = off), bound to this address; its pool processes share them through
# PROMETHEUS_MULTIPROC_DIR (required when the port is set). See deploy/observability/.
HANGAR_WORKER_METRICS_PORT = env.int("HANGAR_WORKER_METRICS_PORT", 0, minimum=0, maximum=65535)
HANGAR_WORKER_METRICS_HOST = env.str("HANGAR_WORKER_METRICS_HOST", "127.0.0.1")
