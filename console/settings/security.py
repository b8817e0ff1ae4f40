"""Settings of the control plane's own doors: logins, API throttles, access tokens, headers.

Imported by ``console.settings.base`` (so every environment has them and the README's table
lists them); ``console.settings.production`` turns the HTTPS ones on.
"""

from __future__ import annotations

import re

from csp.constants import NONE, SELF, UNSAFE_INLINE

from console.settings.env import Env, ImproperlyConfiguredEnv

env = Env(declare=True)

# ----------------------------------------------------------------------------- logins (django-axes)
# Failed logins on /login/ and /admin/login/ are counted per user name and per address (either
# reaching the limit locks that one out) in the database, so every web process agrees.
AXES_FAILURE_LIMIT = env.int(
    "HANGAR_LOGIN_FAILURE_LIMIT",
    5,
    minimum=1,
    maximum=1000,
    help="failed logins, per user name and per client address, after which that user name or address is "
    "locked out of `/login/` and `/admin/login/`",
)
HANGAR_LOGIN_LOCKOUT_MINUTES = env.int(
    "HANGAR_LOGIN_LOCKOUT_MINUTES",
    15,
    minimum=1,
    maximum=7 * 24 * 60,
    help="minutes a locked-out user name or address waits after its last failed login (the login page says until when)",
)
AXES_ENABLED = True
AXES_COOLOFF_TIME = HANGAR_LOGIN_LOCKOUT_MINUTES / 60  # axes reads a float as hours
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_HANDLER = "axes.handlers.database.AxesDatabaseHandler"
# A failure during the lockout does not push its end further: the time the page shows holds.
AXES_RESET_COOL_OFF_ON_FAILURE_DURING_LOCKOUT = False
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "console.dashboard.logins.lockout_response"
AXES_CLIENT_IP_CALLABLE = "console.dashboard.logins.client_ip_address"
AXES_VERBOSE = False
AXES_ENABLE_ACCESS_FAILURE_LOG = False  # the audit log is the record of failures
AXES_DISABLE_ACCESS_LOG = True  # ... and of logins

# ----------------------------------------------------------------------------- REST API throttles
_RATE = re.compile(r"^[1-9][0-9]{0,8}/(s|sec|second|m|min|minute|h|hour|d|day)$")


def _rate(name: str, default: str, help: str) -> str:
    value = env.str(name, default, help=help)
    if not _RATE.fullmatch(value):
        raise ImproperlyConfiguredEnv(f"{name}={value!r} is not a rate; write NUMBER/PERIOD such as 600/min or 10/s")
    return value


HANGAR_API_RATE_USER = _rate(
    "HANGAR_API_RATE_USER",
    "1200/min",
    "REST API requests a user may make (sessions and all their tokens together); more: 429 with `Retry-After`",
)
HANGAR_API_RATE_TOKEN = _rate(
    "HANGAR_API_RATE_TOKEN",
    "600/min",
    "REST API requests one personal access token may make; more: 429 with `Retry-After`",
)

# ----------------------------------------------------------------------------- personal access tokens
HANGAR_TOKEN_DEFAULT_DAYS = env.int(
    "HANGAR_TOKEN_DEFAULT_DAYS",
    30,
    minimum=1,
    maximum=3650,
    help="days a new personal access token lives when its creator names no expiry",
)
HANGAR_TOKEN_MAX_DAYS = env.int(
    "HANGAR_TOKEN_MAX_DAYS",
    365,
    minimum=1,
    maximum=3650,
    help="the longest a personal access token may live, in days (a later expiry is refused)",
)
if HANGAR_TOKEN_DEFAULT_DAYS > HANGAR_TOKEN_MAX_DAYS:
    raise ImproperlyConfiguredEnv(
        f"HANGAR_TOKEN_DEFAULT_DAYS={HANGAR_TOKEN_DEFAULT_DAYS} is above HANGAR_TOKEN_MAX_DAYS={HANGAR_TOKEN_MAX_DAYS}"
    )

# ----------------------------------------------------------------------------- HTTPS (production only)
HANGAR_SSL_REDIRECT = env.bool(
    "HANGAR_SSL_REDIRECT",
    True,
    help="production: redirect plain HTTP to HTTPS (the probes `/healthz` and `/readyz` are exempt)",
)
HANGAR_HSTS_SECONDS = env.int(
    "HANGAR_HSTS_SECONDS",
    31536000,
    minimum=0,
    help="production: `Strict-Transport-Security` max-age in seconds (`0`: no header)",
)
HANGAR_HSTS_INCLUDE_SUBDOMAINS = env.bool(
    "HANGAR_HSTS_INCLUDE_SUBDOMAINS", True, help="production: HSTS covers the host's subdomains too"
)
HANGAR_HSTS_PRELOAD = env.bool(
    "HANGAR_HSTS_PRELOAD",
    True,
    help="production: HSTS asks to be preloaded by browsers (submitting the domain to the list is up to you)",
)
HANGAR_PROXY_SSL_HEADER = env.str(
    "HANGAR_PROXY_SSL_HEADER",
    "",
    help="production behind a TLS-terminating proxy: the header it sets to `https` (e.g. `X-Forwarded-Proto`). "
    "Set it only when the proxy always sets or strips that header, or clients could claim HTTPS",
)


def proxy_ssl_header(value: str) -> tuple[str, str] | None:
    """``X-Forwarded-Proto`` -> ``("HTTP_X_FORWARDED_PROTO", "https")`` for ``SECURE_PROXY_SSL_HEADER``."""
    if not value:
        return None
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]{0,63}", value):
        raise ImproperlyConfiguredEnv(f"HANGAR_PROXY_SSL_HEADER={value!r} is not a header name")
    return "HTTP_" + value.upper().replace("-", "_"), "https"


# ----------------------------------------------------------------------------- Content-Security-Policy
# The dashboard's scripts are files under /static/ (data blocks are json_script, never run); no
# inline script or event handler anywhere. Style attributes stay allowed (bars of computed width);
# <style> elements are not.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF],
        "style-src-attr": [UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],  # same-origin fetch and websockets
        "object-src": [NONE],
        "base-uri": [NONE],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    }
}
