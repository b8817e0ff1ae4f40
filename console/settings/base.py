"""Settings shared by every environment. Every value comes from the environment via ``env``.

Each read names its type, bounds, default and a description: ``manage.py settings_table`` writes
the README's configuration table from them (see ``console/settings/env.py``).
"""

from __future__ import annotations

from pathlib import Path

from console.logging import FORMATS, logging_config
from console.settings.env import Env, ImproperlyConfiguredEnv

env = Env(declare=True)

BASE_DIR = Path(__file__).resolve().parent.parent.parent
DATA_DIR = Path(
    env.str(
        "HANGAR_DATA_DIR",
        str(BASE_DIR / "var"),
        show="`var/` in the checkout",
        help="mutable state of a single-machine install: SQLite file, replica logs, model root (local), pid files",
    )
).resolve()

INSECURE_DEFAULT_SECRET = "hangar-insecure-development-secret-do-not-use-in-production"
SECRET_KEY = env.str(
    "HANGAR_SECRET_KEY",
    INSECURE_DEFAULT_SECRET,
    show="an insecure development value",
    help="Django's secret key (sessions, CSRF); production requires a random value of at least 32 characters",
)
# Pepper for API key and access-token digests; kept apart from SECRET_KEY so either can rotate.
INSECURE_DEFAULT_PEPPER = "hangar-insecure-development-pepper"
HANGAR_KEY_PEPPER = env.str(
    "HANGAR_KEY_PEPPER",
    INSECURE_DEFAULT_PEPPER,
    show="an insecure development value",
    help="pepper of API key and access token digests, kept apart from the secret key so either can rotate; "
    "production requires a random value of at least 32 characters",
)
HANGAR_METRICS_TOKEN = env.str(
    "HANGAR_METRICS_TOKEN",
    "",
    show="unset",
    help="bearer token Prometheus must send to `GET /metrics` (at least 32 characters); unset, `/metrics` answers 401",
)

DEBUG = env.bool("HANGAR_DEBUG", False, help="Django's debug mode (never in production)")
ALLOWED_HOSTS = env.list(
    "HANGAR_ALLOWED_HOSTS", ["127.0.0.1", "localhost"], help="host names the web process answers to"
)
CSRF_TRUSTED_ORIGINS = env.list(
    "HANGAR_CSRF_TRUSTED_ORIGINS", [], help="origins (`https://hangar.example.com`) allowed to post forms"
)

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
    "axes",
    "django_otp",
    "django_otp.plugins.otp_totp",
    "csp",
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
    "django_otp.middleware.OTPMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    # Last, as django-axes requires: it turns a locked-out login into the lockout page.
    "axes.middleware.AxesMiddleware",
]

# django-axes first: a locked-out user name or address is refused before its password is checked.
AUTHENTICATION_BACKENDS = ["axes.backends.AxesStandaloneBackend", "django.contrib.auth.backends.ModelBackend"]

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

