"""Settings parsing: strict environment values, and production refusing insecure defaults.

Production settings are imported in a subprocess with a controlled environment, as a real
start-up would, so one test's variables cannot leak into another's settings.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest

from console.settings.env import Env, ImproperlyConfiguredEnv
from tests.conftest import REPO_ROOT


def env(**values: str) -> Env:
    return Env(values)


@pytest.mark.parametrize("raw", ["1", "true", "YES", "on", " True "])
def test_bool_true(raw: str) -> None:
    assert env(X=raw).bool("X", False) is True


@pytest.mark.parametrize("raw", ["0", "false", "No", "off"])
def test_bool_false(raw: str) -> None:
    assert env(X=raw).bool("X", True) is False


@pytest.mark.parametrize("raw", ["maybe", "2", "yep", "tru"])
def test_bool_refuses_anything_else(raw: str) -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match="X=.* is not a boolean"):
        env(X=raw).bool("X", False)


def test_blank_means_default() -> None:
    assert env(X="  ").int("X", 7) == 7
    assert env(X="").str("X", "d") == "d"


@pytest.mark.parametrize(
    ("raw", "kwargs", "message"),
    [
        ("ten", {}, "not an integer"),
        ("1.5", {}, "not an integer"),
        ("5", {"minimum": 10}, "below the minimum 10"),
        ("50", {"maximum": 10}, "above the maximum 10"),
    ],
)
def test_int_is_strict(raw: str, kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match=message):
        env(X=raw).int("X", 1, **kwargs)


def test_float_is_strict() -> None:
    assert env(X="0.5").float("X", 1.0) == 0.5
    with pytest.raises(ImproperlyConfiguredEnv, match="not a number"):
        env(X="fast").float("X", 1.0)
    with pytest.raises(ImproperlyConfiguredEnv, match="below the minimum"):
        env(X="0.1").float("X", 1.0, minimum=1.0)


def test_list_and_choice() -> None:
    assert env(X="a, b,,c ").list("X", []) == ["a", "b", "c"]
    assert env(X="INFO").choice("X", "INFO", {"INFO", "DEBUG"}) == "INFO"
    with pytest.raises(ImproperlyConfiguredEnv, match="must be one of"):
        env(X="LOUD").choice("X", "INFO", {"INFO", "DEBUG"})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("localhost/db", "is not a database URL"),
        ("mysql://u:p@h/db", "unsupported scheme 'mysql'"),
        ("postgres://u:p@h:notaport/db", "could not be parsed"),
    ],
)
def test_database_url_is_strict(raw: str, message: str) -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match=message):
        env(DATABASE_URL=raw).database("DATABASE_URL", "sqlite:///x")


def test_database_url_parses() -> None:
    config = env(DATABASE_URL="postgres://u:p@db:5433/hangar").database("DATABASE_URL", "")
    assert (config["ENGINE"], config["HOST"], config["PORT"], config["NAME"]) == (
        "django.db.backends.postgresql",
        "db",
        5433,
        "hangar",
    )


def test_redis_url_is_strict() -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match="must start with redis://"):
        env(REDIS_URL="http://cache:6379").redis_url("REDIS_URL", "redis://x")


# ----------------------------------------------------------------------------- start-up

GOOD_PRODUCTION = {
    "HANGAR_SECRET_KEY": "k" * 50,
    "HANGAR_KEY_PEPPER": "p" * 40,
    "DATABASE_URL": "postgres://hangar:hangar@127.0.0.1:54329/hangar",
    "REDIS_URL": "redis://hangar:r3d1s-password-0123456789@127.0.0.1:63790/0",
    "HANGAR_MODEL_ROOTS": "/srv/models",
    "HANGAR_ENCRYPTION_KEYS": "T0pS3cr3tKeyT0pS3cr3tKeyT0pS3cr3tKeyT0pS3cQ=",
}


def load_settings(module: str, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "DJANGO_", "DATABASE_", "REDIS_"))}
    clean.update(values)
    code = f"import importlib; importlib.import_module({module!r}); print('loaded')"
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=60
    )


def test_production_loads_with_real_secrets() -> None:
    result = load_settings("console.settings.production", GOOD_PRODUCTION)
    assert result.returncode == 0, result.stderr
    assert "loaded" in result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"HANGAR_DEBUG": "true"}, "HANGAR_DEBUG must be off in production"),
        ({"HANGAR_SECRET_KEY": ""}, "Set HANGAR_SECRET_KEY"),
        ({"HANGAR_SECRET_KEY": "short"}, "Set HANGAR_SECRET_KEY"),
        ({"HANGAR_KEY_PEPPER": ""}, "Set HANGAR_KEY_PEPPER"),
        ({"DATABASE_URL": ""}, "Production needs PostgreSQL"),
        ({"HANGAR_MODEL_ROOTS": ""}, "Set HANGAR_MODEL_ROOTS"),
        ({"HANGAR_ENCRYPTION_KEYS": ""}, "Set HANGAR_ENCRYPTION_KEYS"),
        ({"HANGAR_ENCRYPTION_KEYS": "not-a-key"}, "HANGAR_ENCRYPTION_KEYS: key 1 is not a Fernet key"),
        ({"HANGAR_DOCKER_ALLOW_PLAIN_TCP": "true"}, "HANGAR_DOCKER_ALLOW_PLAIN_TCP must be off"),
        ({"HANGAR_DEBUG": "sometimes"}, "HANGAR_DEBUG='sometimes' is not a boolean"),
        ({"HANGAR_MAX_BODY_BYTES": "1MB"}, "HANGAR_MAX_BODY_BYTES='1MB' is not an integer"),
        ({"REDIS_URL": "localhost:6379"}, "REDIS_URL='localhost:6379' must start with redis://"),
        ({"REDIS_URL": "redis://127.0.0.1:63790/0"}, "REDIS_URL needs the Redis user and password"),
        ({"HANGAR_METRICS_TOKEN": "short"}, "HANGAR_METRICS_TOKEN must be a random value of at least 32"),
    ],
)
def test_production_refuses_insecure_or_malformed_settings(override: dict[str, str], message: str) -> None:
    result = load_settings("console.settings.production", GOOD_PRODUCTION | override)
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]


def test_base_settings_refuse_a_bad_value_at_start_up() -> None:
    result = load_settings("console.settings.base", {"HANGAR_LOG_LEVEL": "CHATTY"})
    assert result.returncode != 0
    assert "HANGAR_LOG_LEVEL='CHATTY' must be one of" in result.stderr
