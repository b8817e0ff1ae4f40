"""Test settings: PostgreSQL and Redis from the environment (``make test`` starts both)."""

from console.settings.base import *  # noqa: F403
from console.settings.base import env

DEBUG = False
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast users in tests only
HANGAR_RESYNC_INTERVAL = env.float("HANGAR_RESYNC_INTERVAL", 2.0, minimum=0.5)
ALLOWED_HOSTS = ["*"]