DATABASES = {
    "default": env.database(
        "DATABASE_URL",
        f"sqlite:///{DATA_DIR / 'hangar.sqlite3'}",
        show="`sqlite:///$HANGAR_DATA_DIR/hangar.sqlite3`",
        help="`postgres://user:pass@host:5432/db` (required in production) or `sqlite:///path` (single machine)",
    )
}
DATABASES["default"]["CONN_MAX_AGE"] = env.int(
    "HANGAR_DB_CONN_MAX_AGE", 0, minimum=0, help="seconds a database connection is kept open (0: one per request)"
)
# SQLite (the quickstart) is shared by the web, worker and beat processes. WAL lets readers run
# beside the one writer; IMMEDIATE makes every transaction take the write lock when it begins, so
# a transaction that read first never has to upgrade its lock (which SQLite refuses at once,
# busy timeout or not: "database is locked"); the busy timeout makes a writer wait for the lock
# instead of failing. Read whether or not the database is SQLite, so the table lists it.
SQLITE_BUSY_TIMEOUT = env.float(
    "HANGAR_SQLITE_BUSY_TIMEOUT",
    30.0,
    minimum=1.0,
    maximum=600.0,
    help="SQLite only: seconds a write waits for another process's write to finish before failing",
)
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["OPTIONS"] = {
        "transaction_mode": "IMMEDIATE",
        "timeout": SQLITE_BUSY_TIMEOUT,
        # WAL persists in the file; synchronous=NORMAL is safe with WAL (a power cut may lose the
        # last commits, never corrupt the file) and spares an fsync per commit.
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL",
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env.redis_url(
    "REDIS_URL",
    "redis://127.0.0.1:6379/0",
    help="Celery broker, channel layer, cache, gateway limits (the quickstart starts its own Redis and sets it)",
)

CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "KEY_PREFIX": "hangar",
        # JSON, never pickle: write access to Redis must not be code execution in every process.
        "OPTIONS": {"serializer": "controlplane.core.cache.JSONSerializer"},
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

# Login throttling, API throttles, access tokens, HTTPS and Content-Security-Policy.
from console.settings.security import *  # noqa: E402, F403

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "dist"] if (BASE_DIR / "frontend" / "dist").is_dir() else []

# Request bodies: the REST API and gateway refuse anything larger with 413.
HANGAR_MAX_BODY_BYTES = env.int(
    "HANGAR_MAX_BODY_BYTES",
    1024 * 1024,
    minimum=1024,
    help="largest request body the REST API and the gateway accept (larger: 413)",
)
DATA_UPLOAD_MAX_MEMORY_SIZE = HANGAR_MAX_BODY_BYTES
DATA_UPLOAD_MAX_NUMBER_FIELDS = 1000

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "controlplane.tenancy.authentication.AccessTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "controlplane.tenancy.api.permissions.TokenScopePermission",
    ],
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
    # Rates: HANGAR_API_RATE_USER and HANGAR_API_RATE_TOKEN (console/settings/security.py).
    "DEFAULT_THROTTLE_CLASSES": [
        "controlplane.tenancy.throttling.UserRateThrottle",
        "controlplane.tenancy.throttling.TokenRateThrottle",
    ],
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
    "ENUM_NAME_OVERRIDES": {
        "DTypeEnum": "controlplane.catalog.choices.DType",
        "CredentialKindEnum": "controlplane.catalog.choices.CredentialKind",
        "TargetKindEnum": "controlplane.deployments.choices.TargetKind",
    },
}

# Celery: JSON only (never pickle), late acks so a killed worker's task is redelivered,
# one message prefetched at a time so a long reconcile does not hoard others.
CELERY_BROKER_URL = env.redis_url(
    "CELERY_BROKER_URL", REDIS_URL, show="`$REDIS_URL`", help="the Celery broker, when not the shared Redis"
)
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_ALWAYS_EAGER = env.bool(
    "HANGAR_CELERY_EAGER", False, help="run tasks inside the process that enqueues them (debugging only)"
)
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": 600}
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# console/worker_liveness.py: `hangar worker-alive` in the console image checks the file's age.
HANGAR_WORKER_HEARTBEAT_FILE = env.str(
    "HANGAR_WORKER_HEARTBEAT_FILE",
    "",
    help="a file the worker's event loop touches, so an exec liveness probe can check its age without Celery",
)
HANGAR_WORKER_HEARTBEAT_SECONDS = env.float(
    "HANGAR_WORKER_HEARTBEAT_SECONDS", 10.0, minimum=0.1, help="seconds between touches of the heartbeat file"
)
HANGAR_BEAT_LEASE_SECONDS = env.float(
    "HANGAR_BEAT_LEASE_SECONDS",
    30.0,
    minimum=1.0,
    help="seconds of the Redis lease a beat holds while it schedules; a second beat stands by and "
    "takes over within about that long",
)

# Control loop
HANGAR_RESYNC_INTERVAL = env.float(
    "HANGAR_RESYNC_INTERVAL", 15.0, minimum=0.5, help="seconds between periodic reconciles of every deployment"
)
HANGAR_METRICS_INTERVAL = env.float(
    "HANGAR_METRICS_INTERVAL", 2.0, minimum=0.2, help="seconds between scrapes of the replicas' metrics"
)
HANGAR_METRICS_RETENTION_SECONDS = env.int(
    "HANGAR_METRICS_RETENTION_SECONDS", 3600, minimum=60, help="seconds of metric samples kept for the charts"
)
HANGAR_HEALTH_FAILURE_THRESHOLD = env.int(
    "HANGAR_HEALTH_FAILURE_THRESHOLD", 3, minimum=1, help="failed health checks in a row before a replica is replaced"
)
HANGAR_READY_TIMEOUT = env.float(
    "HANGAR_READY_TIMEOUT", 300.0, minimum=1.0, help="seconds a new replica may take to become ready"
)
HANGAR_AUTOSCALE_STABLE_WINDOW_SECONDS = env.float(
    "HANGAR_AUTOSCALE_STABLE_WINDOW_SECONDS",
    60.0,
    minimum=2.0,
    maximum=3600.0,
    help="default window the autoscaler averages load over (a deployment may set its own)",
)
HANGAR_AUTOSCALE_PANIC_WINDOW_SECONDS = env.float(
    "HANGAR_AUTOSCALE_PANIC_WINDOW_SECONDS",
    6.0,
    minimum=1.0,
    maximum=600.0,
    help="default window of the autoscaler's panic mode: a burst averaged over it scales up at once",
)
HANGAR_AUTOSCALE_PANIC_THRESHOLD = env.float(
    "HANGAR_AUTOSCALE_PANIC_THRESHOLD",
    2.0,
    minimum=1.1,
    maximum=10.0,
    help="default burst, as a multiple of the target load of the replicas there are, that starts panic mode",
)
HANGAR_AUTOSCALE_SCALE_DOWN_DELAY_SECONDS = env.float(
    "HANGAR_AUTOSCALE_SCALE_DOWN_DELAY_SECONDS",
    300.0,
    minimum=0.0,
    maximum=3600.0,
    help="default scale-down stabilization: the autoscaler scales down only to the highest count of this window",
)
HANGAR_AUTOSCALE_TOLERANCE = env.float(
    "HANGAR_AUTOSCALE_TOLERANCE",
    0.1,
    minimum=0.0,
    maximum=0.5,
    help="default tolerance: load within this fraction of the target changes no replica count",
)
HANGAR_REPLICA_DRAIN_SECONDS = env.float(
    "HANGAR_REPLICA_DRAIN_SECONDS",
    60.0,
    minimum=0.0,
    maximum=3600.0,
    help="seconds a replica being removed may take to finish its in-flight requests once out of routing "
    "(then it is killed); 0 removes replicas at once, without draining",
)
HANGAR_RUNTIME_IMAGE = env.str(
    "HANGAR_RUNTIME_IMAGE", "hangar-runtime:latest", help="image of Docker replicas (`deploy/images/build`)"
)
HANGAR_RUNTIME_IMAGE_CUDA = env.str(
    "HANGAR_RUNTIME_IMAGE_CUDA",
    "hangar-runtime-cuda:latest",
    help="image of replicas that ask for a GPU, Docker and Kubernetes (`deploy/images/build runtime-cuda`); "
    "empty: they run HANGAR_RUNTIME_IMAGE",
)
# Production requires the model roots; local and test settings default to DATA_DIR/models.
HANGAR_MODEL_ROOTS = [
    str(Path(p).resolve())
    for p in env.list(
        "HANGAR_MODEL_ROOTS",
        [],
        show="`$HANGAR_DATA_DIR/models` (local, test); required in production",
        help="model roots; a tenant registers sources only from `<root>/<tenant-slug>/` or `<root>/_shared/` "
        "(resolved real path, checked again whenever replicas start)",
    )
]
HANGAR_MODEL_SHARED_FOLDER = env.str(
    "HANGAR_MODEL_SHARED_FOLDER",
    "_shared",
    help="the folder in each model root that platform admins publish models from, for every tenant "
    "(one folder name starting with `_`)",
)
if not HANGAR_MODEL_SHARED_FOLDER.startswith("_") or "/" in HANGAR_MODEL_SHARED_FOLDER:
    # Tenant slugs never start with "_", so the shared folder can never be a tenant's.
    raise ImproperlyConfiguredEnv(
        f"HANGAR_MODEL_SHARED_FOLDER={HANGAR_MODEL_SHARED_FOLDER!r} must be one folder name starting with '_'"
    )
# The model store (issue 14): remote sources, the node cache, size limits.
HANGAR_MODEL_SOURCE_ENDPOINTS = env.list(
    "HANGAR_MODEL_SOURCE_ENDPOINTS",
    [],
    help="S3 / hub endpoint URLs a tenant's source credential may name (MinIO, Ceph, a hub mirror); "
    "an empty endpoint (AWS, the public hub) is always allowed",
)
HANGAR_MODEL_CACHE_DIR = env.str(
    "HANGAR_MODEL_CACHE_DIR",
    str(DATA_DIR / "model-cache"),
    show="`$HANGAR_DATA_DIR/model-cache`",
    help="where a worker keeps the models it fetched for local and Docker replicas, by content hash",
)
HANGAR_MODEL_CACHE_BYTES = env.int(
    "HANGAR_MODEL_CACHE_BYTES",
    50 * 1024**3,
    minimum=0,
    help="a node cache holds at most this many bytes (least recently used models evicted); a target's "
    "`model_cache_bytes` overrides it",
)
HANGAR_DOCKER_MODEL_VOLUMES = env.bool(
    "HANGAR_DOCKER_MODEL_VOLUMES",
    False,
    help="fetch remote models into a volume on every Docker daemon, `unix://` sockets too (a container of the "
    "runtime image does it on the host); set it when the worker runs in a container, whose cache directory the "
    "host cannot mount. `tcp://` and `ssh://` daemons always fetch that way",
)
HANGAR_MODEL_MAX_BYTES = env.int(
    "HANGAR_MODEL_MAX_BYTES",
    200 * 1024**3,
    minimum=0,
    help="largest model (all files) a tenant may register (0: no limit)",
)
HANGAR_MODEL_STORE_DIR = env.str(
    "HANGAR_MODEL_STORE_DIR",
    str(DATA_DIR / "store"),
    show="`$HANGAR_DATA_DIR/store`",
    help="the platform's model store: models uploaded through the API, in `<dir>/<tenant-slug>/<upload>/` "
    "(partial uploads in `<dir>/.partial/`)",
)
HANGAR_UPLOAD_MAX_FILE_BYTES = env.int(
    "HANGAR_UPLOAD_MAX_FILE_BYTES", 20 * 1024**3, minimum=1, help="largest single file an upload may declare"
)
HANGAR_UPLOAD_TENANT_BYTES = env.int(
    "HANGAR_UPLOAD_TENANT_BYTES",
    100 * 1024**3,
    minimum=0,
    help="bytes a tenant may hold in the model store (open uploads and uploaded models; 0: uploads refused)",
)
HANGAR_UPLOAD_CHUNK_BYTES = env.int(
    "HANGAR_UPLOAD_CHUNK_BYTES",
    16 * 1024**2,
    minimum=1024,
    maximum=256 * 1024**2,
    help="largest chunk one upload request may carry",
)
HANGAR_DEMO_MODEL_DIR = env.str(
    "HANGAR_DEMO_MODEL_DIR",
    "",
    show="`<first model root>/_shared/tiny-llama`",
    help="where `bootstrap_demo` builds the tiny demo model",
)
# The quickstart (`manage.py quickstart`, `make run`): its admin user and where it listens.
HANGAR_ADMIN_USER = env.str("HANGAR_ADMIN_USER", "admin", help="user name of the admin `bootstrap_demo` creates")
HANGAR_ADMIN_PASSWORD = env.str(
    "HANGAR_ADMIN_PASSWORD", "", show="generated, printed once", help="password of the admin `bootstrap_demo` creates"
)
HANGAR_HOST = env.str(
    "HANGAR_HOST",
    "127.0.0.1",
    help="address the web process binds (`manage.py quickstart`; the console image's entrypoint defaults to `0.0.0.0`)",
)
HANGAR_PORT = env.int("HANGAR_PORT", 8000, minimum=1, maximum=65535, help="port the web process listens on")
# Deployment engine.
HANGAR_RECONCILE_LEASE_SECONDS = env.float(
    "HANGAR_RECONCILE_LEASE_SECONDS",
    30.0,
    minimum=1.0,
    help="seconds a worker's claim on a deployment lasts unless renewed (a dead worker's claim expires)",
)
HANGAR_FAULT_INJECTION = env.bool(
    "HANGAR_FAULT_INJECTION",
    False,
    help="let platform admins make a deployment's replicas fail or slow down on purpose (tests of canaries)",
)
HANGAR_FAILED_RETRY_SECONDS = env.float(
    "HANGAR_FAILED_RETRY_SECONDS", 60.0, minimum=1.0, help="seconds a Failed deployment waits before trying again"
)
HANGAR_INSTANCE = env.str(
    "HANGAR_INSTANCE",
    "",
    show="the database name",
    help="label that keeps installations sharing a Docker host or cluster apart",
)
HANGAR_LOCAL_RUNTIME_MODULE = env.str(
    "HANGAR_LOCAL_RUNTIME_MODULE",
    "workers.runtime",
    help="Python module the local driver runs as a replica (`python -m MODULE --model DIR --port N ...`)",
)

# Platform (infrastructure owned by platform admins, granted to tenants).
HANGAR_ENCRYPTION_KEYS = env.list(
    "HANGAR_ENCRYPTION_KEYS",
    [],
    show="derived from the secret key (local, test); required in production",
    help="Fernet keys, newest first, that encrypt target credentials at rest; rotate by adding a key in "
    "front, running `manage.py rotate_encryption_keys`, then dropping the old one",
)
HANGAR_DOCKER_SOCKETS = env.list(
    "HANGAR_DOCKER_SOCKETS",
    ["unix:///var/run/docker.sock"],
    help="the only `unix://` sockets a Docker target may use (`tcp://` needs TLS client certificates, "
    "`ssh://` an uploaded key)",
)
HANGAR_DOCKER_ALLOW_PLAIN_TCP = env.bool(
    "HANGAR_DOCKER_ALLOW_PLAIN_TCP",
    False,
    help="allow `tcp://` Docker targets without TLS (development only; production refuses it)",
)
_QUOTA_HELP = "quota of {} a new tenant starts with (unset: unlimited, `0`: none); platform admins change it"
HANGAR_QUOTA_DEFAULTS: dict[str, float | None] = {
    "gpus": env.optional_int("HANGAR_QUOTA_GPUS", help=_QUOTA_HELP.format("GPUs")),
    "gpu_memory_mb": env.optional_int("HANGAR_QUOTA_GPU_MEMORY_MB", help=_QUOTA_HELP.format("GPU memory (MB)")),
    "cpus": env.optional_float("HANGAR_QUOTA_CPUS", help=_QUOTA_HELP.format("CPUs")),
    "memory_mb": env.optional_int("HANGAR_QUOTA_MEMORY_MB", help=_QUOTA_HELP.format("memory (MB)")),
    "replicas": env.optional_int("HANGAR_QUOTA_REPLICAS", help=_QUOTA_HELP.format("replicas")),
    "deployments": env.optional_int("HANGAR_QUOTA_DEPLOYMENTS", help=_QUOTA_HELP.format("deployments")),
}

LOG_LEVEL = env.choice(
    "HANGAR_LOG_LEVEL", "INFO", {"DEBUG", "INFO", "WARNING", "ERROR"}, help="level of every process's logs"
)
HANGAR_LOG_FORMAT = env.choice(
    "HANGAR_LOG_FORMAT",
    "json",
    FORMATS,
    help="`json`: one JSON object per line (`timestamp`, `level`, `logger`, `event`, `request_id`, bound "
    "context such as `task`); `plain`: the same fields on one readable line. Values of fields named like "
    "tokens, passwords, secrets, API keys, credentials or `Authorization` are always redacted",
)
LOGGING_CONFIG = "console.logging.configure"
LOGGING = logging_config(HANGAR_LOG_FORMAT, LOG_LEVEL)

# Observability (deploy/observability/).
HANGAR_WORKER_METRICS_PORT = env.int(
    "HANGAR_WORKER_METRICS_PORT",
    0,
    minimum=0,
    maximum=65535,
    help="port of the worker's Prometheus endpoint (reconcile passes, task failures; `0`: off); needs "
    "`PROMETHEUS_MULTIPROC_DIR`, an empty directory of the worker's own (the console image's entrypoint sets one)",
)
HANGAR_WORKER_METRICS_HOST = env.str(
    "HANGAR_WORKER_METRICS_HOST",
    "127.0.0.1",
    help="address the worker's metrics endpoint binds (`0.0.0.0` where Prometheus scrapes over the network)",
)

# The gateway (`/v1/*`, controlplane/gateway/conf.py reads these once per process).
HANGAR_GATEWAY_KEY_CACHE_SECONDS = env.float(
    "HANGAR_GATEWAY_KEY_CACHE_SECONDS",
    30.0,
    minimum=0.0,
    maximum=60.0,
    help="seconds a verified API key is cached (a revocation purges it at once through Redis)",
)
HANGAR_GATEWAY_KEY_NEGATIVE_CACHE_SECONDS = env.float(
    "HANGAR_GATEWAY_KEY_NEGATIVE_CACHE_SECONDS",
    5.0,
    minimum=0.0,
    maximum=60.0,
    help="seconds an unknown (well-formed) key id is remembered as unknown",
)
HANGAR_GATEWAY_KEY_STALE_SECONDS = env.float(
    "HANGAR_GATEWAY_KEY_STALE_SECONDS",
    86400.0,
    minimum=0.0,
    # Below the lifetime of the revocation markers (controlplane.keys.services), which it relies on.
    maximum=6 * 86400.0,
    help="while the database is down, keys read from it at most this many seconds ago still serve",
)
HANGAR_GATEWAY_ROUTE_CACHE_SECONDS = env.float(
    "HANGAR_GATEWAY_ROUTE_CACHE_SECONDS", 1.0, minimum=0.0, maximum=60.0, help="seconds the routing table is fresh"
)
HANGAR_GATEWAY_ROUTE_STALE_SECONDS = env.float(
    "HANGAR_GATEWAY_ROUTE_STALE_SECONDS",
    5.0,
    minimum=0.0,
    maximum=600.0,
    help="seconds a stale routing table still serves while one refresh runs in the background",
)
HANGAR_GATEWAY_USAGE_FLUSH_SECONDS = env.float(
    "HANGAR_GATEWAY_USAGE_FLUSH_SECONDS", 2.0, minimum=0.05, help="seconds between writes of buffered usage"
)
HANGAR_GATEWAY_TOUCH_FLUSH_SECONDS = env.float(
    "HANGAR_GATEWAY_TOUCH_FLUSH_SECONDS",
    10.0,
    minimum=0.05,
    help="seconds between writes of deployments' last request time (scale-to-zero idles from it)",
)
HANGAR_GATEWAY_KEY_TOUCH_FLUSH_SECONDS = env.float(
    "HANGAR_GATEWAY_KEY_TOUCH_FLUSH_SECONDS", 60.0, minimum=0.05, help="seconds between writes of keys' last use"
)
HANGAR_GATEWAY_SETTLE_FLUSH_SECONDS = env.float(
    "HANGAR_GATEWAY_SETTLE_FLUSH_SECONDS",
    0.05,
    minimum=0.001,
    maximum=10.0,
    help="seconds between batches of token settlements sent to Redis",
)
HANGAR_GATEWAY_REDIS_DOWN_POLICY = env.choice(
    "HANGAR_GATEWAY_REDIS_DOWN_POLICY",
    "share",
    {"share", "fail_closed"},
    help="rate limits and budgets while Redis is unreachable: `fail_closed` refuses limited requests (503), "
    "`share` lets each gateway process admit its share (1/`HANGAR_GATEWAY_PROCESSES`) of every limit and budget",
)
HANGAR_GATEWAY_PROCESSES = env.int(
    "HANGAR_GATEWAY_PROCESSES",
    1,
    minimum=1,
    maximum=10_000,
    help="gateway (web) processes serving in total, all replicas and workers counted; "
    "the `share` Redis-down policy divides every limit by it",
)
HANGAR_GATEWAY_AUTH_FAILURES = env.int(
    "HANGAR_GATEWAY_AUTH_FAILURES",
    30,
    minimum=1,
    help="failed API key authentications from one client address per window before the gateway answers 429",
)
HANGAR_GATEWAY_AUTH_FAILURE_WINDOW = env.int(
    "HANGAR_GATEWAY_AUTH_FAILURE_WINDOW",
    60,
    minimum=1,
    maximum=86_400,
    help="seconds of the window in which failed API key authentications per client address are counted",
)
HANGAR_GATEWAY_COLD_START_TIMEOUT = env.float(
    "HANGAR_GATEWAY_COLD_START_TIMEOUT",
    60.0,
    minimum=0.0,
    maximum=3600.0,
    help="seconds a request to a deployment scaled to zero waits for a replica to start before a 503",
)
HANGAR_GATEWAY_COLD_START_POLL = env.float(
    "HANGAR_GATEWAY_COLD_START_POLL",
    0.5,
    minimum=0.01,
    maximum=10.0,
    help="seconds between looks for a ready replica during a cold start",
)
HANGAR_GATEWAY_RETRY_AFTER_SECONDS = env.int(
    "HANGAR_GATEWAY_RETRY_AFTER_SECONDS", 5, minimum=1, maximum=3600, help="`Retry-After` of the gateway's 503s"
)
HANGAR_GATEWAY_UPSTREAM_CONNECT_TIMEOUT = env.float(
    "HANGAR_GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 2.0, minimum=0.1, help="seconds to connect to a replica"
)
HANGAR_GATEWAY_UPSTREAM_READ_TIMEOUT = env.float(
    "HANGAR_GATEWAY_UPSTREAM_READ_TIMEOUT", 600.0, minimum=1.0, help="seconds a replica may take between bytes"
)
HANGAR_GATEWAY_EJECT_AFTER_FAILURES = env.int(
    "HANGAR_GATEWAY_EJECT_AFTER_FAILURES",
    3,
    minimum=1,
    help="failed requests in a row after which a replica is taken out of rotation",
)
HANGAR_GATEWAY_EJECT_SECONDS = env.float(
    "HANGAR_GATEWAY_EJECT_SECONDS", 10.0, minimum=0.1, help="seconds an ejected replica stays out of rotation"
)
HANGAR_GATEWAY_REDIS_TIMEOUT = env.float(
    "HANGAR_GATEWAY_REDIS_TIMEOUT",
    1.0,
    minimum=0.05,
    maximum=30.0,
    help="seconds a limiter or budget call to Redis may take before the gateway answers without it",
)
HANGAR_GATEWAY_REDIS_PROBE_SECONDS = env.float(
    "HANGAR_GATEWAY_REDIS_PROBE_SECONDS", 1.0, minimum=0.05, help="seconds between probes of an unreachable Redis"
)
HANGAR_GATEWAY_REDIS_PREFIX = env.str(
    "HANGAR_GATEWAY_REDIS_PREFIX", "hangar:gw:", help="namespace of the gateway's limiter and budget keys in Redis"
)
